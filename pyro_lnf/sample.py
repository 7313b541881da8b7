r"""Drawing sequences from a trained model, and interpolating between two encodings.

Latent-flow model (Ziegler & Rush 2019, §3 and the authors' ``DFModel.generate``):

.. math::

    T \sim p(T), \qquad \epsilon_{1:T} \sim \mathcal N(0, \tau^2 I), \qquad
    z_{1:T} = f_\theta(\epsilon_{1:T}; T), \qquad x_t \sim p(x_t \mid z_{1:T}, T),

the prior run in its sampling direction (sequential in t for AF in time, one pass for IAF and
the independent ablation) and every :math:`x_t` decoded at once, since the emission never
reads ``x``. The temperature :math:`\tau` scales the noise, as in the authors' code.

LSTM baseline: :math:`x_t \sim p(x_t \mid x_{<t}, T)` one step at a time, feeding each sampled
token or frame back in with the length features; the temperature divides the logits.

Decoding: ``"sample"`` draws from the emission (a sample of the model's distribution);
``"mode"`` takes the most likely value of each step's distribution (argmax for characters,
:math:`\sigma(\ell) > 0.5` for piano keys), the authors' default for the flows, where ``z``
stays random. Everything runs in eval mode under :func:`torch.no_grad`; with a ``seed`` the
result is a function of the seed alone and the global generators are left as they were.

Example::

    >>> model = load_model("runs/jsb-afscf/best.pt")                   # doctest: +SKIP
    >>> x, lengths = sample_sequences(model, 4, seed=0)                # doctest: +SKIP
    >>> rolls = unpad(x, lengths)          # four (T_i, 88) piano rolls  # doctest: +SKIP

Reference: Zachary M. Ziegler, Alexander M. Rush. Latent Normalizing Flows for Discrete
Sequences. ICML 2019. [arXiv:1901.10548]
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor, nn

from pyro_lnf.app import files as outputs
from pyro_lnf.checkpoint import check_fits_dataset
from pyro_lnf.datasets import Dataset, load_dataset
from pyro_lnf.errors import ConfigError
from pyro_lnf.evaluate import evaluating
from pyro_lnf.nn.checks import (
    MAX_FRAMES,
    MAX_LENGTH,
    MAX_NUM,
    MAX_SEED,
    MAX_STEPS,
    MAX_TEMPERATURE,
    MIN_TEMPERATURE,
)
from pyro_lnf.models.baseline import LSTMBaseline
from pyro_lnf.models.lnf import LatentFlowModel
from pyro_lnf.models.vae import SentenceVAE
from pyro_lnf.app.files import check_between
from pyro_lnf.nn.lstm import LSTMStepper, zero_state

__all__ = [
    "DECODINGS",
    "DEVICES",
    "FORMATS",
    "MAX_FRAMES",
    "MAX_LENGTH",
    "MAX_NUM",
    "MAX_SEED",
    "MAX_STEPS",
    "MAX_TEMPERATURE",
    "MIN_TEMPERATURE",
    "SampleOutput",
    "check_frames",
    "interpolate",
    "resolve_device",
    "sample_checkpoint",
    "sample_sequences",
    "unpad",
]

DECODINGS = ("sample", "mode")


# Bounds of ``lnf sample``'s options (MAX_NUM, MAX_LENGTH, MAX_FRAMES, ...) live in the
# import-free :mod:`pyro_lnf.nn.checks`, shared by the CLI's click ranges and the checks below.

#: The devices this library runs on (torch also parses mps, meta, xla, ..., which it does not).
DEVICES = "cpu, cuda or cuda:N"


def resolve_device(device: str | torch.device | None) -> torch.device | None:
    """``device`` as a :class:`torch.device`: the one validator of every ``--device``.

    Only the CPU and CUDA devices are accepted: the models and the samplers are tested there,
    and a ``meta`` device would "run" without computing anything.

    :raises ConfigError: an unparsable or unsupported name, CUDA asked for on a machine
        without it, or a CUDA index beyond the devices present.
    """
    if device is None:
        return None
    try:
        if not isinstance(device, (str, torch.device)):
            raise TypeError(f"not a device name: {device!r}")
        resolved = torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise ConfigError(f"unknown device {device!r}; use {DEVICES}") from err
    if resolved.type not in ("cpu", "cuda") or (resolved.type == "cpu" and resolved.index):
        raise ConfigError(f"device {str(device)!r} is not supported; use {DEVICES}")
    if resolved.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(
                f"device {str(device)!r} requested but CUDA is not available; use --device cpu"
            )
        count = torch.cuda.device_count()
        if resolved.index is not None and resolved.index >= count:
            raise ConfigError(
                f"device {str(device)!r} requested but this machine has {count} CUDA "
                f"device(s): cuda:0 .. cuda:{count - 1}"
            )
    return resolved


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


def _check_model(module: nn.Module) -> None:
    if not isinstance(module, (LatentFlowModel, LSTMBaseline)):
        raise ConfigError(
            f"sampling sequences needs a latent-flow model or the LSTM baseline, not "
            f"{type(module).__name__}"
        )


def _check_decode(decode: str) -> None:
    if decode not in DECODINGS:
        raise ConfigError(f"unknown decoding {decode!r}; choose 'sample' or 'mode'")


def _decode(kind: str, logits: Tensor, decode: str) -> Tensor:
    """x from per-step logits: long ids (categorical) or 0/1 frames in the logits' dtype."""
    if kind == "categorical":
        if decode == "mode":
            return logits.argmax(-1)
        return torch.distributions.Categorical(logits=logits).sample()
    if decode == "mode":
        return (logits > 0).to(logits.dtype)  # sigma(l) > 0.5
    return torch.bernoulli(torch.sigmoid(logits))


def _mask_padding(x: Tensor, lengths: Tensor) -> Tensor:
    """Zero the steps ``t >= length`` (they are not part of any sequence)."""
    valid = torch.arange(x.shape[1], device=x.device) < lengths[:, None]
    if x.dim() == 3:
        valid = valid.unsqueeze(-1)
    return x * valid.to(x.dtype)


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
    r"""Draw ``num`` sequences from a :class:`~pyro_lnf.models.lnf.LatentFlowModel` or an
    :class:`~pyro_lnf.models.baseline.LSTMBaseline`.

    :param module: the model (put in eval mode for the call, then restored).
    :param num: number of sequences N.
    :param lengths: one length per sequence; default: drawn from the model's p(T).
    :param length: one length for every sequence (instead of ``lengths``).
    :param temperature: :math:`\tau > 0`; scales the prior noise of a flow model
        (:math:`\epsilon \sim \mathcal N(0, \tau^2 I)`), divides the LSTM's logits.
    :param decode: ``"sample"`` or ``"mode"`` (see the module docstring).
    :param seed: makes the result a function of the seed; the global generators are restored.
    :param device: run there (the module is moved, as ``module.to`` does); default: where the
        module's parameters are.
    :returns: ``x`` padded to ``T = max(lengths)`` — float 0/1 ``(N, T, 88)`` piano rolls or
        long ``(N, T)`` token ids, 0 at padded steps — and ``lengths`` ``(N,)``. Use
        :func:`unpad` for the list of sequences.
    :raises ConfigError: an unsupported model or invalid options.
    """
    _check_model(module)
    _check_decode(decode)
    check_between("--temperature", temperature, MIN_TEMPERATURE, MAX_TEMPERATURE)
    run_on = _module_device(module, device)
    with evaluating(module), torch.no_grad(), seeded(seed, run_on):
        drawn = _lengths(module, num, lengths, length, run_on)
        steps = int(drawn.max())
        if isinstance(module, LatentFlowModel):
            z, _ = module.prior.sample(drawn, steps, temperature)
            x = _decode(module.kind, module.emission(z, drawn), decode)
        else:
            x = _sample_autoregressive(module, drawn, steps, temperature, decode)
        return _mask_padding(x, drawn), drawn


def _sample_autoregressive(
    module: LSTMBaseline, lengths: Tensor, steps: int, temperature: float, decode: str
) -> Tensor:
    r"""The baseline's ancestral sampler: step t reads :math:`[\mathrm{emb}(x_{t-1}); c_t]`
    (zeros for :math:`x_{-1}`), exactly the input its teacher-forced ``logits`` builds, so the
    logits seen here are those :meth:`LSTMBaseline.logits` gives for the finished sequence.

    The LSTM runs on its own weights (:class:`~pyro_lnf.nn.lstm.LSTMStepper`: one
    ``nn.LSTM`` call per step is ~3x slower on CPU) with the length features' share of the
    gates computed for all steps at once; the input embedding is folded into the first layer's
    input weights (:math:`\mathrm{emb}(x) W^\top = x\,(E W^\top)` for a one-hot or multi-hot
    x) and the projection into the tied output matrix, so a step costs the recurrence and one
    small product. Dropout is the identity in eval mode, so it is not applied.
    """
    rnn, embedding = module.rnn, module.embedding
    width = embedding.weight.shape[1]
    stepper = LSTMStepper(rnn, module.length_features(lengths, steps),
                          input_weight=embedding.weight @ rnn.weight_ih_l0[:, :width].T)
    out_weight = embedding.weight @ module.project.weight
    out_bias = embedding.logits(module.project.bias)
    state = zero_state(rnn, lengths.shape[0], out_weight)
    x_t: Tensor | None = None
    xs = []
    for t in range(steps):
        if x_t is not None and module.kind == "categorical":
            x_t = nn.functional.one_hot(x_t, out_weight.shape[0]).to(out_weight.dtype)
        top, state = stepper.step(t, x_t, state)
        x_t = _decode(module.kind, nn.functional.linear(top, out_weight, out_bias) / temperature,
                      decode)
        xs.append(x_t)
    return torch.stack(xs, 1)


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
    _check_decode(decode)
    check_between("--steps", steps, 2, MAX_STEPS)
    if len(x_a) < 1 or len(x_b) < 1:
        raise ConfigError("cannot interpolate between empty sequences")
    common = max(len(x_a), len(x_b))
    check_frames(steps, common, "--steps x the longer sequence")
    run_on = next(module.parameters()).device
    with evaluating(module), torch.no_grad(), seeded(seed, run_on):
        ends = torch.stack([_pad_to(x.to(run_on), common, pad_value) for x in (x_a, x_b)])
        if module.kind == "binary":
            ends = ends.to(module.embedding.weight.dtype)
        else:
            ends = ends.long()
        lengths = torch.full((2,), common, dtype=torch.long, device=run_on)
        loc, _ = module.encoder(ends, lengths)
        alpha = torch.linspace(0.0, 1.0, steps, dtype=loc.dtype, device=run_on)[:, None, None]
        z = torch.lerp(loc[0], loc[1], alpha)
        path_lengths = lengths.new_full((steps,), common)
        return _decode(module.kind, module.emission(z, path_lengths), decode), path_lengths


def _pad_to(x: Tensor, length: int, value: int | float) -> Tensor:
    """``x`` ``(T, ...)`` right-padded with ``value`` to ``length`` steps."""
    if len(x) == length:
        return x
    filler = x.new_full((length - len(x), *x.shape[1:]), value)
    return torch.cat([x, filler])


# ------------------------------------------------------------------------------------------
# checkpoint -> files (what ``lnf sample`` runs)

FORMATS = ("midi", "png", "txt", "npz")
_MUSIC_ONLY = ("midi", "png")


@dataclass
class SampleOutput:
    """What :func:`sample_checkpoint` produced: the files, and the decoded text if any."""

    files: list[Path] = field(default_factory=list)
    texts: list[str] = field(default_factory=list)
    lengths: list[int] = field(default_factory=list)


def _check_formats(formats: Sequence[str], kind: str, dataset: str | None,
                   interpolating: bool = False) -> tuple[str, ...]:
    music = ("midi", "png") if interpolating else ("midi",)  # a path is for looking at
    chosen = tuple(dict.fromkeys(formats)) or (music if kind == "binary" else ("txt",))
    for fmt in chosen:
        if fmt not in FORMATS:
            raise ConfigError(f"unknown output format {fmt!r}; choose from {', '.join(FORMATS)}")
        if kind == "categorical" and fmt in _MUSIC_ONLY:
            raise ConfigError(
                f"--format {fmt} needs a music model, but this one models text ({dataset}); "
                "use --format txt or npz"
            )
        if kind == "binary" and fmt == "txt":
            raise ConfigError(
                f"--format txt needs a text model, but this one models piano rolls ({dataset}); "
                "use --format midi, png or npz"
            )
    return chosen


def _check_sample_options(out: Path, num: int, length: int | None, temperature: float,
                          seed: int | None, steps: int, interpolating: bool) -> None:
    """Refuse out-of-range options before the checkpoint and the dataset are read (a model
    can take seconds to load, a dataset minutes, and sampling longer)."""
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} is a file; give a directory (it is created if needed)")
    check_between("--num", num, 1, MAX_NUM)
    if length is not None:
        check_between("--length", length, 1, MAX_LENGTH)
        if not interpolating:
            check_frames(num, length, "-n x --length")
    check_between("--temperature", temperature, MIN_TEMPERATURE, MAX_TEMPERATURE)
    if seed is not None:
        check_between("--seed", seed, 0, MAX_SEED)
    check_between("--steps", steps, 2, MAX_STEPS)


def _test_pair(dataset: Dataset, indices: tuple[int, int], noun: str) -> tuple[Tensor, Tensor]:
    """Test-split items ``indices`` of ``dataset``, the ends of an interpolation path."""
    test = dataset.splits["test"]
    for index in indices:
        if not 0 <= index < len(test):
            raise ConfigError(
                f"test {noun} {index} does not exist: {dataset.name} has {len(test)} test "
                f"{noun}s (0..{len(test) - 1})"
            )
    return test[indices[0]], test[indices[1]]


def sample_checkpoint(
    checkpoint: str | os.PathLike,
    out: str | os.PathLike,
    *,
    num: int = 4,
    length: int | None = None,
    temperature: float = 1.0,
    seed: int | None = 0,
    formats: Sequence[str] = (),
    decode: str | None = None,
    tempo: float = 120.0,
    frames_per_beat: int | None = None,
    velocity: int = 80,
    interpolate_between: tuple[int, int] | None = None,
    steps: int = 8,
    data_dir: str | os.PathLike | None = None,
    device: str = "cpu",
) -> SampleOutput:
    """Load a checkpoint, draw sequences (or an interpolation path) and write them to ``out``.

    A latent-flow model or the LSTM baseline gives music or text; a sentence VAE (``svae``)
    gives sentences from its prior, or a homotopy between two test sentences
    (:mod:`pyro_lnf.sentences`), with ``length`` the longest sentence decoded.

    Files, for ``prefix`` = ``sample`` (or ``interp`` with ``interpolate_between``):
    ``<prefix>_000.mid``, ... one per sequence; ``sample_000.png``, ... one piano-roll figure
    per sample (time in frames and seconds, pitch named at the C keys, a title), or for a path
    ONE grid ``interp.png`` with a row per point and its endpoints marked; ``<prefix>s.txt``
    (text, one per line) and ``<prefix>s.npz`` (``x`` padded, ``lengths``; for a path also
    ``alpha``) for the whole set. Music defaults to MIDI (a path: MIDI and the PNG grid), text
    to ``.txt``.

    :param decode: ``"sample"`` or ``"mode"``; default: sample when sampling, the mode along an
        interpolation path (so that the path itself is what changes from point to point).
    :param interpolate_between: indices ``(A, B)`` of two test-split sequences of the model's
        dataset; their encodings are interpolated in ``steps`` points (:func:`interpolate`).
    :param frames_per_beat: default: the dataset's grid (:data:`~pyro_lnf.app.files.
        FRAMES_PER_BEAT`).
    :raises ConfigError: options that do not fit the model (e.g. MIDI for a text model).
    :raises CheckpointError: an unreadable checkpoint, or one that does not match its dataset.
    :raises DatasetError: the dataset needed for text or interpolation is missing.
    """
    from pyro_lnf.checkpoint import load_model

    if decode is None:
        decode = "sample" if interpolate_between is None else "mode"
    _check_decode(decode)
    _check_sample_options(Path(out), num, length, temperature, seed, steps,
                          interpolate_between is not None)
    run_on = resolve_device(device)
    path = Path(checkpoint)
    module = load_model(path, map_location=run_on, param_store=False)
    if isinstance(module, SentenceVAE):
        return _sample_sentence_checkpoint(
            module, path, Path(out), num=num, max_length=length, temperature=temperature,
            seed=seed, formats=formats, decode=decode, interpolate_between=interpolate_between,
            steps=steps, data_dir=data_dir,
        )
    _check_model(module)
    dataset_name = module.config.get("dataset")
    chosen = _check_formats(formats, module.kind, dataset_name, interpolate_between is not None)
    # Refuse bad output options before sampling, which can take minutes.
    if frames_per_beat is None:
        frames_per_beat = outputs.frames_per_beat_for(dataset_name)
    if "midi" in chosen:
        outputs.check_midi_options(tempo, frames_per_beat, velocity)
    if "png" in chosen:
        outputs.require_matplotlib()
    dataset = None
    if (module.kind == "categorical" and "txt" in chosen) or interpolate_between is not None:
        if dataset_name is None:
            raise ConfigError(
                f"checkpoint {path} does not name its dataset, which decoding text and "
                "interpolating need; use --format npz"
            )
        dataset = load_dataset(dataset_name, data_dir=data_dir)
        check_fits_dataset(module.config, dataset, path)
    vocab = dataset.vocab if module.kind == "categorical" and dataset is not None else None

    arrays: dict[str, Tensor] = {}
    if interpolate_between is None:
        prefix = "sample"
        x, lengths = sample_sequences(module, num, length=length, temperature=temperature,
                                      decode=decode, seed=seed)
    else:
        prefix = "interp"
        a, b = _test_pair(dataset, interpolate_between, "sequence")
        # The shorter sequence is padded with silence (music) or spaces (text).
        pad_value = vocab.stoi.get(" ", vocab.pad_index) if vocab is not None else 0
        x, lengths = interpolate(module, a, b, steps, pad_value=pad_value, decode=decode,
                                 seed=seed)
        arrays["alpha"] = torch.linspace(0.0, 1.0, steps)

    result = SampleOutput(lengths=lengths.tolist())
    out = Path(out)
    sequences = unpad(x.cpu(), lengths.cpu())
    for fmt in chosen:
        if fmt == "midi":
            for i, roll in enumerate(sequences):
                result.files.append(outputs.write_midi(
                    out / f"{prefix}_{i:03d}.mid", roll, tempo=tempo,
                    frames_per_beat=frames_per_beat, velocity=velocity))
        elif fmt == "png":
            result.files += _write_pictures(out, prefix, sequences, model=_model_label(module),
                                            source=path, seed=seed, decode=decode,
                                            temperature=temperature, tempo=tempo,
                                            frames_per_beat=frames_per_beat,
                                            between=interpolate_between)
        elif fmt == "txt":
            result.texts = [vocab.decode(ids) for ids in sequences]
            result.files.append(outputs.write_text(out / f"{prefix}s.txt", result.texts))
        else:
            result.files.append(outputs.write_npz(out / f"{prefix}s.npz", x=x, lengths=lengths,
                                                  **arrays))
    return result


def _model_label(module: nn.Module) -> str:
    """``"AF/AF on jsb_chorales"``: the model as the README names it, and its dataset."""
    priors = {"afaf": "AF/AF", "afscf": "AF/SCF", "iafscf": "IAF/SCF", "indep": "independent"}
    name = "LSTM" if isinstance(module, LSTMBaseline) else priors.get(
        module.config.get("prior"), type(module).__name__)
    dataset = module.config.get("dataset")
    return name if dataset is None else f"{name} on {dataset}"


def _write_pictures(out: Path, prefix: str, sequences: list[Tensor], *, model: str,
                    source: Path, seed: int | None, decode: str, temperature: float,
                    tempo: float, frames_per_beat: int,
                    between: tuple[int, int] | None) -> list[Path]:
    """PNG figures with time, pitch and a title: one per sample (``sample_000.png``, ...), or
    for a path one grid ``interp.png`` with its endpoints marked (the MIDI files, one per
    point, go beside it)."""
    where = f"{source.parent.name}/{source.name}" if source.parent.name else source.name
    timing = dict(tempo=tempo, frames_per_beat=frames_per_beat)
    how = "most likely keys" if decode == "mode" else "sampled keys"
    if between is None:
        return [
            outputs.save_figure(out / f"{prefix}_{i:03d}.png", outputs.roll_figure(
                roll, title=f"{model} ({where})\nsample {i} · seed {seed} · "
                f"temperature {temperature:g} · {how}", **timing))
            for i, roll in enumerate(sequences)
        ]
    a, b = between
    alphas = torch.linspace(0.0, 1.0, len(sequences)).tolist()
    figure = outputs.interpolation_figure(
        sequences, alphas, ends=(f"test sequence {a}", f"test sequence {b}"),
        title=f"{model} ({where})\nz = (1 − α) μ(test {a}) + α μ(test {b}) · {how}",
        **timing)
    return [outputs.save_figure(out / f"{prefix}.png", figure)]


def _sample_sentence_checkpoint(
    vae: SentenceVAE,
    path: Path,
    out: Path,
    *,
    num: int,
    max_length: int | None,
    temperature: float,
    seed: int | None,
    formats: Sequence[str],
    decode: str,
    interpolate_between: tuple[int, int] | None,
    steps: int,
    data_dir: str | os.PathLike | None,
) -> SampleOutput:
    """:func:`sample_checkpoint` for a sentence VAE: sentences from the prior, or a homotopy
    between two test sentences; ``max_length`` caps each sentence (``<eos>`` ends it earlier)."""
    from pyro_lnf import sentences

    chosen = sentences.check_sentence_options(formats, temperature, path)
    if max_length is None:
        max_length = sentences.DEFAULT_MAX_LENGTH
    if vae.config.get("dataset") is None:
        raise ConfigError(
            f"checkpoint {path} does not name its dataset, which decoding text needs"
        )
    dataset = load_dataset(vae.config["dataset"], data_dir=data_dir)
    check_fits_dataset(vae.config, dataset, path)
    vocab = dataset.vocab
    arrays: dict[str, Tensor] = {}
    if interpolate_between is None:
        prefix = "sample"
        tokens, lengths = sentences.sample_sentences(
            vae, num, max_length=max_length, decode=decode, seed=seed
        )
    else:
        prefix = "interp"
        a, b = _test_pair(dataset, interpolate_between, "sentence")
        tokens, lengths, z = sentences.interpolate_sentences(
            vae, a, b, steps, max_length=max_length, decode=decode, seed=seed
        )
        arrays.update(alpha=torch.linspace(0.0, 1.0, steps), z=z)
    result = SampleOutput(lengths=lengths.tolist())
    for fmt in chosen:
        if fmt == "txt":
            result.texts = sentences.sentence_texts(vae, vocab, tokens, lengths)
            result.files.append(outputs.write_text(out / f"{prefix}s.txt", result.texts))
        else:
            result.files.append(
                outputs.write_npz(out / f"{prefix}s.npz", x=tokens, lengths=lengths, **arrays)
            )
    return result
