r"""Stacks of K hidden-dimension flow layers (the LNF "hidden flow", TextFlow's ``Flow``).

Layer :math:`k = 0` is nearest the data: the data→noise map applies layers
:math:`0, 1, \dots, K-1` and the noise→data map the reverse, as in the authors' code. Orders
alternate between layers (identity for layer 0, reversed for layer 1, ...; or the other way
round with ``reverse_first=True``); for coupling layers that alternates which half is
transformed. Every layer receives the same context.

The composed transform has event_dim 1: ``_call`` is noise→data, ``_inverse`` data→noise and
``log_abs_det_jacobian(eps, z)`` is :math:`\log|\partial z/\partial\epsilon|` summed over the
last dim (shape = batch shape). The direction that is one parallel pass per layer:

=============================  ======================  ======================
layers                          ``_inverse`` (density)  ``_call`` (sampling)
=============================  ======================  ======================
MADE, ``direction="af"``        1 pass per layer         D passes per layer
MADE, ``direction="iaf"``       D passes per layer       1 pass per layer
coupling (either direction)     1 pass per layer         1 pass per layer
=============================  ======================  ======================

The stack computes its log-determinant alongside the values (no per-layer caches involved) and
reuses it only for the very tensors it produced; otherwise it recomputes along the parallel
direction.

Example (a conditional AF/NLSq prior over a ``(B, T, H)`` latent with a ``(B, T, C)`` context):

>>> import pyro.distributions as dist
>>> import torch
>>> flow = conditional_hidden_flow(8, 6, num_layers=3, hidden_dims=(16, 16))
>>> context = torch.randn(2, 5, 6)
>>> prior = dist.TransformedDistribution(dist.Normal(torch.zeros(2, 5, 8), 1.0).to_event(1),
...                                      [flow.condition(context)])
>>> prior.log_prob(torch.randn(2, 5, 8)).shape
torch.Size([2, 5])

References:

| [1] Zachary M. Ziegler, Alexander M. Rush. Latent Normalizing Flows for Discrete Sequences.
|     ICML 2019. https://arxiv.org/abs/1901.10548
"""

from __future__ import annotations

from collections.abc import Sequence

from pyro.distributions.conditional import ConditionalTransformModule
from pyro.distributions.torch_transform import TransformModule
from torch import Tensor, nn
from torch.distributions import constraints

from pyro_lnf.errors import ConfigError
from pyro_lnf.transforms.autoregressive import (
    AutoregressiveFlow,
    ConditionalAutoregressiveFlow,
    _check_direction,
)
from pyro_lnf.transforms.coupling import ConditionalCouplingFlow, CouplingFlow
from pyro_lnf.transforms.coupling import _check_dim as _check_coupling_dim
from pyro_lnf.transforms.base import FlowTransform, elementwise_map
from pyro_lnf.nn.made import MADE, DenseNet

__all__ = [
    "ConditionalHiddenFlow",
    "ConditionedHiddenFlow",
    "HiddenFlow",
    "conditional_hidden_flow",
    "hidden_flow",
]


class ConditionedHiddenFlow(FlowTransform):
    """A composition of :class:`~pyro_lnf.transforms.FlowTransform` layers, layer 0 nearest the
    data (what :meth:`ConditionalHiddenFlow.condition` returns).

    :param layers: event_dim-1 flow layers, layer 0 nearest the data.
    """

    domain = constraints.real_vector
    codomain = constraints.real_vector

    def __init__(self, layers: Sequence[FlowTransform]) -> None:
        super().__init__()
        if not layers:
            raise ConfigError("a hidden flow needs at least one layer")
        self.layers = layers
        self.parallel_inverse = all(layer.parallel_inverse for layer in layers)

    def call_and_ladj(self, x: Tensor) -> tuple[Tensor, Tensor]:
        ladj = 0
        for layer in reversed(self.layers):
            x, layer_ladj = layer.call_and_ladj(x)
            ladj = ladj + layer_ladj
        return x, ladj

    def inverse_and_ladj(self, y: Tensor) -> tuple[Tensor, Tensor]:
        ladj = 0
        for layer in self.layers:
            y, layer_ladj = layer.inverse_and_ladj(y)
            ladj = ladj + layer_ladj
        return y, ladj

    def _recompute_ladj(self, x: Tensor, y: Tensor) -> Tensor:
        if self.parallel_inverse:
            return self.inverse_and_ladj(y)[1]
        return self.call_and_ladj(x)[1]


class HiddenFlow(ConditionedHiddenFlow, TransformModule):
    """A learnable stack of unconditional layers (built by :func:`hidden_flow`)."""

    def __init__(self, layers: Sequence[FlowTransform]) -> None:
        super().__init__(nn.ModuleList(layers))


class ConditionalHiddenFlow(ConditionalTransformModule):
    """A stack of conditional layers; ``condition(context)`` returns a FRESH
    :class:`ConditionedHiddenFlow` with every layer conditioned on the same context."""

    def __init__(self, layers: Sequence[ConditionalTransformModule]) -> None:
        super().__init__()
        if not layers:
            raise ConfigError("a hidden flow needs at least one layer")
        self.layers = nn.ModuleList(layers)

    def condition(self, context: Tensor) -> ConditionedHiddenFlow:
        return ConditionedHiddenFlow([layer.condition(context) for layer in self.layers])


def _layers(
    dim: int,
    context_dim: int,
    num_layers: int,
    coupling: bool,
    transform: str,
    hidden_dims: Sequence[int],
    direction: str,
    reverse_first: bool,
) -> list[nn.Module]:
    if not isinstance(num_layers, int) or num_layers < 1:
        raise ConfigError(f"a hidden flow needs num_layers >= 1, got {num_layers!r}")
    _check_direction(direction)
    if coupling:
        _check_coupling_dim(dim)
    phi = elementwise_map(transform)
    layers: list[nn.Module] = []
    for k in range(num_layers):
        reverse = (k % 2 == 1) != reverse_first
        if coupling:
            net = DenseNet(dim // 2, context_dim, hidden_dims, (dim - dim // 2, phi.num_params))
            cls = ConditionalCouplingFlow if context_dim else CouplingFlow
            layers.append(cls(net, phi, dim, flip=reverse))
        else:
            order = list(reversed(range(dim))) if reverse else None
            made = MADE(dim, context_dim, hidden_dims, phi.num_params, order)
            cls = ConditionalAutoregressiveFlow if context_dim else AutoregressiveFlow
            layers.append(cls(made, phi, direction))
    return layers


def hidden_flow(
    dim: int,
    num_layers: int = 5,
    coupling: bool = False,
    transform: str = "nlsq",
    hidden_dims: Sequence[int] = (100, 100),
    direction: str = "af",
    reverse_first: bool = False,
) -> HiddenFlow:
    """An unconditional stack of ``num_layers`` MADE (or, with ``coupling=True``, split
    coupling) layers over ``dim`` coordinates; see :func:`conditional_hidden_flow`."""
    return HiddenFlow(_layers(dim, 0, num_layers, coupling, transform, hidden_dims, direction,
                              reverse_first))


def conditional_hidden_flow(
    dim: int,
    context_dim: int,
    num_layers: int = 5,
    coupling: bool = False,
    transform: str = "nlsq",
    hidden_dims: Sequence[int] = (100, 100),
    direction: str = "af",
    reverse_first: bool = False,
) -> ConditionalHiddenFlow:
    """K conditional layers over the hidden dim, orders reversed between layers.

    :param dim: D, the hidden size.
    :param context_dim: C, the context size (> 0).
    :param num_layers: K.
    :param coupling: split coupling layers (SCF) instead of MADE layers.
    :param transform: ``"nlsq"`` or ``"affine"``.
    :param hidden_dims: hidden widths of every layer's network (MADE widths must be >= dim).
    :param direction: ``"af"`` (parallel density) or ``"iaf"`` (parallel sampling); coupling
        layers are parallel both ways, so it does not change them.
    :param reverse_first: start with the reversed order (the authors reverse the first layer of
        odd time-flow layers).
    """
    if context_dim < 1:
        raise ConfigError(
            f"conditional_hidden_flow needs context_dim >= 1, got {context_dim}; "
            "use hidden_flow for an unconditional stack"
        )
    return ConditionalHiddenFlow(_layers(dim, context_dim, num_layers, coupling, transform,
                                         hidden_dims, direction, reverse_first))
