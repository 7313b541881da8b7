r"""Split coupling flows (SCF) over the last dimension around any elementwise map.

With :math:`h = \lfloor D/2 \rfloor`, one half of the coordinates passes through unchanged and
the other half is transformed with parameters from an MLP of the pass-through half and the
context ([1] §4.3; the authors' ``SCFLayer``):

.. math::

    z_{\mathrm{id}} = \epsilon_{\mathrm{id}},\qquad
    z_{\mathrm{tr}} = \phi^{-1}(\epsilon_{\mathrm{tr}};\ \theta(z_{\mathrm{id}}, c)),\qquad
    \log\left|\frac{\partial z}{\partial\epsilon}\right| =
    -\sum_{i\in\mathrm{tr}} \log\phi'(z_i;\theta_i).

``flip=False``: the first ``h`` coordinates pass through and the last ``D - h`` are transformed;
``flip=True``: the last ``h`` pass through and the first ``D - h`` are transformed (the authors'
split under the reversed order). Both directions are one network pass: ``_inverse(z)`` applies
the explicit map :math:`\phi`, ``_call(eps)`` its inverse (the float64 cubic for NLSq).

The output is assembled by concatenation, so gradients flow through BOTH halves. The authors'
code copies the input with ``torch.tensor(y)`` and overwrites the transformed half in place,
which silently cuts the gradient of the pass-through half (their coupling gradients are biased);
that bug is deliberately not reproduced.

Example:

>>> flow = conditional_coupling_flow(6, 4, transform="nlsq", hidden_dims=(16,))
>>> t = flow.condition(torch.randn(2, 4))
>>> eps = torch.randn(2, 6)
>>> z = t(eps)
>>> t.log_abs_det_jacobian(eps, z).shape
torch.Size([2])

References:

| [1] Zachary M. Ziegler, Alexander M. Rush. Latent Normalizing Flows for Discrete Sequences.
|     ICML 2019. https://arxiv.org/abs/1901.10548
| [2] Laurent Dinh, Jascha Sohl-Dickstein, Samy Bengio. Density estimation using Real NVP.
|     ICLR 2017. https://arxiv.org/abs/1605.08803
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from pyro.distributions.conditional import ConditionalTransformModule
from pyro.distributions.torch_transform import TransformModule
from torch import Tensor
from torch.distributions import constraints

from pyro_lnf.errors import ConfigError
from pyro_lnf.transforms.base import ElementwiseMap, FlowTransform, elementwise_map
from pyro_lnf.nn.made import DenseNet

__all__ = [
    "ConditionalCouplingFlow",
    "ConditionedCouplingFlow",
    "CouplingFlow",
    "conditional_coupling_flow",
    "coupling_flow",
]


def _check_dim(dim: int) -> int:
    if not isinstance(dim, int) or dim < 2:
        raise ConfigError(f"a coupling flow needs at least 2 dims to split, got dim={dim!r}")
    return dim


def _check_net(net: DenseNet, elementwise_map: ElementwiseMap, dim: int) -> None:
    _check_dim(dim)
    expected_out = (dim - dim // 2, elementwise_map.num_params)
    if net.input_dim != dim // 2 or net.output_shape != expected_out:
        raise ConfigError(
            f"coupling over {dim} dims needs a network {dim // 2} -> {expected_out}, got "
            f"{net.input_dim} -> {net.output_shape}"
        )


class ConditionedCouplingFlow(FlowTransform):
    r"""Coupling flow with the network's context bound (what ``condition`` returns).

    :param net: :class:`~pyro_lnf.transforms.DenseNet` mapping the ``⌊D/2⌋`` pass-through
        coordinates (and the context) to ``(D - ⌊D/2⌋, P)`` raw parameters.
    :param elementwise_map: :math:`\phi`.
    :param dim: D.
    :param flip: transform the first half instead of the second.
    :param context: the context, or ``None``.
    """

    domain = constraints.real_vector
    codomain = constraints.real_vector

    def __init__(
        self,
        net: DenseNet,
        elementwise_map: ElementwiseMap,
        dim: int,
        flip: bool = False,
        context: Tensor | None = None,
    ) -> None:
        super().__init__()
        _check_net(net, elementwise_map, dim)
        self.net = net
        self.elementwise_map = elementwise_map
        self.dim = dim
        self.flip = flip
        self.context = context
        split = dim - dim // 2 if flip else dim // 2
        # first block [0, split), second [split, dim); flip transforms the first
        first, second = slice(0, split), slice(split, dim)
        self._identity, self._transformed = (second, first) if flip else (first, second)

    def _params(self, identity_part: Tensor) -> Tensor:
        return self.net.conditioner(self.context)(identity_part)

    def _join(self, identity_part: Tensor, transformed_part: Tensor) -> Tensor:
        # A context with more leading dims than the input broadcasts the transformed half only.
        identity_part = identity_part.expand(*transformed_part.shape[:-1], identity_part.shape[-1])
        if self.flip:
            return torch.cat((transformed_part, identity_part), dim=-1)
        return torch.cat((identity_part, transformed_part), dim=-1)

    def call_and_ladj(self, x: Tensor) -> tuple[Tensor, Tensor]:
        identity_part = x[..., self._identity]
        params = self._params(identity_part)
        z = self.elementwise_map.inverse(x[..., self._transformed], params)
        log_dedz = self.elementwise_map.forward(z, params)[1]
        return self._join(identity_part, z), -log_dedz.sum(-1)

    def inverse_and_ladj(self, y: Tensor) -> tuple[Tensor, Tensor]:
        identity_part = y[..., self._identity]
        eps, log_dedz = self.elementwise_map.forward(y[..., self._transformed],
                                                     self._params(identity_part))
        return self._join(identity_part, eps), -log_dedz.sum(-1)

    def _recompute_ladj(self, x: Tensor, y: Tensor) -> Tensor:
        params = self._params(y[..., self._identity])
        return -self.elementwise_map.forward(y[..., self._transformed], params)[1].sum(-1)


class CouplingFlow(ConditionedCouplingFlow, TransformModule):
    r"""Learnable split coupling flow (no context); see the module docstring for the math.

    >>> flow = coupling_flow(6, transform="affine", hidden_dims=(16,))
    >>> flow(torch.randn(3, 6)).shape
    torch.Size([3, 6])
    """

    def __init__(
        self, net: DenseNet, elementwise_map: ElementwiseMap, dim: int, flip: bool = False
    ) -> None:
        if net.context_dim:
            raise ConfigError(
                f"CouplingFlow needs a network without context (got context_dim="
                f"{net.context_dim}); use ConditionalCouplingFlow"
            )
        super().__init__(net, elementwise_map, dim, flip)


class ConditionalCouplingFlow(ConditionalTransformModule):
    r"""Split coupling flow whose network also reads a context, :math:`\theta(z_{id}, c)`.

    ``condition(context)`` returns a FRESH :class:`ConditionedCouplingFlow` each call.
    """

    def __init__(
        self, net: DenseNet, elementwise_map: ElementwiseMap, dim: int, flip: bool = False
    ) -> None:
        super().__init__()
        if not net.context_dim:
            raise ConfigError(
                "ConditionalCouplingFlow needs a network with context_dim > 0; use CouplingFlow"
            )
        _check_net(net, elementwise_map, dim)
        self.net = net
        self.elementwise_map = elementwise_map
        self.dim = dim
        self.flip = flip

    def condition(self, context: Tensor) -> ConditionedCouplingFlow:
        return ConditionedCouplingFlow(self.net, self.elementwise_map, self.dim, self.flip,
                                       context)


def coupling_flow(
    dim: int,
    transform: str = "nlsq",
    hidden_dims: Sequence[int] = (100, 100),
    flip: bool = False,
) -> CouplingFlow:
    """A :class:`CouplingFlow` over ``dim`` coordinates with a right-sized MLP."""
    _check_dim(dim)
    phi = elementwise_map(transform)
    net = DenseNet(dim // 2, 0, hidden_dims, (dim - dim // 2, phi.num_params))
    return CouplingFlow(net, phi, dim, flip)


def conditional_coupling_flow(
    dim: int,
    context_dim: int,
    transform: str = "nlsq",
    hidden_dims: Sequence[int] = (100, 100),
    flip: bool = False,
) -> ConditionalCouplingFlow:
    """A :class:`ConditionalCouplingFlow` whose MLP reads ``[z_id, context]``."""
    _check_dim(dim)
    phi = elementwise_map(transform)
    net = DenseNet(dim // 2, context_dim, hidden_dims, (dim - dim // 2, phi.num_params))
    return ConditionalCouplingFlow(net, phi, dim, flip)
