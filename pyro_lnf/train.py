r"""Training loop for any model that honours :class:`pyro_lnf.models.base.LatentVariableModel`.

Each step minimises the β-weighted −ELBO per unit of the batches it accumulates
(:mod:`pyro_lnf.objective`), with a torch optimizer whose state is checkpointed.

**KL annealing** (spec §7), :func:`kl_schedule`. **Learning rate** ÷ ``lr_decay`` after
``patience`` epochs without a better validation −ELBO, only once annealing is done
(:class:`~pyro_lnf.plateau.Plateau`); Adam's moments are *kept* (the authors re-create the
optimizer and lose them; keeping them avoids a restart of the bias correction and lets resume
be exact). **Model selection** uses the
validation −ELBO at β = 1 (below).

**Model selection.** ``best.pt`` is the epoch with the lowest validation −ELBO at β = 1 *once
annealing is done*: during annealing that figure rises as β grows (the model is trained to
spend KL it is not yet charged for), so a short run's "best" would be its untrained first
epoch. A run that ends before annealing does has no ``best.pt``.

**Checkpoints and resume.** ``<out>/last.pt`` is written at the end of every epoch (and every
``checkpoint_every`` optimizer steps or ``checkpoint_minutes`` minutes), then copied to
``<out>/best.pt`` on every new best, so a resumable ``last.pt`` exists whatever write fails. Each epoch's batch
order is a function of ``(seed, epoch)`` (:func:`epoch_seed`), so ``resume=True`` restarts from
the exact batch, with the optimizer, learning rate, patience, best metrics and every random
generator restored: an interrupted and resumed run ends with the same parameters as an
uninterrupted one. One JSON object per epoch is appended to ``<out>/metrics.jsonl``.

**Robustness.** The run folder is locked for the life of the run (:class:`~pyro_lnf.io.
FolderLock`); a second trainer is refused. SIGINT and SIGTERM save the exact position to
``last.pt`` at the next optimizer step (or between validation batches) and raise
:class:`~pyro_lnf.errors.TrainingInterrupted`. A non-finite loss or gradient norm, or a
distribution parameter Pyro finds invalid, raises :class:`~pyro_lnf.errors.DivergenceError`
before the optimizer applies anything, leaving the last good checkpoint in place.

Example::

    cfg = TrainConfig(epochs=40, batch_size=15, kl_initial_zero=4, kl_rampup=10, out="runs/af")
    summary = train(model, sequence_batches(train_seqs, cfg, train=True),
                    sequence_batches(valid_seqs, cfg, train=False), cfg)
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import signal
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyro
import torch
from rich.progress import Progress

from pyro_lnf import distributed
from pyro_lnf.checkpoint import (
    copy_checkpoint, get_rng_state, load_checkpoint, save_checkpoint, set_rng_state,
)
from pyro_lnf.errors import CheckpointError, ConfigError, DivergenceError, TrainingInterrupted
from pyro_lnf.evaluate import evaluate
from pyro_lnf.interrupt import StopRequest, StopRequested, deferred_signals
from pyro_lnf.io import FolderLock, atomic_write, remove_stale_temporaries
from pyro_lnf.nn.checks import MAX_SEED, check_between
from pyro_lnf.objective import Diverged, Objective, checked_loss, clip_gradients, cycle_units
from pyro_lnf.plateau import Plateau
from pyro_lnf.progress import PlainProgress, make_progress, tracked
from pyro_lnf.records import describe, start_record
from pyro_lnf.scalars import Scalars

__all__ = [
    "BEST",
    "LAST",
    "METRICS",
    "BatchSource",
    "TrainConfig",
    "TrainSummary",
    "epoch_seed",
    "evenly_spaced",
    "kl_schedule",
    "make_optimizer",
    "sequence_batches",
    "train",
]

LAST = "last.pt"
BEST = "best.pt"
METRICS = "metrics.jsonl"
BETA_MIN = 1e-5  # the authors' "zero" KL weight: small but nonzero

#: Per epoch, a callable ``epoch -> batches`` (reshuffle per epoch) or a re-iterable of batches.
BatchSource = Callable[[int], Iterable[Any]] | Iterable[Any]

# Options that change the sequence of updates: a resumed run must use the checkpoint's values.
# The learning rate is among them: the optimiser state (with any plateau decay) is restored, so a
# new --lr would otherwise be silently ignored.
TRAJECTORY_OPTIONS = (
    "seed", "batch_size", "lr", "particles", "grad_accum", "grad_clip", "kl_initial_zero",
    "kl_rampup", "optimizer", "max_frames", "limit_batches", "patience", "lr_decay",
)


@dataclass(frozen=True)
class TrainConfig:
    """Training options (defaults: the authors' PTB settings where they apply, spec §7).

    Frozen: a changed option is a new config (``dataclasses.replace``), so the config a run
    records and checkpoints is the one it trained with.

    :ivar epochs: number of epochs to reach (a resumed run continues up to it).
    :ivar batch_size: training sequences per batch; ``eval_batch_size`` for validation
        (``None``: the same).
    :ivar lr: learning rate.
    :ivar optimizer: ``"adam"`` (default betas, no weight decay) or ``"sgd"`` (no momentum;
        the LSTM baseline's, with lr 20).
    :ivar particles: ELBO samples per sequence, vectorised.
    :ivar grad_clip: global gradient-norm bound (``None``: no clipping).
    :ivar grad_accum: batches per optimizer step; a partial cycle at an epoch's end is dropped.
    :ivar kl_initial_zero: epochs at β = 1e-5 (:math:`i_0`).
    :ivar kl_rampup: epochs of the linear ramp to β = 1 (:math:`R`).
    :ivar patience: epochs without improvement before the LR drops by ``lr_decay``.
    :ivar min_lr: end the run, instead of dropping the LR, when a drop would take it below
        this (``None``: never; the authors train all ``epochs``, and their plateau rule keeps
        dividing the rate towards zero). A resumed run with a lower ``min_lr`` (or none) takes
        the drop it skipped and goes on.
    :ivar max_frames: cap on padded frames per batch (used by :func:`sequence_batches`).
    :ivar jit: compile the ELBO with ``JitTrace_ELBO`` (one compile per distinct batch shape).
    :ivar nll_every: IS NLL on validation every this many epochs (0: never), with
        ``nll_samples`` samples per sequence.
    :ivar checkpoint_every: also write ``last.pt`` every this many optimizer steps (0: only
        at the end of each epoch).
    :ivar checkpoint_minutes: also write ``last.pt`` at the first optimizer step this many
        minutes after the previous write (0: never).
    :ivar out: run directory (``None``: write nothing).
    :ivar resume: continue the run in ``out/last.pt``; options that change the sequence of
        updates (seed, batch size, learning rate, particles, accumulation, clipping, KL
        schedule, optimizer, max_frames) must match it, ``epochs`` may grow.
    :ivar quiet: no progress bars.
    :ivar limit_batches: use only the first this many batches of every (shuffled) training
        epoch, and this many evenly spaced validation batches (:func:`evenly_spaced`: the
        validation batches are sorted by length, so the first ones would be the shortest
        sequences), for quick checks and short epochs (``None``: all); a trajectory option.
    :ivar tensorboard: also log scalars to ``out/tensorboard`` (:mod:`pyro_lnf.scalars`; needs
        the ``tensorboard`` extra).
    :ivar log_every, log_minutes: off a terminal, a plain progress line every this many
        optimizer steps (0: not by steps) or minutes (0: not by time).
    :ivar max_minutes: a wall-clock budget for the run (``None``: none), as Lightning's
        ``max_time``: training and validation time summed over every resume, checked before
        each epoch, so the run ends after the epoch during which it is spent (``last.pt``
        holds that epoch's end, and a resume with a larger budget goes on). Equal budgets make runs of
        different speeds comparable (``--limit-batches`` keeps epochs short enough).
    """

    epochs: int = 100
    batch_size: int = 15
    eval_batch_size: int | None = None
    lr: float = 1e-3
    particles: int = 1
    seed: int = 0
    device: str = "cpu"
    out: str | None = None
    grad_clip: float | None = 0.25
    grad_accum: int = 1
    kl_initial_zero: int = 0
    kl_rampup: int = 0
    patience: int = 1
    lr_decay: float = 4.0
    min_lr: float | None = None
    max_frames: int | None = None
    jit: bool = False
    nll_every: int = 5
    nll_samples: int = 30
    optimizer: str = "adam"
    checkpoint_every: int = 0
    checkpoint_minutes: float = 0.0
    resume: bool = False
    quiet: bool = False
    limit_batches: int | None = None
    tensorboard: bool = False
    log_every: int = 0
    log_minutes: float = 1.0
    max_minutes: float | None = None

    def validate(self) -> None:
        """Raise :class:`ConfigError` naming the first invalid option and its bounds.

        The upper bounds are far beyond any sensible run; they exist so that a typo (an extra
        few zeros) fails here in one line instead of in an allocation minutes later.
        """
        for name, (low, high, optional) in _BOUNDS.items():
            value = getattr(self, name)
            if not (value is None and optional):
                check_between(name, value, low, high)
        for name in ("lr", "min_lr", "grad_clip", "max_minutes"):  # must not be 0 either
            if getattr(self, name) == 0:
                raise ConfigError(f"{name} must be positive, got 0")
        if self.optimizer not in ("adam", "sgd"):
            raise ConfigError(f"optimizer must be 'adam' or 'sgd', got {self.optimizer!r}")
        from pyro_lnf.nn.devices import resolve_device

        resolve_device(self.device)
        if self.resume and self.out is None:
            raise ConfigError("resume needs the run directory (out) that holds last.pt")
        if self.tensorboard:
            from pyro_lnf.scalars import require_tensorboard

            require_tensorboard()

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


#: ``name: (lowest, highest, may be None)`` for the options of :class:`TrainConfig`; an integer
#: bound asks for an integer, and ``nan`` and ``inf`` fail every bound (:func:`check_between`).
_BOUNDS: dict[str, tuple[float, float, bool]] = {
    "epochs": (0, 100_000, False),
    "batch_size": (1, 100_000, False),
    "eval_batch_size": (1, 100_000, True),
    "particles": (1, 10_000, False),
    "grad_accum": (1, 10_000, False),
    "kl_initial_zero": (0, 100_000, False),
    "kl_rampup": (0, 100_000, False),
    "patience": (1, 100_000, False),
    "max_frames": (1, 100_000_000, True),
    "nll_every": (0, 100_000, False),
    "nll_samples": (1, 100_000, False),
    "checkpoint_every": (0, 1_000_000_000, False),
    "seed": (0, MAX_SEED, False),
    "lr": (0.0, 1e3, False),
    "min_lr": (0.0, 1e3, True),
    "lr_decay": (1.0, 1e6, False),
    "grad_clip": (0.0, 1e9, True),
    "checkpoint_minutes": (0.0, 7 * 24 * 60.0, False),
    "limit_batches": (1, 1_000_000_000, True),
    "log_every": (0, 1_000_000_000, False),
    "log_minutes": (0.0, 7 * 24 * 60.0, False),
    "max_minutes": (0.0, 365 * 24 * 60.0, True),
}


@dataclass
class TrainSummary:
    """What :func:`train` returns: where the run ended and its best validation −ELBO."""

    epochs: int
    steps: int
    lr: float
    stopped_early: bool
    best_valid_loss: float | None
    best_epoch: int | None
    last_metrics: dict[str, Any]
    wall_s: float
    out: str | None
    out_of_time: bool = False  # ended by max_minutes


def kl_schedule(
    epoch: int, batch_fraction: float, initial_zero: int, rampup: int
) -> tuple[float, bool]:
    r"""KL weight within an epoch, and whether annealing is done (spec §7, ``get_kl_weight``).

    .. math::

        \beta(i) = \begin{cases} 10^{-5} & i < i_0 \\
                   10^{-5} + (1 - 10^{-5}) \frac{i - i_0}{R} & i_0 \le i \le i_0 + R \\
                   1 & i > i_0 + R \end{cases}

    and within epoch :math:`i`, at fraction :math:`f = j / N` of its batches,
    :math:`\beta = \beta(i-1) + (\beta(i) - \beta(i-1)) f`. ``done`` (learning-rate decay on)
    only for :math:`i > i_0 + R`. With :math:`i_0 = R = 0`, β = 1 and done from the start;
    with :math:`R = 0 < i_0`, :math:`\beta(i) = 1` for :math:`i \ge i_0` (ramped within epoch
    :math:`i_0`). Validation uses :math:`\beta(i)`, i.e. ``batch_fraction = 1``.

    >>> kl_schedule(5, 0.0, 4, 10)[0], kl_schedule(5, 1.0, 4, 10)[0]  # doctest: +SKIP
    (1e-05, 0.100009)
    """
    if initial_zero == 0 and rampup == 0:
        return 1.0, True

    def at(i: int) -> float:
        if i < initial_zero:
            return BETA_MIN
        if rampup == 0 or i >= initial_zero + rampup:
            return 1.0
        return BETA_MIN + (1.0 - BETA_MIN) * (i - initial_zero) / rampup

    start, end = at(epoch - 1), at(epoch)
    return start + (end - start) * batch_fraction, epoch > initial_zero + rampup


def epoch_seed(seed: int, epoch: int) -> int:
    """The shuffling seed of one epoch: a hash of ``(seed, epoch)``, so any epoch's batch order
    can be rebuilt on resume without replaying the earlier ones."""
    return int(np.random.SeedSequence([seed, epoch]).generate_state(1)[0])


def sequence_batches(
    sequences: Sequence[Any], config: TrainConfig, *, train: bool, **batch_options: Any
) -> Callable[[int], Iterable[Any]]:
    """A :data:`BatchSource` over raw sequences via ``pyro_lnf.datasets.batching``.

    Training batches are reshuffled per epoch with :func:`epoch_seed`; validation batches
    (``train=False``) keep their order and use ``eval_batch_size``. ``batch_options`` go to
    :func:`~pyro_lnf.datasets.batching.iterate_batches` (``pad_value``, ``bow_size``).
    """
    from pyro_lnf.datasets.batching import iterate_batches

    size = config.batch_size if train else (config.eval_batch_size or config.batch_size)

    def batches(epoch: int) -> Iterable[Any]:
        return iterate_batches(
            sequences, size, shuffle=train, seed=epoch_seed(config.seed, epoch),
            device=config.device, max_frames=config.max_frames, **batch_options,
        )

    return batches


def _batches(source: BatchSource, epoch: int) -> list[Any]:
    # Materialised: the per-batch KL interpolation needs the epoch's number of batches.
    return list(source(epoch) if callable(source) else source)


def evenly_spaced(items: list[Any], count: int | None) -> list[Any]:
    """``count`` items spread evenly over ``items``, in order (the middle of each of ``count``
    equal stretches); all of them if ``count`` is ``None`` or not smaller.

    >>> evenly_spaced(list(range(10)), 3)
    [1, 5, 8]
    """
    n = len(items)
    if count is None or count >= n:
        return list(items)
    return [items[(2 * i + 1) * n // (2 * count)] for i in range(count)]


# ------------------------------------------------------------------------------------------
# the loop


@dataclass
class _State:
    """Training position and bookkeeping, saved in every checkpoint's ``progress`` as plain
    values, next to the plateau rule's state (``progress["plateau"]``)."""

    epoch: int = 0
    batch: int = 0
    step: int = 0
    metrics_lines: int = 0
    wall_s: float = 0.0
    sums: dict[str, float] = field(default_factory=lambda: dict.fromkeys(_SUMS, 0.0))

    @classmethod
    def from_progress(cls, progress: dict[str, Any]) -> _State:
        """The position in a checkpoint's ``progress``, whose other entries (the plateau
        state, at the top level in checkpoints written before it had its own) are not ours."""
        mine = {f.name for f in dataclasses.fields(cls)}
        return cls(**{key: value for key, value in progress.items() if key in mine})


_SUMS = ("loss", "kl", "units", "frames", "train_s")


def make_optimizer(module: torch.nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    """The optimiser `lnf train` uses: SGD or Adam over the trainable parameters, at
    ``config.lr``."""
    params = [p for p in module.parameters() if p.requires_grad]
    if not params:
        raise ConfigError(f"model {type(module).__name__} has no trainable parameters")
    if config.optimizer == "sgd":
        return torch.optim.SGD(params, lr=config.lr)
    # The fused kernel updates all tensors in one pass: on CPU about 3x faster than the default
    # per-op ("foreach") update, which reads and writes the 24 M parameters' state several times.
    fused = all(p.device.type in ("cpu", "cuda") and p.is_floating_point() for p in params)
    return torch.optim.Adam(params, lr=config.lr, fused=fused)


def _check_param_store(module: torch.nn.Module) -> None:
    """Only the module's own parameters are optimised: refuse stray ``pyro.param``s, which
    would silently never train."""
    own = {f"{module.name}$$${name}" for name, _ in module.named_parameters()}
    stray = sorted(set(pyro.get_param_store().keys()) - own)
    if stray:
        raise ConfigError(
            f"parameters {', '.join(stray[:3])} live in Pyro's param store but not in model "
            f"{type(module).__name__}; make them nn.Parameters of the module"
        )


def _check_resumable(checkpoint: dict[str, Any], module: torch.nn.Module, config: TrainConfig,
                     path: Path) -> None:
    """Refuse to continue a run with another model, dataset, model option or trajectory
    option, naming what differs (the dataset, the prior and the sizes are in the config)."""
    saved = checkpoint["model"]
    here = f"{type(module).__module__}.{type(module).__qualname__}"
    if saved["class"] != here:
        raise CheckpointError(
            f"checkpoint {path} holds a {saved['class'].rsplit('.', 1)[-1]}, not a "
            f"{type(module).__qualname__}; resume with the run's --model or choose another "
            "output directory"
        )
    ours = dict(getattr(module, "config", {}))
    differ = [f"{k}={saved['config'].get(k)!r} (given {ours.get(k)!r})"
              for k in sorted(set(ours) | set(saved["config"]))
              if saved["config"].get(k) != ours.get(k)]
    if differ:
        raise CheckpointError(
            f"checkpoint {path} was trained with {', '.join(differ)}; resume with the run's "
            "dataset and model options or choose another output directory"
        )
    old = checkpoint["train_config"]
    changed = [f"{k}={old.get(k)!r}" for k in TRAJECTORY_OPTIONS
               if old.get(k) != getattr(config, k)]
    if changed:
        raise ConfigError(
            f"checkpoint {path} was trained with {', '.join(changed)}; resume with the same "
            "values (a different one would not continue the same run)"
        )


def _truncate_lines(path: Path, keep: int) -> None:
    """Drop metrics lines written after the checkpoint we resume from."""
    lines = path.read_text().splitlines(keepends=True) if path.exists() else []
    with atomic_write(path, "w") as f:
        f.writelines(lines[:keep])


def _validate(module: torch.nn.Module, valid: list[Any], config: TrainConfig, epoch: int,
              beta: float, device: torch.device,
              group: distributed.Group | None = None,
              track: Callable[[Iterable[Any], str], Iterable[Any]] = lambda b, what: b,
              ) -> dict[str, Any]:
    """Validation −ELBO per unit at β(i) and at β = 1 (one pass: loss_β = rec + β·KL), and
    the IS NLL on the epochs ``nll_every`` selects; ``track(batches, what)`` shows each pass."""
    ev = evaluate(module, track(valid, "  validation"), num_samples=config.particles,
                  chunk_size=config.particles, device=device, group=group)
    record = {
        "valid_loss": ev["reconstruction_nats_per_unit"] + beta * ev["kl_nats_per_unit"],
        "valid_loss_beta1": ev["elbo_loss_nats_per_unit"],
        "valid_kl": ev["kl_nats_per_unit"],
    }
    if config.nll_every and (epoch + 1) % config.nll_every == 0:
        nll = evaluate(module, track(valid, f"  IS NLL (K={config.nll_samples})"),
                       num_samples=config.nll_samples, device=device, group=group)
        record["valid_nll"] = nll["nll_nats_per_unit"]
        record["valid_nll_samples"] = config.nll_samples
    return record


class _Run:
    """One training run's moving parts, so :func:`train` reads as its phases: start or
    resume, then per epoch the batches, validation and the epoch's end."""

    def __init__(self, module: torch.nn.Module, config: TrainConfig, stop: StopRequest) -> None:
        self.module, self.config, self.stop = module, config, stop
        self.out = Path(config.out) if config.out is not None else None
        self.device = torch.device(config.device)
        self.optimizer = make_optimizer(module, config)
        self.plateau = Plateau(self.optimizer, patience=config.patience, decay=config.lr_decay,
                               min_lr=config.min_lr)
        self.objective = Objective(module, particles=config.particles, jit=config.jit)
        self.state = _State()
        self.pending_rng: dict[str, Any] | None = None
        self.started = time.perf_counter()
        self.wall0 = 0.0
        self.last_saved = time.perf_counter()
        self.checked_store = False
        # Data-parallel under torchrun (pyro_lnf.distributed); rank 0 alone writes and prints.
        self.group = distributed.current()
        self.main = self.group is None or self.group.main
        self.writes = self.out is not None and self.main
        self.stop_agreed = False
        self.parallel = None
        if self.group is not None:
            objective = self.objective
            self.parallel = distributed.DataParallel(
                module, lambda batch, beta: checked_loss(objective, batch, beta), self.group,
                self.device, Diverged,
            )
        self.scalars: Any = None  # pyro_lnf.scalars.Scalars with --tensorboard

    # -- start ---------------------------------------------------------------------------

    def start(self, checkpoint: Mapping[str, Any] | None = None) -> None:
        """Resume from ``last.pt`` (``checkpoint``: its payload, when the caller has read it
        already) or start afresh, after clearing stale temporaries."""
        out, config = self.out, self.config
        if self.writes:
            remove_stale_temporaries(out)
        if checkpoint is not None and not config.resume:
            raise ConfigError("a checkpoint to continue from was given without resume")
        if config.resume:
            path = out / LAST
            if checkpoint is None:
                checkpoint = load_checkpoint(path, map_location=self.device)
            if checkpoint["optimizer"] is None or not checkpoint["rng"]:
                raise CheckpointError(
                    f"checkpoint {path} holds weights only (no optimizer or generator states), "
                    "so a run cannot continue from it exactly; train into another --out"
                )
            _check_resumable(checkpoint, self.module, config, path)
            self.module.load_state_dict(checkpoint["model"]["state_dict"])
            self.optimizer.load_state_dict(checkpoint["optimizer"])
            self.state = _State.from_progress(checkpoint["progress"])
            self.plateau.load_state_dict(Plateau.state_from_progress(checkpoint["progress"]))
            self.plateau.retry_skipped_drop()  # the min_lr given now may allow it
            self.pending_rng = distributed.rank_rng(checkpoint["rng"], self.group, path)
            if self.writes:
                _truncate_lines(out / METRICS, self.state.metrics_lines)
        else:
            if out is not None and (out / LAST).exists():
                raise ConfigError(
                    f"{out} already holds a run ({LAST}); resume it or choose another output "
                    "directory"
                )
            pyro.set_rng_seed(distributed.rank_seed(config.seed, self.group))
            if self.writes:
                _truncate_lines(out / METRICS, 0)
        self.wall0 = self.state.wall_s

    def restore_rng(self, after_batches: bool) -> None:
        """Restore the generators at the point they were saved: after building the epoch's
        batches when resuming mid-epoch, before when at an epoch boundary."""
        if self.pending_rng is not None and (after_batches or self.state.batch == 0):
            set_rng_state(self.pending_rng)
            self.pending_rng = None

    # -- saving --------------------------------------------------------------------------

    def save_last(self, rng: dict[str, Any] | None = None) -> None:
        self.state.wall_s = self.wall0 + time.perf_counter() - self.started
        if self.group is not None:  # every rank's generators, to rank 0, which alone writes
            rng = distributed.gather_rng(dict(rng or get_rng_state()), self.group)
            if not self.main:
                self.last_saved = time.perf_counter()
                return
        save_checkpoint(self.out / LAST, module=self.module, optimizer=self.optimizer,
                        progress={**dataclasses.asdict(self.state),
                                  "plateau": self.plateau.state_dict()},
                        train_config=self.config.to_dict(), rng=rng)
        self.last_saved = time.perf_counter()

    def clock_due(self) -> bool:
        config = self.config
        return bool(config.checkpoint_minutes
                    and time.perf_counter() - self.last_saved >= 60 * config.checkpoint_minutes)

    def checkpoint_due(self, n: int, clock: bool | None = None) -> bool:
        """Whether ``--checkpoint-every`` asks for a ``last.pt`` after this optimizer step
        (not at an epoch's last batch: the epoch's end writes one anyway). ``clock``: rank 0's
        ``checkpoint_minutes`` verdict, agreed by every rank (``None``: read the clock here)."""
        config, state = self.config, self.state
        if self.out is None or state.batch >= n:
            return False
        by_steps = config.checkpoint_every and state.step % config.checkpoint_every == 0
        by_time = self.clock_due() if clock is None else clock
        return bool(by_steps or by_time)

    def budget_left(self) -> float | None:
        """Seconds of ``max_minutes`` left (``None``: no budget), for the progress ETA."""
        if self.config.max_minutes is None:
            return None
        return 60 * self.config.max_minutes - (self.wall0 + time.perf_counter() - self.started)

    def out_of_time(self) -> bool:
        """Whether ``max_minutes`` is spent (between epochs). Under torchrun rank 0's clock
        decides for every rank, so all of them stop after the same epoch."""
        if self.config.max_minutes is None:
            return False
        spent = self.wall0 + time.perf_counter() - self.started >= 60 * self.config.max_minutes
        if self.group is not None:
            spent = bool(distributed.all_gather(spent, self.group)[0])
        return spent

    def stop_pending(self) -> bool:
        """A SIGINT or SIGTERM to act on: under torchrun, one any rank got, as agreed at the
        last step (so every rank stops at the same one)."""
        return self.stop_agreed if self.group is not None else self.stop.signum is not None

    def interrupted(self, n: int, rng: dict[str, Any] | None = None) -> TrainingInterrupted:
        """Save the exact position (with ``rng``, the generators as they were there) and
        describe the stop."""
        if self.stop.signum is None:  # under torchrun: another rank got the signal
            self.stop.signum = signal.SIGTERM
        state, where = self.state, f"epoch {self.state.epoch}, batch {self.state.batch}/{n}"
        if self.out is None:
            return TrainingInterrupted(
                f"interrupted by {self.stop.name} at {where}; nothing saved (no output directory)",
                self.stop.signum,
            )
        self.save_last(rng)
        return TrainingInterrupted(
            f"interrupted by {self.stop.name} at {where} (step {state.step}): saved "
            f"{self.out / LAST}; continue with --resume", self.stop.signum,
        )

    def diverged(self, what: str, n: int) -> DivergenceError:
        state = self.state
        kept = (f"{self.out / LAST} keeps the last good state" if self.out is not None
                and (self.out / LAST).exists() else "no checkpoint was written yet")
        return DivergenceError(
            f"training diverged at step {state.step + 1} (epoch {state.epoch}, batch "
            f"{state.batch + 1}/{n}): {what}; {kept}; try a lower --lr (see the README, "
            "'When training diverges')"
        )

    # -- one epoch -----------------------------------------------------------------------

    def train_epoch(self, batches: list[Any], bar: Progress | PlainProgress) -> None:
        """The epoch's remaining batches, from ``state.batch``: per batch its gradients, an
        optimizer step at the end of each accumulation cycle, the running metrics, then any
        stop or checkpoint the step asks for (a stop is saved at the first step after it)."""
        module, config, state = self.module, self.config, self.state
        epoch, n, accumulate = state.epoch, len(batches), config.grad_accum
        i0, ramp = config.kl_initial_zero, config.kl_rampup
        task = bar.add_task(f"epoch {epoch + 1}/{config.epochs}", total=n, completed=state.batch,
                            started_at=state.batch, after=(config.epochs - epoch - 1) * n,
                            epoch_items=n, budget_s=self.budget_left(),
                            step=state.step, loss=math.nan, kl="-",
                            beta=kl_schedule(epoch, 0.0, i0, ramp)[0], fps=0.0)
        module.train()
        units_of_cycle = None
        for j in range(state.batch, n):
            tick = time.perf_counter()
            whole = batches[j].to(self.device)
            beta, _ = kl_schedule(epoch, j / n, i0, ramp)
            if j % accumulate == 0 or units_of_cycle is None:  # or resumed mid-cycle
                self.optimizer.zero_grad(set_to_none=True)
                units_of_cycle = cycle_units(module, batches, j, accumulate)
            at_step_end = (j + 1) % accumulate == 0
            loss, kl, due_any = self._backward(whole, beta, units_of_cycle, at_step_end, n)
            state.batch = j + 1
            if at_step_end:
                self.optimizer.step()
                state.step += 1
            self._count(task, bar, whole, loss, kl, beta, tick, at_step_end)
            if at_step_end and self.stop_pending() and state.batch < n:
                raise self.interrupted(n)
            if at_step_end and self.checkpoint_due(n, due_any):
                self.save_last()
        bar.remove_task(task)

    def _backward(self, whole: Any, beta: float, units_of_cycle: float, at_step_end: bool,
                  n: int) -> tuple[float, float | None, bool | None]:
        """Accumulate one batch's gradients (of this rank's share, under torchrun), clipped
        at the cycle's end. Returns the whole batch's summed loss, its KL (``None`` under
        JIT) and, under torchrun, rank 0's checkpoint-clock verdict agreed by every rank
        (``None``: read the clock here)."""
        module = self.module
        try:
            if self.parallel is None:
                loss, kl = checked_loss(self.objective, whole, beta)
                (loss / units_of_cycle).backward()
                due_any = None
                loss = loss.item()
            else:  # the whole batch's loss and KL; every rank's stop and clock agreed
                loss, kl, self.stop_agreed, due_any = self.parallel.step(
                    distributed.shard(whole, self.group), beta, units_of_cycle,
                    sync=at_step_end, stop=self.stop.signum is not None,
                    due=self.main and self.clock_due(),
                )
            if not self.checked_store:
                _check_param_store(module)
                self.checked_store = True
            if at_step_end:
                clip_gradients(module, self.config.grad_clip)
        except Diverged as err:
            raise self.diverged(str(err), n) from None
        return loss, kl, due_any

    def _count(self, task: Any, bar: Progress | PlainProgress, whole: Any, loss: float,
               kl: float | None, beta: float, tick: float, at_step_end: bool) -> None:
        """Add one batch to the epoch's running sums and show them: the progress bar, and
        after an optimizer step the step's scalars."""
        state, sums = self.state, self.state.sums
        units = self.module.normalizer(whole).sum().item()
        sums["loss"] += loss
        sums["kl"] += math.nan if kl is None else kl
        sums["units"] += units
        sums["frames"] += whole.lengths.sum().item()
        sums["train_s"] += time.perf_counter() - tick
        bar.update(task, advance=1, loss=sums["loss"] / sums["units"], beta=beta,
                   kl="-" if kl is None else f"{sums['kl'] / sums['units']:.4f}",
                   fps=sums["frames"] / max(sums["train_s"], 1e-9), step=state.step)
        if at_step_end and self.scalars is not None:
            self.scalars.step(state.step, {
                "loss": loss / units, "beta": beta,
                "kl": None if kl is None else kl / units,
                "lr": self.optimizer.param_groups[0]["lr"]})

    def end_epoch(self, valid: list[Any], n: int,
                  bar: Progress | PlainProgress) -> dict[str, Any]:
        """Validate, update the schedule, append the metrics line, write ``last.pt`` (then
        ``best.pt`` on a new best) and move to the next epoch."""
        config, state, optimizer = self.config, self.state, self.optimizer
        epoch, sums = state.epoch, state.sums
        beta_valid, done = kl_schedule(epoch, 1.0, config.kl_initial_zero, config.kl_rampup)
        lr = optimizer.param_groups[0]["lr"]
        record = {
            "epoch": epoch, "step": state.step, "beta": beta_valid, "lr": lr, "anneal_done": done,
            "train_loss": sums["loss"] / sums["units"] if sums["units"] else None,
            "train_kl": (sums["kl"] / sums["units"]
                         if sums["units"] and not math.isnan(sums["kl"]) else None),
        }
        improved = False
        if valid:
            # Validation draws from the generators: a stop inside it is saved with them as
            # they were before it, so the resumed run validates with the same draws.
            rng = get_rng_state()
            # Under torchrun every rank validates its share and a stop waits for the next step.
            checked = valid if self.group is not None else self.stop.checked(valid)
            try:
                record.update(_validate(self.module, checked, config, epoch,
                                        beta_valid, self.device, self.group,
                                        track=lambda b, what: tracked(bar, b, len(valid), what)))
            except StopRequested:
                raise self.interrupted(n, rng) from None
            # Annealing epochs are no candidates for best.pt and no baseline for the plateau
            # rule: the β = 1 loss rises while β ramps up.
            improved = done and self.plateau.step(record["valid_loss_beta1"], epoch)
        record["stopped_early"] = self.plateau.stopped
        record["frames_per_s"] = sums["frames"] / max(sums["train_s"], 1e-9)
        record["wall_s"] = self.wall0 + time.perf_counter() - self.started
        state.epoch, state.batch = epoch + 1, 0
        state.sums = dict.fromkeys(_SUMS, 0.0)
        if self.out is not None:
            if self.writes:
                with open(self.out / METRICS, "a") as f:
                    f.write(json.dumps(record) + "\n")
            state.metrics_lines += 1
            self.save_last()  # first: whatever fails next, a resumable state is on disk
            if improved and self.writes:
                copy_checkpoint(self.out / LAST, self.out / BEST)
        if self.scalars is not None:
            self.scalars.epoch(record)
        if not config.quiet and self.main:
            bar.console.print(_describe(record), soft_wrap=True)  # one line per epoch, for grep
            if self.plateau.stopped:
                bar.console.print(
                    f"stopping: no better validation loss for {config.patience} epoch(s) "
                    f"and lr {lr:.3g} / {config.lr_decay:g} is below min_lr {config.min_lr:g}"
                )
        return record


def train(
    module: torch.nn.Module,
    train_batches: BatchSource,
    valid_batches: BatchSource | None,
    config: TrainConfig,
    *,
    record: dict[str, Any] | None = None,
    checkpoint: Mapping[str, Any] | None = None,
) -> TrainSummary:
    """Train ``module`` (a :class:`~pyro_lnf.models.base.LatentVariableModel`) in place.

    :param train_batches: ``epoch -> batches`` (e.g. :func:`sequence_batches`) or a
        re-iterable of batches; batches need ``.to(device)`` and ``.lengths``.
    :param valid_batches: the same for validation (``None``: no validation, no best model and
        no learning-rate decay).
    :param config: the options; ``config.out`` receives checkpoints and metrics.
    :param record: what ``out/run.json`` says beyond what ``train`` knows (``model``,
        ``dataset``, ``overrides``, ``command``; see :mod:`pyro_lnf.records`).
    :param checkpoint: with ``resume``, the payload of ``out/last.pt`` when the caller has
        read it already (:func:`~pyro_lnf.checkpoint.load_checkpoint`, e.g. to rebuild the
        model), so a large file is not read twice; ``None``: ``train`` reads it. Only the start
        uses it: a caller that drops its own reference lets its tensors go.
    :returns: the run's :class:`TrainSummary`.
    :raises ConfigError: invalid options, or options that differ from the resumed run's.
    :raises CheckpointError: ``resume`` without a readable, matching ``last.pt``, or a
        checkpoint that cannot be written.
    :raises FolderLockedError: another process is training in ``config.out``.
    :raises DivergenceError: a non-finite loss, gradient or distribution parameter.
    :raises TrainingInterrupted: SIGINT or SIGTERM (after saving ``last.pt``).
    """
    config.validate()
    group = distributed.current()
    if group is not None and config.jit:
        raise ConfigError("--jit is not supported under torchrun yet; train without it")
    writer = config.out is not None and (group is None or group.main)
    lock = FolderLock(config.out) if writer else contextlib.nullcontext()
    errors = distributed.collective_errors() if group is not None else contextlib.nullcontext()
    with errors, lock, deferred_signals() as stop:
        pyro.clear_param_store()  # a stale store would shadow this module's tensors (notes §1.5)
        module.to(config.device)
        run = _Run(module, config, stop)
        run.start(checkpoint)
        valid = _batches(valid_batches, 0) if valid_batches is not None else []
        valid = evenly_spaced(valid, config.limit_batches)
        state = run.state
        written = (start_record(run.out, module, config, record or {}, state) if run.writes
                   else None)
        record = {}
        if config.tensorboard and run.writes:
            run.scalars = Scalars(run.out, resume_step=state.step if config.resume else None)
        with make_progress(quiet=config.quiet or not run.main, log_every=config.log_every,
                           log_minutes=config.log_minutes) as bar, _closing(run.scalars):
            if written is not None and not config.quiet:
                bar.console.print(describe(written), highlight=False, soft_wrap=True)
            out_of_time = False
            while (state.epoch < config.epochs and not run.plateau.stopped
                   and not (out_of_time := run.out_of_time())):
                run.restore_rng(after_batches=False)
                batches = _batches(train_batches, state.epoch)[:config.limit_batches]
                run.restore_rng(after_batches=True)
                run.train_epoch(batches, bar)
                if run.stop_pending():  # the epoch's last step: stop before validating
                    raise run.interrupted(len(batches))
                record = run.end_epoch(valid, len(batches), bar)
    return TrainSummary(
        epochs=state.epoch,
        steps=state.step,
        lr=run.optimizer.param_groups[0]["lr"],
        stopped_early=run.plateau.stopped,
        best_valid_loss=run.plateau.best_valid,
        best_epoch=run.plateau.best_epoch,
        last_metrics=record,
        wall_s=run.wall0 + time.perf_counter() - run.started,
        out=str(run.out) if run.out is not None else None,
        out_of_time=out_of_time,
    )


@contextlib.contextmanager
def _closing(scalars: Any) -> Iterator[None]:
    try:
        yield
    finally:
        if scalars is not None:
            scalars.close()


def _describe(record: dict[str, Any]) -> str:
    parts = [f"epoch {record['epoch']}", f"β {record['beta']:.3g}", f"lr {record['lr']:.3g}"]
    for key, label in (("train_loss", "train"), ("valid_loss", "valid"),
                       ("valid_loss_beta1", "valid(β=1)"), ("valid_nll", "valid NLL")):
        if record.get(key) is not None:
            parts.append(f"{label} {record[key]:.4f}")
    parts.append(f"{record['frames_per_s']:.0f} frames/s")
    return "  ".join(parts)
