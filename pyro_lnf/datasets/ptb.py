"""Penn Treebank (Mikolov's preprocessing), one sentence per sequence, as characters or words.

``ptb_char`` follows Ziegler & Rush (2019) exactly: every line of ``ptb/{split}.txt`` is
``strip()``-ped and split into characters (spaces included, ``<unk>`` spelled as five
characters, no end-of-sentence token: the length is modelled by p(T)); lines with
``1 <= len <= max_length`` are kept in *every* split (default 288, the authors' filter, which
drops 14 valid and 26 test sentences). The vocabulary is built from train only: ``<unk>`` = 0,
``<pad>`` = 1, then characters by decreasing frequency, ties in code-point order.

``ptb_words``: the same lines as whitespace-separated words with ``<eos>`` appended (no length
filter by default). Vocabulary: ``<unk>`` = 0 (PTB's own unknown-word token), ``<pad>`` = 1,
``<sos>`` = 2 (a start symbol for autoregressive decoders), then the other 9999 training words,
``<eos>`` included, by decreasing frequency: 10002 tokens.

Missing files are extracted from Mikolov's ``simple-examples.tgz`` and each is checked against
its known SHA-256. The loaders parse the text verbatim, so the canonical content of a split *is*
its file: every load checks the file's SHA-256 (about 10 ms for the three) before parsing, and a
substituted, edited, empty or re-encoded file is refused.

References: T. Mikolov, "Statistical Language Models Based on Neural Networks", 2012
(http://www.fit.vutbr.cz/~imikolov/rnnlm/); Z. M. Ziegler, A. M. Rush, "Latent Normalizing Flows
for Discrete Sequences", ICML 2019, §5.1.
"""

from __future__ import annotations

import hashlib
import io
import tarfile
from collections import Counter
from collections.abc import Sequence
from itertools import repeat
from pathlib import Path
from typing import BinaryIO

import numpy as np
import torch

from pyro_lnf.datasets.base import SPLITS, Dataset, Vocab
from pyro_lnf.datasets.download import Source, fetch_file, read_known, write_atomic
from pyro_lnf.errors import ChecksumError, ConfigError, DatasetError

UNK, PAD, SOS, EOS = "<unk>", "<pad>", "<sos>", "<eos>"
DEFAULT_CHAR_MAX_LENGTH = 288

PTB_SHA256 = {
    "train": "fcea919f6cf83f35d4d00c6cbf08040d13d4155226340912e2fef9c9c4102cbf",
    "valid": "c9fe6985fe0d4ccb578183407d7668fc6066c20700cb4cf87d8ff1cc34df1bf2",
    "test": "dd65dff31e70846b2a6030a87482edcd5d199130cdcfa1f3dccbb033728deee0",
}
ARCHIVE = Source(
    "simple-examples.tgz",
    tuple(
        f"{scheme}://www.fit.vutbr.cz/~imikolov/rnnlm/simple-examples.tgz"
        for scheme in ("https", "http")
    ),
    max_bytes=48 << 20,  # the archive is about 34 MB
)
_MAX_FILE_BYTES = 8 << 20  # the three text files are 0.4-5.1 MB; refuse absurd ones
_MAX_MEMBERS = 1000  # the archive has a few dozen


def ptb_path(split: str, data_dir: Path) -> Path:
    """Where ``split`` of PTB lives under ``data_dir``."""
    return data_dir / "ptb" / f"{split}.txt"


def _read_lines(split: str, data_dir: Path, name: str) -> list[str]:
    hint = f"run `lnf datasets --fetch {name}` or pass download=True"
    data = read_known(ptb_path(split, data_dir), PTB_SHA256[split], _MAX_FILE_BYTES, hint)
    lines = data.decode("utf-8").split("\n")  # ASCII: the checksum guarantees it decodes
    if lines[-1] == "":  # the newline that ends the last line
        lines.pop()
    return lines


def frequency_order(counts: Counter[str]) -> list[str]:
    """Tokens by decreasing count, ties in sorted order (torchtext 0.2.3's ``build_vocab``)."""
    return sorted(counts, key=lambda tok: (-counts[tok], tok))


def _filter(lines: list[str], max_length: int | None) -> list[str]:
    return [s for s in lines if 1 <= len(s) and (max_length is None or len(s) <= max_length)]


def _check_max_length(max_length: int | None) -> None:
    if max_length is None:
        return
    if isinstance(max_length, bool) or not isinstance(max_length, int) or max_length < 1:
        raise ConfigError(f"max_length must be a positive integer or None, got {max_length!r}")


def load_ptb_char(data_dir: Path, max_length: int | None = DEFAULT_CHAR_MAX_LENGTH) -> Dataset:
    """Character-level PTB sentences exactly as Ziegler & Rush (2019) preprocess them.

    Example::

        >>> ds = load_ptb_char(Path("data"))  # doctest: +SKIP
        >>> ds.vocab.decode(ds.splits["valid"][0])[:24]  # doctest: +SKIP
        'consumers may want to mo'
    """
    _check_max_length(max_length)
    raw = {s: [line.strip() for line in _read_lines(s, data_dir, "ptb_char")] for s in SPLITS}
    kept = {split: _filter(raw[split], max_length) for split in SPLITS}
    # Code points of each split's text, to map characters to ids without a Python loop.
    code = {
        split: np.frombuffer("".join(kept[split]).encode("utf-32-le"), dtype=np.uint32)
        for split in SPLITS
    }

    freq = np.bincount(code["train"])
    counts = Counter({chr(c): int(freq[c]) for c in np.flatnonzero(freq)})
    itos = [UNK, PAD, *frequency_order(counts)]
    vocab = Vocab(itos, unk_index=0, pad_index=1, level="char")

    # Vectorised lookup from code point to id; characters never seen in train map to <unk>.
    size = max(int(c.max()) if c.size else 0 for c in code.values()) + 1
    table = np.zeros(max(size, len(freq)), dtype=np.int64)
    for i, ch in enumerate(itos[2:], start=2):
        table[ord(ch)] = i
    splits = {}
    for split in SPLITS:
        ids = torch.from_numpy(table[code[split]])
        splits[split] = list(ids.split([len(s) for s in kept[split]]))
    return Dataset(
        name="ptb_char",
        kind="categorical",
        splits=splits,
        num_features=len(vocab),
        vocab=vocab,
        info={
            "max_length": max_length,
            "kept": {split: (len(kept[split]), len(raw[split])) for split in SPLITS},
            "path": str(data_dir / "ptb"),
        },
    )


def load_ptb_words(data_dir: Path, max_length: int | None = None) -> Dataset:
    """Word-level PTB sentences, each followed by ``<eos>``; ``max_length`` counts ``<eos>``.

    Example::

        >>> ds = load_ptb_words(Path("data"))  # doctest: +SKIP
        >>> len(ds.vocab), ds.vocab.decode(ds.splits["valid"][0])[:21]  # doctest: +SKIP
        (10002, 'consumers may want to')
    """
    _check_max_length(max_length)
    raw = {split: _read_lines(split, data_dir, "ptb_words") for split in SPLITS}
    kept: dict[str, list[str]] = {}
    sizes: dict[str, list[int]] = {}
    words: dict[str, list[str]] = {}
    for split in SPLITS:
        # Every line gets <eos>; a line of whitespace alone is no sentence.
        n = [len(line.split()) + 1 for line in raw[split]]
        keep = [i for i, k in enumerate(n) if k > 1 and (max_length is None or k <= max_length)]
        kept[split] = [raw[split][i] for i in keep]
        sizes[split] = [n[i] for i in keep]
        # One split() over the whole text is far faster than one per line.
        words[split] = "".join(f"{line} {EOS}\n" for line in kept[split]).split()
    counts = Counter(words["train"])
    for special in (UNK, PAD, SOS):
        counts.pop(special, None)
    itos = [UNK, PAD, SOS, *frequency_order(counts)]
    vocab = Vocab(itos, unk_index=0, pad_index=1, level="word")
    splits = {}
    for split in SPLITS:
        ids = np.fromiter(
            map(vocab.stoi.get, words[split], repeat(0)), dtype=np.int64, count=len(words[split])
        )
        splits[split] = list(torch.from_numpy(ids).split(sizes[split]))
    return Dataset(
        name="ptb_words",
        kind="categorical",
        splits=splits,
        num_features=len(vocab),
        vocab=vocab,
        info={
            "max_length": max_length,
            "kept": {split: (len(kept[split]), len(raw[split])) for split in SPLITS},
            "sos_index": vocab.stoi[SOS],
            "eos_index": vocab.stoi[EOS],
            "path": str(data_dir / "ptb"),
        },
    )


def extract_ptb(
    archive: bytes | BinaryIO, source: str = ARCHIVE.filename, *, verify: bool = True
) -> dict[str, bytes]:
    """The three ``ptb.{split}.txt`` files of ``simple-examples.tgz``, each checked by SHA-256
    unless ``verify=False``.

    Members are read by name into memory, never extracted by their archive paths, so a
    hostile archive cannot write outside the data directory; reading stops once the three are
    found, and an archive of more than ``_MAX_MEMBERS`` members is refused.

    Raises:
        DatasetError: the archive is unreadable or lacks a file.
        ChecksumError: a file differs from the known PTB text.
    """
    files: dict[str, bytes] = {}
    try:
        fileobj = io.BytesIO(archive) if isinstance(archive, bytes) else archive
        with tarfile.open(fileobj=fileobj, mode="r:*") as tar:
            for count, member in enumerate(tar):
                if len(files) == len(SPLITS):
                    break  # the rest of the archive is not needed
                if count == _MAX_MEMBERS:  # tarfile remembers every member it has seen
                    raise DatasetError(
                        f"{source} has more than {_MAX_MEMBERS} members; it is not Mikolov's "
                        "archive"
                    )
                name = member.name.removeprefix("./")
                for split in SPLITS:
                    if name == f"simple-examples/data/ptb.{split}.txt" and member.isfile():
                        if member.size > _MAX_FILE_BYTES:
                            raise DatasetError(f"{source}: {name} is {member.size} bytes, not PTB")
                        handle = tar.extractfile(member)
                        assert handle is not None  # a regular file always has a handle
                        files[split] = handle.read()
    except (tarfile.TarError, OSError, EOFError) as err:
        raise DatasetError(
            f"{source} is not a readable tar archive ({err}); try another mirror"
        ) from None
    for split in SPLITS:
        if split not in files:
            raise DatasetError(
                f"{source} has no simple-examples/data/ptb.{split}.txt; "
                "it is not Mikolov's archive"
            )
        digest = hashlib.sha256(files[split]).hexdigest()
        if verify and digest != PTB_SHA256[split]:
            raise ChecksumError(
                f"refused ptb.{split}.txt from {source}: SHA-256 {digest[:12]}... is not the "
                f"known {PTB_SHA256[split][:12]}...; use another mirror or place the files by hand"
            )
    return files


def fetch_ptb(
    data_dir: Path,
    mirrors: Sequence[str] | str | None = None,
    *,
    verify: bool = True,
    progress: bool = True,
    timeout: float = 60.0,
) -> list[Path]:
    """Download ``simple-examples.tgz`` and write the missing ``ptb/{split}.txt`` files.

    The archive has no known checksum; ``verify`` checks each extracted file against the SHA-256
    of the standard PTB text instead (the loaders check it again in every case). Nothing is
    written unless all three files pass.
    """
    with fetch_file(ARCHIVE, mirrors, progress=progress, timeout=timeout) as archive:
        files = extract_ptb(archive, verify=verify)
    written = []
    for split in SPLITS:
        path = ptb_path(split, data_dir)
        if not path.exists():
            write_atomic(path, files[split])
            written.append(path)
    return written
