"""What each rank of tests/engine/test_ddp.py runs (in a spawned process, gloo on CPU)."""

from __future__ import annotations

import datetime
import os
import signal
import sys
import traceback
from pathlib import Path

import pyro
import torch
import torch.distributed as tdist
from torch.optim.optimizer import register_optimizer_step_post_hook
from pyro import poutine

# A spawned rank starts with its parent's sys.path (multiprocessing's spawn copies it), which
# holds this folder (pytest put it there to import test_ddp), so test_train imports as it does there.
from test_train import Toy, quiet, sequences, shuffled

from pyro_lnf import distributed
from pyro_lnf.errors import LnfError, TrainingInterrupted
from pyro_lnf.objective import Diverged, Objective, checked_loss
from pyro_lnf.train import train

SEQS = sequences(10, seed=3)  # batch size 3: the last batch has 1 sequence, rank 1 none
CONFIG = dict(epochs=2, batch_size=3, grad_accum=2, grad_clip=0.5, particles=2, seed=5, lr=0.05)


def toy(seed: int = 5, dropout: float = 0.1) -> Toy:
    torch.manual_seed(seed)
    return Toy(dropout=dropout)


def main(rank: int, world: int, port: int, scenario: str, work: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    tdist.init_process_group("gloo", rank=rank, world_size=world,
                             timeout=datetime.timedelta(seconds=10))
    result: dict = {}
    try:
        globals()["scenario_" + scenario](rank, Path(work), result)
    except BaseException as err:  # noqa: BLE001 - reported to the parent
        result["error"] = f"{type(err).__name__}: {err}"
        result["traceback"] = traceback.format_exc()
    torch.save(result, Path(work) / f"result_{scenario}_{rank}.pt")
    if tdist.is_initialized() and "error" not in result:
        tdist.destroy_process_group()


def scenario_grad(rank: int, work: Path, result: dict) -> None:
    """One synchronised step in float64: this rank's guide draws and the reduced gradient."""
    group = distributed.current()
    module = toy(dropout=0.0).double()
    pyro.clear_param_store()
    pyro.set_rng_seed(distributed.rank_seed(11, group))
    objective = Objective(module, particles=2, jit=False)
    traces = []
    guide = module.guide

    def recorded(*args, **kwargs):
        tracer = poutine.trace(guide)  # nested in the ELBO's own trace: one run, two records
        out = tracer(*args, **kwargs)
        traces.append(tracer.trace.nodes["z"]["value"].detach())
        return out

    module.guide = recorded
    parallel = distributed.DataParallel(
        module, lambda b, beta: checked_loss(objective, b, beta), group, torch.device("cpu"),
        Diverged,
    )
    from test_train import batches

    whole = batches(SEQS, 5)[0]
    units = float(module.normalizer(whole).sum())
    parallel.step(distributed.shard(whole, group), 0.7, units, sync=True, stop=False, due=False)
    result["z"] = traces[-1]
    result["grads"] = {n: p.grad.clone() for n, p in module.named_parameters()}
    result["params"] = {n: p.detach().clone() for n, p in module.named_parameters()}


def _watch_writes(root: Path, seen: list[str]) -> None:
    """Record every write, rename, removal or directory creation under ``root``."""
    root_s = str(root)

    def hook(event: str, args: tuple) -> None:
        if event == "open":
            path, mode, flags = args
            writing = (mode is not None and any(c in str(mode) for c in "wax+")) or (
                mode is None and isinstance(flags, int) and flags & (os.O_WRONLY | os.O_RDWR))
            if writing and str(path).startswith(root_s):
                seen.append(f"{event} {path}")
        elif event in ("os.rename", "os.remove", "os.mkdir", "os.rmdir", "os.truncate"):
            if any(str(a).startswith(root_s) for a in args if isinstance(a, (str, Path))):
                seen.append(f"{event} {args}")

    sys.addaudithook(hook)


def scenario_train(rank: int, work: Path, result: dict) -> None:
    """An uninterrupted 2-epoch run, and the same run stopped by a SIGTERM to rank 1 alone
    at step 2 (seen by the others at the next micro-batch, so all stop after step 3) and resumed; parameters compared across ranks after every step."""
    runs = work / "runs"
    seen: list[str] = []
    if rank == 1:
        _watch_writes(runs, seen)
    identical: list[bool] = []
    steps = {"n": 0, "kill_at": None}

    def after_step(optimizer, args, kwargs) -> None:
        flat = torch.cat([p.detach().flatten() for g in optimizer.param_groups
                          for p in g["params"]])
        every = [torch.empty_like(flat) for _ in range(tdist.get_world_size())]
        tdist.all_gather(every, flat)
        identical.append(all(torch.equal(every[0], x) for x in every))
        steps["n"] += 1
        if rank == 1 and steps["n"] == steps["kill_at"]:
            os.kill(os.getpid(), signal.SIGTERM)

    register_optimizer_step_post_hook(after_step)
    train(toy(), shuffled(SEQS, 3), shuffled(SEQS[:4], 2), quiet(out=str(runs / "a"), **CONFIG))
    steps.update(n=0, kill_at=2)
    try:
        train(toy(), shuffled(SEQS, 3), shuffled(SEQS[:4], 2),
              quiet(out=str(runs / "b"), **CONFIG))
        result["interrupted"] = None
    except TrainingInterrupted as err:
        result["interrupted"] = str(err)
    steps.update(kill_at=None)
    train(toy(), shuffled(SEQS, 3), shuffled(SEQS[:4], 2),
          quiet(out=str(runs / "b"), resume=True, **CONFIG))
    result["identical"] = identical
    result["writes"] = seen
    result["budget"] = _budget_run(rank)


def _budget_run(rank: int) -> tuple[int, bool]:
    """--max-time under torchrun: rank 0's clock runs a minute per reading, rank 1's is real,
    so only rank 0 finds the budget spent; every rank must stop where rank 0 does (a rank
    that went on alone would wait in its first collective until the test's timeout)."""
    import types

    import pyro_lnf.train

    real = pyro_lnf.train.time
    if rank == 0:
        clock = [0.0]

        def minute_per_reading() -> float:
            clock[0] += 60.0
            return clock[0]

        pyro_lnf.train.time = types.SimpleNamespace(perf_counter=minute_per_reading)
    try:
        summary = train(toy(), shuffled(SEQS, 3), shuffled(SEQS[:4], 2),
                        quiet(**{**CONFIG, "epochs": 3, "max_minutes": 1.5}))
    finally:
        pyro_lnf.train.time = real
    return summary.epochs, summary.out_of_time


def scenario_dead(rank: int, work: Path, result: dict) -> None:
    """Rank 1 dies at its second step: rank 0 must fail with one line, not hang."""
    if rank == 1:
        def die(optimizer, args, kwargs) -> None:
            os._exit(3)

        register_optimizer_step_post_hook(die)
    import time

    start = time.perf_counter()
    try:
        train(toy(), shuffled(SEQS, 3), None, quiet(epochs=3, batch_size=3, seed=5))
    except LnfError as err:
        result["message"] = str(err)
        result["type"] = type(err).__name__
    result["seconds"] = time.perf_counter() - start
