"""Deprecated: clean fine-tuning moved to :mod:`headprune.engine.finetuning` (this alias stays for one release)."""

from __future__ import annotations

import warnings

from headprune.engine.finetuning import *  # noqa: F403
from headprune.engine.finetuning import __all__  # noqa: F401

warnings.warn("headprune.training is deprecated; use headprune.engine.finetuning", DeprecationWarning, stacklevel=2)
