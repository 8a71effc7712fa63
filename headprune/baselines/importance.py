"""Deprecated: head parameter groups moved to :mod:`headprune.defenses.head_groups` and gate-gradient
importance to :mod:`headprune.engine.head_stats` (this alias stays for one release)."""

from __future__ import annotations

from headprune.defenses.head_groups import *  # noqa: F403
from headprune.defenses.head_groups import __all__  # noqa: F401
