"""What ``lnf sample`` runs: load a checkpoint, draw sequences or an interpolation path with
:mod:`pyro_lnf.sample`, and write them as MIDI, PNG, text or ``.npz`` (:mod:`pyro_lnf.app.files`).

Every option is checked before the checkpoint and the dataset are read (a model can take
seconds to load, a dataset minutes, and sampling longer), and the output formats against the
model (MIDI and PNG for music, text for text).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor, nn

from pyro_lnf.app import files
from pyro_lnf.checkpoint import check_fits_dataset, load_model
from pyro_lnf.datasets import Dataset, Vocab, load_dataset
from pyro_lnf.errors import ConfigError
from pyro_lnf.models.baseline import LSTMBaseline
from pyro_lnf.models.decoding import check_decode
from pyro_lnf.models.sentence_vae import SentenceVAE
from pyro_lnf.nn.checks import (
    MAX_LENGTH,
    MAX_NUM,
    MAX_SEED,
    MAX_STEPS,
    MAX_TEMPERATURE,
    MIN_TEMPERATURE,
    check_between,
)
from pyro_lnf.nn.devices import resolve_device
from pyro_lnf.sample import (
    DEFAULT_MAX_LENGTH,
    check_frames,
    check_sequence_model,
    interpolate,
    interpolate_sentences,
    sample_sentences,
    sample_sequences,
    unpad,
)

__all__ = ["FORMATS", "SampleOutput", "sample_checkpoint", "sentence_texts"]

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
    (:func:`~pyro_lnf.sample.interpolate_sentences`), with ``length`` the longest sentence
    decoded.

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
        dataset; their encodings are interpolated in ``steps`` points
        (:func:`~pyro_lnf.sample.interpolate`).
    :param frames_per_beat: default: the dataset's grid (:data:`~pyro_lnf.app.files.
        FRAMES_PER_BEAT`).
    :raises ConfigError: options that do not fit the model (e.g. MIDI for a text model).
    :raises CheckpointError: an unreadable checkpoint, or one that does not match its dataset.
    :raises DatasetError: the dataset needed for text or interpolation is missing.
    """
    if decode is None:
        decode = "sample" if interpolate_between is None else "mode"
    check_decode(decode)
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
    check_sequence_model(module)
    dataset_name = module.config.get("dataset")
    chosen = _check_formats(formats, module.kind, dataset_name, interpolate_between is not None)
    # Refuse bad output options before sampling, which can take minutes.
    if frames_per_beat is None:
        frames_per_beat = files.frames_per_beat_for(dataset_name)
    if "midi" in chosen:
        files.check_midi_options(tempo, frames_per_beat, velocity)
    if "png" in chosen:
        files.require_matplotlib()
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
                result.files.append(files.write_midi(
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
            result.files.append(files.write_text(out / f"{prefix}s.txt", result.texts))
        else:
            result.files.append(files.write_npz(out / f"{prefix}s.npz", x=x, lengths=lengths,
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
            files.save_figure(out / f"{prefix}_{i:03d}.png", files.roll_figure(
                roll, title=f"{model} ({where})\nsample {i} · seed {seed} · "
                f"temperature {temperature:g} · {how}", **timing))
            for i, roll in enumerate(sequences)
        ]
    a, b = between
    alphas = torch.linspace(0.0, 1.0, len(sequences)).tolist()
    figure = files.interpolation_figure(
        sequences, alphas, ends=(f"test sequence {a}", f"test sequence {b}"),
        title=f"{model} ({where})\nz = (1 − α) μ(test {a}) + α μ(test {b}) · {how}",
        **timing)
    return [files.save_figure(out / f"{prefix}.png", figure)]


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
    chosen = _check_sentence_formats(formats, temperature, path)
    if max_length is None:
        max_length = DEFAULT_MAX_LENGTH
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
        tokens, lengths = sample_sentences(
            vae, num, max_length=max_length, decode=decode, seed=seed
        )
    else:
        prefix = "interp"
        a, b = _test_pair(dataset, interpolate_between, "sentence")
        tokens, lengths, z = interpolate_sentences(
            vae, a, b, steps, max_length=max_length, decode=decode, seed=seed
        )
        arrays.update(alpha=torch.linspace(0.0, 1.0, steps), z=z)
    result = SampleOutput(lengths=lengths.tolist())
    for fmt in chosen:
        if fmt == "txt":
            result.texts = sentence_texts(vae, vocab, tokens, lengths)
            result.files.append(files.write_text(out / f"{prefix}s.txt", result.texts))
        else:
            result.files.append(
                files.write_npz(out / f"{prefix}s.npz", x=tokens, lengths=lengths, **arrays)
            )
    return result


def sentence_texts(vae: SentenceVAE, vocab: Vocab, tokens: Tensor, lengths: Tensor) -> list[str]:
    """Each sentence as words joined by spaces, without its closing ``<eos>``."""
    texts = []
    for ids, n in zip(tokens.tolist(), lengths.tolist(), strict=True):
        words = ids[:n]
        if words and words[-1] == vae.eos_index:
            words = words[:-1]
        texts.append(vocab.decode(words))
    return texts


def _check_sentence_formats(
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
