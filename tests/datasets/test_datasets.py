"""Loaders against the figures measured in the data README, vocabularies, and batching."""

from __future__ import annotations

import gzip
import json
from collections import Counter
from pathlib import Path

import pytest
import torch

from pyro_lnf.datasets import (
    DATASETS,
    SPLITS,
    Batch,
    Vocab,
    batch_indices,
    collate,
    iterate_batches,
    load_dataset,
    resolve_data_dir,
)
from pyro_lnf.errors import ConfigError, DatasetError

# data README §1 "Measured contents": per split, sequences, time steps, max length, min length,
# min note, max note, empty steps, max notes per step.
MUSIC_TABLE = {
    "jsb_chorales": {
        "train": (229, 13807, 129, 25, 43, 96, 18, 4),
        "valid": (76, 4602, 144, 32, 48, 96, 29, 4),
        "test": (77, 4725, 160, 32, 45, 96, 17, 4),
    },
    "nottingham": {
        "train": (694, 176561, 1788, 40, 31, 93, 487, 9),
        "valid": (173, 45513, 1473, 96, 34, 91, 51, 8),
        "test": (170, 44463, 1793, 63, 36, 89, 19, 9),
    },
    "muse_data": {
        "train": (524, 245202, 3457, 9, 21, 96, 12962, 14),
        "valid": (135, 82755, 3723, 63, 21, 100, 4412, 15),
        "test": (124, 64339, 4273, 45, 21, 105, 5042, 14),
    },
    "piano_midi": {
        "train": (87, 75911, 3857, 111, 21, 108, 4917, 12),
        "valid": (12, 8540, 1637, 209, 24, 104, 251, 11),
        "test": (25, 19036, 2645, 65, 21, 108, 652, 10),
    },
}


@pytest.fixture(scope="module")
def datasets(data_dir: Path) -> dict:
    """Each dataset loaded once for the whole module."""
    cache: dict = {}

    def get(name: str, **options: object):
        key = (name, tuple(sorted(options.items())))
        if key not in cache:
            cache[key] = load_dataset(name, data_dir=data_dir, **options)
        return cache[key]

    return get


@pytest.mark.parametrize("name", list(MUSIC_TABLE))
def test_music_matches_readme_table(name: str, datasets) -> None:
    ds = datasets(name)
    assert ds.kind == "binary" and ds.num_features == 88 and ds.vocab is None
    for split, (n, frames, longest, shortest, lo, hi, empty, poly) in MUSIC_TABLE[name].items():
        rolls = ds.splits[split]
        lengths = ds.lengths(split)
        assert len(rolls) == n and int(lengths.sum()) == frames
        assert int(lengths.max()) == longest and int(lengths.min()) == shortest
        assert all(r.dtype == torch.float32 and r.shape[1] == 88 for r in rolls)
        per_step = torch.cat([r.sum(1) for r in rolls])
        assert int(per_step.sum()) == sum(int(r.count_nonzero()) for r in rolls)  # only 0/1 entries
        keys = torch.stack([r.amax(0) for r in rolls]).amax(0).nonzero().flatten()
        assert int(keys.min()) + 21 == lo and int(keys.max()) + 21 == hi  # column = note - 21
        assert int((per_step == 0).sum()) == empty and int(per_step.max()) == poly


def test_roll_columns_are_notes_minus_21(data_dir: Path, datasets) -> None:
    songs = json.load(gzip.open(data_dir / "polyphonic" / "jsb_chorales.json.gz", "rt"))
    roll = datasets("jsb_chorales").splits["test"][5]
    for t, step in enumerate(songs["test"][5]):
        assert roll[t].nonzero().flatten().tolist() == [n - 21 for n in step]


def _ptb_lines(data_dir: Path, split: str) -> list[str]:
    return (data_dir / "ptb" / f"{split}.txt").read_text().split("\n")[:-1]


def test_ptb_char_counts_follow_the_paper_filter(datasets) -> None:
    ds = datasets("ptb_char")
    assert ds.kind == "categorical" and ds.info["max_length"] == 288
    # valid and test: the effect of the authors' <= 288 filter (reference spec §1.1);
    # train: computed here once and pinned.
    expected = {"train": (41740, 42068, 4868454), "valid": (3356, 3370, 385082), "test": (3735, 3761, 430371)}
    for split, (kept, total, chars) in expected.items():
        assert ds.info["kept"][split] == (kept, total)
        assert len(ds.splits[split]) == kept and int(ds.lengths(split).sum()) == chars
        assert 1 <= int(ds.lengths(split).min()) and int(ds.lengths(split).max()) <= 288
        assert all(x.dtype == torch.int64 and x.dim() == 1 for x in ds.splits[split][:50])


def test_ptb_char_uncapped_keeps_every_line(datasets) -> None:
    ds = datasets("ptb_char", max_length=None)
    # data README: lines 42068/3370/3761 and characters excluding newlines 5059550/396412/446184;
    # strip() removes each line's leading and trailing space.
    for split, lines, chars in (("train", 42068, 5059550), ("valid", 3370, 396412), ("test", 3761, 446184)):
        assert len(ds.splits[split]) == lines
        assert int(ds.lengths(split).sum()) == chars - 2 * lines


def test_ptb_char_vocab(datasets, data_dir: Path) -> None:
    ds = datasets("ptb_char")
    v = ds.vocab
    assert v.itos[:2] == ["<unk>", "<pad>"] and v.unk_index == 0 and v.pad_index == 1
    kept_train = [s.strip() for s in _ptb_lines(data_dir, "train")]
    kept_train = [s for s in kept_train if 1 <= len(s) <= 288]
    counts = Counter("".join(kept_train))
    assert v.itos[2:] == sorted(counts, key=lambda c: (-counts[c], c))  # by frequency, ties sorted
    assert len(v) == ds.num_features == len(counts) + 2 == 51
    assert v.itos[2] == " "
    assert v.encode("a\u00e9b").tolist() == [v.stoi["a"], 0, v.stoi["b"]]  # unseen -> <unk>
    line = _ptb_lines(data_dir, "valid")[0].strip()
    assert v.decode(ds.splits["valid"][0]) == line
    assert torch.equal(v.encode(line), ds.splits["valid"][0])
    assert "<unk>" in v.decode(torch.cat(ds.splits["train"][:200]))  # spelled as five characters


def test_ptb_words_counts_and_vocab(datasets, data_dir: Path) -> None:
    ds = datasets("ptb_words")
    v = ds.vocab
    # data README §2: lines and tokens including one <eos> per line
    for split, lines, tokens in (("train", 42068, 929589), ("valid", 3370, 73760), ("test", 3761, 82430)):
        assert len(ds.splits[split]) == lines and int(ds.lengths(split).sum()) == tokens
        assert all(int(x[-1]) == v.stoi["<eos>"] for x in ds.splits[split])
    assert v.itos[:3] == ["<unk>", "<pad>", "<sos>"] and v.pad_index == 1
    assert len(v) == ds.num_features == 10000 + 2  # 9999 words + <eos>, plus <pad> and <sos>
    assert v.stoi["<eos>"] == ds.info["eos_index"] and v.stoi["<sos>"] == ds.info["sos_index"]
    # PTB is closed-vocabulary: <unk> ids in valid are exactly the literal "<unk>" tokens.
    literal = sum(line.split().count("<unk>") for line in _ptb_lines(data_dir, "valid"))
    assert sum(int((x == 0).sum()) for x in ds.splits["valid"]) == literal
    assert v.decode(ds.splits["valid"][0]) == _ptb_lines(data_dir, "valid")[0].strip() + " <eos>"
    assert v.encode("the zzzunseen").tolist() == [v.stoi["the"], 0]


def test_20news_splits_and_counts(datasets, data_dir: Path) -> None:
    ds = datasets("20news")
    assert ds.kind == "bow" and ds.num_features == len(ds.vocab) == 2000
    sizes = {s: len(ds.splits[s]) for s in SPLITS}
    assert sizes == {"train": 11268 - 1000, "valid": 1000, "test": 7505}  # data README §3
    words = {s: int(ds.lengths(s).sum()) for s in SPLITS}
    assert words["train"] + words["valid"] == 1128881 and words["test"] == 720898
    # The first test document, against its line parsed here.
    line = (data_dir / "bow/20news/test.feat").read_text().split("\n")[0].split()
    expected = torch.zeros(2000)
    for pair in line[1:]:
        idx, count = map(int, pair.split(":"))
        expected[idx - 1] += count  # 1-based indices
    batch = collate(ds.splits["test"], [0], bow_size=2000)
    assert torch.equal(batch.x[0], expected) and batch.mask is None
    assert int(ds.info["labels"]["test"][0]) == int(line[0])


def test_20news_valid_is_seeded_and_disjoint(datasets) -> None:
    a, b, c = datasets("20news"), datasets("20news", seed=1), datasets("20news", valid_from="test")
    again = load_dataset("20news", data_dir=Path(a.info["path"]).parents[1])
    assert again.info["valid_indices"] == a.info["valid_indices"] != b.info["valid_indices"]
    assert all(torch.equal(x, y) for x, y in zip(again.splits["valid"], a.splits["valid"]))
    # valid_from="test" (Xu & Durrett): train and test whole, valid drawn from test.
    assert len(c.splits["train"]) == 11268 and len(c.splits["test"]) == 7505
    assert all(torch.equal(c.splits["valid"][k], c.splits["test"][i]) for k, i in enumerate(c.info["valid_indices"]))


def test_registry_and_errors(tmp_path: Path, data_dir: Path) -> None:
    assert list(DATASETS) == ["jsb_chorales", "nottingham", "muse_data", "piano_midi", "ptb_char", "ptb_words", "20news"]
    with pytest.raises(DatasetError, match="unknown dataset 'jsb'.*jsb_chorales, nottingham"):
        load_dataset("jsb", data_dir=data_dir)
    with pytest.raises(ConfigError, match="unknown option.*max_len.*max_length"):
        load_dataset("ptb_char", data_dir=data_dir, max_len=10)
    with pytest.raises(DatasetError, match="--fetch piano_midi"):
        load_dataset("piano_midi", data_dir=tmp_path)


def test_resolve_data_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("LNF_DATA_DIR", str(tmp_path))
    assert resolve_data_dir("/x/y") == Path("/x/y")
    assert resolve_data_dir(None) == tmp_path
    monkeypatch.delenv("LNF_DATA_DIR")
    assert resolve_data_dir(None) == Path("data")


def _write_music(root: Path, payload: bytes) -> None:
    path = root / "polyphonic" / "jsb_chorales.json.gz"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(payload)


@pytest.mark.parametrize(
    "payload, message",
    [
        (b"plain text, not gzip", "not valid gzip-compressed JSON"),
        (gzip.compress(b'{"train": [[[60'), "not valid gzip-compressed JSON"),
        (gzip.compress(b'[1, 2, 3]'), "does not hold the splits"),
        (gzip.compress(b'{"train": [[[60.5]]], "valid": [], "test": []}'), "note 60.5 is not an integer"),
        (gzip.compress(json.dumps({"train": [[[60]]], "valid": [], "test": []}).encode()), "has 1 songs"),
    ],
    ids=["not-gzip", "truncated-json", "not-a-dict", "float-note", "wrong-sizes"],
)
def test_malformed_music_file(payload: bytes, message: str, tmp_path: Path) -> None:
    _write_music(tmp_path, payload)
    with pytest.raises(DatasetError, match=message) as err:
        load_dataset("jsb_chorales", data_dir=tmp_path)
    assert "jsb_chorales.json.gz" in str(err.value) and "\n" not in str(err.value)


def test_music_note_range_and_structure_checked(data_dir: Path, tmp_path: Path) -> None:
    songs = json.load(gzip.open(data_dir / "polyphonic" / "jsb_chorales.json.gz", "rt"))
    songs["valid"][3][0] = [12, 60]
    _write_music(tmp_path, gzip.compress(json.dumps(songs).encode()))
    with pytest.raises(DatasetError, match="notes 12..96 outside the piano range 21..108"):
        load_dataset("jsb_chorales", data_dir=tmp_path)
    songs["valid"][3][0] = 60  # a step that is not a list of notes
    _write_music(tmp_path, gzip.compress(json.dumps(songs).encode()))
    with pytest.raises(DatasetError, match="not a list of songs"):
        load_dataset("jsb_chorales", data_dir=tmp_path)


# ---------------------------------------------------------------------------------- batching


def _seqs(lengths: list[int], features: int | None = 3) -> list[torch.Tensor]:
    shape = (lambda t: (t, features)) if features else (lambda t: (t,))
    return [torch.full(shape(t), float(i + 1)) if features else torch.full(shape(t), i + 2) for i, t in enumerate(lengths)]


def test_collate_pads_and_masks() -> None:
    rolls = _seqs([2, 5, 3])
    b = collate(rolls, [1, 2, 0])
    assert b.x.shape == (3, 5, 3) and b.lengths.tolist() == [5, 3, 2] and b.indices.tolist() == [1, 2, 0]
    assert torch.equal(b.mask, torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0], [1, 1, 0, 0, 0]], dtype=torch.bool))
    assert float(b.x[~b.mask].abs().sum()) == 0.0  # rolls pad with silence
    for row, i in enumerate(b.indices.tolist()):
        assert torch.equal(b.x[row, : len(rolls[i])], rolls[i])
    ids = _seqs([2, 4], features=None)
    t = collate(ids, [1, 0], pad_value=1)
    assert t.x.dtype == torch.int64 and t.x[1, 2:].tolist() == [1, 1]
    moved = t.to("cpu")
    assert isinstance(moved, Batch) and torch.equal(moved.x, t.x) and len(moved) == 2


def test_eval_batches_sorted_and_complete() -> None:
    lengths = torch.randint(1, 50, (103,)).tolist()
    plan = batch_indices(lengths, 10, shuffle=False)
    flat = torch.cat(plan)
    assert sorted(flat.tolist()) == list(range(103))
    # Ascending across batches, decreasing within each batch, all full but the last.
    assert [len(b) for b in plan] == [10] * 10 + [3]
    for a, b in zip(plan, plan[1:]):
        assert max(lengths[i] for i in a) <= min(lengths[i] for i in b)
    for b in plan:
        ls = [lengths[i] for i in b.tolist()]
        assert ls == sorted(ls, reverse=True)


def test_train_batches_deterministic_and_pooled() -> None:
    lengths = torch.randint(1, 300, (1000,)).tolist()
    a = batch_indices(lengths, 10, shuffle=True, seed=3)
    b = batch_indices(lengths, 10, shuffle=True, seed=3)
    c = batch_indices(lengths, 10, shuffle=True, seed=4)
    assert all(torch.equal(x, y) for x, y in zip(a, b)) and len(a) == len(b)
    assert [x.tolist() for x in a] != [x.tolist() for x in c]
    assert sorted(torch.cat(a).tolist()) == list(range(1000))
    # 1000 = one pool of 100 batches: the batches are the sorted order cut in tens, shuffled.
    by_length = sorted(lengths)
    spans = sorted((min(lengths[i] for i in x), max(lengths[i] for i in x)) for x in a)
    assert spans == [(by_length[k], by_length[k + 9]) for k in range(0, 1000, 10)]
    # a Generator advances: successive epochs differ but replay from the same seed.
    g1, g2 = torch.Generator().manual_seed(0), torch.Generator().manual_seed(0)
    e1 = [batch_indices(lengths, 10, shuffle=True, seed=g1) for _ in range(2)]
    e2 = [batch_indices(lengths, 10, shuffle=True, seed=g2) for _ in range(2)]
    assert [x.tolist() for x in e1[0]] != [x.tolist() for x in e1[1]]
    assert [[x.tolist() for x in e] for e in e1] == [[x.tolist() for x in e] for e in e2]


def test_max_frames_caps_padded_size(datasets) -> None:
    lengths = datasets("muse_data").lengths("test").tolist()
    cap = 4000  # below the longest piece (4273 steps)
    for shuffle in (False, True):
        plan = batch_indices(lengths, 64, shuffle=shuffle, seed=0, max_frames=cap)
        assert sorted(torch.cat(plan).tolist()) == list(range(len(lengths)))
        for b in plan:
            t_max = max(lengths[i] for i in b.tolist())
            assert len(b) * t_max <= cap or len(b) == 1
        alone = [b for b in plan if max(lengths[i] for i in b.tolist()) > cap]
        assert alone and all(len(b) == 1 for b in alone)
    # Uncapped, the padded size would be far above the cap.
    assert max(len(b) * max(lengths[i] for i in b.tolist()) for b in batch_indices(lengths, 64, shuffle=False)) > cap


def test_drop_last() -> None:
    lengths = list(range(1, 24))
    assert [len(b) for b in batch_indices(lengths, 5, shuffle=False, drop_last=True)] == [5, 5, 5, 5]
    assert sum(len(b) for b in batch_indices(lengths, 5, shuffle=True, seed=0, drop_last=True)) == 20
    # A batch kept short by max_frames is not "last and short": 22, 23 cannot pair under 40 frames.
    plan = batch_indices([22, 23], 5, shuffle=False, max_frames=40, drop_last=True)
    assert [b.tolist() for b in plan] == [[0], [1]]


def test_iterate_batches_dataset_padding(datasets) -> None:
    ds = datasets("ptb_char")
    batches = list(ds.batches("valid", 64))
    assert sum(len(b) for b in batches) == len(ds.splits["valid"])
    b = batches[3]
    assert b.x.dtype == torch.int64 and b.mask.dtype == torch.bool and b.lengths.dtype == torch.int64
    assert (b.x[~b.mask] == ds.vocab.pad_index).all() and (b.x[b.mask] != ds.vocab.pad_index).all()
    assert torch.equal(b.mask.sum(1), b.lengths)
    for row, i in enumerate(b.indices.tolist()):
        assert torch.equal(b.x[row, : b.lengths[row]], ds.splits["valid"][i])
    # bags of words: (B, V) counts whose row sums are the document lengths
    news = datasets("20news")
    nb = next(iter(news.batches("train", 50, seed=0)))
    assert nb.x.shape == (50, 2000) and torch.equal(nb.x.sum(1).long(), nb.lengths)
    with pytest.raises(ConfigError, match="max_frames"):
        next(iterate_batches(news.splits["train"], 50, max_frames=10, bow_size=2000))
    with pytest.raises(ConfigError, match="batch_size"):
        batch_indices([1, 2], 0, shuffle=False)


def test_vocab_without_unk_refuses_unknown_tokens() -> None:
    v = Vocab(["a", "b"], unk_index=None, pad_index=None, level="word")
    assert v.encode("b a").tolist() == [1, 0] and v.decode([0, 1]) == "a b"
    with pytest.raises(DatasetError, match="'c' is not in the vocabulary"):
        v.encode(["c"])
