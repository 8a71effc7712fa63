"""``python -m headprune.cli.zoo_export``: write a zoo-native hyperparameter file for rl-baselines3-zoo's own
trainer (:func:`headprune.agents.zoo_export.zoo_entry` builds the entry)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import yaml

__all__ = ["main"]


def main(argv: list[str] | None = None) -> int:
    """Export one ``--algo``/``--env`` entry to ``--out`` and print the ``rl_zoo3.train`` command that uses it."""
    from headprune.agents.zoo_export import zoo_entry

    p = argparse.ArgumentParser(prog="python -m headprune.cli.zoo_export",
                                description="Export a zoo-native hyperparameter file (rl-baselines3-zoo's trainer).")
    p.add_argument("--algo", default="ppo")
    p.add_argument("--env", default="HeadPrune-Tiny-v0")
    p.add_argument("--conf-file", default=None, help="a headprune hyperparameter file (default: the shipped one)")
    p.add_argument("--out", required=True, help="the zoo-native YAML to write")
    args = p.parse_args(argv)
    entry, flags = zoo_entry(args.algo, args.env, conf_file=args.conf_file)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(f"# exported by python -m headprune.cli.zoo_export --algo {args.algo} --env {args.env}\n"
                   f"# zoo flags for the keys headprune train reads itself: {' '.join(flags) or '(none)'}\n"
                   + yaml.safe_dump({args.env: entry}, sort_keys=False))
    print(f"wrote {out}; run: python -m rl_zoo3.train --algo {args.algo} --env {args.env} --gym-packages headprune "
          f"--conf-file {out} {' '.join(flags)}".rstrip())
    return 0


if __name__ == "__main__":
    sys.exit(main())
