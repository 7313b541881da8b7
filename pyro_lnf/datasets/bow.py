"""20 Newsgroups as bags of words, in the NVDM preprocessing (Miao et al. 2016; Xu & Durrett 2018).

Files ``bow/20news/{train,test}.feat`` hold one document per line, ``label idx:count ...`` with
``idx`` a 1-based index into the 2000 words of ``vocab.new`` (``word corpus_count`` per line).
A document is stored as its sorted word ids with one entry per occurrence (int64 ``(N,)``, so
its length is its word count N, the normaliser of NVDM's perplexity ``exp(mean(-log p(x) / N))``);
batches turn them into ``(B, 2000)`` count matrices.

The files have no validation split. By default 1000 *training* documents, chosen by a seeded
permutation, are held out as ``valid``, so model selection never sees the test set.
``valid_from="test"`` reproduces Xu & Durrett's code instead: ``valid`` is 1000 random *test*
documents and ``test`` stays whole (the two overlap). Documents with no words would have an
undefined per-word perplexity and are dropped, as both reference loaders do (the released files
have none).

The loader parses the files verbatim, so their canonical content is the files themselves: every
load checks each file's SHA-256 (read under a cap of 1.5x its size) before parsing, and a
substituted or edited file is refused.

References: Y. Miao, L. Yu, P. Blunsom, "Neural Variational Inference for Text Processing",
ICML 2016; J. Xu, G. Durrett, "Spherical Latent Spaces for Stable Variational Autoencoders",
EMNLP 2018.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from pyro_lnf.datasets.base import Dataset, Vocab
from pyro_lnf.datasets.download import Source, fetch_file, read_known, write_atomic
from pyro_lnf.errors import ConfigError, DatasetError

_NVDM = (
    "https://raw.githubusercontent.com/ysmiao/nvdm/"
    "19bc3d630bc0bace13555e2515de082771827a76/data/20news/"
)
# The caps are about 1.5 times the published sizes (4335856, 2830914 and 21748 bytes).
SOURCES = {
    name: Source(name, (_NVDM + name,), sha, max_bytes)
    for name, sha, max_bytes in (
        ("train.feat", "55dfc0cc4e8aac22484ed93a4d785bb171959a00e8ffbca6f13c1c80d8cc4ce5", 6 << 20),
        ("test.feat", "344eff7e61116d72abd6ebc3d3c1e286c0474b41bf85ab09c8b898e0a5ff80c1", 4 << 20),
        ("vocab.new", "afbe73140a0d39578e6ae33914e049e6587768c088a0501392afda20ca3c85a8", 32 << 10),
    )
}


def news_dir(data_dir: Path) -> Path:
    """Where the 20News files live under ``data_dir``."""
    return data_dir / "bow" / "20news"


def _read(path: Path) -> str:
    """The text of one of the :data:`SOURCES` files, checked against its known SHA-256."""
    source = SOURCES[path.name]
    hint = "run `lnf datasets --fetch 20news` or pass download=True"
    # ASCII: the checksum guarantees it decodes
    return read_known(path, source.sha256 or "", source.max_bytes, hint).decode("utf-8")


def read_feat(path: Path, vocab_size: int) -> tuple[list[torch.Tensor], torch.Tensor, int]:
    """Parse an NVDM ``.feat`` file.

    Returns:
        the documents (sorted word ids, one per occurrence), their labels, and the number of
        empty documents dropped.
    """
    lines = [line for line in _read(path).split("\n") if line.strip()]
    pairs_per_doc = np.array([line.count(":") for line in lines], dtype=np.int64)
    text = " ".join(lines).replace(":", " ")
    try:
        with warnings.catch_warnings():
            # numpy warns (instead of raising) where it stops at a token that is not an integer.
            warnings.simplefilter("error")
            flat = np.fromstring(text, dtype=np.int64, sep=" ")
    except (ValueError, DeprecationWarning) as err:
        raise DatasetError(f"{path} is not in NVDM format 'label idx:count ...' ({err})") from None
    if flat.size != len(lines) + 2 * int(pairs_per_doc.sum()):
        raise DatasetError(
            f"{path} is not in NVDM format 'label idx:count ...' (a token is not an integer)"
        )
    starts = np.concatenate([[0], np.cumsum(1 + 2 * pairs_per_doc)[:-1]]).astype(np.int64)
    labels = flat[starts]
    pairs = np.delete(flat, starts).reshape(-1, 2)
    idx, count = pairs[:, 0] - 1, pairs[:, 1]
    if idx.size and (idx.min() < 0 or idx.max() >= vocab_size or count.min() < 1):
        raise DatasetError(
            f"{path}: word indices must lie in 1..{vocab_size} and counts be positive; the file "
            "does not match vocab.new"
        )
    doc = np.repeat(np.arange(len(lines)), pairs_per_doc)
    order = np.lexsort((idx, doc))  # by document, then word id
    words = np.repeat(idx[order], count[order])
    sizes = np.bincount(doc, weights=count, minlength=len(lines)).astype(np.int64)
    docs = [d for d, n in zip(torch.from_numpy(words).split(sizes.tolist()), sizes) if n > 0]
    return docs, torch.from_numpy(labels[sizes > 0]), int((sizes == 0).sum())


def load_20news(
    data_dir: Path,
    valid_size: int = 1000,
    valid_from: Literal["train", "test"] = "train",
    seed: int = 0,
) -> Dataset:
    """20 Newsgroups bags of words (2000-word vocabulary) with a held-out ``valid`` split.

    Example::

        >>> ds = load_20news(Path("data"))  # doctest: +SKIP
        >>> [len(ds.splits[s]) for s in ("train", "valid", "test")]  # doctest: +SKIP
        [10268, 1000, 7505]
    """
    if valid_from not in ("train", "test"):
        raise ConfigError(f"valid_from must be 'train' or 'test', got {valid_from!r}")
    folder = news_dir(data_dir)
    itos = [line.split()[0] for line in _read(folder / "vocab.new").split("\n") if line.strip()]
    vocab = Vocab(itos, unk_index=None, pad_index=None, level="word")
    train, train_labels, train_empty = read_feat(folder / "train.feat", len(vocab))
    test, test_labels, test_empty = read_feat(folder / "test.feat", len(vocab))

    source = train if valid_from == "train" else test
    n = len(source)
    if isinstance(valid_size, bool) or not isinstance(valid_size, int) or not 0 < valid_size < n:
        raise ConfigError(f"valid_size must be an integer in 1..{n - 1}, got {valid_size!r}")
    source_labels = train_labels if valid_from == "train" else test_labels
    perm = torch.randperm(len(source), generator=torch.Generator().manual_seed(seed))
    held = perm[:valid_size].sort().values
    valid, valid_labels = [source[i] for i in held.tolist()], source_labels[held]
    if valid_from == "train":
        rest = perm[valid_size:].sort().values
        train, train_labels = [train[i] for i in rest.tolist()], train_labels[rest]
    return Dataset(
        name="20news",
        kind="bow",
        splits={"train": train, "valid": valid, "test": test},
        num_features=len(vocab),
        vocab=vocab,
        info={
            "path": str(folder),
            "valid_from": valid_from,
            "valid_indices": held.tolist(),
            "seed": seed,
            "empty_documents_dropped": {"train.feat": train_empty, "test.feat": test_empty},
            # newsgroup 1..20 of every document, aligned with the splits
            "labels": {"train": train_labels, "valid": valid_labels, "test": test_labels},
        },
    )


def fetch_20news(
    data_dir: Path,
    mirrors: Sequence[str] | str | None = None,
    *,
    verify: bool = True,
    progress: bool = True,
    timeout: float = 60.0,
) -> list[Path]:
    """Download the missing NVDM files (pinned to a commit of ``ysmiao/nvdm``), each checked by
    its SHA-256. A file is written only once it is whole and verified."""
    folder = news_dir(data_dir)
    written = []
    for name in SOURCES:
        path = folder / name
        if not path.exists():
            with fetch_file(
                SOURCES[name], mirrors, verify=verify, progress=progress, timeout=timeout
            ) as data:
                write_atomic(path, data)
            written.append(path)
    return written
