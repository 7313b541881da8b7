"""The length-conditioned autoregressive LSTM baseline, with the same NLL accounting."""

from __future__ import annotations


import pyro
import torch
from torch import Tensor, nn

from pyro_lnf.models.decoding import decode_logits, mask_padding
from pyro_lnf.models.registry import register_model
from pyro_lnf.models.sequence import SequenceModel, observation_distribution
from pyro_lnf.nn.lstm import LSTMStepper, zero_state
from pyro_lnf.nn.modes import evaluating


@register_model("lstm", data=("lengths",))
class LSTMBaseline(SequenceModel):
    r"""Autoregressive LSTM: :math:`p(x, T) = p(T) \prod_t p(x_t \mid x_{<t}, T)`.

    The input at step ``t`` is :math:`[\mathrm{emb}(x_{t-1}); c_t]` with :math:`x_{-1}` a zero
    vector and :math:`c_t` the length features, so every prediction, the first included, knows
    ``T`` (in the authors' baseline the first token does not: textflow-spec §12.9). Output
    weights are tied to the input embedding. It has no latent variables: its guide samples
    nothing, so the importance-sampled NLL of :mod:`pyro_lnf.evaluate` is its exact NLL.
    """

    name = "lstm"

    def __init__(
        self,
        *,
        kind: str,
        num_features: int,
        max_length: int,
        lengths: list[int] | torch.Tensor | None = None,
        hidden_size: int = 500,
        embedding_dim: int = 500,
        lstm_layers: int = 2,
        length_dim: int = 64,
        dropout: float = 0.1,
        dataset: str | None = None,
    ) -> None:
        super().__init__(
            kind=kind, num_features=num_features, max_length=max_length, lengths=lengths,
            embedding_dim=embedding_dim, length_dim=length_dim, dropout=dropout,
            hidden_size=hidden_size, lstm_layers=lstm_layers,
        )
        self.rnn = nn.LSTM(
            embedding_dim + length_dim,
            hidden_size,
            lstm_layers,
            batch_first=True,
            dropout=dropout if lstm_layers > 1 else 0.0,
        )
        self.dropout = nn.Dropout(dropout)
        self.project = nn.Linear(hidden_size, embedding_dim)

    def logits(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Teacher-forced logits for every step, one LSTM pass (padding only follows valid steps,
        and the LSTM is causal, so no packing is needed)."""
        embedded = self.dropout(self.embedding(x))
        shifted = torch.cat([torch.zeros_like(embedded[:, :1]), embedded[:, :-1]], 1)
        inputs = torch.cat([shifted, self.length_features(lengths, x.shape[1])], -1)
        out, _ = self.rnn(inputs)
        return self.embedding.logits(self.project(self.dropout(out)))

    def model(self, batch, beta: float = 1.0) -> None:
        pyro.module(self.name, self)
        with pyro.plate("sequences", batch.mask.shape[0], dim=-1):
            pyro.sample("length", self.length_model.distribution(), obs=batch.lengths)
            x_dist = observation_distribution(self.kind, self.logits(batch.x, batch.lengths))
            pyro.sample("x", x_dist.mask(batch.mask).to_event(1), obs=batch.x)

    def guide(self, batch, beta: float = 1.0) -> None:
        pyro.module(self.name, self)

    @torch.no_grad()
    def generate(
        self, lengths: Tensor, *, temperature: float = 1.0, decode: str = "sample"
    ) -> Tensor:
        r"""Sequences of the given lengths, :math:`x_t \sim p(x_t \mid x_{<t}, T)` one step at
        a time in eval mode, each sampled token or frame fed back in with the length features;
        the temperature divides the logits.

        Step t reads :math:`[\mathrm{emb}(x_{t-1}); c_t]` (zeros for :math:`x_{-1}`), exactly
        the input the teacher-forced :meth:`logits` builds, so the logits seen here are those
        :meth:`logits` gives for the finished sequence. The LSTM runs on its own weights
        (:class:`~pyro_lnf.nn.lstm.LSTMStepper`: one ``nn.LSTM`` call per step is ~3x slower on
        CPU) with the length features' share of the gates computed for all steps at once; the
        input embedding is folded into the first layer's input weights
        (:math:`\mathrm{emb}(x) W^\top = x\,(E W^\top)` for a one-hot or multi-hot x) and the
        projection into the tied output matrix, so a step costs the recurrence and one small
        product. Dropout is the identity in eval mode, so it is not applied.

        :param lengths: ``(N,)``, e.g. drawn from p(T): ``self.length_model.distribution()``.
        :param decode: ``"sample"`` or ``"mode"`` (:mod:`pyro_lnf.models.decoding`).
        :returns: ``x`` padded to ``max(lengths)`` steps, 0 at padded steps.
        """
        steps = int(lengths.max())
        with evaluating(self):
            rnn, embedding = self.rnn, self.embedding
            width = embedding.weight.shape[1]
            stepper = LSTMStepper(rnn, self.length_features(lengths, steps),
                                  input_weight=embedding.weight @ rnn.weight_ih_l0[:, :width].T)
            out_weight = embedding.weight @ self.project.weight
            out_bias = embedding.logits(self.project.bias)
            state = zero_state(rnn, lengths.shape[0], out_weight)
            x_t: Tensor | None = None
            xs = []
            for t in range(steps):
                if x_t is not None and self.kind == "categorical":
                    x_t = nn.functional.one_hot(x_t, out_weight.shape[0]).to(out_weight.dtype)
                top, state = stepper.step(t, x_t, state)
                logits = nn.functional.linear(top, out_weight, out_bias) / temperature
                x_t = decode_logits(self.kind, logits, decode)
                xs.append(x_t)
            return mask_padding(torch.stack(xs, 1), lengths)
