"""What tests in more than one folder share: the repository root, tiny model sizes, ``lnf`` run
in this process, the one-line error check and a loopback HTTP mirror.

``tests/`` is on ``sys.path`` (``pythonpath`` in pyproject.toml), so any test imports these as
``from helpers import ...``; fixtures built on them (``mirror``) live in ``tests/conftest.py``.
"""

from __future__ import annotations

import socket
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote

import pytest

REPO = Path(__file__).resolve().parents[1]

#: The smallest latent-flow model sizes the sampling and bad-input tests build.
TINY = dict(latent_dim=4, hidden_size=12, embedding_dim=8, flow_layers=2, flow_hidden=(8, 8),
            length_dim=4, dropout=0.0)


# ------------------------------------------------------------------------------------------
# lnf in this process


def run_lnf(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture,
            *args: str) -> tuple[int, str, str]:
    """``cli.main()`` in-process, the console script's code path (a user error becomes one
    line on stderr and ``sys.exit``): (status, stdout, stderr)."""
    from pyro_lnf.app import cli

    monkeypatch.setattr(sys, "argv", ["lnf", *map(str, args)])
    try:
        cli.main()
        code = 0
    except SystemExit as exit_info:
        code = exit_info.code
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def lnf_datasets(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture,
                 *args: str) -> tuple[int, str]:
    """``lnf datasets ARGS`` in-process, expected to exit through ``sys.exit``: (status,
    stderr)."""
    from pyro_lnf.app import cli

    monkeypatch.setattr(sys, "argv", ["lnf", "datasets", *args])
    with pytest.raises(SystemExit) as exit_info:
        cli.main()
    return exit_info.value.code, capsys.readouterr().err


def assert_one_line_error(code: int, err: str, *needles: str) -> None:
    """A failed command as a user sees it: non-zero status, exactly one line on stderr,
    starting ``error: `` and holding every needle, and no traceback."""
    lines = err.strip().splitlines()
    assert code != 0 and len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err
    for needle in needles:
        assert needle in lines[0], lines[0]


# ------------------------------------------------------------------------------------------
# a loopback mirror for downloads


class _Handler(BaseHTTPRequestHandler):
    """Serves ``server.routes[path]``; ``server.truncate`` paths promise more bytes than sent."""

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        path = unquote(self.path)
        body = self.server.routes.get(path)
        if body is None:
            self.send_error(404)
            return
        self.send_response(200)
        extra = 100 if path in self.server.truncate else 0
        self.send_header("Content-Length", str(len(body) + extra))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:  # keep pytest output clean
        pass


class Mirror:
    """A loopback HTTP server on 127.0.0.1 (port chosen by the OS) serving in-memory files
    (the ``mirror`` fixture starts and stops one)."""

    def __init__(self) -> None:
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self.httpd.routes = {}
        self.httpd.truncate = set()
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/"

    def serve(self, name: str, body: bytes, *, truncate: bool = False) -> None:
        self.httpd.routes["/" + name] = body
        if truncate:
            self.httpd.truncate.add("/" + name)


def closed_port_url() -> str:
    """A loopback URL nobody listens on (bind, read the port, close)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/"


def files_under(path: Path) -> list[Path]:
    return [p for p in path.rglob("*") if p.is_file()]


class Evil:
    """Unpickling this calls ``func(*args)`` (the attack being refused)."""

    def __init__(self, func: object, *args: object) -> None:
        self.func, self.args = func, args

    def __reduce__(self) -> tuple:
        return self.func, self.args
