"""Hostile and damaged data: every bad file is refused with one line, before it costs much.

Nothing is downloaded: pickles are served by the loopback mirror of ``test_download`` or read
from bytes, and the download cap is tested with a fake opener.
"""

from __future__ import annotations

import gzip
import io
import json
import pickle
import shutil
import tracemalloc
import urllib.request
from pathlib import Path

import pytest
from helpers import Mirror, files_under
from helpers import assert_one_line_error as _assert_one_line_error
from helpers import lnf_datasets as _main
from test_download import _tar

from pyro_lnf.datasets import SPLITS, fetch_bytes, fetch_dataset, load_dataset, mirror_urls
from pyro_lnf.datasets.download import Source
from pyro_lnf.datasets.polyphonic import MUSIC, RestrictedUnpickler, content_sha256, read_songs, unpickle_songs
from pyro_lnf.datasets.ptb import _MAX_MEMBERS, extract_ptb
from pyro_lnf.errors import DatasetError, DownloadError

# ------------------------------------------------------------------- pickles that unfold


def _unfolding_pickle(name: str, steps_per_song: int) -> bytes:
    """Every song of every split is one shared song of ``steps_per_song`` references to one
    shared step of all 88 notes: a few KB that unfold into millions of full frames."""
    step = tuple(range(21, 109))
    song = [step] * steps_per_song
    sizes = MUSIC[name].split_sizes
    return pickle.dumps({s: [song] * n for s, n in zip(SPLITS, sizes)}, protocol=2)


@pytest.mark.parametrize(
    "steps, message",
    [(4000, "'train' has 2096000 time steps, MuseData has 245202"), (10**5, "song 0 of split 'train' has 100000 time steps")],
    ids=["many-pieces-of-plausible-length", "one-endless-piece"],
)
def test_unfolding_pickle_refused_before_it_unfolds(steps: int, message: str, mirror: Mirror, tmp_path: Path) -> None:
    payload = _unfolding_pickle("muse_data", steps)
    frames = steps * sum(MUSIC["muse_data"].split_sizes)
    assert frames >= 3_000_000  # unfolded: 88 notes a frame, gigabytes as lists of ints
    assert len(payload) < 2 * steps + 4000  # a 2-byte reference a step, each song shared
    mirror.serve("MuseData.pickle", payload)
    tracemalloc.start()
    try:
        with pytest.raises(DatasetError, match=message) as err:
            fetch_dataset("muse_data", tmp_path, mirrors=[mirror.url], progress=False)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # The file itself is held (in a temporary file, then as shared objects): tens of MB at most.
    assert peak < 64 << 20, f"peak {peak / 2**20:.0f} MiB"
    assert "\n" not in str(err.value) and files_under(tmp_path) == []


def test_shared_list_copied_by_calls_runs_out_of_budget() -> None:
    # frozenset(L) called again and again on one shared list L: each call a fresh copy.
    notes = list(range(5000))
    calls = 100_000
    data = bytearray(b"\x80\x02c__builtin__\nfrozenset\nq\x00]q\x01(")
    for n in notes:
        data += b"M" + n.to_bytes(2, "little")  # BININT2
    data += b"e("  # APPENDS, then the MARK of the list of copies
    data += b"h\x00h\x01\x85R" * calls + b"l."  # BINGET frozenset, BINGET L, TUPLE1, REDUCE; LIST
    assert len(data) < 700_000  # would build 500 million set entries (tens of GB)
    tracemalloc.start()
    try:
        with pytest.raises(DatasetError, match="builds more objects than the published dataset"):
            unpickle_songs(bytes(data), "x", MUSIC["muse_data"])  # the largest budget
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 128 << 20, f"peak {peak / 2**20:.0f} MiB"  # 68 MiB measured
    with pytest.raises(DatasetError, match="builds more objects"):
        RestrictedUnpickler(io.BytesIO(bytes(data)), source="x", budget=200_000).load()


@pytest.mark.parametrize(
    "note, message",
    [
        (-5, "outside the piano range"),
        (10**30, "not a list of songs of note lists"),
        (1e30, "note 1e\\+30 is not an integer"),
        (float("inf"), "note inf is not an integer"),
        (True, "note True is not an integer"),
    ],
    ids=["negative", "huge-int", "1e30", "infinity", "bool"],
)
def test_pickle_with_bad_notes_refused(note: object, message: str, mirror: Mirror, tmp_path: Path) -> None:
    sizes = MUSIC["piano_midi"].split_sizes
    songs = {s: [[(60, note)] for _ in range(n)] for s, n in zip(SPLITS, sizes)}
    mirror.serve("Piano-midi.de.pickle", pickle.dumps(songs, protocol=2))
    with pytest.raises(DatasetError, match=message) as err:
        fetch_dataset("piano_midi", tmp_path, mirrors=[mirror.url], progress=False)
    assert "\n" not in str(err.value) and files_under(tmp_path) == []


def test_plausible_pickle_with_other_content_refused(mirror: Mirror, data_dir: Path, tmp_path: Path) -> None:
    # Right split sizes, lengths and notes (the published songs, one note moved): only the
    # content hash can tell, and it does.
    songs = json.load(gzip.open(data_dir / "polyphonic/nottingham.json.gz", "rt"))
    songs["test"][0][0] = sorted(set(songs["test"][0][0]) ^ {107})
    mirror.serve("Nottingham.pickle", pickle.dumps(songs, protocol=2))
    with pytest.raises(DatasetError, match="content differs from the published Nottingham"):
        fetch_dataset("nottingham", tmp_path, mirrors=[mirror.url], progress=False)
    assert files_under(tmp_path) == []


# --------------------------------------------------------------------------- downloads


class _Endless:
    """A response that streams zeros forever and may not say how long it is."""

    def __init__(self, length: str | None) -> None:
        self.headers = {} if length is None else {"Content-Length": length}
        self.sent = 0

    def read(self, n: int) -> bytes:
        self.sent += n
        return bytes(n)

    def __enter__(self) -> _Endless:
        return self

    def __exit__(self, *exc: object) -> None:
        pass


@pytest.mark.parametrize("length", [None, "100", str(10**12)], ids=["no-length", "lying-length", "huge-length"])
def test_download_cap(length: str | None, monkeypatch: pytest.MonkeyPatch) -> None:
    responses: list[_Endless] = []

    def opener(url: str, timeout: float) -> _Endless:
        responses.append(_Endless(length))
        return responses[-1]

    monkeypatch.setattr(urllib.request, "urlopen", opener)
    source = Source("big.bin", (), None, max_bytes=1 << 20)
    with pytest.raises(DownloadError, match="cap of 1048576") as err:
        fetch_bytes(source, ["http://a/", "https://b/"], progress=False)
    assert "\n" not in str(err.value)
    assert len(responses) == 2  # both mirrors tried, each abandoned at the cap
    assert all(r.sent <= (1 << 20) + (1 << 16) for r in responses)


def test_https_tried_first() -> None:
    source = Source("f", ("http://a/f", "https://b/f", "http://c/f", "HTTPS://d/f"))
    assert mirror_urls(source) == ["https://b/f", "HTTPS://d/f", "http://a/f", "http://c/f"]
    assert mirror_urls(source, "http://m https://n") == ["https://n/f", "http://m/f"]
    for spec in MUSIC.values():
        assert spec.source.urls[0].startswith("https://")


# ------------------------------------------------------------------ the JSON music cache


def _jsb(data_dir: Path) -> dict:
    return json.load(gzip.open(data_dir / "polyphonic/jsb_chorales.json.gz", "rt"))


def _write(root: Path, text: str | bytes, name: str = "jsb_chorales") -> None:
    path = root / "polyphonic" / f"{name}.json.gz"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(text.encode() if isinstance(text, str) else text))


def test_content_hash_matches_every_shipped_set(data_dir: Path) -> None:
    for name, spec in MUSIC.items():
        _, flat = read_songs(name, data_dir)
        assert content_sha256(flat) == spec.sha256


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda s: s["valid"][3].__setitem__(0, [60, 64]), "content differs from the published JSB Chorales"),
        (lambda s: s["valid"][3].__setitem__(0, [64, 60]), "not ascending and distinct"),
        (lambda s: s["valid"][3].__setitem__(0, [60, 60]), "not ascending and distinct"),
        (lambda s: s["valid"][3].__setitem__(0, ["60"]), "a note is a str"),
        (lambda s: s["valid"][3].__setitem__(0, [True]), "a note is a bool"),
        (lambda s: s["valid"][3].__setitem__(0, [10**30]), "not a list of songs of note lists"),
        (lambda s: s["valid"][3].__setitem__(0, list(range(21, 110))), "89 notes"),
        (lambda s: s["valid"][3].__setitem__(0, {"60": 1}), "not a list of notes"),
        (lambda s: s["valid"].__setitem__(3, [[60]] * 5000), "song 3 of split 'valid' has 5000 time steps"),
        (lambda s: s["valid"].__setitem__(3, []), "has 0 time steps"),
        (lambda s: s.pop("test"), "does not hold the splits"),
        (lambda s: s.__setitem__("test", {}), "split 'test' is a dict"),
    ],
    ids=["edited-note", "unsorted", "duplicate", "string", "bool", "huge", "89-notes", "dict-step", "long-piece", "empty-piece", "split-missing", "split-dict"],
)
def test_json_cache_edited_by_hand(edit, message: str, data_dir: Path, tmp_path: Path) -> None:
    songs = _jsb(data_dir)
    edit(songs)
    _write(tmp_path, json.dumps(songs))
    with pytest.raises(DatasetError, match=message) as err:
        load_dataset("jsb_chorales", data_dir=tmp_path)
    assert "jsb_chorales.json.gz" in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize("constant", ["Infinity", "-Infinity", "NaN", "1e30", "60.0"])
def test_json_non_integer_numbers(constant: str, data_dir: Path, tmp_path: Path) -> None:
    text = json.dumps(_jsb(data_dir)).replace("[60", f"[{constant}", 1)
    _write(tmp_path, text)
    with pytest.raises(DatasetError, match=f"note {constant} is not an integer"):
        load_dataset("jsb_chorales", data_dir=tmp_path)


def test_json_gzip_bomb_stops_at_the_cap(tmp_path: Path) -> None:
    # 200 MB of whitespace (valid JSON padding) in a 200 KB file: refused after the cap.
    path = tmp_path / "polyphonic" / "jsb_chorales.json.gz"
    path.parent.mkdir(parents=True)
    with gzip.open(path, "wb") as f:
        for _ in range(200):
            f.write(b" " * (1 << 20))
    assert path.stat().st_size < 1 << 20
    tracemalloc.start()
    try:
        with pytest.raises(DatasetError, match="inflates to more than"):
            load_dataset("jsb_chorales", data_dir=tmp_path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 16 << 20


def test_json_truncated(data_dir: Path, tmp_path: Path) -> None:
    whole = (data_dir / "polyphonic/jsb_chorales.json.gz").read_bytes()
    path = tmp_path / "polyphonic/jsb_chorales.json.gz"
    path.parent.mkdir(parents=True)
    path.write_bytes(whole[: len(whole) // 2])
    with pytest.raises(DatasetError, match="not valid gzip-compressed JSON"):
        load_dataset("jsb_chorales", data_dir=tmp_path)


def test_json_of_another_dataset_refused(data_dir: Path, tmp_path: Path) -> None:
    _write(tmp_path, gzip.decompress((data_dir / "polyphonic/jsb_chorales.json.gz").read_bytes()), "piano_midi")
    with pytest.raises(DatasetError, match="has 229 songs, Piano-midi.de has 87"):
        load_dataset("piano_midi", data_dir=tmp_path)


# ----------------------------------------------------------------------- text datasets


def _copy(src: Path, dst: Path, names: list[str]) -> None:
    dst.mkdir(parents=True, exist_ok=True)
    for name in names:
        shutil.copyfile(src / name, dst / name)


PTB = ["train.txt", "valid.txt", "test.txt"]
NEWS = ["train.feat", "test.feat", "vocab.new"]


@pytest.mark.parametrize(
    "body, message",
    [
        (b"", "is empty"),
        (b"\n\n   \n\n", "holds only blank lines"),
        (b" a \xff\xfe sentence \n", "differs from the published file"),
        (None, "differs from the published file"),  # one character changed
    ],
    ids=["empty", "blank-lines", "not-utf8", "edited"],
)
@pytest.mark.parametrize("name", ["ptb_char", "ptb_words"])
def test_ptb_damaged(name: str, body: bytes | None, message: str, data_dir: Path, tmp_path: Path) -> None:
    _copy(data_dir / "ptb", tmp_path / "ptb", PTB)
    valid = tmp_path / "ptb/valid.txt"
    if body is None:
        body = valid.read_bytes().replace(b"consumers", b"consumerz", 1)
    valid.write_bytes(body)
    with pytest.raises(DatasetError, match=message) as err:
        load_dataset(name, data_dir=tmp_path)
    assert "valid.txt" in str(err.value) and "\n" not in str(err.value)


def test_ptb_oversized_file_not_read_whole(data_dir: Path, tmp_path: Path) -> None:
    _copy(data_dir / "ptb", tmp_path / "ptb", PTB)
    with open(tmp_path / "ptb/train.txt", "r+b") as f:
        f.truncate(1 << 30)  # sparse: 1 GiB of zeros
    with pytest.raises(DatasetError, match="larger than 8388608 bytes"):
        load_dataset("ptb_char", data_dir=tmp_path)


@pytest.mark.parametrize(
    "old, new",
    [(b":1 ", b":0 "), (b":1 ", b":-3 "), (b":1 ", b":99999999999999999999 "), (b":1 ", b":1e3 ")],
    ids=["zero", "negative", "huge", "float"],
)
def test_20news_bad_counts(old: bytes, new: bytes, data_dir: Path, tmp_path: Path) -> None:
    _copy(data_dir / "bow/20news", tmp_path / "bow/20news", NEWS)
    path = tmp_path / "bow/20news/train.feat"
    path.write_bytes(path.read_bytes().replace(old, new, 1))
    with pytest.raises(DatasetError, match="train.feat differs from the published file") as err:
        load_dataset("20news", data_dir=tmp_path)
    assert "\n" not in str(err.value)


# ------------------------------------------------------------------------ through the CLI


def test_cli_one_line_for_damaged_data(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture, mirror: Mirror, data_dir: Path, tmp_path: Path
) -> None:
    # PTB of blank lines (a traceback before)
    root = tmp_path / "blank"
    (root / "ptb").mkdir(parents=True)
    for name in PTB:
        (root / "ptb" / name).write_text("\n" * 100)
    code, err = _main(monkeypatch, capsys, "--data-dir", str(root))
    _assert_one_line_error(code, err, "2 dataset(s) present but invalid", "holds only blank lines")

    # a JSON cache with an Infinity note (a traceback before)
    root = tmp_path / "inf"
    _write(root, json.dumps(_jsb(data_dir)).replace("[60", "[Infinity", 1))
    code, err = _main(monkeypatch, capsys, "--data-dir", str(root))
    _assert_one_line_error(code, err, "note Infinity is not an integer")

    # a JSON cache holding another dataset's (valid-looking) content
    root = tmp_path / "swapped"
    songs = _jsb(data_dir)
    songs["train"][0][0] = [21]
    _write(root, json.dumps(songs))
    code, err = _main(monkeypatch, capsys, "--data-dir", str(root))
    _assert_one_line_error(code, err, "content differs from the published JSB Chorales")

    # a 20News file with a bad count
    root = tmp_path / "news"
    _copy(data_dir / "bow/20news", root / "bow/20news", NEWS)
    feat = root / "bow/20news/test.feat"
    feat.write_bytes(feat.read_bytes().replace(b":1 ", b":-1 ", 1))
    code, err = _main(monkeypatch, capsys, "--data-dir", str(root))
    _assert_one_line_error(code, err, "test.feat differs from the published file")

    # the unfolding pickle, fetched
    monkeypatch.setenv("LNF_MIRROR", mirror.url)
    mirror.serve("MuseData.pickle", _unfolding_pickle("muse_data", 4000))
    empty = tmp_path / "empty"
    code, err = _main(monkeypatch, capsys, "--data-dir", str(empty), "--fetch", "muse_data")
    _assert_one_line_error(code, err, "2096000 time steps")
    assert not empty.exists() or files_under(empty) == []


def test_ptb_archive_of_endless_members_refused() -> None:
    archive = _tar({f"junk/{i}": b"" for i in range(_MAX_MEMBERS + 1)})
    with pytest.raises(DatasetError, match=f"more than {_MAX_MEMBERS} members"):
        extract_ptb(archive)


def test_plausible_shape_of_full_chords_stops_at_the_note_count() -> None:
    # MuseData's piece counts and lengths, every step all 88 keys: 23 million notes once
    # unfolded, 17 times the published set; conversion stops at its note count.
    spec = MUSIC["muse_data"]
    step = tuple(range(21, 109))
    songs = {s: [[step] * (f // n) for _ in range(n)] for s, n, f in zip(SPLITS, spec.split_sizes, spec.split_frames)}
    tracemalloc.start()
    try:
        with pytest.raises(DatasetError, match="more notes than the published dataset"):
            unpickle_songs(pickle.dumps(songs, protocol=2), "x", spec)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 128 << 20, f"peak {peak / 2**20:.0f} MiB"
