r"""Conditioner networks: MADE (masked, autoregressive) and a plain MLP for coupling layers.

Both take an optional context whose batch shape only has to broadcast against the input's
(e.g. x ``(K, B, T, D)`` with context ``(B, T, C)``): the first layer is split into an input
part and a context part, and the context part is computed once, on the context's own shape, and
broadcast-added. ``conditioner(context)`` returns a closure ``x -> params`` that has the masked
weights and the context projection precomputed, which is what the sequential (D-pass) inversions
reuse on every pass.

References:

| [1] Mathieu Germain, Karol Gregor, Iain Murray, Hugo Larochelle. MADE: Masked Autoencoder for
|     Distribution Estimation. ICML 2015. https://arxiv.org/abs/1502.03509
| [2] Zachary M. Ziegler, Alexander M. Rush. Latent Normalizing Flows for Discrete Sequences.
|     ICML 2019. https://arxiv.org/abs/1901.10548 (code: harvardnlp/TextFlow, MADE.py)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pyro_lnf.errors import ConfigError

__all__ = ["Conditioner", "DenseNet", "MADE"]

Conditioner = Callable[..., Tensor]
"""A network with its context bound: input ``(..., D_in)`` to raw parameters."""


def _check_context(context: Tensor | None, context_dim: int, owner: str) -> None:
    if context_dim == 0 and context is not None:
        raise ConfigError(f"{owner} was built without a context (context_dim=0) but got one")
    if context_dim > 0:
        if context is None:
            raise ConfigError(f"{owner} was built with context_dim={context_dim}: pass a context")
        if context.shape[-1] != context_dim:
            raise ConfigError(
                f"{owner} expects a context of size {context_dim} in its last dim, "
                f"got shape {tuple(context.shape)}"
            )


def _check_input(x: Tensor, input_dim: int, owner: str) -> None:
    if x.shape[-1] != input_dim:
        raise ConfigError(
            f"{owner} expects inputs of size {input_dim} in the last dim, got {tuple(x.shape)}"
        )


class MADE(nn.Module):
    r"""Masked autoregressive MLP with a context input, with the degree rules of TextFlow [2].

    Output ``(..., D, P)``: the ``P`` raw parameters of coordinate :math:`i` depend only on the
    coordinates :math:`j` with ``order[j] < order[i]`` and on the context.

    Degrees (all masks non-strict, ``mask[k, j] = deg_out(k) >= deg_in(j)``):

    * inputs: coordinate :math:`j` has degree ``order[j] + 1``; context inputs have degree 0,
      so they reach every hidden unit (their weights need no mask);
    * hidden units: degrees ``0, 1, …, D-1`` tiled over the layer's width (a degree-0 unit sees
      only the context), hence a hidden layer narrower than ``D`` cannot carry every degree and
      is refused;
    * outputs: parameter ``p`` of coordinate ``i`` has degree ``order[i]``; strictness comes from
      the input degrees being shifted by one.

    ReLU between layers. Initialisation as the authors': hidden (and context) weights
    uniform(±0.001) with zero biases, the output layer PyTorch's default (±1/√fan_in for weights
    and bias), so every flow built on it starts close to the identity.

    >>> made = MADE(4, context_dim=3, hidden_dims=(8, 8), num_params=5)
    >>> made(torch.randn(2, 4), torch.randn(2, 3)).shape
    torch.Size([2, 4, 5])

    :param input_dim: D, the number of autoregressive coordinates.
    :param context_dim: C, size of the context (0 for none).
    :param hidden_dims: widths of the hidden layers, each at least ``input_dim``.
    :param num_params: P, raw parameters per coordinate.
    :param order: a permutation of ``0..D-1``; coordinate ``j`` is processed ``order[j]``-th.
        Default: the identity.
    """

    def __init__(
        self,
        input_dim: int,
        context_dim: int = 0,
        hidden_dims: Sequence[int] = (100, 100),
        num_params: int = 5,
        order: Sequence[int] | Tensor | None = None,
    ) -> None:
        super().__init__()
        if input_dim < 1 or context_dim < 0 or num_params < 1:
            raise ConfigError(
                f"MADE needs input_dim >= 1, context_dim >= 0 and num_params >= 1, got "
                f"{input_dim}, {context_dim} and {num_params}"
            )
        for width in hidden_dims:
            if width < input_dim:
                raise ConfigError(
                    f"MADE hidden layer of width {width} is narrower than the input dimension "
                    f"{input_dim}: every hidden layer needs at least {input_dim} units so that "
                    f"all {input_dim} degrees are represented"
                )
        order_list = list(range(input_dim)) if order is None else [int(o) for o in order]
        if sorted(order_list) != list(range(input_dim)):
            raise ConfigError(
                f"MADE order must be a permutation of 0..{input_dim - 1}, got {order_list}"
            )
        self.input_dim = input_dim
        self.context_dim = context_dim
        self.hidden_dims = tuple(hidden_dims)
        self.num_params = num_params
        # order and masks are derived from the constructor's arguments, never learned: keep them
        # out of the state_dict so a checkpoint can never pair them inconsistently.
        self.register_buffer("order", torch.tensor(order_list), persistent=False)
        # Coordinates in processing order, as Python ints: the sequential inversions index with
        # them and must not synchronise with an accelerator on every pass.
        self.sequence: tuple[int, ...] = tuple(sorted(range(input_dim), key=order_list.__getitem__))

        order_t = torch.tensor(order_list)
        degrees = [order_t + 1] + [torch.arange(w) % input_dim for w in self.hidden_dims]
        degrees.append(order_t.repeat_interleave(num_params))  # output unit i*P + p -> order[i]
        self.weights = nn.ParameterList()
        self.biases = nn.ParameterList()
        for k, (deg_in, deg_out) in enumerate(zip(degrees[:-1], degrees[1:])):
            self.register_buffer(f"mask{k}", deg_out[:, None] >= deg_in[None, :],
                                 persistent=False)
            layer = nn.Linear(len(deg_in), len(deg_out))
            if k < len(self.hidden_dims):
                nn.init.uniform_(layer.weight, -0.001, 0.001)
                nn.init.zeros_(layer.bias)
            self.weights.append(layer.weight)
            self.biases.append(layer.bias)
        self.context_weight: nn.Parameter | None = None
        if context_dim:
            first_width = degrees[1].numel()
            bound = 0.001 if self.hidden_dims else 1.0 / context_dim**0.5
            self.context_weight = nn.Parameter(
                torch.empty(first_width, context_dim).uniform_(-bound, bound)
            )

    def masks(self) -> list[Tensor]:
        """The boolean connectivity masks, input layer first (True where a weight is allowed)."""
        return [getattr(self, f"mask{k}") for k in range(len(self.weights))]

    def conditioner(self, context: Tensor | None = None) -> Conditioner:
        """``x -> params`` with masked weights and the context projection computed once.

        The returned ``net(x)`` gives ``(..., D, P)``; ``net(x, coordinate=i)`` gives only
        coordinate ``i``'s ``(..., P)``, evaluating just those ``P`` output units (a sequential
        inversion needs one coordinate per pass, and the output layer is the widest).
        """
        _check_context(context, self.context_dim, "MADE")
        weights = [w * m for w, m in zip(self.weights, self.masks())]
        biases = list(self.biases)
        context_term = None
        if context is not None:
            context_term = F.linear(context, self.context_weight)
        num_params, last = self.num_params, len(weights) - 1

        def net(x: Tensor, coordinate: int | None = None) -> Tensor:
            _check_input(x, self.input_dim, "MADE")
            rows = slice(None) if coordinate is None else slice(
                coordinate * num_params, (coordinate + 1) * num_params)
            h = x
            for k, (weight, bias) in enumerate(zip(weights, biases)):
                if k:
                    h = torch.relu(h)
                if k == last:
                    weight, bias = weight[rows], bias[rows]
                h = F.linear(h, weight, bias)
                if k == 0 and context_term is not None:
                    h = h + (context_term[..., rows] if k == last else context_term)
            return h.unflatten(-1, (self.input_dim, num_params)) if coordinate is None else h

        return net

    def forward(self, x: Tensor, context: Tensor | None = None) -> Tensor:
        return self.conditioner(context)(x)


class DenseNet(nn.Module):
    r"""Plain ReLU MLP ``[x, context] -> (..., *output_shape)``, the coupling conditioner of [2]
    (§4.3: weights uniform(±0.07), zero biases).

    :param input_dim: size of x (the pass-through half of a coupling layer).
    :param context_dim: size of the context (0 for none).
    :param hidden_dims: hidden widths; empty for a single linear layer.
    :param output_shape: trailing shape of the output, e.g. ``(D_transformed, P)``.
    """

    def __init__(
        self,
        input_dim: int,
        context_dim: int,
        hidden_dims: Sequence[int],
        output_shape: Sequence[int],
    ) -> None:
        super().__init__()
        self.input_dim = input_dim
        self.context_dim = context_dim
        self.output_shape = tuple(output_shape)
        widths = [input_dim, *hidden_dims, int(torch.Size(self.output_shape).numel())]
        self.layers = nn.ModuleList(nn.Linear(i, o) for i, o in zip(widths[:-1], widths[1:]))
        self.context_layer = nn.Linear(context_dim, widths[1], bias=False) if context_dim else None
        for layer in [*self.layers, self.context_layer]:
            if layer is not None:
                nn.init.uniform_(layer.weight, -0.07, 0.07)
                if layer.bias is not None:
                    nn.init.zeros_(layer.bias)

    def conditioner(self, context: Tensor | None = None) -> Conditioner:
        """``x -> params`` with the context projection computed once."""
        _check_context(context, self.context_dim, "DenseNet")
        context_term = self.context_layer(context) if context is not None else None

        def net(x: Tensor) -> Tensor:
            _check_input(x, self.input_dim, "DenseNet")
            h = self.layers[0](x)
            if context_term is not None:
                h = h + context_term
            for layer in self.layers[1:]:
                h = layer(torch.relu(h))
            return h.unflatten(-1, self.output_shape)

        return net

    def forward(self, x: Tensor, context: Tensor | None = None) -> Tensor:
        return self.conditioner(context)(x)
