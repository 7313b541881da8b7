"""The in-memory form every dataset loader returns: :class:`Dataset` and its :class:`Vocab`.

A dataset is three lists of tensors (``train``, ``valid``, ``test``), one tensor per sequence:

- ``kind="binary"``: piano rolls, float32 ``(T, 88)``, column ``k`` is MIDI note ``k + 21``;
- ``kind="categorical"``: token ids, int64 ``(T,)``, indices into :attr:`Dataset.vocab`;
- ``kind="bow"``: a bag of words stored as its sorted word ids, int64 ``(N,)`` with one entry per
  occurrence, so ``len`` is the document length and ``torch.bincount`` gives the count vector
  (:func:`~pyro_lnf.datasets.batching.collate` builds the ``(B, V)`` count matrix).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import torch

from pyro_lnf.errors import DatasetError

if TYPE_CHECKING:
    from pyro_lnf.datasets.batching import Batch
    from pyro_lnf.distributions.length import LengthDistribution

SPLITS: tuple[str, ...] = ("train", "valid", "test")
Kind = Literal["binary", "categorical", "bow"]


def resolve_data_dir(explicit: str | os.PathLike | None = None) -> Path:
    """The data directory: ``explicit`` if given, else ``$LNF_DATA_DIR``, else ``./data``.

    Example::

        >>> resolve_data_dir("/srv/data")
        PosixPath('/srv/data')
    """
    if explicit is not None:
        return Path(explicit).expanduser()
    env = os.environ.get("LNF_DATA_DIR")
    if env:
        return Path(env).expanduser()
    return Path("data")


class Vocab:
    """A token vocabulary: ``itos`` (index to string) and ``stoi`` (string to index).

    ``level="char"`` encodes a string character by character and decodes to a string;
    ``level="word"`` splits on whitespace and joins with spaces. Tokens missing from the
    vocabulary map to ``unk_index``; a vocabulary without ``<unk>`` (the fixed 2000-word 20News
    list) refuses them. ``pad_index`` is a valid index, so padded positions can be embedded and
    masked afterwards.

    Example::

        >>> v = Vocab(["<unk>", "<pad>", "a", "b"], unk_index=0, pad_index=1, level="char")
        >>> v.encode("abz").tolist(), v.decode([2, 3, 1])
        ([2, 3, 0], 'ab')
    """

    def __init__(
        self,
        itos: Sequence[str],
        *,
        unk_index: int | None,
        pad_index: int | None,
        level: Literal["char", "word"],
    ) -> None:
        self.itos: list[str] = list(itos)
        self.stoi: dict[str, int] = {s: i for i, s in enumerate(self.itos)}
        if len(self.stoi) != len(self.itos):
            raise DatasetError("vocabulary has duplicate tokens; rebuild it from the data files")
        self.unk_index = unk_index
        self.pad_index = pad_index
        self.level = level

    def __len__(self) -> int:
        return len(self.itos)

    def __repr__(self) -> str:
        return f"Vocab(size={len(self)}, level={self.level!r})"

    def tokenize(self, text: str) -> list[str]:
        """Split raw text into tokens the way the dataset does (characters or words)."""
        return list(text) if self.level == "char" else text.split()

    def encode(self, tokens: str | Iterable[str]) -> torch.Tensor:
        """Token ids (int64 ``(T,)``) of a string (tokenised first) or of a list of tokens."""
        if isinstance(tokens, str):
            tokens = self.tokenize(tokens)
        ids = []
        for tok in tokens:
            idx = self.stoi.get(tok, self.unk_index)
            if idx is None:
                raise DatasetError(f"token {tok!r} is not in the vocabulary, which has no <unk>")
            ids.append(idx)
        return torch.tensor(ids, dtype=torch.long)

    def decode(self, ids: torch.Tensor | Iterable[int], skip_pad: bool = True) -> str:
        """The text of ``ids``; padding is dropped unless ``skip_pad=False``."""
        if isinstance(ids, torch.Tensor):
            ids = ids.tolist()
        toks = [self.itos[i] for i in ids if not (skip_pad and i == self.pad_index)]
        return ("" if self.level == "char" else " ").join(toks)


@dataclass
class Dataset:
    """A loaded dataset: three splits of sequences plus what is needed to model them.

    Attributes:
        name: registry name (``"jsb_chorales"``, ``"ptb_char"``, ...).
        kind: ``"binary"`` (piano rolls), ``"categorical"`` (token ids) or ``"bow"``.
        splits: ``{"train": [...], "valid": [...], "test": [...]}``, one tensor per sequence.
        num_features: 88 for piano rolls, the vocabulary size for text and bags of words.
        vocab: the :class:`Vocab` for text and bags of words, ``None`` for music.
        info: provenance and preprocessing facts (source files, filters and their effect).

    Example::

        >>> ds = load_dataset("jsb_chorales")  # doctest: +SKIP
        >>> len(ds.splits["train"]), ds.splits["train"][0].shape  # doctest: +SKIP
        (229, torch.Size([..., 88]))
    """

    name: str
    kind: Kind
    splits: dict[str, list[torch.Tensor]]
    num_features: int
    vocab: Vocab | None = None
    info: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if set(self.splits) != set(SPLITS):
            raise DatasetError(
                f"dataset {self.name!r} needs splits {SPLITS}, got {tuple(self.splits)}"
            )

    def __repr__(self) -> str:
        sizes = ", ".join(f"{s}={len(self.splits[s])}" for s in SPLITS)
        return (
            f"Dataset({self.name!r}, kind={self.kind!r}, "
            f"num_features={self.num_features}, {sizes})"
        )

    @property
    def pad_value(self) -> int | float:
        """The value padded positions hold in a batch: 0 for rolls, ``<pad>``'s id for text."""
        if self.kind == "categorical":
            assert self.vocab is not None and self.vocab.pad_index is not None
            return self.vocab.pad_index
        return 0

    def lengths(self, split: str) -> torch.Tensor:
        """Sequence lengths (document lengths in words for ``bow``) of a split, int64 ``(N,)``."""
        if split not in self.splits:
            raise DatasetError(f"unknown split {split!r} of {self.name!r}; use one of {SPLITS}")
        return torch.tensor([len(s) for s in self.splits[split]], dtype=torch.long)

    def batches(
        self,
        split: str,
        batch_size: int,
        *,
        shuffle: bool | None = None,
        seed: int | torch.Generator | None = None,
        device: torch.device | str | None = None,
        max_frames: int | None = None,
        drop_last: bool = False,
    ) -> Iterator[Batch]:
        """:func:`~pyro_lnf.datasets.batching.iterate_batches` over a split with this dataset's
        padding (and count matrices for ``bow``); ``shuffle`` defaults to ``split == "train"``."""
        from pyro_lnf.datasets.batching import iterate_batches

        if split not in self.splits:
            raise DatasetError(f"unknown split {split!r} of {self.name!r}; use one of {SPLITS}")
        return iterate_batches(
            self.splits[split],
            batch_size,
            shuffle=split == "train" if shuffle is None else shuffle,
            seed=seed,
            device=device,
            max_frames=max_frames,
            drop_last=drop_last,
            pad_value=self.pad_value,
            bow_size=self.num_features if self.kind == "bow" else None,
        )

    def length_distribution(self, **kwargs: Any) -> LengthDistribution:
        """p(T) fitted on the *training* lengths only (see
        :meth:`~pyro_lnf.distributions.length.LengthDistribution.from_lengths` for ``kwargs``)."""
        from pyro_lnf.distributions.length import LengthDistribution

        return LengthDistribution.from_lengths(self.lengths("train"), **kwargs)
