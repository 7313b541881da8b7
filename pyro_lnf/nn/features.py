"""Input features shared by the encoder, the emission, the baseline and the prior across time:
length features (:class:`LengthFeatures`), the tied input/output embedding
(:class:`TiedEmbedding`) and the reversal of padded sequences within their lengths
(:func:`reverse_within_lengths`).

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
    :param init_range: the tables start uniform in ``[-init_range, init_range]``; ``None``
        keeps ``nn.Embedding``'s standard normal start, which the prior across time
        (:class:`~pyro_lnf.transforms.temporal.TemporalFlow`) has always used: changing it
        would change every seeded figure of the flow models.
    """

    def __init__(self, max_length: int, dim: int, init_range: float | None = 0.07) -> None:
        super().__init__()
        self.max_length = max_length
        self.position = nn.Embedding(max_length, dim)
        self.remaining = nn.Embedding(max_length, dim)
        if init_range is not None:
            for table in (self.position, self.remaining):
                nn.init.uniform_(table.weight, -init_range, init_range)

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


def reverse_within_lengths(x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Reverse each sequence's first ``lengths[b]`` steps in place of order; padding stays put.

    ``x`` is batch-first ``(B, T, ...)``. Applying it twice is the identity.
    """
    num_seqs, num_steps = x.shape[:2]
    t = torch.arange(num_steps, device=x.device)
    index = torch.where(t < lengths[:, None], lengths[:, None] - 1 - t, t)
    # Whole rows by flat index: index_select copies each step's features as one block, where
    # gather with an expanded index addresses them element by element (3x slower here).
    rows = index + num_steps * torch.arange(num_seqs, device=x.device)[:, None]
    return x.flatten(0, 1).index_select(0, rows.flatten()).view_as(x)
