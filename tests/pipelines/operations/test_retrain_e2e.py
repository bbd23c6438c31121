"""End to end: scheduled retraining of MNIST, span by span, with a real model server up.

One scenario, in order (each test is a step and relies on the ones before it), with the
fast profile, real TFX components, ML Metadata, the embedded model server as a process,
and InfraValidator in the stand-in image where a Docker Engine runs. The run that step 6
kills is a `python -m pipelines retrain` process, as cron starts one; the steps call the same
CLI's main() in the test's process (the same arguments, exit codes and output, without a new
interpreter importing TensorFlow and TFX for each; the half_plus_two scenario runs `retrain`
processes to their end, under `schedule` and to SIGTERM):
1. span 1: pushed as version 1 with no server up (promoted unverified); served.
2. span 2: warm-started from version 1, pushed as version 2, checked as the canary and
   promoted (stable 2, previous 1); lineage and history show spans 1-2.
3. no new span: nothing happens, with its own exit code.
4. span 3 with corrupted examples: stopped by validation; version 2 still served.
5. span 4 with a shifted label distribution: stopped by the drift gate.
6. a second run while one is going is locked out; the first is killed with SIGKILL.
7. the next run takes over the lock; its model (injected training/serving skew) loads as
   the canary but serves garbage: rejected (withdrawn as .rejected-3), stable never left
   version 2, and the server never picks version 3 up again.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pipelines.runs import lock as run_lock
from serving import lifecycle, lineage
from serving.lifecycle.config import UpConfig
from serving.repository import ModelRepository
from toolkit_testing import CACHE, ROOT, run_main, served_labels, wait_until

pytestmark = pytest.mark.e2e

SKEWED_TRAINER = Path(__file__).with_name("skewed_mnist_trainer.py")
EXIT_PUSHED, EXIT_ERROR, EXIT_REJECTED, EXIT_NOTHING_NEW, EXIT_LOCKED, EXIT_DRIFT = \
    0, 1, 4, 5, 6, 7


class Scenario:
    def __init__(self, root: Path):
        self.root = root
        self.data = root / "spans"
        self.repository = root / "repo"
        self.runs = root / "runs"
        self.state = root / "serving"
        self.arrays = None

    def add_span(self, kind: str = "clean") -> int:
        from components import mnist_data, spans
        from pipelines.models import mnist

        if self.arrays is None:
            self.arrays = mnist_data.load_mnist(CACHE / "mnist").arrays
        profile = mnist.PROFILES["fast"]
        number = max(spans.existing_spans(self.data), default=0) + 1
        mnist_data.write_spans(self.arrays, self.data, [number], profile.span_train_size,
                               profile.span_eval_size, kind)
        return number

    def args(self, *extra: str):
        return ("pipelines", "retrain", "mnist", "--data", str(self.data), "--profile", "fast",
                "--repository", str(self.repository), "--pipeline-root", str(self.runs),
                "--cache-dir", str(CACHE), "--state-dir", str(self.state),
                "--timeout", "120", *extra)

    def retrain(self, *extra: str):
        return run_main(*self.args(*extra))

    def history(self):
        return json.loads(run_main("pipelines", "history", "mnist", "--json",
                                   "--pipeline-root", str(self.runs)).stdout)

    def served(self):
        """The versions the server has loaded for mnist (stable, and previous below it)."""
        return lifecycle.status(self.state).models[0].status.available()

    def labels(self):
        """What the server answers for mnist's stable and previous labels, and for a
        request naming no version."""
        return served_labels(lifecycle.current(self.state).addresses.rest_url, "mnist")


@pytest.fixture(scope="module")
def scenario(tmp_path_factory):
    s = Scenario(tmp_path_factory.mktemp("retrain"))
    yield s
    lifecycle.down(s.state, timeout=10)


def _output(result):
    return result.stdout + result.stderr


def test_1_the_first_span_is_pushed_and_served(scenario, request):
    scenario.add_span()
    result = scenario.retrain()
    assert result.returncode == EXIT_PUSHED, _output(result)
    assert "mnist: pushed version 1" in result.stdout
    assert "trained on spans 1" in result.stdout
    assert "epoch 1/2: loss" in result.stdout  # the Trainer's progress, from scratch
    infra = next(line for line in result.stdout.splitlines() if "infra validation:" in line)
    if request.config.getoption("require_docker"):
        assert infra.endswith("infra validation: passed"), _output(result)
    else:
        assert infra.endswith("passed") or "skipped: " in infra
    lifecycle.up(UpConfig(repository=scenario.repository, models=("mnist",),
                          state_dir=scenario.state, backend="process", grpc_port=0,
                          rest_port=0, file_system_poll_seconds=1, wait_seconds=180))
    assert scenario.served() == [1]


def test_2_a_new_span_is_warm_started_pushed_served_and_traceable(scenario):
    scenario.add_span()
    result = scenario.retrain()
    assert result.returncode == EXIT_PUSHED, _output(result)
    assert "mnist: pushed version 2" in result.stdout
    assert "warm-started from version 1" in result.stdout
    assert "trained on spans 1-2" in result.stdout
    assert "serving: version 2 is the canary on " in result.stdout
    assert "(mnist-canary, label canary); sending the smoke batch" in result.stdout
    assert "serving: version 2 is stable (labels " in result.stdout
    assert "serving: smoke check classify accuracy" in result.stdout
    assert scenario.served() == [1, 2]  # previous stays loaded below stable
    assert scenario.labels() == {"stable": 2, "previous": 1, "default": 2}

    record = lineage.read(scenario.repository / "mnist" / "2")
    assert record.spans == [1, 2] and record.pipeline == "mnist_retrain"
    assert record.warm_start["version"] == 1
    assert record.metrics["sparse_categorical_accuracy"] >= 0.9
    assert len(record.data_sha256) == 64 and record.run_id
    status = lifecycle.status(scenario.state).to_json()["models"][0]["versions"]
    assert next(v for v in status if v["version"] == 2)["lineage"]["spans"] == [1, 2]

    runs = scenario.history()
    assert [(r["spans"], r["pushed_version"], r["outcome"]) for r in runs] == [
        ([1], 1, "pushed"), ([1, 2], 2, "pushed")]
    assert runs[1]["run_id"] == record.run_id


def test_3_no_new_span_does_nothing(scenario):
    result = scenario.retrain()
    assert result.returncode == EXIT_NOTHING_NEW, _output(result)
    assert "nothing new: span 2 is the newest span" in _output(result)
    assert ModelRepository(scenario.repository).versions("mnist") == [1, 2]


def test_4_a_corrupted_span_is_stopped_before_training(scenario):
    scenario.add_span("corrupted")
    result = scenario.retrain()
    assert result.returncode == EXIT_ERROR, _output(result)
    assert "component AnomaliesGate failed" in result.stderr
    assert "feature 'label'" in result.stderr and "Unexpectedly large value: 12" in result.stderr
    assert "] Trainer" not in result.stdout
    assert ModelRepository(scenario.repository).versions("mnist") == [1, 2]
    assert scenario.labels() == {"stable": 2, "previous": 1, "default": 2}


def test_5_a_shifted_label_distribution_is_stopped_by_the_drift_gate(scenario):
    scenario.add_span("label-shift")
    result = scenario.retrain()
    assert result.returncode == EXIT_DRIFT, _output(result)
    assert "component DriftGate failed" in result.stderr
    assert "feature 'label'" in result.stderr and "Linfty distance" in result.stderr
    assert "--accept-drift" in result.stderr
    assert ModelRepository(scenario.repository).versions("mnist") == [1, 2]


def test_6_a_concurrent_run_is_locked_out_and_a_killed_run_leaves_the_lock(scenario):
    scenario.add_span()
    first = subprocess.Popen([sys.executable, "-m", *scenario.args()], cwd=ROOT, text=True,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    lock = run_lock.lock_path(scenario.runs, "mnist")
    try:
        def holds_the_lock():
            assert first.poll() is None, "the first run ended before it took the lock"
            return lock.exists() and f'"pid": {first.pid}' in lock.read_text()
        wait_until(holds_the_lock, timeout=120, interval=0.2, what="the first run's lock")
        second = scenario.retrain()
        assert second.returncode == EXIT_LOCKED, _output(second)
        assert f"another run of mnist is in progress (pid {first.pid}" in second.stderr
    finally:
        os.kill(first.pid, signal.SIGKILL)
        first.wait(30)
    assert ModelRepository(scenario.repository).versions("mnist") == [1, 2]


def test_7_a_model_that_serves_garbage_is_rejected_as_the_canary_and_never_served(scenario):
    result = scenario.retrain("--trainer-module", str(SKEWED_TRAINER))
    out = _output(result)
    assert "took over the lock of a run that is gone" in out
    assert result.returncode == EXIT_REJECTED, out
    assert "mnist: pushed version 3" in result.stdout
    assert "serving: version 3 is the canary on " in result.stdout
    assert "serving: version 3 served below the gate" in result.stdout
    assert "predict accuracy" in result.stdout
    assert "serving: version 3 withdrawn to " in result.stdout
    assert "; stable stays 2" in result.stdout
    assert "error: mnist version 3 was rejected (version 3 served below the gate" in \
        result.stderr and "stable stays version 2" in result.stderr
    assert "rolled back" not in out and "rolling back" not in out
    repository = ModelRepository(scenario.repository)
    assert repository.versions("mnist") == [1, 2]
    assert repository.candidates("mnist") == []
    assert repository.rejected_versions("mnist") == [3]
    assert "served below the gate" in lineage.read(
        scenario.repository / "mnist" / ".rejected-3").rejected["reason"]
    assert scenario.labels() == {"stable": 2, "previous": 1, "default": 2}
    time.sleep(3)  # several polls of the repository later, version 3 is still not back
    status = lifecycle.status(scenario.state)
    assert status.models[0].status.available() == [1, 2] and status.healthy
    assert status.models[0].record.canary is None
    runs = scenario.history()
    assert runs[-1]["outcome"] == "rejected" and runs[-1]["pushed_version"] == 3
    assert [r["outcome"] for r in runs[2:4]] == ["anomalies", "drift"]
