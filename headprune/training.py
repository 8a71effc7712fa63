"""Deprecated: clean fine-tuning moved to :mod:`headprune.finetuning` (this alias stays for one release)."""

from __future__ import annotations

import warnings

from headprune.finetuning import *  # noqa: F403
from headprune.finetuning import __all__  # noqa: F401

warnings.warn("headprune.training is deprecated; use headprune.finetuning", DeprecationWarning, stacklevel=2)
