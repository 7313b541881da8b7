r"""The sentence VAE with a Gaussian or von Mises–Fisher latent (Xu & Durrett 2018), as a Pyro
model and guide, and its sentence decoding.

:class:`SentenceVAE` (registered as ``"svae"``) encodes a sentence with a bidirectional LSTM and
decodes it with an LSTM whose state starts from ``z`` and which reads ``z`` at every step, with
(``"standard"``) or without (``"inputless"``) the previous word. The latent and the ``z`` site
are those of :mod:`pyro_lnf.models.latent_head`.

Generation decodes word by word from a given ``z`` until ``<eos>``
(:meth:`SentenceVAE.generate`): from the prior, :math:`z \sim p(z)` (a standard normal, or the
uniform distribution on the sphere for a vMF latent), or along a homotopy between the
encodings of two sentences (:meth:`SentenceVAE.latent_path`). :mod:`pyro_lnf.sample` seeds and
validates both.

References:
  J. Xu, G. Durrett, "Spherical Latent Spaces for Stable Variational Autoencoders", EMNLP 2018.
  S. R. Bowman et al., "Generating Sentences from a Continuous Space", CoNLL 2016.
"""

from __future__ import annotations

from typing import Any

import pyro
import torch
import torch.nn.functional as F
from torch import nn

from pyro_lnf.datasets import collate
from pyro_lnf.errors import ConfigError
from pyro_lnf.models.latent_head import LatentHead, VAEMixin
from pyro_lnf.models.registry import register_model
from pyro_lnf.nn.checks import check_choice, check_positive_int
from pyro_lnf.nn.checks import check_sizes
from pyro_lnf.nn.modes import evaluating

__all__ = ["DECODERS", "SentenceVAE"]

#: Sentence decoders: teacher-forced on the previous word, or reading ``z`` alone.
DECODERS = ("standard", "inputless")


def _broadcast_batch(z: torch.Tensor, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Flatten ``z`` of shape ``(*lead, B, d)`` to ``(N·B, d)`` and repeat ``x`` (``(B, ...)``) to
    match, so vectorised particles (a plate at dim −2) decode as one larger batch."""
    lead = z.shape[:-2]
    flat_z = z.reshape(-1, z.shape[-1])
    flat_x = x.expand(lead + x.shape).reshape((-1,) + x.shape[1:])
    return flat_z, flat_x


@register_model("svae")
class SentenceVAE(VAEMixin, nn.Module):
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

        >>> from pyro_lnf.datasets import collate
        >>> vae = SentenceVAE(20, latent="vmf", decoder="inputless", pad_index=0, sos_index=1,
        ...                   eos_index=2)        # or SentenceVAE.from_vocab(dataset.vocab)
        >>> sentences = [torch.tensor([5, 9, 7, 2]), torch.tensor([11, 4, 2])]  # end in <eos>
        >>> batch = collate(sentences, [0, 1], pad_value=0)
        >>> loss = pyro.infer.Trace_ELBO().differentiable_loss(vae.model, vae.guide, batch)
        >>> bool(loss.isfinite())
        True

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
        check_choice("decoder", decoder, DECODERS)
        check_sizes(
            dropout, vocab_size=vocab_size, embedding_dim=embedding_dim, hidden_size=hidden_size
        )
        for what, index in (("pad_index", pad_index), ("sos_index", sos_index), ("eos_index", eos_index)):
            if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < vocab_size:
                raise ConfigError(f"{what} must be a token id in 0..{vocab_size - 1}, got {index!r}")
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

    def latent_path(self, x_a: torch.Tensor, x_b: torch.Tensor, steps: int) -> torch.Tensor:
        r"""``steps`` latent points ``(steps, d)`` on the path between the encodings of sentences
        ``x_a`` and ``x_b`` (token ids ending in ``<eos>``), both ends included.

        Gaussian: the posterior means, :math:`z_k = (1 - \alpha_k)\,\mu_a + \alpha_k\,\mu_b`
        with :math:`\alpha_k = k / (\text{steps} - 1)` (Bowman et al. 2016, §5.2). vMF: the mean
        directions and the great-circle arc between them,
        :math:`z_k = \operatorname{normalize}((1 - \alpha_k)\,\mu_a + \alpha_k\,\mu_b)`, since
        the decoder has only been trained on unit vectors. Draws nothing; call it in eval mode.
        """
        device = self.head.loc.weight.device
        batch = collate([x_a.to(device), x_b.to(device)], [0, 1], pad_value=self.pad_index)
        q = self.posterior(batch)
        ends = q.mean if self.head.latent == "gaussian" else q.loc
        alpha = torch.linspace(0.0, 1.0, steps, dtype=ends.dtype, device=device)[:, None]
        z = torch.lerp(ends[0], ends[1], alpha)
        if self.head.latent == "vmf":
            z = F.normalize(z, dim=-1)
        return z

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

            >>> vae = SentenceVAE(20, pad_index=0, sos_index=1, eos_index=2)
            >>> tokens, lengths, _ = vae.generate(vae.prior(4).sample(), max_length=40)
            >>> tokens.shape[0], bool((lengths <= 40).all())
            (4, True)
        """
        check_positive_int("max_length", max_length)
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
