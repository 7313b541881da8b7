"""The training loop: KL schedule, objective, clipping, accumulation, LR decay, exact resume."""

from __future__ import annotations

import copy
import json
import math
import shutil
import types
from dataclasses import dataclass, replace

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro import poutine
from pyro.infer import Trace_ELBO

from pyro_lnf.checkpoint import load_checkpoint, load_model
from pyro_lnf.errors import CheckpointError, ConfigError
from pyro_lnf.evaluate import importance_sample
from pyro_lnf.models.registry import register_model
from pyro_lnf.objective import Objective
from pyro_lnf.train import (
    BEST,
    LAST,
    METRICS,
    TrainConfig,
    epoch_seed,
    evenly_spaced,
    kl_schedule,
    sequence_batches,
    train,
)


# Tiny models: one thread (tests/conftest.py).
pytestmark = pytest.mark.usefixtures("one_thread")


@dataclass(frozen=True)
class ToyBatch:
    x: torch.Tensor  # (B, T) token ids, padded with 0
    lengths: torch.Tensor
    mask: torch.Tensor

    def to(self, device: str | torch.device) -> ToyBatch:
        return ToyBatch(self.x.to(device), self.lengths.to(device), self.mask.to(device))


class Interrupted(Exception):
    pass


@dataclass(frozen=True)
class BombBatch(ToyBatch):
    """Stands for a crash in the middle of an epoch."""

    def to(self, device: str | torch.device) -> ToyBatch:
        raise Interrupted


@register_model("test_train_toy")
class Toy(torch.nn.Module):
    """z_t ~ N(0, I_H); x_t ~ Categorical(softmax(W z_t + b)); T ~ uniform.
    Guide: N(μ, σ) from an embedding of x_t (with dropout, so resume must restore the RNG)."""

    name = "toy"

    def __init__(self, vocab: int = 5, hidden: int = 2, max_len: int = 8, dropout: float = 0.1):
        super().__init__()
        self.hidden = hidden
        self.embed = torch.nn.Embedding(vocab, 2 * hidden)
        self.out = torch.nn.Linear(hidden, vocab)
        self.drop = torch.nn.Dropout(dropout)
        self.register_buffer("length_logits", torch.zeros(max_len + 1))

    def normalizer(self, batch: ToyBatch) -> torch.Tensor:
        return (batch.lengths + 1).float()

    def model(self, batch: ToyBatch, beta: float = 1.0) -> None:
        pyro.module(self.name, self)
        size, steps = batch.mask.shape
        with pyro.plate("sequences", size, dim=-1):
            pyro.sample("length", dist.Categorical(logits=self.length_logits), obs=batch.lengths)
            with poutine.scale(scale=beta):
                prior = dist.Normal(self.out.bias.new_zeros(size, steps, self.hidden), 1.0)
                z = pyro.sample("z", prior.to_event(1).mask(batch.mask).to_event(1))
            x = dist.Categorical(logits=self.out(z)).mask(batch.mask).to_event(1)
            pyro.sample("x", x, obs=batch.x)

    def guide(self, batch: ToyBatch, beta: float = 1.0) -> None:
        pyro.module(self.name, self)
        loc, raw = self.drop(self.embed(batch.x)).chunk(2, dim=-1)
        with pyro.plate("sequences", batch.x.shape[0], dim=-1):
            with poutine.scale(scale=beta):
                q = dist.Normal(loc, torch.nn.functional.softplus(raw) + 1e-3)
                pyro.sample("z", q.to_event(1).mask(batch.mask).to_event(1))


def sequences(n: int, *, seed: int = 0, token: int | None = None, fixed_len: int | None = None,
              vocab: int = 5, max_len: int = 8) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        length = fixed_len or int(torch.randint(2, max_len + 1, (1,), generator=g))
        start = int(torch.randint(0, vocab, (1,), generator=g))
        seq = (torch.arange(length) + start) % vocab
        out.append(torch.full((length,), token) if token is not None else seq)
    return out


def batches(seqs: list[torch.Tensor], size: int, seed: int | None = None) -> list[ToyBatch]:
    order = list(range(len(seqs)))
    if seed is not None:
        order = torch.randperm(len(seqs), generator=torch.Generator().manual_seed(seed)).tolist()
    out = []
    for start in range(0, len(order), size):
        chunk = [seqs[i] for i in order[start : start + size]]
        lengths = torch.tensor([len(c) for c in chunk])
        x = torch.nn.utils.rnn.pad_sequence(chunk, batch_first=True)
        out.append(ToyBatch(x, lengths, torch.arange(x.shape[1])[None] < lengths[:, None]))
    return out


def shuffled(seqs: list[torch.Tensor], size: int, seed: int = 0):
    return lambda epoch: batches(seqs, size, epoch_seed(seed, epoch))


def quiet(**kwargs) -> TrainConfig:
    kwargs.setdefault("nll_every", 0)
    return TrainConfig(quiet=True, **kwargs)


def read_metrics(path) -> list[dict]:
    return [json.loads(line) for line in (path / METRICS).read_text().splitlines()]


def script_validation(monkeypatch, losses: list[float], kl: float = 0.0) -> None:
    """Validation returns these −ELBOs in turn (reconstruction: loss − kl), which isolates
    the plateau rule and best.pt from Monte Carlo noise."""
    script = iter(losses)

    def scripted(module, batches, num_samples, **kwargs):
        loss = next(script)
        return {"reconstruction_nats_per_unit": loss - kl, "kl_nats_per_unit": kl,
                "elbo_loss_nats_per_unit": loss}

    monkeypatch.setattr("pyro_lnf.train.evaluate", scripted)


# --- the KL schedule -------------------------------------------------------------------------


def test_kl_schedule_ptb_defaults():
    i0, ramp = 4, 10
    for epoch in range(5):  # epochs 0-4 at 1e-5 throughout
        for f in (0.0, 0.5, 1.0):
            assert kl_schedule(epoch, f, i0, ramp) == (pytest.approx(1e-5), False)
    assert kl_schedule(5, 0.0, i0, ramp)[0] == pytest.approx(1e-5)
    assert kl_schedule(5, 1.0, i0, ramp)[0] == pytest.approx(1e-5 + (1 - 1e-5) * 0.1)
    assert kl_schedule(5, 0.5, i0, ramp)[0] == pytest.approx(1e-5 + (1 - 1e-5) * 0.05)
    assert kl_schedule(14, 0.0, i0, ramp)[0] == pytest.approx(1e-5 + (1 - 1e-5) * 0.9)
    assert kl_schedule(14, 1.0, i0, ramp) == (pytest.approx(1.0), False)  # valid at 14: β = 1
    assert kl_schedule(15, 0.0, i0, ramp) == (1.0, True)
    assert kl_schedule(16, 0.3, i0, ramp) == (1.0, True)


def test_kl_schedule_music_and_edge_cases():
    assert kl_schedule(20, 1.0, 20, 15) == (pytest.approx(1e-5), False)
    assert kl_schedule(35, 1.0, 20, 15) == (pytest.approx(1.0), False)
    assert kl_schedule(36, 0.0, 20, 15) == (1.0, True)
    assert kl_schedule(0, 0.0, 0, 0) == (1.0, True)  # no annealing: β = 1, done at once
    # No ramp after a flat start: β jumps to 1 within epoch i0, done afterwards.
    assert kl_schedule(2, 0.5, 2, 0)[0] == pytest.approx(0.5 * (1 + 1e-5))
    assert kl_schedule(2, 1.0, 2, 0) == (1.0, False)
    assert kl_schedule(3, 0.0, 2, 0) == (1.0, True)


def test_epoch_seed_is_a_function_of_seed_and_epoch():
    assert epoch_seed(3, 7) == epoch_seed(3, 7)
    assert len({epoch_seed(s, e) for s in range(4) for e in range(50)}) == 200


# --- the objective and one optimizer step ----------------------------------------------------


def test_one_step_is_sgd_on_the_token_normalised_trace_elbo():
    # The step must be θ − lr ∇[Trace_ELBO(S particles, β) / Σ(T+1)] with β = 1e-5 at the
    # first batch of an annealed run: the objective, its normaliser and β, checked at once.
    pyro.set_rng_seed(1)
    module = Toy(dropout=0.0)
    reference = copy.deepcopy(module)
    batch = batches(sequences(6, seed=3), 6)[0]
    config = quiet(epochs=1, lr=0.5, optimizer="sgd", grad_clip=None, particles=3,
                   kl_initial_zero=2, seed=9)
    train(module, [batch], None, config)

    pyro.clear_param_store()
    pyro.set_rng_seed(9)
    elbo = Trace_ELBO(num_particles=3, vectorize_particles=True, max_plate_nesting=1)
    loss = elbo.differentiable_loss(reference.model, reference.guide, batch, 1e-5)
    (loss / (batch.lengths + 1).sum()).backward()
    for (name, p), q in zip(reference.named_parameters(), module.parameters(), strict=True):
        torch.testing.assert_close(q, p.detach() - 0.5 * p.grad, msg=name)


def test_reported_kl_is_that_of_the_loss_samples():
    # Same seed, same particle layout: the training objective and the evaluator draw the same
    # z, so loss = rec + β·KL must hold with the evaluator's parts, to rounding.
    pyro.set_rng_seed(0)
    module = Toy(dropout=0.0)
    batch = batches(sequences(6, seed=3), 6)[0]
    pyro.set_rng_seed(4)
    loss, kl = Objective(module, particles=3, jit=False)(batch, 0.3)
    pyro.set_rng_seed(4)
    est = importance_sample(module.model, module.guide, batch, 1.0, num_samples=3)
    assert kl == pytest.approx(est.kl.sum().item(), rel=1e-5)
    assert loss.item() == pytest.approx((est.reconstruction + 0.3 * est.kl).sum().item(), rel=1e-5)


def test_global_norm_clipping_bounds_the_step():
    pyro.set_rng_seed(1)
    data = [batches(sequences(6, seed=3), 6)[0]]
    for clip in (1e-3, None):
        module = Toy(dropout=0.0)
        before = torch.cat([p.detach().flatten() for p in module.parameters()])
        train(module, data, None, quiet(epochs=1, lr=1.0, optimizer="sgd", grad_clip=clip))
        after = torch.cat([p.detach().flatten() for p in module.parameters()])
        step = (after - before).norm().item()
        if clip is not None:
            assert step == pytest.approx(clip, rel=1e-4)
        else:
            assert step > 100 * 1e-3  # the raw gradient is far larger: clipping did act


def test_accumulating_two_half_batches_equals_one_full_batch():
    # Equal lengths, so both halves have the same Σ(T+1) and the mean of the two per-unit
    # losses is the per-unit loss of the union; 4 sequences x 4 steps x 2 dims = 32 normal
    # draws per half, a whole number of torch's 16-wide blocks, so the noise is the same too.
    seqs = sequences(8, seed=4, fixed_len=4)
    results = []
    for size, accum in ((8, 1), (4, 2)):
        pyro.set_rng_seed(2)
        module = Toy(dropout=0.0)
        summary = train(module, batches(seqs, size), None,
                        quiet(epochs=1, lr=0.1, grad_accum=accum, grad_clip=0.25))
        assert summary.steps == 1
        results.append(torch.cat([p.detach().flatten() for p in module.parameters()]))
    torch.testing.assert_close(results[0], results[1], rtol=0, atol=1e-6)


def test_accumulation_weighs_every_unit_the_same_across_unequal_batches():
    """Batches of different lengths accumulated = one batch of all: the loss is divided by the
    cycle's units, not each batch by its own. A latent-free model keeps the loss deterministic."""
    from pyro_lnf.datasets import collate
    from pyro_lnf.models.baseline import LSTMBaseline

    g = torch.Generator().manual_seed(0)
    seqs = [torch.randint(0, 5, (n,), generator=g) for n in (9, 8, 2, 1)]
    results = []
    for groups in ([[0, 1, 2, 3]], [[0, 1], [2, 3]]):
        torch.manual_seed(0)
        module = LSTMBaseline(kind="categorical", num_features=5, max_length=10,
                              lengths=[9, 8, 2, 1], hidden_size=6, embedding_dim=4,
                              length_dim=3, lstm_layers=1, dropout=0.0)
        data = [collate(seqs, idx) for idx in groups]
        train(module, data, None, quiet(epochs=1, lr=0.5, optimizer="sgd", grad_clip=None,
                                        grad_accum=len(groups)))
        results.append(torch.cat([p.detach().flatten() for p in module.parameters()]))
    torch.testing.assert_close(results[0], results[1], rtol=0, atol=1e-6)


def test_partial_accumulation_at_epoch_end_is_dropped():
    pyro.set_rng_seed(2)
    data = batches(sequences(10, seed=4), 2)  # 5 batches, accumulate 2: 2 steps per epoch
    summary = train(Toy(), data, None, quiet(epochs=2, grad_accum=2))
    assert summary.steps == 4


# --- the loop, checkpoints and metrics -------------------------------------------------------


def test_training_improves_and_writes_checkpoints_and_metrics(tmp_path):
    pyro.set_rng_seed(0)
    module = Toy()
    train_seqs, valid = sequences(64, seed=1), batches(sequences(16, seed=2), 8)
    config = quiet(epochs=4, lr=0.02, out=str(tmp_path), nll_every=2, nll_samples=5,
                   kl_initial_zero=1, kl_rampup=1)
    summary = train(module, shuffled(train_seqs, 8), valid, config)
    rows = read_metrics(tmp_path)
    assert [r["epoch"] for r in rows] == [0, 1, 2, 3] and rows[-1]["step"] == 32 == summary.steps
    for row in rows:
        for key in ("train_loss", "train_kl", "beta", "lr", "valid_loss", "valid_loss_beta1",
                    "valid_kl", "frames_per_s", "wall_s"):
            assert row[key] is not None, key
    assert [r["beta"] for r in rows] == pytest.approx([1e-5, 1e-5, 1.0, 1.0])
    assert [("valid_nll" in r) for r in rows] == [False, True, False, True]
    # The IS bound is tighter than the one-sample ELBO on the same data.
    assert rows[3]["valid_nll"] < rows[3]["valid_loss_beta1"]
    assert rows[-1]["valid_loss_beta1"] < rows[0]["valid_loss_beta1"]
    assert summary.best_valid_loss == min(r["valid_loss_beta1"] for r in rows)
    assert rows[summary.best_epoch]["valid_loss_beta1"] == summary.best_valid_loss
    best = load_checkpoint(tmp_path / BEST)
    assert best["progress"]["epoch"] == summary.best_epoch + 1
    assert best["train_config"]["lr"] == 0.02
    rebuilt = load_model(tmp_path / LAST)
    for key, value in module.state_dict().items():
        assert torch.equal(rebuilt.state_dict()[key], value)


def test_lr_decays_on_plateau_only_after_annealing_and_keeps_adam_state(tmp_path, monkeypatch):
    # A scripted validation loss isolates the schedule from Monte Carlo noise. Annealing
    # (i0 = 2, R = 1) is done from epoch 4; patience 2. Epoch 0 has the lowest β = 1 loss of
    # all, as an untrained model at β = 1e-5 can: it must not become best.pt.
    script_validation(monkeypatch, [3.0, 5.5, 6.0, 4.0, 4.5, 4.2, 3.9, 4.1, 4.0, 4.0], kl=1.0)
    data = batches(sequences(4), 4)
    config = quiet(epochs=10, lr=0.04, patience=2, out=str(tmp_path), kl_initial_zero=2,
                   kl_rampup=1)
    summary = train(Toy(), data, data, config)
    rows = read_metrics(tmp_path)
    # Epochs 0-3 anneal: neither candidates nor counted. Epoch 4 is the first best, 5 and 6
    # better; 7-8 are two bad epochs: decay.
    assert [r["lr"] for r in rows] == pytest.approx([0.04] * 9 + [0.01])
    assert summary.lr == pytest.approx(0.01)
    assert summary.best_epoch == 6 and summary.best_valid_loss == 3.9
    assert load_checkpoint(tmp_path / BEST)["progress"]["plateau"]["best_epoch"] == 6
    # Validation is at β(i): rec + β(i) KL; β(1) = 1e-5, β(3) = 1.
    assert rows[1]["valid_loss"] == pytest.approx(4.5 + 1e-5)
    assert rows[0]["valid_loss_beta1"] == 3.0 and rows[0]["anneal_done"] is False
    assert rows[3]["valid_loss"] == pytest.approx(4.0)
    # Adam's moments survive the decays: its step count is the run's.
    state = load_checkpoint(tmp_path / LAST)["optimizer"]["state"]
    assert all(s["step"].item() == summary.steps == 10 for s in state.values())


def test_limit_batches_validates_on_batches_spread_over_the_sorted_split(monkeypatch):
    # Validation batches come sorted by length: the first ones would be the shortest.
    seen = []

    def recording(module, batches, num_samples, **kwargs):
        seen.append(list(batches))
        return {"reconstruction_nats_per_unit": 1.0, "kl_nats_per_unit": 0.0,
                "elbo_loss_nats_per_unit": 1.0}

    monkeypatch.setattr("pyro_lnf.train.evaluate", recording)
    valid = batches(sequences(10), 1)
    train(Toy(), batches(sequences(4), 2), valid, quiet(epochs=1, limit_batches=3))
    assert seen == [[valid[1], valid[5], valid[8]]]
    assert evenly_spaced(valid, 1) == [valid[5]] and evenly_spaced(valid, 10) == valid
    assert evenly_spaced(valid, None) == valid and evenly_spaced([], 3) == []


def test_min_lr_ends_the_run_and_a_resume_with_a_lower_one_goes_on(tmp_path, monkeypatch):
    # No annealing, patience 1: epoch 0 is the best, epoch 1 drops 0.04 -> 0.01, and epoch 2
    # would drop to 0.0025 < min_lr, so the run ends after 3 of its 10 epochs, rate unchanged.
    script_validation(monkeypatch, [5.0, 5.5, 5.6, 4.0, 3.9])
    data = batches(sequences(4), 4)
    config = quiet(epochs=10, lr=0.04, patience=1, min_lr=0.005, out=str(tmp_path))
    summary = train(Toy(), data, data, config)
    rows = read_metrics(tmp_path)
    assert summary.stopped_early and summary.epochs == 3 and len(rows) == 3
    assert summary.lr == pytest.approx(0.01)
    assert [r["stopped_early"] for r in rows] == [False, False, True]
    # Resuming with the same min_lr has nothing to do.
    again = train(Toy(), data, data, replace(config, resume=True))
    assert again.stopped_early and again.epochs == 3 and len(read_metrics(tmp_path)) == 3
    # A lower min_lr takes the skipped drop and trains on (epochs 3 and 4 improve).
    on = train(Toy(), data, data, replace(config, resume=True, min_lr=1e-3, epochs=5))
    rows = read_metrics(tmp_path)
    assert not on.stopped_early and on.epochs == 5
    assert [r["lr"] for r in rows] == pytest.approx([0.04, 0.04, 0.01, 0.0025, 0.0025])
    with pytest.raises(ConfigError, match="min_lr"):
        quiet(min_lr=0.0).validate()


def test_max_time_ends_the_run_after_the_epoch_that_spends_it_summed_over_resumes(
        tmp_path, monkeypatch):
    # A clock that moves only when an epoch validates, by one minute: epoch k ends at k + 1.
    clock = [0.0]

    def validating(module, batches, num_samples, **kwargs):
        clock[0] += 60.0
        return {"reconstruction_nats_per_unit": 1.0, "kl_nats_per_unit": 0.0,
                "elbo_loss_nats_per_unit": 1.0}

    monkeypatch.setattr("pyro_lnf.train.evaluate", validating)
    monkeypatch.setattr("pyro_lnf.train.time", types.SimpleNamespace(perf_counter=lambda: clock[0]))
    data = batches(sequences(4), 4)
    config = quiet(epochs=10, max_minutes=2.5, out=str(tmp_path))
    summary = train(Toy(), data, data, config)
    assert summary.out_of_time and summary.epochs == 3 and len(read_metrics(tmp_path)) == 3
    assert summary.wall_s == pytest.approx(180.0)
    # The budget counts the time before the resume: 2 more epochs reach 5 minutes >= 4.5.
    more = train(Toy(), data, data, replace(config, resume=True, max_minutes=4.5))
    assert more.out_of_time and more.epochs == 5
    assert [r["wall_s"] for r in read_metrics(tmp_path)] == pytest.approx([60, 120, 180, 240, 300])
    # No budget, or one not spent: the epochs decide.
    done = train(Toy(), data, data, replace(config, resume=True, max_minutes=None, epochs=6))
    assert not done.out_of_time and done.epochs == 6
    with pytest.raises(ConfigError, match="max_minutes"):
        quiet(max_minutes=0.0).validate()


def test_a_checkpoint_from_before_the_plateau_entry_resumes_with_its_plateau_state(
        tmp_path, monkeypatch):
    # Checkpoints written before progress["plateau"] hold best_valid, best_epoch, bad_epochs
    # and stopped_early at the top of progress (a real run's last.pt among them).
    script_validation(monkeypatch, [5.0, 5.5, 5.6, 4.0, 3.9])
    data = batches(sequences(4), 4)
    config = quiet(epochs=10, lr=0.04, patience=1, min_lr=0.005, out=str(tmp_path))
    train(Toy(), data, data, config)
    checkpoint = torch.load(tmp_path / LAST, weights_only=True)
    progress = checkpoint["progress"]
    assert progress["plateau"] == {"best_valid": 5.0, "best_epoch": 0, "bad_epochs": 1,
                                   "stopped_early": True}
    checkpoint["progress"] = {**progress.pop("plateau"), **progress}
    torch.save(checkpoint, tmp_path / LAST)
    # The skipped drop is taken, and epoch 0 stays the best until epoch 3 beats it.
    on = train(Toy(), data, data, replace(config, resume=True, min_lr=1e-3, epochs=5))
    assert [r["lr"] for r in read_metrics(tmp_path)] == pytest.approx(
        [0.04, 0.04, 0.01, 0.0025, 0.0025])
    assert (on.best_epoch, on.best_valid_loss, on.stopped_early) == (4, 3.9, False)


@pytest.mark.parametrize("crash_at", [(2, 3), (3, 0)], ids=["mid-epoch", "epoch-start"])
def test_interrupted_and_resumed_run_ends_with_the_same_parameters(tmp_path, crash_at):
    # 4 batches an epoch, 2 per optimizer step, a checkpoint every step; annealing, dropout,
    # two particles and a periodic IS NLL all draw random numbers that resume must replay.
    train_seqs, valid = sequences(24, seed=1), batches(sequences(8, seed=2), 8)
    config = quiet(epochs=4, lr=0.02, particles=2, grad_accum=2, checkpoint_every=1,
                   kl_initial_zero=1, kl_rampup=1, nll_every=2, nll_samples=3)

    def source(crash: bool):
        def epoch_batches(epoch: int) -> list[ToyBatch]:
            out = batches(train_seqs, 6, epoch_seed(config.seed, epoch))
            if crash and epoch == crash_at[0]:
                b = out[crash_at[1]]
                out[crash_at[1]] = BombBatch(b.x, b.lengths, b.mask)
            return out
        return epoch_batches

    pyro.set_rng_seed(0)
    straight = Toy()
    train(straight, source(False), valid, replace(config, out=str(tmp_path / "a")))

    pyro.set_rng_seed(0)
    with pytest.raises(Interrupted):
        train(Toy(), source(True), valid, replace(config, out=str(tmp_path / "b")))
    progress = load_checkpoint(tmp_path / "b" / LAST)["progress"]
    # The crash lost work: the last checkpoint is strictly before it.
    assert (progress["epoch"], progress["batch"]) <= crash_at
    pyro.set_rng_seed(123)  # a different init and RNG state: all must come from the file
    resumed = Toy()
    summary = train(resumed, source(False), valid,
                    replace(config, out=str(tmp_path / "b"), resume=True))
    assert summary.epochs == 4
    for (name, p), q in zip(straight.named_parameters(), resumed.parameters(), strict=True):
        torch.testing.assert_close(q, p, rtol=0, atol=1e-6, msg=name)

    def comparable(rows):
        return [{k: v for k, v in r.items() if k not in ("wall_s", "frames_per_s")} for r in rows]

    assert comparable(read_metrics(tmp_path / "b")) == comparable(read_metrics(tmp_path / "a"))


def test_resume_from_a_payload_already_read_reads_no_file_and_continues_the_same(
        tmp_path, monkeypatch):
    data, valid = batches(sequences(8), 4), batches(sequences(4, seed=2), 4)
    config = quiet(epochs=1, lr=0.02, out=str(tmp_path / "a"))
    train(Toy(), data, valid, config)
    shutil.copytree(tmp_path / "a", tmp_path / "b")
    reread = Toy()
    train(reread, data, valid, replace(config, epochs=2, resume=True))
    payload = load_checkpoint(tmp_path / "b" / LAST)

    def no_second_read(*args, **kwargs):
        raise AssertionError("train read last.pt although it was given")

    monkeypatch.setattr("pyro_lnf.train.load_checkpoint", no_second_read)
    given = Toy()
    train(given, data, valid, replace(config, epochs=2, resume=True, out=str(tmp_path / "b")),
          checkpoint=payload)
    for (name, p), q in zip(reread.named_parameters(), given.parameters(), strict=True):
        assert torch.equal(p, q), name
    with pytest.raises(ConfigError, match="without resume"):
        train(Toy(), data, valid, replace(config, out=str(tmp_path / "c")), checkpoint=payload)


def test_resume_refuses_missing_or_different_runs(tmp_path):
    data = batches(sequences(8), 4)
    with pytest.raises(CheckpointError, match="last.pt does not exist"):
        train(Toy(), data, None, quiet(epochs=1, out=str(tmp_path), resume=True))
    train(Toy(), data, None, quiet(epochs=1, out=str(tmp_path)))
    with pytest.raises(ConfigError, match="already holds a run"):
        train(Toy(), data, None, quiet(epochs=1, out=str(tmp_path)))
    with pytest.raises(ConfigError, match="trained with seed=0"):
        train(Toy(), data, None, quiet(epochs=2, out=str(tmp_path), resume=True, seed=1))
    with pytest.raises(ConfigError, match="trained with lr=0.001"):
        train(Toy(), data, None, quiet(epochs=2, out=str(tmp_path), resume=True, lr=0.5))
    with pytest.raises(CheckpointError, match=r"trained with hidden=2 \(given 3\)"):
        train(Toy(hidden=3), data, None, quiet(epochs=2, out=str(tmp_path), resume=True))
    summary = train(Toy(), data, None, quiet(epochs=2, out=str(tmp_path), resume=True))
    assert summary.epochs == 2 and summary.steps == 4


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("grad_accum", 0, "grad_accum must be between 1 and 10000, got 0"),
        ("batch_size", 10**9, "batch_size must be between 1 and 100000, got 1000000000"),
        ("particles", 2.5, "particles must be between 1 and 10000, got 2.5"),
        ("epochs", True, "epochs must be between 0 and 100000, got True"),
        ("lr", -1.0, "lr must be between 0 and 1000, got -1.0"),
        ("lr", 0.0, "lr must be positive, got 0"),
        ("lr", math.nan, "lr must be between 0 and 1000, got nan"),
        ("grad_clip", math.inf, "grad_clip must be between 0 and 1e[+]09, got inf"),
        ("checkpoint_minutes", -1.0, "checkpoint_minutes must be between 0 and 10080"),
        ("limit_batches", 0, "limit_batches must be between 1 and 1000000000, got 0"),
        ("log_minutes", math.nan, "log_minutes must be between 0 and 10080, got nan"),
        ("optimizer", "rmsprop", "optimizer must be 'adam' or 'sgd'"),
        ("device", "gpu:0", "unknown device 'gpu:0'"),
        ("lr_decay", 0.5, "lr_decay must be between 1 and 1e[+]06, got 0.5"),
        ("resume", True, "resume needs the run directory"),
    ],
)
def test_invalid_options(option, value, message):
    with pytest.raises(ConfigError, match=message):
        train(Toy(), [], None, replace(quiet(epochs=1), **{option: value}))


def test_stray_pyro_params_are_refused():
    class Stray(Toy):
        def model(self, batch: ToyBatch, beta: float = 1.0) -> None:
            pyro.param("loose", torch.zeros(()))
            super().model(batch, beta)

    with pytest.raises(ConfigError, match="loose live in Pyro's param store but not in model"):
        train(Stray(), batches(sequences(4), 4), None, quiet(epochs=1))


# --- JIT and batching ------------------------------------------------------------------------


@pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::UserWarning")
def test_jit_objective_compiles_per_shape_and_matches_the_eager_estimator():
    pyro.set_rng_seed(0)
    module = Toy(dropout=0.0)
    data = batches(sequences(12, seed=5), 4)
    shapes = {tuple(b.x.shape) for b in data}
    assert len(shapes) > 1
    eager = Objective(module, particles=2, jit=False)
    jit = Objective(module, particles=2, jit=True)
    for b in data + data:
        jit(b, 0.5)
    assert len(jit.elbo._loss_and_surrogate_loss.compiled) == len(shapes)
    # Same estimator, different random streams: compare means over seeds (within 5 s.e.).
    values = {"eager": [], "jit": []}
    for seed in range(60):
        for kind, objective in (("eager", eager), ("jit", jit)):
            pyro.set_rng_seed(seed)
            values[kind].append(objective(data[0], 0.5)[0].item())
    e, j = torch.tensor(values["eager"]), torch.tensor(values["jit"])
    se = ((e.var() + j.var()) / len(e)).sqrt()
    assert (e.mean() - j.mean()).abs() < 5 * se


@pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::UserWarning")
def test_jit_training_runs_end_to_end():
    pyro.set_rng_seed(0)
    data = batches(sequences(16, seed=6), 8)
    summary = train(Toy(), data, data, quiet(epochs=2, lr=0.05, jit=True))
    assert summary.last_metrics["train_kl"] is None  # not observable through the trace
    assert summary.last_metrics["valid_loss_beta1"] < float("inf")


def test_sequence_batches_reshuffle_per_epoch_and_rebuild_exactly():
    pytest.importorskip("pyro_lnf.datasets.batching")
    seqs = [torch.arange(n) % 5 for n in range(2, 40)]
    config = quiet(batch_size=4, seed=3)
    source = sequence_batches(seqs, config, train=True)
    order = [torch.cat([b.indices for b in source(epoch)]).tolist() for epoch in (0, 1, 0)]
    assert order[0] == order[2] and order[0] != order[1]
    assert sorted(order[0]) == list(range(len(seqs)))
    valid = sequence_batches(seqs, replace(config, eval_batch_size=16), train=False)
    assert max(len(b) for b in valid(0)) == 16
