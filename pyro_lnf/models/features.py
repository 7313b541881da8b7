"""Input features shared by the encoder, the emission and the baseline.

Length conditioning: the authors feed ``onehot_M(t) ⊕ onehot_M(T − 1 − t)`` (width 2M, M up to
~4800 for MuseData) into every network. A one-hot into a linear layer is a column lookup, so
``W [onehot(t); onehot(r)] = W_pos[t] + W_rem[r]``: two embedding tables give the same function
at a fraction of the cost, and the cost no longer grows with M.
"""

from __future__ import annotations

import torch
from torch import nn


class LengthFeatures(nn.Module):
    r"""Position-and-remaining-steps features :math:`c_t = E_{pos}[t] + E_{rem}[T - 1 - t]`.

    Indices beyond ``max_length - 1`` are clamped, so a test sequence longer than any training
    sequence still gets features (those of the longest position seen). Padded steps
    (``t >= T``) get the features of ``r = 0``; they are masked out downstream.

    :param max_length: number of rows of each table.
    :param dim: feature width.
    """

    def __init__(self, max_length: int, dim: int) -> None:
        super().__init__()
        self.max_length = max_length
        self.position = nn.Embedding(max_length, dim)
        self.remaining = nn.Embedding(max_length, dim)
        for table in (self.position, self.remaining):
            nn.init.uniform_(table.weight, -0.07, 0.07)

    def forward(self, lengths: torch.Tensor, num_steps: int) -> torch.Tensor:
        """Features of shape ``lengths.shape + (num_steps, dim)``."""
        t = torch.arange(num_steps, device=lengths.device)
        remaining = (lengths.unsqueeze(-1) - 1 - t).clamp(0, self.max_length - 1)
        position = t.clamp(max=self.max_length - 1)
        return self.position(position) + self.remaining(remaining)


class TiedEmbedding(nn.Module):
    r"""Input embedding whose matrix is also the output projection (weight tying).

    Characters (``categorical``) embed by row lookup; piano rolls (``binary``) embed a multi-hot
    frame as :math:`x W`, the sum of the rows of its active notes. :meth:`logits` maps a hidden
    vector back through :math:`W^\top` plus a bias, one logit per symbol or key.
    """

    def __init__(self, kind: str, num_features: int, dim: int) -> None:
        super().__init__()
        if kind not in ("categorical", "binary"):
            raise ValueError(f"kind must be 'categorical' or 'binary', not {kind!r}")
        self.kind = kind
        self.weight = nn.Parameter(torch.empty(num_features, dim).uniform_(-0.07, 0.07))
        self.bias = nn.Parameter(torch.zeros(num_features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.kind == "categorical":
            return nn.functional.embedding(x, self.weight)
        return x @ self.weight

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        return nn.functional.linear(hidden, self.weight, self.bias)


def run_packed(
    lstm: nn.LSTM, inputs: torch.Tensor, lengths: torch.Tensor, hidden=None
) -> torch.Tensor:
    """Run ``lstm`` (batch-first) over padded ``inputs`` so padding never reaches valid steps.

    A bidirectional LSTM would otherwise read padding into the backward states of valid steps.
    Outputs at padded steps are zero.
    """
    packed = nn.utils.rnn.pack_padded_sequence(
        inputs, lengths.cpu(), batch_first=True, enforce_sorted=False
    )
    out, _ = lstm(packed, hidden)
    out, _ = nn.utils.rnn.pad_packed_sequence(out, batch_first=True, total_length=inputs.shape[1])
    return out
