r"""The "non-linear squared" (NLSq) elementwise map of [1], its analytic inverse (a depressed
cubic solved in float64), and the elementwise flows built on it: :class:`NLSq`,
:class:`ConditionalNLSq` and their factories :func:`nlsq`, :func:`conditional_nlsq`.

Example:

>>> x = torch.randn(3, 4, dtype=torch.float64)
>>> params = torch.randn(3, 4, NLSqMap.num_params, dtype=torch.float64)
>>> y, log_dydx = NLSqMap().forward(x, params)
>>> torch.allclose(NLSqMap().inverse(y, params), x)
True

References:

| [1] Zachary M. Ziegler, Alexander M. Rush. Latent Normalizing Flows for Discrete Sequences.
|     ICML 2019. https://arxiv.org/abs/1901.10548 (NLSq: eq. 12)
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from pyro_lnf.transforms.base import (
    ConditionalElementwise,
    Elementwise,
    conditional_params_net,
    register_elementwise_map,
)

__all__ = ["ConditionalNLSq", "NLSq", "NLSqMap", "conditional_nlsq", "nlsq"]

# Largest |c|·d/b that keeps NLSq monotone is 8√3/9 (max of u/(1+u²)² is 3√3/16); the authors
# back off by 0.05 so that dy/dx >= (1 - A·9/(8√3))·b ≈ 0.0325·b stays away from zero.
_NLSQ_LOG_A = math.log(8.0 * math.sqrt(3.0) / 9.0 - 0.05)
_NLSQ_A = math.exp(_NLSQ_LOG_A)


@register_elementwise_map("nlsq")
class NLSqMap:
    r"""The "non-linear squared" map of [1], eq. 12, with the authors' parameterisation.

    .. math::

        y = a + b\,x + \frac{c}{1 + (d\,x + f)^2},\qquad
        \frac{dy}{dx} = b\left(1 - \frac{2\,s\,u}{(1 + u^2)^2}\right),\quad u = d\,x + f,

    from raw outputs :math:`o_{0..4}`: :math:`a = o_0`, :math:`b = e^{0.4 o_1}`,
    :math:`s = \tanh(0.3\,o_2)\,A`, :math:`d = e^{0.4 o_3}`, :math:`f = o_4`,
    :math:`c = s\,b/d` with :math:`A = 8\sqrt3/9 - 0.05`, so :math:`|s| < A` makes the map
    strictly increasing (:math:`dy/dx \ge 0.0325\,b`).

    **Inverse.** In :math:`u` the equation is :math:`u + s/(1+u^2) = w` with
    :math:`w = (y-a)\,d/b + f`, i.e. the monic cubic :math:`u^3 - w u^2 + u + (s - w) = 0`.
    With :math:`u = t + w/3` it becomes :math:`t^3 + p t + q = 0`,
    :math:`p = 1 - w^2/3`, :math:`q = s - 2w/3 - 2w^3/27`, whose unique real root is taken in
    float64 by the hyperbolic formulas (see :func:`_depressed_cubic_root`). This normalised
    form has two well-scaled coefficients instead of the authors' four, so less cancellation.
    The root is computed without gradient and then polished by one float64 Newton step
    :math:`x = x_0 - (g(x_0) - y)/g'(x_0)` with :math:`g'` detached: the value is polished
    (Newton doubles the correct digits) and, by the implicit function theorem, the gradients
    :math:`\partial x/\partial y = 1/g'` and :math:`\partial x/\partial\theta = -\partial_\theta
    g / g'` come out exact to first order. The result is cast back to the dtype of ``y``.

    >>> phi = NLSqMap()
    >>> x = torch.linspace(-3.0, 3.0, 7)
    >>> params = torch.randn(NLSqMap.num_params)              # one map for every x
    >>> y, log_dydx = phi.forward(x, params)
    >>> bool((y.diff() > 0).all())                            # strictly increasing
    True
    >>> torch.allclose(phi.inverse(y, params), x, atol=1e-5)
    True

    Reference: Ziegler & Rush, "Latent Normalizing Flows for Discrete Sequences", ICML 2019,
    eq. 12.
    """

    num_params: int = 5

    @staticmethod
    def _unpack(params: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
        """(a, log b, s, log d, f) from raw outputs."""
        a = params[..., 0]
        log_b = 0.4 * params[..., 1]
        s = torch.tanh(0.3 * params[..., 2]) * _NLSQ_A
        log_d = 0.4 * params[..., 3]
        f = params[..., 4]
        return a, log_b, s, log_d, f

    @staticmethod
    def _evaluate(
        x: Tensor, a: Tensor, log_b: Tensor, s: Tensor, log_d: Tensor, f: Tensor
    ) -> tuple[Tensor, Tensor, Tensor]:
        """(y, log dy/dx, dy/dx) at x."""
        u = torch.exp(log_d) * x + f
        one_plus_u2 = 1.0 + u * u
        # c/(1+u²) = s·(b/d)/(1+u²); exp(log b - log d) avoids overflow of b and d separately.
        y = a + torch.exp(log_b) * x + s * torch.exp(log_b - log_d) / one_plus_u2
        # dy/dx = b·(1 - 2su/(1+u²)²) with 2|s u|/(1+u²)² <= 0.9675: log1p is accurate here.
        log_slope_factor = torch.log1p(-2.0 * s * u / (one_plus_u2 * one_plus_u2))
        log_dydx = log_b + log_slope_factor
        return y, log_dydx, torch.exp(log_dydx)

    def forward(self, x: Tensor, params: Tensor) -> tuple[Tensor, Tensor]:
        y, log_dydx, _ = self._evaluate(x, *self._unpack(params))
        return y, log_dydx

    def inverse(self, y: Tensor, params: Tensor) -> Tensor:
        y64, params64 = y.double(), params.double()
        a, log_b, s, log_d, f = self._unpack(params64)
        with torch.no_grad():
            w = (y64 - a) * torch.exp(log_d - log_b) + f
            t = _depressed_cubic_root(1.0 - w * w / 3.0, s - w * (2.0 / 3.0 + w * w * (2.0 / 27.0)))
            x0 = (t + w / 3.0 - f) * torch.exp(-log_d)
        g, _, dgdx = self._evaluate(x0, a, log_b, s, log_d, f)
        return (x0 - (g - y64) / dgdx.detach()).to(y.dtype)


def _depressed_cubic_root(p: Tensor, q: Tensor) -> Tensor:
    r"""The real root of :math:`t^3 + p\,t + q = 0` when it is unique (:math:`4p^3 + 27q^2 > 0`,
    as in every NLSq inverse); at the boundary (a double root) the simple root.

    With :math:`X = \tfrac{3|q|}{2|p|}\sqrt{3/|p|}`:

    * :math:`p > 0` (one real root): :math:`t = -2\,\mathrm{sgn}(q)\sqrt{p/3}\,
      \sinh(\tfrac13\operatorname{asinh} X)`;
    * :math:`p < 0`: :math:`t = -2\,\mathrm{sgn}(q)\sqrt{-p/3}\,\cosh(\tfrac13\operatorname{acosh}
      X)`. A single real root means a negative discriminant, i.e. :math:`X > 1`; :math:`X < 1`
      can only come from round-off when the other two roots nearly coincide, so ``X`` is clamped
      to 1, the limit of the formula (the authors reflect, :math:`|X-1|+1`, which is as
      good to first order but hides the reason). :math:`q = 0` with :math:`p<0`
      would mean three real roots and cannot occur for a monotone map; there ``sgn(q) = 0``
      returns the root 0 rather than NaN.
    * :math:`|p|` negligible (:math:`|p| \le \epsilon |q|^{2/3}`, where the dropped term changes
      :math:`t` by under one ulp, or :math:`|p| < 10^{-150}`, where :math:`\sqrt{3/|p|}` could
      overflow): :math:`t = -\sqrt[3]{q}`. This covers :math:`p = 0` exactly and never divides
      by zero.

    Both hyperbolic branches are evaluated on safe inputs, so no NaN/inf arises anywhere.
    Runs in the dtype of its inputs (float64 in :class:`NLSqMap`).
    """
    abs_p, abs_q, sign_q = p.abs(), q.abs(), torch.sign(q)
    eps = torch.finfo(p.dtype).eps
    negligible = (abs_p <= eps * abs_q.pow(2.0 / 3.0)) | (abs_p < 1e-150)
    safe_p = torch.where(negligible, torch.ones_like(abs_p), abs_p)
    scale = torch.sqrt(safe_p / 3.0)
    big_x = 1.5 * abs_q / safe_p * torch.sqrt(3.0 / safe_p)
    sinh_root = torch.sinh(torch.asinh(big_x) / 3.0)
    cosh_root = torch.cosh(torch.acosh(big_x.clamp(min=1.0)) / 3.0)
    hyperbolic = -2.0 * sign_q * scale * torch.where(p > 0, sinh_root, cosh_root)
    return torch.where(negligible, -sign_q * abs_q.pow(1.0 / 3.0), hyperbolic)


class NLSq(Elementwise):
    r"""Learned elementwise NLSq flow, :math:`y = a + b x + c/(1 + (d x + f)^2)` per dimension
    (see :class:`NLSqMap`).

    >>> import pyro.distributions as dist
    >>> flow = NLSq(3)
    >>> d = dist.TransformedDistribution(dist.Normal(torch.zeros(3), 1.0).to_event(1), [flow])
    >>> d.log_prob(d.sample((5,))).shape
    torch.Size([5])

    :param dim: number of coordinates.

    Reference: Ziegler & Rush, "Latent Normalizing Flows for Discrete Sequences", ICML 2019,
    eq. 12.
    """

    def __init__(self, dim: int) -> None:
        super().__init__(NLSqMap(), dim)


class ConditionalNLSq(ConditionalElementwise):
    r""":class:`~pyro_lnf.transforms.ConditionalElementwise` with :class:`NLSqMap`: an NLSq flow
    whose per-dimension parameters are ``nn(context)``.

    >>> flow = conditional_nlsq(3, context_dim=4)      # one linear layer, as --nohiddenflow
    >>> conditioned = flow.condition(torch.randn(5, 4))
    >>> x = torch.randn(5, 3)
    >>> torch.allclose(conditioned.inv(conditioned(x)), x, atol=1e-5)
    True

    :param nn: maps context ``(..., C)`` to raw parameters ``(..., dim, 5)``.
    :param dim: number of coordinates.

    Reference: Ziegler & Rush, "Latent Normalizing Flows for Discrete Sequences", ICML 2019,
    eq. 12.
    """

    def __init__(self, nn: nn.Module, dim: int) -> None:
        super().__init__(nn, NLSqMap(), dim)


def nlsq(dim: int) -> NLSq:
    """A learned elementwise NLSq flow over ``dim`` coordinates."""
    return NLSq(dim)


def conditional_nlsq(
    dim: int, context_dim: int, hidden_dims: tuple[int, ...] | None = None
) -> ConditionalNLSq:
    """Conditional elementwise NLSq; ``hidden_dims=None`` gives the authors' ``--nohiddenflow``
    design, a single linear layer from the context to the ``dim × 5`` raw parameters."""
    return ConditionalNLSq(
        conditional_params_net(dim, context_dim, NLSqMap.num_params, hidden_dims), dim
    )
