"""``lnf datasets``: the listing, and one-line errors for every kind of bad input."""

from __future__ import annotations

import gzip
import os
import pickle
from pathlib import Path

import pytest
from helpers import Evil as _Evil
from helpers import Mirror, closed_port_url, files_under, run_lnf
from helpers import assert_one_line_error as _assert_one_line_error
from helpers import lnf_datasets as _main
from rich.cells import cell_len


def test_lists_every_dataset_with_readme_counts_in_80_columns(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture, data_dir: Path
) -> None:
    # Off a terminal rich draws 80 columns (COLUMNS set for a terminal of that width).
    monkeypatch.setenv("LNF_DATA_DIR", str(data_dir))
    monkeypatch.setenv("COLUMNS", "80")
    code, out, err = run_lnf(monkeypatch, capsys, "datasets")
    assert code == 0, err
    assert max(map(cell_len, out.splitlines())) <= 80, out
    # Counts as the data README measures them (PTB characters: after the paper's 288 filter),
    # sequences on the dataset's line, units (frames, characters, words) on the next.
    lines = out.splitlines()
    for name, kind, sequences, unit, size in [
        ("jsb_chorales", "binary", "229 76 77", "frames", "13,807 4,602 4,725"),
        ("nottingham", "binary", "694 173 170", "frames", "176,561 45,513 44,463"),
        ("muse_data", "binary", "524 135 124", "frames", "245,202 82,755 64,339"),
        ("piano_midi", "binary", "87 12 25", "frames", "75,911 8,540 19,036"),
        ("ptb_char", "categorical", "41,740 3,356 3,735", "characters",
         "4,868,454 385,082 430,371"),
        ("ptb_words", "categorical", "42,068 3,370 3,761", "words", "929,589 73,760 82,430"),
        ("20news", "bow", "10,268 1,000 7,505", "words", "1,030,757 98,124 720,898"),
    ]:
        at = next(i for i, line in enumerate(lines) if line.split()[:1] == [name])
        row, below = lines[at].split(), lines[at + 1].split()
        assert row[1] == "sequences" and " ".join(row[2:5]) == sequences, lines[at]
        assert below[:2] == [kind, unit] and " ".join(below[2:5]) == size, lines[at + 1]
    assert "Traceback" not in err


def test_unknown_fetch_name_is_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture, tmp_path: Path
) -> None:
    code, err = _main(monkeypatch, capsys, "--fetch", "jsb", "--data-dir", str(tmp_path))
    _assert_one_line_error(code, err, "jsb_chorales")
    assert err.startswith("error: unknown dataset 'jsb'"), err
    assert files_under(tmp_path) == []


def test_bad_input_is_one_line_and_leaves_nothing(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture, mirror: Mirror, data_dir: Path, tmp_path: Path
) -> None:
    # missing files, mirrors unreachable
    monkeypatch.setenv("LNF_MIRROR", closed_port_url())
    empty = tmp_path / "empty"
    code, err = _main(monkeypatch, capsys, "--data-dir", str(empty), "--fetch", "piano_midi")
    _assert_one_line_error(code, err, "could not download Piano-midi.de.pickle")
    assert not empty.exists() or files_under(empty) == []

    # checksum mismatch
    monkeypatch.setenv("LNF_MIRROR", mirror.url)
    tampered = bytearray((data_dir / "polyphonic/original/JSB Chorales.pickle").read_bytes())
    tampered[-10] ^= 0xFF
    mirror.serve("JSB Chorales.pickle", bytes(tampered))
    code, err = _main(monkeypatch, capsys, "--data-dir", str(empty), "--fetch", "jsb_chorales")
    _assert_one_line_error(code, err, "checksum mismatch")
    assert not empty.exists() or files_under(empty) == []

    # a pickle that asks for another global
    pwned = tmp_path / "pwned"
    evil = {"train": [_Evil(os.system, f"touch {pwned}")], "valid": [], "test": []}
    mirror.serve("MuseData.pickle", pickle.dumps(evil, protocol=2))
    code, err = _main(monkeypatch, capsys, "--data-dir", str(empty), "--fetch", "muse_data")
    _assert_one_line_error(code, err, "refused to unpickle", "system")
    assert not pwned.exists() and (not empty.exists() or files_under(empty) == [])

    # malformed JSON in the data directory: listed as invalid, then a one-line error
    broken = tmp_path / "broken"
    (broken / "polyphonic").mkdir(parents=True)
    (broken / "polyphonic" / "nottingham.json.gz").write_bytes(gzip.compress(b"{not json"))
    code, err = _main(monkeypatch, capsys, "--data-dir", str(broken))
    _assert_one_line_error(code, err, "nottingham.json.gz", "not valid gzip-compressed JSON")
