"""Switching a module's mode for the length of a block."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from torch import nn

__all__ = ["evaluating"]


@contextlib.contextmanager
def evaluating(module: nn.Module) -> Iterator[None]:
    """Eval mode (no dropout) for the duration, then the module's previous mode, even if the
    body raises. Gradients are the caller's choice: combine it with :func:`torch.no_grad`."""
    was_training = module.training
    module.eval()
    try:
        yield
    finally:
        module.train(was_training)
