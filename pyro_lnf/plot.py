"""Training curves of a run directory: ``metrics.jsonl`` in, ``curves.png`` out.

:mod:`pyro_lnf.train` appends one JSON object per epoch to ``<run>/metrics.jsonl`` (keys such as
``epoch``, ``train_loss``, ``train_kl``, ``beta``, ``lr``, ``valid_loss``,
``valid_loss_beta1``, ``valid_kl``, ``valid_nll``; missing or ``null`` where not measured).
:func:`plot_run` draws four panels against the epoch:

1. loss in nats per unit: training and validation loss at the epoch's β, and the validation
   -ELBO at β = 1;
2. KL in nats per unit, training and validation;
3. the KL weight β, with the learning rate on a log axis beside it;
4. the importance-sampled validation NLL, on the epochs it was computed.

Needs matplotlib (``pip install 'pyro-lnf[plot]'``); it is used without ``pyplot``, so no
backend or global figure state is touched.

Example::

    >>> plot_run("runs/jsb-afaf")           # doctest: +SKIP
    PosixPath('runs/jsb-afaf/curves.png')
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

from pyro_lnf.errors import ConfigError
from pyro_lnf.io import atomic_write

__all__ = ["CURVES", "METRICS_FILE", "plot_run", "read_metrics"]

METRICS_FILE = "metrics.jsonl"
CURVES = "curves.png"

#: Panel title -> (key, label) of each curve drawn in it.
_PANELS: dict[str, tuple[tuple[str, str], ...]] = {
    "loss (nats/unit)": (
        ("train_loss", "train (β of the epoch)"),
        ("valid_loss", "valid (β of the epoch)"),
        ("valid_loss_beta1", "valid -ELBO (β = 1)"),
    ),
    "KL (nats/unit)": (("train_kl", "train"), ("valid_kl", "valid")),
    "KL weight β": (("beta", "β"),),
    "validation NLL (nats/unit, IS)": (("valid_nll", "IS NLL"),),
}


def read_metrics(path: str | os.PathLike) -> list[dict[str, Any]]:
    """The per-epoch records of a ``metrics.jsonl`` file, in order.

    :raises ConfigError: the file is missing or empty, or a line is not a JSON object (the
        message names the file and the line).
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path} does not exist; give the run directory that lnf train wrote")
    records = []
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as err:
                raise ConfigError(f"{path}, line {number}: not valid JSON ({err.msg})") from err
            if not isinstance(record, dict):
                raise ConfigError(f"{path}, line {number}: expected a JSON object per epoch")
            records.append(record)
    if not records:
        raise ConfigError(f"{path} holds no epochs yet; plot after the first epoch ends")
    return records


def _series(records: list[dict[str, Any]], key: str) -> tuple[list[float], list[float]]:
    """(epochs, values) where ``key`` holds a finite number; epochs count from 1."""
    xs, ys = [], []
    for i, record in enumerate(records):
        value = record.get(key)
        is_number = isinstance(value, (int, float)) and not isinstance(value, bool)
        if is_number and math.isfinite(value):
            epoch = record.get("epoch", i)
            xs.append((epoch if isinstance(epoch, (int, float)) else i) + 1)
            ys.append(float(value))
    return xs, ys


def plot_run(run_dir: str | os.PathLike, *, out: str | os.PathLike | None = None) -> Path:
    """Draw the training curves of ``run_dir`` into ``<run_dir>/curves.png`` (or ``out``).

    :raises ConfigError: no run directory, a missing or corrupt ``metrics.jsonl``, or
        matplotlib not installed.
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise ConfigError(f"run directory {run_dir} does not exist")
    records = read_metrics(run_dir / METRICS_FILE)
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as err:
        raise ConfigError("plotting needs matplotlib: pip install 'pyro-lnf[plot]'") from err

    figure = Figure(figsize=(10, 7), dpi=100, layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots(2, 2, sharex=True).ravel()
    for ax, (title, curves) in zip(axes, _PANELS.items()):
        drawn = False
        for key, label in curves:
            xs, ys = _series(records, key)
            if xs:
                ax.plot(xs, ys, marker="o" if len(xs) < 20 else None, markersize=3, label=label)
                drawn = True
        if not drawn:
            ax.text(0.5, 0.5, "not recorded", ha="center", va="center", transform=ax.transAxes,
                    color="grey")
        elif len(curves) > 1:
            ax.legend(fontsize="small")
        ax.set_title(title)
        ax.grid(alpha=0.3)
    beta_axis = axes[2]
    xs, lrs = _series(records, "lr")
    if xs and all(lr > 0 for lr in lrs):
        lr_axis = beta_axis.twinx()
        lr_axis.plot(xs, lrs, color="tab:red", linestyle="--", label="learning rate")
        lr_axis.set_yscale("log")
        lr_axis.set_ylabel("learning rate", color="tab:red")
    for ax in axes[2:]:
        ax.set_xlabel("epoch")
    figure.suptitle(f"{run_dir.resolve().name}: {len(records)} epochs")
    target = Path(out) if out is not None else run_dir / CURVES
    with atomic_write(target, "wb") as f:
        figure.savefig(f, format="png")
    return target
