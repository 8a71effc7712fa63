"""The one eval-mode context manager: run a block with a model in ``eval()`` and restore its mode after.

Every scorer (evaluator, incremental forward, proxies, head statistics, importance) runs the model in
eval mode (no dropout) and must leave a model that was training still training, also when the block
raises. :func:`eval_mode` is that pattern, written once.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from torch import nn

__all__ = ["eval_mode"]


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """``model.eval()`` for the block, then ``model.train(previous mode)`` (even on an exception).

    :param model: any module; yielded back for ``with eval_mode(m) as m:``.
    """
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)
