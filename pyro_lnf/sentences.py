r"""Sentences from a sentence VAE: samples from the prior, and homotopies between two sentences.

Sampling draws :math:`z \sim p(z)` (a standard normal, or the uniform distribution on the
sphere for a vMF latent) and decodes word by word until ``<eos>``
(:meth:`~pyro_lnf.models.vae.SentenceVAE.generate`).

A homotopy (Bowman et al. 2016, §5.2) decodes points on the path between the encodings of two
sentences: the posterior means :math:`\mu_a, \mu_b` for a Gaussian latent, each decoded at
:math:`z_k = (1 - \alpha_k)\,\mu_a + \alpha_k\,\mu_b`. For a vMF latent the encodings are the
mean directions and the path is the great-circle arc between them,
:math:`z_k = \operatorname{normalize}((1 - \alpha_k)\,\mu_a + \alpha_k\,\mu_b)`, since the
decoder has only been trained on unit vectors.

Example::

    >>> vae = load_model("runs/ptb-svae-vmf-inputless/best.pt")          # doctest: +SKIP
    >>> tokens, lengths = sample_sentences(vae, 4, seed=0)               # doctest: +SKIP

References: S. R. Bowman et al., "Generating Sentences from a Continuous Space", CoNLL 2016;
J. Xu, G. Durrett, "Spherical Latent Spaces for Stable Variational Autoencoders", EMNLP 2018.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

from pyro_lnf.datasets import Vocab, collate
from pyro_lnf.errors import ConfigError
from pyro_lnf.evaluate import evaluating
from pyro_lnf.models.vae import SentenceVAE
from pyro_lnf.app.files import check_between
from pyro_lnf.sample import DECODINGS, MAX_LENGTH, MAX_NUM, MAX_STEPS, check_frames, seeded

__all__ = ["interpolate_sentences", "sample_sentences", "sentence_texts"]

#: Longest sentence decoded when no maximum is given (PTB's longest training sentence has 83
#: words with ``<eos>``; most stop far earlier).
DEFAULT_MAX_LENGTH = 100


def _check_options(max_length: int, decode: str) -> None:
    check_between("--length", max_length, 1, MAX_LENGTH)
    if decode not in DECODINGS:
        raise ConfigError(f"unknown decoding {decode!r}; choose 'sample' or 'mode'")


def sample_sentences(
    vae: SentenceVAE,
    num: int,
    *,
    max_length: int = DEFAULT_MAX_LENGTH,
    decode: str = "sample",
    seed: int | None = None,
) -> tuple[Tensor, Tensor]:
    """``num`` sentences decoded from :math:`z \\sim p(z)`: token ids ``(num, max_length)``
    padded with ``<pad>``, and lengths (``<eos>`` included when reached).

    :param decode: ``"sample"`` draws each word, ``"mode"`` takes the most likely one.
    :param seed: makes the result a function of the seed; the global generators are restored.
    """
    check_between("--num", num, 1, MAX_NUM)
    _check_options(max_length, decode)
    check_frames(num, max_length, "-n x --length")  # generate() pads every sentence to it
    device = vae.head.loc.weight.device
    with torch.no_grad(), seeded(seed, device):
        z = vae.prior(num).sample()
        tokens, lengths, _ = vae.generate(z, max_length, greedy=decode == "mode")
    return tokens, lengths


def interpolate_sentences(
    vae: SentenceVAE,
    x_a: Tensor,
    x_b: Tensor,
    steps: int,
    *,
    max_length: int = DEFAULT_MAX_LENGTH,
    decode: str = "mode",
    seed: int | None = None,
) -> tuple[Tensor, Tensor, Tensor]:
    """Decode ``steps`` points on the path between the encodings of sentences ``x_a`` and
    ``x_b`` (token ids ending in ``<eos>``), both ends included.

    :returns: token ids ``(steps, max_length)``, lengths ``(steps,)`` and the latent points
        ``(steps, d)``.
    """
    check_between("--steps", steps, 2, MAX_STEPS)
    if len(x_a) < 1 or len(x_b) < 1:
        raise ConfigError("cannot interpolate between empty sentences")
    _check_options(max_length, decode)
    check_frames(steps, max_length, "--steps x --length")
    device = vae.head.loc.weight.device
    with evaluating(vae), torch.no_grad(), seeded(seed, device):
        batch = collate([x_a.to(device), x_b.to(device)], [0, 1], pad_value=vae.pad_index)
        q = vae.posterior(batch)
        ends = q.mean if vae.head.latent == "gaussian" else q.loc
        alpha = torch.linspace(0.0, 1.0, steps, dtype=ends.dtype, device=device)[:, None]
        z = torch.lerp(ends[0], ends[1], alpha)
        if vae.head.latent == "vmf":
            z = F.normalize(z, dim=-1)
        tokens, lengths, _ = vae.generate(z, max_length, greedy=decode == "mode")
    return tokens, lengths, z


def sentence_texts(vae: SentenceVAE, vocab: Vocab, tokens: Tensor, lengths: Tensor) -> list[str]:
    """Each sentence as words joined by spaces, without its closing ``<eos>``."""
    texts = []
    for ids, n in zip(tokens.tolist(), lengths.tolist(), strict=True):
        words = ids[:n]
        if words and words[-1] == vae.eos_index:
            words = words[:-1]
        texts.append(vocab.decode(words))
    return texts


def check_sentence_options(
    formats: Sequence[str], temperature: float, path: Path
) -> tuple[str, ...]:
    """The output formats for a sentence VAE (default ``txt``), refusing what does not apply."""
    chosen = tuple(dict.fromkeys(formats)) or ("txt",)
    for fmt in chosen:
        if fmt not in ("txt", "npz"):
            raise ConfigError(
                f"--format {fmt} needs a music model, but {path} is a sentence VAE; "
                "use --format txt or npz"
            )
    if temperature != 1.0:
        raise ConfigError(
            "--temperature applies to the latent-flow models and the LSTM baseline, not to a "
            "sentence VAE"
        )
    return chosen
