"""Downloading dataset files from a list of mirrors, with a progress bar, a size cap and SHA-256
checks; reading the known files back with the same checks.

A download is streamed in chunks into an anonymous temporary file (never whole in memory) and
abandoned as soon as it passes its :attr:`Source.max_bytes`, so a hostile or broken server
cannot fill the memory or the disk. The caller parses and checks the file and only then writes
the data directory (atomically), so a failed or interrupted download never leaves a partial file.

Mirrors: a mirror is a *base* URL; the file's canonical name is appended to it, so one mirror
serves every dataset (``LNF_MIRROR="http://host/datasets/"`` then fetches
``http://host/datasets/JSB%20Chorales.pickle``). The list tried is, in order of precedence, the
``mirrors`` argument, the whitespace-separated URLs of ``$LNF_MIRROR``, or the dataset's own
canonical URLs. Whatever the list, ``https`` URLs are tried before plain ``http`` ones (the order
is otherwise kept); ``http`` stays as a fallback because every file is checked by checksum or
content before use.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import os
import shutil
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

from pyro_lnf.errors import ChecksumError, DatasetError, DownloadError
from pyro_lnf.io import atomic_write

MIRROR_ENV = "LNF_MIRROR"
_CHUNK = 1 << 16
DEFAULT_MAX_BYTES = 64 << 20  # above every dataset file (the largest, PTB's archive, is ~34 MB)


@dataclass(frozen=True)
class Source:
    """Where a file comes from: its canonical ``filename``, the ``urls`` to try when no mirror
    is configured, the SHA-256 of the canonical file (``None`` where it is not known) and the
    most bytes a download of it may have (``max_bytes``, a little above the real size)."""

    filename: str
    urls: tuple[str, ...]
    sha256: str | None = None
    max_bytes: int = DEFAULT_MAX_BYTES


def mirror_urls(source: Source, mirrors: Sequence[str] | str | None = None) -> list[str]:
    """The URLs to try for ``source``: ``mirrors``, else ``$LNF_MIRROR``, else ``source.urls``.

    Example::

        >>> mirror_urls(Source("a b.pickle", ("http://x/a%20b.pickle",)), ["http://m/d"])
        ['http://m/d/a%20b.pickle']
    """
    if isinstance(mirrors, str):
        mirrors = mirrors.split()
    if mirrors is None:
        mirrors = os.environ.get(MIRROR_ENV, "").split() or None
    if mirrors is None:
        urls = list(source.urls)
    else:
        name = urllib.parse.quote(source.filename)
        urls = [m.rstrip("/") + "/" + name for m in mirrors]
    # https first (a stable sort keeps the given order otherwise)
    return sorted(urls, key=lambda u: not u.lower().startswith("https://"))


def _one_line(err: BaseException) -> str:
    # URLError wraps the socket error in .reason; HTTPError's own str carries the status code.
    if isinstance(err, urllib.error.HTTPError):
        reason: object = err
    else:
        reason = getattr(err, "reason", None) or err
    return " ".join(str(reason).split()) or type(err).__name__


def _get(
    url: str, out: BinaryIO, *, max_bytes: int, timeout: float, progress: bool, label: str
) -> str:
    """Stream ``url`` into ``out`` in chunks, at most ``max_bytes``; return the SHA-256."""
    digest = hashlib.sha256()
    with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 (http(s) mirrors)
        total = response.headers.get("Content-Length")
        total = int(total) if total and total.isdigit() else None
        if total is not None and total > max_bytes:  # refuse before reading a byte
            raise DownloadError(f"announces {total} bytes, above the cap of {max_bytes}")
        console = Console(stderr=True)
        size = 0
        with Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            DownloadColumn(),
            TransferSpeedColumn(),
            TimeRemainingColumn(),
            console=console,
            transient=True,
            disable=not (progress and console.is_terminal),  # no stray output in logs
        ) as bar:
            task = bar.add_task(label, total=total)
            while chunk := response.read(_CHUNK):
                size += len(chunk)
                if size > max_bytes:  # a server that lies about (or omits) its length
                    raise DownloadError(f"sent more than the cap of {max_bytes} bytes")
                digest.update(chunk)
                out.write(chunk)
                bar.advance(task, len(chunk))
        if total is not None and size != total:
            raise DownloadError(f"truncated: got {size} of {total} bytes")
        return digest.hexdigest()


@contextlib.contextmanager
def fetch_file(
    source: Source,
    mirrors: Sequence[str] | str | None = None,
    *,
    verify: bool = True,
    progress: bool = True,
    timeout: float = 60.0,
) -> Iterator[BinaryIO]:
    """Download ``source`` from the first mirror that serves it whole, within
    ``source.max_bytes`` and with the right checksum; yield it as a temporary file, rewound.

    The file is anonymous and disappears when the ``with`` block ends.

    Args:
        source: the file to fetch.
        mirrors: base URLs to try in turn (see :func:`mirror_urls`).
        verify: check ``source.sha256`` where it is known (the caller validates the content
            in every case).
        progress: draw a rich progress bar on stderr.
        timeout: seconds before a silent connection is abandoned.

    Raises:
        ChecksumError: every mirror failed and at least one served bytes with the wrong SHA-256.
        DownloadError: every mirror failed (unreachable, HTTP error, truncated, too large).
    """
    expected = source.sha256 if verify else None
    failures: list[str] = []
    bad_checksum = False
    for url in mirror_urls(source, mirrors):
        with tempfile.TemporaryFile() as out:
            try:
                digest = _get(
                    url,
                    out,  # type: ignore[arg-type]  # a binary TemporaryFile
                    max_bytes=source.max_bytes,
                    timeout=timeout,
                    progress=progress,
                    label=source.filename,
                )
            except (OSError, ValueError, http.client.HTTPException, DownloadError) as err:
                # URLError, HTTPError, timeouts and refused connections are all OSErrors;
                # ValueError is a malformed URL.
                failures.append(f"{url}: {_one_line(err)}")
                continue
            if expected is not None and digest != expected:
                bad_checksum = True
                failures.append(
                    f"{url}: SHA-256 {digest[:12]}... is not the expected {expected[:12]}..."
                )
                continue
            out.seek(0)
            yield out  # type: ignore[misc]
            return
    what = "; ".join(failures) or "no mirror given"
    if bad_checksum:
        raise ChecksumError(
            f"refused {source.filename}: checksum mismatch ({what}); the mirror serves a "
            f"different or corrupted file: use another mirror ({MIRROR_ENV}) or place the file "
            "by hand"
        )
    raise DownloadError(
        f"could not download {source.filename} from any mirror ({what}); check the network, set "
        f"{MIRROR_ENV} to a reachable mirror, or place the dataset in the data directory by hand"
    )


def fetch_bytes(
    source: Source,
    mirrors: Sequence[str] | str | None = None,
    *,
    verify: bool = True,
    progress: bool = True,
    timeout: float = 60.0,
) -> bytes:
    """The bytes of :func:`fetch_file` (for small files; at most ``source.max_bytes``)."""
    with fetch_file(source, mirrors, verify=verify, progress=progress, timeout=timeout) as f:
        return f.read()


def write_atomic(path: Path, data: bytes | BinaryIO) -> None:
    """Write ``data`` (bytes, or a binary file copied from where it stands) to ``path`` through
    a temporary file, so ``path`` is whole or absent."""
    with atomic_write(path, "wb") as f:
        if isinstance(data, bytes):
            f.write(data)
        else:
            shutil.copyfileobj(data, f, _CHUNK)


def read_known(path: Path, sha256: str, max_bytes: int, fetch_hint: str) -> bytes:
    """The bytes of ``path``, a file whose content is known: at most ``max_bytes`` are read, and
    the SHA-256 must be ``sha256``, so a substituted or edited file is refused before it is
    parsed.

    Raises:
        DatasetError: missing, too large, or not the known content (one line, naming ``path``
            and the fix, ``fetch_hint``).
    """
    try:
        with open(path, "rb") as f:
            data = f.read(max_bytes + 1)  # never more than the cap into memory
    except FileNotFoundError:
        raise DatasetError(f"{path} is missing; {fetch_hint}") from None
    if len(data) > max_bytes:
        raise DatasetError(
            f"{path} is larger than {max_bytes} bytes, far above the published file; delete it "
            f"and {fetch_hint}"
        )
    if not data.strip():  # the commonest damage gets its own words
        what = "is empty" if not data else "holds only blank lines"
        raise DatasetError(f"{path} {what}; delete it and {fetch_hint}")
    digest = hashlib.sha256(data).hexdigest()
    if digest != sha256:
        raise DatasetError(
            f"{path} differs from the published file (SHA-256 {digest[:12]}..., expected "
            f"{sha256[:12]}...); delete it and {fetch_hint}"
        )
    return data
