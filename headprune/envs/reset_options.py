"""What ``HeadPruneEnv`` checks at construction and reset, and how it scores an episode for SB3.

* :func:`check_render_mode`: ``None``, ``"ansi"`` or ``"rgb_array"``; anything else raises at
  construction (not at :meth:`render`).
* :func:`start_mask_from_options`: the documented ``reset(options=...)`` keys, :data:`RESET_OPTIONS`.
* :func:`episode_success`: ``info["is_success"]`` at the end of an episode (SB3 logs its mean as
  ``rollout/success_rate``): the episode's return reached :data:`SUCCESS_RETURN` (every id's
  ``spec.reward_threshold``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from headprune.envs.rendering import RENDER_MODES

__all__ = ["RESET_OPTIONS", "SUCCESS_RETURN", "check_render_mode", "episode_success", "start_mask_from_options"]

SUCCESS_RETURN = 0.55
"""The undiscounted episode return at which ``info["is_success"]`` is True, registered as every id's
``reward_threshold``. Chosen above the best scripted strategy's reference return on every registered id
(0.455-0.532, ``headprune/reference_scores.json``), so success means "beat every scripted strategy", and a
uniformly random policy over the valid actions rarely earns it (its rate, ``random.success_rate`` in the
reference scores, is measured on ``HeadPrune-Tiny-v0``). The earlier rule (the episode's best mask beats the
unpruned model's potential) was earned by 20 of 20 random episodes on Tiny: any pruned head lowers PURE's
summed variance."""

RESET_OPTIONS: dict[str, str] = {
    "mask": "the starting head mask, [n] or [L, H] of 0/1 (1 = active; default all ones); its pruned heads "
            "count toward the budget, so it may prune at most budget - 1 heads",
}
"""The keys ``reset(options=...)`` accepts, with what they do."""


def check_render_mode(render_mode: str | None) -> str | None:
    """``render_mode`` when it is ``None`` or one of :data:`~headprune.envs.rendering.RENDER_MODES`.

    :raises ValueError: naming the supported modes.
    """
    if render_mode is not None and render_mode not in RENDER_MODES:
        raise ValueError(f"render_mode must be None or one of {list(RENDER_MODES)}, got {render_mode!r}")
    return render_mode


def start_mask_from_options(options: Mapping[str, Any] | None, head_shape: tuple[int, int],
                            budget: int) -> np.ndarray | None:
    """The flat int8 ``[L * H]`` starting mask of ``options["mask"]``, or ``None`` (start unpruned).

    :param options: what ``reset`` got.
    :param head_shape: ``(L, H)``.
    :param budget: the most heads pruned per episode.
    :raises ValueError: unknown keys (named), a mask of the wrong shape or values, or one that
        prunes ``budget`` heads or more (the episode would be over before its first step).
    """
    if not options:
        return None
    unknown = sorted(set(options) - set(RESET_OPTIONS))
    if unknown:
        raise ValueError(f"unknown reset option(s) {unknown}; valid: {sorted(RESET_OPTIONS)}")
    if "mask" not in options or options["mask"] is None:
        return None
    n = head_shape[0] * head_shape[1]
    mask = np.asarray(options["mask"])
    if mask.shape not in ((n,), tuple(head_shape)):
        raise ValueError(f"options['mask'] must have shape ({n},) or {tuple(head_shape)}, got {mask.shape}")
    if not np.isin(mask, (0, 1)).all():
        raise ValueError("options['mask'] must hold only 0 (pruned) and 1 (active)")
    flat = mask.reshape(n).astype(np.int8)
    pruned = int(n - flat.sum())
    if pruned >= budget:
        raise ValueError(f"options['mask'] prunes {pruned} heads; the budget is {budget}, so at most {budget - 1}")
    return flat


def episode_success(episode_return: float, threshold: float = SUCCESS_RETURN) -> bool:
    """``info["is_success"]``: the episode's undiscounted return (the potential ``w_acc * acc - w_proxy * proxy``
    gained, less the invalid-action and floor penalties) reached ``threshold`` (:data:`SUCCESS_RETURN`). No
    LFR: the reward reads clean accuracy and the proxy only.

    :param episode_return: the sum of the episode's rewards.
    :param threshold: the return that counts as success.
    """
    return bool(episode_return >= threshold)
