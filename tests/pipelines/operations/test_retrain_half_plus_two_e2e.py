"""End to end: half_plus_two retraining from CSV spans, on a schedule, verified through a
server, and abandoned cleanly on SIGTERM. Steps run in order and rely on each other.

1. A short soak: `schedule` runs retrain 5 times, a new span arriving during each run (one
   of them corrupted), under the repository's retention (--keep-versions 1), while a REST
   client queries the served model the whole time.
2. The soak's stable version as the server serves it (labels, lineage, warnings).
3. SIGTERM abandons a run cleanly.
(SIGKILL at every step: test_retrain_kill_e2e.py.)

The schedule starts each retrain as a process, and the run stopped by SIGTERM is one; the
other commands (make-spans, history) call the CLI's main() in the test's process: the same
arguments, exit code and output."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from pipelines.runs import lock as run_lock
from serving import lifecycle, lineage, rollouts
from serving.lifecycle import health
from serving.lifecycle.config import UpConfig
from serving.repository import ModelRepository
from toolkit_testing import ROOT, run_main, served_labels, wait_until

pytestmark = pytest.mark.e2e

MODEL = "half_plus_two"
EXIT_0 = "pushed / candidate / unchanged (exit 0)"


class Scenario:
    def __init__(self, root: Path):
        self.root = root
        self.data = root / "spans"
        self.repository = root / "repo"
        self.runs = root / "runs"
        self.state = root / "serving"

    def add_span(self, kind: str = "clean") -> None:
        result = run_main("pipelines", "make-spans", "half_plus_two", "--out", str(self.data),
                          "--profile", "fast", "--kind", kind)
        assert result.returncode == 0, result.stderr

    def options(self):
        return ["half_plus_two", "--data", str(self.data), "--profile", "fast",
                "--repository", str(self.repository), "--pipeline-root", str(self.runs),
                "--state-dir", str(self.state), "--infra-validation", "off"]

    def history(self):
        return json.loads(run_main("pipelines", "history", "half_plus_two", "--json",
                                   "--pipeline-root", str(self.runs)).stdout)

    def record(self) -> rollouts.Rollout:
        return rollouts.load(self.repository / MODEL, MODEL)

    def rest_url(self) -> str:
        return lifecycle.current(self.state).addresses.rest_url

    def repository_bytes(self) -> int:
        return sum(p.stat().st_size for p in (self.repository / MODEL).rglob("*") if p.is_file())


class Client(threading.Thread):
    """A REST client asking the served model (a request naming no version) all the time."""

    def __init__(self, rest_url: str):
        super().__init__(daemon=True)
        self.rest_url, self.stop = rest_url, threading.Event()
        self.answered, self.failed_after_first = 0, []

    def run(self) -> None:
        while not self.stop.wait(0.1):
            try:
                health.predict(self.rest_url, MODEL, [1.0], timeout=10)
            except Exception as e:  # noqa: BLE001 - counted: none may fail once one answered
                if self.answered:
                    self.failed_after_first.append(f"{type(e).__name__}: {e}")
            else:
                self.answered += 1


@pytest.fixture(scope="module")
def scenario(tmp_path_factory):
    s = Scenario(tmp_path_factory.mktemp("retrain_hp2"))
    yield s
    lifecycle.down(s.state, timeout=10)


# The soak: the span each run brings in (added once the run's ExampleGen has read the one
# before), and how the run ends.
SOAK = [("clean", EXIT_0), ("corrupted", EXIT_0), ("clean", "error / anomalies (exit 1)"),
        ("clean", EXIT_0), (None, EXIT_0)]
MAIN_EXAMPLE_GEN = re.compile(r"\[\s*1/(\d+)\] ExampleGen\s+(done|cached)")


@pytest.mark.timeout(1500)  # 5 retrain processes: about 100 s each on a quiet 2-core machine
def test_the_schedule_runs_retrain_until_told_to_stop(scenario):
    """A short soak: 5 runs of `schedule`, a new span in each, one corrupted; retention
    keeps 1 version besides stable and previous; a REST client all along. (half_plus_two
    fits its data exactly: a run may find its model unchanged, and stable stays.)"""
    lifecycle.up(UpConfig(repository=scenario.repository, models=("half_plus_two",),
                          state_dir=scenario.state, backend="process", grpc_port=0,
                          rest_port=0, file_system_poll_seconds=1, wait_seconds=180))
    client = Client(scenario.rest_url())
    client.start()
    scenario.add_span()
    scenario.add_span()  # two spans waiting: the first run ingests span 1 into its window
    schedule = subprocess.Popen(
        [sys.executable, "-m", "pipelines", "schedule", *scenario.options(), "--every", "1s",
         "--max-runs", str(len(SOAK)), "--keep-versions", "1"], cwd=ROOT, text=True,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env={**os.environ,
                                                               "PYTHONUNBUFFERED": "1"})
    lines, runs = [], []
    try:
        for line in schedule.stdout:
            lines.append(line)
            match = MAIN_EXAMPLE_GEN.search(line)
            if match and int(match.group(1)) > 8 and SOAK[len(runs)][0]:  # not an ingest
                scenario.add_span(SOAK[len(runs)][0])  # the next run's, once this one's is read
            if line.startswith(f"schedule: run {len(runs) + 1} ended: "):
                runs.append({"ended": line.split("ended: ")[1].strip(),
                             "out": "".join(lines[lines.index(next(
                                 x for x in lines if x.startswith(
                                     f"schedule: run {len(runs) + 1} starting"))):]),
                             "stable": scenario.record().stable,
                             "versions": ModelRepository(scenario.repository).versions(MODEL),
                             "bytes": scenario.repository_bytes()})
        assert schedule.wait(60) == 0, "".join(lines)
    finally:
        if schedule.poll() is None:
            schedule.kill()
        client.stop.set()
        client.join(30)
    out = "".join(lines)
    assert [r["ended"] for r in runs] == [ended for _, ended in SOAK], out
    assert "span 1: not ingested yet, and within the window: ingesting it first" in out
    assert "half_plus_two: pushed version 1\n" in runs[0]["out"] and "trained on spans 1-2" in out
    assert "component AnomaliesGate failed" in runs[2]["out"]
    stable = None
    for run in runs:  # stable changes only with a new version, pushed through the canary
        pushed = re.search(r"half_plus_two: pushed version (\d+)\n", run["out"])
        if pushed and stable is not None:
            assert "warm-started from version " in run["out"]
            assert f"serving: version {pushed.group(1)} is the canary on " in run["out"]
            assert "smoke check regress mean_squared_error" in run["out"]
            assert "predict mean_squared_error" in run["out"]
        stable = int(pushed.group(1)) if pushed else stable
        assert run["stable"] == stable, run["out"]
        # retention (--keep-versions 1): stable, previous, the newest; the disk levels off
        assert run["versions"][-1] == stable and len(run["versions"]) <= 2, run["versions"]
    assert runs[1]["stable"] == 2 and runs[2]["stable"] == 2  # the corrupted span: no change
    assert runs[4]["bytes"] <= runs[1]["bytes"] * 1.1, [r["bytes"] for r in runs]
    assert [(r["span"], r["outcome"]) for r in scenario.history()][:4] == [
        (1, "ingested"), (2, "pushed"), (3, "pushed"), (4, "anomalies")]
    assert [r["outcome"] in ("pushed", "unchanged") for r in scenario.history()[4:]] == \
        [True, True]
    assert client.answered > 0 and client.failed_after_first == [], client.failed_after_first
    assert served_labels(scenario.rest_url(), MODEL)["default"] == stable


def test_the_stable_version_was_checked_through_the_server(scenario):
    """The soak's stable version: served under its labels, with the previous one loaded
    below it, its lineage (the window without the corrupted span) and its profile's
    warning wherever it is served."""
    stable = scenario.record().stable
    report = lifecycle.status(scenario.state)
    assert report.models[0].status.available() == [stable - 1, stable]
    assert served_labels(scenario.rest_url(), MODEL) == {
        "stable": stable, "previous": stable - 1, "default": stable}
    record = lineage.read(scenario.repository / MODEL / str(stable))
    pushed = [r for r in scenario.history() if r["pushed_version"] == stable][0]
    assert record.spans == pushed["spans"] and len(record.spans) == 3 and 4 not in record.spans
    assert record.warm_start["version"] == stable - 1
    # how it was trained, and the warning wherever it is served
    assert (record.profile, record.trainer_module) == ("fast",
                                                       "components/half_plus_two_trainer.py")
    assert record.hyperparameters["warm_start_steps"] == 100
    assert any(warning.startswith(f"half_plus_two version {stable} was trained with the fast "
                                  f"profile") for warning in report.models[0].warnings), \
        report.models[0].warnings


def test_sigterm_abandons_a_run_cleanly(scenario):
    scenario.add_span()
    log_dir = scenario.runs / "half_plus_two_retrain" / "logs"
    before = set(log_dir.glob("*.log"))
    versions = ModelRepository(scenario.repository).versions("half_plus_two")
    run = subprocess.Popen([sys.executable, "-m", "pipelines", "retrain", *scenario.options()],
                           cwd=ROOT, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)

    def under_way():  # the pipeline is under way: the run's log names a component
        assert run.poll() is None, f"the run ended with {run.returncode} before it could be stopped"
        logs = set(log_dir.glob("*.log")) - before  # not the older logs it gzips
        return logs and "Component StatisticsGen is running" in next(iter(logs)).read_text()
    wait_until(under_way, timeout=300, interval=0.2, what="the run under way")
    run.send_signal(signal.SIGTERM)
    out, err = run.communicate(timeout=120)
    assert run.returncode == 143, out + err
    assert "half_plus_two: run abandoned (nothing was pushed" in out
    repository = ModelRepository(scenario.repository)
    assert repository.versions("half_plus_two") == versions  # nothing from the new span
    assert repository.candidates("half_plus_two") == []
    assert not list((scenario.repository / "half_plus_two").glob(".staging-*"))
    with run_lock.hold(scenario.runs, "half_plus_two") as stale:
        assert stale is None  # released on the way out, not left for the next run to take
    assert scenario.history()[-1]["outcome"] == "abandoned"
