"""The inference network q(z | x, T) of the latent-flow model."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.functional import softplus

from pyro_lnf.nn.features import LengthFeatures, TiedEmbedding
from pyro_lnf.nn.lstm import BiLSTM

#: Floor of every Gaussian posterior scale: softplus underflows to exactly 0 in float32 below
#: about -88, and a zero scale makes log q(z | x) infinite.
MIN_SCALE = 1e-4


def positive_scale(raw: torch.Tensor) -> torch.Tensor:
    r""":math:`\sigma = \operatorname{softplus}(\text{raw}) + 10^{-4}`, never zero."""
    return softplus(raw) + MIN_SCALE


class SequenceEncoder(nn.Module):
    r"""Mean-field Gaussian posterior :math:`q(z_{1:T} \mid x, T) = \prod_t \mathcal N(z_t;
    \mu_t, \operatorname{diag}\sigma_t^2)`.

    A bidirectional LSTM reads :math:`[\mathrm{emb}(x_t); c_t]` (``c_t`` the length features) and a
    linear layer maps its output at step ``t`` to :math:`(\mu_t, \sigma_t)`, with
    :math:`\sigma = \operatorname{softplus}(\cdot) + 10^{-4}` (the authors use
    :math:`\exp(\tfrac12 \log\sigma^2)`, which overflows more easily early in training).
    Every step sees the whole sequence, as in Ziegler & Rush (2019, §4).
    """

    def __init__(
        self,
        embedding: TiedEmbedding,
        length_features: LengthFeatures,
        latent_dim: int,
        hidden_size: int = 500,
        num_layers: int = 2,
    ) -> None:
        super().__init__()
        self.embedding = embedding
        self.length_features = length_features
        in_dim = embedding.weight.shape[1] + length_features.position.embedding_dim
        self.rnn = BiLSTM(in_dim, hidden_size, num_layers)
        self.out = nn.Linear(2 * hidden_size, 2 * latent_dim)
        nn.init.uniform_(self.out.weight, -0.07, 0.07)
        nn.init.zeros_(self.out.bias)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Return ``(loc, scale)``, each ``(B, T, latent_dim)``."""
        num_steps = x.shape[1]
        inputs = torch.cat([self.embedding(x), self.length_features(lengths, num_steps)], -1)
        loc, raw_scale = self.out(self.rnn(inputs, lengths)).chunk(2, dim=-1)
        return loc, positive_scale(raw_scale)
