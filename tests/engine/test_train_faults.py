"""Training when things go wrong: a second trainer on the folder, a full disk, divergence,
SIGINT and SIGTERM, stale temporaries. Each ends in one line, and what is on disk can go on."""

from __future__ import annotations

import contextlib
import errno
import io
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

import pyro
import pytest
import torch

import pyro_lnf.checkpoint
from helpers import REPO, run_lnf
from pyro_lnf.checkpoint import load_checkpoint, load_model, save_checkpoint
from pyro_lnf.errors import CheckpointError, DivergenceError, FolderLockedError, TrainingInterrupted
from pyro_lnf.io import FolderLock
from pyro_lnf.train import BEST, LAST, train
from test_train import Toy, ToyBatch, batches, epoch_seed, quiet, sequences

TRAIN, VALID = sequences(24, seed=1), batches(sequences(8, seed=2), 4)
CONFIG = quiet(epochs=3, lr=0.02, particles=2, checkpoint_every=1, kl_initial_zero=0,
               kl_rampup=0, nll_every=1, nll_samples=3)


def source(epoch: int) -> list[ToyBatch]:
    return batches(TRAIN, 6, epoch_seed(CONFIG.seed, epoch))


def straight_run(out: Path) -> Toy:
    pyro.set_rng_seed(0)
    module = Toy()
    train(module, source, VALID, replace(CONFIG, out=str(out)))
    return module


def assert_same_parameters(a: torch.nn.Module, b: torch.nn.Module) -> None:
    for (name, p), q in zip(a.named_parameters(), b.parameters(), strict=True):
        assert torch.equal(p, q), name  # bit for bit


# --- a second trainer ------------------------------------------------------------------------


def test_a_second_trainer_on_the_folder_is_refused_naming_the_holder(tmp_path, data_dir):
    with FolderLock(tmp_path):
        with pytest.raises(FolderLockedError, match=f"in use by pid {os.getpid()} on "):
            train(Toy(), source, None, replace(CONFIG, out=str(tmp_path)))
        # and from the command line, as another process
        result = subprocess.run(
            [sys.executable, "-c", "import cli; cli.main()", "train", "--model", "afaf",
             "--dataset", "jsb_chorales", "--out", str(tmp_path), "--data-dir", str(data_dir)],
            cwd=REPO, capture_output=True, text=True,
        )
        assert result.returncode == 1
        assert len(result.stderr.splitlines()) == 1
        assert result.stderr.startswith(f"error: {tmp_path} is in use by pid {os.getpid()}")
    assert not (tmp_path / LAST).exists()
    # released with its holder: the folder trains now
    train(Toy(), source, None, replace(CONFIG, out=str(tmp_path), epochs=1))


def test_stale_temporaries_are_removed_on_the_next_start(tmp_path):
    train(Toy(), source, None, replace(CONFIG, out=str(tmp_path), epochs=1))
    stale = tmp_path / ".last.pt.abc123.tmp"  # what a kill during a save leaves
    stale.write_bytes(b"half a checkpoint")
    train(Toy(), source, None, replace(CONFIG, out=str(tmp_path), epochs=2, resume=True))
    assert not stale.exists() and (tmp_path / LAST).exists()


# --- a full disk -----------------------------------------------------------------------------


class _FullDisk(io.RawIOBase):
    """A file on a disk that fills up after ``room`` bytes."""

    def __init__(self, f, room: int) -> None:
        self.f, self.room = f, room

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:
        if len(data) > self.room:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self.room -= len(data)
        return self.f.write(data)


def test_a_full_disk_is_one_line_and_leaves_a_resumable_last_pt(tmp_path, monkeypatch):
    expected = straight_run(tmp_path / "straight")
    real = pyro_lnf.checkpoint.atomic_write
    writes = []

    @contextlib.contextmanager
    def filling(path, mode="wb"):
        writes.append(Path(path).name)
        with real(path, mode) as f:
            yield _FullDisk(f, 100) if len(writes) == 7 else f

    monkeypatch.setattr(pyro_lnf.checkpoint, "atomic_write", filling)
    pyro.set_rng_seed(0)
    with pytest.raises(CheckpointError) as failure:
        train(Toy(), source, VALID, replace(CONFIG, out=str(tmp_path / "run")))
    message = str(failure.value)
    assert message.startswith(f"cannot write checkpoint {tmp_path / 'run' / LAST}: No space")
    assert "MiB free on its disk" in message and "\n" not in message
    assert not list((tmp_path / "run").glob(".*.tmp"))  # the half-written file is gone
    progress = load_checkpoint(tmp_path / "run" / LAST)["progress"]
    # writes: last.pt after steps 1-3, at epoch 0's end, best.pt, after step 5; then step 6's
    assert (progress["epoch"], progress["batch"]) == (1, 1)
    monkeypatch.setattr(pyro_lnf.checkpoint, "atomic_write", real)  # space freed
    resumed = Toy()
    train(resumed, source, VALID, replace(CONFIG, out=str(tmp_path / "run"), resume=True))
    assert_same_parameters(expected, resumed)


def test_best_pt_is_written_after_last_pt(tmp_path, monkeypatch):
    """A failure while writing best.pt still leaves the epoch's last.pt."""
    real = pyro_lnf.checkpoint.atomic_write

    @contextlib.contextmanager
    def no_best(path, mode="wb"):
        if Path(path).name == BEST:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        with real(path, mode) as f:
            yield f

    monkeypatch.setattr(pyro_lnf.checkpoint, "atomic_write", no_best)
    with pytest.raises(CheckpointError, match=f"cannot write checkpoint .*{BEST}: No space"):
        train(Toy(), source, VALID, replace(CONFIG, out=str(tmp_path), checkpoint_every=0))
    assert load_checkpoint(tmp_path / LAST)["progress"]["epoch"] == 1


@pytest.fixture
def small_disk(tmp_path):
    """A real 8 MiB tmpfs (needs root and mount; skipped elsewhere)."""
    mount = tmp_path / "disk"
    mount.mkdir()
    made = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(mount)],
                          capture_output=True)
    if made.returncode != 0:
        pytest.skip("cannot mount a tmpfs here")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def test_a_really_full_disk(small_disk):
    out = small_disk / "run"
    train(Toy(), source, None, replace(CONFIG, out=str(out), epochs=1))
    size = (out / LAST).stat().st_size
    filler = small_disk / "filler"
    free = shutil.disk_usage(small_disk).free
    filler.write_bytes(b"\0" * (free - size // 2))  # room for half a checkpoint
    with pytest.raises(CheckpointError, match=f"cannot write checkpoint {out / LAST}: No space"):
        train(Toy(), source, None, replace(CONFIG, out=str(out), epochs=2, resume=True))
    assert load_checkpoint(out / LAST)["progress"]["epoch"] == 1
    assert not list(out.glob(".*.tmp"))
    filler.unlink()
    train(Toy(), source, None, replace(CONFIG, out=str(out), epochs=2, resume=True))
    assert load_checkpoint(out / LAST)["progress"]["epoch"] == 2


# --- divergence ------------------------------------------------------------------------------


@dataclass(frozen=True)
class PoisonBatch(ToyBatch):
    """Makes the model's output weights infinite when the loop moves it to the device: the
    next loss is NaN, as in a run whose learning rate was far too large."""

    module: torch.nn.Module | None = None

    def to(self, device):
        with torch.no_grad():
            self.module.out.weight.fill_(float("inf"))
        return ToyBatch(self.x, self.lengths, self.mask)


def test_divergence_stops_in_one_line_and_keeps_the_last_good_checkpoint(tmp_path):
    module = Toy()

    def poisoned(epoch):
        out = source(epoch)
        if epoch == 1:
            b = out[2]
            out[2] = PoisonBatch(b.x, b.lengths, b.mask, module)
        return out

    with pytest.raises(DivergenceError) as failure:
        train(module, poisoned, VALID, replace(CONFIG, out=str(tmp_path), checkpoint_every=0))
    message = str(failure.value)
    assert message.startswith("training diverged at step 7 (epoch 1, batch 3/4): the ")
    assert f"{tmp_path / LAST} keeps the last good state" in message and "\n" not in message
    kept = load_checkpoint(tmp_path / LAST)
    assert kept["progress"]["epoch"] == 1
    assert all(torch.isfinite(t).all() for t in kept["model"]["state_dict"].values())


def test_a_non_finite_gradient_is_not_applied(tmp_path):
    module = Toy()
    before = {k: v.clone() for k, v in module.state_dict().items()}
    hook = module.embed.weight.register_hook(lambda g: g * float("nan"))
    with pytest.raises(DivergenceError, match=r"at step 1 .*: the gradient norm was nan"):
        train(module, source, None, replace(CONFIG, grad_clip=None))
    hook.remove()
    for key, value in module.state_dict().items():
        assert torch.equal(value, before[key]), key


def test_divergence_from_the_command_line_is_one_line(tmp_path, data_dir):
    result = subprocess.run(
        [sys.executable, "-c", "import cli; cli.main()", "train", "--model", "afaf", "--dataset",
         "jsb_chorales", "--out", str(tmp_path), "--data-dir", str(data_dir), "--hidden-size",
         "8", "--latent-dim", "4", "--flow-layers", "1", "--batch-size", "16", "--epochs", "2",
         "--kl-initial-zero", "0", "--kl-rampup", "0", "--lr", "1000", "--quiet"],
        cwd=REPO, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert result.returncode == 1
    assert result.stderr.startswith("error: training diverged at step ")
    assert len(result.stderr.splitlines()) == 1


# --- signals ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class SignalBatch(ToyBatch):
    """Sends a signal to this process when the loop moves it to the device."""

    signum: int = signal.SIGINT

    def to(self, device):
        os.kill(os.getpid(), self.signum)
        return ToyBatch(self.x, self.lengths, self.mask)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
@pytest.mark.parametrize("where", ["mid-epoch", "validation"])
def test_a_signal_saves_the_exact_position_and_resume_is_bit_identical(tmp_path, signum, where):
    expected = straight_run(tmp_path / "straight")

    def signalling(epoch):
        out = source(epoch)
        if epoch == 1 and where == "mid-epoch":
            out[1] = SignalBatch(out[1].x, out[1].lengths, out[1].mask, signum)
        return out

    valid = list(VALID)
    if where == "validation":
        valid[1] = SignalBatch(valid[1].x, valid[1].lengths, valid[1].mask, signum)
    out = tmp_path / "run"
    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    pyro.set_rng_seed(0)
    with pytest.raises(TrainingInterrupted) as stop:
        train(Toy(), signalling, valid, replace(CONFIG, out=str(out), checkpoint_every=0))
    assert stop.value.signum == signum
    name = signal.Signals(signum).name
    at = "epoch 1, batch 2/4 (step 6)" if where == "mid-epoch" else "epoch 0, batch 4/4 (step 4)"
    assert str(stop.value) == (f"interrupted by {name} at {at}: saved {out / LAST}; "
                               "continue with --resume")
    assert handlers == {sig: signal.getsignal(sig) for sig in handlers}  # restored (under
    # nohup, as in CI, SIGINT starts ignored: whatever it was, it is that again)
    resumed = Toy()
    train(resumed, source, VALID, replace(CONFIG, out=str(out), checkpoint_every=0, resume=True))
    assert_same_parameters(expected, resumed)
    lines = (out / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 3  # no epoch logged twice


def _train_args(out: Path, data_dir: Path) -> list[str]:
    return ["train", "--model", "afaf", "--dataset", "jsb_chorales", "--out", str(out),
            "--data-dir", str(data_dir), "--hidden-size", "8", "--latent-dim", "4",
            "--flow-layers", "1", "--batch-size", "8", "--eval-batch-size", "128", "--epochs",
            "1", "--quiet"]


def _lnf_train(out: Path, data_dir: Path, *extra: str) -> subprocess.Popen:
    command = [sys.executable, "-c", "import cli; cli.main()", *_train_args(out, data_dir),
               *extra]
    return subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, data_dir):
    out = tmp_path_factory.mktemp("uninterrupted") / "run"
    run = _lnf_train(out, data_dir)
    assert run.wait(timeout=300) == 0, run.stderr.read()
    return load_checkpoint(out / LAST)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_lnf_train_signalled_mid_epoch_resumes_bit_identical(tmp_path, data_dir, uninterrupted,
                                                             signum, monkeypatch, capsys):
    out = tmp_path / "run"
    run = _lnf_train(out, data_dir, "--checkpoint-every", "1")
    deadline = time.monotonic() + 120
    while not (out / LAST).exists():  # the first step is done: the run is mid-epoch 0
        assert run.poll() is None and time.monotonic() < deadline, run.stderr.read()
        time.sleep(0.005)
    run.send_signal(signum)
    assert run.wait(timeout=120) == 128 + signum
    stderr = run.stderr.read()
    assert len(stderr.splitlines()) == 1, stderr
    assert stderr.startswith(f"stopped: interrupted by {signal.Signals(signum).name} at epoch 0, ")
    progress = load_checkpoint(out / LAST)["progress"]
    assert progress["epoch"] == 0 and 0 < progress["batch"] < 29  # saved mid-epoch
    # The real process took the signal; the resume runs the same main() in this process.
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    status, _, stderr = run_lnf(monkeypatch, capsys, *_train_args(out, data_dir), "--resume")
    assert status == 0, stderr
    final = load_checkpoint(out / LAST)
    assert final["progress"]["step"] == uninterrupted["progress"]["step"]
    for key, value in uninterrupted["model"]["state_dict"].items():
        assert torch.equal(final["model"]["state_dict"][key], value), key


def test_a_weights_only_checkpoint_loads_but_is_not_resumed(tmp_path):
    save_checkpoint(tmp_path / LAST, module=Toy(), rng={})  # weights, no optimizer or RNG
    assert isinstance(load_model(tmp_path / LAST), Toy)
    with pytest.raises(CheckpointError, match="holds weights only .* train into another --out"):
        train(Toy(), source, None, replace(CONFIG, out=str(tmp_path), resume=True))


# --- resuming another run's options ----------------------------------------------------------


@pytest.fixture(scope="module")
def jsb_run(tmp_path_factory, data_dir):
    """A finished one-epoch tiny AF/AF run on JSB Chorales, trained through lnf train."""
    out = tmp_path_factory.mktemp("jsb") / "run"
    run = _lnf_train(out, data_dir, "--epochs", "1", "--batch-size", "64")
    assert run.wait(timeout=300) == 0, run.stderr.read()
    return out


@pytest.mark.parametrize(
    ("change", "named"),
    [
        (["--dataset", "nottingham"], "--dataset jsb_chorales (given nottingham)"),
        (["--model", "afscf"], "--model afaf (given afscf)"),
        (["--hidden-size", "16"], "--hidden-size 8 (given 16)"),
        (["--transform", "affine"], "--transform nlsq (given affine)"),
        (["--lr", "0.01"], "--lr 0.001 (given 0.01)"),
        (["--batch-size", "32"], "--batch-size 64 (given 32)"),
        (["--seed", "3"], "--seed 0 (given 3)"),
    ],
)
def test_resume_refuses_another_dataset_model_or_option_naming_it(
    jsb_run, data_dir, monkeypatch, capsys, change, named
):
    from helpers import run_lnf

    before = (jsb_run / LAST).read_bytes()
    flag, value = change
    options = {"--model": "afaf", "--dataset": "jsb_chorales", "--out": str(jsb_run),
               "--data-dir": str(data_dir), "--epochs": "2", flag: value}
    args = ["train", *[x for pair in options.items() for x in pair], "--resume", "--quiet"]
    code, _, err = run_lnf(monkeypatch, capsys, *args)
    assert code == 1 and len(err.strip().splitlines()) == 1, err
    assert err.startswith(f"error: {jsb_run / LAST} is a run with ") and named in err, err
    assert "--resume continues a run as it was" in err
    assert (jsb_run / LAST).read_bytes() == before  # nothing trained, nothing written
