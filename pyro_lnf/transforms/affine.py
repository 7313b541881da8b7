r"""The affine elementwise map of [1] §3.1 and the elementwise flows built on it:
:class:`Affine`, :class:`ConditionalAffine` and their factories :func:`affine`,
:func:`conditional_affine`.

Example:

>>> x = torch.randn(3, 4)
>>> params = torch.randn(3, 4, AffineMap.num_params)
>>> y, log_dydx = AffineMap().forward(x, params)
>>> torch.allclose(AffineMap().inverse(y, params), x, atol=1e-6)
True

References:

| [1] Zachary M. Ziegler, Alexander M. Rush. Latent Normalizing Flows for Discrete Sequences.
|     ICML 2019. https://arxiv.org/abs/1901.10548 (affine: §3.1)
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from pyro_lnf.transforms.base import (
    ConditionalElementwise,
    Elementwise,
    conditional_params_net,
    register_elementwise_map,
)

__all__ = ["Affine", "AffineMap", "ConditionalAffine", "affine", "conditional_affine"]


@register_elementwise_map("affine")
class AffineMap:
    r"""The affine map :math:`y = a + b\,x` with :math:`b = \exp(o_1/2)` ([1] §3.1).

    ``params[..., 0]`` is :math:`a = o_0`, ``params[..., 1]`` is :math:`o_1 = \log b^2`;
    :math:`\log(dy/dx) = o_1/2`. The inverse :math:`x = (y - a)\,e^{-o_1/2}` is exact.

    >>> y, log_dydx = AffineMap().forward(torch.tensor([1.0]), torch.tensor([0.5, 2.0]))
    >>> y, log_dydx                                   # 0.5 + e^1 * 1, log dy/dx = 1
    (tensor([3.2183]), tensor([1.]))

    Reference: Ziegler & Rush, "Latent Normalizing Flows for Discrete Sequences", ICML 2019,
    §3.1.
    """

    num_params: int = 2

    def forward(self, x: Tensor, params: Tensor) -> tuple[Tensor, Tensor]:
        shift, log_scale = params[..., 0], 0.5 * params[..., 1]
        y = shift + torch.exp(log_scale) * x
        return y, log_scale.expand_as(y)

    def inverse(self, y: Tensor, params: Tensor) -> Tensor:
        return (y - params[..., 0]) * torch.exp(-0.5 * params[..., 1])


class Affine(Elementwise):
    r"""Learned elementwise affine flow, :math:`y = a + e^{o_1/2} x` per dimension (see
    :class:`AffineMap`).

    >>> import pyro.distributions as dist
    >>> flow = Affine(3)
    >>> d = dist.TransformedDistribution(dist.Normal(torch.zeros(3), 1.0).to_event(1), [flow])
    >>> d.log_prob(d.sample((5,))).shape
    torch.Size([5])

    :param dim: number of coordinates.

    Reference: Ziegler & Rush, "Latent Normalizing Flows for Discrete Sequences", ICML 2019,
    §3.1.
    """

    def __init__(self, dim: int) -> None:
        super().__init__(AffineMap(), dim)


class ConditionalAffine(ConditionalElementwise):
    r""":class:`~pyro_lnf.transforms.ConditionalElementwise` with :class:`AffineMap`: an affine
    flow whose per-dimension shift and log-scale are ``nn(context)``.

    >>> flow = conditional_affine(3, context_dim=4, hidden_dims=(8,))
    >>> conditioned = flow.condition(torch.randn(5, 4))
    >>> x = torch.randn(5, 3)
    >>> torch.allclose(conditioned.inv(conditioned(x)), x, atol=1e-6)
    True

    :param nn: maps context ``(..., C)`` to raw parameters ``(..., dim, 2)``.
    :param dim: number of coordinates.

    Reference: Ziegler & Rush, "Latent Normalizing Flows for Discrete Sequences", ICML 2019,
    §3.1.
    """

    def __init__(self, nn: nn.Module, dim: int) -> None:
        super().__init__(nn, AffineMap(), dim)


def affine(dim: int) -> Affine:
    """A learned elementwise affine flow over ``dim`` coordinates."""
    return Affine(dim)


def conditional_affine(
    dim: int, context_dim: int, hidden_dims: tuple[int, ...] | None = None
) -> ConditionalAffine:
    """Conditional elementwise affine flow; ``hidden_dims=None`` means one linear layer."""
    return ConditionalAffine(
        conditional_params_net(dim, context_dim, AffineMap.num_params, hidden_dims), dim
    )
