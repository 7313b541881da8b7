"""Training curves of run directories: ``metrics.jsonl`` in, ``curves.png`` out.

:mod:`pyro_lnf.train` appends one JSON object per epoch to ``<run>/metrics.jsonl`` (keys such as
``epoch`` (from 0), ``train_loss``, ``train_kl``, ``beta``, ``lr``, ``anneal_done``,
``valid_loss``, ``valid_loss_beta1``, ``valid_kl``, ``valid_nll``; missing or ``null`` where
not measured; ``wall_s``, the training and validation seconds summed over resumes).
:func:`curves_figure` draws, against the epoch as the logs count it (from 0) or against the
wall-clock hours (``x="hours"``: for equal-budget comparisons), one panel per quantity the runs
have:

1. loss: training and validation loss at the epoch's β, and the validation -ELBO at β = 1
   (one curve each for the LSTM, whose loss is its exact NLL);
2. KL, training and validation (latent-variable models only);
3. the KL weight β, with the learning rate on a log axis beside it (the LSTM, which has no β:
   the learning rate alone);
4. the importance-sampled validation NLL, on the epochs it was computed (if any).

Losses are in nats per unit: ``-log p / Σ(T+1)`` over the split, i.e. per time step counting
the end-of-sequence (length) term once per sequence (the paper's accounting; the sentence VAE
divides by tokens including ``<eos>``, NVDM by words), or in bits (``bits=True``: ÷ ln 2,
the bits per character of PTB). The best epoch (the one ``best.pt``
holds: the lowest validation -ELBO at β = 1 once annealing is done) is marked.

Several runs overlay in one figure, one colour per run, named by folder in the legend (with
its parents where two folders share a name).

Needs matplotlib (``pip install 'pyro-lnf[plot]'``); it is used without ``pyplot``, so no
backend or global figure state is touched.

Example::

    >>> plot_run("runs/jsb-afaf")                              # doctest: +SKIP
    PosixPath('runs/jsb-afaf/curves.png')
    >>> plot_runs(["runs/jsb-afaf", "runs/jsb-lstm"], "jsb.png")  # doctest: +SKIP
    PosixPath('jsb.png')
    >>> plot_runs(["runs/ptb-afaf", "runs/ptb-lstm"], "ptb.png",
    ...           x="hours", bits=True, panels=["loss"])  # doctest: +SKIP
    PosixPath('ptb.png')
"""

from __future__ import annotations

import math
import os
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, get_args

from pyro_lnf import records as run_records
from pyro_lnf.errors import ConfigError
from pyro_lnf.io import atomic_write

__all__ = [
    "CURVES",
    "METRICS_FILE",
    "UNIT_NOTE",
    "PANEL_NAMES",
    "X_AXES",
    "Run",
    "best_epoch",
    "curves_figure",
    "plot_run",
    "plot_runs",
    "read_metrics",
    "read_run",
    "read_runs",
]

METRICS_FILE = "metrics.jsonl"
CURVES = "curves.png"
#: The caption under every curves figure: what "nats/unit" means.
UNIT_NOTE = (
    "nats/unit = nats per time step, counting the end-of-sequence (length) term: "
    "−log p / Σ(T+1) over the split (sentence VAE: per token incl. <eos>; NVDM: per word)"
)

LOSS, KL, BETA, LR, NLL = "loss", "KL", "β", "learning rate", "NLL"
#: Panel -> (title, y label, ((key, label, line style), ...)).
_PANELS: dict[str, tuple[str, str, tuple[tuple[str, str, str], ...]]] = {
    LOSS: ("loss", "nats/unit", (
        ("train_loss", "train (β of the epoch)", "-"),
        ("valid_loss", "valid (β of the epoch)", "--"),
        ("valid_loss_beta1", "valid −ELBO at β = 1", ":"),
    )),
    KL: ("KL(q(z|x) ‖ p(z))", "nats/unit", (
        ("train_kl", "train", "-"),
        ("valid_kl", "valid", "--"),
    )),
    BETA: ("KL weight β and learning rate", "KL weight β", (("beta", "β", "-"),)),
    LR: ("learning rate", "learning rate (log scale)", (("lr", "learning rate", "-"),)),
    NLL: ("validation NLL (importance-sampled)", "nats/unit", (("valid_nll", "IS NLL", "-"),)),
}
#: The x axes :func:`curves_figure` offers: the epoch as logged, or the wall-clock in hours.
XAxis = Literal["epoch", "hours"]
X_AXES: tuple[str, ...] = get_args(XAxis)
_X_LABELS = {"epoch": "epoch (as logged, from 0)", "hours": "wall-clock (hours)"}
#: The panels by the names :func:`curves_figure` takes (``"beta"``: β and the learning rate,
#: or the learning rate alone for runs without a latent).
PANEL_NAMES: dict[str, tuple[str, ...]] = {"loss": (LOSS,), "kl": (KL,), "beta": (BETA, LR),
                                           "nll": (NLL,)}
#: The panels whose values are nats per unit, converted by ``bits=True``.
_PER_UNIT = (LOSS, KL, NLL)

#: A loss panel spanning more than this ratio (e.g. β = 1e-5 early on, where the -ELBO at
#: β = 1 is 100x the loss trained) gets a log axis, so that every curve stays readable.
_LOG_RATIO = 20.0


def read_metrics(path: str | os.PathLike) -> list[dict[str, Any]]:
    """The per-epoch records of a ``metrics.jsonl`` file, in order.

    :raises ConfigError: the file is missing or empty, or a line is not a JSON object (the
        message names the file and the line).
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path} does not exist; give the run directory that lnf train wrote")
    records = run_records.read_jsonl(path, strict=True)
    if not records:
        raise ConfigError(f"{path} holds no epochs yet; plot after the first epoch ends")
    return records


@dataclass
class Run:
    """One run directory's records, as plotted."""

    name: str
    records: list[dict[str, Any]]

    def series(self, key: str, x: XAxis = "epoch") -> tuple[list[float], list[float]]:
        """(xs, values) where ``key`` holds a finite number: xs are the epochs as logged (from
        0), or with ``x="hours"`` the wall-clock at each epoch's end (records without
        ``wall_s`` left out)."""
        xs, ys = [], []
        for i, record in enumerate(self.records):
            value = _number(record.get(key))
            if value is None:
                continue
            if x == "hours":
                seconds = _number(record.get("wall_s"))
                if seconds is None:
                    continue
                xs.append(seconds / 3600)
            else:
                epoch = _number(record.get("epoch"))
                xs.append(epoch if epoch is not None else float(i))
            ys.append(value)
        return xs, ys

    @property
    def has_latent(self) -> bool:
        """Whether the model has a latent variable: some KL was measured and was not 0 (the
        LSTM baseline logs a KL of 0 at β = 1)."""
        return any(y != 0 for key in ("train_kl", "valid_kl") for y in self.series(key)[1])


def _number(value: Any) -> float | None:
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    return None


def read_run(run_dir: str | os.PathLike) -> Run:
    """The :class:`Run` of a directory that ``lnf train`` wrote, named by its folder.

    :raises ConfigError: no such directory, or a missing or corrupt ``metrics.jsonl``.
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise ConfigError(f"run directory {run_dir} does not exist")
    return Run(run_dir.resolve().name, read_metrics(run_dir / METRICS_FILE))


def read_runs(run_dirs: Sequence[str | os.PathLike]) -> list[Run]:
    """The :class:`Run` of each directory, named by its folder and, where two folders share a
    name, by as many parents as tell them apart (``repro-jsb/afaf``, ``repro-piano/afaf``).

    :raises ConfigError: as :func:`read_run`.
    """
    names = run_records.distinct_names(run_dirs)
    return [Run(name, read_run(run_dir).records)
            for run_dir, name in zip(run_dirs, names, strict=True)]


def best_epoch(run: Run) -> tuple[float, float] | None:
    """(epoch, validation -ELBO at β = 1) of the epoch ``best.pt`` holds
    (:func:`pyro_lnf.records.best_epoch`); ``None`` if no epoch qualifies (e.g. a run stopped
    while β was still ramping up)."""
    best = run_records.best_epoch(run.records)
    return None if best is None else (best["epoch"], best["valid_loss_beta1"])


def _best_x(best: dict[str, Any], x: XAxis) -> float | None:
    """Where the best epoch's record lies on the x axis (``None``: no ``wall_s``)."""
    if x == "epoch":
        return best["epoch"]
    return None if _number(best.get("wall_s")) is None else best["wall_s"] / 3600


def _panels(runs: Sequence[Run]) -> list[str]:
    """The panels the runs have data for: KL and β only for latent-variable models."""
    latent = any(run.has_latent for run in runs)
    recorded = lambda key: any(run.series(key)[0] for run in runs)  # noqa: E731
    panels = [LOSS]
    if latent:
        panels.append(KL)
        panels.append(BETA)
    elif recorded("lr"):
        panels.append(LR)
    if recorded("valid_nll"):
        panels.append(NLL)
    return panels


def curves_figure(runs: Sequence[Run], *, title: str | None = None, x: XAxis = "epoch",
                  bits: bool = False, panels: Sequence[str] | None = None,
                  ylim: tuple[float, float] | None = None) -> Any:
    """A :class:`matplotlib.figure.Figure` of the runs' curves (see the module docstring).

    One run: a colour per curve, the best epoch marked with a vertical line and a star.
    Several: a colour per run (legend: the folder names), a line style per curve, a star at
    each run's best epoch. ``x="hours"`` puts the wall-clock on the x axis, ``bits=True`` the
    per-unit values in bits; ``panels`` (names from :data:`PANEL_NAMES`) keeps only those,
    ``ylim`` fixes the loss panel's range (linear, so a long warm-up's huge -ELBO at β = 1
    does not force a log axis).

    :raises ConfigError: no runs, an unknown ``x`` or panel, a panel the runs have no data
        for, a run with no ``wall_s`` for ``x="hours"`` (logs written before it was
        recorded), or matplotlib not installed.
    """
    if not runs:
        raise ConfigError("no runs to plot")
    if x not in X_AXES:
        raise ConfigError(f"x must be one of {', '.join(X_AXES)}, not {x!r}")
    if x == "hours":
        for run in runs:
            if not any(_number(record.get("wall_s")) is not None for record in run.records):
                raise ConfigError(f"run {run.name} logged no wall_s; plot it against the epoch")
    scale = 1 / math.log(2) if bits else 1.0
    unit = "bits/unit" if bits else "nats/unit"
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
        from matplotlib.lines import Line2D
        from matplotlib.ticker import MaxNLocator
    except ImportError as err:
        raise ConfigError("plotting needs matplotlib: pip install 'pyro-lnf[plot]'") from err

    available = _panels(runs)
    if panels is not None:
        unknown = [name for name in panels if name not in PANEL_NAMES]
        if unknown:
            raise ConfigError(f"unknown panel {unknown[0]!r}; choose from "
                              f"{', '.join(PANEL_NAMES)}")
        missing = [name for name in panels if not set(PANEL_NAMES[name]) & set(available)]
        if missing:
            raise ConfigError(f"the runs have no data for the {missing[0]} panel")
        wanted = {panel for name in panels for panel in PANEL_NAMES[name]}
        available = [panel for panel in available if panel in wanted]
    panels = available
    columns = 2 if len(panels) == 4 else len(panels)
    rows = math.ceil(len(panels) / columns)
    single = len(runs) == 1
    # several runs: the shared legend below needs about 9 inches even over one panel
    width = max(5.5 if single else 9.0, 4.6 * columns)
    figure = Figure(figsize=(width, 3.0 * rows + 0.9), dpi=80, layout="constrained")
    FigureCanvasAgg(figure)
    grid = figure.subplots(rows, columns, sharex=True, squeeze=False).ravel()
    for ax in grid[len(panels):]:
        ax.set_visible(False)
    run_colours = [f"C{i % 10}" for i in range(len(runs))]
    axes = {}
    for index, (panel, ax) in enumerate(zip(panels, grid)):
        axes[panel] = ax
        panel_title, ylabel, curves = _PANELS[panel]
        if panel in _PER_UNIT:
            ylabel = unit
        if panel == LOSS and not any(run.has_latent for run in runs):
            panel_title, curves = "loss (−log-likelihood)", (
                ("train_loss", "train", "-"), ("valid_loss", "valid", "--"))
        ax.set_title(panel_title)
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        if x == "epoch":
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        if index + columns >= len(panels):  # nothing below it: it carries the x axis
            ax.set_xlabel(_X_LABELS[x])
            ax.xaxis.set_tick_params(labelbottom=True)
        ys_all = []
        for run, colour in zip(runs, run_colours):
            if panel in (KL, BETA) and not run.has_latent:
                continue  # an LSTM among flows: it has no KL and no β
            for curve_index, (key, label, style) in enumerate(curves):
                xs, ys = run.series(key, x)
                if not xs:
                    continue
                if panel in _PER_UNIT:
                    ys = [y * scale for y in ys]
                ys_all += ys
                ax.plot(xs, ys, linestyle=style if not single or panel == LOSS else "-",
                        color=colour if not single else f"C{curve_index}",
                        marker="o" if len(xs) < 20 else None, markersize=3,
                        label=label if single else f"{run.name}: {label}")
        if panel == LOSS and ylim is not None:
            ax.set_ylim(*ylim)
        elif (panel == LOSS and ys_all and min(ys_all) > 0
              and max(ys_all) / min(ys_all) > _LOG_RATIO):
            ax.set_yscale("log")
            ax.set_ylabel(f"{unit} (log scale)")
        if panel == LR:
            ax.set_yscale("log")
        if panel == NLL and not ys_all:
            ax.text(0.5, 0.5, "not recorded", ha="center", va="center", transform=ax.transAxes,
                    color="grey")
        if single and len(curves) > 1:
            ax.legend(fontsize="small")
    if BETA in axes:  # the learning rate on a twin axis
        lr_axis = axes[BETA].twinx()
        lr_axis.set_ylabel("learning rate (log scale, dashed)")
        for run, colour in zip(runs, run_colours):
            xs, lrs = run.series("lr", x)  # every run has one, the LSTM among flows too
            if xs and all(lr > 0 for lr in lrs):
                lr_axis.plot(xs, lrs, color="tab:red" if single else colour, linestyle="--",
                             label="learning rate")
                lr_axis.set_yscale("log")
        axes[BETA].set_ylim(-0.05, 1.05)
        if single:
            lines = axes[BETA].get_lines() + lr_axis.get_lines()
            axes[BETA].legend(lines, ["β (left axis)", "learning rate (right axis)"][:len(lines)],
                              fontsize="small", loc="upper left")
    for run, colour in zip(runs, run_colours):
        best = run_records.best_epoch(run.records)
        if best is None or LOSS not in axes:
            continue
        epoch, loss = best["epoch"], best["valid_loss_beta1"]
        where = _best_x(best, x)
        if where is None:
            continue
        label = f"best epoch {epoch:g}: {loss * scale:.3f} {unit}"
        axes[LOSS].plot([where], [loss * scale], marker="*", markersize=14, linestyle="none",
                        color="gold" if single else colour, markeredgecolor="black",
                        label=label if single else f"{run.name}: {label}", zorder=5)
        if single:
            for ax in axes.values():
                ax.axvline(where, color="grey", linestyle=":", linewidth=1, zorder=0)
    # The caption, wrapped to the figure's width (about 15 characters an inch at this size).
    note = "\n".join(textwrap.wrap(_unit_note(bits), int(figure.get_figwidth() * 15)))
    if single and LOSS in axes:
        axes[LOSS].legend(fontsize="small")
    else:
        handles = [Line2D([], [], color=colour, label=_run_label(run, scale, unit))
                   for run, colour in zip(runs, run_colours)]
        styles = [Line2D([], [], color="black", linestyle=style, label=label)
                  for key, label, style in _PANELS[LOSS][2]
                  if any(run.series(key)[0] for run in runs)]
        styles.append(Line2D([], [], color="black", marker="*", markersize=10, linestyle="none",
                             label="best epoch (lowest valid −ELBO at β = 1 after annealing)"))
        # The caption is the legend's title: a legend and a supxlabel, both at the bottom,
        # overlap under the constrained layout.
        figure.legend(handles=handles + styles, loc="outside lower center",
                      ncols=min(3, len(handles) + len(styles)), fontsize="small",
                      title=note, title_fontsize="small")
    if title is None:
        if single:
            run = runs[0]
            best = best_epoch(run)
            title = f"{run.name}: {len(run.records)} epochs" + (
                "" if best is not None else " (annealing not finished: no best epoch yet)")
        else:
            title = f"{len(runs)} runs: " + ", ".join(run.name for run in runs)
    figure.suptitle(title, fontsize="x-large", fontweight="bold")
    if single:
        figure.supxlabel(note, fontsize="small", color="dimgrey")
    return figure


def _unit_note(bits: bool) -> str:
    """The caption: :data:`UNIT_NOTE`, and the conversion when the figure is in bits."""
    return UNIT_NOTE + ("; shown in bits (÷ ln 2): bits/unit" if bits else "")


def _run_label(run: Run, scale: float = 1.0, unit: str = "nats/unit") -> str:
    """A run's legend entry: its folder name and its best epoch."""
    best = best_epoch(run)
    if best is None:
        return f"{run.name} (no best epoch yet)"
    return f"{run.name} (best: {best[1] * scale:.3f} {unit}, epoch {best[0]:g})"


def _save(figure: Any, target: Path) -> Path:
    with atomic_write(target, "wb") as f:
        # "tight" grows the image to what is drawn: a legend of several runs with long folder
        # names is wider than the figure, and the constrained layout cannot widen the figure.
        figure.savefig(f, format="png", bbox_inches="tight")
    return target


def plot_runs(run_dirs: Sequence[str | os.PathLike], out: str | os.PathLike,
              **options: Any) -> Path:
    """Overlay the curves of several run directories in one figure, written to ``out``
    (``options``: ``x``, ``bits``, ``panels``, ``ylim`` as in :func:`curves_figure`).

    :raises ConfigError: a missing run directory or a missing or corrupt ``metrics.jsonl``
        (naming it), a run with no wall-clock for ``x="hours"``, or matplotlib not installed.
    """
    return _save(curves_figure(read_runs(run_dirs), **options), Path(out))


def plot_run(run_dir: str | os.PathLike, *, out: str | os.PathLike | None = None,
             **options: Any) -> Path:
    """Draw the training curves of ``run_dir`` into ``<run_dir>/curves.png`` (or ``out``;
    ``options`` as in :func:`curves_figure`).

    :raises ConfigError: no run directory, a missing or corrupt ``metrics.jsonl``, no
        wall-clock for ``x="hours"``, or matplotlib not installed.
    """
    run = read_run(run_dir)
    target = Path(out) if out is not None else Path(run_dir) / CURVES
    return _save(curves_figure([run], **options), target)
