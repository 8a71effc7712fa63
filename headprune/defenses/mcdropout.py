"""The MC-dropout defense: prune the head of lowest upper confidence bound of its importance."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from headprune.defenses.base import DEFENSES
from headprune.defenses.defense_options import option
from headprune.defenses.gradient import GradientOptions, ReestimatingPolicy
from headprune.defenses.scripted import ScriptedPolicyDefense
from headprune.engine.head_stats import gate_gradient_importance

__all__ = ['MCDropoutOptions', 'MCDropoutPolicy', 'MCDropoutPruning']


class MCDropoutPolicy(ReestimatingPolicy):
    """Bayesian uncertainty by MC dropout: ``passes`` (T) gate-gradient importance passes with dropout
    REALLY active (the model in train mode while the gradients flow to the gates; pass ``t`` of estimate
    ``e`` seeds its dropout masks with ``(seed, e, t)``), then rank by the upper confidence bound
    ``mu + kappa * sigma`` of each head's importance (``sigma`` the sample std over the T passes) and
    prune the lowest: a head is pruned only when it looks unimportant even in the optimistic case, so a
    head with a low mean but large uncertainty (important for some dropout sub-networks) is kept longer.
    The T passes of the last estimate are in :attr:`last_passes` ``[T, L, H]``.

    Differs from the authors' code, whose "MC dropout" left the model in eval mode, so every pass was
    the same and the "uncertainty" was zero.
    """

    name = "mcdropout"

    def __init__(self, *args: Any, passes: int = 8, kappa: float = 1.0, reestimate_every: int = 4,
                 **kwargs: Any) -> None:
        super().__init__(*args, reestimate_every=reestimate_every, **kwargs)
        if passes < 2:
            raise ValueError(f"MC dropout needs at least 2 passes, got {passes}")
        self.passes = int(passes)
        self.kappa = float(kappa)
        self.last_passes: torch.Tensor | None = None

    def config(self) -> dict[str, Any]:
        return {**super().config(), "passes": self.passes, "kappa": self.kappa}

    def sample(self, mask: np.ndarray) -> torch.Tensor:
        """``[T, L, H]`` importance of T dropout passes under ``mask``."""
        m = self._mask_tensor(mask)
        seeds = [int(np.random.SeedSequence([self.seed, self.estimates, t]).generate_state(1)[0])
                 for t in range(self.passes)]
        return torch.stack([gate_gradient_importance(self.model, self.tokenizer, self.rows, mask=m, dropout=True,
                                                     seed=s, batch_size=self.batch_size, max_length=self.max_length)
                            for s in seeds])

    def estimate(self, mask: np.ndarray) -> np.ndarray:
        passes = self.sample(mask).double()
        self.last_passes = passes.float()
        ucb = passes.mean(0) + self.kappa * passes.std(0, correction=1)
        return ucb.reshape(-1).numpy()


@dataclass(frozen=True)
class MCDropoutOptions(GradientOptions):
    """The options of ``mcdropout`` (:class:`MCDropoutPolicy`)."""

    reestimate_every: int = option(4, "re-estimate the importance every N pruned heads", low=1)
    passes: int = option(8, "dropout passes T per estimate", low=2)
    kappa: float = option(1.0, "weight of the standard deviation in the upper confidence bound mu + kappa * sigma")


@DEFENSES.register("mcdropout")
class MCDropoutPruning(ScriptedPolicyDefense):
    """MC-dropout importance, prune the lowest upper confidence bound (:class:`MCDropoutPolicy`)."""

    description = "MC-dropout importance, prune the lowest upper confidence bound"
    policy_class = MCDropoutPolicy
    options_class = MCDropoutOptions
    fast_options = {'passes': 3, 'n_rows': 48}
