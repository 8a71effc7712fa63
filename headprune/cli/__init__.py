"""The ``headprune`` command: every argparse parser of the package lives in this package.

* :mod:`~headprune.cli.main` – :func:`main` and :func:`build_parser`, the tree of sub-commands.
* :mod:`~headprune.cli.clean` – ``headprune clean`` (the practitioner's path).
* :mod:`~headprune.cli.train` – the options of ``headprune train``.
* :mod:`~headprune.cli.support` – error reporting and the shared input checks of the commands.
"""

from __future__ import annotations

from headprune.cli.main import build_parser, main

__all__ = ["build_parser", "main"]
