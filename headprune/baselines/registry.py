"""Deprecated: the one registry of defenses is :data:`headprune.defenses.DEFENSES`."""

from headprune.defenses.base import DEFENSES as STRATEGIES
from headprune.defenses.base import defense_names as strategy_names
from headprune.defenses.base import get_defense as get_strategy

__all__ = ["STRATEGIES", "get_strategy", "strategy_names"]
