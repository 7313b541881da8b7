"""What the two sequence models, the latent-flow model and the LSTM baseline, share: the
length model :math:`p(T)` fitted to the training lengths, the input embedding whose transpose
is the output projection, the length features every network reads, the per-step emission
distribution and the paper's accounting of ``T + 1`` units per sequence."""

from __future__ import annotations

from typing import Any

import pyro.distributions as dist
import torch
from torch import nn

from pyro_lnf.models.length import LengthModel
from pyro_lnf.nn.checks import check_sizes
from pyro_lnf.nn.features import LengthFeatures, TiedEmbedding

__all__ = ["SequenceModel", "observation_distribution"]


def observation_distribution(kind: str, logits: torch.Tensor) -> dist.TorchDistribution:
    """Per-step emission: a categorical over characters or 88 Bernoullis over piano keys;
    batch ``logits.shape[:-1]``, no event dims."""
    if kind == "categorical":
        return dist.Categorical(logits=logits)
    return dist.Bernoulli(logits=logits).to_event(1)


class SequenceModel(nn.Module):
    """Base of the sequence models: builds the shared parts, first and in this order (the
    order of ``parameters()``, which the optimizer's saved state follows), after checking
    every size and the dropout.

    :param kind: ``"categorical"`` (characters) or ``"binary"`` (piano rolls).
    :param num_features: vocabulary size or number of keys.
    :param max_length: rows of the length-feature tables.
    :param lengths: the training lengths :math:`p(T)` is fitted to (``None``: restored with the
        weights).
    :param sizes: the subclass's other sizes, checked with these.
    """

    def __init__(self, *, kind: str, num_features: int, max_length: int,
                 lengths: Any, embedding_dim: int, length_dim: int, dropout: float,
                 **sizes: int) -> None:
        super().__init__()
        check_sizes(dropout, num_features=num_features, max_length=max_length,
                    embedding_dim=embedding_dim, length_dim=length_dim, **sizes)
        self.kind = kind
        self.length_model = LengthModel(lengths)
        self.embedding = TiedEmbedding(kind, num_features, embedding_dim)
        self.length_features = LengthFeatures(max_length, length_dim)

    def normalizer(self, batch: Any) -> torch.Tensor:
        """``T + 1`` per sequence: every step plus the length (the paper's accounting)."""
        return batch.lengths.to(torch.get_default_dtype()) + 1
