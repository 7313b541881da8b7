"""The four polyphonic music datasets of Boulanger-Lewandowski et al. (ICML 2012) as piano rolls.

Each piece is a sequence of time steps, each step the set of sounding MIDI notes in 21..108
(the 88 piano keys). A piece of ``T`` steps becomes a float32 piano roll ``x`` of shape
``(T, 88)`` with ``x[t, n - 21] = 1`` iff note ``n`` sounds at step ``t``.

On disk a dataset is ``polyphonic/<name>.json.gz``: gzip around compact JSON
``{"train": [...], "valid": [...], "test": [...]}`` whose steps are ascending lists of ints.
Where it is missing, the canonical Python-2 pickle is downloaded, opened with
:class:`RestrictedUnpickler` (plain :mod:`pickle` would run whatever code the file names),
validated (published split sizes, note range) and cached as that pickle-free JSON.

Reference: N. Boulanger-Lewandowski, Y. Bengio, P. Vincent, "Modeling Temporal Dependencies in
High-Dimensional Sequences: Application to Polyphonic Music Generation and Transcription",
ICML 2012. http://www-etud.iro.umontreal.ca/~boulanni/icml2012
"""

from __future__ import annotations

import builtins
import gzip
import io
import itertools
import json
import pickle
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import numpy as np
import torch

from pyro_lnf.datasets.base import SPLITS, Dataset
from pyro_lnf.datasets.download import Source, fetch_bytes, write_atomic
from pyro_lnf.errors import DatasetError

MIN_NOTE = 21
MAX_NOTE = 108
NUM_NOTES = MAX_NOTE - MIN_NOTE + 1  # 88 piano keys

_CANONICAL = "http://www-etud.iro.umontreal.ca/~boulanni/"
_PYRO = "https://raw.githubusercontent.com/pyro-ppl/datasets/master/polyphonic/"

Songs = dict[str, list[list[list[int]]]]


@dataclass(frozen=True)
class MusicSpec:
    """A music dataset: its title, where its pickle comes from and its published split sizes."""

    name: str
    title: str
    source: Source
    split_sizes: tuple[int, int, int]


def _spec(
    name: str, title: str, pickle_name: str, sizes: tuple[int, int, int], sha: str | None
) -> MusicSpec:
    # The canonical server first; Pyro's mirror of the same pickles second (its bytes are only
    # accepted where they match the known checksum; the content is validated in every case).
    urls = (_CANONICAL + quote(pickle_name), _PYRO + f"{name}.pickle")
    return MusicSpec(name, title, Source(pickle_name, urls, sha), sizes)


MUSIC: dict[str, MusicSpec] = {
    s.name: s
    for s in (
        _spec(
            "jsb_chorales",
            "JSB Chorales",
            "JSB Chorales.pickle",
            (229, 76, 77),
            "69dc4c3e52800959ac0ab3b82aa3e5f55285ce64f1705acb3e3a8ef77a5c051c",
        ),
        _spec("nottingham", "Nottingham", "Nottingham.pickle", (694, 173, 170), None),
        _spec("muse_data", "MuseData", "MuseData.pickle", (524, 135, 124), None),
        _spec("piano_midi", "Piano-midi.de", "Piano-midi.de.pickle", (87, 12, 25), None),
    )
}


def music_path(name: str, data_dir: Path) -> Path:
    """Where the cached piano rolls of ``name`` live under ``data_dir``."""
    return data_dir / "polyphonic" / f"{name}.json.gz"


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that can build only plain containers, numbers, strings and numpy scalars.

    Unpickling calls whatever global the file names (``os.system`` included), so every global
    is checked against an allow-list: safe builtins, and ``numpy.core.multiarray.scalar`` with
    ``numpy.dtype``, which the original Python-2 pickles use for their int64 notes (and
    ``_codecs.encode``, how Python 3 stores bytes at protocol 2). Anything else
    raises :class:`~pyro_lnf.errors.DatasetError` naming the global, before it is called.

    Example::

        >>> data = pickle.dumps({"train": [[frozenset([60])]]}, protocol=2)
        >>> RestrictedUnpickler(io.BytesIO(data), source="x.pickle", encoding="latin1").load()
        {'train': [[frozenset({60})]]}
        >>> RestrictedUnpickler(io.BytesIO(pickle.dumps(eval)), source="x").load()
        ... # doctest: +ELLIPSIS
        Traceback (most recent call last):
        pyro_lnf.errors.DatasetError: refused to unpickle x: ... global builtins.eval, ...
    """

    _BUILTINS = frozenset(
        {"set", "frozenset", "list", "dict", "tuple", "int", "float", "str", "bool"}
    )
    _PY2_NAMES = {"long": "int", "unicode": "str"}
    _NUMPY = frozenset(
        {
            ("numpy.core.multiarray", "scalar"),
            ("numpy._core.multiarray", "scalar"),
            ("numpy", "dtype"),
        }
    )
    # Python 3 writes bytes into protocol-2 pickles (e.g. a numpy scalar's raw data) as
    # _codecs.encode(text, "latin1"): a pure data conversion.
    _CODECS = ("_codecs", "encode")

    def __init__(self, file: io.BufferedIOBase, *, source: str, **kwargs: Any) -> None:
        super().__init__(file, **kwargs)
        self._source = source

    def _latin1(self, text: str, encoding: str) -> bytes:
        # Only the conversion pickle itself emits; no other codec is reachable from a file.
        if encoding not in ("latin1", "latin-1"):
            raise DatasetError(
                f"refused to unpickle {self._source}: it asks for the codec {encoding!r}"
            )
        return text.encode("latin-1")

    def find_class(self, module: str, name: str) -> Any:
        # Python-2 pickles name __builtin__.set etc.; map them the way pickle's fix_imports does.
        if module == "__builtin__":
            module, name = "builtins", self._PY2_NAMES.get(name, name)
        if module == "builtins" and name in self._BUILTINS:
            return getattr(builtins, name)
        if (module, name) == self._CODECS:
            return self._latin1
        if (module, name) in self._NUMPY:
            if name == "dtype":
                return np.dtype
            return _numpy_scalar()
        raise DatasetError(
            f"refused to unpickle {self._source}: it asks for the global {module}.{name}, which "
            "is not plain data; the file is not a genuine dataset pickle, delete it"
        )


def _numpy_scalar() -> Any:
    try:
        from numpy._core.multiarray import scalar  # numpy >= 2
    except ImportError:  # pragma: no cover - numpy 1.x
        from numpy.core.multiarray import scalar
    return scalar


def unpickle_songs(data: bytes, source: str) -> Songs:
    """Read a Boulanger-Lewandowski pickle safely into ``{split: [[[note, ...], ...], ...]}``.

    Notes come out as ascending lists of Python ints; the result is validated only for shape
    here (see :func:`validate_songs` for sizes and note range).
    """
    try:
        obj = RestrictedUnpickler(io.BytesIO(data), source=source, encoding="latin1").load()
    except DatasetError:
        raise
    except Exception as err:  # noqa: BLE001 - any failure of a corrupt pickle is a bad file
        reason = " ".join(str(err).split())
        raise DatasetError(
            f"{source} is not a readable pickle ({type(err).__name__}: {reason})"
        ) from None
    if not isinstance(obj, dict) or not set(SPLITS) <= set(obj):
        raise DatasetError(
            f"{source} does not hold a dict with keys {SPLITS}; it is not a music dataset"
        )
    try:
        return {
            split: [[sorted({_note(n) for n in step}) for step in song] for song in obj[split]]
            for split in SPLITS
        }
    except (TypeError, ValueError) as err:
        raise DatasetError(
            f"{source} is not a list of songs of note sets per split ({err})"
        ) from None


def _note(n: Any) -> int:
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)):
        raise TypeError(f"note {n!r} is not an integer")
    return int(n)


def _flatten(songs: list[list[list[int]]]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Song lengths, notes-per-step and all notes of a split, as flat numpy arrays."""
    song_lengths = np.fromiter((len(s) for s in songs), dtype=np.int64, count=len(songs))
    steps = list(itertools.chain.from_iterable(songs))
    per_step = np.fromiter((len(step) for step in steps), dtype=np.int64, count=len(steps))
    notes = np.fromiter(
        itertools.chain.from_iterable(steps), dtype=np.int64, count=int(per_step.sum())
    )
    return song_lengths, per_step, notes


def validate_songs(songs: Any, spec: MusicSpec, source: str) -> dict[str, tuple[np.ndarray, ...]]:
    """Check the published split sizes and the note range; return the flattened splits.

    Raises:
        DatasetError: naming ``source`` and what is wrong with it.
    """
    if not isinstance(songs, dict) or not set(SPLITS) <= set(songs):
        raise DatasetError(f"{source} does not hold the splits {SPLITS}")
    flat = {}
    for split, expected in zip(SPLITS, spec.split_sizes):
        part = songs[split]
        if not isinstance(part, list) or len(part) != expected:
            got = len(part) if isinstance(part, list) else type(part).__name__
            raise DatasetError(
                f"{source}: split {split!r} has {got} songs, {spec.title} has {expected}; "
                "the file is not the published dataset"
            )
        try:
            flat[split] = _flatten(part)
        except (TypeError, ValueError) as err:
            raise DatasetError(
                f"{source}: split {split!r} is not a list of songs of note lists ({err})"
            ) from None
        notes = flat[split][2]
        if notes.size and (notes.min() < MIN_NOTE or notes.max() > MAX_NOTE):
            raise DatasetError(
                f"{source}: split {split!r} has notes {notes.min()}..{notes.max()} outside "
                f"the piano range {MIN_NOTE}..{MAX_NOTE}"
            )
        if (flat[split][0] < 1).any():
            raise DatasetError(f"{source}: split {split!r} has an empty song")
    return flat


def to_rolls(
    song_lengths: np.ndarray, per_step: np.ndarray, notes: np.ndarray
) -> list[torch.Tensor]:
    """Piano rolls of one flattened split: one float32 ``(T, 88)`` tensor per song.

    All rolls are filled in one vectorised scatter and returned as views of a single buffer
    (MuseData's training split is 245k steps; a per-note Python loop would dominate loading).
    """
    frames = int(song_lengths.sum())
    roll = np.zeros((frames, NUM_NOTES), dtype=np.float32)
    roll[np.repeat(np.arange(frames), per_step), notes - MIN_NOTE] = 1.0
    return list(torch.from_numpy(roll).split(song_lengths.tolist()))


def _gzip_json(songs: Songs) -> bytes:
    buf = io.BytesIO()
    # mtime 0 and no file name make the bytes depend on the content only.
    with gzip.GzipFile(fileobj=buf, mode="wb", compresslevel=9, mtime=0) as f:
        f.write(json.dumps({s: songs[s] for s in SPLITS}, separators=(",", ":")).encode())
    return buf.getvalue()


def read_songs(name: str, data_dir: Path) -> tuple[Songs, dict[str, tuple[np.ndarray, ...]]]:
    """Read and validate ``polyphonic/<name>.json.gz``; return the songs and flattened splits."""
    spec = MUSIC[name]
    path = music_path(name, data_dir)
    try:
        with gzip.open(path, "rt", encoding="utf-8") as f:
            songs = json.load(f, parse_float=_no_float)
    except FileNotFoundError:
        raise DatasetError(
            f"{path} is missing; run `lnf datasets --fetch {name}` or pass download=True"
        ) from None
    except (OSError, EOFError, ValueError) as err:
        raise DatasetError(
            f"{path} is not valid gzip-compressed JSON ({' '.join(str(err).split())}); delete it "
            f"and run `lnf datasets --fetch {name}`"
        ) from None
    return songs, validate_songs(songs, spec, str(path))


def _no_float(text: str) -> float:
    # Notes are integers; numpy would silently truncate 60.5 to 60 when flattening.
    raise ValueError(f"note {text} is not an integer")


def load_polyphonic(name: str, data_dir: Path) -> Dataset:
    """Load a music dataset as piano rolls (float32 ``(T, 88)``, column ``n - 21``)."""
    _, flat = read_songs(name, data_dir)
    splits = {split: to_rolls(*flat[split]) for split in SPLITS}
    return Dataset(
        name=name,
        kind="binary",
        splits=splits,
        num_features=NUM_NOTES,
        info={
            "title": MUSIC[name].title,
            "path": str(music_path(name, data_dir)),
            "min_note": MIN_NOTE,
        },
    )


def fetch_polyphonic(
    name: str,
    data_dir: Path,
    mirrors: Sequence[str] | str | None = None,
    *,
    verify: bool = True,
    progress: bool = True,
    timeout: float = 60.0,
) -> Path:
    """Download the canonical pickle of ``name``, validate it and cache it as JSON.

    Nothing is written unless every check passes; the cache file appears atomically.
    """
    spec = MUSIC[name]
    raw = fetch_bytes(spec.source, mirrors, verify=verify, progress=progress, timeout=timeout)
    where = f"the downloaded {spec.source.filename}"
    songs = unpickle_songs(raw, where)
    validate_songs(songs, spec, where)
    path = music_path(name, data_dir)
    write_atomic(path, _gzip_json(songs))
    return path
