"""Data-parallel training and evaluation: 2 gloo ranks on CPU (the nccl/CUDA path is the same
code with another backend and device, and is not exercised here)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
from pyro import poutine
from pyro.infer import Trace_ELBO

import ddp_worker
from pyro_lnf.errors import CheckpointError
from pyro_lnf.train import train
from helpers import REPO
from test_train import Toy, batches, quiet, shuffled



def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _spawn(scenario: str, work: Path, timeout: float = 120) -> list[dict]:
    context = mp.get_context("spawn")
    port = _free_port()
    os.environ["OMP_NUM_THREADS"] = "1"
    procs = [context.Process(target=ddp_worker.main, args=(r, 2, port, scenario, str(work)))
             for r in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout)
        if p.is_alive():
            p.kill()
            pytest.fail(f"rank of {scenario} hung")
    out = []
    for r in range(2):
        path = work / f"result_{scenario}_{r}.pt"
        out.append(torch.load(path, weights_only=False) if path.exists() else None)
    return out


class _ReparamReplay(poutine.messenger.Messenger):
    """Replay recorded Normal draws *as reparameterised samples*: z = loc + scale · ε with ε
    the recorded draw's noise, so the gradient takes the same path through z as the ranks'."""

    def __init__(self, values: dict[str, torch.Tensor]) -> None:
        super().__init__()
        self.values = values

    def _pyro_sample(self, msg) -> None:
        if msg["name"] not in self.values or msg["is_observed"]:
            return
        normal = msg["fn"]
        while not isinstance(normal, torch.distributions.Normal):
            normal = normal.base_dist
        eps = ((self.values[msg["name"]] - normal.loc) / normal.scale).detach()
        msg["value"] = normal.loc + normal.scale * eps


def test_two_ranks_gradient_parameters_writes_resume_and_budget(tmp_path):
    # (1) One step's all-reduced gradient is the single-process gradient of the whole batch
    # under the same guide draws (float64).
    grad = _spawn("grad", tmp_path)
    for r, res in enumerate(grad):
        assert res is not None and "error" not in res, res and res.get("traceback")
    for name, g in grad[0]["grads"].items():
        assert torch.equal(g, grad[1]["grads"][name]), name  # every rank holds the reduced one
    module = ddp_worker.toy(dropout=0.0).double()
    for name, p in module.named_parameters():
        assert torch.equal(p.detach(), grad[0]["params"][name])
    whole = batches(ddp_worker.SEQS, 5)[0]
    z = torch.empty(2, *whole.x.shape, module.hidden, dtype=torch.float64)
    z[:, 0::2], z[:, 1::2] = grad[0]["z"], grad[1]["z"]  # rank r took sequences r, r+2, ...
    guide = _ReparamReplay({"z": z})(module.guide)
    elbo = Trace_ELBO(num_particles=2, vectorize_particles=True, max_plate_nesting=1)
    loss = elbo.differentiable_loss(module.model, guide, whole, 0.7)
    (loss / module.normalizer(whole).sum()).backward()
    for name, p in module.named_parameters():
        assert torch.allclose(p.grad, grad[0]["grads"][name], rtol=0, atol=1e-8), name

    # (2) Training: identical parameters after every step, rank 1 writes nothing, and a run
    # stopped by a signal to one rank and resumed ends where the uninterrupted one does.
    rank0, rank1 = _spawn("train", tmp_path)
    for res in (rank0, rank1):
        assert res is not None and "error" not in res, res and res.get("traceback")
    assert rank0["identical"] and all(rank0["identical"]) and all(rank1["identical"])
    assert len(rank0["identical"]) == len(rank1["identical"]) > 6
    assert rank1["writes"] == []
    assert "SIGTERM" in rank0["interrupted"] and "SIGTERM" in rank1["interrupted"]
    assert "batch 2/4 (step 3)" in rank0["interrupted"]  # mid-epoch, all ranks at once
    a, b = (torch.load(tmp_path / "runs" / d / "last.pt", weights_only=True)
            for d in ("a", "b"))
    for key, value in a["model"]["state_dict"].items():
        assert torch.equal(value, b["model"]["state_dict"][key]), key
    assert a["rng"]["world_size"] == 2 and len(a["rng"]["ranks"]) == 2
    lines = (tmp_path / "runs" / "a" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == [0, 1]
    assert (tmp_path / "runs" / "b" / "metrics.jsonl").read_text() == "\n".join(lines) + "\n" \
        or len((tmp_path / "runs" / "b" / "metrics.jsonl").read_text().splitlines()) == 2

    # (3) --max-time is rank 0's verdict: both ranks stop after the same epoch.
    assert rank0["budget"] == rank1["budget"] and rank0["budget"][1] is True
    assert rank0["budget"][0] < 3

    # (4) Another world size refuses in one line.
    with pytest.raises(CheckpointError, match=r"trained on 2 rank\(s\) and cannot resume"):
        train(Toy(), shuffled(ddp_worker.SEQS, 3), None,
              quiet(out=str(tmp_path / "runs" / "a"), resume=True, epochs=3,
                    **{k: v for k, v in ddp_worker.CONFIG.items() if k != "epochs"}))


def test_dead_rank_is_one_line_error_not_hang(tmp_path):
    rank0, _ = _spawn("dead", tmp_path, timeout=60)
    assert rank0 is not None and "error" not in rank0, rank0 and rank0.get("traceback")
    assert rank0["type"] == "DistributedError"
    assert "\n" not in rank0["message"] and "another rank died" in rank0["message"]
    assert rank0["seconds"] < 30


def _evaluate(nproc: int, data_dir: Path) -> dict:
    command = [sys.executable, "-c", "import cli; cli.main()"]
    if nproc > 1:
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone",
                   f"--nproc_per_node={nproc}", str(REPO / "cli.py")]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO),
           "LNF_DATA_DIR": str(data_dir)}
    done = subprocess.run(
        [*command, "evaluate", str(REPO / "tests" / "fixtures" / "golden_afaf.pt"), "--split",
         "valid", "--samples", "2", "--batch-size", "16", "--json", "--per-sequence"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.strip().splitlines()
    assert len(lines) == 1, done.stdout  # rank 0 alone prints
    return json.loads(lines[0])


def test_evaluate_same_per_sequence_nll_on_1_and_2_ranks(data_dir):
    one, two = _evaluate(1, data_dir), _evaluate(2, data_dir)
    assert one["log_likelihood_per_sequence"] == two["log_likelihood_per_sequence"]
    assert one["nll_nats_per_unit"] == two["nll_nats_per_unit"]
    assert one["sequences"] == len(one["log_likelihood_per_sequence"])
