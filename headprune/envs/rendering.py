"""``render_mode="rgb_array"`` of ``HeadPrune`` envs: the layer x head mask as an image (numpy only).

:func:`mask_frame` draws, on a dark background:

* a grid of ``L`` rows (layers, top = layer 0) by ``H`` columns (heads) of :data:`CELL`-pixel cells:
  green = active, grey = pruned, the head pruned by the last action outlined in yellow (red when the
  action was invalid: the head was already pruned);
* below it two bars across the grid's width: clean validation accuracy (blue, in ``[0, 1]``, a red
  tick at the accuracy floor, a white tick at the unpruned accuracy) and the proxy (orange, over its
  ``value_range``, a white tick at its unpruned value).

Frame shape: ``(CELL * (L + 2) + 2 * PAD, CELL * H + 2 * PAD, 3)`` uint8, i.e. ``(16 L + 64, 16 H + 32, 3)``
(multiples of 16, as video encoders want; ``(160, 224, 3)`` for MiniLM's 6 x 12 heads). The shape
depends on the head grid only, so every frame of an env has the same shape (``RecordVideo`` needs it).
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

    @classmethod
    def of_env(cls, env: Any) -> FrameState:
        """The state of a :class:`~headprune.envs.headprune_env.HeadPruneEnv` (reads its episode state)."""
        last, invalid = env._last_action if env._last_action is not None else (None, False)
        return cls(mask=env._mask.reshape(env.num_layers, env.num_heads), last_action=last, last_invalid=invalid,
                   accuracy=env._score.accuracy, start_accuracy=env.start_score.accuracy, floor=env.accuracy_floor,
                   proxy=env._score.proxy, start_proxy=env.start_score.proxy,
                   proxy_range=(float(env.proxy.value_range[0]), float(env.proxy.value_range[1])))


def frame_shape(num_layers: int, num_heads: int) -> tuple[int, int, int]:
    """``(height, width, 3)`` of every frame of an ``L x H`` env."""
    return CELL * (num_layers + 2) + 2 * PAD, CELL * num_heads + 2 * PAD, 3


def _fill(img: np.ndarray, top: int, left: int, height: int, width: int, colour: tuple[int, int, int]) -> None:
    img[top:top + height, left:left + width] = colour


def _bar(img: np.ndarray, top: int, value: float, low: float, high: float, colour: tuple[int, int, int],
         ticks: list[tuple[float, tuple[int, int, int]]]) -> None:
    """A horizontal bar ``CELL - 4`` pixels high filled to ``value`` on ``[low, high]``, with ticks."""
    width = img.shape[1] - 2 * PAD
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
    img = np.empty(frame_shape(num_layers, num_heads), dtype=np.uint8)
    img[:] = _BACKGROUND
    for layer in range(num_layers):
        for head in range(num_heads):
            top, left = PAD + layer * CELL, PAD + head * CELL
            if state.last_action == layer * num_heads + head:
                _fill(img, top, left, CELL, CELL, _INVALID if state.last_invalid else _LAST)
            colour = _ACTIVE if state.mask[layer, head] else _PRUNED
            _fill(img, top + 2, left + 2, CELL - 4, CELL - 4, colour)
    bars = PAD + num_layers * CELL
    _bar(img, bars, state.accuracy, 0.0, 1.0, _ACCURACY, [(state.floor, _FLOOR), (state.start_accuracy, _TICK)])
    low, high = state.proxy_range
    _bar(img, bars + CELL, state.proxy, low, high, _PROXY, [(state.start_proxy, _TICK)])
    return img
