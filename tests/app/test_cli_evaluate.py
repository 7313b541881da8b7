"""lnf evaluate --partial as a user runs it, in this process through the console script's
``main``: stopped by a signal between batches, continued to the very figures of an uninterrupted
run, and refused in one line where it cannot keep that promise."""

from __future__ import annotations

import json
import os
import signal

import pytest
import torch
from helpers import TINY, assert_one_line_error, run_lnf

from pyro_lnf.checkpoint import save_checkpoint
from pyro_lnf.datasets import load_dataset
from pyro_lnf.distributed import Group
from pyro_lnf.errors import ConfigError
from pyro_lnf.models.lnf import LatentFlowModel
from pyro_lnf.models.nvdm import NVDM

#: JSB's 76 validation chorales in 5 batches, K = 2: a few seconds on one thread.
EVALUATE = ["--split", "valid", "--samples", "2", "--batch-size", "16", "--json",
            "--per-sequence"]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, data_dir) -> str:
    """A tiny latent-flow model in a run folder (so evaluations are recorded there)."""
    run = tmp_path_factory.mktemp("run")
    (run / "metrics.jsonl").write_text("")
    jsb = load_dataset("jsb_chorales", data_dir=data_dir)
    torch.manual_seed(0)
    model = LatentFlowModel(kind="binary", num_features=88, max_length=40,
                            lengths=jsb.lengths("train"), prior="afscf", dataset="jsb_chorales",
                            **TINY)
    return str(save_checkpoint(run / "best.pt", module=model))


@pytest.fixture
def lnf(data_dir, monkeypatch, capsys):
    monkeypatch.setenv("LNF_DATA_DIR", str(data_dir))
    return lambda *args: run_lnf(monkeypatch, capsys, *args)


def _signal_at(monkeypatch: pytest.MonkeyPatch, index: int, signum: int) -> None:
    """Send ``signum`` to this process as batch ``index`` starts (a user's Ctrl-C, a
    scheduler's SIGTERM)."""
    from pyro_lnf import evaluate

    seed_of = evaluate.batch_seed

    def signalling(seed: int, i: int) -> int:
        if i == index:
            os.kill(os.getpid(), signum)
        return seed_of(seed, i)

    monkeypatch.setattr(evaluate, "batch_seed", signalling)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_stopped_evaluation_continues_to_the_figures_of_an_uninterrupted_one(
        checkpoint, tmp_path, lnf, monkeypatch, signum):
    evaluations = os.path.join(os.path.dirname(checkpoint), "evaluations.jsonl")
    recorded = len(open(evaluations).readlines()) if os.path.exists(evaluations) else 0
    code, straight, err = lnf("evaluate", checkpoint, *EVALUATE)
    assert code == 0, err
    partial = tmp_path / "valid.partial.jsonl"
    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    with monkeypatch.context() as patch:
        _signal_at(patch, 2, signum)
        code, out, err = lnf("evaluate", checkpoint, *EVALUATE, "--partial", partial)
    assert code == 128 + signum and out == ""
    name = signal.Signals(signum).name
    assert err == (f"stopped: interrupted by {name} after 3 of 5 batches, kept in {partial}; "
                   "run the same command to continue\n")
    assert handlers == {sig: signal.getsignal(sig) for sig in handlers}
    assert len(open(evaluations).readlines()) == recorded + 1  # the stopped one is not recorded
    code, resumed, err = lnf("evaluate", checkpoint, *EVALUATE, "--partial", partial)
    assert code == 0, err
    assert json.loads(resumed) == json.loads(straight)  # every figure, per sequence too
    assert len(open(evaluations).readlines()) == recorded + 2


def test_another_evaluation_into_the_same_file_is_one_line(checkpoint, tmp_path, lnf):
    partial = tmp_path / "valid.partial.jsonl"
    code, _, err = lnf("evaluate", checkpoint, *EVALUATE, "--partial", partial)
    assert code == 0, err
    code, _, err = lnf("evaluate", checkpoint, *EVALUATE, "--samples", "3", "--seed", "1",
                       "--partial", partial)
    assert_one_line_error(code, err, "holds results of another evaluation: num_samples 2 (now 3); "
                          "seed 0 (now 1)")


def test_a_resume_with_another_cpu_thread_count_is_one_line(checkpoint, tmp_path, lnf):
    # The kernels split their sums by thread: the figures would not be an uninterrupted run's.
    threads, partial = torch.get_num_threads(), tmp_path / "valid.partial.jsonl"
    try:
        torch.set_num_threads(1)
        code, _, err = lnf("evaluate", checkpoint, *EVALUATE, "--partial", partial)
        assert code == 0, err
        torch.set_num_threads(2)
        code, _, err = lnf("evaluate", checkpoint, *EVALUATE, "--partial", partial)
    finally:
        torch.set_num_threads(threads)
    assert_one_line_error(code, err, "holds results of another evaluation: cpu_threads 1 (now 2)")


def test_a_vae_is_refused_in_one_line(tmp_path, lnf):
    path = save_checkpoint(tmp_path / "nvdm.pt",
                           module=NVDM(50, latent_dim=2, hidden_size=8, dataset="20news"))
    code, _, err = lnf("evaluate", str(path), "--partial", tmp_path / "p.jsonl")
    assert_one_line_error(code, err, "--partial is for the sequence models, not 'nvdm'")
    assert not (tmp_path / "p.jsonl").exists()


def test_torchrun_is_refused(checkpoint, tmp_path, monkeypatch):
    from pyro_lnf import distributed
    from pyro_lnf.app.run import evaluate_checkpoint

    monkeypatch.setattr(distributed, "current", lambda: Group(rank=0, world=2))
    with pytest.raises(ConfigError, match="--partial is not supported under torchrun"):
        evaluate_checkpoint(checkpoint, partial=str(tmp_path / "p.jsonl"), quiet=True)
