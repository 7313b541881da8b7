"""Tests of the log Bessel function, the von Mises–Fisher distribution and its uniform prior.

References used here are independent of the code under test: power series summed in log space or in
60-digit decimal arithmetic, closed forms for half-integer orders and d = 3, quadrature over the
sphere, and Monte Carlo with standard errors computed from the samples.
"""

from __future__ import annotations

import math
from decimal import Decimal, localcontext

import numpy as np
import pyro
from pyro.distributions.kl import kl_divergence as pyro_kl_divergence
import pytest
import torch
import torch.nn.functional as F
from pyro.infer import TraceMeanField_ELBO
from torch.distributions import kl_divergence

from pyro_lnf.distributions.bessel import bessel_iv_ratio, log_bessel_iv
from pyro_lnf.distributions.vmf import (
    HypersphericalUniform,
    VonMisesFisher,
    log_sphere_area,
    vmf_log_normalizer,
    vmf_mean_resultant_length,
)
from pyro_lnf.errors import ConfigError

f64 = torch.float64


# ----------------------------------------------------------------------------------------------
# references


def log_iv_series(v: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``log I_v(x)`` from the defining power series, summed with log-sum-exp in float64."""
    v, x = torch.broadcast_tensors(v.to(f64), x.to(f64))
    xmax = float(x.max())
    k = torch.arange(int(xmax / 2 + 40 * math.sqrt(xmax) + 200), dtype=f64)
    terms = (
        (2 * k + v[..., None]) * torch.log(x[..., None] / 2)
        - torch.lgamma(k + 1)
        - torch.lgamma(k + v[..., None] + 1)
    )
    total = torch.logsumexp(terms, dim=-1)
    # The series must have converged: its last term is negligible.
    assert (terms[..., -1] - total).max() < -50
    return total


def log_iv_decimal(n: int, x: float, digits: int = 60) -> float:
    """``log I_n(x)``, integer order ``n``, from the power series in ``digits``-digit decimals."""
    with localcontext() as ctx:
        ctx.prec = digits
        half_x = Decimal(x) / 2
        term = half_x**n / math.factorial(n)
        total, k = Decimal(0), 0
        tiny = Decimal(10) ** (-digits)
        while True:
            total += term
            k += 1
            term = term * half_x * half_x / (k * (k + n))
            if k > half_x and term < total * tiny:
                return float(total.ln())


def log_sinh(x: torch.Tensor) -> torch.Tensor:
    """``log sinh x`` without overflow."""
    return x + torch.log1p(-torch.exp(-2 * x)) - math.log(2)


ORDERS = [0.0, 0.5, 1.0, 2.5, 7.3, 29.5, 30.0, 49.0, 75.5, 100.0, 149.0, 150.0, 200.0]
ARGS = [1e-3, 0.1, 1.0, 10.0, 30.0, 100.0, 500.0, 1000.0, 2000.0]


# ----------------------------------------------------------------------------------------------
# log Bessel


def test_log_bessel_matches_log_space_series():
    v = torch.tensor(ORDERS, dtype=f64)[:, None]
    x = torch.tensor(ARGS, dtype=f64)[None, :]
    got = log_bessel_iv(v, x)
    want = log_iv_series(v, x)
    # An absolute error in log I is the relative error in I.
    assert (got - want).abs().max() < 1e-10


@pytest.mark.parametrize(
    "n, x",
    [(150, 500.0), (0, 1e-3), (100, 1e-3), (1, 2000.0), (200, 1000.0), (29, 31.0), (30, 2.0)],
)
def test_log_bessel_matches_high_precision(n: int, x: float):
    got = log_bessel_iv(float(n), torch.tensor(x, dtype=f64)).item()
    assert got == pytest.approx(log_iv_decimal(n, x), rel=1e-13, abs=1e-12)


def test_log_bessel_half_integer_closed_forms():
    x = torch.logspace(-3, math.log10(2000), 60, dtype=f64)
    # I_{1/2}(x) = √(2/(πx)) sinh x
    want = 0.5 * torch.log(2 / (math.pi * x)) + log_sinh(x)
    assert (log_bessel_iv(0.5, x) - want).abs().max() < 1e-12
    # I_{3/2}(x) = √(2/(πx)) (cosh x − sinh x / x); the difference cancels below x ≈ 0.1.
    x = x[x > 0.1]
    bracket = torch.log1p(-1 / x + torch.exp(-2 * x) * (1 + 1 / x))
    want = 0.5 * torch.log(2 / (math.pi * x)) + x - math.log(2) + bracket
    assert (log_bessel_iv(1.5, x) - want).abs().max() < 1e-12
    # A_3(κ) = I_{3/2}/I_{1/2} = coth κ − 1/κ
    assert torch.allclose(bessel_iv_ratio(0.5, x), 1 / torch.tanh(x) - 1 / x, rtol=1e-12, atol=0)


def test_bessel_ratio_matches_series():
    v = torch.tensor(ORDERS, dtype=f64)[:, None]
    x = torch.tensor(ARGS, dtype=f64)[None, :]
    want = torch.exp(log_iv_series(v + 1, x) - log_iv_series(v, x))
    assert torch.allclose(bessel_iv_ratio(v, x), want, rtol=1e-10, atol=0)


def test_log_bessel_gradient_in_x():
    # d/dx log I_v(x) = I_{v+1}(x)/I_v(x) + v/x  (DLMF 10.29.2)
    v = torch.tensor(ORDERS, dtype=f64)[:, None]
    x = torch.tensor(ARGS, dtype=f64)[None, :].expand(len(ORDERS), -1).clone().requires_grad_()
    (grad,) = torch.autograd.grad(log_bessel_iv(v, x).sum(), x)
    xd = x.detach()
    want = torch.exp(log_iv_series(v + 1, xd) - log_iv_series(v, xd)) + v / xd
    assert torch.allclose(grad, want, rtol=1e-9, atol=0)


def test_bessel_gradcheck():
    """Both outputs against finite differences, to second order, small and large arguments."""
    x = torch.tensor([1e-3, 0.7, 12.0, 300.0], dtype=f64, requires_grad=True)
    for v in (0.0, 149.0):
        assert torch.autograd.gradcheck(lambda t: log_bessel_iv(v, t), (x,))
        assert torch.autograd.gradgradcheck(lambda t: log_bessel_iv(v, t), (x,))
        assert torch.autograd.gradcheck(lambda t: bessel_iv_ratio(v, t), (x,))


def test_log_bessel_float32_keeps_dtype_and_precision():
    x = torch.tensor(ARGS, dtype=torch.float32)
    got = log_bessel_iv(150.0, x)
    assert got.dtype == torch.float32
    want = log_iv_series(torch.tensor(150.0), x)
    assert torch.allclose(got.double(), want, rtol=1e-6, atol=1e-4)


def test_log_bessel_rejects_negative_order():
    with pytest.raises(ConfigError, match="order v must be >= 0"):
        log_bessel_iv(-0.5, torch.tensor(1.0))


# ----------------------------------------------------------------------------------------------
# vMF: normaliser and density


def test_sphere_area_recurrence():
    # |S^1| = 2π, |S^2| = 4π and |S^{d+1}| = 2π/d · |S^{d−1}|
    area = {2: 2 * math.pi, 3: 4 * math.pi}
    for d in range(2, 300):
        area[d + 2] = 2 * math.pi / d * area[d]
    for d in (2, 3, 4, 10, 50):
        assert log_sphere_area(d) == pytest.approx(math.log(area[d]), rel=1e-14)


@pytest.mark.parametrize("kappa", [1e-3, 0.5, 1.0, 50.0, 500.0, 1e4])
def test_log_prob_d3_closed_form(kappa: float):
    loc = F.normalize(torch.randn(3, dtype=f64), dim=-1)
    x = F.normalize(torch.randn(100, 3, dtype=f64), dim=-1)
    k = torch.tensor(kappa, dtype=f64)
    want = torch.log(k) - math.log(4 * math.pi) - log_sinh(k) + k * (x @ loc)
    got = VonMisesFisher(loc, k).log_prob(x)
    assert torch.allclose(got, want, rtol=1e-13, atol=1e-11)


def test_log_prob_d3_integrates_to_one():
    """Gauss–Legendre in cos θ × periodic trapezoid in φ over the whole sphere, μ off-axis."""
    loc = F.normalize(torch.tensor([0.3, -0.5, 0.8], dtype=f64), dim=-1)
    nodes, weights = (torch.tensor(a, dtype=f64) for a in np.polynomial.legendre.leggauss(200))
    n_phi = 400
    phi = torch.arange(n_phi, dtype=f64) * (2 * math.pi / n_phi)
    s = torch.sqrt(1 - nodes**2)[:, None]
    x = torch.stack(
        [nodes[:, None].expand(-1, n_phi), s * torch.cos(phi), s * torch.sin(phi)], dim=-1
    )
    for kappa in (0.01, 1.0, 10.0, 50.0, 200.0):
        density = VonMisesFisher(loc, torch.tensor(kappa, dtype=f64)).log_prob(x).exp()
        total = (weights[:, None] * density).sum() * (2 * math.pi / n_phi)
        assert total.item() == pytest.approx(1.0, abs=1e-10), kappa


@pytest.mark.parametrize("dim", [2, 5, 50, 300])
def test_normalizer_integrates_to_one_any_dim(dim: int):
    """∫ p dσ = C_d(κ) |S^{d−2}| ∫₀^π e^{κ cos θ} sin^{d−2}θ dθ = 1 (composite Gauss–Legendre)."""
    nodes, weights = (torch.tensor(a, dtype=f64) for a in np.polynomial.legendre.leggauss(16))
    edges = torch.linspace(0, math.pi, 801, dtype=f64)
    half = (edges[1:] - edges[:-1])[:, None] / 2
    theta = ((edges[:-1] + edges[1:])[:, None] / 2 + half * nodes).reshape(-1)
    log_w = torch.log(half * weights).reshape(-1)
    kappa = torch.tensor([0.01, 1.0, 50.0, 500.0, 5000.0], dtype=f64)[:, None]
    sin_power = torch.xlogy(torch.tensor(dim - 2.0), torch.sin(theta))  # 0·log 0 = 0 at d = 2
    log_integrand = kappa * torch.cos(theta) + sin_power
    log_total = (
        vmf_log_normalizer(dim, kappa[:, 0])
        + log_sphere_area(dim - 1)
        + torch.logsumexp(log_integrand + log_w, dim=-1)
    )
    assert log_total.abs().max() < 1e-10


# ----------------------------------------------------------------------------------------------
# vMF: sampling


@pytest.mark.parametrize("dtype, tol", [(torch.float32, 1e-6), (f64, 1e-12)])
def test_samples_lie_on_sphere(dtype: torch.dtype, tol: float):
    for dim in (2, 3, 50, 300):
        loc = F.normalize(torch.randn(4, dim, dtype=dtype), dim=-1)
        kappa = torch.tensor([1.0, 50.0, 500.0, 1e5], dtype=dtype)
        z = VonMisesFisher(loc, kappa).rsample((200,))
        assert z.dtype == dtype and z.shape == (200, 4, dim)
        assert (z.norm(dim=-1) - 1).abs().max() < tol


@pytest.mark.parametrize("dim", [3, 50, 300])
@pytest.mark.parametrize("kappa", [1.0, 50.0, 500.0])
def test_mean_resultant_length(dim: int, kappa: float):
    """‖z̄‖ estimates A_d(κ): checked along μ and as the whole resultant length.

    ``‖z̄‖²`` is biased upwards by ``(1 − A²)/N`` (the noise in the d − 1 directions ⊥ μ), which
    dominates at d = 300, κ = 1. The U-statistic ``(N‖z̄‖² − 1)/(N − 1)`` is unbiased for A², with
    variance ≈ 4 z̄ᵀΣz̄/N + 2 Var(z₁ᵀz₂)/N².
    """
    n = 10_000
    loc = F.normalize(torch.randn(dim, dtype=f64), dim=-1)
    k = torch.tensor(kappa, dtype=f64)
    z = VonMisesFisher(loc, k).sample((n,))
    a = vmf_mean_resultant_length(dim, k).item()

    along = z @ loc
    assert abs(along.mean().item() - a) < 4 * along.std().item() / math.sqrt(n)

    zbar = z.mean(0)
    r2 = (n * zbar.dot(zbar) - 1) / (n - 1)
    second = z.T @ z / n
    cov = second - torch.outer(zbar, zbar)
    var = 4 * (zbar @ cov @ zbar) / n + 2 * ((second * second).sum() - zbar.dot(zbar) ** 2) / n**2
    assert abs(r2.item() - a * a) < 4 * math.sqrt(var.item())


@pytest.mark.parametrize("dim", [2, 3, 50, 300])
@pytest.mark.parametrize("kappa", [1.0, 50.0, 500.0])
def test_cosine_distribution_kolmogorov_smirnov(dim: int, kappa: float):
    """The angle θ between z and μ has density ∝ e^{κ(cos θ − 1)} sin^{d−2}θ on [0, π]."""
    n = 4000
    loc = F.normalize(torch.randn(dim, dtype=f64), dim=-1)
    z = VonMisesFisher(loc, torch.tensor(kappa, dtype=f64)).sample((n,))
    theta = 2 * torch.asin((z - loc).norm(dim=-1) / 2)  # accurate near θ = 0, unlike acos

    grid = torch.linspace(0, math.pi, 200_001, dtype=f64)
    log_f = kappa * (torch.cos(grid) - 1) + torch.xlogy(torch.tensor(dim - 2.0), torch.sin(grid))
    cdf = torch.cumulative_trapezoid(torch.exp(log_f - log_f.max()), grid)
    cdf = torch.cat([cdf.new_zeros(1), cdf / cdf[-1]])
    at = torch.from_numpy(np.interp(theta.sort().values.numpy(), grid.numpy(), cdf.numpy()))
    i = torch.arange(1, n + 1, dtype=f64)
    ks = torch.maximum(i / n - at, at - (i - 1) / n).max().item()
    assert ks < 1.95 / math.sqrt(n)  # the 0.1% critical value


def test_mean_and_second_moment():
    """E[z] = A μ and E[zzᵀ] = (A/κ) I + (1 − dA/κ) μμᵀ, entrywise within 4 standard errors."""
    n, dim = 40_000, 5
    loc = F.normalize(torch.tensor([0.5, -1.0, 0.2, 0.7, 0.1], dtype=f64), dim=-1)
    kappa = torch.tensor(4.0, dtype=f64)
    q = VonMisesFisher(loc, kappa)
    z = q.sample((n,))
    a = vmf_mean_resultant_length(dim, kappa)
    se = z.std(0) / math.sqrt(n)
    assert ((z.mean(0) - q.mean).abs() < 4 * se).all()
    assert torch.allclose(q.mean, a * loc)
    outer = z[:, :, None] * z[:, None, :]
    want = (a / kappa) * torch.eye(dim, dtype=f64) + (1 - dim * a / kappa) * torch.outer(loc, loc)
    assert ((outer.mean(0) - want).abs() < 4 * outer.std(0) / math.sqrt(n)).all()


def test_large_concentration_float32():
    n = 20_000
    loc = F.normalize(torch.tensor([1.0, 1.0, 1.0]), dim=-1)
    kappa = torch.tensor(1e6)
    z = VonMisesFisher(loc, kappa).sample((n,))
    assert (z.norm(dim=-1) - 1).abs().max() < 1e-6
    # 1 − w is Gamma(1, 1/κ) distributed to O(1/κ²) for d = 3: mean 1/κ, sd 1/κ.
    one_minus_w = (z - loc).pow(2).sum(-1).double() / 2
    assert abs(one_minus_w.mean().item() * 1e6 - 1) < 4 / math.sqrt(n) + 1e-3


# ----------------------------------------------------------------------------------------------
# vMF: gradients with respect to the direction


def _objective(z: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return z @ a + (z @ b) ** 2


def _exact_expectation(h: torch.Tensor, kappa: torch.Tensor, a: torch.Tensor, b: torch.Tensor):
    """E[aᵀz + (bᵀz)²] under vMF(h/‖h‖, κ), from E[z] and E[zzᵀ]."""
    mu = F.normalize(h, dim=-1)
    dim = h.shape[-1]
    mean_length = vmf_mean_resultant_length(dim, kappa)
    return (
        mean_length * (a @ mu)
        + (mean_length / kappa) * (b @ b)
        + (1 - dim * mean_length / kappa) * (b @ mu) ** 2
    )


H_CASES = {
    "mu1>0": [1.0, 0.3, -0.4, 0.2, 0.5],
    "mu1<0": [-0.6, 0.3, -0.4, 0.9, 0.5],
    "mu=e1": [1.0, 0.0, 0.0, 0.0, 0.0],
}


@pytest.mark.parametrize("h_values", H_CASES.values(), ids=H_CASES.keys())
def test_gradient_matches_finite_differences(h_values: list[float]):
    """Free vector h, loc = h/‖h‖; common random numbers make the estimate smooth in h."""
    h = torch.tensor(h_values, dtype=f64, requires_grad=True)
    kappa = torch.tensor(10.0, dtype=f64)
    a = torch.tensor([0.3, -1.0, 0.5, 0.2, 0.8], dtype=f64)
    b = torch.tensor([1.0, 0.4, -0.7, 0.1, 0.3], dtype=f64)

    def estimate(hh: torch.Tensor) -> torch.Tensor:
        torch.manual_seed(1234)
        z = VonMisesFisher(F.normalize(hh, dim=-1), kappa).rsample((2000,))
        return _objective(z, a, b).mean()

    (grad,) = torch.autograd.grad(estimate(h), h)
    step = 1e-6
    fd = torch.stack(
        [
            (estimate(h.detach() + step * e) - estimate(h.detach() - step * e)) / (2 * step)
            for e in torch.eye(5, dtype=f64)
        ]
    )
    assert torch.allclose(grad, fd, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("h_values", H_CASES.values(), ids=H_CASES.keys())
def test_gradient_is_unbiased(h_values: list[float]):
    """Per-sample pathwise gradients average to ∇_h E[f(z)] computed from the closed form."""
    n = 10_000
    h = torch.tensor(h_values, dtype=f64)
    kappa = torch.tensor(10.0, dtype=f64)
    a = torch.tensor([0.3, -1.0, 0.5, 0.2, 0.8], dtype=f64)
    b = torch.tensor([1.0, 0.4, -0.7, 0.1, 0.3], dtype=f64)

    hs = h.expand(n, -1).clone().requires_grad_()
    z = VonMisesFisher(F.normalize(hs, dim=-1), kappa).rsample()
    (per_sample,) = torch.autograd.grad(_objective(z, a, b).sum(), hs)
    assert torch.isfinite(per_sample).all()
    se = per_sample.std(0) / math.sqrt(n)

    h_exact = h.clone().requires_grad_()
    (want,) = torch.autograd.grad(_exact_expectation(h_exact, kappa, a, b), h_exact)
    assert ((per_sample.mean(0) - want).abs() < 4 * se + 1e-12).all()
    # and the values themselves: E[f] matches the closed form
    values = _objective(z.detach(), a, b)
    exact = _exact_expectation(h, kappa, a, b)
    assert abs(values.mean() - exact) < 4 * values.std() / math.sqrt(n)


def test_rsample_with_learned_concentration_is_refused():
    loc = F.normalize(torch.randn(3), dim=-1)
    kappa = torch.tensor(5.0, requires_grad=True)
    q = VonMisesFisher(loc, kappa)
    with pytest.raises(ConfigError, match="concentration requires grad"):
        q.rsample()
    # sample() carries no gradient and works; log_prob is differentiable in κ
    z = q.sample((3,))
    (dk,) = torch.autograd.grad(q.log_prob(z).sum(), kappa)
    assert torch.isfinite(dk)


# ----------------------------------------------------------------------------------------------
# vMF: entropy and KL


@pytest.mark.parametrize("dim, kappa", [(3, 1.0), (3, 500.0), (50, 50.0), (300, 80.0)])
def test_entropy_and_kl_match_monte_carlo(dim: int, kappa: float):
    n = 10_000
    loc = F.normalize(torch.randn(dim, dtype=f64), dim=-1)
    q = VonMisesFisher(loc, torch.tensor(kappa, dtype=f64))
    p = HypersphericalUniform(dim, dtype=f64)
    z = q.sample((n,))
    log_q = q.log_prob(z)
    se = log_q.std().item() / math.sqrt(n)
    assert abs(-log_q.mean().item() - q.entropy().item()) < 4 * se
    log_ratio = log_q - p.log_prob(z)
    assert abs(log_ratio.mean().item() - kl_divergence(q, p).item()) < 4 * se
    # KL = log|S| − H, and Pyro's kl_divergence finds the same registration
    assert kl_divergence(q, p).item() == pytest.approx(p.entropy().item() - q.entropy().item())
    assert pyro_kl_divergence(q, p).item() == kl_divergence(q, p).item()


def test_kl_properties():
    dim = 50
    kappa = torch.tensor([1e-3, 1.0, 10.0, 80.0, 1000.0], dtype=f64)
    loc = F.normalize(torch.randn(5, dim, dtype=f64), dim=-1)
    kl = kl_divergence(VonMisesFisher(loc, kappa), HypersphericalUniform(dim, dtype=f64))
    assert kl.shape == (5,)
    assert (kl > 0).all() and (kl.diff() > 0).all()
    # small κ: KL = κ²/(2d) + O(κ⁴)
    assert kl[0].item() == pytest.approx(1e-6 / (2 * dim), rel=1e-3)
    # independent of the direction
    prior = HypersphericalUniform(dim, dtype=f64)
    other = kl_divergence(VonMisesFisher(loc.flip(0), kappa), prior)
    assert torch.equal(kl, other)


def test_kl_dimension_mismatch():
    q = VonMisesFisher(F.normalize(torch.randn(5), dim=-1), 3.0)
    with pytest.raises(ConfigError, match="dimensions differ"):
        kl_divergence(q, HypersphericalUniform(4))


def test_trace_mean_field_elbo_uses_closed_form_kl():
    """Pyro's TraceMeanField_ELBO finds the registered KL through plates (which call expand)."""
    dim, batch = 8, 6
    kappa = torch.tensor(20.0, dtype=f64)

    def model():
        with pyro.plate("data", batch):
            pyro.sample("z", HypersphericalUniform(dim, dtype=f64))

    def guide():
        h = pyro.param("h", torch.randn(batch, dim, dtype=f64))
        with pyro.plate("data", batch):
            pyro.sample("z", VonMisesFisher(F.normalize(h, dim=-1), kappa))

    loss = TraceMeanField_ELBO().differentiable_loss(model, guide)
    want = batch * kl_divergence(
        VonMisesFisher(F.normalize(torch.randn(dim, dtype=f64), dim=-1), kappa),
        HypersphericalUniform(dim, dtype=f64),
    )
    # A Monte Carlo fallback would differ from the closed form by O(1/√κ).
    assert loss.item() == pytest.approx(want.item(), rel=1e-12)


# ----------------------------------------------------------------------------------------------
# shapes, uniform prior, validation


def test_batch_shapes_and_expand():
    dim = 4
    loc = F.normalize(torch.randn(2, 1, dim, dtype=f64), dim=-1)
    kappa = torch.tensor([1.0, 10.0, 100.0], dtype=f64)
    q = VonMisesFisher(loc, kappa)
    assert q.batch_shape == (2, 3) and q.event_shape == (dim,)
    z = q.rsample((5,))
    assert z.shape == (5, 2, 3, dim)
    assert q.log_prob(z).shape == (5, 2, 3)
    assert q.entropy().shape == (2, 3) and q.mean.shape == (2, 3, dim)
    big = q.expand((7, 2, 3))
    assert type(big) is VonMisesFisher and big.batch_shape == (7, 2, 3)
    assert torch.equal(big.log_prob(z[:1]), q.log_prob(z[:1]).expand(7, 2, 3))
    p = HypersphericalUniform(dim, dtype=f64).expand((2, 3))
    assert kl_divergence(q, p).shape == (2, 3)
    assert p.log_prob(z).shape == (5, 2, 3)


def test_uniform_on_sphere():
    n, dim = 40_000, 4
    p = HypersphericalUniform(dim, dtype=f64)
    z = p.rsample((n,))
    assert (z.norm(dim=-1) - 1).abs().max() < 1e-12
    assert ((z.mean(0)).abs() < 4 / math.sqrt(n * dim)).all()
    second = z.T @ z / n
    se_bound = math.sqrt(2 / (dim * dim * n))  # ≥ the sd of every entry of zzᵀ, over √n
    assert (second - torch.eye(dim, dtype=f64) / dim).abs().max() < 4 * se_bound
    assert torch.allclose(p.log_prob(z[:3]), torch.full((3,), -log_sphere_area(dim), dtype=f64))
    assert p.entropy().item() == pytest.approx(log_sphere_area(dim))
    north = torch.tensor([0.0, 0.0, 1.0])
    assert HypersphericalUniform(3).log_prob(north).item() == pytest.approx(-math.log(4 * math.pi))


def test_bad_arguments():
    with pytest.raises(ConfigError, match="d >= 2"):
        VonMisesFisher(torch.ones(3, 1), 1.0)
    with pytest.raises(ConfigError, match="dim must be an integer >= 2"):
        HypersphericalUniform(1)
    # Parameter constraints follow the torch convention (ValueError naming the parameter).
    with pytest.raises(ValueError, match="loc"):
        VonMisesFisher(torch.tensor([1.0, 1.0]), 1.0, validate_args=True)
    with pytest.raises(ValueError, match="concentration"):
        VonMisesFisher(torch.tensor([1.0, 0.0]), -1.0, validate_args=True)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda():
    dev = torch.device("cuda")
    loc = F.normalize(torch.randn(16, 300, device=dev), dim=-1)
    q = VonMisesFisher(loc, torch.tensor(80.0, device=dev))
    z = q.rsample((10,))
    assert z.device.type == "cuda" and (z.norm(dim=-1) - 1).abs().max() < 1e-5
    p = HypersphericalUniform(300, device=dev)
    for t in (q.log_prob(z), q.entropy(), q.mean, kl_divergence(q, p), p.rsample(), p.log_prob(z)):
        assert t.device.type == "cuda" and t.dtype == torch.float32
    cpu = VonMisesFisher(loc.cpu().double(), torch.tensor(80.0, dtype=f64))
    assert torch.allclose(q.log_prob(z).cpu().double(), cpu.log_prob(z.cpu().double()), atol=1e-3)
