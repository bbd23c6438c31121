"""SIGTERM and SIGINT during a run: abandon it cleanly, except where that would be unsafe.

A run that gets SIGTERM (systemd stopping it, the schedule loop stopping, Ctrl-C) raises
RunAbandoned in the main thread: the `with` blocks unwind, so a publish in progress
removes its staging directory and the run lock is released. Once a version is pushed,
though, stopping half-way would leave an unverified version served: the post-push check,
its rollback and the run's record run inside `finish_first()`, where a signal only makes
the run end as soon as that is done, with its real outcome.
"""

from __future__ import annotations

import contextlib
import signal
from typing import Iterator, Optional

_deferring = 0
_pending: Optional[int] = None


class RunAbandoned(BaseException):
    """The run was stopped by a signal; nothing it had not finished was kept. `run_id`: the
    pipeline run it stopped (set by `local_runner.run_pipeline`), None when the signal
    came before TFX began one."""

    run_id: Optional[str] = None


def install() -> None:
    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)


def _on_signal(signum, frame) -> None:
    global _pending
    if _deferring:
        _pending = signum
        return
    raise RunAbandoned(signal.Signals(signum).name)


def pending() -> Optional[str]:
    """The signal that arrived inside `finish_first()`, if one did."""
    return signal.Signals(_pending).name if _pending is not None else None


@contextlib.contextmanager
def finish_first() -> Iterator[None]:
    """The last stretch of a run, which a signal must not cut short: the run finishes it
    and then ends, with its real outcome."""
    global _deferring
    _deferring += 1
    try:
        yield
    finally:
        _deferring -= 1
