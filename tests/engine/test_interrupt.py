"""Deferred SIGINT/SIGTERM: the first is recorded, a duplicate delivery is ignored, and only a
later second signal stops at once."""

import os
import signal
import time

import pytest

from pyro_lnf import interrupt
from pyro_lnf.errors import TrainingInterrupted


@pytest.fixture
def clock(monkeypatch):
    """A settable ``time.monotonic``."""
    now = [100.0]
    monkeypatch.setattr(time, "monotonic", lambda: now[0])
    return now


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_delivered_twice_at_once_is_one_stop_request(clock, signum):
    # a terminal's Ctrl-C reaches reproduce.py and its lnf child, and reproduce.py forwards it:
    # the child sees the same stop twice and must still save
    with interrupt.deferred_signals() as stop:
        os.kill(os.getpid(), signum)
        clock[0] += 0.2
        os.kill(os.getpid(), signum)
    assert stop.signum == signum


def test_a_second_signal_later_stops_at_once(clock):
    with pytest.raises(TrainingInterrupted, match="SIGTERM again: stopped at once"):
        with interrupt.deferred_signals() as stop:
            os.kill(os.getpid(), signal.SIGINT)
            clock[0] += interrupt.REPEAT_GRACE_S
            os.kill(os.getpid(), signal.SIGTERM)
    assert stop.signum == signal.SIGINT


def test_the_old_handlers_come_back(clock):
    before = signal.getsignal(signal.SIGTERM)
    with interrupt.deferred_signals():
        assert signal.getsignal(signal.SIGTERM) is not before
    assert signal.getsignal(signal.SIGTERM) is before
