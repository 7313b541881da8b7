"""Downloading dataset files from a list of mirrors, with a progress bar and SHA-256 checks.

Files are fetched into memory, checked, and only then written (atomically) by the caller, so a
failed or interrupted download never leaves a partial file in the data directory.

Mirrors: a mirror is a *base* URL; the file's canonical name is appended to it, so one mirror
serves every dataset (``LNF_MIRROR="http://host/datasets/"`` then fetches
``http://host/datasets/JSB%20Chorales.pickle``). The list tried is, in order of precedence, the
``mirrors`` argument, the whitespace-separated URLs of ``$LNF_MIRROR``, or the dataset's own
canonical URLs.
"""

from __future__ import annotations

import hashlib
import http.client
import io
import os
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

from pyro_lnf.errors import ChecksumError, DownloadError
from pyro_lnf.io import atomic_write

MIRROR_ENV = "LNF_MIRROR"
_CHUNK = 1 << 16


@dataclass(frozen=True)
class Source:
    """Where a file comes from: its canonical ``filename``, the ``urls`` to try when no mirror
    is configured, and the SHA-256 of the canonical file (``None`` where it is not known)."""

    filename: str
    urls: tuple[str, ...]
    sha256: str | None = None


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
        return list(source.urls)
    name = urllib.parse.quote(source.filename)
    return [m.rstrip("/") + "/" + name for m in mirrors]


def _one_line(err: BaseException) -> str:
    # URLError wraps the socket error in .reason; HTTPError's own str carries the status code.
    if isinstance(err, urllib.error.HTTPError):
        reason: object = err
    else:
        reason = getattr(err, "reason", None) or err
    return " ".join(str(reason).split()) or type(err).__name__


def _get(url: str, *, timeout: float, progress: bool, label: str) -> bytes:
    with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 (http(s) mirrors)
        total = response.headers.get("Content-Length")
        total = int(total) if total and total.isdigit() else None
        buf = io.BytesIO()
        console = Console(stderr=True)
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
                buf.write(chunk)
                bar.advance(task, len(chunk))
        data = buf.getvalue()
        if total is not None and len(data) != total:
            raise DownloadError(f"truncated: got {len(data)} of {total} bytes")
        return data


def fetch_bytes(
    source: Source,
    mirrors: Sequence[str] | str | None = None,
    *,
    verify: bool = True,
    progress: bool = True,
    timeout: float = 60.0,
) -> bytes:
    """Download ``source`` from the first mirror that serves it with the right checksum.

    Args:
        source: the file to fetch.
        mirrors: base URLs to try in turn (see :func:`mirror_urls`).
        verify: check ``source.sha256`` where it is known (the caller validates the content
            in every case).
        progress: draw a rich progress bar on stderr.
        timeout: seconds before a silent connection is abandoned.

    Raises:
        ChecksumError: every mirror failed and at least one served bytes with the wrong SHA-256.
        DownloadError: every mirror failed (unreachable, HTTP error, truncated).
    """
    expected = source.sha256 if verify else None
    failures: list[str] = []
    bad_checksum = False
    for url in mirror_urls(source, mirrors):
        try:
            data = _get(url, timeout=timeout, progress=progress, label=source.filename)
        except (OSError, ValueError, http.client.HTTPException, DownloadError) as err:
            # URLError, HTTPError, timeouts and refused connections are all OSErrors;
            # ValueError is a malformed URL.
            failures.append(f"{url}: {_one_line(err)}")
            continue
        if expected is not None:
            digest = hashlib.sha256(data).hexdigest()
            if digest != expected:
                bad_checksum = True
                failures.append(
                    f"{url}: SHA-256 {digest[:12]}... is not the expected {expected[:12]}..."
                )
                continue
        return data
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


def write_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file, so ``path`` is whole or absent."""
    with atomic_write(path, "wb") as f:
        f.write(data)
