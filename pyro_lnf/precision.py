r"""Reduced precision for the bulk of the arithmetic: the LSTMs and the emission's projection.

Inside :func:`bulk_precision`, the modules that do most of a model's multiply-adds (the
bidirectional LSTMs of encoder and emission, the emission's projection, the time LSTM of an
AF-in-time prior run in parallel) compute in ``bfloat16`` through :func:`torch.autocast`, and
hand ``float32`` back to everything else. The flows, their log-determinants, every
log-density and the importance weights stay in ``float32``: the reduced part only ever
produces features, never a density. On CPUs with AVX-512 BF16 (AMD Zen 4, Intel Cooper Lake
and later) oneDNN runs these products about twice as fast as in ``float32``.

Meant for evaluation (``lnf evaluate --precision bf16``): ``bfloat16`` keeps 8 bits of
mantissa, and its rounding shifts each sequence's :math:`\log \hat p(x)` slightly. How much,
for a given checkpoint, ``python benchmarks/train_speed.py --nll-only --checkpoint PATH``
measures on the same importance samples in both precisions; the README gives the figures for
its JSB models. Training gains nothing from it: with oneDNN's bfloat16 LSTM backward an
AF/AF step on JSB took 0.53 s against 0.39–0.47 s in float32 on that machine.

Example::

    with bulk_precision(torch.bfloat16):
        results = evaluate(module, batches, num_samples=30)
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from contextvars import ContextVar

import torch

from pyro_lnf.errors import ConfigError

__all__ = ["PRECISIONS", "bulk_autocast", "bulk_precision"]

#: ``--precision`` names -> the bulk dtype (``None``: no autocast, everything in float32).
PRECISIONS: dict[str, torch.dtype | None] = {"fp32": None, "bf16": torch.bfloat16}

_bulk_dtype: ContextVar[torch.dtype | None] = ContextVar("bulk_dtype", default=None)


@contextlib.contextmanager
def bulk_precision(dtype: torch.dtype | None) -> Iterator[None]:
    """Run the bulk modules in ``dtype`` (``None``: full precision) inside the ``with`` body."""
    if dtype not in PRECISIONS.values():
        raise ConfigError(f"bulk precision must be one of {list(PRECISIONS.values())}, not {dtype}")
    token = _bulk_dtype.set(dtype)
    try:
        yield
    finally:
        _bulk_dtype.reset(token)


def bulk_autocast(device: torch.device) -> contextlib.AbstractContextManager:
    """What a bulk module wraps its products in: autocast to the current bulk dtype, or
    nothing. Callers cast their result back to the input's dtype."""
    dtype = _bulk_dtype.get()
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)
