"""The options of ``headprune train`` (shared with ``python -m headprune.agents``); light to
import, so building the ``headprune`` parser does not load SB3."""

from __future__ import annotations

import argparse

from headprune.cli_support import seed_argument
from headprune.envs.registration import ENV_ID

__all__ = ["ALGO_NAMES", "DEFAULTS", "add_train_arguments"]

DEFAULTS: dict[str, object] = {"algo": "maskable_ppo", "env": ENV_ID, "seed": 0}
"""What ``--algo``, ``--env`` and ``--seed`` are when not given (a resumed run keeps its own; see
:func:`headprune.agents.rl_training.run_train_command`)."""

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
                        help="override env keyword arguments (YAML values), e.g. budget=20 eval_size=128")
    parser.add_argument("--n-timesteps", type=int, default=None, help="total env steps (default the YAML's)")
    parser.add_argument("--max-minutes", type=float, default=None, help="stop (and save) after this wall time")
    parser.add_argument("--cache", default=None, help="cache root for victims and head statistics")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per process (default 1)")
    parser.add_argument("--no-tensorboard", action="store_true", help="do not write TensorBoard logs")
    parser.add_argument("--progress-bar", action="store_true", help="show SB3's progress bar")
    parser.add_argument("--verbose", type=int, default=0, help="SB3 verbosity (0, 1, 2)")
