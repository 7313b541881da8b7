"""The four polyphonic music datasets of Boulanger-Lewandowski et al. (ICML 2012) as piano rolls.

Each piece is a sequence of time steps, each step the set of sounding MIDI notes in 21..108
(the 88 piano keys). A piece of ``T`` steps becomes a float32 piano roll ``x`` of shape
``(T, 88)`` with ``x[t, n - 21] = 1`` iff note ``n`` sounds at step ``t``.

On disk a dataset is ``polyphonic/<name>.json.gz``: gzip around compact JSON
``{"train": [...], "valid": [...], "test": [...]}`` whose steps are ascending lists of ints.
Where it is missing, the canonical Python-2 pickle is downloaded, opened with
:class:`RestrictedUnpickler` (plain :mod:`pickle` would run whatever code the file names),
validated and cached as that pickle-free JSON.

Validation, on download and on every load of the JSON (see :func:`validate_songs`):

- shape and bounds first, in O(number of pieces) without touching a time step: the published
  number of pieces per split, every piece 1 .. ``max_length`` steps and each split's total within
  a tenth above the published figure. A pickle can share one piece (or one step) many times over
  by reference; these checks refuse it before a shared structure is unfolded into frames;
- every step a list of at most 88 distinct ascending integer notes in 21..108 (no floats,
  booleans, infinities or huge numbers);
- the content hash (:func:`content_sha256`) equal to the published set's, so a substituted or
  edited file is refused whatever its bytes.

Reference: N. Boulanger-Lewandowski, Y. Bengio, P. Vincent, "Modeling Temporal Dependencies in
High-Dimensional Sequences: Application to Polyphonic Music Generation and Transcription",
ICML 2012. http://www-etud.iro.umontreal.ca/~boulanni/icml2012
"""

from __future__ import annotations

import gzip
import hashlib
import io
import itertools
import json
import pickle
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO
from urllib.parse import quote

import numpy as np
import torch

from pyro_lnf.datasets.base import SPLITS, Dataset
from pyro_lnf.datasets.download import Source, fetch_file, write_atomic
from pyro_lnf.errors import DatasetError

MIN_NOTE = 21
MAX_NOTE = 108
NUM_NOTES = MAX_NOTE - MIN_NOTE + 1  # 88 piano keys

_CANONICAL = "http://www-etud.iro.umontreal.ca/~boulanni/"
_PYRO = "https://raw.githubusercontent.com/pyro-ppl/datasets/master/polyphonic/"

Songs = dict[str, list[list[list[int]]]]


def _slack(n: int) -> int:
    """A bound a tenth above a published figure (the content hash then pins it exactly)."""
    return n + n // 10


@dataclass(frozen=True)
class MusicSpec:
    """A music dataset: its title, where its pickle comes from, and what the published set holds.

    Attributes:
        split_sizes: pieces per split (exact).
        split_frames: time steps per split; a file may have at most a tenth more.
        max_length: the longest piece; a file's pieces may be at most a tenth longer.
        notes: sounding notes over all splits; bounds what unpickling may build.
        sha256: :func:`content_sha256` of the published content.
    """

    name: str
    title: str
    source: Source
    split_sizes: tuple[int, int, int]
    split_frames: tuple[int, int, int]
    max_length: int
    notes: int
    sha256: str


def _spec(
    name: str,
    title: str,
    pickle_name: str,
    sha: str | None,
    max_bytes: int,
    sizes: tuple[int, int, int],
    frames: tuple[int, int, int],
    max_length: int,
    notes: int,
    content: str,
) -> MusicSpec:
    # Pyro's mirror of the same pickles (https) first, the canonical server (http only) second;
    # bytes are accepted only where they match a known checksum, the content is checked always.
    urls = (_PYRO + f"{name}.pickle", _CANONICAL + quote(pickle_name))
    source = Source(pickle_name, urls, sha, max_bytes)
    return MusicSpec(name, title, source, sizes, frames, max_length, notes, content)


# Figures from the data README ("Measured contents"); content hashes computed from the shipped
# JSON files, which for JSB equal the original pickle's content. Only JSB's pickle has a known
# file SHA-256; the download caps of the others are 1.5x their sizes estimated at 22 bytes a
# note from JSB's (2051809 bytes for 90002 notes).
MUSIC: dict[str, MusicSpec] = {
    s.name: s
    for s in (
        _spec(
            "jsb_chorales",
            "JSB Chorales",
            "JSB Chorales.pickle",
            "69dc4c3e52800959ac0ab3b82aa3e5f55285ce64f1705acb3e3a8ef77a5c051c",
            4 << 20,
            (229, 76, 77),
            (13807, 4602, 4725),
            160,
            90002,
            "9aa6a17f3ca848fafefe1229d81d1c511a721bb07752df4678182e25629e2717",
        ),
        _spec(
            "nottingham",
            "Nottingham",
            "Nottingham.pickle",
            None,
            40 << 20,
            (694, 173, 170),
            (176561, 45513, 44463),
            1793,
            1057016,
            "704444fd6370cffcacf3674bc64147a95b0374ca2437b346ae5699b38c519e90",
        ),
        _spec(
            "muse_data",
            "MuseData",
            "MuseData.pickle",
            None,
            48 << 20,
            (524, 135, 124),
            (245202, 82755, 64339),
            4273,
            1356293,
            "3ef667affe40d0b868c15da426da0f00ec22b2670c2aa1e06a848c5806fc1e68",
        ),
        _spec(
            "piano_midi",
            "Piano-midi.de",
            "Piano-midi.de.pickle",
            None,
            12 << 20,
            (87, 12, 25),
            (75911, 8540, 19036),
            3857,
            314779,
            "5ffc2d42c7605703bbc517116fa75399090c26d72b3ff1d8955b247ff1672941",
        ),
    )
}
# The loosest bounds, for pickles read without a dataset in mind.
_ANY_NOTES = max(m.notes for m in MUSIC.values())
_ANY_LENGTH = max(m.max_length for m in MUSIC.values())
_ANY_FRAMES = max(max(m.split_frames) for m in MUSIC.values())
_CONTAINERS = (list, tuple, set, frozenset, dict)


def music_path(name: str, data_dir: Path) -> Path:
    """Where the cached piano rolls of ``name`` live under ``data_dir``."""
    return data_dir / "polyphonic" / f"{name}.json.gz"


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that can build only plain containers, numbers, strings and numpy scalars,
    and only so many of them.

    Unpickling calls whatever global the file names (``os.system`` included), so every global
    is checked against an allow-list: ``set`` and ``frozenset``, ``numpy.core.multiarray.scalar``
    with ``numpy.dtype``, which the original Python-2 pickles use for their int64 notes, and
    ``_codecs.encode``, how Python 3 stores bytes at protocol 2. Anything else raises
    :class:`~pyro_lnf.errors.DatasetError` naming the global, before it is called.

    Each allowed call is charged the size of what it builds against ``budget``: a few bytes of
    pickle can call ``frozenset(L)`` on one shared list ``L`` again and again, each call
    building a copy, so without a budget a tiny file can fill the memory. The original pickles
    spend two units a note (a numpy scalar from 8 bytes; their steps are tuples) and are given
    four; a re-pickled file whose steps are sets built by calls (protocols 0-3) costs about ten
    a note and is refused. What the opcodes build on their own is bounded by the size of the
    file (one reference or object per byte at most), which the download caps.

    Example::

        >>> data = pickle.dumps({"train": [[frozenset([60])]]}, protocol=2)
        >>> RestrictedUnpickler(io.BytesIO(data), source="x.pickle", encoding="latin1").load()
        {'train': [[frozenset({60})]]}
        >>> RestrictedUnpickler(io.BytesIO(pickle.dumps(eval)), source="x").load()
        ... # doctest: +ELLIPSIS
        Traceback (most recent call last):
        pyro_lnf.errors.DatasetError: refused to unpickle x: ... global builtins.eval, ...
    """

    _SETS: dict[str, Callable[..., Any]] = {"set": set, "frozenset": frozenset}
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

    def __init__(
        self, file: BinaryIO, *, source: str, budget: int = 4 * _ANY_NOTES, **kwargs: Any
    ) -> None:
        super().__init__(file, **kwargs)
        self._source = source
        self._budget = budget

    def _latin1(self, text: str, encoding: str) -> bytes:
        # Only the conversion pickle itself emits; no other codec is reachable from a file.
        if encoding not in ("latin1", "latin-1"):
            raise DatasetError(
                f"refused to unpickle {self._source}: it asks for the codec {encoding!r}"
            )
        return text.encode("latin-1")

    def _charged(self, make: Callable[..., Any]) -> Callable[..., Any]:
        def call(*args: Any) -> Any:
            # A unit is about a pointer: one a call, one an element of a list or tuple or 8
            # bytes of a string; a set built from an element costs a hash-table slot and more
            # (about 100 bytes measured), so eight.
            cost = 1 + sum(len(a) for a in args if isinstance(a, (list, tuple)))
            cost += sum(len(a) // 8 for a in args if isinstance(a, (str, bytes)))
            if make in (set, frozenset):
                cost += 7 * sum(len(a) for a in args if isinstance(a, _CONTAINERS))
            self._budget -= cost
            if self._budget < 0:
                raise DatasetError(
                    f"refused to unpickle {self._source}: it builds more objects than the "
                    "published dataset holds (shared references unfolding?); the file is not "
                    "a genuine dataset pickle, delete it"
                )
            return make(*args)

        return call

    def find_class(self, module: str, name: str) -> Any:
        # Python-2 pickles name __builtin__.set; map it the way pickle's fix_imports does.
        if module in ("__builtin__", "builtins") and name in self._SETS:
            return self._charged(self._SETS[name])
        if (module, name) == self._CODECS:
            return self._charged(self._latin1)
        if (module, name) in self._NUMPY:
            return self._charged(np.dtype if name == "dtype" else _numpy_scalar())
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


def _check_shape(obj: Any, spec: MusicSpec | None, source: str) -> None:
    """Splits, piece counts and piece lengths, in O(number of pieces): ``len`` of a list is free
    however many times it is shared, so nothing is unfolded before the bounds hold.

    With ``spec=None`` only the loosest bounds of all four datasets apply.
    """
    if not isinstance(obj, dict) or not set(SPLITS) <= set(obj):
        raise DatasetError(f"{source} does not hold the splits {SPLITS}; it is not a music dataset")
    longest = _ANY_LENGTH if spec is None else spec.max_length
    for k, split in enumerate(SPLITS):
        part = obj[split]
        if not isinstance(part, list):
            raise DatasetError(f"{source}: split {split!r} is a {type(part).__name__}, not a list")
        if spec is not None and len(part) != spec.split_sizes[k]:
            raise DatasetError(
                f"{source}: split {split!r} has {len(part)} songs, {spec.title} has "
                f"{spec.split_sizes[k]}; the file is not the published dataset"
            )
        frames = 0
        for i, song in enumerate(part):
            if not isinstance(song, (list, tuple)):
                raise DatasetError(
                    f"{source}: song {i} of split {split!r} is a {type(song).__name__}, not a "
                    "list of time steps"
                )
            if not 1 <= len(song) <= _slack(longest):
                raise DatasetError(
                    f"{source}: song {i} of split {split!r} has {len(song)} time steps; the "
                    f"published pieces have 1..{longest}"
                )
            frames += len(song)
        published = _ANY_FRAMES if spec is None else spec.split_frames[k]
        if frames > _slack(published):
            title = "the largest set" if spec is None else spec.title
            raise DatasetError(
                f"{source}: split {split!r} has {frames} time steps, {title} has "
                f"{published}; the file is not the published dataset"
            )


def unpickle_songs(
    data: bytes | BinaryIO, source: str, spec: MusicSpec | None = None
) -> Songs:
    """Read a Boulanger-Lewandowski pickle safely into ``{split: [[[note, ...], ...], ...]}``.

    Notes come out as ascending lists of Python ints. Unpickling runs under the budget of
    :class:`RestrictedUnpickler`, and :func:`_check_shape` bounds the pieces before any step is
    converted, so a small file of shared references is refused before it is unfolded; the notes
    are checked here for type and count only (see :func:`validate_songs` for the rest).
    """
    budget = 4 * (_ANY_NOTES if spec is None else spec.notes)
    file = io.BytesIO(data) if isinstance(data, bytes) else data
    try:
        obj = RestrictedUnpickler(file, source=source, budget=budget, encoding="latin1").load()
    except DatasetError:
        raise
    except Exception as err:  # noqa: BLE001 - any failure of a corrupt pickle is a bad file
        reason = " ".join(str(err).split())
        raise DatasetError(
            f"{source} is not a readable pickle ({type(err).__name__}: {reason})"
        ) from None
    _check_shape(obj, spec, source)
    # The steps are bounded now; the notes are counted as they are converted, so steps of 88
    # shared notes each stop at the dataset's note count instead of filling the memory.
    notes_left = _slack(_ANY_NOTES if spec is None else spec.notes)
    songs: Songs = {}
    try:
        for split in SPLITS:
            songs[split] = []
            for song in obj[split]:
                steps = []
                for step in song:
                    if not isinstance(step, (tuple, list, set, frozenset)):
                        raise TypeError(f"a time step is a {type(step).__name__}")
                    notes_left -= len(step)
                    if notes_left < 0 or len(step) > NUM_NOTES:
                        raise ValueError("more notes than the published dataset has")
                    steps.append(sorted({_note(n) for n in step}))
                songs[split].append(steps)
    except (TypeError, ValueError) as err:
        raise DatasetError(
            f"{source} is not a list of songs of note sets per split ({err})"
        ) from None
    return songs


def _note(n: Any) -> int:
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)):
        raise TypeError(f"note {n!r} is not an integer")
    return int(n)


def _flatten(songs: list[list[list[int]]]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Song lengths, notes-per-step and all notes of a split, as flat numpy arrays."""
    song_lengths = np.fromiter((len(s) for s in songs), dtype=np.int64, count=len(songs))
    steps = list(itertools.chain.from_iterable(songs))
    if not all(type(step) is list for step in steps):
        raise TypeError("a time step is not a list of notes")
    per_step = np.fromiter((len(step) for step in steps), dtype=np.int64, count=len(steps))
    if per_step.size and per_step.max() > NUM_NOTES:
        raise ValueError(f"a time step has {per_step.max()} notes, more than {NUM_NOTES} keys")
    # type() is int: no bools, floats or strings that numpy would silently convert.
    for kind in {type(n) for n in itertools.chain.from_iterable(steps)} - {int}:
        raise TypeError(f"a note is a {kind.__name__}, not an integer")
    notes = itertools.chain.from_iterable(steps)
    flat = np.fromiter(notes, dtype=np.int64, count=int(per_step.sum()))
    return song_lengths, per_step, flat


def content_sha256(flat: dict[str, tuple[np.ndarray, ...]]) -> str:
    """The SHA-256 of a music dataset's canonical content.

    The canonical content is, for each split in the order train, valid, test, three arrays:
    the song lengths, the number of notes of every time step, and every note (ascending within
    its step), all concatenated in order; each array is fed to the hash as its length then its
    values, all as little-endian int64. It is the parsed content only, so it is the same for the
    original pickle and the JSON cache, whatever their bytes.
    """
    digest = hashlib.sha256()
    for split in SPLITS:
        for array in flat[split]:
            digest.update(len(array).to_bytes(8, "little"))
            digest.update(np.ascontiguousarray(array, dtype="<i8").tobytes())
    return digest.hexdigest()


def validate_songs(songs: Any, spec: MusicSpec, source: str) -> dict[str, tuple[np.ndarray, ...]]:
    """Check the bounds (shape first), notes and content hash; return the flattened splits.

    Raises:
        DatasetError: naming ``source`` and what is wrong with it.
    """
    _check_shape(songs, spec, source)
    flat = {}
    for split in SPLITS:
        try:
            flat[split] = _flatten(songs[split])
        except (TypeError, ValueError, OverflowError) as err:
            raise DatasetError(
                f"{source}: split {split!r} is not a list of songs of note lists ({err})"
            ) from None
        _, per_step, notes = flat[split]
        if notes.size and (notes.min() < MIN_NOTE or notes.max() > MAX_NOTE):
            raise DatasetError(
                f"{source}: split {split!r} has notes {notes.min()}..{notes.max()} outside "
                f"the piano range {MIN_NOTE}..{MAX_NOTE}"
            )
        # ascending and distinct within each step (the differences inside a step are > 0)
        step_of = np.repeat(np.arange(per_step.size), per_step)
        if ((np.diff(notes) <= 0) & (np.diff(step_of) == 0)).any():
            raise DatasetError(
                f"{source}: split {split!r} has a time step whose notes are not ascending and "
                "distinct"
            )
    digest = content_sha256(flat)
    if digest != spec.sha256:
        raise DatasetError(
            f"{source}: the content differs from the published {spec.title} (content SHA-256 "
            f"{digest[:12]}..., expected {spec.sha256[:12]}...); delete it and run "
            f"`lnf datasets --fetch {spec.name}`"
        )
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
    cap = _json_cap(spec)
    try:
        with gzip.open(path, "rb") as f:
            text = f.read(cap + 1)  # a small gzip can inflate to gigabytes: stop at the cap
        if len(text) > cap:
            raise DatasetError(
                f"{path} inflates to more than {cap} bytes, above any JSON of {spec.title}; "
                f"delete it and run `lnf datasets --fetch {name}`"
            )
        songs = json.loads(text.decode("utf-8"), parse_float=_no_float, parse_constant=_no_float)
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


def _json_cap(spec: MusicSpec) -> int:
    """The most bytes the compact JSON of ``spec`` can take within its bounds: at most 4
    characters a note (``108,``), 3 a step or song (``[],``), and a little for the keys."""
    frames = sum(_slack(f) for f in spec.split_frames)
    return 4 * _slack(spec.notes) + 3 * (frames + sum(spec.split_sizes)) + 64


def _no_float(text: str) -> float:
    # Notes are integers; numpy would silently truncate 60.5 to 60 when flattening, and
    # Infinity, -Infinity and NaN (which json accepts) are no notes at all.
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

    Nothing is written unless every check passes (the content hash included, so a pickle whose
    content differs from the published set is refused whatever ``verify`` says); the cache file
    appears atomically.
    """
    spec = MUSIC[name]
    where = f"the downloaded {spec.source.filename}"
    with fetch_file(spec.source, mirrors, verify=verify, progress=progress, timeout=timeout) as f:
        songs = unpickle_songs(f, where, spec)
    validate_songs(songs, spec, where)
    path = music_path(name, data_dir)
    write_atomic(path, _gzip_json(songs))
    return path
