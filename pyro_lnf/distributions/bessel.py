r"""Log modified Bessel function of the first kind, in torch, for any order v ≥ 0.

The von Mises–Fisher normaliser needs ``log I_v(κ)`` with ``v = d/2 − 1`` up to ~150 and κ up to
thousands, where ``I_v`` itself overflows or underflows float64. Two exact facts make a short,
branch-free algorithm that is accurate everywhere:

1. **Debye's uniform asymptotic expansion** (DLMF 10.41.3): with ``r = √(v² + x²)`` and
   ``t = v / r``,

   .. math::

       \log I_v(x) = r + v \log\frac{x}{v + r} - \tfrac12 \log(2\pi r)
                     + \log \sum_{k \ge 0} \frac{u_k(t)}{v^k},

   uniformly in ``x > 0``. The polynomials ``u_k`` (DLMF 10.41.10) are generated exactly with
   :class:`fractions.Fraction`. With orders ``v ≥ 15`` and twenty terms the omitted terms are far
   below float64 rounding.
2. **The three-term recurrence run downwards** (DLMF 10.29.1),
   ``I_{v−1}(x) = I_{v+1}(x) + (2v/x) I_v(x)``. Written for the ratio
   ``ρ_v = I_{v+1}/I_v`` it is ``ρ_{v−1} = 1 / (2v/x + ρ_v)``: every term is positive, so errors
   shrink at each step instead of growing. Small orders are reached from ``v + N ≥ 15`` in ``N``
   steps, and ``log I_{v−1} = log I_v + log(2v/x + ρ_v)`` accumulates the logarithm on the way.

The same pass yields the ratio ``I_{v+1}(x)/I_v(x)`` without cancellation, which is the vMF mean
resultant length ``A_d(κ) = I_{d/2}(κ)/I_{d/2−1}(κ)``.

Both are differentiable in ``x`` through the exact identities of DLMF 10.29.2, run on the device
and dtype of ``x``, and match a high-precision reference to ~1e-13 relative in float64 over
``v ∈ [0, 200]``, ``x ∈ [1e-3, 2000]`` (see ``tests/distributions/test_vmf.py``).

References: NIST DLMF §10.29, §10.41; F. W. J. Olver, *Asymptotics and Special Functions* (1974),
ch. 10.
"""

from __future__ import annotations

import functools
import math
from fractions import Fraction

import torch

from pyro_lnf.errors import ConfigError

__all__ = ["bessel_iv_ratio", "log_bessel_iv"]

# Smallest order at which the Debye series is summed, and how many of its terms are used: against a
# log-space series reference the result is within 2e-12 (float64) over v in [0, 200],
# x in [1e-3, 2000]; the omitted terms are far below that.
_DEBYE_MIN_ORDER = 15
_DEBYE_TERMS = 20


def _debye_polynomials(n: int) -> list[list[float]]:
    """Coefficients (lowest power first) of Debye's ``u_0 … u_{n−1}``, built exactly.

    ``u_0 = 1`` and ``u_{k+1}(t) = ½ t²(1 − t²) u_k'(t) + ⅛ ∫₀ᵗ (1 − 5s²) u_k(s) ds``
    (DLMF 10.41.10); e.g. ``u_1(t) = (3t − 5t³)/24``.
    """
    polys = [[Fraction(1)]]
    for _ in range(n - 1):
        u = polys[-1]
        out = [Fraction(0)] * (len(u) + 3)
        for i, c in enumerate(u):
            if i:  # ½ (t² − t⁴) · i c t^{i−1}
                out[i + 1] += Fraction(i, 2) * c
                out[i + 3] -= Fraction(i, 2) * c
            # ⅛ ∫₀ᵗ (s^i − 5 s^{i+2}) c ds
            out[i + 1] += c / (8 * (i + 1))
            out[i + 3] -= 5 * c / (8 * (i + 3))
        polys.append(out)
    return [[float(c) for c in p] for p in polys]


_DEBYE_U = _debye_polynomials(_DEBYE_TERMS)


@functools.lru_cache(maxsize=None)
def _debye_matrix(dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """The ``u_k`` as a ``(degree + 1, K)`` matrix ``C``: ``[t⁰ … t^deg] @ C = [u_k(t)]``."""
    coeffs = torch.zeros(max(len(p) for p in _DEBYE_U), len(_DEBYE_U), dtype=torch.float64)
    for k, p in enumerate(_DEBYE_U):
        coeffs[: len(p), k] = torch.tensor(p, dtype=torch.float64)
    return coeffs.to(dtype=dtype, device=device)


def _log_iv_debye(v: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``log I_v(x)`` by Debye's expansion; accurate to float64 rounding for ``v ≥ 15``."""
    r = torch.sqrt(v * v + x * x)
    t = v / r
    coeffs = _debye_matrix(x.dtype, x.device)
    # All u_k(t) in one matmul and Σ_k u_k(t) v^{−k} in one reduction: a handful of kernels instead
    # of one per Horner step, which is what dominates the cost on small batches.
    t_powers = t.unsqueeze(-1) ** torch.arange(coeffs.shape[0], dtype=x.dtype, device=x.device)
    v_powers = v.unsqueeze(-1) ** -torch.arange(coeffs.shape[1], dtype=x.dtype, device=x.device)
    series = ((t_powers @ coeffs) * v_powers).sum(-1)
    return r + v * torch.log(x / (v + r)) - 0.5 * torch.log(2 * math.pi * r) + torch.log(series)


def _log_iv_and_ratio_forward(
    v: torch.Tensor, x: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(log I_v(x), I_{v+1}(x) / I_v(x))`` for same-shaped ``v ≥ 0`` and ``x > 0``."""
    v_min = float(v.min()) if v.numel() else 0.0
    if not v_min >= 0:
        raise ConfigError(f"Bessel order v must be >= 0 (got {v_min}); orders here are d/2 - 1")
    # Shift every order by the same number of unit steps so the smallest reaches the Debye range.
    steps = max(0, math.ceil(_DEBYE_MIN_ORDER - v_min))
    top = v + steps
    log_top, log_next = _log_iv_debye(torch.stack([top, top + 1]), torch.stack([x, x]))
    ratio = torch.exp(log_next - log_top)
    if steps == 0:
        return log_top, ratio
    # Orders k = v + j, j = steps … 1: I_{k−1}/I_k = 2k/x + I_{k+1}/I_k, all terms positive.
    j = torch.arange(steps, 0, -1, dtype=x.dtype, device=x.device)
    two_k_over_x = 2 * (v.unsqueeze(-1) + j) / x.unsqueeze(-1)
    inv_ratios = []
    for i in range(steps):
        inv_ratios.append(two_k_over_x[..., i] + ratio)
        ratio = 1.0 / inv_ratios[-1]
    log_iv = log_top + torch.log(torch.stack(inv_ratios, dim=-1)).sum(-1)
    return log_iv, ratio


class _LogBesselIv(torch.autograd.Function):
    """``(log I_v(x), ρ_v(x) = I_{v+1}/I_v)`` with exact derivatives in ``x`` (DLMF 10.29.2).

    ``d/dx log I_v = ρ_v + v/x`` and ``d/dx ρ_v = 1 − ρ_v² − (2v+1) ρ_v / x``. Differentiating the
    recurrence instead would cancel terms of size ``N/x`` down to ``ρ_v ≈ x/(2v+2)`` at small
    ``x``; the closed forms cost one line and stay accurate. They are written in differentiable
    ops of the saved output ``ρ_v``, so higher derivatives work too.
    """

    @staticmethod
    def forward(ctx, v: torch.Tensor, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        log_iv, ratio = _log_iv_and_ratio_forward(v, x)
        ctx.save_for_backward(v, x, ratio)
        return log_iv, ratio

    @staticmethod
    def backward(ctx, grad_log_iv: torch.Tensor, grad_ratio: torch.Tensor):
        v, x, ratio = ctx.saved_tensors
        d_log_iv = ratio + v / x
        d_ratio = 1 - ratio * ratio - (2 * v + 1) * ratio / x
        return None, grad_log_iv * d_log_iv + grad_ratio * d_ratio


def _log_iv_and_ratio(
    v: float | torch.Tensor, x: float | torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(log I_v(x), I_{v+1}(x) / I_v(x))`` for ``v ≥ 0`` and ``x > 0``, broadcast together."""
    if not torch.is_tensor(x):
        x = torch.as_tensor(x, dtype=torch.get_default_dtype())
    v = torch.as_tensor(v, dtype=x.dtype, device=x.device)
    v, x = torch.broadcast_tensors(v, x)
    return _LogBesselIv.apply(v, x)


def log_bessel_iv(v: float | torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    r"""Logarithm of the modified Bessel function of the first kind, :math:`\log I_v(x)`.

    .. math:: I_v(x) = \sum_{k \ge 0} \frac{(x/2)^{2k+v}}{k!\,\Gamma(k+v+1)}

    Debye's uniform expansion at order ``v + N ≥ 15`` followed by ``N`` steps of the downward
    recurrence (see the module docstring). Finite where ``I_v`` itself overflows, e.g.
    ``log I_150(500) ≈ 473.62``; differentiable in ``x`` (``d/dx log I_v = I_{v+1}/I_v + v/x``),
    not in ``v``.

    :param v: order(s), ``v ≥ 0``; a float or a tensor broadcastable with ``x``.
    :param x: argument(s), ``x > 0``; sets the device and dtype of the result.
    :raises ConfigError: if some ``v < 0``.

    Example::

        >>> log_bessel_iv(0.5, torch.tensor([1.0], dtype=torch.float64))  # log(√(2/π) sinh 1)
        tensor([-0.0644], dtype=torch.float64)

    Reference: NIST DLMF 10.29.1 and 10.41.3.
    """
    return _log_iv_and_ratio(v, x)[0]


def bessel_iv_ratio(v: float | torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    r"""The ratio :math:`I_{v+1}(x) / I_v(x) \in (0, 1)`, computed without forming either function.

    For the von Mises–Fisher distribution on :math:`S^{d-1}`,
    :math:`A_d(\kappa) = I_{d/2}(\kappa)/I_{d/2-1}(\kappa)` is ``bessel_iv_ratio(d/2 - 1, κ)``.

    Example::

        >>> bessel_iv_ratio(0.5, torch.tensor([2.0], dtype=torch.float64))  # coth 2 − 1/2
        tensor([0.5373], dtype=torch.float64)

    Reference: NIST DLMF 10.29.1.
    """
    return _log_iv_and_ratio(v, x)[1]
