"""Where the public pre-trained base of each kind of victim comes from: the table
:func:`headprune.engine.reference.resolve_base` reads for a :class:`~headprune.victims.Victim`, so the
reference code names no model preset.

:data:`PRETRAINED_BASES` maps a :attr:`VictimConfig.model <headprune.victims.VictimConfig.model>` to a function
of the victim that gives its base: a source :func:`~headprune.engine.models.load_classifier` loads (a name,
folder or hub id) or a ready model, and how it was found, in words (for reports). A victim whose model is not
in the table (a local folder, a hub id) falls back to the checkpoint's own resolution.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from torch import nn

if TYPE_CHECKING:
    from headprune.victims.build import Victim

__all__ = ["PRETRAINED_BASES", "BaseSource"]

BaseSource = tuple["str | nn.Module", str]
"""``(a loadable source or a model, how it was found)``."""


def _offline_minilm(victim: Victim) -> BaseSource:
    return "minilm", "the offline MiniLM the victim was built from"


def _tiny_initialisation(victim: Victim) -> BaseSource:
    from headprune.engine.models import build_tiny_classifier

    c = victim.model.config  # the same construction as the victim's (any tiny shape)
    model, _ = build_tiny_classifier(seed=victim.config.seed, num_layers=c.num_hidden_layers,
                                     num_heads=c.num_attention_heads, hidden=c.hidden_size,
                                     intermediate=c.intermediate_size, num_labels=int(c.num_labels))
    return model, "the tiny victim's seeded initialisation"


PRETRAINED_BASES: dict[str, Callable[[Victim], BaseSource]] = {
    "minilm": _offline_minilm,
    "tiny": _tiny_initialisation,
}
"""The base of a victim by its config's ``model``: the offline MiniLM for ``"minilm"``, the seeded random
initialisation for ``"tiny"``."""
