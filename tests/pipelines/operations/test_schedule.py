"""The schedule loop: one run at a time, failures do not stop it, SIGTERM ends it cleanly."""

from __future__ import annotations

import signal
import sys

import pytest

from pipelines.operations.schedule import Scheduler, parse_interval, retrain_command
from toolkit_testing import start_script


@pytest.mark.parametrize("text,seconds", [("90s", 90), ("15m", 900), ("6h", 21600),
                                          ("1d", 86400), ("2.5", 2.5)])
def test_intervals(text, seconds):
    assert parse_interval(text) == seconds


@pytest.mark.parametrize("text", ["", "0h", "6 hours", "-1m"])
def test_bad_intervals_are_refused(text):
    with pytest.raises(ValueError, match="interval"):
        parse_interval(text)


def test_the_retrain_command_keeps_every_option_but_the_schedule_s_own():
    argv = ["mnist", "--data", "d", "--every", "6h", "--window=2", "--max-runs=3", "--",
            "--direct_num_workers=2"]
    command = retrain_command(argv, {"--every": 1, "--max-runs": 1})
    assert command[1:] == ["-m", "pipelines", "retrain", "mnist", "--data", "d", "--window=2",
                           "--", "--direct_num_workers=2"]


def test_a_failed_run_does_not_stop_the_loop(tmp_path):
    counter = tmp_path / "runs"
    script = (f"import pathlib, sys; p = pathlib.Path({str(counter)!r}); "
              f"p.write_text(p.read_text() + 'x' if p.exists() else 'x'); sys.exit(1)")
    said = []
    code = Scheduler([sys.executable, "-c", script], every=0.01, max_runs=3,
                     log=said.append).run()
    assert code == 0
    assert counter.read_text() == "xxx"
    assert sum("ended: error / anomalies (exit 1)" in line for line in said) == 3


_LOOP = """
import sys
from pipelines.operations.schedule import Scheduler
import signal
child = [sys.executable, "-c", '''
import pathlib, signal, sys, time
def stop(*_):
    pathlib.Path(sys.argv[1]).write_text("got SIGTERM")
    sys.exit(143)
signal.signal(signal.SIGTERM, stop)
print("run started", flush=True)
time.sleep(600)
''', sys.argv[1]]
scheduler = Scheduler(child, every=3600, log=lambda line: print(line, flush=True))
signal.signal(signal.SIGTERM, scheduler.stop)
sys.exit(scheduler.run())
"""


def test_sigterm_abandons_the_current_run_and_ends_the_loop(tmp_path):
    marker = tmp_path / "child"
    loop = start_script(_LOOP, str(marker))
    lines = []
    while "run started" not in lines:
        lines.append(loop.stdout.readline().strip())
    loop.send_signal(signal.SIGTERM)
    output, _ = loop.communicate(timeout=30)
    assert loop.returncode == 0
    assert marker.read_text() == "got SIGTERM"  # the run was told, and ended cleanly
    assert "killed by signal" not in output
    assert "schedule: stopped" in output  # at once: it did not wait for the next run
