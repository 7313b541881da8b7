"""The emission p(x_t | z, T): every x_t decoded in one pass from the latent sequence."""

from __future__ import annotations

import torch
from torch import nn

from pyro_lnf.nn.features import LengthFeatures, TiedEmbedding
from pyro_lnf.nn.lstm import BiLSTM
from pyro_lnf.nn.precision import bulk_autocast


class Emission(nn.Module):
    r"""Logits of :math:`p(x_t \mid z_{1:T}, T)` for all ``t`` at once.

    A bidirectional LSTM reads :math:`[z_t; c_t]`; the feature at step ``t`` is
    :math:`\phi_t = [z_t; \overrightarrow{h}_t; \overleftarrow{h}_t]`, projected linearly to the
    embedding width and through the tied output matrix:
    :math:`\ell_t = W_{emb} (A \phi_t + a) + b`. The authors use the neighbours' states
    :math:`\overrightarrow{h}_{t-1}, \overleftarrow{h}_{t+1}` to keep :math:`z_t` out of the LSTM
    path, but with two layers that isolation does not hold (textflow-spec §5), so we use the
    plain states. The network never reads ``x``: given ``z`` the ``x_t`` are independent, which is
    what makes decoding parallel.

    ``z`` may carry leading sample dimensions ``(..., B, T, H)``; they are folded into the batch.
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
        in_dim = latent_dim + length_features.position.embedding_dim
        self.rnn = BiLSTM(in_dim, hidden_size, num_layers)
        self.project = nn.Linear(latent_dim + 2 * hidden_size, embedding.weight.shape[1])
        nn.init.uniform_(self.project.weight, -0.07, 0.07)
        nn.init.zeros_(self.project.bias)

    def forward(self, z: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Logits of shape ``z.shape[:-1] + (num_features,)``."""
        batch_shape, (num_steps, latent_dim) = z.shape[:-2], z.shape[-2:]
        flat_z = z.reshape(-1, num_steps, latent_dim)
        flat_lengths = lengths.expand(batch_shape).reshape(-1)
        inputs = torch.cat([flat_z, self.length_features(flat_lengths, num_steps)], -1)
        with bulk_autocast(z.device):
            states = self.rnn(inputs, flat_lengths)
            hidden = self.project(torch.cat([flat_z, states], -1)).to(z.dtype)
        logits = self.embedding.logits(hidden)
        return logits.reshape(*batch_shape, num_steps, -1)
