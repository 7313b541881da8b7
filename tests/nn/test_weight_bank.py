"""Deferred weight gradients (WeightBank) and the step-by-step LSTM that uses them.

The reference everywhere is plain autograd on the same float64 computation: the bank must
give the same gradients, only formed in one product after the loop.
"""

from __future__ import annotations

import torch
from torch import nn

from pyro_lnf.nn.lstm import LSTMStepper
from pyro_lnf.nn.weight_bank import WeightBank

F64 = torch.float64


def _loop(weight: torch.Tensor, xs: list[torch.Tensor], product) -> torch.Tensor:
    """A small recurrence h_t = tanh(x_t W^T + h_{t-1}) through ``product``; sum of all h."""
    h = torch.zeros(xs[0].shape[:-1] + (weight.shape[0],), dtype=F64)
    total = 0
    for x in xs:
        h = torch.tanh(product(x) + h)
        total = total + (h * h).sum()
    return total


def _case():
    torch.manual_seed(0)
    weight = torch.randn(6, 4, dtype=F64, requires_grad=True)
    xs = [torch.randn(3, 2, 4, dtype=F64, requires_grad=True) for _ in range(5)]
    return weight, xs


def test_banked_gradients_equal_plain_autograd():
    weight, xs = _case()
    plain = torch.autograd.grad(_loop(weight, xs, lambda x: x @ weight.T), [weight, *xs])
    bank = WeightBank(weight)
    banked = torch.autograd.grad(_loop(weight, xs, bank), [weight, *xs])
    for a, b in zip(plain, banked):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    assert bank.pairs == []


def test_a_slice_of_a_parameter_gets_its_gradient_in_place():
    torch.manual_seed(1)
    full = torch.randn(6, 7, dtype=F64, requires_grad=True)
    xs = [torch.randn(3, 4, dtype=F64) for _ in range(4)]
    plain = torch.autograd.grad(_loop(full[:, :4], xs, lambda x: x @ full[:, :4].T), full)[0]
    banked = torch.autograd.grad(_loop(full[:, :4], xs, WeightBank(full[:, :4])), full)[0]
    torch.testing.assert_close(plain, banked, rtol=1e-12, atol=1e-12)
    assert banked[:, 4:].abs().max() == 0


def test_a_pass_that_stops_short_of_the_weight_leaves_nothing_behind():
    """autograd.grad w.r.t. the inputs only banks pairs but never forms the weight's gradient;
    a later full pass must not count them."""
    weight, xs = _case()
    bank = WeightBank(weight)
    loss = _loop(weight, xs, bank)
    inputs_only = torch.autograd.grad(loss, xs, retain_graph=True)
    plain_loss = _loop(weight, xs, lambda x: x @ weight.T)
    for a, b in zip(torch.autograd.grad(plain_loss, xs, retain_graph=True), inputs_only):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(
        torch.autograd.grad(loss, weight)[0], torch.autograd.grad(plain_loss, weight)[0],
        rtol=1e-12, atol=1e-12,
    )


def test_backward_twice_accumulates_like_plain_autograd():
    weight, xs = _case()
    loss = _loop(weight, xs, WeightBank(weight))
    loss.backward(retain_graph=True)
    loss.backward()
    banked = weight.grad.clone()
    weight.grad = None
    plain = _loop(weight, xs, lambda x: x @ weight.T)
    plain.backward(retain_graph=True)
    plain.backward()
    torch.testing.assert_close(banked, weight.grad, rtol=1e-12, atol=1e-12)


def test_without_gradients_it_is_a_plain_product():
    weight, xs = _case()
    with torch.no_grad():
        bank = WeightBank(weight)
        out = bank(xs[0])
    assert not out.requires_grad and bank.pairs == []
    torch.testing.assert_close(out, xs[0] @ weight.T)


def test_stepper_matches_nn_lstm_in_values_and_gradients():
    """Teacher-forced nn.LSTM against LSTMStepper on the same inputs: outputs, the input
    gradients and every weight's gradient (banked) agree."""
    torch.manual_seed(3)
    lstm = nn.LSTM(3 + 2, 6, num_layers=2, batch_first=True).double()
    u = torch.randn(4, 5, 3, dtype=F64, requires_grad=True)
    known = torch.randn(4, 5, 2, dtype=F64)
    h0 = torch.randn(2, 4, 6, dtype=F64)
    c0 = torch.randn(2, 4, 6, dtype=F64)
    out, _ = lstm(torch.cat([u, known], -1), (h0, c0))
    reference = torch.autograd.grad(out.pow(2).sum(), [u, *lstm.parameters()])

    stepper = LSTMStepper(lstm, known)
    state = (list(h0), list(c0))
    outputs = []
    for t in range(5):
        h, state = stepper.step(t, u[:, t], state)
        outputs.append(h)
    stepped = torch.stack(outputs, 1)
    torch.testing.assert_close(stepped, out, rtol=1e-12, atol=1e-12)
    grads = torch.autograd.grad(stepped.pow(2).sum(), [u, *lstm.parameters()])
    for (name, _), a, b in zip([("u", None), *lstm.named_parameters()], reference, grads):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12, msg=name)
