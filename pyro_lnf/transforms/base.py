r"""The base of every flow in :mod:`pyro_lnf.transforms`: :class:`FlowTransform`, the
:class:`ElementwiseMap` protocol, the generic elementwise flows that leave only the scalar map to
their subclasses (:class:`Elementwise`, :class:`ConditionalElementwise` and what its
``condition`` returns, :class:`ConditionedElementwise`), and the name -> map lookup.

Conventions shared by every flow in :mod:`pyro_lnf.transforms`:

* Pyro's direction: a transform's ``_call`` maps base noise to the sample, ``_inverse`` maps the
  sample back to noise (``TransformedDistribution.log_prob`` calls ``_inverse``), and
  ``log_abs_det_jacobian(x, y)`` is :math:`\log|\partial y/\partial x|` summed over the
  transform's own event dims.
* An :class:`ElementwiseMap` is a small parameter-free object (as in zuko) that turns raw
  network outputs ``params`` of shape ``x.shape + (P,)`` (parameter index innermost; anything
  broadcastable to it is accepted) into a strictly increasing scalar bijection:
  ``forward(x, params) -> (y, log dy/dx)`` is the explicit, cheap, differentiable formula and
  ``inverse(y, params) -> x`` its inverse. The maps themselves live in
  :mod:`~pyro_lnf.transforms.nlsq` and :mod:`~pyro_lnf.transforms.affine`, each with its flows.
* Every :class:`FlowTransform` computes its output and its log-determinant in one pass
  (``call_and_ladj`` / ``inverse_and_ladj``) and keeps the last (x, y, log-det) triple, which
  ``log_abs_det_jacobian`` reuses only when handed the very same tensor objects (Pyro's cache
  matches by identity; anything else is recomputed).

Example:

>>> x = torch.randn(3, 4, dtype=torch.float64)
>>> phi = elementwise_map("nlsq")
>>> params = torch.randn(3, 4, phi.num_params, dtype=torch.float64)
>>> y, log_dydx = phi.forward(x, params)
>>> torch.allclose(phi.inverse(y, params), x)
True

References:

| [1] Zachary M. Ziegler, Alexander M. Rush. Latent Normalizing Flows for Discrete Sequences.
|     ICML 2019. https://arxiv.org/abs/1901.10548
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol, TypeVar, runtime_checkable

import torch
from pyro.distributions.conditional import ConditionalTransformModule
from pyro.distributions.torch_transform import TransformModule
from torch import Tensor, nn
from torch.distributions import Transform, constraints

from pyro_lnf.errors import ConfigError
from pyro_lnf.nn.made import DenseNet

__all__ = [
    "ConditionalElementwise",
    "ConditionedElementwise",
    "Elementwise",
    "ElementwiseMap",
    "FlowTransform",
    "conditional_params_net",
    "elementwise_map",
    "register_elementwise_map",
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


_Map = TypeVar("_Map", bound=type)

#: The maps :func:`elementwise_map` knows, filled by :func:`register_elementwise_map` as
#: :mod:`~pyro_lnf.transforms.nlsq` and :mod:`~pyro_lnf.transforms.affine` are imported (the
#: package's ``__init__`` imports both, so every map is known before any flow is built).
_MAPS: dict[str, type] = {}


def register_elementwise_map(name: str) -> Callable[[_Map], _Map]:
    """Class decorator that makes an :class:`ElementwiseMap` buildable by name
    (``transform=name`` in every flow factory).

    The lookup lives here and the maps register themselves because the map modules build their
    flows on this module: a lookup importing them would be an import cycle.
    """

    def register(cls: _Map) -> _Map:
        _MAPS[name] = cls
        return cls

    return register


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

    >>> flow = Elementwise(elementwise_map("affine"), 2)    # a FlowTransform
    >>> x = torch.randn(5, 2)
    >>> y = flow(x)
    >>> flow.log_abs_det_jacobian(x, y) is flow.log_abs_det_jacobian(x, y)   # the stashed one
    True
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
    """An :class:`ElementwiseMap` applied per coordinate; ``_call`` is the explicit formula.

    Subclasses only say where the raw parameters come from (:meth:`raw_params`).
    """

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
    across optimizer steps without stale values).

    >>> flow = ConditionalElementwise(DenseNet(4, 0, (), (2, 2)), elementwise_map("affine"), 2)
    >>> conditioned = flow.condition(torch.randn(5, 4))     # a ConditionedElementwise
    >>> conditioned(torch.randn(5, 2)).shape
    torch.Size([5, 2])

    :param elementwise_map: the scalar map.
    :param nn: maps ``context`` to raw parameters ``(..., dim, P)``.
    :param context: the context tensor.
    :param dim: number of coordinates.
    """

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

    >>> import pyro.distributions as dist
    >>> flow = Elementwise(elementwise_map("nlsq"), 3)
    >>> d = dist.TransformedDistribution(dist.Normal(torch.zeros(3), 1.0).to_event(1), [flow])
    >>> d.log_prob(d.sample((5,))).shape
    torch.Size([5])

    :param elementwise_map: the scalar map, e.g. :class:`~pyro_lnf.transforms.NLSqMap`.
    :param dim: number of coordinates.

    Reference: Ziegler & Rush, "Latent Normalizing Flows for Discrete Sequences", ICML 2019
    (§3.1: elementwise flows).
    """

    def __init__(self, elementwise_map: ElementwiseMap, dim: int) -> None:
        super().__init__(elementwise_map)
        self.dim = _check_dim(dim)
        self.raw = nn.Parameter(0.01 * torch.randn(dim, elementwise_map.num_params))

    def raw_params(self) -> Tensor:
        return self.raw


class ConditionalElementwise(ConditionalTransformModule):
    r"""Elementwise flow whose parameters are a network of a context (Pyro's
    ``ConditionalSpline`` pattern): :math:`y_i = \phi(x_i;\theta_i(c))`.

    ``condition(context)`` returns a fresh :class:`ConditionedElementwise` each time (Pyro's cache
    matches by identity, so never reuse one across sample sites). The context's batch shape
    broadcasts against x's (e.g. x ``(K, B, T, D)`` with context ``(B, T, C)``).

    >>> net = conditional_params_net(3, context_dim=4, num_params=5, hidden_dims=(8,))
    >>> flow = ConditionalElementwise(net, elementwise_map("nlsq"), 3)
    >>> x, context = torch.randn(5, 3), torch.randn(5, 4)
    >>> torch.allclose(flow.condition(context).inv(flow.condition(context)(x)), x, atol=1e-5)
    True

    :param nn: maps context ``(..., C)`` to raw parameters ``(..., dim, P)``.
    :param elementwise_map: the scalar map.
    :param dim: number of coordinates.

    Reference: Ziegler & Rush, "Latent Normalizing Flows for Discrete Sequences", ICML 2019
    (§3.1: elementwise flows).
    """

    def __init__(self, nn: nn.Module, elementwise_map: ElementwiseMap, dim: int) -> None:
        super().__init__()
        self.nn = nn
        self.elementwise_map = elementwise_map
        self.dim = _check_dim(dim)

    def condition(self, context: Tensor) -> ConditionedElementwise:
        return ConditionedElementwise(self.elementwise_map, self.nn, context, self.dim)


def _check_dim(dim: int) -> int:
    if not isinstance(dim, int) or dim < 1:
        raise ConfigError(f"a flow needs a positive integer dimension, got {dim!r}")
    return dim


def conditional_params_net(dim: int, context_dim: int, num_params: int,
                           hidden_dims: tuple[int, ...] | None) -> nn.Module:
    """The network of a conditional elementwise flow: context ``(..., context_dim)`` to raw
    parameters ``(..., dim, num_params)``; ``hidden_dims=None`` or ``()`` is one linear layer
    (the authors' ``--nohiddenflow`` design)."""
    return DenseNet(context_dim, 0, tuple(hidden_dims or ()), (dim, num_params))
