"""End to end: half_plus_two retraining from CSV spans, on a schedule, verified through a
server, and abandoned cleanly on SIGTERM. Steps run in order and rely on each other.

The schedule starts each retrain as a process, and the run stopped by SIGTERM is one; the
other commands (make-spans, history, the retrain checked through the server) call the CLI's
main() in the test's process: the same arguments, exit code and output."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from pipelines import run_lock
from serving import lifecycle, lineage
from serving.lifecycle.config import UpConfig
from serving.repository import ModelRepository
from toolkit_testing import ROOT, run_cli, run_main, served_labels, wait_until

pytestmark = pytest.mark.e2e


class Scenario:
    def __init__(self, root: Path):
        self.data = root / "spans"
        self.repository = root / "repo"
        self.runs = root / "runs"
        self.state = root / "serving"

    def add_span(self) -> None:
        result = run_main("pipelines", "make-spans", "half_plus_two", "--out", str(self.data),
                          "--profile", "fast")
        assert result.returncode == 0, result.stderr

    def options(self):
        return ["half_plus_two", "--data", str(self.data), "--profile", "fast",
                "--repository", str(self.repository), "--pipeline-root", str(self.runs),
                "--state-dir", str(self.state), "--infra-validation", "off"]

    def history(self):
        return json.loads(run_main("pipelines", "history", "half_plus_two", "--json",
                                   "--pipeline-root", str(self.runs)).stdout)


@pytest.fixture(scope="module")
def scenario(tmp_path_factory):
    s = Scenario(tmp_path_factory.mktemp("retrain_hp2"))
    yield s
    lifecycle.down(s.state, timeout=10)


def test_the_schedule_runs_retrain_until_told_to_stop(scenario):
    scenario.add_span()
    scenario.add_span()  # two spans waiting: the first run ingests span 1 into its window
    result = run_cli("pipelines", "schedule", *scenario.options(), "--every", "1s",
                     "--max-runs", "2", timeout=900)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "span 1: not ingested yet, and within the window: ingesting it first" in result.stdout
    assert "half_plus_two: pushed version 1" in result.stdout
    assert "trained on spans 1-2" in result.stdout
    assert "schedule: run 1 ended: pushed / candidate / unchanged (exit 0)" in result.stdout
    assert "schedule: run 2 ended: nothing new (exit 5)" in result.stdout
    assert [(r["span"], r["outcome"]) for r in scenario.history()] == [(1, "ingested"),
                                                                       (2, "pushed")]


def test_a_retrained_version_is_checked_through_the_server(scenario):
    lifecycle.up(UpConfig(repository=scenario.repository, models=("half_plus_two",),
                          state_dir=scenario.state, backend="process", grpc_port=0,
                          rest_port=0, file_system_poll_seconds=1, wait_seconds=180))
    scenario.add_span()
    result = run_main("pipelines", "retrain", *scenario.options())
    assert result.returncode == 0, result.stdout + result.stderr
    assert "warm-started from version 1" in result.stdout
    assert "serving: version 2 is the canary on " in result.stdout
    assert "serving: version 2 is stable (labels " in result.stdout
    assert "smoke check regress mean_squared_error" in result.stdout
    assert "predict mean_squared_error" in result.stdout
    report = lifecycle.status(scenario.state)
    assert report.models[0].status.available() == [1, 2]  # previous stays loaded below
    assert served_labels(lifecycle.current(scenario.state).addresses.rest_url,
                         "half_plus_two") == {"stable": 2, "previous": 1, "default": 2}
    record = lineage.read(scenario.repository / "half_plus_two" / "2")
    assert record.spans == [1, 2, 3]
    # how it was trained, and the warning wherever it is served
    assert (record.profile, record.trainer_module) == ("fast",
                                                       "components/half_plus_two_trainer.py")
    assert record.hyperparameters["warm_start_steps"] == 100
    assert any(warning.startswith("half_plus_two version 2 was trained with the fast profile")
               for warning in report.models[0].warnings), report.models[0].warnings


def test_sigterm_abandons_a_run_cleanly(scenario):
    scenario.add_span()
    log_dir = scenario.runs / "half_plus_two_retrain" / "logs"
    before = set(log_dir.iterdir())
    run = subprocess.Popen([sys.executable, "-m", "pipelines", "retrain", *scenario.options()],
                           cwd=ROOT, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)

    def under_way():  # the pipeline is under way: the run's log names a component
        assert run.poll() is None, f"the run ended with {run.returncode} before it could be stopped"
        logs = set(log_dir.iterdir()) - before
        return logs and "Component StatisticsGen is running" in next(iter(logs)).read_text()
    wait_until(under_way, timeout=300, interval=0.2, what="the run under way")
    run.send_signal(signal.SIGTERM)
    out, err = run.communicate(timeout=120)
    assert run.returncode == 143, out + err
    assert "half_plus_two: run abandoned (nothing was pushed" in out
    repository = ModelRepository(scenario.repository)
    assert repository.versions("half_plus_two") == [1, 2]  # nothing from span 4
    assert repository.candidates("half_plus_two") == []
    assert not list((scenario.repository / "half_plus_two").glob(".staging-*"))
    with run_lock.hold(scenario.runs, "half_plus_two") as stale:
        assert stale is None  # released on the way out, not left for the next run to take
    assert scenario.history()[-1]["outcome"] == "abandoned"
