"""LSTMs over padded sequences: :class:`BiLSTM`, the bidirectional LSTM of the encoder and the
emission, and :class:`LSTMStepper`, which steps an ``nn.LSTM`` one time step at a time for loops
whose next input depends on the last output (sampling an AF-in-time prior, scoring an
IAF-in-time prior, sampling the LSTM baseline)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from pyro_lnf.nn.features import reverse_within_lengths
from pyro_lnf.nn.precision import bulk_autocast
from pyro_lnf.nn.weight_bank import WeightBank

LSTMState = tuple[list[Tensor], list[Tensor]]


class BiLSTM(nn.Module):
    r"""A multi-layer bidirectional LSTM over padded batch-first sequences of known lengths.

    The backward direction runs a forward LSTM over each sequence reversed *within its
    length*, so padding only ever follows the valid steps and never reaches them, exactly as
    with packed sequences. We avoid ``PackedSequence`` because on CPU it falls back to a
    step-by-step kernel whose backward pass computes one weight-gradient GEMM per time step;
    unpacked input takes the fused oneDNN (or cuDNN) path, several times faster.
    Layer ``l + 1`` reads both directions of layer ``l``, as in ``nn.LSTM(bidirectional=True)``.
    Outputs at padded steps are unspecified (finite); mask them downstream.
    """

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1) -> None:
        super().__init__()
        sizes = [input_size] + [2 * hidden_size] * (num_layers - 1)
        self.forward_layers = nn.ModuleList(
            nn.LSTM(size, hidden_size, batch_first=True) for size in sizes
        )
        self.backward_layers = nn.ModuleList(
            nn.LSTM(size, hidden_size, batch_first=True) for size in sizes
        )

    def forward(self, x: Tensor, lengths: Tensor) -> Tensor:
        """``(B, T, 2 * hidden_size)``: forward and backward states at every step."""
        dtype = x.dtype
        # Under bulk_precision the layers pass reduced-precision states to each other, and
        # only the last layer's output is cast back.
        with bulk_autocast(x.device):
            for forward_lstm, backward_lstm in zip(self.forward_layers, self.backward_layers):
                ahead, _ = forward_lstm(x)
                behind, _ = backward_lstm(reverse_within_lengths(x, lengths))
                x = torch.cat([ahead, reverse_within_lengths(behind, lengths)], -1)
        return x.to(dtype)


class LSTMStepper:
    r"""Runs a batch-first unidirectional ``nn.LSTM`` step by step on its own weights.

    Calling ``nn.LSTM`` on one step at a time is slow on CPU: oneDNN prepares its weights again
    at every call, about three times the cost of the arithmetic at small batch sizes. So the
    recurrence is written out, gates in PyTorch's ``(i, f, g, o)`` order,

    .. math::

        (i, f, g, o) = W_{ih} x_t + b_{ih} + W_{hh} h_{t-1} + b_{hh}, \quad
        c_t = \sigma(f) c_{t-1} + \sigma(i) \tanh g, \quad h_t = \sigma(o) \tanh c_t,

    and the part of the first layer's input that is known before the loop (``known``: the
    length features) enters all steps' gates in one product. The first layer's input is
    ``[u_t; known_t]``: ``u_t`` is supplied at each step; ``input_weight`` may replace the
    columns of :math:`W_{ih}` that read it (the baseline folds its embedding into them). In
    training mode the LSTM's inter-layer dropout is applied as ``nn.LSTM`` applies it. With
    gradients on, every per-step product with a weight goes through a
    :class:`~pyro_lnf.nn.weight_bank.WeightBank`, so each weight's gradient is formed once after
    the loop rather than once per step.

    :param lstm: the module whose weights are used (gradients flow to them).
    :param known: ``(N, T, D_k)`` inputs known in advance, the last ``D_k`` input columns.
    :param input_weight: ``(D_u', 4H)`` matrix for the step inputs; by default the first
        ``input_size - D_k`` columns of :math:`W_{ih}`, transposed.
    """

    def __init__(self, lstm: nn.LSTM, known: Tensor, input_weight: Tensor | None = None) -> None:
        if lstm.bidirectional or not lstm.batch_first or lstm.proj_size:
            raise ValueError(
                "LSTMStepper needs a batch-first, unidirectional LSTM without projection"
            )
        self.lstm = lstm
        layers = range(lstm.num_layers)
        # Each step multiplies through a WeightBank: with gradients on, the weights' gradients
        # are formed once after the loop instead of once per step.
        self.w_ih = [WeightBank(getattr(lstm, f"weight_ih_l{k}")) for k in layers[1:]]
        self.w_hh = [WeightBank(getattr(lstm, f"weight_hh_l{k}")) for k in layers]
        self.bias = [
            getattr(lstm, f"bias_ih_l{k}") + getattr(lstm, f"bias_hh_l{k}") for k in layers
        ]
        dynamic = lstm.input_size - known.shape[-1]
        w_ih0 = lstm.weight_ih_l0
        # Split once: indexing [:, t] at every step would make its backward write a zero tensor
        # of the whole (N, T, 4H) size per step.
        self.known_gates = nn.functional.linear(known, w_ih0[:, dynamic:], self.bias[0]).unbind(1)
        self.input_weight = (
            WeightBank(w_ih0[:, :dynamic]) if input_weight is None else WeightBank(input_weight.T)
        )

    def step(self, t: int, u_t: Tensor | None, state: LSTMState) -> tuple[Tensor, LSTMState]:
        """Read ``[u_t; known_t]`` (``u_t = None``: a zero step input) and return the top
        layer's output and the new state (lists of per-layer ``(N, H)`` tensors)."""
        h, c = list(state[0]), list(state[1])
        below = self.known_gates[t]
        if u_t is not None:
            below = below + self.input_weight(u_t)
        dropout = self.lstm.dropout if self.lstm.training else 0.0
        for k in range(self.lstm.num_layers):
            if k:
                below = self.w_ih[k - 1](
                    nn.functional.dropout(h[k - 1], dropout, True) if dropout else h[k - 1]
                ) + self.bias[k]
            i, f, g, o = (below + self.w_hh[k](h[k])).chunk(4, -1)
            c[k] = torch.sigmoid(f) * c[k] + torch.sigmoid(i) * torch.tanh(g)
            h[k] = torch.sigmoid(o) * torch.tanh(c[k])
        return h[-1], (h, c)


def zero_state(lstm: nn.LSTM, batch_size: int, like: Tensor) -> LSTMState:
    """The zero initial state of ``lstm`` for :meth:`LSTMStepper.step`."""
    zeros = like.new_zeros(batch_size, lstm.hidden_size)
    return [zeros] * lstm.num_layers, [zeros] * lstm.num_layers
