"""Padded, length-bucketed mini-batches of variable-length sequences.

Training batches follow torchtext's "pool" strategy, which the reference code uses: shuffle the
sequences, cut them into pools of ``100 * batch_size``, sort each pool by length and cut it into
batches, then shuffle the batches. Sequences in a batch have similar lengths, so little compute
is spent on padding, while the batches still vary from epoch to epoch. Evaluation batches sort
the whole split by length and are not shuffled. Within a batch, sequences are in decreasing order
of length (what ``pack_padded_sequence(enforce_sorted=True)`` wants).

The one difference from torchtext: batches are shuffled across the whole epoch, not only within
their pool (more mixing, same buckets).

``max_frames`` caps ``B * T_max`` (the padded size) of a batch, so the long pieces of MuseData
(up to 4273 steps) come in small batches while short ones still come ``batch_size`` at a time.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace

import torch
from torch.nn.utils.rnn import pad_sequence

from pyro_lnf.errors import ConfigError

POOL_FACTOR = 100  # torchtext: pools of 100 batches


@dataclass(frozen=True)
class Batch:
    """A batch-first padded batch.

    Attributes:
        x: ``(B, T_max, 88)`` float piano rolls padded with 0, ``(B, T_max)`` long token ids
            padded with the pad index (a valid index, so the padding can be embedded), or
            ``(B, V)`` float word counts for bags of words.
        lengths: ``(B,)`` int64, the true lengths (the word count of each document for bags of
            words), in decreasing order for sequences.
        mask: ``(B, T_max)`` bool, ``True`` at real steps; ``None`` for bags of words.
        indices: ``(B,)`` int64, the position of each sequence in the list it came from.
    """

    x: torch.Tensor
    lengths: torch.Tensor
    mask: torch.Tensor | None
    indices: torch.Tensor

    def __len__(self) -> int:
        return self.lengths.shape[0]

    def to(self, device: torch.device | str | None) -> Batch:
        """This batch with every tensor moved to ``device``."""
        mask = None if self.mask is None else self.mask.to(device)
        return replace(
            self,
            x=self.x.to(device),
            lengths=self.lengths.to(device),
            mask=mask,
            indices=self.indices.to(device),
        )


def collate(
    sequences: Sequence[torch.Tensor],
    indices: Sequence[int] | torch.Tensor,
    *,
    pad_value: float = 0,
    bow_size: int | None = None,
) -> Batch:
    """Pad ``sequences[i] for i in indices`` into a :class:`Batch` (in the order given).

    With ``bow_size``, each sequence is a document's word ids and ``x`` is the count matrix
    ``x[b, v] = #{occurrences of word v in document b}``, shape ``(B, bow_size)``.

    Example::

        >>> b = collate([torch.tensor([5, 6, 7]), torch.tensor([8])], [0, 1], pad_value=1)
        >>> b.x.tolist(), b.mask.tolist()
        ([[5, 6, 7], [8, 1, 1]], [[True, True, True], [True, False, False]])
    """
    indices = torch.as_tensor(indices, dtype=torch.long)
    seqs = [sequences[i] for i in indices.tolist()]
    if not seqs:
        raise ConfigError("cannot collate an empty batch")
    device = seqs[0].device
    lengths = torch.tensor([s.shape[0] for s in seqs], dtype=torch.long, device=device)
    if bow_size is not None:
        x = torch.zeros(len(seqs), bow_size, dtype=torch.get_default_dtype(), device=device)
        rows = torch.repeat_interleave(torch.arange(len(seqs), device=device), lengths)
        one = torch.ones((), dtype=x.dtype, device=device)
        x.index_put_((rows, torch.cat(seqs)), one, accumulate=True)
        return Batch(x, lengths, None, indices.to(device))
    x = pad_sequence(seqs, batch_first=True, padding_value=pad_value)
    mask = torch.arange(x.shape[1], device=device) < lengths[:, None]
    return Batch(x, lengths, mask, indices.to(device))


def _check_positive(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{name} must be a positive integer, got {value!r}")


def _generator(seed: int | torch.Generator | None) -> torch.Generator | None:
    if isinstance(seed, torch.Generator):
        return seed
    if seed is None:
        return None  # torch's global RNG, so pyro.set_rng_seed governs it
    return torch.Generator().manual_seed(int(seed))


def _cut(
    order: list[int], lengths: list[int], batch_size: int, max_frames: int | None, drop_last: bool
) -> list[list[int]]:
    """Cut ``order`` (ascending in length) into consecutive batches of at most ``batch_size``
    sequences and, with ``max_frames``, at most ``max_frames`` padded steps; a sequence longer
    than ``max_frames`` is a batch of its own. Each batch is returned longest first."""
    batches: list[list[int]] = []
    current: list[int] = []
    for i in order:
        full = len(current) == batch_size
        # Ascending order: the newcomer is the longest, so it sets T_max of the grown batch.
        too_big = max_frames is not None and (len(current) + 1) * lengths[i] > max_frames
        if current and (full or too_big):
            batches.append(current)
            current = []
        current.append(i)
    if current:
        # The last batch ended because the pool ran out; it "could grow" unless it is full or
        # even one more sequence of its longest length would break the frame cap.
        could_grow = len(current) < batch_size and (
            max_frames is None or (len(current) + 1) * lengths[current[-1]] <= max_frames
        )
        if not (drop_last and could_grow):
            batches.append(current)
    return [b[::-1] for b in batches]


def batch_indices(
    lengths: Sequence[int] | torch.Tensor,
    batch_size: int,
    *,
    shuffle: bool,
    seed: int | torch.Generator | None = None,
    max_frames: int | None = None,
    drop_last: bool = False,
) -> list[torch.Tensor]:
    """The plan of an epoch: for each batch, the indices of its sequences (longest first).

    See :func:`iterate_batches`; this is its index-only part, cheap to inspect and test.
    """
    _check_positive("batch_size", batch_size)
    if max_frames is not None:
        _check_positive("max_frames", max_frames)
    lengths = torch.as_tensor(lengths, dtype=torch.long).cpu()
    n = lengths.shape[0]
    lens = lengths.tolist()
    if not shuffle:
        order = torch.sort(lengths, stable=True).indices.tolist()
        plan = _cut(order, lens, batch_size, max_frames, drop_last)
        return [torch.tensor(b, dtype=torch.long) for b in plan]
    gen = _generator(seed)
    perm = torch.randperm(n, generator=gen).tolist()
    pool = POOL_FACTOR * batch_size
    batches: list[list[int]] = []
    for start in range(0, n, pool):
        chunk = perm[start : start + pool]
        chunk.sort(key=lens.__getitem__)  # stable: ties keep their shuffled order
        batches += _cut(chunk, lens, batch_size, max_frames, drop_last)
    shuffled = torch.randperm(len(batches), generator=gen).tolist()
    return [torch.tensor(batches[i], dtype=torch.long) for i in shuffled]


def iterate_batches(
    sequences: Sequence[torch.Tensor],
    batch_size: int,
    *,
    shuffle: bool = False,
    seed: int | torch.Generator | None = None,
    device: torch.device | str | None = None,
    max_frames: int | None = None,
    drop_last: bool = False,
    pad_value: float = 0,
    bow_size: int | None = None,
) -> Iterator[Batch]:
    """Length-bucketed batches over ``sequences`` (see the module docstring for the strategy).

    Args:
        sequences: tensors whose first dimension is time (``(T, 88)`` rolls, ``(T,)`` ids) or
            bags of words as word-id lists (with ``bow_size``).
        batch_size: the most sequences in a batch.
        shuffle: the training ("pool") order if ``True``; sorted by length if ``False``.
        seed: an int (the same plan every call), a ``torch.Generator`` (advanced, so successive
            epochs differ but a seeded generator replays them), or ``None`` for torch's global RNG.
        device: where the batches go (built where the sequences are, then moved).
        max_frames: cap on ``B * T_max`` per batch; ``None`` for no cap.
        drop_last: drop a batch that is short of ``batch_size`` because its pool ran out (not
            one kept short by ``max_frames``).
        pad_value: what padded positions hold (the pad index for token ids).
        bow_size: vocabulary size for bags of words: batches are ``(B, V)`` count matrices and,
            as there is no padding to save, the order is a plain shuffle (or the stored order).

    Example::

        >>> rolls = [torch.zeros(t, 88) for t in (3, 5, 4)]
        >>> [tuple(b.x.shape) for b in iterate_batches(rolls, 2)]  # sorted by length
        [(2, 4, 88), (1, 5, 88)]
        >>> [len(b) for b in iterate_batches(rolls, 2, max_frames=8)]  # B * T_max <= 8
        [2, 1]
    """
    if bow_size is not None:
        if max_frames is not None:
            raise ConfigError("max_frames does not apply to bags of words (a batch is (B, V))")
        _check_positive("batch_size", batch_size)
        n = len(sequences)
        order = torch.randperm(n, generator=_generator(seed)) if shuffle else torch.arange(n)
        plan = [order[i : i + batch_size] for i in range(0, n, batch_size)]
        if drop_last and plan and len(plan[-1]) < batch_size:
            plan.pop()
    else:
        lengths = [s.shape[0] for s in sequences]
        plan = batch_indices(
            lengths,
            batch_size,
            shuffle=shuffle,
            seed=seed,
            max_frames=max_frames,
            drop_last=drop_last,
        )
    for idx in plan:
        yield collate(sequences, idx, pad_value=pad_value, bow_size=bow_size).to(device)
