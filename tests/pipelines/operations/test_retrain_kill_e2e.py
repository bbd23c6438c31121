"""End to end: a half_plus_two retrain killed with SIGKILL at every step - during ingest,
training, evaluation, publish, the canary's check and the promotion - with a model server
up. After each kill: nothing half-written where a server looks, stable unchanged (the
record, and what the server answers), the run lock free; the next run takes over the lock,
records the killed run as `killed` in history, and the last one finishes and promotes.
Steps run in order and rely on each other.

The runs are processes forked from one helper process that imported TensorFlow and TFX
once (tests/pipelines/operations/kill_retrain.py), each killed (its process group, with SIGKILL) when
its step's marker appears; TFX's cache makes each next kill point cheap."""

from __future__ import annotations

import fcntl
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from pipelines.runs import lock as run_lock
from serving import lifecycle
from serving.lifecycle.config import UpConfig
from serving.repository import ModelRepository, is_complete_saved_model
from test_retrain_half_plus_two_e2e import MODEL, Scenario
from toolkit_testing import ROOT, run_main, served_labels

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def scenario(tmp_path_factory):
    """A server up, version 1 trained on span 1 (in this process), span 2 waiting."""
    s = Scenario(tmp_path_factory.mktemp("retrain_kill"))
    lifecycle.up(UpConfig(repository=s.repository, models=(MODEL,), state_dir=s.state,
                          backend="process", grpc_port=0, rest_port=0,
                          file_system_poll_seconds=1, wait_seconds=180))
    s.add_span()
    result = run_main("pipelines", "retrain", *s.options())
    assert result.returncode == 0, result.stdout + result.stderr
    s.add_span()
    yield s
    lifecycle.down(s.state, timeout=10)


class Killer:
    """The helper process (kill_retrain.py): forks a retrain and kills it with SIGKILL at
    a marker."""

    def __init__(self, scenario: Scenario):
        self.scenario = scenario
        self.process = subprocess.Popen(
            [sys.executable, str(Path(__file__).with_name("kill_retrain.py"))], cwd=ROOT,
            text=True, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            env={**os.environ, "PYTHONPATH": f"{ROOT}:{ROOT / 'tests'}"})
        assert json.loads(self.process.stdout.readline()) == {"ready": True}
        self.count = 0

    def retrain(self, marker: dict, timeout: float = 300) -> dict:
        """One `retrain` run, killed at `marker`; the answer and the run's output ("out")."""
        self.count += 1
        out = self.scenario.root / f"killed-run-{self.count}.out"
        self.process.stdin.write(json.dumps({
            "argv": ["retrain", *self.scenario.options()], "out": str(out),
            "log_dir": str(self.scenario.runs / "half_plus_two_retrain" / "logs"),
            "marker": marker, "timeout": timeout}) + "\n")
        self.process.stdin.flush()
        answer = json.loads(self.process.stdout.readline())
        answer["out"] = out.read_text()
        return answer


@pytest.fixture(scope="module")
def killer(scenario):
    k = Killer(scenario)
    yield k
    k.process.stdin.close()
    k.process.wait(30)


def _log_marker(component: str) -> dict:
    return {"text": f"Component {component} is running", "in": "log"}


def _created_marker(scenario, name: str) -> dict:
    return {"created_in": str(scenario.repository / MODEL), "name": name}


class Killed:
    """What the kill tests carry from one to the next."""
    stable = None
    pids: list = []


def _assert_nothing_half_done(scenario, killed: dict, stable: int):
    """After a kill: no partial version anywhere a server looks, stable unchanged and
    served, the run lock free (the kernel released it) and still naming the dead run."""
    assert killed["killed"], killed
    repository = ModelRepository(scenario.repository)
    for version in repository.versions(MODEL):
        assert is_complete_saved_model(repository.version_path(MODEL, version))
    for version in repository.candidates(MODEL):
        assert is_complete_saved_model(repository.candidate_path(MODEL, version))
    assert scenario.record().stable == stable
    lock = run_lock.lock_path(scenario.runs, MODEL)
    fd = os.open(lock, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # free: raises BlockingIOError if not
        assert json.loads(os.pread(fd, 65536, 0))["pid"] == killed["pid"]
    finally:
        os.close(fd)
    Killed.pids.append(killed["pid"])


def _assert_took_over(killed: dict, pid: int):
    assert f"took over the lock of a run that is gone (pid {pid} " in killed["out"], killed["out"]


def test_sigkill_during_ingest(scenario, killer):
    """Span 2 waits, unjudged: a run for span 3 ingests span 2 first; killed there."""
    Killed.stable = scenario.record().stable
    scenario.add_span()
    Killed.newest = max(int(p.name.split("-")[1]) for p in scenario.data.iterdir())
    killed = killer.retrain(_log_marker("StatisticsGen"))
    assert f"span {Killed.newest - 1}: not ingested yet, and within the window: ingesting " \
           f"it first" in killed["out"], killed
    _assert_nothing_half_done(scenario, killed, Killed.stable)
    assert served_labels(scenario.rest_url(), MODEL)["default"] == Killed.stable


def test_sigkill_during_training(scenario, killer):
    killed = killer.retrain(_log_marker("Trainer"))
    _assert_took_over(killed, Killed.pids[-1])
    # the killed ingest judged nothing: span 2 is ingested again, through the gates
    assert f"span {Killed.newest - 1}: not ingested yet" in killed["out"], killed["out"]
    assert re.search(r"recorded run \S+ as killed", killed["out"]), killed["out"]
    _assert_nothing_half_done(scenario, killed, Killed.stable)
    runs = scenario.history()
    assert [r["outcome"] for r in runs if r["span"] == Killed.newest - 1][-1] == "ingested"
    assert [r["outcome"] for r in runs].count("killed") == 1  # the ingest killed before


def test_sigkill_during_evaluation(scenario, killer):
    killed = killer.retrain(_log_marker("Evaluator"))
    _assert_took_over(killed, Killed.pids[-1])
    _assert_nothing_half_done(scenario, killed, Killed.stable)


def test_sigkill_during_publish(scenario, killer):
    """Killed while the Pusher copies into its staging directory."""
    killed = killer.retrain(_created_marker(scenario, r"\.staging-\d+-[0-9a-f]+"))
    _assert_took_over(killed, Killed.pids[-1])
    _assert_nothing_half_done(scenario, killed, Killed.stable)
    assert ModelRepository(scenario.repository).candidates(MODEL) == []


def test_sigkill_during_the_canarys_check(scenario, killer):
    killed = killer.retrain({"text": "(half_plus_two-canary, label canary); sending the "
                                     "smoke batch", "in": "out"})
    _assert_took_over(killed, Killed.pids[-1])
    assert "staging" not in " ".join(os.listdir(scenario.repository / MODEL))  # reclaimed
    _assert_nothing_half_done(scenario, killed, Killed.stable)
    Killed.canary = scenario.record().canary
    assert ModelRepository(scenario.repository).candidates(MODEL) == [Killed.canary]
    assert served_labels(scenario.rest_url(), MODEL)["stable"] == Killed.stable


def test_sigkill_during_the_promotion(scenario, killer):
    """The next run drops the dead run's canary, loads it again, and is killed once the
    promotion has moved it into the published versions, before the record says stable."""
    killed = killer.retrain(_created_marker(scenario, r"\d+"))
    _assert_took_over(killed, Killed.pids[-1])
    assert f"dropped version {Killed.canary}, the canary of a run that died" in killed["out"]
    assert "stays a candidate" not in killed["out"]  # no longer refused as another's canary
    _assert_nothing_half_done(scenario, killed, Killed.stable)
    # cut short: renamed into the published versions, the record still says canary
    Killed.promoted = int(killed["marker"])
    assert scenario.record().canary == Killed.promoted
    assert Killed.promoted in ModelRepository(scenario.repository).versions(MODEL)


def test_the_next_run_after_the_kills_finishes_and_history_shows_them(scenario, killer):
    """The last run drops the canary whose promotion was cut short (back to the candidates)
    and pushes its own model (the killed runs' Evaluator blessed theirs: the latest blessed
    model, this run's baseline and warm start, changed, so it trains again)."""
    finished = killer.retrain({"text": "never printed", "in": "out"})
    assert not finished["killed"] and finished["exit"] == 0, finished
    _assert_took_over(finished, Killed.pids[-1])
    assert f"dropped version {Killed.promoted}, the canary of a run that died" in \
        finished["out"]
    version = int(re.search(r"half_plus_two: pushed version (\d+)", finished["out"]).group(1))
    assert f"serving: version {version} is stable (labels " in finished["out"]
    repository = ModelRepository(scenario.repository)
    assert version in repository.versions(MODEL)
    if version != Killed.promoted:  # (the same model again would be that version, promoted)
        assert Killed.promoted in repository.candidates(MODEL)
        assert Killed.promoted not in repository.versions(MODEL)
    assert not [p for p in (scenario.repository / MODEL).iterdir()
                if p.name.startswith(".staging-")]
    record = scenario.record()
    assert (record.stable, record.previous, record.canary) == (version, Killed.stable, None)
    assert served_labels(scenario.rest_url(), MODEL) == {
        "stable": version, "previous": Killed.stable, "default": version}
    runs = scenario.history()
    assert "incomplete" not in [r["outcome"] for r in runs]
    killed = [r for r in runs if r["outcome"] == "killed"]
    assert len(killed) >= 6 and all("died before the run ended" in r["reason"]
                                    for r in killed)
    assert (runs[-1]["outcome"], runs[-1]["span"], runs[-1]["pushed_version"]) == \
        ("pushed", Killed.newest, version)
    with run_lock.hold(scenario.runs, MODEL) as stale:
        assert stale is None  # the finished run released it
