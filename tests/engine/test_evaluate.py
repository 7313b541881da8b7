"""Importance-sampled likelihoods against models whose marginal likelihood is known exactly."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro import poutine
from pyro.infer import Trace_ELBO

from pyro_lnf.errors import ConfigError, FolderLockedError
from pyro_lnf.evaluate import METRIC_LABELS, evaluate, importance_log_likelihood, importance_sample
from pyro_lnf.partial import PartialResults


# Tiny models: one thread (tests/conftest.py).
pytestmark = pytest.mark.usefixtures("one_thread")


@dataclass
class Batch:
    x: torch.Tensor  # (B, T), padded with zeros
    lengths: torch.Tensor  # (B,)
    mask: torch.Tensor  # (B, T) bool

    def to(self, device: str | torch.device) -> Batch:
        return Batch(self.x.to(device), self.lengths.to(device), self.mask.to(device))


def make_batch(batch_size: int, max_len: int, seed: int, *, ragged: bool = True) -> Batch:
    g = torch.Generator().manual_seed(seed)
    lengths = (
        torch.randint(1, max_len + 1, (batch_size,), generator=g)
        if ragged
        else torch.full((batch_size,), max_len)
    )
    mask = torch.arange(max_len)[None] < lengths[:, None]
    noise = torch.randn(batch_size, max_len, generator=g, dtype=torch.float64)
    return Batch(torch.where(mask, 2.0 * noise, 0.0), lengths, mask)


class LinearGaussian(torch.nn.Module):
    r"""Per step :math:`z_t \sim N(0, 1)`, :math:`x_t \mid z_t \sim N(a z_t + b, s^2)`, and a
    length :math:`T \sim \text{Categorical}(\pi)` observed in the model.

    Exact: :math:`\log p(x, T) = \log \pi_T + \sum_t \log N(x_t; b, a^2 + s^2)`; the posterior
    is :math:`N(a (x_t - b) / (a^2 + s^2),\ s^2 / (a^2 + s^2))`. The guide is that posterior
    with its mean multiplied by ``loc_factor`` and its std by ``scale_factor`` (1, 1: exact).
    """

    name = "linear_gaussian"

    def __init__(self, max_len: int, a: float = 1.5, b: float = 0.3, s: float = 0.7,
                 loc_factor: float = 1.0, scale_factor: float = 1.0) -> None:
        super().__init__()
        self.a, self.b, self.s = a, b, s
        self.loc_factor, self.scale_factor = loc_factor, scale_factor
        self.config = dict(max_len=max_len, a=a, b=b, s=s)
        probs = torch.arange(1, max_len + 2, dtype=torch.float64)
        self.register_buffer("length_probs", probs / probs.sum())

    def normalizer(self, batch: Batch) -> torch.Tensor:
        return (batch.lengths + 1).double()

    def model(self, batch: Batch, beta: float = 1.0) -> None:
        with pyro.plate("sequences", batch.x.shape[0], dim=-1):
            pyro.sample("length", dist.Categorical(self.length_probs), obs=batch.lengths)
            with poutine.scale(scale=beta):
                prior = dist.Normal(torch.zeros_like(batch.x), 1.0)
                z = pyro.sample("z", prior.mask(batch.mask).to_event(1))
            obs = dist.Normal(self.a * z + self.b, self.s).mask(batch.mask).to_event(1)
            pyro.sample("x", obs, obs=batch.x)

    def guide(self, batch: Batch, beta: float = 1.0) -> None:
        var = self.a**2 + self.s**2
        loc = self.loc_factor * self.a * (batch.x - self.b) / var
        scale = self.scale_factor * math.sqrt(self.s**2 / var)
        with pyro.plate("sequences", batch.x.shape[0], dim=-1):
            with poutine.scale(scale=beta):
                q = dist.Normal(loc, torch.full_like(loc, scale))
                pyro.sample("z", q.mask(batch.mask).to_event(1))

    def exact_log_likelihood(self, batch: Batch) -> torch.Tensor:
        loc, scale = torch.tensor([self.b, math.sqrt(self.a**2 + self.s**2)], dtype=batch.x.dtype)
        marginal = dist.Normal(loc, scale).log_prob(batch.x)
        steps = torch.where(batch.mask, marginal, 0.0).sum(-1)
        return steps + self.length_probs[batch.lengths].log()


class BernoulliMixture(torch.nn.Module):
    r"""One discrete latent per sequence: :math:`c \sim \text{Cat}(\pi)`,
    :math:`x_t \mid c \sim \text{Bernoulli}(\rho_c)`; :math:`p(x)` by enumerating :math:`c`.
    The guide is the exact posterior, or (``exact=False``) the prior."""

    def __init__(self, exact: bool) -> None:
        super().__init__()
        self.exact = exact
        self.pi = torch.tensor([0.2, 0.5, 0.3], dtype=torch.float64)
        self.rho = torch.tensor([0.1, 0.5, 0.85], dtype=torch.float64)

    def joint(self, batch: Batch) -> torch.Tensor:
        """``(B, C)``: log p(c) + log p(x | c)."""
        lp = dist.Bernoulli(self.rho[:, None, None]).log_prob(batch.x)  # (C, B, T)
        return (self.pi.log()[:, None] + torch.where(batch.mask, lp, 0.0).sum(-1)).T

    def model(self, batch: Batch, beta: float = 1.0) -> None:
        with pyro.plate("sequences", batch.x.shape[0], dim=-1):
            c = pyro.sample("c", dist.Categorical(self.pi))
            obs = dist.Bernoulli(self.rho[c].unsqueeze(-1).expand(c.shape + batch.x.shape[-1:]))
            pyro.sample("x", obs.mask(batch.mask).to_event(1), obs=batch.x)

    def guide(self, batch: Batch, beta: float = 1.0) -> None:
        logits = self.joint(batch) if self.exact else self.pi.log().expand(batch.x.shape[0], -1)
        with pyro.plate("sequences", batch.x.shape[0], dim=-1):
            pyro.sample("c", dist.Categorical(logits=logits))


def binary_batch(batch_size: int, max_len: int, seed: int) -> Batch:
    base = make_batch(batch_size, max_len, seed)
    g = torch.Generator().manual_seed(seed + 1)
    x = (torch.rand(batch_size, max_len, generator=g, dtype=torch.float64) < 0.6).double()
    return Batch(torch.where(base.mask, x, 0.0), base.lengths, base.mask)


def test_exact_posterior_gives_the_exact_likelihood_for_every_k():
    model, batch = LinearGaussian(max_len=6), make_batch(8, 6, seed=1)
    exact = model.exact_log_likelihood(batch)
    for k in (1, 7):
        est = importance_log_likelihood(model.model, model.guide, batch, 1.0, num_samples=k)
        assert est.shape == (8,)
        torch.testing.assert_close(est, exact, rtol=0, atol=1e-10)


def test_exact_posterior_discrete_latent():
    model, batch = BernoulliMixture(exact=True), binary_batch(6, 5, seed=2)
    exact = torch.logsumexp(model.joint(batch), -1)
    est = importance_log_likelihood(model.model, model.guide, batch, num_samples=5)
    torch.testing.assert_close(est, exact, rtol=0, atol=1e-10)


def test_estimate_tightens_with_k_and_converges_to_the_exact_value():
    # A guide too narrow and off-centre, over 256 sequences: K = 1 is ~0.6 nats per sequence
    # below log p(x); the per-sequence log-mean-exp closes the gap to ~0.02 by K = 1000
    # (seeds 3-6 all give 0.001-0.024). A batch-joint weight would barely move.
    model = LinearGaussian(max_len=6, loc_factor=0.8, scale_factor=0.8)
    batch = make_batch(256, 6, seed=3)
    exact = model.exact_log_likelihood(batch)
    gaps = []
    for k in (1, 10, 100, 1000):
        est = importance_log_likelihood(model.model, model.guide, batch, 1.0, num_samples=k,
                                        chunk_size=250)
        gaps.append((exact - est).mean().item())
    assert gaps[0] > gaps[1] > gaps[2] > gaps[3], gaps
    assert gaps[0] > 0.3 and -0.01 < gaps[3] < 0.05, gaps


def test_discrete_latent_converges_with_the_prior_as_proposal():
    model, batch = BernoulliMixture(exact=False), binary_batch(32, 6, seed=4)
    exact = torch.logsumexp(model.joint(batch), -1)
    est = importance_log_likelihood(model.model, model.guide, batch, num_samples=2000,
                                    chunk_size=500)
    assert (est - exact).abs().max() < 0.05
    assert abs((est - exact).mean()) < 0.01


def test_chunking_matches_one_chunk_under_the_same_seed():
    # 4 sequences x 4 steps = 16 normal draws per sample: every chunk draws a whole number of
    # torch's 16-wide blocks, so the same seed gives the same samples however they are chunked.
    model = LinearGaussian(max_len=4, loc_factor=0.5, scale_factor=1.3)
    batch = make_batch(4, 4, seed=5, ragged=False)
    results = []
    for chunk in (None, 64, 16, 10, 1):
        pyro.set_rng_seed(11)
        results.append(importance_sample(model.model, model.guide, batch, 1.0, num_samples=64,
                                         chunk_size=chunk))
    for other in results[1:]:
        torch.testing.assert_close(other.log_likelihood, results[0].log_likelihood,
                                   rtol=0, atol=1e-12)
        torch.testing.assert_close(other.elbo, results[0].elbo, rtol=0, atol=1e-12)
    pyro.set_rng_seed(12)
    different = importance_log_likelihood(model.model, model.guide, batch, 1.0, num_samples=64)
    assert not torch.allclose(different, results[0].log_likelihood)


def test_one_sample_equals_the_elbo_sample():
    model = LinearGaussian(max_len=5, loc_factor=0.8, scale_factor=1.2)
    batch = make_batch(16, 5, seed=6)
    pyro.set_rng_seed(7)
    est = importance_sample(model.model, model.guide, batch, 1.0, num_samples=1)
    pyro.set_rng_seed(7)
    elbo = -Trace_ELBO(max_plate_nesting=1).loss(model.model, model.guide, batch, 1.0)
    assert est.log_likelihood.sum().item() == pytest.approx(elbo, abs=1e-9)
    torch.testing.assert_close(est.elbo, est.log_likelihood, rtol=0, atol=1e-12)
    torch.testing.assert_close(est.elbo, -(est.reconstruction + est.kl), rtol=0, atol=1e-12)


def test_elbo_parts_match_their_closed_forms():
    # Exact guide: every log w = log p(x); E_q[log q - log p(z)] is a Gaussian KL per step.
    model, batch = LinearGaussian(max_len=6), make_batch(16, 6, seed=8)
    est = importance_sample(model.model, model.guide, batch, 1.0, num_samples=4000,
                            chunk_size=1000)
    exact = model.exact_log_likelihood(batch)
    torch.testing.assert_close(est.elbo, exact, rtol=0, atol=1e-9)
    var = model.a**2 + model.s**2
    m, v = model.a * (batch.x - model.b) / var, model.s**2 / var
    kl_steps = 0.5 * (v + m**2 - 1.0 - math.log(v))
    kl = torch.where(batch.mask, kl_steps, 0.0).sum(-1)
    # Monte Carlo over 4000 samples: sd of the per-step log-ratio is O(1), so 0.1 is > 5 sd.
    assert (est.kl - kl).abs().max() < 0.1
    torch.testing.assert_close(est.reconstruction, -exact - est.kl, rtol=0, atol=1e-9)


def test_evaluate_uses_the_papers_accounting():
    model = LinearGaussian(max_len=6)
    batches = [make_batch(5, 6, seed=9), make_batch(3, 6, seed=10)]
    exact = sum(model.exact_log_likelihood(b).sum().item() for b in batches)
    units = sum((b.lengths + 1).sum().item() for b in batches)
    frames = sum(b.lengths.sum().item() for b in batches)
    metrics = evaluate(model, batches, num_samples=3)
    assert set(metrics) == set(METRIC_LABELS)
    assert metrics["sequences"] == 8 and metrics["units"] == units and metrics["frames"] == frames
    assert metrics["nll_nats_per_unit"] == pytest.approx(-exact / units, abs=1e-10)
    assert metrics["nll_nats_per_frame"] == pytest.approx(-exact / frames, abs=1e-10)
    assert metrics["nll_bits_per_unit"] == pytest.approx(-exact / units / math.log(2), abs=1e-10)
    assert metrics["nll_bits_per_frame"] == pytest.approx(-exact / frames / math.log(2), abs=1e-10)
    # With the exact posterior the ELBO is tight as well.
    assert metrics["elbo_loss_nats_per_unit"] == pytest.approx(-exact / units, abs=1e-10)
    assert metrics["elbo_loss_nats_per_unit"] == pytest.approx(
        metrics["reconstruction_nats_per_unit"] + metrics["kl_nats_per_unit"], abs=1e-10
    )
    assert metrics["kl_nats_per_unit"] > 0


def test_length_site_cost_is_counted():
    model, batch = LinearGaussian(max_len=6), make_batch(4, 6, seed=13)
    pyro.set_rng_seed(1)
    with_length = importance_log_likelihood(model.model, model.guide, batch, 1.0, num_samples=2)
    probs = model.length_probs.clone()
    model.length_probs.fill_(1.0 / 7)  # a uniform p(T) instead: only the length term moves
    pyro.set_rng_seed(1)
    uniform = importance_log_likelihood(model.model, model.guide, batch, 1.0, num_samples=2)
    torch.testing.assert_close(uniform - with_length, math.log(1 / 7) - probs[batch.lengths].log())


def test_evaluate_restores_training_mode_and_rejects_empty_input():
    model = LinearGaussian(max_len=3)
    model.train()
    evaluate(model, [make_batch(2, 3, seed=0)], num_samples=1)
    assert model.training
    with pytest.raises(ConfigError, match="no sequences"):
        evaluate(model, [], num_samples=1)


def test_unguided_latent_is_refused():
    def model(batch):
        with pyro.plate("sequences", 2, dim=-1):
            pyro.sample("u", dist.Normal(0.0, 1.0))

    with pytest.raises(ValueError, match="'u' is neither observed nor sampled by the guide"):
        importance_log_likelihood(model, lambda batch: None, None, num_samples=2)


# --- resumable evaluation (pyro_lnf.partial) -------------------------------------------------

PARTIAL_BATCHES = [make_batch(n, 6, seed=20 + n) for n in (3, 5, 2, 4, 3)]
PARTIAL_SIZES = [b.x.shape[0] for b in PARTIAL_BATCHES]
HEADER = {"checkpoint_sha256": "ab" * 32, "num_samples": 5, "seed": 3}


class Stop(Exception):
    """Stands for a kill: raised once batch ``after`` is kept."""


def _evaluate(partial: PartialResults | None = None, **options) -> dict:
    model = LinearGaussian(max_len=6, loc_factor=0.7, scale_factor=1.3)  # an inexact guide
    kept = {} if partial is None else dict(done=partial.done, on_batch=partial.append)
    kept.update(options)
    return evaluate(model, PARTIAL_BATCHES, num_samples=5, chunk_size=2, seed=3,
                    per_sequence=True, **kept)


def _interrupted(path, after: int) -> None:
    """An evaluation into ``path`` stopped once batch ``after`` is kept."""
    with PartialResults(path, HEADER, PARTIAL_SIZES) as partial:
        def keep_then_stop(result):
            partial.append(result)
            if result.index == after:
                raise Stop

        with pytest.raises(Stop):
            _evaluate(on_batch=keep_then_stop)


@pytest.mark.parametrize("after", [0, 2, 4])
def test_a_resumed_evaluation_equals_an_uninterrupted_one(tmp_path, after):
    straight = _evaluate()
    path = tmp_path / "partial.jsonl"
    _interrupted(path, after)
    computed = []
    with PartialResults(path, HEADER, PARTIAL_SIZES) as partial:
        assert sorted(partial.done) == list(range(after + 1))
        keep = partial.append
        resumed = _evaluate(partial, on_batch=lambda r: (computed.append(r.index), keep(r)))
    assert computed == list(range(after + 1, len(PARTIAL_BATCHES)))
    assert resumed == straight  # every float the very same, per sequence too
    with PartialResults(path, HEADER, PARTIAL_SIZES) as partial:  # all kept: nothing to compute
        assert _evaluate(partial, on_batch=lambda r: pytest.fail("recomputed")) == straight


def test_a_torn_last_line_is_dropped_and_the_batch_computed_again(tmp_path):
    straight = _evaluate()
    path = tmp_path / "partial.jsonl"
    _interrupted(path, 1)
    with open(path, "ab") as f:
        f.write(b'{"batch": 2, "sums": [1.5, -0.2')  # killed mid-write
    with PartialResults(path, HEADER, PARTIAL_SIZES) as partial:
        assert sorted(partial.done) == [0, 1]
        assert _evaluate(partial) == straight
    lines = path.read_text().splitlines()
    assert len(lines) == 1 + len(PARTIAL_BATCHES) and all(json.loads(x) for x in lines)


def test_another_evaluations_file_is_refused_naming_what_differs(tmp_path):
    path = tmp_path / "partial.jsonl"
    _interrupted(path, 0)
    before = path.read_bytes()
    with pytest.raises(ConfigError) as refused:
        with PartialResults(path, {**HEADER, "num_samples": 10}, PARTIAL_SIZES):
            pass
    assert "holds results of another evaluation: num_samples 5 (now 10);" in str(refused.value)
    assert path.read_bytes() == before


def test_a_second_writer_is_refused(tmp_path):
    path = tmp_path / "partial.jsonl"
    with PartialResults(path, HEADER, PARTIAL_SIZES):
        with pytest.raises(FolderLockedError, match="in use by another lnf evaluate"):
            with PartialResults(path, HEADER, PARTIAL_SIZES):
                pass


def _header_line() -> bytes:
    return (json.dumps({"format": "lnf-evaluate-partial/1", **HEADER}) + "\n").encode()


def _batch_line(**changes) -> bytes:
    line = {"batch": 0, "sums": [0.5] * 6, "log_likelihood": [-1.0] * 3, **changes}
    return (json.dumps(line) + "\n").encode()


@pytest.mark.parametrize("content, message", [
    (b"\x89PNG\r\n\x1a\n\x00\x00", "line 1: not a JSON object"),
    (b"no newline at all", "no complete first line"),
    (b'{"format": "something else"}\n', "does not start with an lnf evaluate --partial header"),
    (b"[" * 5000 + b"\n", "line 1: not a JSON object"),
    (_header_line() + b"[1, 2]\n", "line 2: not a JSON object"),
    (_header_line() + b"\xff\xfe\n", "line 2: not a JSON object"),
    (_header_line() + _batch_line(batch="0"), "line 2: batch must be an index below 5"),
    (_header_line() + _batch_line(batch=True), "line 2: batch must be an index below 5"),
    (_header_line() + _batch_line(batch=5), "line 2: batch must be an index below 5"),
    (_header_line() + _batch_line(batch=10**400), "line 2: batch must be an index below 5"),
    (_header_line() + _batch_line(extra=1), "expected the keys batch, sums, log_likelihood"),
    (_header_line() + _batch_line(sums=[0.5] * 5), "line 2: sums must be 6 numbers"),
    (_header_line() + _batch_line(sums=["0.5"] * 6), "line 2: sums must be 6 numbers"),
    (_header_line() + _batch_line(log_likelihood=[-1.0] * 4),
     "log_likelihood must be 3 numbers, one per sequence of batch 0"),
    (_header_line() + _batch_line(log_likelihood=[-1] * 3), "log_likelihood must be 3 numbers"),
    (_header_line() + _batch_line() + _batch_line(), "line 3: batch 0 appears twice"),
    (_header_line() + b"{}\n" * 100_000, "more than this evaluation can write"),
])
def test_a_hostile_or_corrupt_file_is_one_line_and_left_as_it_was(tmp_path, content, message):
    path = tmp_path / "partial.jsonl"
    path.write_bytes(content)
    with pytest.raises(ConfigError) as refused:
        with PartialResults(path, HEADER, PARTIAL_SIZES):
            pass
    assert message in str(refused.value) and "\n" not in str(refused.value)
    assert path.read_bytes() == content
