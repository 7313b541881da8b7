r"""Gaussian and von Mises–Fisher VAEs for text (Xu & Durrett 2018), as Pyro models and guides.

Two models share one latent head, which is either

* ``"gaussian"``: :math:`q(z \mid x) = \mathcal N(\mu(x), \operatorname{diag}\sigma^2(x))`,
  :math:`\sigma = \operatorname{softplus}(\cdot) + 10^{-4}`, prior :math:`\mathcal N(0, I)`; or
* ``"vmf"``: :math:`q(z \mid x) = \mathrm{vMF}(\mu(x), \kappa)` with
  :math:`\mu = h / \lVert h \rVert` and a *fixed* concentration κ, prior uniform on
  :math:`S^{d-1}`. The KL is then a constant of :math:`(\kappa, d)`,

  .. math::

      \mathrm{KL}(\mathrm{vMF}(\mu, \kappa) \,\|\, U(S^{d-1}))
          = \kappa A_d(\kappa) + \log C_d(\kappa) + \log |S^{d-1}|,

  whatever μ is, so the optimiser cannot shrink it to zero: the posterior cannot collapse onto
  the prior, the failure of Gaussian text VAEs with strong decoders (Bowman et al. 2016).

:class:`SentenceVAE` (registered as ``"svae"``) encodes a sentence with a bidirectional LSTM and
decodes it with an LSTM whose state starts from ``z`` and which reads ``z`` at every step, with
(``"standard"``) or without (``"inputless"``) the previous word. :class:`NVDM` (``"nvdm"``,
Miao et al. 2016) encodes a bag of words with an MLP and decodes it with
:math:`\operatorname{softmax}(Wz + b)`.

The Pyro programs follow :mod:`pyro_lnf.models.base`: one ``z`` site (batch ``(B,)``, event
``(d,)``) and one observed ``x`` site per sequence, in ``pyro.plate("sequences", B, dim=-1)``,
the ``z`` sites under ``poutine.scale(scale=beta)`` in both programs. ``Trace_ELBO`` thus
estimates the KL by Monte Carlo, :math:`\log q(z \mid x) - \log p(z)` at the sampled ``z``;
:meth:`SentenceVAE.analytic_kl` gives the closed form for reporting.

Perplexities (:func:`perplexity`) come both from the ELBO, as the papers report them, and from
the importance-sampled likelihood of :mod:`pyro_lnf.evaluate`, each labelled.

References:
  J. Xu, G. Durrett, "Spherical Latent Spaces for Stable Variational Autoencoders", EMNLP 2018.
  Y. Miao, L. Yu, P. Blunsom, "Neural Variational Inference for Text Processing", ICML 2016.
  S. R. Bowman et al., "Generating Sentences from a Continuous Space", CoNLL 2016.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any, Literal

import pyro
import pyro.distributions as dist
import torch
import torch.nn.functional as F
from pyro import poutine
from torch import nn
from torch.distributions import kl_divergence

from pyro_lnf.models.registry import register_model
from pyro_lnf.distributions.vmf import HypersphericalUniform, VonMisesFisher
from pyro_lnf.errors import ConfigError
from pyro_lnf.evaluate import evaluating, importance_sample
from pyro_lnf.models.encoder import positive_scale

__all__ = [
    "DECODERS",
    "LATENTS",
    "NVDM",
    "PERPLEXITY_LABELS",
    "LatentHead",
    "SentenceVAE",
    "perplexity",
]

#: Latent families: a diagonal Gaussian against N(0, I), or a fixed-κ vMF against the uniform.
LATENTS = ("gaussian", "vmf")
#: Sentence decoders: teacher-forced on the previous word, or reading ``z`` alone.
DECODERS = ("standard", "inputless")


def _check_choice(what: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ConfigError(f"unknown {what} {value!r}; choose one of {', '.join(choices)}")


def _check_positive_int(what: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{what} must be a positive integer, got {value!r}")


def _check_dropout(value: float) -> None:
    if not 0.0 <= value < 1.0:
        raise ConfigError(f"dropout must lie in [0, 1), got {value!r}")


class LatentHead(nn.Module):
    r"""Maps encoder features to :math:`q(z \mid x)` and provides the matching prior :math:`p(z)`.

    ``"gaussian"``: :math:`q = \mathcal N(W_\mu h + b_\mu, \sigma^2)` with
    :math:`\sigma = \operatorname{softplus}(W_\sigma h + b_\sigma) + 10^{-4}` (the floor keeps
    :math:`\log q` finite), :math:`p = \mathcal N(0, I)`. ``"vmf"``: :math:`q = \mathrm{vMF}(\mu, \kappa)`
    with :math:`\mu = \operatorname{normalize}(W h + b)` and κ fixed (Xu & Durrett 2018),
    :math:`p = U(S^{d-1})`. Both have event shape ``(d,)``.

    :param in_features: width of the encoder features ``h``.
    :param latent: ``"gaussian"`` or ``"vmf"``.
    :param latent_dim: ``d`` (at least 2 for the vMF: the sphere needs two dimensions).
    :param kappa: the vMF concentration κ > 0 (unused by the Gaussian).

    Example::

        >>> head = LatentHead(64, "vmf", latent_dim=8, kappa=20.0)
        >>> q = head.posterior(torch.randn(5, 64))
        >>> q.batch_shape, q.event_shape
        (torch.Size([5]), torch.Size([8]))
    """

    def __init__(self, in_features: int, latent: str, latent_dim: int, kappa: float) -> None:
        super().__init__()
        _check_choice("latent", latent, LATENTS)
        _check_positive_int("latent_dim", latent_dim)
        if latent == "vmf":
            if latent_dim < 2:
                raise ConfigError(f"a vMF latent needs latent_dim >= 2, got {latent_dim}")
            if not kappa > 0:
                raise ConfigError(f"kappa must be positive, got {kappa!r}")
        self.latent = latent
        self.latent_dim = latent_dim
        self.kappa = float(kappa)
        self.loc = nn.Linear(in_features, latent_dim)
        # The vMF has no learned spread: κ is fixed, so only the direction is predicted.
        self.scale = nn.Linear(in_features, latent_dim) if latent == "gaussian" else None

    def posterior(self, features: torch.Tensor) -> dist.TorchDistribution:
        """:math:`q(z \\mid x)` with batch shape ``features.shape[:-1]`` and event ``(d,)``."""
        loc = self.loc(features)
        if self.scale is None:
            return VonMisesFisher(F.normalize(loc, dim=-1), self.kappa)
        return dist.Normal(loc, positive_scale(self.scale(features))).to_event(1)

    def prior(self, batch_shape: torch.Size | tuple[int, ...], like: torch.Tensor) -> dist.TorchDistribution:
        """:math:`p(z)` with ``batch_shape``, on the device and dtype of ``like``."""
        batch_shape = torch.Size(batch_shape)
        if self.latent == "vmf":
            return HypersphericalUniform(
                self.latent_dim, batch_shape, device=like.device, dtype=like.dtype
            )
        zero, one = like.new_zeros(()), like.new_ones(())
        return dist.Normal(zero, one).expand(batch_shape + (self.latent_dim,)).to_event(1)


class _LatentVariableMixin:
    """What both VAEs share: the ``z`` site in both programs and the analytic KL."""

    name: str
    head: LatentHead
    #: Encoder features of a batch, ``(B, in_features)`` of :attr:`head` (each model defines it).
    encode: Callable[[Any], torch.Tensor]

    def posterior(self, batch: Any) -> dist.TorchDistribution:
        r""":math:`q(z \mid x)` of every sequence of ``batch``: batch ``(B,)``, event ``(d,)``."""
        return self.head.posterior(self.encode(batch))

    def prior(self, num_sequences: int) -> dist.TorchDistribution:
        """:math:`p(z)` for ``num_sequences`` sequences, on the module's device and dtype."""
        return self.head.prior((num_sequences,), self.head.loc.weight)

    def analytic_kl(self, batch: Any) -> torch.Tensor:
        r"""Closed-form :math:`\mathrm{KL}(q(z \mid x) \,\|\, p(z))` per sequence, shape ``(B,)``.

        Gaussian: :math:`\tfrac12 \sum_i (\mu_i^2 + \sigma_i^2 - 1 - \log \sigma_i^2)`. vMF: the
        constant :math:`\kappa A_d(\kappa) + \log C_d(\kappa) + \log|S^{d-1}|`, the same for
        every sequence and every parameter value. Training's ``Trace_ELBO`` uses the Monte Carlo
        estimate instead, whose expectation this is.
        """
        q = self.posterior(batch)
        return kl_divergence(q, self.prior(q.batch_shape[0]))

    def _sample_z(self, q_or_p: dist.TorchDistribution, beta: float) -> torch.Tensor:
        with poutine.scale(scale=beta):
            return pyro.sample("z", q_or_p)

    def guide(self, batch: Any, beta: float = 1.0) -> None:
        """Pyro guide: ``z ~ q(z | x)`` per sequence, its log-density scaled by ``beta``."""
        pyro.module(self.name, self)  # type: ignore[arg-type]
        q = self.posterior(batch)
        with pyro.plate("sequences", q.batch_shape[0], dim=-1):
            self._sample_z(q, beta)


def _broadcast_batch(z: torch.Tensor, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Flatten ``z`` of shape ``(*lead, B, d)`` to ``(N·B, d)`` and repeat ``x`` (``(B, ...)``) to
    match, so vectorised particles (a plate at dim −2) decode as one larger batch."""
    lead = z.shape[:-2]
    flat_z = z.reshape(-1, z.shape[-1])
    flat_x = x.expand(lead + x.shape).reshape((-1,) + x.shape[1:])
    return flat_z, flat_x


@register_model("svae")
class SentenceVAE(_LatentVariableMixin, nn.Module):
    r"""Sentence VAE with a Gaussian or fixed-κ vMF latent (Xu & Durrett 2018).

    .. math::

        z \sim p(z), \qquad
        p(x \mid z) = \prod_{t=0}^{T-1} \operatorname{Cat}(x_t \mid \operatorname{softmax}(W o_t + b)),
        \qquad o_t = \mathrm{LSTM}(i_t;\, o_{t-1}), \quad (o_{-1}, c_{-1}) = (A z + a, C z + c)

    where the last token of every sentence is ``<eos>`` (so :math:`T` tokens are predicted and
    the stopping point is modelled) and the decoder input is

    * ``"standard"``: :math:`i_t = [\operatorname{emb}(x_{t-1}); z]` with :math:`x_{-1}` = ``<sos>``;
    * ``"inputless"``: :math:`i_t = z`. Xu & Durrett's inputless setting replaces every input
      word by ``<unk>`` (``mix_unk = 1``); a constant input vector only adds a constant to the
      LSTM's gate pre-activations, which its biases already provide, so it is left out. The
      position is carried by the recurrence itself. Without the previous word, the decoder can
      model a sentence only through ``z``: this is the setting where the latent matters.

    The encoder is a one-layer bidirectional LSTM over the embedded words; its final hidden and
    cell states of both directions (``4 · hidden_size``) feed :class:`LatentHead`. Word
    embeddings are shared by encoder and decoder; dropout acts on the embeddings and on the
    decoder outputs.

    :param vocab_size: number of token ids ``V``.
    :param latent: ``"gaussian"`` or ``"vmf"``.
    :param latent_dim: ``d`` (Xu & Durrett: 50).
    :param kappa: the vMF's fixed κ (Xu & Durrett: 80 for PTB inputless, 35 standard).
    :param embedding_dim: word embedding width (100).
    :param hidden_size: LSTM width of encoder and decoder (400).
    :param decoder: ``"standard"`` or ``"inputless"``.
    :param dropout: on embeddings and decoder outputs (Xu & Durrett: 0.5).
    :param pad_index: id of ``<pad>`` (padded positions are masked; the id must be valid).
    :param sos_index: id of ``<sos>``, the standard decoder's first input.
    :param eos_index: id of ``<eos>``, where :meth:`generate` stops.
    :param dataset: name of the dataset the model is for (kept in checkpoints for ``lnf evaluate``).

    Example::

        >>> ds = load_dataset("ptb_words")
        >>> vae = SentenceVAE.from_vocab(ds.vocab, latent="vmf", decoder="inputless")
        >>> batch = next(ds.batches("train", 32))
        >>> loss = pyro.infer.Trace_ELBO().differentiable_loss(vae.model, vae.guide, batch)

    Reference: Xu & Durrett (2018), §3 and §5; Bowman et al. (2016).
    """

    name = "svae"
    #: Corpus-level perplexity: exp(Σ NLL / Σ tokens), as for language models.
    perplexity_average = "corpus"

    def __init__(
        self,
        vocab_size: int,
        *,
        latent: str = "gaussian",
        latent_dim: int = 50,
        kappa: float = 80.0,
        embedding_dim: int = 100,
        hidden_size: int = 400,
        decoder: str = "standard",
        dropout: float = 0.5,
        pad_index: int,
        sos_index: int,
        eos_index: int,
        dataset: str | None = None,
    ) -> None:
        super().__init__()
        _check_choice("decoder", decoder, DECODERS)
        for what, value in (
            ("vocab_size", vocab_size), ("embedding_dim", embedding_dim), ("hidden_size", hidden_size)
        ):
            _check_positive_int(what, value)
        _check_dropout(dropout)
        for what, index in (("pad_index", pad_index), ("sos_index", sos_index), ("eos_index", eos_index)):
            if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < vocab_size:
                raise ConfigError(f"{what} must be a token id in 0..{vocab_size - 1}, got {index!r}")
        self.config: dict[str, Any] = dict(
            vocab_size=vocab_size, latent=latent, latent_dim=latent_dim, kappa=float(kappa),
            embedding_dim=embedding_dim, hidden_size=hidden_size, decoder=decoder,
            dropout=dropout, pad_index=pad_index, sos_index=sos_index, eos_index=eos_index,
            dataset=dataset,
        )
        self.decoder = decoder
        self.pad_index, self.sos_index, self.eos_index = pad_index, sos_index, eos_index
        self.hidden_size = hidden_size
        self.embedding = nn.Embedding(vocab_size, embedding_dim)
        self.dropout = nn.Dropout(dropout)
        self.encoder_rnn = nn.LSTM(embedding_dim, hidden_size, batch_first=True, bidirectional=True)
        self.head = LatentHead(4 * hidden_size, latent, latent_dim, kappa)
        self.init_state = nn.Linear(latent_dim, 2 * hidden_size)
        input_size = latent_dim + (embedding_dim if decoder == "standard" else 0)
        self.decoder_rnn = nn.LSTM(input_size, hidden_size, batch_first=True)
        self.output = nn.Linear(hidden_size, vocab_size)

    @classmethod
    def from_vocab(cls, vocab: Any, **kwargs: Any) -> SentenceVAE:
        """A model sized for ``vocab`` (a :class:`~pyro_lnf.datasets.base.Vocab` with ``<pad>``,
        ``<sos>`` and ``<eos>``, like ``ptb_words``'), other options as keywords."""
        missing = [tok for tok in ("<pad>", "<sos>", "<eos>") if tok not in vocab.stoi]
        if missing:
            raise ConfigError(
                f"a sentence VAE needs {', '.join(missing)} in the vocabulary; use a word-level "
                "dataset such as ptb_words"
            )
        return cls(
            len(vocab),
            pad_index=vocab.stoi["<pad>"],
            sos_index=vocab.stoi["<sos>"],
            eos_index=vocab.stoi["<eos>"],
            **kwargs,
        )

    def normalizer(self, batch: Any) -> torch.Tensor:
        """Tokens predicted per sentence, ``<eos>`` included: ``T`` (the perplexity denominator)."""
        return batch.lengths.to(self.output.weight.dtype)

    def encode(self, batch: Any) -> torch.Tensor:
        """Final ``[h_fwd; h_bwd; c_fwd; c_bwd]`` of the bidirectional encoder, ``(B, 4H)``.

        The sequences are packed, so each direction ends at the sentence's own last token.
        """
        embedded = self.dropout(self.embedding(batch.x))
        packed = nn.utils.rnn.pack_padded_sequence(
            embedded, batch.lengths.cpu(), batch_first=True, enforce_sorted=False
        )
        _, (h, c) = self.encoder_rnn(packed)
        return torch.cat([h[0], h[1], c[0], c[1]], dim=-1)

    def _initial_state(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h0, c0 = self.init_state(z).chunk(2, dim=-1)
        return h0.unsqueeze(0).contiguous(), c0.unsqueeze(0).contiguous()

    def _inputs(self, z: torch.Tensor, previous: torch.Tensor | None, num_steps: int) -> torch.Tensor:
        """Decoder inputs ``(N, num_steps, ·)`` from ``z`` ``(N, d)`` and previous words ``(N, num_steps)``."""
        z_steps = z.unsqueeze(1).expand(-1, num_steps, -1)
        if self.decoder == "inputless":
            return z_steps
        assert previous is not None
        return torch.cat([self.dropout(self.embedding(previous)), z_steps], dim=-1)

    def logits(self, z: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """Teacher-forced logits of every step, ``(*lead, B, T_max, V)``, for ``z`` of shape
        ``(*lead, B, d)`` and padded tokens ``x`` of shape ``(B, T_max)``.

        One LSTM pass; the LSTM is causal and padding only follows real steps, so no packing is
        needed (padded steps are masked in the likelihood).
        """
        flat_z, flat_x = _broadcast_batch(z, x)
        sos = flat_x.new_full((flat_x.shape[0], 1), self.sos_index)
        previous = torch.cat([sos, flat_x[:, :-1]], dim=1)
        out, _ = self.decoder_rnn(self._inputs(flat_z, previous, x.shape[1]), self._initial_state(flat_z))
        logits = self.output(self.dropout(out))
        return logits.reshape(z.shape[:-1] + logits.shape[1:])

    def log_likelihood(self, z: torch.Tensor, batch: Any) -> torch.Tensor:
        r""":math:`\log p(x \mid z) = \sum_{t<T} \log p(x_t \mid z, x_{<t})`, shape
        ``z.shape[:-1]``, for ``z`` ``(*lead, B, d)``; padded steps contribute nothing."""
        # A fused log-softmax and a gather: a Categorical(logits=...) site would renormalise the
        # (N, T, V) logits once more: about a sixth of a PTB training step on a CPU (V = 10k).
        log_probs = self.logits(z, batch.x).log_softmax(-1)
        x = batch.x.expand(log_probs.shape[:-1])
        token_log_probs = log_probs.gather(-1, x.unsqueeze(-1)).squeeze(-1)
        return token_log_probs.masked_fill(~batch.mask, 0.0).sum(-1)

    def model(self, batch: Any, beta: float = 1.0) -> None:
        r"""Pyro model: ``z ~ p(z)`` (scaled by ``beta``), then :math:`\log p(x \mid z)` (teacher
        forced, padding masked) as an observed factor ``x`` per sentence."""
        pyro.module(self.name, self)
        num_seqs = batch.x.shape[0]
        with pyro.plate("sequences", num_seqs, dim=-1):
            z = self._sample_z(self.prior(num_seqs), beta)
            pyro.factor("x", self.log_likelihood(z, batch))

    @torch.no_grad()
    def generate(
        self, z: torch.Tensor, max_length: int, *, greedy: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        r"""Decode sentences from latent codes ``z`` ``(N, d)``, one token at a time.

        Each sentence stops at its first ``<eos>`` or after ``max_length`` tokens. Tokens are
        drawn from :math:`p(x_t \mid z, x_{<t})` (or its argmax with ``greedy``), in eval mode.

        :returns: ``(tokens, lengths, log_prob)``: ``(N, max_length)`` ids padded with
            ``pad_index``, ``(N,)`` lengths (``<eos>`` included), and ``(N,)`` the summed
            log-probabilities of the chosen tokens, :math:`\log p(x \mid z)` for the stopped ones.

        Example::

            >>> tokens, lengths, _ = vae.generate(vae.prior(4).sample(), max_length=40)
        """
        _check_positive_int("max_length", max_length)
        with evaluating(self):
            n = z.shape[0]
            state = self._initial_state(z)
            previous = torch.full((n, 1), self.sos_index, dtype=torch.long, device=z.device)
            tokens = torch.full((n, max_length), self.pad_index, dtype=torch.long, device=z.device)
            log_prob = z.new_zeros(n)
            lengths = torch.zeros(n, dtype=torch.long, device=z.device)
            running = torch.ones(n, dtype=torch.bool, device=z.device)
            for t in range(max_length):
                out, state = self.decoder_rnn(self._inputs(z, previous, 1), state)
                step_logp = self.output(out[:, 0]).log_softmax(-1)
                token = step_logp.argmax(-1) if greedy else torch.multinomial(step_logp.exp(), 1).squeeze(-1)
                # Finished sentences keep their padding, length and log-probability.
                tokens[:, t] = torch.where(running, token, tokens[:, t])
                log_prob = log_prob + torch.where(running, step_logp.gather(-1, token[:, None])[:, 0], 0.0)
                lengths = lengths + running.long()
                running = running & (token != self.eos_index)
                previous = token[:, None]
                if not running.any():
                    break
            return tokens, lengths, log_prob


@register_model("nvdm")
class NVDM(_LatentVariableMixin, nn.Module):
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

        >>> ds = load_dataset("20news")
        >>> nvdm = NVDM(ds.num_features, latent="vmf")
        >>> batch = next(ds.batches("train", 50))          # (50, 2000) word counts
        >>> kl = nvdm.analytic_kl(batch)                   # (50,), all equal for the vMF

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
        _check_positive_int("vocab_size", vocab_size)
        _check_positive_int("hidden_size", hidden_size)
        _check_dropout(dropout)
        self.config: dict[str, Any] = dict(
            vocab_size=vocab_size, latent=latent, latent_dim=latent_dim, kappa=float(kappa),
            hidden_size=hidden_size, dropout=dropout, dataset=dataset,
        )
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


#: What each key of :func:`perplexity`'s result means.
PERPLEXITY_LABELS: dict[str, str] = {
    "average": "'corpus': exp(Σ_d NLL_d / Σ_d N_d); 'document': exp(mean_d NLL_d / N_d)",
    "sequences": "number of sentences / documents evaluated",
    "tokens": "Σ_d N_d, tokens predicted (sentences: words + <eos>; documents: words)",
    "num_samples": "K, samples of z per sequence",
    "ppl_elbo": "perplexity from the ELBO, NLL_d = −mean_k log w_k (an upper bound; the papers' figure)",
    "ppl_is": "perplexity from the importance-sampled NLL, NLL_d = −log mean_k w_k (tighter)",
    "nll_elbo_nats_per_token": "log ppl_elbo: −ELBO per token in nats, same average",
    "nll_is_nats_per_token": "log ppl_is: IS NLL per token in nats, same average",
    "kl_nats_per_sequence": "mean_d of the Monte Carlo KL, E_q[log q(z|x) − log p(z)], nats",
    "reconstruction_nats_per_token": "−E_q log p(x|z) per token, same average as the perplexities",
}


@torch.no_grad()
def perplexity(
    module: nn.Module,
    batches: Iterable[Any],
    num_samples: int = 30,
    *,
    average: Literal["corpus", "document"] | None = None,
    chunk_size: int | None = 32,
    device: str | torch.device | None = None,
) -> dict[str, Any]:
    r"""Perplexities of a VAE over a data set, from the ELBO and from importance sampling.

    With :math:`K` samples :math:`z_k \sim q(z \mid x_d)` and
    :math:`\log w_k = \log p(x_d, z_k) - \log q(z_k \mid x_d)`:

    .. math::

        \mathrm{NLL}^{\mathrm{ELBO}}_d = -\tfrac1K \textstyle\sum_k \log w_k, \qquad
        \mathrm{NLL}^{\mathrm{IS}}_d = -\log \tfrac1K \textstyle\sum_k w_k
        \;\le\; \mathrm{NLL}^{\mathrm{ELBO}}_d,

    and, with :math:`N_d` = ``module.normalizer``,

    * ``average="corpus"``: :math:`\mathrm{PPL} = \exp(\sum_d \mathrm{NLL}_d / \sum_d N_d)`
      (language models; :class:`SentenceVAE`'s default);
    * ``average="document"``: :math:`\mathrm{PPL} = \exp(\frac1D \sum_d \mathrm{NLL}_d / N_d)`
      (NVDM's convention; :class:`NVDM`'s default).

    Xu & Durrett report the ELBO form (with :math:`K = 3`); the IS form is the tighter estimate
    of the same likelihood. Both come from the same samples. Runs in eval mode at β = 1. Keys
    and their meaning: :data:`PERPLEXITY_LABELS`.

    :param module: a :class:`SentenceVAE`, :class:`NVDM` or any model of the
        :mod:`~pyro_lnf.models.base` contract.
    :param batches: batches the module accepts (with ``.to(device)``).
    :param num_samples: :math:`K`.
    :param average: ``"corpus"`` or ``"document"``; the module's ``perplexity_average`` by default.

    Example::

        >>> perplexity(nvdm, ds.batches("test", 500), num_samples=20)["ppl_elbo"]
    """
    if average is None:
        average = getattr(module, "perplexity_average", "corpus")
    if average not in ("corpus", "document"):
        raise ConfigError(f"average must be 'corpus' or 'document', got {average!r}")
    if device is None:
        device = next(iter(module.parameters()), torch.empty(0)).device
    nll_elbo, nll_is, rec, kl, tokens = [], [], [], [], []
    with evaluating(module):
        for batch in batches:
            batch = batch.to(device)
            est = importance_sample(
                module.model, module.guide, batch, 1.0, num_samples=num_samples, chunk_size=chunk_size
            )
            nll_elbo.append(-est.elbo.double())
            nll_is.append(-est.log_likelihood.double())
            rec.append(est.reconstruction.double())
            kl.append(est.kl.double())
            tokens.append(module.normalizer(batch).double())
    if not tokens:
        raise ConfigError("perplexity() got no batches; check the split is not empty")
    n = torch.cat(tokens)

    def per_token(values: list[torch.Tensor]) -> float:
        v = torch.cat(values)
        return float(v.sum() / n.sum()) if average == "corpus" else float((v / n).mean())

    elbo_rate, is_rate = per_token(nll_elbo), per_token(nll_is)
    return {
        "average": average,
        "sequences": int(n.numel()),
        "tokens": float(n.sum()),
        "num_samples": num_samples,
        "ppl_elbo": math.exp(elbo_rate),
        "ppl_is": math.exp(is_rate),
        "nll_elbo_nats_per_token": elbo_rate,
        "nll_is_nats_per_token": is_rate,
        "kl_nats_per_sequence": float(torch.cat(kl).mean()),
        "reconstruction_nats_per_token": per_token(rec),
    }
