r"""Data-parallel training and evaluation under ``torchrun`` (PyTorch's launcher, process group
and :class:`~torch.nn.parallel.DistributedDataParallel`; nothing here re-implements them).

**Launch.** ``torchrun --standalone --nproc_per_node N -m pyro_lnf train ...``; the
rank, world size and local rank come from torchrun's environment (``RANK``, ``WORLD_SIZE``,
``LOCAL_RANK``). The backend is gloo on CPU and nccl on CUDA, each rank on
``cuda:LOCAL_RANK``. Without torchrun (``WORLD_SIZE`` unset or 1) nothing here is used and
training is exactly the single-process loop.

**What a step does.** Every rank builds the same seeded batches as one process would, and takes
the sequences ``rank, rank + W, ...`` of each (:func:`shard`; padding is kept, so a shard is a
sub-batch of the very same tensors). The module that runs Pyro's
``Trace_ELBO.differentiable_loss`` is wrapped in DDP, whose buckets all-reduce (average) the
gradients in the backward pass. Each rank's summed −ELBO is divided by the *whole* cycle's unit
count (computed on every rank from the full batches: no communication) and multiplied by
``W``, so the averaged gradient is exactly the single-process gradient of the Σ/Σ objective.
Clipping then acts on the reduced gradient, identical on every rank; accumulating
micro-batches run under ``no_sync``.

**Control, not gradients.** One small all-reduce per micro-batch carries the shard's loss and KL
(for the metrics), whether a rank diverged (so all raise together), whether a rank got SIGINT or
SIGTERM (so all stop, and save, at the same step) and whether rank 0's ``checkpoint_minutes``
clock is due. The checkpoint gathers every rank's generator states to rank 0, which alone writes
``last.pt``, ``best.pt`` and ``metrics.jsonl`` and prints.
"""

from __future__ import annotations

import contextlib
import datetime
import os
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.distributed as tdist

from pyro_lnf.errors import CheckpointError, ConfigError, LnfError

__all__ = [
    "DEFAULT_TIMEOUT_S",
    "DataParallel",
    "DistributedError",
    "Group",
    "current",
    "gather_rng",
    "launched",
    "process_group",
    "rank_rng",
    "rank_seed",
    "shard",
]

#: How long a collective waits for the other ranks before this rank gives up (``--dist-timeout``).
DEFAULT_TIMEOUT_S = 300.0


class DistributedError(LnfError):
    """Another rank died or stopped answering within the process-group timeout."""


@dataclass(frozen=True)
class Group:
    """This process's place in the default process group."""

    rank: int
    world: int

    @property
    def main(self) -> bool:
        return self.rank == 0


def launched() -> bool:
    """Whether torchrun (or another launcher setting ``WORLD_SIZE``) started several ranks."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def current() -> Group | None:
    """The initialised process group, if it has more than one rank; ``None`` otherwise."""
    if tdist.is_available() and tdist.is_initialized() and tdist.get_world_size() > 1:
        return Group(tdist.get_rank(), tdist.get_world_size())
    return None


@contextlib.contextmanager
def process_group(device: str | None, timeout_s: float = DEFAULT_TIMEOUT_S
                  ) -> Iterator[tuple[Group | None, str | None]]:
    """Under torchrun, initialise the default process group for the duration and yield it with
    this rank's device; otherwise yield ``(None, device)`` and do nothing.

    gloo on CPU, nccl on CUDA with this rank on ``cuda:LOCAL_RANK``. A collective that fails
    (a rank died) or waits longer than ``timeout_s`` becomes a one-line :class:`DistributedError`.

    :raises ConfigError: an explicit CUDA index (torchrun assigns them), or more ranks on this
        machine than GPUs.
    """
    if not launched() or (tdist.is_available() and tdist.is_initialized()):
        yield current(), device
        return
    if not tdist.is_available():
        raise ConfigError("torchrun started several ranks but this torch has no torch.distributed")
    if not 0 < timeout_s <= 7 * 24 * 3600:
        raise ConfigError(f"--dist-timeout must be from 1 s to a week, got {timeout_s!r}")
    name = device or "cpu"
    resolved = torch.device(name)
    if resolved.type == "cuda":
        if resolved.index is not None:
            raise ConfigError(
                f"--device {name} under torchrun: give --device cuda; each rank takes "
                "cuda:LOCAL_RANK"
            )
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        local_ranks = int(os.environ.get("LOCAL_WORLD_SIZE", os.environ.get("WORLD_SIZE", "1")))
        if local_ranks > count:
            raise ConfigError(
                f"torchrun started {local_ranks} ranks on this machine but it has {count} GPU(s); "
                "lower --nproc_per_node to at most the number of GPUs"
            )
        local = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local)
        backend, name = "nccl", f"cuda:{local}"
    else:
        backend = "gloo"
    timeout = datetime.timedelta(seconds=timeout_s)
    with collective_errors(timeout_s):
        tdist.init_process_group(backend, timeout=timeout)
    try:
        with collective_errors(timeout_s):
            yield current(), name
    finally:
        tdist.destroy_process_group()


@contextlib.contextmanager
def collective_errors(timeout_s: float | None = None) -> Iterator[None]:
    """Turn a failed collective (a rank that died, a timeout) into one line."""
    try:
        yield
    except tdist.DistError as err:
        raise DistributedError(_one_line(err, timeout_s)) from err
    except RuntimeError as err:  # gloo raises plain RuntimeErrors from inside DDP's reducer
        text = str(err)
        if not any(mark in text for mark in _COLLECTIVE_FAILURES):
            raise
        raise DistributedError(_one_line(err, timeout_s)) from err


_COLLECTIVE_FAILURES = ("Gloo", "gloo", "NCCL", "Connection closed by peer", "Timed out",
                        "timed out", "Connection reset", "ProcessGroup")


def _one_line(err: BaseException, timeout_s: float | None) -> str:
    first = next((line.strip() for line in str(err).splitlines() if line.strip()), type(err).__name__)
    if len(first) > 160:
        first = first[:157] + "..."
    rank = tdist.get_rank() if tdist.is_available() and tdist.is_initialized() else "?"
    bound = f" (timeout {timeout_s:g} s)" if timeout_s else ""
    return (f"rank {rank}: another rank died or stopped answering{bound}; see its own error "
            f"above ({first})")


def rank_seed(seed: int, group: Group | None) -> int:
    """The seed of this rank's generators: ``seed`` itself in one process, else a hash of
    ``(seed, rank)`` so every rank draws different guide samples and dropout masks."""
    if group is None:
        return seed
    return int(np.random.SeedSequence([seed, group.rank]).generate_state(1)[0])


def shard(batch: Any, group: Group | None) -> Any:
    """This rank's sequences ``rank, rank + W, ...`` of a batch (a dataclass or named tuple
    whose tensors have the batch first); the padding of the whole batch is kept. Empty when
    the batch has fewer sequences than ranks."""
    if group is None:
        return batch
    size = batch.lengths.shape[0]
    index = torch.arange(group.rank, size, group.world, device=batch.lengths.device)
    import dataclasses

    if dataclasses.is_dataclass(batch):
        names = [f.name for f in dataclasses.fields(batch)]
    else:
        names = list(batch._fields)
    picked = {
        name: value.index_select(0, index.to(value.device))
        for name in names
        if isinstance(value := getattr(batch, name), torch.Tensor) and value.dim() >= 1
        and value.shape[0] == size
    }
    if dataclasses.is_dataclass(batch):
        return dataclasses.replace(batch, **picked)
    return batch._replace(**picked)


def batch_size_of(batch: Any) -> int:
    return int(batch.lengths.shape[0])


# ------------------------------------------------------------------------------------------
# the DDP-wrapped objective


class _Loss(torch.nn.Module):
    """The module whose forward runs the objective (Pyro's ``Trace_ELBO.differentiable_loss``),
    so DDP sees the parameters used and all-reduces their gradients. An empty shard returns a
    zero that touches every parameter, so its rank still takes part in the all-reduce."""

    def __init__(self, module: torch.nn.Module, loss: Callable[[Any, float], tuple]) -> None:
        super().__init__()
        self.module = module
        self.loss = loss

    def forward(self, batch: Any, beta: float) -> tuple[torch.Tensor, float | None]:
        if batch_size_of(batch) == 0:
            zero = sum(p.sum() for p in self.module.parameters() if p.requires_grad) * 0.0
            return zero, 0.0
        return self.loss(batch, beta)


class DataParallel:
    """One rank's side of a data-parallel step (see the module's docstring).

    :param loss: ``(batch, beta) -> (summed loss, KL or None)``; it raises ``diverged`` for a
        non-finite loss or an invalid distribution parameter.
    """

    def __init__(self, module: torch.nn.Module, loss: Callable[[Any, float], tuple],
                 group: Group, device: torch.device, diverged: type[Exception]) -> None:
        from torch.nn.parallel import DistributedDataParallel

        self.group, self.diverged = group, diverged
        self.device = control_device(device)
        self.ddp = DistributedDataParallel(
            _Loss(module, loss),
            device_ids=[device.index] if device.type == "cuda" else None,
            forward_sync_buffers=False,  # constant buffers: synced once, at construction
        )

    def step(self, batch: Any, beta: float, cycle_units: float, *, sync: bool, stop: bool,
             due: bool) -> tuple[float, float, bool, bool]:
        """Forward and backward of this rank's shard; gradients are all-reduced by DDP when
        ``sync`` (the accumulation cycle's last micro-batch), else kept local (``no_sync``).

        :returns: the whole batch's summed loss and KL, and whether any rank asked to stop
            and whether rank 0's checkpoint clock is due.
        :raises diverged: on every rank when any rank's loss diverged.
        """
        context = contextlib.nullcontext() if sync else self.ddp.no_sync()
        with context:
            failure = None
            loss = kl = None
            try:
                loss, kl = self.ddp(batch, beta)
            except self.diverged as err:
                failure = str(err)
            value = loss.detach().double().item() if loss is not None else float("nan")
            flags = torch.tensor(
                [failure is not None, value, float("nan") if kl is None else kl, stop, due],
                dtype=torch.float64, device=self.device,
            )
            tdist.all_reduce(flags)  # gloo (CPU); under nccl the tensor goes through the GPU
            if flags[0] > 0:
                raise self.diverged(failure or "on another rank (see its error)")
            (loss * (self.group.world / cycle_units)).backward()
        return float(flags[1]), float(flags[2]), bool(flags[3] > 0), bool(flags[4] > 0)


def control_device(device: torch.device) -> torch.device:
    """Where small control tensors live: nccl reduces CUDA tensors only."""
    return device if device.type == "cuda" else torch.device("cpu")


# ------------------------------------------------------------------------------------------
# generator states in checkpoints


def gather_rng(state: dict[str, Any], group: Group) -> dict[str, Any] | None:
    """Every rank's generator states, on rank 0: rank 0's at the top level (as one process
    saves them, so the checkpoint keeps its shape) plus ``ranks`` (all of them, by rank) and
    ``world_size``; ``None`` on the other ranks."""
    states: list[Any] | None = [None] * group.world if group.main else None
    tdist.gather_object(state, states, dst=0)
    if not group.main:
        return None
    return {**states[0], "world_size": group.world, "ranks": states}


def checkpoint_world_size(rng: Mapping[str, Any]) -> int:
    return int(rng.get("world_size", 1))


def rank_rng(rng: Mapping[str, Any], group: Group | None, path: Any) -> dict[str, Any]:
    """This rank's generator states from a checkpoint's ``rng``.

    :raises CheckpointError: the run was trained under another number of ranks (each rank's
        draws depend on its generator, so another world size cannot continue it exactly).
    """
    saved = checkpoint_world_size(rng)
    world = 1 if group is None else group.world
    if saved != world:
        raise CheckpointError(
            f"{path} was trained on {saved} rank(s) and cannot resume exactly on {world}: "
            f"resume with torchrun --nproc_per_node {saved} (x nodes), or train into another --out"
        )
    if group is None:
        return {k: v for k, v in rng.items() if k not in ("world_size", "ranks")}
    return dict(rng["ranks"][group.rank])


def all_gather(value: Any, group: Group | None) -> list[Any]:
    """``[value]`` in one process; every rank's value, by rank, under a group."""
    if group is None:
        return [value]
    out: list[Any] = [None] * group.world
    tdist.all_gather_object(out, value)
    return out
