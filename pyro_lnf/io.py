"""Small file helpers shared by the dataset cache, checkpoints and metrics: atomic writes,
the cleanup of their stale temporaries, and the lock that keeps a run folder to one writer."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from pyro_lnf.errors import FolderLockedError

#: The suffix of :func:`atomic_write`'s temporaries (``.NAME.XXXX.tmp``), so a later start
#: can find the ones a killed process left behind.
_TMP_SUFFIX = ".tmp"


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "wb") -> Iterator[IO]:
    """Open a temporary file beside ``path`` and rename it over ``path`` on success.

    A crash or an exception inside the ``with`` block leaves ``path`` as it was and removes
    the temporary file, so readers never see a half-written file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=_TMP_SUFFIX)
    umask = os.umask(0)
    os.umask(umask)
    try:
        # mkstemp creates 0600; the finished file gets the permissions open() would give it.
        os.chmod(tmp, 0o666 & ~umask)
        with os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def file_sha256(path: str | os.PathLike, block: int = 1 << 20) -> str:
    """The SHA-256 of a file's bytes, read a block at a time (memory stays flat for any size)."""
    import hashlib

    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(block):
            digest.update(chunk)
    return digest.hexdigest()


def remove_stale_temporaries(folder: str | os.PathLike) -> list[Path]:
    """Delete the temporaries that an :func:`atomic_write` killed mid-write left in
    ``folder`` (``.NAME.XXXX.tmp``), and return them. Call it only while holding the folder's
    :class:`FolderLock`, so no live writer's file is taken."""
    removed = []
    for tmp in Path(folder).glob(f".*{_TMP_SUFFIX}"):
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
            removed.append(tmp)
    return removed


class FolderLock:
    """An exclusive OS lock (``flock``) on ``folder/.lock``, held from :meth:`acquire` to
    :meth:`release` or the end of the process, so two writers never share a run folder.

    The kernel drops the lock when its holder dies, however it dies, so a crash leaves no
    stale lock. The file keeps the holder's pid, host and start time, for the message the
    next writer gets. (``flock`` is local: on NFS, two machines may both get the lock.)
    """

    NAME = ".lock"

    def __init__(self, folder: str | os.PathLike) -> None:
        self.path = Path(folder) / self.NAME
        self._file: IO | None = None

    def acquire(self) -> None:
        """Take the lock, or raise :class:`FolderLockedError` naming its holder."""
        import fcntl
        import socket
        import time

        self.path.parent.mkdir(parents=True, exist_ok=True)
        f = open(self.path, "a+")
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            holder = f.read().strip() or "another process"
            f.close()
            raise FolderLockedError(
                f"{self.path.parent} is in use by {holder}; wait for it to end or choose "
                "another output directory"
            ) from None
        f.seek(0)
        f.truncate()
        started = time.strftime("%Y-%m-%d %H:%M:%S")
        f.write(f"pid {os.getpid()} on {socket.gethostname()} since {started}\n")
        f.flush()
        self._file = f

    def release(self) -> None:
        if self._file is not None:
            self._file.close()  # closing the descriptor drops the flock
            self._file = None

    def __enter__(self) -> FolderLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
