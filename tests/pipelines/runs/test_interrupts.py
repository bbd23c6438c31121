"""SIGTERM abandons a run, except in its last stretch, which it finishes first."""

from __future__ import annotations

import os
import signal

import pytest

from pipelines.runs import interrupts


@pytest.fixture
def handlers(monkeypatch):
    monkeypatch.setattr(interrupts, "_pending", None)  # this test's signals only
    saved = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    interrupts.install()
    yield
    signal.signal(signal.SIGTERM, saved[0])
    signal.signal(signal.SIGINT, saved[1])


def test_a_signal_abandons_the_run(handlers):
    with pytest.raises(interrupts.RunAbandoned, match="SIGTERM"):
        os.kill(os.getpid(), signal.SIGTERM)
        signal.sigtimedwait([], 0)  # let the handler run


def test_inside_finish_first_a_signal_only_marks_the_run_to_end(handlers):
    finished = False
    with interrupts.finish_first():
        os.kill(os.getpid(), signal.SIGTERM)
        finished = True
    assert finished
    assert interrupts.pending() == "SIGTERM"
