"""The notebook's API, piece by piece (the notebook's e2e test runs it whole)."""

from __future__ import annotations

import numpy as np
import pytest
from tensorflow_model_analysis.proto import metrics_for_slice_pb2

from pipelines import experiment, outcomes, provenance
from pipelines.config import RunConfig
from pipelines.local_runner import RunResult
from serving import lifecycle
from serving.lifecycle.config import Addresses
from serving.lifecycle.state import ServerState
from serving.repository import ModelRepository
from toolkit_testing import publish_fake, record_finished_run


def test_relative_paths_start_at_the_project_root(tmp_path):
    config = experiment.project_config("fast", repository="model_repository",
                                       pipeline_root=str(tmp_path / "runs"))
    assert config.repository == provenance.PROJECT_ROOT / "model_repository"
    assert config.pipeline_root == tmp_path / "runs"
    assert config.cache_dir == provenance.PROJECT_ROOT / ".cache"
    assert config.profile == "fast"
    with pytest.raises(ValueError, match="profile must be one of"):
        experiment.project_config("quick")


def test_paths_left_unset_are_the_commands_defaults(tmp_path, monkeypatch):
    """The notebook's None parameters follow TOOLKIT_* as `python -m pipelines` does."""
    monkeypatch.setenv("TOOLKIT_REPOSITORY", str(tmp_path / "repo"))
    monkeypatch.delenv("TOOLKIT_PIPELINE_ROOT", raising=False)
    monkeypatch.delenv("TOOLKIT_STATE_DIR", raising=False)
    config = experiment.project_config("fast")
    assert config.repository == tmp_path / "repo"
    assert config.pipeline_root == provenance.PROJECT_ROOT / "tfx_runs"
    state_dir = experiment.project_path(None, experiment.defaults.STATE_DIR)
    assert state_dir == provenance.PROJECT_ROOT / ".cache" / "serving"


def test_an_unknown_hyperparameter_is_refused_before_anything_runs(tmp_path):
    config = RunConfig(pipeline_root=tmp_path / "runs", repository=tmp_path / "repo")
    with pytest.raises(ValueError, match=r"conv_filters.*conv1_filters"):
        experiment.start(config, {"conv_filters": 16})
    assert not (tmp_path / "runs").exists() and not (tmp_path / "repo").exists()


def _plot(pairs):
    """TFMA's MultiClassConfusionMatrixPlot with one (actual, predicted, count) per entry."""
    plot = metrics_for_slice_pb2.MultiClassConfusionMatrixAtThresholds()
    matrix = plot.matrices.add()
    for actual, predicted, count in pairs:
        matrix.entries.add(actual_class_id=actual, predicted_class_id=predicted,
                           num_weighted_examples=count)
    return plot


def test_confusion_counts_and_accuracy_per_class_from_tfma_s_plot():
    counts = experiment.confusion_counts(_plot([(0, 0, 8), (0, 2, 2), (1, 1, 5), (2, -1, 4)]),
                                         classes=3)
    assert counts.tolist() == [[8, 0, 2], [0, 5, 0], [0, 0, 0]]  # -1: no class predicted
    assert experiment.class_accuracy(counts).tolist() == [0.8, 1.0, 0.0]


def _comparison(baseline_version, blessed=True):
    return experiment.Comparison(
        blessed=blessed, failures=[] if blessed else ["accuracy fails >= 0.99"],
        baseline_version=baseline_version,
        metrics={"sparse_categorical_accuracy": {"candidate": 0.95, "baseline": 0.9,
                                                 "change": 0.05}},
        gates={"sparse_categorical_accuracy": ">= 0.9"},
        confusion={"candidate": np.diag([9.0, 8.0]), "baseline": np.array([[9.0, 1], [2, 6]])})


def test_a_comparison_names_the_version_it_was_compared_with():
    comparison = _comparison(3)
    table = comparison.table()
    assert table.columns.tolist() == ["variant", "version 3", "change", "gate"]
    assert table.loc["sparse_categorical_accuracy", "version 3"] == 0.9
    assert comparison.per_class_accuracy().columns.tolist() == ["variant", "version 3"]
    assert comparison.per_class_accuracy()["version 3"].tolist() == [0.9, 0.75]
    assert comparison.summary() == "blessed (compared with version 3, the current one)."
    assert _comparison(3, blessed=False).summary().startswith(
        "NOT blessed: accuracy fails >= 0.99")


def test_with_no_version_yet_the_summary_says_only_the_absolute_gate_applied():
    comparison = _comparison(None)
    comparison.confusion.pop("baseline")
    assert comparison.table().columns.tolist() == ["variant", "gate"]
    assert "compared with nothing" in comparison.summary()
    assert "only the absolute gate" in comparison.summary()


def test_a_version_is_imported_as_a_model_artifact_once_per_content(tmp_path):
    repository = ModelRepository(tmp_path / "repo")
    first = publish_fake(repository, "mnist", b"one")
    imported = experiment.import_version(repository, first, tmp_path / "runs")
    assert (imported / "Format-Serving" / "saved_model.pb").read_bytes() == b"one"
    assert experiment.import_version(repository, first, tmp_path / "runs") == imported

    # another repository's version 1 is another model: not mistaken for this one
    other = ModelRepository(tmp_path / "other")
    publish_fake(other, "mnist", b"two")
    assert experiment.import_version(other, 1, tmp_path / "runs") != imported


def _server(repository):
    return ServerState(backend="process", handle="1", name="", image="",
                       repository=str(repository), models=("mnist",),
                       addresses=Addresses("127.0.0.1", 1, 2), state_dir="/state")


def test_a_server_over_another_repository_is_refused(tmp_path):
    experiment.check_serves(_server(tmp_path / "repo"), tmp_path / "repo")
    with pytest.raises(lifecycle.LifecycleError, match="serves .*other, not .*repo"):
        experiment.check_serves(_server(tmp_path / "other"), tmp_path / "repo")


def test_the_history_frame_lists_experiments_beside_the_pipeline_runs(tmp_path):
    result = RunResult(pipeline_name="mnist_notebook", model_name="mnist", wall_seconds=1.0,
                       components=[], blessed=True, pushed=True, version=2,
                       metrics={"sparse_categorical_accuracy": 0.99})
    record_finished_run(tmp_path, "mnist", "run-1", outcomes.ERROR)
    record_finished_run(tmp_path, "mnist_notebook", "experiment-1", outcomes.PUSHED, result,
                        hyperparameters={"learning_rate": 0.001, "conv1_filters": 16})

    frame = experiment.history_frame(RunConfig(pipeline_root=tmp_path))

    assert frame["pipeline"].tolist() == ["mnist", "mnist_notebook"]
    assert frame["outcome"].tolist() == ["error", "pushed"]
    assert frame["hyperparameters"].tolist() == ["", "conv1_filters=16, learning_rate=0.001"]
    assert frame["version"].isna().tolist() == [True, False]
    assert frame["version"].iloc[1] == 2
    assert frame["sparse_categorical_accuracy"].iloc[1] == 0.99
