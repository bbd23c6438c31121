"""The run history: every pipeline of a model, notebook experiments included, from ML Metadata."""

from __future__ import annotations

from pipelines import outcomes
from pipelines.runs import history
from pipelines.config import RunConfig
from pipelines.runs.local import RunResult
from toolkit_testing import record_finished_run


def _result(pipeline: str, version: int, accuracy: float) -> RunResult:
    return RunResult(pipeline_name=pipeline, model_name="mnist", wall_seconds=1.0, components=[],
                     blessed=True, metrics={"sparse_categorical_accuracy": accuracy},
                     pushed=True, version=version)


def test_notebook_experiments_are_listed_beside_the_pipelines_runs(tmp_path):
    record_finished_run(tmp_path, "mnist", "run-1", outcomes.PUSHED, _result("mnist", 1, 0.99))
    record_finished_run(tmp_path, "mnist_notebook", "experiment-1", outcomes.PUSHED,
                        _result("mnist_notebook", 2, 0.993),
                        hyperparameters={"conv1_filters": 16})
    record_finished_run(tmp_path, "mnist_notebook", "experiment-2", outcomes.NOT_BLESSED)

    records = history.runs(RunConfig(pipeline_root=tmp_path), "mnist")

    assert [(r.pipeline, r.run_id, r.outcome, r.pushed_version) for r in records] == [
        ("mnist", "run-1", "pushed", 1),
        ("mnist_notebook", "experiment-1", "pushed", 2),
        ("mnist_notebook", "experiment-2", "not blessed", None)]
    assert records[1].hyperparameters == {"conv1_filters": 16}
    assert records[0].hyperparameters == {}
    assert records[1].metrics == {"sparse_categorical_accuracy": 0.993}


def test_the_spans_shown_are_those_trained_on_else_the_one_ingested(tmp_path):
    record = history.RunRecord(pipeline="p", run_id="r", started="", outcome="pushed")
    assert record.shown_spans() == []
    record.span = 4
    assert record.shown_spans() == [4]
    record.spans = [2, 3, 4]
    assert record.shown_spans() == [2, 3, 4]
