"""One run recorded from its start to its outcome (pipelines/runs/record.py), the part
`run`, `retrain` and the notebook share: a failure's outcome, the facts kept with it, and
what is said when `history` cannot show the run. Real ML Metadata stores; no pipeline runs
here (the e2e tests of `run` and `retrain` do)."""

from __future__ import annotations

import errno
import os

from pipelines import outcomes
from pipelines.config import RunConfig
from pipelines.runs import history, local, metadata
from pipelines.runs.lock import Locked
from pipelines.runs.record import Recorder, failure_outcome

PIPELINE = "half_plus_two_retrain"


def _store(tmp_path, run_id: str):
    path = RunConfig(pipeline_root=tmp_path).metadata_path(PIPELINE)
    path.parent.mkdir(parents=True)
    metadata.create_run(metadata.open_store(path, create=True), run_id)
    return path


def test_a_data_gate_failure_is_its_own_outcome_and_keeps_the_runs_facts(tmp_path):
    store = _store(tmp_path, "run-1")
    recorder = Recorder(PIPELINE, store, {"span": 3}, {"DriftGate": outcomes.DRIFT})
    failed = local.PipelineFailed("DriftGate", ValueError("span 3 drifted"), "run-1")
    assert recorder.failed(failed) is outcomes.DRIFT is failed.outcome
    assert failed.not_recorded == ""
    [run] = history.runs(RunConfig(pipeline_root=tmp_path), "half_plus_two")
    assert (run.outcome, run.span) == ("drift", 3) and "span 3 drifted" in run.reason


def test_any_other_failure_is_an_error_and_one_before_ml_metadata_is_said(tmp_path):
    store = _store(tmp_path, "run-1")
    failed = local.PipelineFailed(None, RuntimeError("no TFX"), None)
    assert Recorder(PIPELINE, store).failed(failed) is outcomes.ERROR
    assert failed.not_recorded == (f"the run is not in `history`: it failed before ML "
                                   f"Metadata ({store}) recorded it")


def test_a_finished_run_is_recorded_with_its_reason(tmp_path):
    store = _store(tmp_path, "run-1")
    recorder = Recorder(PIPELINE, store, {"span": 2})
    assert recorder.end(outcomes.INGESTED, reason="", run_id="run-1", strict=True) == ""
    assert history.last_finished_with(store, 2).outcome == "ingested"
    assert recorder.end(outcomes.NOT_BLESSED, reason="gate", run_id="missing") == ""


def test_the_outcome_of_an_error_that_ends_a_command(tmp_path):
    full = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(tmp_path))
    assert failure_outcome(Locked("mnist", tmp_path, None)) is outcomes.LOCKED
    assert failure_outcome(full) is outcomes.DISK_FULL
    assert failure_outcome(ValueError("bad data")) is outcomes.ERROR
