"""`python -m pipelines schedule NAME --data DIR --every 6h`: retraining on a timer.

For machines without cron or systemd timers: a plain loop that starts one
`python -m pipelines retrain ...` process at a time (a crash or a leak of one run cannot
take the loop down), every interval measured from the start of the previous run (a run
longer than the interval is followed at once by the next). A failed run is logged with
its outcome and the loop goes on. SIGTERM or SIGINT stops the loop: the current run is
abandoned cleanly (it gets the signal, removes what it staged, records the run as
abandoned and releases its lock), or, with `--on-stop finish`, allowed to finish first.
"""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import threading
import time
from typing import Callable, List, Optional

from pipelines import outcomes

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_interval(text: str) -> float:
    """'90s', '15m', '6h', '1d' (or plain seconds) -> seconds."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*", text)
    if not match or float(match.group(1)) <= 0:
        raise ValueError(f"expected an interval like 90s, 15m, 6h or 1d, got {text!r}")
    return float(match.group(1)) * _UNITS[match.group(2) or "s"]


def describe_exit(code: int) -> str:
    names = [o.name for o in outcomes.ALL if o.exit_code == code]
    if code < 0:
        return f"killed by signal {-code}"
    return " / ".join(names) if names else f"exit {code}"


class Scheduler:
    """Runs `command` every `every` seconds until stopped (or `max_runs` runs)."""

    def __init__(self, command: List[str], every: float, max_runs: Optional[int] = None,
                 finish_on_stop: bool = False, log: Callable[[str], None] = print):
        self.command = command
        self.every = every
        self.max_runs = max_runs
        self.finish_on_stop = finish_on_stop
        self.log = log
        self._stop = threading.Event()
        self._child: Optional[subprocess.Popen] = None

    def stop(self, signum=signal.SIGTERM, frame=None) -> None:
        """Signal handler: stop the loop; pass the signal on to a running run unless it
        may finish."""
        if not self._stop.is_set():
            self.log(f"schedule: {signal.Signals(signum).name} received; "
                     + ("letting the current run finish" if self.finish_on_stop and self._child
                        else "stopping"))
        self._stop.set()
        child = self._child
        if child is not None and child.poll() is None and not self.finish_on_stop:
            child.send_signal(signal.SIGTERM)

    def run(self) -> int:
        runs = 0
        while not self._stop.is_set():
            started = time.monotonic()
            runs += 1
            self.log(f"schedule: run {runs} starting at {time.strftime('%Y-%m-%d %H:%M:%S')}")
            self._child = subprocess.Popen(self.command)
            code = self._child.wait()
            self._child = None
            self.log(f"schedule: run {runs} ended: {describe_exit(code)} (exit {code})")
            if self._stop.is_set() or (self.max_runs is not None and runs >= self.max_runs):
                break
            next_at = started + self.every
            self.log(f"schedule: next run at "
                     f"{time.strftime('%H:%M:%S', time.localtime(time.time() + next_at - time.monotonic()))}")
            self._stop.wait(max(0.0, next_at - time.monotonic()))
        self.log("schedule: stopped")
        return 0


def retrain_command(schedule_argv: List[str], schedule_only: dict) -> List[str]:
    """The `retrain` command line for a `schedule` command line: same arguments, without
    the schedule's own flags (`schedule_only`: flag -> number of values it takes)."""
    args, i = [], 0
    while i < len(schedule_argv):
        arg = schedule_argv[i]
        flag = arg.split("=", 1)[0]
        if flag in schedule_only:
            i += 1 if "=" in arg else 1 + schedule_only[flag]
            continue
        args.append(arg)
        i += 1
    return [sys.executable, "-m", "pipelines", "retrain", *args]
