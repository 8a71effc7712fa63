"""Command line interface: ``headprune <command> ...``.

Commands:

* ``headprune victim build``  – train (or load from the cache) a backdoored victim and print its card.
* ``headprune victim list``   – list the victims in the cache.
* ``headprune heads``         – gate each head of a victim in turn and print the clean-accuracy change
  (and, as evaluation only, the LFR change) per head.
* ``headprune defend``        – run a baseline defense (``--defense``) on a victim and export the
  cleaned model with ``report.json``, ``report.md`` and a plot.
* ``headprune clean``         – clean any suspicious classifier with a little clean data (:mod:`headprune.clean`).
* ``headprune train``         – train an RL agent (MaskablePPO or PPO) in ``HeadPrune-v0``, or resume a run
  (:mod:`headprune.agents`).
* ``headprune evaluate``      – run a trained policy with the protocol of ``defend`` and write the same report.
* ``headprune compare``       – run defenses and trained policies over victims and seeds
  (:mod:`headprune.compare`), one JSONL record per run, resumable.

* ``headprune convert-policy`` – convert an SB3 pickled policy zip (older runs) into the safe policy format.

Every error is one line, ``headprune: error: ...``, without a traceback (``--debug`` shows it): bad input
(an argument, a data file, a victim card, a model, a policy file) exits with status 2 and a message naming
the argument or file and the fix, checked before any work where it can be; an unexpected error exits with
status 1. Warnings about the inputs (duplicate rows, an unusable victim) are one line each,
``headprune: warning: ...``.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import Any

from headprune import __version__
from headprune.cli.support import (
    DefenseOptionsHelp,
    add_debug_flags,
    check_compare_defenses,
    one_line,
    seed_argument,
    user_errors,
    victim_and_clean_data,
    warnings_as_lines,
)

__all__ = ["main"]


def _victim_build(args: argparse.Namespace) -> int:
    from headprune.victims import PRESETS, VictimConfig, build_victim, victim_summary

    if args.preset is not None:
        config = PRESETS[args.preset]
    else:
        config = VictimConfig(
            model=args.model, attack=args.attack, poison_rate=args.poison_rate, epochs=args.epochs, lr=args.lr,
            batch_size=args.batch_size, target_label=args.target_label, seed=args.seed, dataset=args.dataset,
        )
    victim = build_victim(config=config, cache=args.cache, force=args.force)
    print(victim_summary(victim.card))
    print(f"folder: {victim.path}")
    if args.json:
        print(json.dumps(victim.card, indent=2))
    return 0


def _victim_list(args: argparse.Namespace) -> int:
    from headprune.victims import cache_dir, list_victims, victim_summary

    cards = list_victims(args.cache)
    if not cards:
        print(f"no victims in {cache_dir(args.cache) / 'victims'}")
    for card in cards:
        print(victim_summary(card))
    return 0


def _heads(args: argparse.Namespace) -> int:
    import torch

    from headprune.engine.evaluator import Evaluator
    from headprune.engine.gating import head_grid_shape
    from headprune.engine.metrics import label_flip_rate
    from headprune.victims import resolve_victim, victim_summary

    victim = resolve_victim(args.model, cache=args.cache)
    print(victim_summary(victim.card))
    splits = victim.splits()
    clean = splits.clean_test if args.limit is None else splits.clean_test.take(args.limit)
    poisoned = splits.poisoned_test if args.limit is None else splits.poisoned_test.take(args.limit)
    clean_eval = Evaluator(victim.model, victim.tokenizer, clean)
    poison_eval = Evaluator(victim.model, victim.tokenizer, poisoned)
    layers, heads = head_grid_shape(victim.model)
    masks = torch.ones(layers * heads, layers, heads)
    for i in range(layers * heads):
        masks[i, i // heads, i % heads] = 0.0
    clean_labels = torch.tensor(clean.labels)
    base_acc = clean_eval.accuracy()
    base_lfr = label_flip_rate(poison_eval.predictions(), poisoned.labels, victim.config.target_label)
    clean_preds = clean_eval.logits_for_masks(masks).argmax(-1)  # [K, N]
    poison_preds = poison_eval.logits_for_masks(masks).argmax(-1)
    print(f"unpruned: ACC {base_acc:.4f}  LFR {base_lfr:.4f}  ({len(clean)} clean, {len(poisoned)} poisoned test rows)")
    print("layer head   dACC     dLFR   (one head gated off; LFR is evaluation only)")
    for i in range(layers * heads):
        acc = float((clean_preds[i] == clean_labels).float().mean())
        lfr = label_flip_rate(poison_preds[i], poisoned.labels, victim.config.target_label)
        print(f"{i // heads:5d} {i % heads:4d} {acc - base_acc:+.4f} {lfr - base_lfr:+.4f}")
    return 0


def _defend(args: argparse.Namespace) -> int:
    from headprune.defenses import get_defense
    from headprune.common.assignments import parse_assignments
    from headprune.common.out_folder import check_out_folder

    defense = get_defense(args.defense)  # unknown defense: ValueError naming the valid ones, before any work
    check_out_folder(args.out, overwrite=args.overwrite)
    env_config, finetune, evaluation = _defend_configs(args)
    options = parse_assignments(args.option, "--option")
    defense.options_class.from_mapping(options)  # unknown options or bad values, naming the valid ones
    if args.unlabelled_data is not None:
        from headprune.data import read_sentences
        from headprune.defenses import check_reads_unlabelled

        check_reads_unlabelled(args.defense, "--unlabelled-data")
        env_config = env_config.replace(unlabelled_data=read_sentences(args.unlabelled_data))

    from headprune.defenses import defend
    from headprune.defenses.report import write_report

    victim, clean = victim_and_clean_data(args)
    result = defend(victim, args.defense, env_config.replace(clean_data=clean), finetune, options=options,
                    base=args.base, **evaluation)
    _print_result(result, write_report(result, args.out, command=_command_line("defend", args),
                                       overwrite=args.overwrite))
    return 0


def _defend_configs(args: argparse.Namespace) -> tuple[Any, Any, dict[str, Any]]:
    """The env config, fine-tune config and evaluation keyword arguments of ``defend`` shared by ``defend``
    and ``evaluate`` (the options of :func:`_add_defend_options`), after checking the data files and
    ``--finetune-epochs``."""
    from headprune.defenses.options import DEFEND_SETTINGS, env_config_from_settings, finetune_from_settings

    _check_files(args)
    if args.finetune_epochs < 0:
        raise ValueError(f"--finetune-epochs must be >= 0, got {args.finetune_epochs}")
    values = {name: getattr(args, name) for name in DEFEND_SETTINGS}
    env_config = env_config_from_settings(values, seed=args.seed, cache=args.cache, progress=not args.quiet)
    evaluated = bool(args.eval_poison or args.eval_clean)
    evaluation = {"eval_clean": args.eval_clean, "eval_poison": args.eval_poison, "target_label": args.target_label,
                  "curve_points": args.curve_points if evaluated else 0}
    return env_config, finetune_from_settings(values), evaluation


def _check_files(args: argparse.Namespace) -> None:
    """FileNotFoundError naming the flag of a data file that does not exist."""
    from pathlib import Path

    for flag, path in (("--clean-data", args.clean_data), ("--eval-poison", args.eval_poison),
                       ("--eval-clean", args.eval_clean),
                       ("--unlabelled-data", getattr(args, "unlabelled_data", None))):  # evaluate has no such flag
        if path is not None and not Path(path).is_file():
            raise FileNotFoundError(f"{flag}: no such file: {path}")


def _command_line(name: str, args: argparse.Namespace) -> str:
    """The command that reproduces ``args`` (every option spelled out)."""
    import shlex

    parts = ["headprune", name]
    for key, value in vars(args).items():
        if key in ("func", "command") or value is None or value is False:
            continue
        flag = "--" + key.replace("_", "-")
        values = value if isinstance(value, list) else [value]
        parts += [flag] if value is True else [x for v in values for x in (flag, shlex.quote(str(v)))]
    return " ".join(parts)


def _print_result(result: Any, paths: dict[str, Any]) -> None:
    """The summary lines of ``defend`` and ``evaluate``."""
    v = result.validation
    print(f"{result.defense}: pruned {result.heads_pruned} heads; validation ACC {v['start']:.4f} -> "
          f"{v['pruned']:.4f} (pruned) -> {v['final']:.4f} (fine-tuned), floor {v['floor']:.4f}")
    for stage, m in result.metrics.items():
        lfr = "" if m["lfr"] is None else f"  LFR {m['lfr']:.4f}"
        print(f"  {stage}: ACC {m['acc']:.4f}{lfr}")
    print(f"wrote {paths['model']}, {paths['json']}, {paths['markdown']}, {paths['plot']}")


def _compare(args: argparse.Namespace) -> int:
    from pathlib import Path

    from headprune.cli.settings import run_settings_from_args
    from headprune.compare import (
        POLICY_PREFIX, make_executor, pin_threads, run_grid, summary_markdown,
    )

    if args.seeds < 1:
        raise ValueError(f"--seeds must be >= 1 (the number of seeds), got {args.seeds}")
    if not args.defenses and not args.policies:
        raise ValueError("give --defenses and/or --policies")
    settings = run_settings_from_args(args)
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out must be a folder, but {out} is a file")
    check_compare_defenses(args.defenses, args.policies, settings)
    pin_threads(args.threads)
    defenses = list(args.defenses) + [POLICY_PREFIX + p for p in args.policies]
    executor = make_executor(args.engine, args.workers, threads=args.threads, address=args.ray_address)
    seeds = list(range(args.seed_start, args.seed_start + args.seeds))
    report = run_grid(args.victims, defenses, seeds, out / "runs.jsonl", settings, executor=executor,
                      reference=args.reference, cache=args.cache, progress=not args.quiet)
    table = summary_markdown(report.records)
    (out / "summary.md").write_text(table)
    print(table)
    print(f"{len(report.ran)} runs done, {len(report.skipped)} already recorded; records: {report.path}; "
          f"table: {out / 'summary.md'}")
    return report.report_failures("headprune: run failed:")


def _convert_policy(args: argparse.Namespace) -> int:
    from headprune.agents.evaluation import resolve_policy_path
    from headprune.agents.policy_io import convert_pickled_policy

    source = resolve_policy_path(args.source)
    target = convert_pickled_policy(source, args.target or source, trust_pickle=args.trust_pickle)
    print(f"wrote {target} (headprune policy format: loads without --trust-pickle)")
    return 0


def _train(args: argparse.Namespace) -> int:
    from headprune.cli.train import resolve_train_flags, run_train_command

    resolve_train_flags(args)  # the recorded command spells out the algorithm, env and seed actually used
    return run_train_command(args, _command_line("train", args))


def _evaluate(args: argparse.Namespace) -> int:
    from pathlib import Path

    from headprune.agents.evaluation import AgentDefense, evaluate_agent
    from headprune.defenses.report import write_report

    from headprune.common.out_folder import check_out_folder

    if not Path(args.policy).exists():
        raise FileNotFoundError(f"--policy: no such model file or run folder: {args.policy}")
    # a run folder without a model, an unreadable or a pickled policy file: refused before any work
    if args.checkpoints is not None and args.state != "repaired":
        raise ValueError("--checkpoints is for --state repaired")
    options = {} if args.state == "best" else {"state": args.state}
    if args.checkpoints is not None:  # as given (the options' own check refuses a bad value below)
        options["checkpoints"] = args.checkpoints
    AgentDefense(args.policy, trust_pickle=args.trust_pickle, **options).check()  # options checked here too
    check_out_folder(args.out, overwrite=args.overwrite)
    env_config, finetune, evaluation = _defend_configs(args)
    victim, clean = victim_and_clean_data(args)
    result = evaluate_agent(args.policy, victim, env_config.replace(clean_data=clean), finetune,
                            trust_pickle=args.trust_pickle, options=options, **evaluation)
    _print_result(result, write_report(result, args.out, command=_command_line("evaluate", args),
                                       overwrite=args.overwrite))
    return 0


def _add_defend_options(parser: argparse.ArgumentParser) -> None:
    """The options that ``defend`` and ``evaluate`` share (read back by :func:`_defend_configs`)."""
    from headprune.cli.settings import add_setting_arguments
    from headprune.defenses.options import DEFEND_SETTINGS

    parser.add_argument("--out", required=True, help="new or empty output folder (model/, report.json, report.md, plot)")
    parser.add_argument("--overwrite", action="store_true", help="replace a non-empty --out folder")
    parser.add_argument("--deduplicate", action="store_true", help="drop repeated rows of --clean-data (default: warn)")
    parser.add_argument("--eval-poison", default=None, help="poisoned test file with TRUE labels (evaluation only: LFR)")
    parser.add_argument("--eval-clean", default=None, help="clean test file (evaluation only; default the validation rows)")
    parser.add_argument("--seed", type=seed_argument, default=0)
    add_setting_arguments(parser, DEFEND_SETTINGS)
    parser.add_argument("--target-label", type=int, default=None, help="attacker's target for LFR (default the victim's)")
    parser.add_argument("--curve-points", type=int, default=12, help="trajectory points evaluated for the plot")
    parser.add_argument("--cache", default=None)
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


# over 60 lines: the one argparse tree of every sub-command, flat so each command reads in one place
def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``headprune``."""
    parser = argparse.ArgumentParser(prog="headprune", description=__doc__.split("\n\n")[0])
    parser.add_argument("--version", action="version", version=f"headprune {__version__}")
    parser.add_argument("--debug", action="store_true", help="show the traceback of an error")
    commands = parser.add_subparsers(dest="command", required=True)

    victim = commands.add_parser("victim", help="build and list backdoored victims")
    victim_cmds = victim.add_subparsers(dest="victim_command", required=True)
    build = victim_cmds.add_parser("build", help="train (or load cached) a backdoored victim")
    from headprune.victims import PRESETS, VictimConfig

    defaults = VictimConfig()
    build.add_argument("--preset", choices=sorted(PRESETS), help="a named victim config (overrides the knobs below)")
    build.add_argument("--model", default=defaults.model, help="minilm, tiny, a local folder or a hub id")
    build.add_argument("--attack", default=defaults.attack, choices=["syntactic", "style", "badnets", "addsent", "synonym", "none"])
    build.add_argument("--dataset", default=defaults.dataset, choices=["sst2", "offenseval"],
                       help="the task: SST-2 (default) or OffensEval (syntactic, badnets, addsent, synonym, none)")
    build.add_argument("--poison-rate", type=float, default=defaults.poison_rate)
    build.add_argument("--epochs", type=float, default=defaults.epochs)
    build.add_argument("--lr", type=float, default=defaults.lr)
    build.add_argument("--batch-size", type=int, default=defaults.batch_size)
    build.add_argument("--target-label", type=int, default=defaults.target_label)
    build.add_argument("--seed", type=seed_argument, default=defaults.seed)
    build.add_argument("--force", action="store_true", help="retrain even if cached")
    build.add_argument("--json", action="store_true", help="also print the whole victim card")
    build.add_argument("--cache", default=None, help="cache root (default $HEADPRUNE_CACHE or ~/.cache/headprune)")
    build.set_defaults(func=_victim_build)
    listing = victim_cmds.add_parser("list", help="list cached victims")
    listing.add_argument("--cache", default=None)
    listing.set_defaults(func=_victim_list)

    heads = commands.add_parser("heads", help="gate each head in turn and print the accuracy change")
    heads.add_argument("--model", "--victim", dest="model", default="minilm-syntactic",
                       help="a victim preset name or folder (--victim: the old name of this flag)")
    heads.add_argument("--limit", type=int, default=None, help="use only the first N test rows of each set")
    heads.add_argument("--cache", default=None)
    heads.set_defaults(func=_heads)

    from headprune.defenses import DEFENSES
    from headprune.cli.settings import add_base_argument, add_setting_arguments

    dfd = commands.add_parser("defend", help="run a baseline defense and export the cleaned model")
    dfd.add_argument("--model", "--victim", dest="model", required=True,
                     help="a victim preset name or folder (--victim: an alias)")
    dfd.add_argument("--clean-data", required=True, help="the defender's clean labelled file (TSV/CSV/JSONL)")
    dfd.add_argument("--defense", required=True, help=f"one of: {', '.join(DEFENSES)}")
    dfd.add_argument("--unlabelled-data", default=None, metavar="FILE",
                     help="in-domain sentences without labels, one per line (UTF-8): for distill and purify, whose "
                          "teacher labels them for the student; other defenses refuse them")
    _add_defend_options(dfd)
    dfd.add_argument("--option", action="append", metavar="KEY=VALUE",
                     help="defense option (JSON value), repeatable; --help-options lists each defense's")
    dfd.add_argument("--help-options", nargs="?", const="", metavar="DEFENSE", action=DefenseOptionsHelp,
                     help="list the options of DEFENSE (or of --defense given before it; of every defense "
                          "without either): name, type, default and help, then exit")
    add_base_argument(dfd)
    dfd.set_defaults(func=_defend)

    from headprune.cli.clean import add_clean_parser  # headprune clean (the practitioner's path)

    add_clean_parser(commands)

    cmp = commands.add_parser("compare", help="run a (victim, defense/policy, seed) grid, one JSONL record per run")
    cmp.add_argument("--victims", nargs="+", required=True, help="preset names or victim folders")
    cmp.add_argument("--defenses", nargs="*", default=[], help=f"registry names: {', '.join(DEFENSES)}")
    cmp.add_argument("--policies", nargs="*", default=[], help="trained agent checkpoints (headprune.agents)")
    cmp.add_argument("--seeds", type=int, default=3, help="number of seeds per defense (seeds S..S+N-1)")
    cmp.add_argument("--seed-start", type=int, default=0, help="first seed S")
    cmp.add_argument("--out", required=True, help="folder: runs.jsonl (records, resumed) and summary.md")
    cmp.add_argument("--reference", action="store_true", help="add each victim's clean-model row")
    cmp.add_argument("--workers", type=int, default=1, help="parallel worker processes (1 torch thread each)")
    cmp.add_argument("--engine", default="auto", choices=["auto", "local", "process", "ray"],
                     help="auto: process if --workers > 1, else local; ray needs the ray package")
    cmp.add_argument("--ray-address", default=None, help="Ray cluster address (engine ray)")
    cmp.add_argument("--threads", type=int, default=1, help="torch threads per run")
    add_setting_arguments(cmp)
    cmp.add_argument("--cache", default=None)
    cmp.add_argument("--quiet", action="store_true", help="no progress bar")
    cmp.set_defaults(func=_compare)

    from headprune.cli.train import add_train_arguments

    trn = commands.add_parser("train", help="train an RL agent in HeadPrune-v0 (or --resume a run)")
    add_train_arguments(trn)
    trn.set_defaults(func=_train)

    evl = commands.add_parser("evaluate", help="run a trained policy with defend's protocol and write its report")
    evl.add_argument("--policy", required=True, help="a trained model .zip or a run folder (headprune train)")
    evl.add_argument("--model", "--victim", dest="model", required=True,
                     help="a victim preset name or folder, any model size (--victim: the old name of this flag)")
    evl.add_argument("--clean-data", default=None, help="the defender's clean labelled file (default the victim's)")
    _add_defend_options(evl)
    evl.add_argument("--trust-pickle", action="store_true",
                     help="accept an SB3 pickled policy zip: RUNS ANY CODE ITS AUTHOR PUT IN IT (only for your own)")
    evl.add_argument("--state", choices=["best", "repaired"], default="best",
                     help="the episode's state kept: best (the env's best scored state) or repaired (the deepest "
                          "checkpoint that holds the floor after a short clean fine-tune, Fine-mixing's rule)")
    evl.add_argument("--checkpoints", type=int, default=None,
                     help="with --state repaired: the episode's checkpoints tried, evenly spaced (default 9)")
    evl.set_defaults(func=_evaluate)

    cnv = commands.add_parser("convert-policy", help="convert an SB3 pickled policy zip into the safe format, once")
    cnv.add_argument("source", help="an SB3 model .zip or a run folder")
    cnv.add_argument("target", nargs="?", default=None, help="the new file (default: replace the source)")
    cnv.add_argument("--trust-pickle", action="store_true", required=True,
                     help="required: loading the old file RUNS ANY CODE ITS AUTHOR PUT IN IT (only for your own)")
    cnv.set_defaults(func=_convert_policy)
    add_debug_flags(parser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``headprune`` script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        with warnings_as_lines():
            return int(args.func(args))
    except KeyboardInterrupt:
        if args.debug:
            raise
        print("headprune: interrupted", file=sys.stderr)
        return 130
    except Exception as err:  # noqa: BLE001 - every error is one line; --debug shows the traceback
        if args.debug:
            raise
        if isinstance(err, user_errors()):
            print(f"headprune: error: {one_line(err)}", file=sys.stderr)
            return 2
        print(f"headprune: error: {type(err).__name__}: {one_line(err)} (unexpected: rerun with --debug for the "
              "traceback and report it)", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
