r"""Drawing sequences from a trained model, and interpolating between two encodings: the
library's sampling API. Each model generates on its own (``generate()``); this module draws or
checks the lengths, validates the options, seeds, and runs the model in eval mode without
gradients on the chosen device.

Latent-flow model and LSTM baseline (:func:`sample_sequences`): :math:`T \sim p(T)` (or the
lengths given), then :meth:`LatentFlowModel.generate
<pyro_lnf.models.lnf.LatentFlowModel.generate>` (noise, flow, emission; the temperature scales
the noise) or :meth:`LSTMBaseline.generate <pyro_lnf.models.baseline.LSTMBaseline.generate>`
(one step at a time; the temperature divides the logits). :func:`interpolate` decodes points
between the encodings of two sequences.

Sentence VAE (:func:`sample_sentences`, :func:`interpolate_sentences`): :math:`z \sim p(z)`, or
points on the homotopy between two sentences (:meth:`SentenceVAE.latent_path
<pyro_lnf.models.sentence_vae.SentenceVAE.latent_path>`), decoded word by word until
``<eos>`` (:meth:`SentenceVAE.generate <pyro_lnf.models.sentence_vae.SentenceVAE.generate>`).

Decoding: ``"sample"`` draws from the emission, ``"mode"`` takes each step's most likely value
(:mod:`pyro_lnf.models.decoding`). With a ``seed`` the result is a function of the seed alone
and the global generators are left as they were. Writing samples to files is the app's
(:mod:`pyro_lnf.app.sampling`).

Example::

    >>> model = load_model("runs/jsb-afscf/best.pt")                   # doctest: +SKIP
    >>> x, lengths = sample_sequences(model, 4, seed=0)                # doctest: +SKIP
    >>> rolls = unpad(x, lengths)          # four (T_i, 88) piano rolls  # doctest: +SKIP

References: Zachary M. Ziegler, Alexander M. Rush. Latent Normalizing Flows for Discrete
Sequences. ICML 2019. [arXiv:1901.10548]; S. R. Bowman et al., "Generating Sentences from a
Continuous Space", CoNLL 2016.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence

import torch
from torch import Tensor, nn

from pyro_lnf.errors import ConfigError
from pyro_lnf.models.base import SequenceGenerator
from pyro_lnf.models.decoding import check_decode
from pyro_lnf.models.lnf import LatentFlowModel
from pyro_lnf.models.sentence_vae import SentenceVAE
from pyro_lnf.nn.checks import (
    MAX_FRAMES,
    MAX_LENGTH,
    MAX_NUM,
    MAX_SEED,
    MAX_STEPS,
    MAX_TEMPERATURE,
    MIN_TEMPERATURE,
    check_between,
)
from pyro_lnf.nn.devices import resolve_device
from pyro_lnf.nn.modes import evaluating

__all__ = [
    "DEFAULT_MAX_LENGTH",
    "MAX_FRAMES",
    "MAX_LENGTH",
    "MAX_NUM",
    "MAX_SEED",
    "MAX_STEPS",
    "MAX_TEMPERATURE",
    "MIN_TEMPERATURE",
    "check_frames",
    "check_sequence_model",
    "interpolate",
    "interpolate_sentences",
    "sample_sentences",
    "sample_sequences",
    "unpad",
]


# Bounds of ``lnf sample``'s options (MAX_NUM, MAX_LENGTH, MAX_FRAMES, ...) live in the
# import-free :mod:`pyro_lnf.nn.checks`, shared by the CLI's click ranges and the checks below.

def unpad(x: Tensor, lengths: Tensor) -> list[Tensor]:
    """The sequences of a padded batch ``x`` ``(N, T, ...)``, each cut to its length."""
    return [seq[:n] for seq, n in zip(x, lengths.tolist())]


@contextlib.contextmanager
def seeded(seed: int | None, device: torch.device) -> Iterator[None]:
    """Seed torch's generators inside the block and restore them afterwards.

    The prior and p(T) draw from the global generators, so forking them (rather than threading
    a ``torch.Generator`` through every module) is what makes a seeded call reproducible
    without disturbing the caller's random stream.
    """
    if seed is None:
        yield
        return
    check_between("--seed", seed, 0, MAX_SEED)
    devices = []
    if device.type == "cuda":
        devices = [torch.cuda.current_device() if device.index is None else device.index]
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield


def check_sequence_model(module: nn.Module) -> None:
    """Refuse a model that :func:`sample_sequences` cannot draw from (the VAEs).

    :raises ConfigError: naming the model's class.
    """
    if not isinstance(module, SequenceGenerator):
        raise ConfigError(
            f"sampling sequences needs a model with a length model and generate(lengths) "
            f"(a latent-flow model or the LSTM baseline), not {type(module).__name__}"
        )


def _lengths(
    module: nn.Module,
    num: int,
    lengths: Sequence[int] | Tensor | None,
    length: int | None,
    device: torch.device,
) -> Tensor:
    check_between("--num", num, 1, MAX_NUM)
    if lengths is not None and length is not None:
        raise ConfigError("give either lengths (one per sample) or length (for all), not both")
    if lengths is not None:
        drawn = torch.as_tensor(lengths, device=device)
        if drawn.dim() != 1 or drawn.numel() != num or drawn.dtype.is_floating_point:
            raise ConfigError(f"lengths must be {num} integers, one per sample, got {lengths!r}")
        drawn = drawn.long()
    elif length is not None:
        check_between("--length", length, 1, MAX_LENGTH)
        drawn = torch.full((num,), int(length), dtype=torch.long, device=device)
    else:
        drawn = module.length_model.distribution().sample((num,)).to(device)
    if bool((drawn < 1).any()) or bool((drawn > MAX_LENGTH).any()):
        raise ConfigError(
            f"sequence lengths must be between 1 and {MAX_LENGTH}, got "
            f"{drawn.min().item()} .. {drawn.max().item()}"
        )
    check_frames(num, int(drawn.max()), "-n x the longest length" + (
        "" if length is not None or lengths is not None else " drawn from p(T)"))
    return drawn


def check_frames(count: int, length: int, what: str) -> None:
    """Refuse a padded batch of ``count`` sequences of ``length`` steps beyond
    :data:`MAX_FRAMES`, before anything of that size is allocated.

    :raises ConfigError: naming ``what`` (e.g. ``"-n x length"``), the product and the bound.
    """
    if count * length > MAX_FRAMES:
        raise ConfigError(
            f"{what} must be at most {MAX_FRAMES} steps in one batch, got {count} x {length} = "
            f"{count * length}; draw fewer or shorter sequences"
        )


def _module_device(module: nn.Module, device: str | torch.device | None) -> torch.device:
    resolved = resolve_device(device)
    if resolved is not None:
        module.to(resolved)
        return resolved
    return next(module.parameters()).device


def sample_sequences(
    module: nn.Module,
    num: int,
    *,
    lengths: Sequence[int] | Tensor | None = None,
    length: int | None = None,
    temperature: float = 1.0,
    decode: str = "sample",
    seed: int | None = None,
    device: str | torch.device | None = None,
) -> tuple[Tensor, Tensor]:
    r"""Draw ``num`` sequences from a :class:`~pyro_lnf.models.base.SequenceGenerator`: a
    :class:`~pyro_lnf.models.lnf.LatentFlowModel`, the
    :class:`~pyro_lnf.models.baseline.LSTMBaseline`, or any model of yours that honours it.

    :param module: the model (put in eval mode for the call, then restored).
    :param num: number of sequences N.
    :param lengths: one length per sequence; default: drawn from the model's p(T).
    :param length: one length for every sequence (instead of ``lengths``).
    :param temperature: :math:`\tau > 0`; scales the prior noise of a flow model
        (:math:`\epsilon \sim \mathcal N(0, \tau^2 I)`), divides the LSTM's logits.
    :param decode: ``"sample"`` or ``"mode"`` (:mod:`pyro_lnf.models.decoding`).
    :param seed: makes the result a function of the seed; the global generators are restored.
    :param device: run there (the module is moved, as ``module.to`` does); default: where the
        module's parameters are.
    :returns: ``x`` padded to ``T = max(lengths)`` — float 0/1 ``(N, T, 88)`` piano rolls or
        long ``(N, T)`` token ids, 0 at padded steps — and ``lengths`` ``(N,)``. Use
        :func:`unpad` for the list of sequences.
    :raises ConfigError: an unsupported model or invalid options.
    """
    check_sequence_model(module)
    check_decode(decode)
    check_between("--temperature", temperature, MIN_TEMPERATURE, MAX_TEMPERATURE)
    run_on = _module_device(module, device)
    with torch.no_grad(), seeded(seed, run_on):
        drawn = _lengths(module, num, lengths, length, run_on)
        return module.generate(drawn, temperature=temperature, decode=decode), drawn


def interpolate(
    module: LatentFlowModel,
    x_a: Tensor,
    x_b: Tensor,
    steps: int,
    *,
    pad_value: int | float = 0,
    decode: str = "mode",
    seed: int | None = None,
) -> tuple[Tensor, Tensor]:
    r"""Decode points on the segment between the encodings of two sequences.

    Both sequences are encoded with the posterior mean :math:`\mu = \mathrm{encoder}(x)` at
    the common length :math:`T = \max(T_a, T_b)`, the shorter one right-padded with
    ``pad_value`` (0: silent frames for piano rolls; for text pass e.g. the space's id), so
    that both latent sequences have shape ``(T, H)``. Step ``k`` decodes
    :math:`z = (1 - \alpha_k)\,\mu_a + \alpha_k\,\mu_b`, :math:`\alpha_k = k / (\text{steps}-1)`.

    :param module: a latent-flow model (the baseline has no latent space).
    :param x_a: the first sequence, ``(T_a, 88)`` or ``(T_a,)``.
    :param x_b: the second sequence.
    :param steps: number of points, both ends included (at least 2).
    :param decode: ``"mode"`` (default: the path is then deterministic) or ``"sample"``.
    :param seed: for ``decode="sample"``.
    :returns: ``x`` ``(steps, T, ...)`` and lengths ``(steps,)``, all ``T``.

    Example::

        >>> rolls, lengths = interpolate(model, test[0], test[5], steps=8)  # doctest: +SKIP
    """
    if not isinstance(module, LatentFlowModel):
        raise ConfigError(
            f"interpolation needs a latent-flow model with an encoder, not {type(module).__name__}"
        )
    check_decode(decode)
    check_between("--steps", steps, 2, MAX_STEPS)
    if len(x_a) < 1 or len(x_b) < 1:
        raise ConfigError("cannot interpolate between empty sequences")
    check_frames(steps, max(len(x_a), len(x_b)), "--steps x the longer sequence")
    run_on = next(module.parameters()).device
    with evaluating(module), torch.no_grad(), seeded(seed, run_on):
        z, path_lengths = module.latent_path(x_a, x_b, steps, pad_value)
        return module.emit(z, path_lengths, decode), path_lengths


#: Longest sentence decoded when no maximum is given (PTB's longest training sentence has 83
#: words with ``<eos>``; most stop far earlier).
DEFAULT_MAX_LENGTH = 100


def _check_sentence_options(max_length: int, decode: str) -> None:
    check_between("--length", max_length, 1, MAX_LENGTH)
    check_decode(decode)


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
    _check_sentence_options(max_length, decode)
    check_frames(num, max_length, "-n x --length")  # generate() pads every sentence to it
    device = next(vae.parameters()).device
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
    ``x_b`` (token ids ending in ``<eos>``), both ends included
    (:meth:`~pyro_lnf.models.sentence_vae.SentenceVAE.latent_path`: a segment between the
    posterior means, or a great-circle arc for a vMF latent).

    :returns: token ids ``(steps, max_length)``, lengths ``(steps,)`` and the latent points
        ``(steps, d)``.
    """
    check_between("--steps", steps, 2, MAX_STEPS)
    if len(x_a) < 1 or len(x_b) < 1:
        raise ConfigError("cannot interpolate between empty sentences")
    _check_sentence_options(max_length, decode)
    check_frames(steps, max_length, "--steps x --length")
    device = next(vae.parameters()).device
    with evaluating(vae), torch.no_grad(), seeded(seed, device):
        z = vae.latent_path(x_a, x_b, steps)
        tokens, lengths, _ = vae.generate(z, max_length, greedy=decode == "mode")
    return tokens, lengths, z
