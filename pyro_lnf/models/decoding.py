"""Turning per-step logits into sequences: what the latent-flow model and the LSTM baseline
share when they generate.

``"sample"`` draws from each step's distribution (a sample of the model's distribution);
``"mode"`` takes its most likely value (argmax for characters, :math:`\\sigma(\\ell) > 0.5` for
piano keys), the authors' default for the flows, where ``z`` stays random.
"""

from __future__ import annotations

import torch
from torch import Tensor

from pyro_lnf.errors import ConfigError

__all__ = ["DECODINGS", "check_decode", "decode_logits", "mask_padding"]

DECODINGS = ("sample", "mode")


def check_decode(decode: str) -> None:
    """Refuse a decoding other than :data:`DECODINGS`."""
    if decode not in DECODINGS:
        raise ConfigError(f"unknown decoding {decode!r}; choose 'sample' or 'mode'")


def decode_logits(kind: str, logits: Tensor, decode: str) -> Tensor:
    """x from per-step logits: long ids (categorical) or 0/1 frames in the logits' dtype."""
    if kind == "categorical":
        if decode == "mode":
            return logits.argmax(-1)
        return torch.distributions.Categorical(logits=logits).sample()
    if decode == "mode":
        return (logits > 0).to(logits.dtype)  # sigma(l) > 0.5
    return torch.bernoulli(torch.sigmoid(logits))


def mask_padding(x: Tensor, lengths: Tensor) -> Tensor:
    """Zero the steps ``t >= length`` (they are not part of any sequence)."""
    valid = torch.arange(x.shape[1], device=x.device) < lengths[:, None]
    if x.dim() == 3:
        valid = valid.unsqueeze(-1)
    return x * valid.to(x.dtype)
