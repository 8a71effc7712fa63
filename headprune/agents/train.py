"""``python -m headprune.agents.train``: the training command line (see :mod:`headprune.agents.training`).

This module only runs :func:`headprune.agents.training.main`; import the API from
:mod:`headprune.agents` (``headprune.agents.train`` is the training function) or
:mod:`headprune.agents.training`.
"""

from __future__ import annotations

import sys

from headprune.agents.training import main

if __name__ == "__main__":
    sys.exit(main())
