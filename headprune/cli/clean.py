"""``headprune clean MODEL --clean-data FILE --out DIR``: the sub-command of :mod:`headprune.clean`.

Registered by :func:`add_clean_parser` (one call in :func:`headprune.cli.build_parser`). A model that cannot
be loaded (offline hub id, missing files, not a classifier) exits with status 2 and one line.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from pathlib import Path
from typing import Any

from headprune.clean import FALLBACK_DEFENSE, RECOMMENDATION, RECOMMENDED_DEFENSE, CleanSettings
from headprune.cli.support import seed_argument
from headprune.defenses import defense_names

__all__ = ["add_clean_parser", "run_clean"]

_DEFAULTS = CleanSettings()


def add_clean_parser(commands: Any) -> argparse.ArgumentParser:
    """Add ``clean`` to the ``headprune`` sub-parsers ``commands``; returns its parser."""
    p = commands.add_parser(
        "clean", help="clean any suspicious sequence classifier with a little clean data (the recommended defense)",
        description=f"Runs {RECOMMENDED_DEFENSE[0]} + {RECOMMENDED_DEFENSE[1]:g} epochs of clean fine-tuning. "
                    f"Why: {RECOMMENDATION} ACC is reported on held-out clean rows with a 95% Wilson interval; "
                    f"LFR only with --eval-poison. A defense lowers LFR; it does not certify a model.")
    p.add_argument("model", help="a checkpoint folder (plain transformers save_pretrained), a hub id (online), or a "
                                 "victim preset / folder")
    p.add_argument("--clean-data", required=True, help="the defender's labelled clean rows of the model's task "
                                                       "(TSV/CSV/JSONL; labels 0..num_labels-1), or online a "
                                                       "datasets name: datasets:NAME[,CONFIG][@SPLIT], e.g. "
                                                       "datasets:nyu-mll/glue,sst2@validation")
    p.add_argument("--unlabelled-data", default=None, metavar="FILE",
                   help="in-domain sentences without labels, one per line (UTF-8 text): distill and purify give them "
                        "to the student with the teacher's labels (more accuracy per clean row); other defenses "
                        "refuse them")
    p.add_argument("--out", required=True, help="new or empty output folder (model/, report.md, report.json, plots); "
                                                "written to a temporary folder renamed into place at the end")
    p.add_argument("--overwrite", action="store_true", help="replace a non-empty --out folder")
    p.add_argument("--eval-poison", default=None, help="poisoned evaluation rows with their TRUE labels (LFR; "
                                                       "evaluation only, never seen by the defense)")
    p.add_argument("--eval-victim-test", type=int, default=None, metavar="N",
                   help="victims only: LFR on N seeded rows of the victim's own poisoned test set")
    p.add_argument("--target-label", type=int, default=None,
                   help="the attacker's target for LFR (default: a victim's; otherwise LFR against every class)")
    p.add_argument("--compact", action="store_true", help="also write compact/ (pruned heads removed) and time it")
    p.add_argument("--holdout-fraction", type=float, default=_DEFAULTS.holdout_fraction,
                   help="share of the clean rows held out for the report (never seen by the defense)")
    p.add_argument("--defense", default=_DEFAULTS.defense, choices=defense_names(), metavar="NAME",
                   help=f"the defense (default {RECOMMENDED_DEFENSE[0]}, the recommended one; any of "
                        f"{', '.join(defense_names())}; `headprune defend --help` says what each does)")
    p.add_argument("--option", action="append", metavar="KEY=VALUE",
                   help="an option of --defense (JSON value), repeatable; headprune defend --help-options DEFENSE "
                        "lists them (e.g. --defense purify --option temperature=0)")
    p.add_argument("--finetune-epochs", type=float, default=_DEFAULTS.finetune_epochs)
    p.add_argument("--curve-points", type=int, default=_DEFAULTS.curve_points,
                   help="trajectory points evaluated on the held-out rows for the curve")
    p.add_argument("--base", default=None, metavar="FOLDER_OR_HUB_ID",
                   help=f"the public pre-trained model the suspect was fine-tuned from, for {RECOMMENDED_DEFENSE[0]} "
                        f"(default: known for MiniLM victims and hub checkpoints, recognised by its weights for a "
                        f"checkpoint fine-tuned from an offline base; without one, {FALLBACK_DEFENSE[0]} runs instead)")
    p.add_argument("--seed", type=seed_argument, default=0)
    p.add_argument("--cache", default=None, help="cache root (default $HEADPRUNE_CACHE or ~/.cache/headprune)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=run_clean)
    return p


def _command(args: argparse.Namespace) -> str:
    """The command that reproduces ``args``: MODEL, then every option spelled out."""
    parts = ["headprune", "clean", args.model]
    for key, value in vars(args).items():
        if key in ("func", "command", "model") or value is None or value is False:
            continue
        flag = "--" + key.replace("_", "-")
        if isinstance(value, list):  # a repeatable option (--option)
            parts += [part for item in value for part in (flag, str(item))]
        else:
            parts += [flag] if value is True else [flag, str(value)]
    return shlex.join(parts)


def _print_table(result: Any, paths: dict[str, Path]) -> None:
    """The before/after table of ACC and LFR, the floor and the report path."""
    print(f"defense: {result.choice.get('defense')} ({result.choice.get('reason')})")
    print(f"{result.defense.defense}: pruned {result.defense.heads_pruned} of {result.defense.mask.numel()} heads; "
          f"ACC on {result.report_rows} held-out clean rows (95% Wilson interval)")
    print(f"{'stage':<8} {'ACC':>7} {'95% CI':>15} {'LFR':>7}")
    for stage, m in result.stages.items():
        lfr = "-" if m["lfr"] is None else f"{m['lfr']:.4f}"
        print(f"{stage:<8} {m['acc']:7.4f} [{m['acc_ci95'][0]:.3f}, {m['acc_ci95'][1]:.3f}] {lfr:>7}")
    for target, row in result.lfr_per_label.items():
        print(f"LFR with target {target}: " + "  ".join(
            f"{k} {'undefined' if v is None else f'{v:.4f}'}" for k, v in row.items()))
    if result.floor.get("clean_model_lfr") is not None:
        print(f"floor    clean model's LFR {result.floor['clean_model_lfr']:.4f} (victim card, full poisoned test)")
    print("time (s): " + ", ".join(f"{k} {v:.1f}" for k, v in result.timings.items()))
    print(f"report: {paths['markdown']}  (model: {paths['model']})")


def _input_paths(args: argparse.Namespace, hub_clean: bool) -> dict[str, str | None]:
    """The local paths ``--out`` may not be, lie inside or contain (a hub id or preset name is no path)."""
    return {"MODEL": args.model, "--base": args.base, "--clean-data": None if hub_clean else args.clean_data,
            "--eval-poison": args.eval_poison, "--unlabelled-data": args.unlabelled_data, "--cache": args.cache}


def run_clean(args: argparse.Namespace) -> int:
    """Run ``headprune clean``; returns the exit status."""
    from headprune.clean import clean_model, is_victim, load_suspect, victim_test_rows
    from headprune.clean.report import write_clean_report
    from headprune.data import read_labelled_text, read_sentences
    from headprune.defenses import check_reads_unlabelled
    from headprune.data.hub import is_hub_dataset, load_hub_dataset
    from headprune.engine.models import ModelLoadError, UnsupportedModelError

    from headprune.common.assignments import parse_assignments
    from headprune.common.out_folder import check_out_folder

    hub_clean = is_hub_dataset(args.clean_data)
    inputs = _input_paths(args, hub_clean)
    check_out_folder(args.out, overwrite=args.overwrite, inputs=inputs)  # before any work
    for flag, path in (("--clean-data", None if hub_clean else args.clean_data), ("--eval-poison", args.eval_poison),
                       ("--unlabelled-data", args.unlabelled_data)):
        if path is not None and not Path(path).is_file():
            raise FileNotFoundError(f"{flag}: no such file: {path}")
    if args.unlabelled_data is not None:
        check_reads_unlabelled(args.defense, "--unlabelled-data")
    settings = CleanSettings(defense=args.defense, holdout_fraction=args.holdout_fraction, finetune_epochs=args.finetune_epochs,
                             curve_points=args.curve_points, seed=args.seed, base=args.base,
                             options=parse_assignments(args.option, "--option"))
    if hub_clean:
        try:
            clean = load_hub_dataset(args.clean_data)
        except (ImportError, RuntimeError) as err:
            print(f"headprune: error: --clean-data: {str(err).splitlines()[0]}", file=sys.stderr)
            return 2
    else:
        clean = read_labelled_text(args.clean_data)
    poison = None if args.eval_poison is None else read_labelled_text(args.eval_poison)
    unlabelled = None if args.unlabelled_data is None else read_sentences(args.unlabelled_data)
    start = time.perf_counter()
    try:
        needs_floor = args.eval_poison is not None or args.eval_victim_test is not None
        model = load_suspect(args.model, cache=args.cache, progress=not args.quiet, reference=needs_floor)
    except (ModelLoadError, UnsupportedModelError) as err:
        print(f"headprune: error: {str(err).splitlines()[0]}", file=sys.stderr)
        return 2
    load_s = time.perf_counter() - start  # loading (or building) the model
    if args.eval_victim_test is not None:
        if not is_victim(model) or poison is not None:
            raise ValueError("--eval-victim-test needs a victim MODEL and no --eval-poison")
        poison = victim_test_rows(model, args.eval_victim_test, args.seed)
    result = clean_model(model, clean, settings, eval_poison=poison, target_label=args.target_label,
                         unlabelled_data=unlabelled, cache=args.cache, progress=not args.quiet)
    result.timings["load"] = round(result.timings["load"] + load_s, 3)
    paths = write_clean_report(result, args.out, command=_command(args), compact_model=args.compact,
                               sentences=list(clean.sentences[:32]), overwrite=args.overwrite, inputs=inputs)
    _print_table(result, paths)
    return 0
