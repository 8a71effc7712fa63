"""``python -m headprune.agents``: the RL training command line, the same as ``headprune train`` (it runs
:func:`headprune.cli.train.main`)."""

from __future__ import annotations

import sys

from headprune.cli.train import main

if __name__ == "__main__":
    sys.exit(main())
