"""The one eval-mode context manager: run a block with a model in ``eval()`` and restore its mode after.

Every scorer (evaluator, incremental forward, proxies, head statistics, importance) runs the model in
eval mode (no dropout) and must leave a model that was training still training, also when the block
raises. :func:`eval_mode` is that pattern, written once.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from contextlib import contextmanager

from torch import nn

__all__ = ["eval_mode", "model_mode"]


@contextmanager
def model_mode(model: nn.Module, *, training: bool) -> Iterator[nn.Module]:
    """``model.train(training)`` for the block, then the previous mode back (even on an exception).

    :param model: any module; yielded back for ``with model_mode(m, training=True) as m:``.
    :param training: the mode inside the block (True: dropout samples, as MC dropout needs).
    """
    was_training = model.training
    model.train(training)
    try:
        yield model
    finally:
        model.train(was_training)


def eval_mode(model: nn.Module) -> contextlib.AbstractContextManager[nn.Module]:
    """``model.eval()`` for the block, then the previous mode back: ``model_mode(model, training=False)``."""
    return model_mode(model, training=False)
