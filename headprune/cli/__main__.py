"""``python -m headprune.cli``: the same as the ``headprune`` command."""

from __future__ import annotations

import sys

from headprune.cli.main import main

if __name__ == "__main__":
    sys.exit(main())
