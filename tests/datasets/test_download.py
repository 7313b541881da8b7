"""Downloads through a loopback HTTP server: checksums, mirrors, and the restricted unpickler."""

from __future__ import annotations

import codecs
import hashlib
import io
import os
import pickle
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import Evil as _Evil
from helpers import Mirror, closed_port_url, files_under

from pyro_lnf.datasets import SPLITS, fetch_bytes, fetch_dataset, load_dataset, mirror_urls
from pyro_lnf.datasets.download import Source
from pyro_lnf.datasets.polyphonic import unpickle_songs
from pyro_lnf.errors import ChecksumError, DatasetError, DownloadError

JSB_PICKLE = Path("polyphonic", "original", "JSB Chorales.pickle")
# SHA-256 of the shipped polyphonic/jsb_chorales.json.gz (data README)
JSB_JSON_SHA = "13bc4b1b7ecd5686838d7e6775658abe0a9262d7878d66692f0b9dc7597e0079"


@pytest.fixture(scope="module")
def jsb_pickle(data_dir: Path) -> bytes:
    return (data_dir / JSB_PICKLE).read_bytes()


def test_download_jsb_equals_shipped_rolls(mirror: Mirror, jsb_pickle: bytes, data_dir: Path, tmp_path: Path) -> None:
    mirror.serve("JSB Chorales.pickle", jsb_pickle)
    fetched = load_dataset("jsb_chorales", data_dir=tmp_path, download=True, mirrors=[mirror.url], progress=False)
    shipped = load_dataset("jsb_chorales", data_dir=data_dir)
    for split in SPLITS:
        assert len(fetched.splits[split]) == len(shipped.splits[split])
        for a, b in zip(fetched.splits[split], shipped.splits[split]):
            assert a.dtype == torch.float32 and torch.equal(a, b)
    # The cache is the pickle-free JSON, byte for byte the shipped file, and nothing else.
    assert files_under(tmp_path) == [tmp_path / "polyphonic" / "jsb_chorales.json.gz"]
    cache = tmp_path / "polyphonic" / "jsb_chorales.json.gz"
    assert hashlib.sha256(cache.read_bytes()).hexdigest() == JSB_JSON_SHA
    assert cache.stat().st_mode & 0o777 == 0o644


def test_tampered_pickle_refused_by_checksum(mirror: Mirror, jsb_pickle: bytes, tmp_path: Path) -> None:
    tampered = bytearray(jsb_pickle)
    tampered[len(tampered) // 2] ^= 0x01
    mirror.serve("JSB Chorales.pickle", bytes(tampered))
    with pytest.raises(ChecksumError, match="checksum") as err:
        fetch_dataset("jsb_chorales", tmp_path, mirrors=[mirror.url], progress=False)
    assert "\n" not in str(err.value)
    assert files_under(tmp_path) == []


@pytest.mark.parametrize("func", [os.system, eval], ids=["os.system", "builtins.eval"])
def test_malicious_pickle_never_runs(func: object, mirror: Mirror, tmp_path: Path) -> None:
    pwned = tmp_path / "pwned"
    command = f"touch {pwned}" if func is os.system else f"open({str(pwned)!r}, 'w').close()"
    payload = {"train": [_Evil(func, command)], "valid": [], "test": []}
    # Nottingham has no known checksum, so only the unpickler stands between the file and us.
    mirror.serve("Nottingham.pickle", pickle.dumps(payload, protocol=2))
    data_dir = tmp_path / "data"
    with pytest.raises(DatasetError, match="refused to unpickle") as err:
        fetch_dataset("nottingham", data_dir, mirrors=[mirror.url], progress=False)
    assert func.__name__ in str(err.value)  # the message names the global
    assert not isinstance(err.value, DownloadError)
    assert not pwned.exists()
    assert not data_dir.exists() or files_under(data_dir) == []


def test_restricted_unpickler_reads_python2_numpy_notes(jsb_pickle: bytes) -> None:
    songs = unpickle_songs(jsb_pickle, "JSB")
    assert [len(songs[s]) for s in SPLITS] == [229, 76, 77]
    first = songs["train"][0][0]
    assert first == sorted(first) and all(type(n) is int for n in first)


@pytest.mark.parametrize("protocol", range(pickle.HIGHEST_PROTOCOL + 1))
def test_restricted_unpickler_reads_python3_pickles(protocol: int) -> None:
    songs = {"train": [[{np.int64(64), np.int64(60)}, set()]], "valid": [[frozenset([np.int32(21)])]], "test": []}
    assert unpickle_songs(pickle.dumps(songs, protocol=protocol), "x") == {
        "train": [[[60, 64], []]],
        "valid": [[[21]]],
        "test": [],
    }


def test_restricted_unpickler_allows_only_the_latin1_codec() -> None:
    payload = pickle.dumps({"train": [_Evil(codecs.encode, "text", "rot13")], "valid": [], "test": []}, protocol=2)
    with pytest.raises(DatasetError, match="codec 'rot13'"):
        unpickle_songs(payload, "x")


def test_unreachable_mirrors_give_one_line_download_error(tmp_path: Path) -> None:
    urls = [closed_port_url(), closed_port_url()]
    with pytest.raises(DownloadError) as err:
        fetch_dataset("jsb_chorales", tmp_path, mirrors=urls, progress=False, timeout=5)
    message = str(err.value)
    assert "\n" not in message and "JSB Chorales.pickle" in message
    assert all(u in message for u in urls)
    assert not isinstance(err.value, ChecksumError)
    assert files_under(tmp_path) == []


def test_second_mirror_used_when_first_fails(mirror: Mirror, jsb_pickle: bytes, tmp_path: Path) -> None:
    mirror.serve("JSB Chorales.pickle", jsb_pickle)
    fetch_dataset("jsb_chorales", tmp_path, mirrors=[closed_port_url(), mirror.url], progress=False, timeout=5)
    ds = load_dataset("jsb_chorales", data_dir=tmp_path)
    assert [len(ds.splits[s]) for s in SPLITS] == [229, 76, 77]


def test_404_then_truncated_then_good(mirror: Mirror, tmp_path: Path) -> None:
    body = b"payload bytes"
    source = Source("f.bin", (), hashlib.sha256(body).hexdigest())
    mirror.serve("a/f.bin", body, truncate=True)
    mirror.serve("b/f.bin", body)
    urls = [mirror.url + "missing", mirror.url + "a", mirror.url + "b"]
    assert fetch_bytes(source, urls, progress=False) == body
    with pytest.raises(DownloadError, match="404") as err:
        fetch_bytes(source, urls[:2], progress=False)
    assert urls[1] in str(err.value)


def test_mirror_env_overrides_canonical_urls(monkeypatch: pytest.MonkeyPatch) -> None:
    source = Source("JSB Chorales.pickle", ("http://canonical/JSB%20Chorales.pickle",))
    monkeypatch.delenv("LNF_MIRROR", raising=False)
    assert mirror_urls(source) == ["http://canonical/JSB%20Chorales.pickle"]
    monkeypatch.setenv("LNF_MIRROR", "http://a/x http://b/")
    assert mirror_urls(source) == ["http://a/x/JSB%20Chorales.pickle", "http://b/JSB%20Chorales.pickle"]
    assert mirror_urls(source, ["http://c"]) == ["http://c/JSB%20Chorales.pickle"]


def test_mirror_env_used_by_fetch(monkeypatch: pytest.MonkeyPatch, mirror: Mirror, jsb_pickle: bytes, tmp_path: Path) -> None:
    mirror.serve("JSB Chorales.pickle", jsb_pickle)
    monkeypatch.setenv("LNF_MIRROR", mirror.url)
    fetch_dataset("jsb_chorales", tmp_path, progress=False)
    assert (tmp_path / "polyphonic" / "jsb_chorales.json.gz").is_file()


def test_wrong_split_sizes_refused(mirror: Mirror, tmp_path: Path) -> None:
    songs = {"train": [[[60, 64]]], "valid": [[[60]]], "test": [[[62]]]}
    mirror.serve("MuseData.pickle", pickle.dumps(songs, protocol=2))
    with pytest.raises(DatasetError, match="has 1 songs, MuseData has 524"):
        fetch_dataset("muse_data", tmp_path, mirrors=[mirror.url], progress=False)
    assert files_under(tmp_path) == []


def _tar(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz", compresslevel=1) as tar:
        for name, body in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(body)
            tar.addfile(info, io.BytesIO(body))
    return buf.getvalue()


@pytest.fixture(scope="module")
def ptb_files(data_dir: Path) -> dict[str, bytes]:
    return {s: (data_dir / "ptb" / f"{s}.txt").read_bytes() for s in SPLITS}


def test_ptb_extracted_from_archive(mirror: Mirror, ptb_files: dict[str, bytes], tmp_path: Path) -> None:
    members = {f"./simple-examples/data/ptb.{s}.txt": body for s, body in ptb_files.items()}
    members["./simple-examples/data/ptb.char.train.txt"] = b"not needed"
    mirror.serve("simple-examples.tgz", _tar(members))
    fetch_dataset("ptb_char", tmp_path, mirrors=[mirror.url], progress=False)
    for split in SPLITS:
        assert (tmp_path / "ptb" / f"{split}.txt").read_bytes() == ptb_files[split]
    assert len(files_under(tmp_path)) == 3


def test_ptb_archive_with_altered_file_refused(mirror: Mirror, ptb_files: dict[str, bytes], tmp_path: Path) -> None:
    members = {f"simple-examples/data/ptb.{s}.txt": body for s, body in ptb_files.items()}
    members["simple-examples/data/ptb.test.txt"] += b" extra line \n"
    mirror.serve("simple-examples.tgz", _tar(members))
    with pytest.raises(ChecksumError, match="ptb.test.txt"):
        fetch_dataset("ptb_words", tmp_path, mirrors=[mirror.url], progress=False)
    assert files_under(tmp_path) == []


def test_20news_fetched_and_verified(mirror: Mirror, data_dir: Path, tmp_path: Path) -> None:
    names = ("train.feat", "test.feat", "vocab.new")
    for name in names:
        mirror.serve(name, (data_dir / "bow" / "20news" / name).read_bytes())
    fetch_dataset("20news", tmp_path, mirrors=[mirror.url], progress=False)
    for name in names:
        assert (tmp_path / "bow/20news" / name).read_bytes() == (data_dir / "bow/20news" / name).read_bytes()
    # A different vocab.new is refused and not written.
    (tmp_path / "bow/20news/vocab.new").unlink()
    mirror.serve("vocab.new", b"word 1\n")
    with pytest.raises(ChecksumError, match="vocab.new"):
        fetch_dataset("20news", tmp_path, mirrors=[mirror.url], progress=False)
    assert not (tmp_path / "bow/20news/vocab.new").exists()
    assert len(files_under(tmp_path)) == 2

