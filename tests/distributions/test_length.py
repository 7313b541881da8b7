"""p(T): the smoothed length distribution."""

from __future__ import annotations

import io
import math

import pyro
import pyro.distributions as dist
import pytest
import torch

from pyro_lnf.distributions.length import LengthDistribution
from pyro_lnf.errors import DatasetError


def _fit(lengths, **kw) -> LengthDistribution:
    return LengthDistribution.from_lengths(torch.as_tensor(lengths), dtype=torch.float64, **kw)


def test_known_answer_small_table() -> None:
    # lengths 2, 2, 3: M = 3, L = max(M + 1, ceil(1.25 M)) = 4, N + alpha (L + 1) = 3 + 5 = 8
    p = _fit([2, 2, 3])
    assert p.table_size == 4
    expected = torch.tensor([1, 3, 2, 1], dtype=torch.float64) / 8
    assert torch.allclose(p.log_prob(torch.arange(1, 5)).exp(), expected, rtol=0, atol=1e-15)
    # tail: mass m = 1/8 spread geometrically with q = L / (L + 1) = 4/5
    tail = p.log_prob(torch.tensor([5, 6, 7])).exp()
    assert torch.allclose(tail, torch.tensor([1 / 8 * 1 / 5, 1 / 8 * 1 / 5 * 4 / 5, 1 / 8 * 1 / 5 * (4 / 5) ** 2], dtype=torch.float64))


def test_sums_to_one() -> None:
    lengths = torch.randint(20, 400, (500,))
    p = _fit(lengths, alpha=0.5)
    size = p.table_size
    assert size == math.ceil(1.25 * int(lengths.max()))
    # Numerically over a long range: the tail beyond 40 L holds q^(39 L) < e^-39 of m.
    t = torch.arange(1, 40 * size + 1)
    assert abs(float(p.log_prob(t).exp().sum()) - 1) < 1e-6
    # Exactly, up to K = 2 L, plus the analytic remainder m q^(K - L).
    k = 2 * size
    head = float(p.log_prob(torch.arange(1, k + 1)).exp().sum())
    remainder = math.exp(float(p.tail_log_mass) + (k - size) * float(p.tail_log_ratio))
    assert abs(head + remainder - 1) < 1e-12


def test_unseen_and_too_long_lengths_have_finite_cost() -> None:
    p = _fit([10, 12, 12, 30])
    assert p.table_size == 38  # ceil(1.25 * 30)
    values = torch.tensor([1, 11, 31, 38, 39, 40, 100, 10_000])  # unseen in the table, then beyond
    lp = p.log_prob(values)
    assert torch.isfinite(lp).all()
    # Seen lengths cost less than unseen ones; unseen ones in the table share the floor.
    assert p.log_prob(torch.tensor(12)) > p.log_prob(torch.tensor(10)) > p.log_prob(torch.tensor(11))
    assert lp[0] == lp[1] == lp[2] == lp[3]
    assert (lp[3:].diff() < 0).all()  # the tail keeps decreasing
    # The tail's first step sits below the smoothing floor of the table.
    assert p.log_prob(torch.tensor(p.table_size + 1)) < p.log_prob(torch.tensor(11))


def test_outside_support() -> None:
    p = _fit([3, 4])
    with pytest.raises(ValueError, match="support"):
        p.log_prob(torch.tensor(0))
    q = LengthDistribution(p.log_probs_table, p.tail_log_mass, p.tail_log_ratio, validate_args=False)
    assert q.log_prob(torch.tensor([0, -3])).eq(-math.inf).all()


def test_sample_matches_probabilities() -> None:
    torch.manual_seed(0)
    p = _fit([1, 2, 2, 3, 3, 3, 6], alpha=0.5)
    n = 400_000
    s = p.sample((n,))
    assert s.dtype == torch.int64 and int(s.min()) >= 1
    # Table entries one by one, the tail in two bins; z-scores of the frequencies.
    size = p.table_size
    bins = [torch.tensor([t]) for t in range(1, size + 1)]
    edges = size + 1 + 3 * size  # splits the tail near the middle of its mass
    probs = [p.log_prob(b).exp().item() for b in bins]
    near = float(p.log_prob(torch.arange(size + 1, edges)).exp().sum())
    far = 1 - sum(probs) - near
    observed = [(s == b).sum().item() for b in bins]
    observed += [((s > size) & (s < edges)).sum().item(), (s >= edges).sum().item()]
    for obs, prob in zip(observed, probs + [near, far]):
        assert abs(obs / n - prob) < 5 * math.sqrt(prob * (1 - prob) / n)
    chi2 = sum((o - n * q) ** 2 / (n * q) for o, q in zip(observed, probs + [near, far]))
    assert chi2 < 35  # df = 9; P(chi2 > 35) < 1e-4


def test_shapes_expand_and_pyro_site() -> None:
    p = _fit([4, 5, 9])
    assert p.sample().shape == () and p.sample((3, 2)).shape == (3, 2)
    e = p.expand((5,))
    assert e.batch_shape == (5,) and e.sample().shape == (5,) and e.sample((2,)).shape == (2, 5)
    assert e.log_prob(torch.tensor(4)).shape == (5,)
    assert isinstance(p, dist.TorchDistribution)

    obs = torch.tensor([4, 5, 40])

    def model() -> None:
        with pyro.plate("sequences", 3):
            pyro.sample("length", p, obs=obs)

    trace = pyro.poutine.trace(model).get_trace()
    trace.compute_log_prob()
    assert torch.allclose(trace.nodes["length"]["log_prob"], p.log_prob(obs))


def test_state_dict_round_trip_and_to() -> None:
    p = _fit(torch.randint(1, 60, (200,)))
    buf = io.BytesIO()
    torch.save(p.state_dict(), buf)
    buf.seek(0)
    q = LengthDistribution.from_state_dict(torch.load(buf, weights_only=True))
    t = torch.arange(1, 200)
    assert torch.equal(p.log_prob(t), q.log_prob(t))
    f = p.to(dtype=torch.float32)
    assert f.log_probs_table.dtype == torch.float32 and f.log_prob(t).dtype == torch.float32
    assert torch.allclose(f.log_prob(t).double(), p.log_prob(t), atol=1e-5)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda() -> None:
    p = _fit([3, 4, 4]).to("cuda")
    assert p.sample((4,)).device.type == "cuda"
    assert p.log_prob(torch.tensor([3, 100], device="cuda")).isfinite().all()


def test_bad_lengths() -> None:
    with pytest.raises(DatasetError, match="empty"):
        LengthDistribution.from_lengths(torch.tensor([], dtype=torch.long))
    with pytest.raises(DatasetError, match="positive"):
        LengthDistribution.from_lengths(torch.tensor([0, 3]))
    with pytest.raises(ValueError, match="sum to 1"):
        LengthDistribution(torch.tensor([0.5, 0.5]).log(), torch.tensor(-1.0), torch.tensor(-0.1))


def test_dataset_fits_training_lengths_only(data_dir) -> None:
    from pyro_lnf.datasets import load_dataset

    ds = load_dataset("jsb_chorales", data_dir=data_dir)
    p = ds.length_distribution(dtype=torch.float64)
    train = ds.lengths("train")
    assert p.table_size == math.ceil(1.25 * int(train.max()))  # 129 -> 162, not from test's 160
    counts = torch.bincount(train - 1, minlength=p.table_size).double()
    assert torch.allclose(p.log_probs_table.exp(), (counts + 1) / (len(train) + p.table_size + 1))
    assert torch.isfinite(p.log_prob(ds.lengths("test"))).all()
