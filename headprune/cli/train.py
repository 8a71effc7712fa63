"""``headprune train`` and ``python -m headprune.agents``: their options (light to import, so building the
``headprune`` parser does not load SB3) and running them (:func:`run_train_command`, which imports the trainer,
:mod:`headprune.agents.rl_training`)."""

from __future__ import annotations

import argparse
import shlex
import sys
from collections.abc import Sequence

from pathlib import Path

from headprune.cli.support import seed_argument
from headprune.envs.registration import ENV_ID

__all__ = ["ALGO_NAMES", "DEFAULTS", "add_train_arguments", "main", "resolve_train_flags", "run_train_command"]

DEFAULTS: dict[str, object] = {"algo": "maskable_ppo", "env": ENV_ID, "seed": 0}
"""What ``--algo``, ``--env`` and ``--seed`` are when not given (a resumed run keeps its own; see
:func:`resolve_train_flags`)."""

ALGO_NAMES: tuple[str, ...] = ("maskable_ppo", "ppo")
"""The algorithms ``headprune train`` knows (keys of :data:`headprune.agents.hyperparams.ALGOS`)."""


def add_train_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``train`` options to ``parser``."""
    parser.add_argument("--algo", default=None, choices=ALGO_NAMES,
                        help=f"default {DEFAULTS['algo']} (with --resume: the run's; another is refused)")
    parser.add_argument("--env", default=None,
                        help=f"Gymnasium env id (default {ENV_ID}; with --resume: the run's; another is refused)")
    parser.add_argument("--model", "--victim", dest="model", default=None,
                        help="env victim (preset name or folder); overrides the YAML's (--victim: the old name)")
    parser.add_argument("--out", default=None, help="run folder (default runs/<algo>_<env>_s<seed>)")
    parser.add_argument("--resume", default=None, metavar="RUN_DIR", help="continue this run from its last checkpoint")
    parser.add_argument("--trust-pickle", action="store_true",
                        help="resume from an SB3 pickled checkpoint (older runs): RUNS ANY CODE IN IT; only your own")
    parser.add_argument("--seed", type=seed_argument, default=None,
                        help=f"default {DEFAULTS['seed']} (with --resume: the run's; another is refused)")
    parser.add_argument("--conf-file", default=None, help="zoo-style YAML (default the shipped configs/<algo>.yml)")
    parser.add_argument("--hyperparams", nargs="+", default=None, metavar="KEY=VALUE",
                        help="override hyperparameters (YAML values), e.g. n_steps=64 learning_rate=lin_1e-4")
    parser.add_argument("--env-kwargs", nargs="+", default=None, metavar="KEY=VALUE",
                        help="override env keyword arguments (YAML values), e.g. budget=20 val_size=128")
    parser.add_argument("--n-timesteps", type=int, default=None, help="total env steps (default the YAML's)")
    parser.add_argument("--max-minutes", type=float, default=None, help="stop (and save) after this wall time")
    parser.add_argument("--cache", default=None, help="cache root for victims and head statistics")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per process (default 1)")
    parser.add_argument("--no-tensorboard", action="store_true", help="do not write TensorBoard logs")
    parser.add_argument("--progress-bar", action="store_true", help="show SB3's progress bar")
    parser.add_argument("--verbose", type=int, default=0, help="SB3 verbosity (0, 1, 2)")


def resolve_train_flags(args: argparse.Namespace) -> argparse.Namespace:
    """Fill ``--algo``, ``--env`` and ``--seed`` in place (so the recorded command spells them out): a resumed
    run's own, else :data:`DEFAULTS`. Idempotent.

    :raises ValueError: with ``--resume``, a given flag that differs from the run's (named, with the run's value).
    """
    from headprune.agents.rl_training import _read_run

    if args.resume is None:
        for key, default in DEFAULTS.items():
            if getattr(args, key) is None:
                setattr(args, key, default)
        return args
    run = _read_run(Path(args.resume))
    conflicts = [f"--{flag} {value} (the run has {run.get(key)})"
                 for flag, key, value in (("algo", "algo", args.algo), ("env", "env_id", args.env),
                                          ("seed", "seed", args.seed))
                 if value is not None and value != run.get(key)]
    if conflicts:
        raise ValueError(f"--resume {args.resume} continues that run with its own algorithm, env and seed; "
                         f"{', '.join(conflicts)} conflict: drop them, or start a new run with --out")
    args.algo, args.env, args.seed = run.get("algo"), run.get("env_id"), run.get("seed")
    return args


def run_train_command(args: argparse.Namespace, command: str) -> int:
    """Run parsed ``train`` arguments (``command``: the exact command line, recorded in ``run.json``)."""
    from headprune.agents.hyperparams import parse_assignments
    from headprune.agents.rl_training import resume, train

    common = {"max_minutes": args.max_minutes, "progress_bar": args.progress_bar, "threads": args.threads,
              "verbose": args.verbose, "command": command}
    if args.resume is not None:
        given = [flag for flag, value in (("--model", args.model), ("--hyperparams", args.hyperparams),
                                          ("--env-kwargs", args.env_kwargs), ("--conf-file", args.conf_file),
                                          ("--out", args.out), ("--cache", args.cache)) if value is not None]
        if given:
            raise ValueError(f"--resume continues a run with its saved settings; drop {', '.join(given)}")
        resolve_train_flags(args)
        result = resume(args.resume, n_timesteps=args.n_timesteps, trust_pickle=getattr(args, "trust_pickle", False),
                        **common)
    else:
        env_kwargs = parse_assignments(args.env_kwargs, "--env-kwargs")
        if args.model is not None:
            env_kwargs["victim"] = args.model
        if args.cache is not None:
            env_kwargs["cache"] = args.cache
        resolve_train_flags(args)
        result = train(args.algo, args.env, run_dir=args.out, seed=args.seed, conf_file=args.conf_file,
                       hyperparams=parse_assignments(args.hyperparams, "--hyperparams"), env_kwargs=env_kwargs,
                       n_timesteps=args.n_timesteps, tensorboard=not args.no_tensorboard, **common)
    print(f"{result.end}: {result.num_timesteps} timesteps in {result.seconds:.1f} s this session; "
          f"model {result.model_path}; run folder {result.run_dir}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m headprune.agents``: the same options as ``headprune train``."""
    parser = argparse.ArgumentParser(prog="python -m headprune.agents",
                                     description="Train an SB3 agent in HeadPrune-v0 (or --resume a run).")
    add_train_arguments(parser)
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    command = " ".join(["python -m headprune.agents", *(shlex.quote(a) for a in argv)])
    try:
        return run_train_command(args, command)
    except (ValueError, FileNotFoundError) as err:
        print(f"{parser.prog}: error: {err}", file=sys.stderr)
        return 2
