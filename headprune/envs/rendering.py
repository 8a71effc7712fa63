"""``render_mode="rgb_array"`` of ``HeadPrune`` envs: the layer x head mask as an image (numpy only).

:func:`mask_frame` draws, on a dark background:

* a grid of ``L`` rows (layers, top = layer 0) by ``H`` columns (heads) of :data:`CELL`-pixel cells:
  green = active, grey = pruned, the head pruned by the last action outlined in yellow (red when the
  action was invalid: the head was already pruned);
* below it two bars across the grid's width: clean validation accuracy (blue, in ``[0, 1]``, a red
  tick at the accuracy floor, a white tick at the unpruned accuracy) and the proxy (orange, over its
  ``value_range``, a white tick at its unpruned value).

With the ``mix`` operation (:mod:`headprune.envs.mixing`) the frame also shows the per-block mixing state:

* two more columns right of the grid, one cell per layer each: the layer's attention block, then its
  feed-forward block, each filled from the bottom in violet to its mixing level (level / ``mix_levels``: empty =
  the suspect's weights, full = the base's), outlined like a head when the last action mixed it;
* a third bar: the ``embeddings`` block's level (violet, in ``[0, 1]``).

Frame shape: ``(CELL * (L + 2) + 2 * PAD, CELL * H + 2 * PAD, 3)`` uint8, i.e. ``(16 L + 64, 16 H + 32, 3)``
(multiples of 16, as video encoders want; ``(160, 224, 3)`` for MiniLM's 6 x 12 heads); with ``mix``,
``(16 L + 80, 16 H + 64, 3)``. The shape depends on the head grid and the operation only, so every frame of an
env has the same shape (``RecordVideo`` needs it).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["CELL", "PAD", "RENDER_MODES", "FrameState", "frame_shape", "mask_frame"]

RENDER_MODES: tuple[str, ...] = ("ansi", "rgb_array", "human")
"""The render modes of ``HeadPruneEnv`` (``None`` renders nothing). ``"human"`` prints the ``"ansi"`` grid to
the terminal after every ``reset`` and ``step`` (a text env's display; no pygame window). Declaring it keeps
``gym.make(..., render_mode="human")`` from wrapping the env in Gymnasium's pygame ``HumanRendering``, which
failed at ``reset`` without pygame."""

CELL = 16
"""Pixels per head cell (and per bar row)."""
PAD = 16
"""Margin in pixels."""

_BACKGROUND = (24, 24, 32)
_ACTIVE = (60, 180, 90)
_PRUNED = (90, 90, 90)
_LAST = (250, 220, 40)
_INVALID = (230, 50, 50)
_ACCURACY = (70, 130, 230)
_PROXY = (240, 150, 40)
_TICK = (255, 255, 255)
_FLOOR = (230, 50, 50)
_TROUGH = (50, 50, 60)
_MIX = (170, 90, 230)


@dataclass(frozen=True)
class FrameState:
    """What a frame shows.

    :param mask: ``[L, H]`` int, 1 = active, 0 = pruned.
    :param last_action: the flat index ``l * H + h`` of the last action, or ``None`` (after reset).
    :param last_invalid: whether the last action hit an already pruned head.
    :param accuracy: the current clean validation accuracy.
    :param start_accuracy: the unpruned model's.
    :param floor: the accuracy floor.
    :param proxy: the current proxy value.
    :param start_proxy: the unpruned model's.
    :param proxy_range: the proxy's ``(low, high)`` value range.
    :param mix: ``[L, 2]`` float in ``[0, 1]``, each layer's attention and feed-forward mixing level over
        ``mix_levels``, or ``None`` (no ``mix`` operation: no mixing columns nor bar).
    :param mix_embeddings: the ``embeddings`` block's level over ``mix_levels``.
    :param last_block: ``(layer, column)`` of the block the last action mixed (column 0 attention, 1
        feed-forward; layer ``-1``: the embeddings), or ``None``.
    """

    mask: np.ndarray
    last_action: int | None
    last_invalid: bool
    accuracy: float
    start_accuracy: float
    floor: float
    proxy: float
    start_proxy: float
    proxy_range: tuple[float, float]
    mix: np.ndarray | None = None
    mix_embeddings: float = 0.0
    last_block: tuple[int, int] | None = None

    @classmethod
    def of_env(cls, env: Any) -> FrameState:
        """The state of a :class:`~headprune.envs.headprune_env.HeadPruneEnv` (reads its episode state)."""
        action, invalid = env._last_action if env._last_action is not None else (None, False)
        op, index = env.operations.decode(action) if action is not None else (None, None)
        mix, embeddings, last_block = None, 0.0, None
        if env.operations.mixes:
            mix = np.zeros((env.num_layers, 2))
            columns = {"attention": 0, "feed_forward": 1}
            for b, (block, level) in enumerate(zip(env.bench.mixer.blocks, env._mix.tolist())):
                fraction = level / env.config.mix_levels
                if block.kind == "embeddings":
                    embeddings = fraction
                else:
                    mix[block.layer, columns[block.kind]] = fraction
                if op == "mix" and index == b:
                    last_block = (-1, 0) if block.layer is None else (block.layer, columns[block.kind])
        return cls(mask=env._mask.reshape(env.num_layers, env.num_heads),
                   last_action=index if op in ("prune", "reset") else None, last_invalid=invalid,
                   accuracy=env._score.accuracy, start_accuracy=env.start_score.accuracy, floor=env.accuracy_floor,
                   proxy=env._score.proxy, start_proxy=env.start_score.proxy,
                   proxy_range=(float(env.proxy.value_range[0]), float(env.proxy.value_range[1])),
                   mix=mix, mix_embeddings=embeddings, last_block=last_block)


def frame_shape(num_layers: int, num_heads: int, mix: bool = False) -> tuple[int, int, int]:
    """``(height, width, 3)`` of every frame of an ``L x H`` env (``mix``: with the ``mix`` operation)."""
    extra = int(mix)
    return CELL * (num_layers + 2 + extra) + 2 * PAD, CELL * (num_heads + 2 * extra) + 2 * PAD, 3


def _fill(img: np.ndarray, top: int, left: int, height: int, width: int, colour: tuple[int, int, int]) -> None:
    img[top:top + height, left:left + width] = colour


def _bar(img: np.ndarray, top: int, width: int, value: float, low: float, high: float, colour: tuple[int, int, int],
         ticks: list[tuple[float, tuple[int, int, int]]]) -> None:
    """A horizontal bar ``CELL - 4`` pixels high and ``width`` wide filled to ``value`` on ``[low, high]``, with
    ticks."""
    span = high - low if high > low else 1.0

    def x(v: float) -> int:
        return int(round(np.clip((v - low) / span, 0.0, 1.0) * (width - 1)))

    _fill(img, top + 2, PAD, CELL - 4, width, _TROUGH)
    _fill(img, top + 2, PAD, CELL - 4, x(value) + 1, colour)
    for v, tick_colour in ticks:
        _fill(img, top, PAD + x(v), CELL, 1, tick_colour)


def mask_frame(state: FrameState) -> np.ndarray:
    """The frame of ``state``: ``frame_shape(L, H)`` uint8 RGB (see the module docstring)."""
    num_layers, num_heads = state.mask.shape
    img = np.empty(frame_shape(num_layers, num_heads, state.mix is not None), dtype=np.uint8)
    img[:] = _BACKGROUND
    for layer in range(num_layers):
        for head in range(num_heads):
            top, left = PAD + layer * CELL, PAD + head * CELL
            if state.last_action == layer * num_heads + head:
                _fill(img, top, left, CELL, CELL, _INVALID if state.last_invalid else _LAST)
            colour = _ACTIVE if state.mask[layer, head] else _PRUNED
            _fill(img, top + 2, left + 2, CELL - 4, CELL - 4, colour)
    bars = PAD + num_layers * CELL
    width = CELL * num_heads  # the bars span the head grid
    _bar(img, bars, width, state.accuracy, 0.0, 1.0, _ACCURACY, [(state.floor, _FLOOR), (state.start_accuracy, _TICK)])
    low, high = state.proxy_range
    _bar(img, bars + CELL, width, state.proxy, low, high, _PROXY, [(state.start_proxy, _TICK)])
    if state.mix is not None:
        _mix_cells(img, state, num_heads)
        last = state.last_block == (-1, 0)
        _bar(img, bars + 2 * CELL, width, state.mix_embeddings, 0.0, 1.0, _MIX,
             [(1.0, _INVALID if last and state.last_invalid else _LAST)] if last else [])
    return img


def _mix_cells(img: np.ndarray, state: FrameState, num_heads: int) -> None:
    """The two mixing columns right of the head grid (see the module docstring)."""
    assert state.mix is not None
    for layer in range(state.mix.shape[0]):
        for column in range(2):
            top, left = PAD + layer * CELL, PAD + (num_heads + column) * CELL
            if state.last_block == (layer, column):
                _fill(img, top, left, CELL, CELL, _INVALID if state.last_invalid else _LAST)
            _fill(img, top + 2, left + 2, CELL - 4, CELL - 4, _TROUGH)
            filled = int(round(float(np.clip(state.mix[layer, column], 0.0, 1.0)) * (CELL - 4)))
            _fill(img, top + 2 + (CELL - 4) - filled, left + 2, filled, CELL - 4, _MIX)
