r"""Autoregressive flows over the last dimension around any elementwise map (MADE conditioner).

Pyro convention (see :mod:`pyro_lnf.transforms.base`): ``_call`` maps noise
:math:`\epsilon` to the sample :math:`z`, ``_inverse`` maps :math:`z` back to :math:`\epsilon`.
With :math:`\phi` the explicit elementwise map (data side to noise side) and :math:`\theta` the
MADE's output:

* **AF direction** (``direction="af"``, density pass parallel, as the LNF prior):
  :math:`\epsilon_i = \phi(z_i;\,\theta_i(z_{<i}))`. ``_inverse(z)`` is ONE MADE pass;
  ``_call(eps)`` is sequential, D MADE passes, solving :math:`z_i = \phi^{-1}(\epsilon_i)` in
  the MADE's order.
* **IAF direction** (``direction="iaf"``, sampling pass parallel):
  :math:`z_i = \phi^{-1}(\epsilon_i;\,\theta_i(\epsilon_{<i}))`. ``_call(eps)`` is one pass;
  ``_inverse(z)`` is sequential: :math:`\epsilon_i = \phi(z_i;\theta_i(\epsilon_{<i}))` in order.

In both, the explicit formula runs data→noise and the inverse of :math:`\phi` (for NLSq the
float64 cubic solve) only noise→data, i.e. only when sampling. The log-determinant is
:math:`\log|\partial z/\partial\epsilon| = -\sum_i \log\phi'(z_i;\theta_i)`, shape = batch shape.
Scoring a sample just drawn (IAF) or just scored (AF) reuses the stashed value; on a cache miss
``log_abs_det_jacobian`` recomputes it with one parallel pass in either direction.

Example (an NLSq AF prior over 50 dims given a 500-dim context, scored in one pass):

>>> import pyro.distributions as dist
>>> flow = conditional_autoregressive_flow(50, 500, transform="nlsq", direction="af")
>>> context = torch.randn(16, 500)
>>> prior = dist.TransformedDistribution(dist.Normal(torch.zeros(16, 50), 1.0).to_event(1),
...                                      [flow.condition(context)])
>>> prior.log_prob(torch.randn(16, 50)).shape
torch.Size([16])

References:

| [1] George Papamakarios, Theo Pavlakou, Iain Murray. Masked Autoregressive Flow for Density
|     Estimation. NeurIPS 2017. https://arxiv.org/abs/1705.07057
| [2] Diederik P. Kingma, Tim Salimans, Rafal Jozefowicz, Xi Chen, Ilya Sutskever, Max Welling.
|     Improving Variational Inference with Inverse Autoregressive Flow. NeurIPS 2016.
|     https://arxiv.org/abs/1606.04934
| [3] Zachary M. Ziegler, Alexander M. Rush. Latent Normalizing Flows for Discrete Sequences.
|     ICML 2019. https://arxiv.org/abs/1901.10548 (§3.2, §4.2 of the authors' code spec)
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
from pyro_lnf.nn.made import MADE, Conditioner

__all__ = [
    "AutoregressiveFlow",
    "ConditionalAutoregressiveFlow",
    "ConditionedAutoregressiveFlow",
    "autoregressive_flow",
    "conditional_autoregressive_flow",
]

_DIRECTIONS = ("af", "iaf")


def _check_direction(direction: str) -> str:
    if direction not in _DIRECTIONS:
        raise ConfigError(f"unknown flow direction {direction!r}: choose 'af' or 'iaf'")
    return direction


def _check_params(made: MADE, elementwise_map: ElementwiseMap) -> None:
    if made.num_params != elementwise_map.num_params:
        raise ConfigError(
            f"the MADE emits {made.num_params} parameters per dim but "
            f"{type(elementwise_map).__name__} needs {elementwise_map.num_params}"
        )


class ConditionedAutoregressiveFlow(FlowTransform):
    r"""Autoregressive flow with the MADE's context bound (what ``condition`` returns).

    The MADE is re-evaluated at every call (its context projection once per call, shared by the
    D passes of a sequential inversion), so nothing stale survives an optimizer step.

    :param made: the conditioner; its ``order`` is the autoregressive order.
    :param elementwise_map: :math:`\phi`, e.g. :class:`~pyro_lnf.transforms.NLSqMap`.
    :param direction: ``"af"`` (parallel ``_inverse``) or ``"iaf"`` (parallel ``_call``).
    :param context: the context for the MADE, or ``None`` when it has none.
    """

    domain = constraints.real_vector
    codomain = constraints.real_vector
    autoregressive = True

    def __init__(
        self,
        made: MADE,
        elementwise_map: ElementwiseMap,
        direction: str = "af",
        context: Tensor | None = None,
    ) -> None:
        super().__init__()
        _check_params(made, elementwise_map)
        self.made = made
        self.elementwise_map = elementwise_map
        self.direction = _check_direction(direction)
        self.context = context
        self.parallel_inverse = direction == "af"

    def _net(self) -> Conditioner:
        return self.made.conditioner(self.context)

    def call_and_ladj(self, x: Tensor) -> tuple[Tensor, Tensor]:
        net = self._net()
        if self.direction == "iaf":
            params = net(x)
            z = self.elementwise_map.inverse(x, params)
            return z, -self.elementwise_map.forward(z, params)[1].sum(-1)
        return self._sequential(x, net, explicit=False)

    def inverse_and_ladj(self, y: Tensor) -> tuple[Tensor, Tensor]:
        net = self._net()
        if self.direction == "af":
            eps, log_dedz = self.elementwise_map.forward(y, net(y))
            return eps, -log_dedz.sum(-1)
        return self._sequential(y, net, explicit=True)

    def _recompute_ladj(self, x: Tensor, y: Tensor) -> Tensor:
        params = self._net()(y if self.direction == "af" else x)
        return -self.elementwise_map.forward(y, params)[1].sum(-1)

    def _sequential(
        self, source: Tensor, net: Conditioner, explicit: bool
    ) -> tuple[Tensor, Tensor]:
        """Build the output one coordinate at a time, in the MADE's order, feeding the partial
        output back into the MADE: AF ``_call`` (``explicit=False``: out = z = φ⁻¹(ε)) and IAF
        ``_inverse`` (``explicit=True``: out = ε = φ(z)). Coordinate i's parameters depend only
        on already-final coordinates, so one pass per coordinate suffices."""
        if not explicit and not torch.is_grad_enabled():
            return self._solve_by_iteration(source, net)
        sequence = self.made.sequence
        # The first coordinate's parameters see only the context; this pass also reveals the
        # batch shape when the context has more leading dims than the input.
        theta = net(torch.zeros_like(source), coordinate=sequence[0])
        shape = torch.broadcast_shapes(source.shape, theta.shape[:-1] + source.shape[-1:])
        source = source.expand(shape)
        out = source.new_zeros(shape)
        ladj = source.new_zeros(shape[:-1])
        for step, i in enumerate(sequence):
            if step:
                theta = net(out, coordinate=i)
            if explicit:
                value, log_dedz = self.elementwise_map.forward(source[..., i], theta)
            else:
                value = self.elementwise_map.inverse(source[..., i], theta)
                log_dedz = self.elementwise_map.forward(value, theta)[1]
            ladj = ladj - log_dedz
            # Out-of-place so that autograd sees every pass (in-place writes into a tensor the
            # MADE already read would break the backward pass).
            out = torch.cat([out[..., :i], value.unsqueeze(-1), out[..., i + 1:]], dim=-1)
        return out, ladj

    def _solve_by_iteration(self, eps: Tensor, net: Conditioner) -> tuple[Tensor, Tensor]:
        r"""AF sampling without gradients: iterate :math:`z \leftarrow \phi^{-1}(\epsilon;
        \theta(z))` on all coordinates at once until :math:`z` stops changing.

        After k sweeps the first k coordinates in the MADE's order are final (each depends only
        on earlier ones), so the iteration reaches the exact fixed point, the inverse the
        coordinate-by-coordinate loop computes (equal up to rounding), in at most D sweeps; a
        weakly coupled flow gets there in far fewer, and each sweep costs about what one
        coordinate's pass costs (both are dominated by per-operation overhead at these sizes).
        Without gradients only: the loop's unrolled graph would not give the inverse's Jacobian
        when it stops early.
        """
        theta = net(torch.zeros_like(eps))
        eps = eps.expand(torch.broadcast_shapes(eps.shape, theta.shape[:-1]))
        z = self.elementwise_map.inverse(eps, theta)
        for _ in range(len(self.made.sequence) - 1):
            z_next = self.elementwise_map.inverse(eps, net(z))
            if torch.equal(z_next, z):
                break
            z = z_next
        return z, -self.elementwise_map.forward(z, net(z))[1].sum(-1)


class AutoregressiveFlow(ConditionedAutoregressiveFlow, TransformModule):
    r"""Learnable autoregressive flow over the last dim around any elementwise map.

    ``direction="af"``: :math:`\epsilon_i = \phi(z_i;\theta_i(z_{<i}))`, parallel density
    (use in a prior); ``direction="iaf"``: :math:`z_i = \phi^{-1}(\epsilon_i;
    \theta_i(\epsilon_{<i}))`, parallel sampling (use in a guide). The sequential direction costs
    D MADE passes; the parallel one and the log-determinant one pass.

    >>> flow = autoregressive_flow(4, transform="nlsq", direction="iaf", hidden_dims=(8,))
    >>> eps = torch.randn(3, 4)
    >>> z = flow(eps)
    >>> flow.log_abs_det_jacobian(eps, z).shape
    torch.Size([3])

    :param made: a :class:`~pyro_lnf.transforms.MADE` without context, ``num_params`` equal to
        the map's.
    :param elementwise_map: :math:`\phi`.
    :param direction: ``"af"`` or ``"iaf"``.
    """

    def __init__(self, made: MADE, elementwise_map: ElementwiseMap, direction: str = "af") -> None:
        if made.context_dim:
            raise ConfigError(
                f"AutoregressiveFlow needs a MADE without context (got context_dim="
                f"{made.context_dim}); use ConditionalAutoregressiveFlow"
            )
        super().__init__(made, elementwise_map, direction)


class ConditionalAutoregressiveFlow(ConditionalTransformModule):
    r"""Autoregressive flow whose MADE also reads a context:
    :math:`\theta_i = \mathrm{MADE}(\cdot_{<i}, c)`.

    ``condition(context)`` returns a FRESH :class:`ConditionedAutoregressiveFlow` on every call:
    Pyro's transform cache matches tensors by identity, so one object must never serve several
    sample sites. The context's batch shape broadcasts against the input's (x ``(K, B, T, D)``
    with context ``(B, T, C)`` works, the context projection being computed once on
    ``(B, T, C)``).

    :param made: a :class:`~pyro_lnf.transforms.MADE` with ``context_dim > 0``.
    :param elementwise_map: :math:`\phi`.
    :param direction: ``"af"`` or ``"iaf"``.
    """

    def __init__(self, made: MADE, elementwise_map: ElementwiseMap, direction: str = "af") -> None:
        super().__init__()
        if not made.context_dim:
            raise ConfigError(
                "ConditionalAutoregressiveFlow needs a MADE with context_dim > 0; "
                "use AutoregressiveFlow for an unconditional flow"
            )
        _check_params(made, elementwise_map)
        self.made = made
        self.elementwise_map = elementwise_map
        self.direction = _check_direction(direction)

    def condition(self, context: Tensor) -> ConditionedAutoregressiveFlow:
        return ConditionedAutoregressiveFlow(self.made, self.elementwise_map, self.direction,
                                             context)


def autoregressive_flow(
    dim: int,
    transform: str = "nlsq",
    direction: str = "af",
    hidden_dims: Sequence[int] = (100, 100),
    order: Sequence[int] | None = None,
) -> AutoregressiveFlow:
    """An :class:`AutoregressiveFlow` over ``dim`` coordinates with a right-sized MADE.

    :param transform: ``"nlsq"`` or ``"affine"``.
    :param order: processing order (a permutation of ``0..dim-1``), identity by default.
    """
    phi = elementwise_map(transform)
    return AutoregressiveFlow(MADE(dim, 0, hidden_dims, phi.num_params, order), phi, direction)


def conditional_autoregressive_flow(
    dim: int,
    context_dim: int,
    transform: str = "nlsq",
    direction: str = "af",
    hidden_dims: Sequence[int] = (100, 100),
    order: Sequence[int] | None = None,
) -> ConditionalAutoregressiveFlow:
    """A :class:`ConditionalAutoregressiveFlow` with a MADE reading a ``context_dim`` context."""
    phi = elementwise_map(transform)
    return ConditionalAutoregressiveFlow(
        MADE(dim, context_dim, hidden_dims, phi.num_params, order), phi, direction
    )
