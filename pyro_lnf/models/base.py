"""The contracts between models and the training, evaluation and sampling code.

A model is an ``nn.Module`` with a Pyro ``model`` and ``guide`` over one batch. Training
(:mod:`pyro_lnf.train`) optimises ``Trace_ELBO`` of the pair, and evaluation
(:mod:`pyro_lnf.evaluate`) importance-weights guide samples against the model, so any module
that honours this contract (the latent-flow model, the LSTM baseline, the sentence VAE, NVDM)
gets checkpoints, annealing, resume and importance-sampled likelihoods for free.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import torch


@runtime_checkable
class LatentVariableModel(Protocol):
    """What :mod:`pyro_lnf.train` and :mod:`pyro_lnf.evaluate` need of a model.

    - ``model(batch, beta)`` and ``guide(batch, beta)`` are Pyro programs over one batch. Every
      per-sequence site lives inside ``pyro.plate("sequences", B, dim=-1)``, so a site's
      log-density has batch shape ``(B,)`` (or ``(K, B)`` under vectorised particles), which is
      what makes per-sequence importance weights possible. Latent sites are wrapped in
      ``poutine.scale(scale=beta)`` in *both* programs, so ``beta`` anneals the KL term only.
      A model without latents (the LSTM baseline) has a guide that samples nothing.
    - ``normalizer(batch)`` gives the number of units each sequence is scored over in the
      paper's accounting (for sequences, ``T + 1``: every step plus the length), shape ``(B,)``.
    - ``config`` holds the constructor's keyword arguments (JSON-serialisable), so a checkpoint
      can rebuild the module before loading its weights.
    - ``name`` is the ``pyro.module`` name the programs register the module under.
    """

    name: str
    config: dict[str, Any]

    def model(self, batch: Any, beta: float = 1.0) -> None: ...

    def guide(self, batch: Any, beta: float = 1.0) -> None: ...

    def normalizer(self, batch: Any) -> torch.Tensor: ...


@runtime_checkable
class SequenceGenerator(Protocol):
    """What :func:`pyro_lnf.sample.sample_sequences` needs of a model, beyond the contract
    above: a length model :math:`p(T)` to draw lengths from, and ``generate``, which draws
    one sequence per length (long ids ``(N, T)`` for categorical data, 0/1 frames ``(N, T, F)``
    for binary data, 0 past each length). The latent-flow models and the LSTM baseline
    honour it; any other model that does is sampled the same way."""

    length_model: Any  # with .distribution(), a p(T) over lengths

    def generate(self, lengths: torch.Tensor, *, temperature: float = 1.0,
                 decode: str = "sample") -> torch.Tensor: ...

