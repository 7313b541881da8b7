r"""The neural variational document model (Miao et al. 2016) with a Gaussian or von
Mises–Fisher latent (Xu & Durrett 2018), as a Pyro model and guide.

:class:`NVDM` (registered as ``"nvdm"``) encodes a bag of words with an MLP and decodes it with
:math:`\operatorname{softmax}(Wz + b)`; the latent and the ``z`` site are those of
:mod:`pyro_lnf.models.latent_head`.

References:
  Y. Miao, L. Yu, P. Blunsom, "Neural Variational Inference for Text Processing", ICML 2016.
  J. Xu, G. Durrett, "Spherical Latent Spaces for Stable Variational Autoencoders", EMNLP 2018.
"""

from __future__ import annotations

from typing import Any

import pyro
import torch
from torch import nn

from pyro_lnf.errors import ConfigError
from pyro_lnf.models.latent_head import LatentHead, VAEMixin
from pyro_lnf.models.registry import register_model
from pyro_lnf.nn.checks import check_sizes

__all__ = ["NVDM"]


@register_model("nvdm")
class NVDM(VAEMixin, nn.Module):
    r"""Neural variational document model (Miao et al. 2016) with a Gaussian or vMF latent.

    .. math::

        z \sim p(z), \qquad
        \log p(x \mid z) = \sum_{v=1}^{V} n_v \log \operatorname{softmax}(W z + b)_v,

    the log-probability of the document's :math:`N = \sum_v n_v` words drawn independently
    given ``z``, in any one fixed order (the count vector ``n`` is the observation). This is
    the quantity NVDM's perplexity measures; a multinomial likelihood of the counts would add the
    data-only constant :math:`\log N! - \sum_v \log n_v!`. It enters the model as a
    ``pyro.factor`` named ``"x"`` inside the plate (an observed site, one term per document).

    Encoder: :math:`h = \tanh(W_2 \tanh(W_1 n + b_1) + b_2)` on the raw counts, then
    :class:`LatentHead`; dropout on the first hidden layer.

    Perplexity is averaged per document, :math:`\exp(\frac1D \sum_d \mathrm{NLL}_d / N_d)`, as
    NVDM and Xu & Durrett report it (:attr:`perplexity_average`).

    :param vocab_size: ``V`` (20News: 2000).
    :param latent: ``"gaussian"`` or ``"vmf"``.
    :param latent_dim: ``d`` (Xu & Durrett, 20News: 25; RCV1: 50).
    :param kappa: the vMF's fixed κ (20News: 100; RCV1: 150).
    :param hidden_size: encoder width (20News: 400).
    :param dropout: on the encoder's first hidden layer (0.1).
    :param dataset: name of the dataset the model is for (kept in checkpoints for ``lnf evaluate``).

    Example::

        >>> from pyro_lnf.datasets import collate
        >>> documents = [torch.randint(0, 2000, (30,)) for _ in range(50)]  # word ids
        >>> batch = collate(documents, range(50), bow_size=2000)   # (50, 2000) word counts
        >>> nvdm = NVDM(2000, latent="vmf")
        >>> kl = nvdm.analytic_kl(batch)                   # (50,), all equal for the vMF
        >>> bool(torch.allclose(kl, kl[0]))
        True

    Reference: Miao, Yu & Blunsom (2016), §3.1; Xu & Durrett (2018), §4.
    """

    name = "nvdm"
    #: Per-document perplexity: exp(mean_d NLL_d / N_d), NVDM's convention.
    perplexity_average = "document"

    def __init__(
        self,
        vocab_size: int = 2000,
        *,
        latent: str = "gaussian",
        latent_dim: int = 25,
        kappa: float = 100.0,
        hidden_size: int = 400,
        dropout: float = 0.1,
        dataset: str | None = None,
    ) -> None:
        super().__init__()
        check_sizes(dropout, vocab_size=vocab_size, hidden_size=hidden_size)
        self.encoder = nn.Sequential(
            nn.Linear(vocab_size, hidden_size),
            nn.Dropout(dropout),
            nn.Tanh(),
            nn.Linear(hidden_size, hidden_size),
            nn.Tanh(),
        )
        self.head = LatentHead(hidden_size, latent, latent_dim, kappa)
        self.output = nn.Linear(latent_dim, vocab_size)

    def normalizer(self, batch: Any) -> torch.Tensor:
        """Words per document, :math:`N_d` (the perplexity denominator)."""
        return batch.lengths.to(self.output.weight.dtype)

    def encode(self, batch: Any) -> torch.Tensor:
        """Encoder features ``(B, hidden_size)`` of the ``(B, V)`` count matrix."""
        return self.encoder(batch.x.to(self.output.weight.dtype))

    def log_likelihood(self, z: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
        r""":math:`\sum_v n_v \log \operatorname{softmax}(W z + b)_v`, shape ``z.shape[:-1]``,
        for ``z`` ``(*lead, B, d)`` and counts ``(B, V)``."""
        log_probs = self.output(z).log_softmax(-1)
        return (counts.to(log_probs.dtype) * log_probs).sum(-1)

    def model(self, batch: Any, beta: float = 1.0) -> None:
        """Pyro model: ``z ~ p(z)`` (scaled by ``beta``), then the words' log-probability as an
        observed factor ``x`` per document."""
        pyro.module(self.name, self)
        num_docs = batch.x.shape[0]
        with pyro.plate("sequences", num_docs, dim=-1):
            z = self._sample_z(self.prior(num_docs), beta)
            pyro.factor("x", self.log_likelihood(z, batch.x))

    @torch.no_grad()
    def generate(self, z: torch.Tensor, num_words: int | torch.Tensor) -> torch.Tensor:
        r"""Bags of words drawn from the decoder: ``num_words`` words per document, independently
        from :math:`\operatorname{softmax}(W z + b)`, counted, for latent codes ``z`` ``(N, d)``.

        A document model has no word order and no stopping word, so a bag of a given size is
        what it generates; draw ``z`` from :meth:`prior` for samples of the model.

        :param num_words: ``N_d``, one number for all or one per document ``(N,)``.
        :returns: word counts ``(N, V)`` in ``z``'s dtype, each row summing to its ``N_d``.

        Example::

            >>> nvdm = NVDM(2000)
            >>> counts = nvdm.generate(nvdm.prior(4).sample(), num_words=100)
            >>> counts.shape, counts.sum(-1).tolist()
            (torch.Size([4, 2000]), [100.0, 100.0, 100.0, 100.0])
        """
        sizes = torch.as_tensor(num_words, device=z.device).expand(z.shape[:-1])
        if sizes.dtype.is_floating_point or bool((sizes < 1).any()):
            raise ConfigError(f"num_words must be positive integers, got {num_words!r}")
        probs = self.output(z).softmax(-1)  # the decoder has no dropout: no mode to set
        return torch.stack([
            torch.multinomial(row, n, replacement=True).bincount(minlength=row.shape[-1])
            for row, n in zip(probs, sizes.tolist(), strict=True)
        ]).to(z.dtype)
