r"""Reduced precision for the bulk of the arithmetic: the LSTMs and the emission's projection.

Inside :func:`bulk_precision`, the modules that do most of a model's multiply-adds (the
bidirectional LSTMs of encoder and emission, the emission's projection, the time LSTM of an
AF-in-time prior run in parallel) compute in ``bfloat16`` through :func:`torch.autocast`, and
hand ``float32`` back to everything else. The flows, their log-determinants, every
log-density and the importance weights stay in ``float32``: the reduced part only ever
produces features, never a density. On CPUs with AVX-512 BF16 (AMD Zen 4, Intel Cooper Lake
and later) oneDNN runs these products about twice as fast as in ``float32``.

Not every CPU can: oneDNN has no bfloat16 LSTM for CPUs without AVX-512 (an AVX2-only EPYC,
say), where the LSTM call fails. :func:`bf16_lstm_supported` tries one tiny LSTM once per
process, and :func:`bulk_precision` refuses ``bfloat16`` with a :class:`ConfigError` that
says so, instead of failing half-way through an evaluation.

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
import functools
from collections.abc import Iterator
from contextvars import ContextVar

import torch

from pyro_lnf.errors import ConfigError

__all__ = ["PRECISIONS", "bf16_lstm_supported", "bulk_autocast", "bulk_precision"]

#: ``--precision`` names -> the bulk dtype (``None``: no autocast, everything in float32).
PRECISIONS: dict[str, torch.dtype | None] = {"fp32": None, "bf16": torch.bfloat16}

_bulk_dtype: ContextVar[torch.dtype | None] = ContextVar("bulk_dtype", default=None)


@functools.cache
def bf16_lstm_supported() -> bool:
    """Whether this CPU runs an LSTM under bfloat16 autocast (probed once per process).

    Probed rather than read off the CPU flags: what matters is whether this torch's oneDNN
    has a kernel for this CPU, which ``ONEDNN_MAX_CPU_ISA`` or a future release can change.
    """
    lstm = torch.nn.LSTM(4, 4, batch_first=True)
    try:
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
            lstm(torch.zeros(1, 2, 4))
    except RuntimeError:  # oneDNN: "could not create a primitive descriptor ..."
        return False
    return True


@contextlib.contextmanager
def bulk_precision(dtype: torch.dtype | None) -> Iterator[None]:
    """Run the bulk modules in ``dtype`` (``None``: full precision) inside the ``with`` body.

    :raises ConfigError: an unknown dtype, or ``bfloat16`` on a CPU that cannot run a
        bfloat16 LSTM (:func:`bf16_lstm_supported`).
    """
    if dtype not in PRECISIONS.values():
        raise ConfigError(f"bulk precision must be one of {list(PRECISIONS.values())}, not {dtype}")
    if dtype == torch.bfloat16 and not bf16_lstm_supported():
        raise ConfigError(
            "bf16 needs a CPU with a bfloat16 LSTM kernel (AVX-512: Zen 4, Cooper Lake or "
            "later), which this one lacks; evaluate in fp32"
        )
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
