"""The file that makes ``lnf evaluate --partial FILE`` resumable: each finished batch's results.

A long evaluation (K = 100 on PTB's test split is hours on a CPU) must survive being stopped:
a session's end, a cluster's time limit, SIGINT. The file is JSON lines:

* line 1, the header: ``"format"`` and everything the results depend on (the checkpoint's
  SHA-256, the split's content, K, the seed, the batch and chunk sizes, the precision, the
  device type, a CPU's thread count, the library versions). A rerun whose header differs is
  refused, naming what differs, so results of two evaluations are never mixed.
* then one line per finished batch, ``{"batch": i, "sums": [...], "log_likelihood": [...]}``:
  the float64 sums :func:`~pyro_lnf.evaluate.evaluate` adds in batch order
  (:data:`~pyro_lnf.evaluate.BATCH_SUMS`) and each sequence's log p̂_K(x). JSON writes a
  float as its shortest round-tripping repr, so a resumed evaluation adds the very same floats
  as an uninterrupted one.

Each batch line is written, flushed and fsynced as soon as the batch is done, so a kill loses
at most the batch in flight. A last line without its newline (torn by a kill) is dropped on the
next open; anything else that is not what this module writes is refused in one line, and the
file is read no further than the size the header's evaluation could have written.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import IO, Any

import torch

from pyro_lnf.errors import ConfigError, FolderLockedError
from pyro_lnf.evaluate import BATCH_SUMS, BatchResult

__all__ = ["FORMAT", "PartialResults", "sequences_sha256"]

#: The header's ``"format"``: a file of another format (or none) is not read as results.
FORMAT = "lnf-evaluate-partial/1"

# Size bounds, so a hostile or mistaken file is never read whole: the header line, a batch
# line's keys and sums, and one sequence's value (a float64 repr is at most 24 characters).
_HEADER_BYTES = 16_384
_LINE_BYTES = 512
_VALUE_BYTES = 32

_ADVICE = "it is not a file lnf evaluate --partial wrote; delete it or choose another file"


def sequences_sha256(sequences: Iterable[torch.Tensor]) -> str:
    """A fingerprint of a split's content (each sequence's shape, dtype and values), so
    results kept for one version of a dataset are not resumed against another."""
    import hashlib

    digest = hashlib.sha256()
    for seq in sequences:
        values = seq.detach().cpu().contiguous()
        digest.update(f"{tuple(values.shape)}{values.dtype};".encode())
        digest.update(values.numpy().tobytes())
    return digest.hexdigest()


class PartialResults:
    """``FILE`` opened for one evaluation, locked against a second writer.

    On entering, a missing or empty file gets ``header``; a file with a header checks it
    against ``header`` and its batch lines become :attr:`done`. :meth:`append` keeps one more
    batch. ``batch_sizes`` (sequences per batch of the split) bound the file and check each
    line's length.

    Example::

        with PartialResults(path, header, sizes) as partial:
            evaluate(module, batches, done=partial.done, on_batch=partial.append, seed=0)
    """

    def __init__(self, path: str | os.PathLike, header: dict[str, Any],
                 batch_sizes: Sequence[int]) -> None:
        self.path = Path(path)
        # As read back from JSON, so a tuple and its list compare equal.
        self.header = json.loads(json.dumps({"format": FORMAT, **header}))
        self.batch_sizes = list(batch_sizes)
        self.done: dict[int, BatchResult] = {}
        self.kept = 0  # batch lines in the file: those done at the start plus those appended
        self._file: IO[bytes] | None = None

    @property
    def max_bytes(self) -> int:
        """The most this evaluation can write: more means it is not this evaluation's file."""
        return _HEADER_BYTES + sum(_LINE_BYTES + _VALUE_BYTES * n for n in self.batch_sizes)

    def __enter__(self) -> PartialResults:
        f = open(self.path, "a+b")  # created if missing, never truncated
        try:
            self._lock(f)
            self._load(f)
        except BaseException:
            f.close()
            raise
        self._file = f
        return self

    def __exit__(self, *exc: object) -> None:
        if self._file is not None:
            self._file.close()  # and the lock with it
            self._file = None

    def append(self, result: BatchResult) -> None:
        """Keep ``result`` as one line, on disk before this returns."""
        if self._file is None:
            raise RuntimeError("PartialResults.append outside its with block")
        line = {"batch": result.index, "sums": list(result.sums),
                "log_likelihood": list(result.log_likelihood)}
        _write_line(self._file, line)
        self.kept += 1

    def _lock(self, f: IO[bytes]) -> None:
        import fcntl

        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise FolderLockedError(
                f"{self.path} is in use by another lnf evaluate; wait for it to end or choose "
                "another --partial file"
            ) from None

    def _load(self, f: IO[bytes]) -> None:
        """Read the header and the batch lines, drop a torn last line, or write the header
        into an empty file."""
        size = os.fstat(f.fileno()).st_size
        if size > self.max_bytes:
            raise ConfigError(f"{self.path} holds {size} bytes, more than this evaluation can "
                              f"write ({self.max_bytes}); {_ADVICE}")
        f.seek(0)
        data = f.read(self.max_bytes)
        if not data:
            _write_line(f, self.header)
            return
        *lines, torn = data.split(b"\n")
        if not lines:
            raise ConfigError(f"{self.path} has no complete first line; {_ADVICE}")
        self._check_header(self._parse(lines[0], 1))
        for number, line in enumerate(lines[1:], 2):
            result = self._batch(self._parse(line, number), number)
            self.done[result.index] = result
        self.kept = len(self.done)
        if torn:
            f.truncate(len(data) - len(torn))  # appends would otherwise extend the fragment

    def _parse(self, line: bytes, number: int) -> dict[str, Any]:
        try:
            value = json.loads(line.decode("utf-8"))
        except (UnicodeDecodeError, ValueError, RecursionError):
            value = None
        if not isinstance(value, dict):
            raise ConfigError(f"{self.path}, line {number}: not a JSON object; {_ADVICE}")
        return value

    def _check_header(self, found: dict[str, Any]) -> None:
        if found.get("format") != FORMAT:
            raise ConfigError(f"{self.path} does not start with an lnf evaluate --partial "
                              f"header ({FORMAT}); {_ADVICE}")
        differ = [f"{key} {_short(found.get(key))} (now {_short(self.header.get(key))})"
                  for key in sorted(set(found) | set(self.header))
                  if found.get(key) != self.header.get(key)]
        if differ:
            # benchmarks/reproduce.py reads this wording to restart such an evaluation.
            raise ConfigError(
                f"{self.path} holds results of another evaluation: {'; '.join(differ)}; "
                "rerun with the options it was started with, or choose another --partial file"
            )

    def _batch(self, line: dict[str, Any], number: int) -> BatchResult:
        """One batch line as a :class:`BatchResult`, every field checked against the split."""
        where = f"{self.path}, line {number}"
        index = line.get("batch")
        if set(line) != {"batch", "sums", "log_likelihood"}:
            raise ConfigError(f"{where}: expected the keys batch, sums, log_likelihood; {_ADVICE}")
        if type(index) is not int or not 0 <= index < len(self.batch_sizes):
            raise ConfigError(f"{where}: batch must be an index below {len(self.batch_sizes)}; "
                              f"{_ADVICE}")
        if index in self.done:
            raise ConfigError(f"{where}: batch {index} appears twice; {_ADVICE}")
        sums, values = line["sums"], line["log_likelihood"]
        if not _floats(sums, len(BATCH_SUMS)):
            raise ConfigError(f"{where}: sums must be {len(BATCH_SUMS)} numbers; {_ADVICE}")
        if not _floats(values, self.batch_sizes[index]):
            raise ConfigError(f"{where}: log_likelihood must be {self.batch_sizes[index]} "
                              f"numbers, one per sequence of batch {index}; {_ADVICE}")
        return BatchResult(index, tuple(sums), tuple(values))


def _write_line(f: IO[bytes], value: dict[str, Any]) -> None:
    """``value`` as one JSON line, on disk (flushed and fsynced) before this returns."""
    f.write((json.dumps(value) + "\n").encode())
    f.flush()
    os.fsync(f.fileno())


def _floats(value: Any, length: int) -> bool:
    """Whether ``value`` is a list of ``length`` floats (as JSON writes every Python float)."""
    return (isinstance(value, list) and len(value) == length
            and all(type(v) is float for v in value))


def _short(value: Any) -> str:
    """A header value for a one-line message: JSON (no newline), cut to 40 characters."""
    text = json.dumps(value)
    return text if len(text) <= 40 else text[:37] + "..."
