"""The length model p(T) as a module, so checkpoints and ``.to(device)`` carry it."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from pyro_lnf.distributions.length import LengthDistribution


class LengthModel(nn.Module):
    """Holds the parameters of a :class:`LengthDistribution` as buffers.

    :param lengths: training lengths to fit p(T) on; ``None`` leaves an empty table to be
        filled by ``load_state_dict`` (how a model is rebuilt from a checkpoint).
    """

    def __init__(self, lengths: Sequence[int] | torch.Tensor | None = None) -> None:
        super().__init__()
        if lengths is None:
            fitted = (torch.zeros(0), torch.tensor(0.0), torch.tensor(0.0))
        else:
            p = LengthDistribution.from_lengths(lengths)
            fitted = (p.log_probs_table, p.tail_log_mass, p.tail_log_ratio)
        for name, value in zip(("log_probs_table", "tail_log_mass", "tail_log_ratio"), fitted):
            self.register_buffer(name, value.clone())

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs) -> None:
        # The table's size depends on the data it was fitted on: take the stored size.
        key = prefix + "log_probs_table"
        if key in state_dict:
            self.log_probs_table = torch.empty_like(
                state_dict[key], device=self.tail_log_mass.device
            )
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def distribution(self) -> LengthDistribution:
        if self.log_probs_table.numel() == 0:
            raise RuntimeError("the length model was never fitted nor loaded")
        # Validated once when fitted; re-checking the sum on every model call would sync a GPU.
        return LengthDistribution(
            self.log_probs_table, self.tail_log_mass, self.tail_log_ratio, validate_args=False
        )
