"""Support for :mod:`headprune.cli`: input checks run before any work, ``--debug`` on every command, the
errors shown as one line and the input warnings shown as one line each."""

from __future__ import annotations

import argparse
import re
import sys
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

__all__ = ["DefenseOptionsHelp", "add_debug_flags", "check_compare_defenses", "defense_options_text", "one_line",
           "seed_argument", "user_errors", "victim_and_clean_data", "warnings_as_lines"]


def defense_options_text(defenses: Sequence[str]) -> str:
    """The options of each of ``defenses``: a ``name: description`` line, then one indented line per option
    (name, type, default, help) from its options class; ValueError naming the valid defenses for an unknown one."""
    from headprune.defenses import get_defense
    from headprune.defenses.defense_options import options_help

    blocks = []
    for name in defenses:
        cls = get_defense(name)
        lines = [f"{name}: {cls.description}"] + [f"  {line}" for line in options_help(cls.options_class)]
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)


class DefenseOptionsHelp(argparse.Action):
    """``--help-options [DEFENSE]``: print :func:`defense_options_text` of DEFENSE (or of ``--defense`` when it
    came first; of every registered defense without either) and exit, like ``--help`` (no other argument needed)."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any,
                 option_string: str | None = None) -> None:
        from headprune.defenses import DEFENSES

        name = values or getattr(namespace, "defense", None)
        if name and name not in DEFENSES:
            parser.error(f"argument --help-options: unknown defense {name!r}; valid: {', '.join(DEFENSES)}")
        print(defense_options_text([name] if name else list(DEFENSES)))
        parser.exit()



def seed_argument(text: str) -> int:
    """argparse ``type=`` of every ``--seed``: an integer >= 0 (numpy and SB3 refuse negative seeds later with a
    message that does not name the flag; argparse names it: ``argument --seed: ...``)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an integer >= 0, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be an integer >= 0, got {value}")
    return value

def victim_and_clean_data(args: argparse.Namespace) -> tuple[Any, Any]:
    """The victim of ``--model`` and the rows of ``--clean-data`` (``None`` when not given), read with
    ``--deduplicate`` and checked against the model's classes (and ``--target-label``) before any work."""
    from headprune.data import read_labelled_text
    from headprune.data.checks import check_enough_rows, check_labels
    from headprune.defenses.defend import check_target_label
    from headprune.victims import resolve_victim

    duplicates = "drop" if args.deduplicate else "warn"
    clean = None if args.clean_data is None else read_labelled_text(args.clean_data, duplicates=duplicates)
    victim = resolve_victim(args.model, cache=args.cache, progress=not args.quiet)
    num_labels = int(victim.model.config.num_labels)
    if clean is not None:
        clean = check_labels(clean, num_labels, "--clean-data")
        classes = sorted(set(clean.labels))
        if len(classes) != num_labels:  # e.g. a 3-class model on binary rows: accuracies mean nothing
            raise ValueError(f"--clean-data ({clean.source}) has the labels {classes}, but the model has {num_labels} "
                             f"classes: give rows of every class of the model, or a model of {len(classes)} classes")
        check_enough_rows(clean, args.val_size + 1, "--clean-data",
                          f"--val-size {args.val_size} validation rows and at least one more for fine-tuning")
    if args.target_label is not None:
        try:
            check_target_label(args.target_label, num_labels)
        except ValueError as err:
            raise ValueError(f"--target-label: {err}") from None
    return victim, clean


def check_compare_defenses(defenses: Sequence[str], policies: Sequence[str], settings: Any) -> None:
    """Before any run: every defense's options are valid and every policy file reads safely (a pickled
    SB3 zip is refused: convert it with ``headprune convert-policy``)."""
    from headprune.defenses import get_defense

    for defense in defenses:
        get_defense(defense).options_class.from_mapping(settings.defense_options(defense))
    if policies:
        from headprune.agents.evaluation import AgentDefense

        for policy in policies:
            AgentDefense(policy).check()


def add_debug_flags(parser: argparse.ArgumentParser) -> None:
    """``--debug`` on ``parser`` and on every subcommand (so it may follow the command)."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                sub.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                                 help="show the traceback of an error")
                add_debug_flags(sub)


def user_errors() -> tuple[type[BaseException], ...]:
    """Errors about the user's input: one line, exit status 2 (value and file errors cover our own:
    data formats, victim cards, corrupt victims, model loading, policy files, output folders)."""
    from headprune.architectures.base import UnsupportedArchitectureError

    return ValueError, OSError, UnsupportedArchitectureError


def one_line(err: BaseException) -> str:
    text = str(err) or type(err).__name__
    return re.sub(r"\s*\n\s*", " ", text).strip()


@contextmanager
def warnings_as_lines() -> Iterator[None]:
    """Show headprune's input warnings (duplicate rows, skipped rows, unusable victims) as one line each."""
    from headprune.data import DuplicateRowsWarning, SkippedRowsWarning
    from headprune.victims import VictimWarning

    ours = (DuplicateRowsWarning, SkippedRowsWarning, VictimWarning)
    previous = warnings.showwarning

    def show(message: Warning | str, category: type[Warning], *rest: Any, **kw: Any) -> None:
        if issubclass(category, ours):
            print(f"headprune: warning: {one_line(message) if isinstance(message, Warning) else message}",
                  file=sys.stderr)
        else:
            previous(message, category, *rest, **kw)

    with warnings.catch_warnings():
        for category in ours:
            warnings.simplefilter("always", category)
        warnings.showwarning = show
        yield
