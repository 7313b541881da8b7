r"""Monotone scalar maps (NLSq, affine) and the elementwise flows built on them.

Conventions shared by every flow in :mod:`pyro_lnf.transforms`:

* Pyro's direction: a transform's ``_call`` maps base noise to the sample, ``_inverse`` maps the
  sample back to noise (``TransformedDistribution.log_prob`` calls ``_inverse``), and
  ``log_abs_det_jacobian(x, y)`` is :math:`\log|\partial y/\partial x|` summed over the
  transform's own event dims.
* An :class:`ElementwiseMap` is a small parameter-free object (as in zuko) that turns raw
  network outputs ``params`` of shape ``x.shape + (P,)`` (parameter index innermost; anything
  broadcastable to it is accepted) into a strictly increasing scalar bijection:
  ``forward(x, params) -> (y, log dy/dx)`` is the explicit, cheap, differentiable formula and
  ``inverse(y, params) -> x`` its inverse.
* Every :class:`FlowTransform` computes its output and its log-determinant in one pass
  (``call_and_ladj`` / ``inverse_and_ladj``) and keeps the last (x, y, log-det) triple, which
  ``log_abs_det_jacobian`` reuses only when handed the very same tensor objects (Pyro's cache
  matches by identity; anything else is recomputed).

Example:

>>> import torch
>>> x = torch.randn(3, 4, dtype=torch.float64)
>>> params = torch.randn(3, 4, NLSqMap.num_params, dtype=torch.float64)
>>> y, log_dydx = NLSqMap().forward(x, params)
>>> torch.allclose(NLSqMap().inverse(y, params), x)
True

References:

| [1] Zachary M. Ziegler, Alexander M. Rush. Latent Normalizing Flows for Discrete Sequences.
|     ICML 2019. https://arxiv.org/abs/1901.10548 (NLSq: eq. 12; affine: §3.1)
"""

from __future__ import annotations

import math
from typing import Protocol, runtime_checkable

import torch
from pyro.distributions.conditional import ConditionalTransformModule
from pyro.distributions.torch_transform import TransformModule
from torch import Tensor, nn
from torch.distributions import Transform, constraints

from pyro_lnf.errors import ConfigError
from pyro_lnf.nn.made import DenseNet

__all__ = [
    "Affine",
    "AffineMap",
    "ConditionalAffine",
    "ConditionalElementwise",
    "ConditionalNLSq",
    "ConditionedElementwise",
    "Elementwise",
    "ElementwiseMap",
    "FlowTransform",
    "NLSq",
    "NLSqMap",
    "affine",
    "conditional_affine",
    "conditional_nlsq",
    "elementwise_map",
    "nlsq",
]


@runtime_checkable
class ElementwiseMap(Protocol):
    """A strictly increasing scalar bijection parameterised by ``num_params`` raw values.

    ``params`` has shape ``x.shape + (num_params,)`` (or broadcasts to it), parameter index
    innermost. ``forward`` is the explicit formula and returns ``(y, log dy/dx)``; ``inverse``
    returns ``x`` and must be differentiable in both ``y`` and ``params``.
    """

    num_params: int

    def forward(self, x: Tensor, params: Tensor) -> tuple[Tensor, Tensor]: ...

    def inverse(self, y: Tensor, params: Tensor) -> Tensor: ...


class AffineMap:
    r"""The affine map :math:`y = a + b\,x` with :math:`b = \exp(o_1/2)` ([1] §3.1).

    ``params[..., 0]`` is :math:`a = o_0`, ``params[..., 1]`` is :math:`o_1 = \log b^2`;
    :math:`\log(dy/dx) = o_1/2`. The inverse :math:`x = (y - a)\,e^{-o_1/2}` is exact.
    """

    num_params: int = 2

    def forward(self, x: Tensor, params: Tensor) -> tuple[Tensor, Tensor]:
        shift, log_scale = params[..., 0], 0.5 * params[..., 1]
        y = shift + torch.exp(log_scale) * x
        return y, log_scale.expand_as(y)

    def inverse(self, y: Tensor, params: Tensor) -> Tensor:
        return (y - params[..., 0]) * torch.exp(-0.5 * params[..., 1])


# Largest |c|·d/b that keeps NLSq monotone is 8√3/9 (max of u/(1+u²)² is 3√3/16); the authors
# back off by 0.05 so that dy/dx >= (1 - A·9/(8√3))·b ≈ 0.0325·b stays away from zero.
_NLSQ_LOG_A = math.log(8.0 * math.sqrt(3.0) / 9.0 - 0.05)
_NLSQ_A = math.exp(_NLSQ_LOG_A)


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


_MAPS: dict[str, type] = {"nlsq": NLSqMap, "affine": AffineMap}


def elementwise_map(name: str) -> ElementwiseMap:
    """The :class:`ElementwiseMap` called ``name`` (``"nlsq"`` or ``"affine"``)."""
    try:
        return _MAPS[name]()
    except KeyError:
        raise ConfigError(
            f"unknown elementwise transform {name!r}: choose one of {sorted(_MAPS)}"
        ) from None


class FlowTransform(Transform):
    r"""Base of this package's bijections: output and log-determinant in one pass.

    Subclasses implement ``call_and_ladj(x) -> (y, log|dy/dx|)`` (noise to sample) and
    ``inverse_and_ladj(y) -> (x, log|dy/dx|)`` (sample to noise; note the log-det is still that
    of the forward map) and ``_recompute_ladj(x, y)`` along their cheap direction.
    ``_call``/``_inverse`` stash the triple; ``log_abs_det_jacobian`` reuses it only after the
    identity check ``x is x_old and y is y_old`` (a clone or a stale pair is recomputed, never
    trusted). The class attribute ``parallel_inverse`` says whether ``_inverse`` is a single
    parallel pass; stacks use it to pick how to recompute.
    """

    bijective = True
    parallel_inverse: bool = True

    def __init__(self) -> None:
        super().__init__(cache_size=1)
        self._stash: tuple[Tensor | None, Tensor | None, Tensor | None] = (None, None, None)

    def call_and_ladj(self, x: Tensor) -> tuple[Tensor, Tensor]:
        raise NotImplementedError

    def inverse_and_ladj(self, y: Tensor) -> tuple[Tensor, Tensor]:
        raise NotImplementedError

    def _recompute_ladj(self, x: Tensor, y: Tensor) -> Tensor:
        raise NotImplementedError

    def _call(self, x: Tensor) -> Tensor:
        y, ladj = self.call_and_ladj(x)
        self._stash = (x, y, ladj)
        return y

    def _inverse(self, y: Tensor) -> Tensor:
        x, ladj = self.inverse_and_ladj(y)
        self._stash = (x, y, ladj)
        return x

    def log_abs_det_jacobian(self, x: Tensor, y: Tensor) -> Tensor:
        x_old, y_old, ladj = self._stash
        if x is x_old and y is y_old:
            return ladj
        return self._recompute_ladj(x, y)


class _ElementwiseFlow(FlowTransform):
    """An :class:`ElementwiseMap` applied per coordinate; ``_call`` is the explicit formula."""

    domain = constraints.real
    codomain = constraints.real
    sign = +1

    def __init__(self, elementwise_map: ElementwiseMap) -> None:
        super().__init__()
        self.elementwise_map = elementwise_map

    def raw_params(self) -> Tensor:
        """Raw parameters, shape ``(..., dim, P)``."""
        raise NotImplementedError

    def call_and_ladj(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return self.elementwise_map.forward(x, self.raw_params())

    def inverse_and_ladj(self, y: Tensor) -> tuple[Tensor, Tensor]:
        params = self.raw_params()
        x = self.elementwise_map.inverse(y, params)
        return x, self.elementwise_map.forward(x, params)[1]

    def _recompute_ladj(self, x: Tensor, y: Tensor) -> Tensor:
        return self.elementwise_map.forward(x, self.raw_params())[1]


class ConditionedElementwise(_ElementwiseFlow):
    """What :meth:`ConditionalElementwise.condition` returns: an elementwise flow whose raw
    parameters ``nn(context)`` are computed afresh at each call (so one object may be reused
    across optimizer steps without stale values)."""

    def __init__(
        self, elementwise_map: ElementwiseMap, nn: nn.Module, context: Tensor, dim: int
    ) -> None:
        super().__init__(elementwise_map)
        self.nn = nn
        self.context = context
        self.dim = dim

    def raw_params(self) -> Tensor:
        params = self.nn(self.context)
        expected = (self.dim, self.elementwise_map.num_params)
        if params.shape[-2:] != expected:
            raise ConfigError(
                f"the conditioning network returned shape {tuple(params.shape)}; an elementwise "
                f"flow over {self.dim} dims needs (..., {expected[0]}, {expected[1]})"
            )
        return params


class Elementwise(_ElementwiseFlow, TransformModule):
    r"""A learned elementwise flow :math:`y_i = \phi(x_i;\theta_i)` with one parameter vector per
    dimension, event_dim 0 (as Pyro's ``Spline``).

    ``_call`` is the explicit map (cheap), ``_inverse`` its inverse (for NLSq the float64 cubic
    solve). Use ``.inv`` to score through the explicit formula instead. Parameters start at small
    random values, within about 1% of the identity, so that every raw parameter (including
    NLSq's d and f, which are inert when c = 0 exactly) receives gradient from the first step.

    :param elementwise_map: the scalar map, e.g. :class:`NLSqMap`.
    :param dim: number of coordinates.
    """

    def __init__(self, elementwise_map: ElementwiseMap, dim: int) -> None:
        super().__init__(elementwise_map)
        self.dim = _check_dim(dim)
        self.raw = nn.Parameter(0.01 * torch.randn(dim, elementwise_map.num_params))

    def raw_params(self) -> Tensor:
        return self.raw


class NLSq(Elementwise):
    r"""Learned elementwise NLSq flow, :math:`y = a + b x + c/(1 + (d x + f)^2)` per dimension
    (see :class:`NLSqMap`).

    >>> import pyro.distributions as dist
    >>> flow = NLSq(3)
    >>> d = dist.TransformedDistribution(dist.Normal(torch.zeros(3), 1.0).to_event(1), [flow])
    >>> d.log_prob(d.sample((5,))).shape
    torch.Size([5])
    """

    def __init__(self, dim: int) -> None:
        super().__init__(NLSqMap(), dim)


class Affine(Elementwise):
    r"""Learned elementwise affine flow, :math:`y = a + e^{o_1/2} x` per dimension."""

    def __init__(self, dim: int) -> None:
        super().__init__(AffineMap(), dim)


class ConditionalElementwise(ConditionalTransformModule):
    r"""Elementwise flow whose parameters are a network of a context (Pyro's
    ``ConditionalSpline`` pattern): :math:`y_i = \phi(x_i;\theta_i(c))`.

    ``condition(context)`` returns a fresh :class:`ConditionedElementwise` each time (Pyro's cache
    matches by identity, so never reuse one across sample sites). The context's batch shape
    broadcasts against x's (e.g. x ``(K, B, T, D)`` with context ``(B, T, C)``).

    :param nn: maps context ``(..., C)`` to raw parameters ``(..., dim, P)``.
    :param elementwise_map: the scalar map.
    :param dim: number of coordinates.
    """

    def __init__(self, nn: nn.Module, elementwise_map: ElementwiseMap, dim: int) -> None:
        super().__init__()
        self.nn = nn
        self.elementwise_map = elementwise_map
        self.dim = _check_dim(dim)

    def condition(self, context: Tensor) -> ConditionedElementwise:
        return ConditionedElementwise(self.elementwise_map, self.nn, context, self.dim)


class ConditionalNLSq(ConditionalElementwise):
    """:class:`ConditionalElementwise` with :class:`NLSqMap`."""

    def __init__(self, nn: nn.Module, dim: int) -> None:
        super().__init__(nn, NLSqMap(), dim)


class ConditionalAffine(ConditionalElementwise):
    """:class:`ConditionalElementwise` with :class:`AffineMap`."""

    def __init__(self, nn: nn.Module, dim: int) -> None:
        super().__init__(nn, AffineMap(), dim)


def _check_dim(dim: int) -> int:
    if not isinstance(dim, int) or dim < 1:
        raise ConfigError(f"a flow needs a positive integer dimension, got {dim!r}")
    return dim


def nlsq(dim: int) -> NLSq:
    """A learned elementwise NLSq flow over ``dim`` coordinates."""
    return NLSq(dim)


def affine(dim: int) -> Affine:
    """A learned elementwise affine flow over ``dim`` coordinates."""
    return Affine(dim)


def _conditional_net(dim: int, context_dim: int, num_params: int,
                     hidden_dims: tuple[int, ...] | None) -> nn.Module:
    return DenseNet(context_dim, 0, tuple(hidden_dims or ()), (dim, num_params))


def conditional_nlsq(
    dim: int, context_dim: int, hidden_dims: tuple[int, ...] | None = None
) -> ConditionalNLSq:
    """Conditional elementwise NLSq; ``hidden_dims=None`` gives the authors' ``--nohiddenflow``
    design, a single linear layer from the context to the ``dim × 5`` raw parameters."""
    return ConditionalNLSq(_conditional_net(dim, context_dim, NLSqMap.num_params, hidden_dims),
                           dim)


def conditional_affine(
    dim: int, context_dim: int, hidden_dims: tuple[int, ...] | None = None
) -> ConditionalAffine:
    """Conditional elementwise affine flow; ``hidden_dims=None`` means one linear layer."""
    return ConditionalAffine(_conditional_net(dim, context_dim, AffineMap.num_params,
                                              hidden_dims), dim)
