"""The common start of the grid benchmarks (defense_table.py, train_agent.py): one torch thread per run,
quiet warnings, the exact command line, and the run settings from the shared options."""

from __future__ import annotations

import argparse
import shlex
import sys
import warnings
from collections.abc import Sequence

from headprune.cli.settings import run_settings_from_args
from headprune.compare import RunSettings, pin_threads


def start(script: str, args: argparse.Namespace, defenses: Sequence[str]) -> tuple[str, RunSettings]:
    """Pin threads, silence UserWarnings, and return ``(command line, run settings)`` of ``script``.

    :param script: the script's path as users type it (``benchmarks/defense_table.py``).
    :param args: parsed arguments with the shared run-settings options and ``threads``.
    :param defenses: the defenses whose ``--options`` are kept (options of other defenses are dropped).
    """
    pin_threads(args.threads)
    warnings.filterwarnings("ignore", category=UserWarning)
    command = f"python {script} " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    return command, run_settings_from_args(args, defenses=defenses)
