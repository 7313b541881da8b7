"""The dataset registry: names, loaders, fetchers, and one entry point, :func:`load_dataset`."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from pyro_lnf.datasets.base import SPLITS, Dataset, Kind, resolve_data_dir
from pyro_lnf.datasets.bow import SOURCES as NEWS_SOURCES
from pyro_lnf.datasets.bow import fetch_20news, load_20news, news_dir
from pyro_lnf.datasets.polyphonic import MUSIC, fetch_polyphonic, load_polyphonic, music_path
from pyro_lnf.datasets.ptb import (
    DEFAULT_CHAR_MAX_LENGTH,
    fetch_ptb,
    load_ptb_char,
    load_ptb_words,
    ptb_path,
)
from pyro_lnf.errors import ConfigError, DatasetError
from pyro_lnf.nn.checks import DATASET_NAMES

FETCH_OPTIONS = ("mirrors", "verify", "progress", "timeout")


@dataclass(frozen=True)
class DatasetSpec:
    """A registered dataset.

    Attributes:
        name: the registry name.
        kind: ``"binary"``, ``"categorical"`` or ``"bow"``.
        title: a human name with its reference.
        files: the files it needs, relative to the data directory.
        load: ``load(data_dir, **options) -> Dataset``.
        fetch: ``fetch(data_dir, mirrors, *, verify, progress, timeout)``: download what is
            missing, write it atomically.
        options: the loader's options and their defaults.
        unit: what a sequence is made of (for reports).
    """

    name: str
    kind: Kind
    title: str
    files: tuple[str, ...]
    load: Callable[..., Dataset]
    fetch: Callable[..., Any]
    options: dict[str, Any] = field(default_factory=dict)
    unit: str = "frames"

    def missing(self, data_dir: str | os.PathLike | None = None) -> list[Path]:
        """The files of this dataset absent from the data directory."""
        root = resolve_data_dir(data_dir)
        return [root / f for f in self.files if not (root / f).is_file()]


def _registry() -> dict[str, DatasetSpec]:
    specs = [
        DatasetSpec(
            name=m.name,
            kind="binary",
            title=f"{m.title} (Boulanger-Lewandowski et al. 2012)",
            files=(str(music_path(m.name, Path())),),
            load=partial(load_polyphonic, m.name),
            fetch=partial(fetch_polyphonic, m.name),
        )
        for m in MUSIC.values()
    ]
    ptb_files = tuple(str(ptb_path(s, Path())) for s in SPLITS)
    specs += [
        DatasetSpec(
            name="ptb_char",
            kind="categorical",
            title="Penn Treebank sentences, characters (Mikolov; Ziegler & Rush 2019)",
            files=ptb_files,
            load=load_ptb_char,
            fetch=fetch_ptb,
            options={"max_length": DEFAULT_CHAR_MAX_LENGTH},
            unit="characters",
        ),
        DatasetSpec(
            name="ptb_words",
            kind="categorical",
            title="Penn Treebank sentences, words + <eos> (Mikolov)",
            files=ptb_files,
            load=load_ptb_words,
            fetch=fetch_ptb,
            options={"max_length": None},
            unit="words",
        ),
        DatasetSpec(
            name="20news",
            kind="bow",
            title="20 Newsgroups bag of words, 2000 words (NVDM, Miao et al. 2016)",
            files=tuple(str(news_dir(Path()) / n) for n in NEWS_SOURCES),
            load=load_20news,
            fetch=fetch_20news,
            options={"valid_size": 1000, "valid_from": "train", "seed": 0},
            unit="words",
        ),
    ]
    by_name = {s.name: s for s in specs}
    if set(by_name) != set(DATASET_NAMES):  # a dataset added here but not there, or the reverse
        raise RuntimeError(
            f"DATASET_NAMES {DATASET_NAMES} do not match the registry's {tuple(by_name)}"
        )
    return {name: by_name[name] for name in DATASET_NAMES}


DATASETS: dict[str, DatasetSpec] = _registry()


def get_spec(name: str) -> DatasetSpec:
    """The registry entry of ``name``; :class:`DatasetError` listing the valid names if none."""
    try:
        return DATASETS[name]
    except (KeyError, TypeError):
        raise DatasetError(
            f"unknown dataset {name!r}; choose one of: {', '.join(DATASETS)}"
        ) from None


def fetch_dataset(
    name: str,
    data_dir: str | os.PathLike | None = None,
    *,
    mirrors: Sequence[str] | str | None = None,
    verify: bool = True,
    progress: bool = True,
    timeout: float = 60.0,
) -> Path:
    """Download and cache whatever ``name`` lacks in the data directory; return the directory.

    Mirrors are tried in turn (the argument, else ``$LNF_MIRROR``, else the canonical URLs);
    files are checked (SHA-256 where known, content always) and written atomically, so a
    failure leaves nothing behind.

    Raises:
        DownloadError: no mirror could be reached.
        ChecksumError: the bytes served differ from the known file.
        DatasetError: the file is not the dataset (bad pickle, wrong split sizes, ...).
    """
    spec = get_spec(name)
    root = resolve_data_dir(data_dir)
    if spec.missing(root):
        spec.fetch(root, mirrors, verify=verify, progress=progress, timeout=timeout)
    return root


def load_dataset(
    name: str, data_dir: str | os.PathLike | None = None, download: bool = False, **options: Any
) -> Dataset:
    """Load a registered dataset from the data directory (see :func:`resolve_data_dir`).

    Args:
        name: one of :data:`DATASETS`: ``jsb_chorales``, ``nottingham``, ``muse_data``,
            ``piano_midi``, ``ptb_char``, ``ptb_words``, ``20news``.
        data_dir: the data directory; ``$LNF_DATA_DIR`` or ``./data`` if ``None``.
        download: fetch missing files first (see :func:`fetch_dataset`, which takes the
            options ``mirrors``, ``verify``, ``progress`` and ``timeout``).
        options: the dataset's own options (``DATASETS[name].options``), e.g. ``max_length``
            for ``ptb_char`` or ``valid_from`` for ``20news``.

    Example::

        >>> ds = load_dataset("ptb_char", max_length=288)  # doctest: +SKIP
        >>> ds.kind, ds.num_features, len(ds.splits["valid"])  # doctest: +SKIP
        ('categorical', 51, 3356)
    """
    spec = get_spec(name)
    fetch_opts = {k: options.pop(k) for k in FETCH_OPTIONS if k in options}
    unknown = set(options) - set(spec.options)
    if unknown:
        valid = ", ".join(spec.options) or "none"
        raise ConfigError(
            f"unknown option(s) {', '.join(sorted(unknown))} for dataset {name!r}; valid: {valid}"
        )
    root = resolve_data_dir(data_dir)
    missing = spec.missing(root)
    if missing and download:
        fetch_dataset(name, root, **fetch_opts)
    elif missing:
        raise DatasetError(
            f"dataset {name!r} is not in {root} ({missing[0]} is missing); run "
            f"`lnf datasets --fetch {name}`, pass download=True, or set LNF_DATA_DIR"
        )
    return spec.load(root, **{**spec.options, **options})


@dataclass(frozen=True)
class DatasetSummary:
    """What ``lnf datasets`` reports of a dataset: sizes per split, or why it is unavailable.

    ``units`` counts frames (music), characters or words (text, ``<eos>`` included) or words
    (bags of words) per split; ``max_length`` is the longest sequence over all splits.
    """

    spec: DatasetSpec
    present: bool
    sequences: dict[str, int] = field(default_factory=dict)
    units: dict[str, int] = field(default_factory=dict)
    max_length: int | None = None
    num_features: int | None = None
    note: str = ""


def summarize(name: str, data_dir: str | os.PathLike | None = None) -> DatasetSummary:
    """Load ``name`` (if present) with its default options and count it.

    Raises:
        DatasetError: the files are present but malformed.
    """
    spec = get_spec(name)
    if spec.missing(data_dir):
        return DatasetSummary(spec, present=False)
    ds = spec.load(resolve_data_dir(data_dir), **spec.options)
    lengths = {s: ds.lengths(s) for s in SPLITS}
    note = ""
    if "kept" in ds.info and ds.info.get("max_length") is not None:
        dropped = ", ".join(f"{s} {t - k}" for s, (k, t) in ds.info["kept"].items())
        note = f"length <= {ds.info['max_length']}; dropped {dropped}"
    elif ds.kind == "bow":
        held, source, seed = len(ds.splits["valid"]), ds.info["valid_from"], ds.info["seed"]
        note = f"valid: {held} held out of {source} (seed {seed})"
    return DatasetSummary(
        spec,
        present=True,
        sequences={s: len(v) for s, v in lengths.items()},
        units={s: int(v.sum()) for s, v in lengths.items()},
        max_length=max(int(v.max()) for v in lengths.values() if v.numel()),
        num_features=ds.num_features,
        note=note,
    )
