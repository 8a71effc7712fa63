"""The random-pruning defense: prune seeded random active heads."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from headprune.defenses.base import DEFENSES
from headprune.defenses.defense_options import option
from headprune.defenses.scripted import ScriptedPolicy, ScriptedPolicyDefense, ScriptedPolicyOptions

__all__ = ['RandomOptions', 'RandomPolicy', 'RandomPruning']


class RandomPolicy(ScriptedPolicy):
    """A uniformly random active head, from ``np.random.default_rng(seed)`` (restarted by :meth:`reset`)."""

    name = "random"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("n_rows", 0)
        super().__init__(*args, **kwargs)
        self.rng = np.random.default_rng(self.seed)

    def reset(self) -> None:
        self.rng = np.random.default_rng(self.seed)

    def choose(self, mask: np.ndarray, valid: np.ndarray) -> int:
        return int(self.rng.choice(np.flatnonzero(valid)))


@dataclass(frozen=True)
class RandomOptions(ScriptedPolicyOptions):
    """The options of ``random`` (it scores nothing, so it reads no rows by default)."""

    n_rows: int | None = option(0, "clean rows the policy holds (it scores nothing: 0)", low=0)


@DEFENSES.register("random")
class RandomPruning(ScriptedPolicyDefense):
    """Prune seeded random active heads (:class:`RandomPolicy`)."""

    description = "prune seeded random active heads"
    policy_class = RandomPolicy
    options_class = RandomOptions
