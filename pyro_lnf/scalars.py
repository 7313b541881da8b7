"""TensorBoard scalars of a training run (``lnf train --tensorboard``), in ``RUN/tensorboard/``.

Needs the ``tensorboard`` extra (``pip install "pyro-lnf[tensorboard]"``); without it,
:func:`require_tensorboard` raises a one-line :class:`~pyro_lnf.errors.ConfigError` naming it.

Per optimizer step: ``step/loss`` (the batch's loss per unit at its β), ``step/kl``, ``step/beta``
and ``step/lr``, against the step. Per epoch: every number of the epoch's ``metrics.jsonl``
line as ``epoch/<key>``, against the epoch. A resumed run purges what the interrupted one
logged after its checkpoint, so the curves show one run.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from pyro_lnf.errors import ConfigError

TENSORBOARD_DIR = "tensorboard"
MISSING = 'tensorboard is not installed: pip install "pyro-lnf[tensorboard]" for --tensorboard'


def require_tensorboard() -> type:
    """torch's ``SummaryWriter``, or :class:`ConfigError` naming the extra."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # torch raises it when the tensorboard package is missing
        raise ConfigError(MISSING) from None
    return SummaryWriter


class Scalars:
    """A ``SummaryWriter`` on ``out/tensorboard`` for one (possibly resumed) run."""

    def __init__(self, out: str | Path, *, resume_step: int | None = None) -> None:
        writer = require_tensorboard()
        self.writer = writer(str(Path(out) / TENSORBOARD_DIR),
                             purge_step=resume_step if resume_step else None)

    def step(self, step: int, values: dict[str, float | None]) -> None:
        for key, value in values.items():
            if value is not None and math.isfinite(value):
                self.writer.add_scalar(f"step/{key}", value, step)

    def epoch(self, record: dict[str, Any]) -> None:
        for key, value in record.items():
            if isinstance(value, (int, float)) and key != "epoch" and math.isfinite(value):
                self.writer.add_scalar(f"epoch/{key}", float(value), record["epoch"])
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()
