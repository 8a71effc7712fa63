"""The command-line flags of the run settings (``headprune defend``/``evaluate``/``compare`` and the benchmark
scripts): :func:`add_setting_arguments` adds them from :data:`~headprune.defenses.options.SETTING_FLAGS`,
:func:`run_settings_from_args` reads them back into the runner's :class:`~headprune.compare.RunSettings`."""

from __future__ import annotations

import argparse
from collections.abc import Collection, Sequence
from typing import TYPE_CHECKING

from headprune.data.pools import DEFENDER_POOLS
from headprune.defenses.options import SETTING_DEFAULTS, SETTING_FLAGS, parse_options_json

if TYPE_CHECKING:
    from headprune.compare import RunSettings

__all__ = ["BASE_HELP", "add_base_argument", "add_setting_arguments", "run_settings_from_args"]

BASE_HELP = ("the public pre-trained model the victim was fine-tuned from (a folder or a hub id), for the "
             "reference-based defenses; default: the offline MiniLM for MiniLM victims, the seeded "
             "initialisation for tiny ones, else the checkpoint's hub id (headprune.engine.reference.resolve_base)")
"""The help text of ``--base``."""


def add_base_argument(parser: argparse.ArgumentParser) -> None:
    """Add ``--base FOLDER_OR_HUB_ID`` (default ``None``: :func:`~headprune.engine.reference.resolve_base`'s default)."""
    parser.add_argument("--base", default=None, metavar="FOLDER_OR_HUB_ID", help=BASE_HELP)


def add_setting_arguments(parser: argparse.ArgumentParser, fields: Sequence[str] | None = None) -> None:
    """Add the setting options (``--finetune-epochs``, ``--budget``, ...) with their defaults to ``parser``.

    :param parser: the parser (or subparser) to extend.
    :param fields: only these settings (e.g. :data:`~headprune.defenses.options.DEFEND_SETTINGS`), in the
        canonical order; default: all of them plus ``--options`` (JSON ``{"defense": {option: value}}``),
        ``--fast``, ``--base``, ``--clean-pool`` and ``--unlabelled-rows`` (what :func:`run_settings_from_args`
        reads back).
    """
    for name, (kind, text) in SETTING_FLAGS.items():
        if fields is None or name in fields:
            parser.add_argument("--" + name.replace("_", "-"), type=kind, default=SETTING_DEFAULTS[name], help=text)
    if fields is None:
        parser.add_argument("--options", default="{}", help='JSON {"defense": {option: value}} defense options (headprune defend --help-options lists them)')
        parser.add_argument("--fast", action="store_true", help="small built-in defense options (smoke runs)")
        add_base_argument(parser)
        parser.add_argument("--clean-pool", default=None, choices=DEFENDER_POOLS,
                            help="the defender's rows (their first --clean-rows): a named pool; default: the "
                                 "victim's defender data, the 872 SST-2 dev rows (headprune.data.pools)")
        parser.add_argument("--unlabelled-rows", type=int, default=None, metavar="N",
                            help="the defender also owns N in-domain sentences without labels (the pool's rows "
                                 "after its labelled rows: GLUE SST-2 train phrases, OffensEval train tweets), read by "
                                 "distill and purify; default none")


def run_settings_from_args(args: argparse.Namespace, defenses: Collection[str] | None = None) -> RunSettings:
    """The :class:`~headprune.compare.RunSettings` of the options :func:`add_setting_arguments` added (all fields).

    Args:
        args: the parsed command line.
        defenses: if given, keep only the ``--options`` of these defenses (others are dropped silently).
    Raises:
        ValueError: ``--options`` is not a JSON object of objects, or a setting is out of range.
    """
    from headprune.compare import RunSettings

    options = parse_options_json(args.options)
    if defenses is not None:
        options = {k: v for k, v in options.items() if k in defenses}
    return RunSettings.from_values(**{name: getattr(args, name) for name in SETTING_FLAGS}, options=options,
                                   fast=args.fast, base=getattr(args, "base", None),
                                   clean_pool=getattr(args, "clean_pool", None),
                                   unlabelled_rows=getattr(args, "unlabelled_rows", None))
