"""SIGINT and SIGTERM, deferred to a point where training can save its exact position.

A signal that arrived while an optimizer step was half-applied, or while a checkpoint was
being written, could not be saved from: the state would be neither before nor after the step.
Inside :func:`deferred_signals` the first SIGINT or SIGTERM only records itself in the
yielded :class:`StopRequest`; the training loop looks at it where its state is whole (after
an optimizer step, between validation batches), saves, and stops. A second signal, a second
or more after the first, stops at once, without saving, for a user who will not wait. One
sooner is the first delivered twice, and is ignored: a terminal's Ctrl-C or a job scheduler
signals a whole process group, and a launcher in it (``benchmarks/reproduce.py``, torchrun)
forwards the same signal to the process it already reached.

Example::

    with deferred_signals() as stop:
        for batch in batches:
            step(batch)
            if stop.signum is not None:
                save(); raise TrainingInterrupted(...)
"""

from __future__ import annotations

import contextlib
import signal
import threading
import time
from collections.abc import Iterable, Iterator
from typing import Any

from pyro_lnf.errors import Interrupted, TrainingInterrupted

__all__ = ["StopRequest", "StopRequested", "deferred_signals"]

_SIGNALS = (signal.SIGINT, signal.SIGTERM)

#: Seconds after the first signal within which another is the same stop delivered twice.
REPEAT_GRACE_S = 1.0


class StopRequested(Exception):
    """Raised by :meth:`StopRequest.checked` between batches once a signal has arrived."""


class StopRequest:
    """The first deferred signal, if any: ``signum`` is ``None`` until one arrives."""

    def __init__(self) -> None:
        self.signum: int | None = None

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name if self.signum is not None else "none"

    def checked(self, batches: Iterable[Any]) -> Iterable[Any]:
        """``batches``, re-iterable, raising :class:`StopRequested` before the next batch
        once a signal has arrived (so a long validation pass can be cut short)."""
        request = self

        class _Checked:
            def __iter__(self) -> Iterator[Any]:
                for batch in batches:
                    if request.signum is not None:
                        raise StopRequested
                    yield batch

            def __len__(self) -> int:
                return len(batches)  # type: ignore[arg-type]

        return _Checked()


@contextlib.contextmanager
def deferred_signals(
    interrupted: type[Interrupted] = TrainingInterrupted,
) -> Iterator[StopRequest]:
    """Defer SIGINT and SIGTERM inside the ``with`` body; restore the old handlers after.

    A second signal, :data:`REPEAT_GRACE_S` or more after the first, raises ``interrupted``
    (training's or evaluation's kind of stop), so the caller's kind is what a user or a
    catching caller sees; one sooner is ignored as the first delivered twice.

    Off the main thread (where Python cannot install handlers) signals are not deferred and
    the request never fires.
    """
    request = StopRequest()
    if threading.current_thread() is not threading.main_thread():
        yield request
        return

    first_at = 0.0

    def handle(signum: int, frame: Any) -> None:
        nonlocal first_at
        if request.signum is None:
            request.signum, first_at = signum, time.monotonic()
            return
        if time.monotonic() - first_at < REPEAT_GRACE_S:
            return
        raise interrupted(
            f"{signal.Signals(signum).name} again: stopped at once, without saving", signum
        )

    previous = {sig: signal.signal(sig, handle) for sig in _SIGNALS}
    try:
        yield request
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
