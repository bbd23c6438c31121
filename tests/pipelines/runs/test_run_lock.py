"""One run of a model at a time; a lock left by a killed run is taken over."""

from __future__ import annotations

import signal

import pytest

from pipelines.runs import lock as run_lock
from toolkit_testing import start_script

_HOLDER = """
import sys, time
from pipelines.runs import lock as run_lock
with run_lock.hold(sys.argv[1], "mnist"):
    print("locked", flush=True)
    time.sleep(600)
"""


def _hold_in_child(root):
    proc = start_script(_HOLDER, str(root))
    assert proc.stdout.readline().strip() == "locked"
    return proc


def test_a_second_run_is_refused_naming_the_first(tmp_path):
    child = _hold_in_child(tmp_path)
    try:
        with pytest.raises(run_lock.Locked) as refused:
            with run_lock.hold(tmp_path, "mnist"):
                pass
        assert refused.value.holder.pid == child.pid
        assert f"pid {child.pid}" in str(refused.value) and "started" in str(refused.value)
        with run_lock.hold(tmp_path, "half_plus_two"):  # another model is not blocked
            pass
    finally:
        child.kill()
        child.wait(10)


def test_a_lock_left_by_a_killed_run_is_taken_over(tmp_path):
    child = _hold_in_child(tmp_path)
    child.send_signal(signal.SIGKILL)
    child.wait(10)
    said = []
    with run_lock.hold(tmp_path, "mnist", said.append) as stale:
        assert stale.pid == child.pid
        assert f"pid {child.pid}" in said[0] and "is gone" in said[0]
    with run_lock.hold(tmp_path, "mnist") as stale:  # a clean exit leaves no holder behind
        assert stale is None
