r"""Deferred weight gradients for loops over time.

A weight :math:`W` used at every step of a loop, :math:`y_t = x_t W^\top`, has the gradient
:math:`\sum_t \bar y_t^\top x_t`. Autograd forms it step by step: one thin product
(:math:`\bar y_t^\top x_t` with inner size = the batch) and one accumulation into a
:math:`W`-sized buffer per step. At the batch sizes of the paper (5 sequences) these thin
products are memory bound, and for the 2000 × 500 LSTM weights of the IAF-in-time density loop
they cost more than the rest of the backward pass. A :class:`WeightBank` instead keeps the pairs
:math:`(x_t, \bar y_t)` during the backward pass and forms the gradient once, as
:math:`\bar Y^\top X` over all steps: the same sum, one well-shaped product.

How: the weight enters the loop through one node, :class:`_SharedWeight`, an alias whose
backward runs after every step that used it (autograd only runs a node once all of its outputs'
gradients are in). Each step's product, :class:`_BankedProduct`, returns the gradient of its
input and only banks its pair. Pairs are tagged with the backward pass (graph task) that made
them, so that a pass which stops short of the weight (``torch.autograd.grad`` with respect to
the inputs only) leaves nothing behind for a later one. First-order gradients only.

It pays for large weights only: the two custom autograd nodes cost tens of microseconds per
step, more than the thin product they save for the small networks of the hidden flow (measured:
banking those too made the IAF/SCF density loop about 5% slower), so only the time LSTM's
weights are banked (:class:`~pyro_lnf.nn.lstm.LSTMStepper`).

Example::

    bank = WeightBank(lstm.weight_hh_l0)
    for t in range(T):
        gates = bank(h) + ...        # h @ weight_hh_l0.T
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["WeightBank", "current_graph_task"]


def current_graph_task() -> int:
    """The id of the backward pass (autograd graph task) running now; -1 outside one.

    Torch's only way to tell two backward passes apart, a private API
    (``torch._C._current_graph_task_id``): this is its one use, and
    ``tests/test_private_api.py`` checks the behaviour relied on.
    """
    return torch._C._current_graph_task_id()


class WeightBank:
    """Products ``x @ weight.T`` whose weight gradient is formed once, after the loop.

    Outside of autograd (no gradient needed, or grad mode off when the bank is made) it is a
    plain product.

    :param weight: ``(out, in)``, e.g. a parameter or a slice of one.
    """

    def __init__(self, weight: Tensor) -> None:
        self.weight = weight
        self.pairs: list[tuple[int, Tensor, Tensor]] = []
        deferred = weight.requires_grad and torch.is_grad_enabled()
        self._shared = _SharedWeight.apply(weight, self) if deferred else None

    def __call__(self, x: Tensor) -> Tensor:
        if self._shared is None or not torch.is_grad_enabled():
            return x @ self.weight.T
        return _BankedProduct.apply(x, self._shared, self)

    def _take_gradient(self) -> Tensor | None:
        """Sum of ``grad.T @ x`` over this backward pass's pairs; forgets every pair."""
        task = current_graph_task()
        mine = [(x, g) for tag, x, g in self.pairs if tag == task]
        self.pairs = []
        if not mine:
            return None
        inputs, grads = zip(*mine)
        return torch.cat(grads).T @ torch.cat(inputs)


class _SharedWeight(torch.autograd.Function):
    @staticmethod
    def forward(ctx, weight: Tensor, bank: WeightBank) -> Tensor:
        ctx.bank = bank
        return weight.view_as(weight)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None]:
        banked = ctx.bank._take_gradient()
        return (grad if banked is None else grad + banked), None


class _BankedProduct(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, bank: WeightBank) -> Tensor:
        ctx.save_for_backward(x, weight)
        ctx.bank = bank
        return x @ weight.T

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad: Tensor) -> tuple[Tensor | None, None, None]:
        x, weight = ctx.saved_tensors
        task = current_graph_task()
        ctx.bank.pairs.append((task, x.reshape(-1, x.shape[-1]), grad.reshape(-1, grad.shape[-1])))
        return (grad @ weight if ctx.needs_input_grad[0] else None), None, None
