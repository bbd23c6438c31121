"""The notebook's API, piece by piece (the notebook's e2e test runs it whole)."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from tensorflow_model_analysis.proto import metrics_for_slice_pb2

from pipelines import outcomes
from pipelines.runs import provenance
from pipelines.notebook import experiment
from pipelines.config import RunConfig
from pipelines.runs.local import RunResult
from serving import lifecycle, rollouts
from serving.lifecycle import health, rollout
from serving.lifecycle.config import Addresses
from serving.lifecycle.state import ServerState
from serving.repository import ModelRepository
from toolkit_testing import publish_copy, publish_fake, record_finished_run, write_fake_saved_model


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
    assert comparison.summary() == "blessed (compared with version 3, the stable one)."
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


# ---- the version compared with, the push's outcome, promote ----

def _stable(repository, version):
    with rollouts.update(repository.model_dir("mnist"), "mnist") as record:
        record.make_stable(version, verified=True)


def test_the_baseline_is_the_stable_version_of_the_rollout_record(tmp_path):
    repository = ModelRepository(tmp_path / "repo")
    assert experiment.current_version(repository) is None
    publish_fake(repository, "mnist", b"one")
    publish_fake(repository, "mnist", b"two")
    assert experiment.current_version(repository) == 2  # no record: the newest, as `up` adopts

    _stable(repository, 1)  # rolled back, say: version 2 is published but not served
    assert experiment.current_version(repository) == 1

    _stable(repository, 7)  # a record naming a version that is gone: as `up`, the newest
    assert experiment.current_version(repository) == 2


def test_a_pushed_variant_is_recorded_as_a_candidate():
    def result(**fields):
        return RunResult(pipeline_name="mnist_notebook", model_name="mnist", wall_seconds=1.0,
                         components=[], **fields)

    assert experiment.push_outcome(result(pushed=True, version=2)) == outcomes.CANDIDATE
    assert experiment.push_outcome(result(pushed=True, version=2, push_cached=True)) == \
        outcomes.UNCHANGED
    assert experiment.push_outcome(result(pushed=False)) == outcomes.NOT_BLESSED


def _experiment(tmp_path, version=None, lines=None):
    """An Experiment past its push (the Pusher's result: `version` pushed, None: nothing),
    over tmp_path/repo, with its serving state dir tmp_path/serving."""
    result = None if version is None else RunResult(
        pipeline_name="mnist_notebook", model_name="mnist", wall_seconds=1.0, components=[],
        pushed=True, version=version)
    return experiment.Experiment(
        config=RunConfig(pipeline_root=tmp_path / "runs", repository=tmp_path / "repo"),
        hyperparameters={"conv1_filters": 16}, run_id="experiment-1", context=None,
        components=None, baseline_version=None, serving_state_dir=tmp_path / "serving",
        log=(lines if lines is not None else []).append, started=0.0, last_execution_id=0,
        result=result)


def _candidate(repository, template=None, payload=b"candidate"):
    """Publish a candidate the Pusher's way: a copy of `template`, else a fake SavedModel."""
    with repository.publish("mnist", candidate=True) as publication:
        if template is None:
            write_fake_saved_model(publication.staging, payload)
        else:
            shutil.copytree(template, publication.staging, dirs_exist_ok=True)
    return publication.version


def test_with_no_server_promote_makes_the_candidate_stable_for_the_next_up(tmp_path):
    repository = ModelRepository(tmp_path / "repo")
    publish_fake(repository, "mnist", b"one")
    _stable(repository, 1)
    version = _candidate(repository)
    lines = []
    exp = _experiment(tmp_path, version, lines)
    assert exp.pushed_candidate() == version == 2
    assert "version 2 is a candidate, not served: exp.promote(), or `python -m serving " \
           "promote --model mnist --version 2`" in exp.summary()

    change = exp.promote()

    assert (change.record.stable, change.record.previous, change.server) == (2, 1, None)
    assert not change.record.stable_verified  # no server checked it
    assert repository.versions("mnist") == [1, 2] and repository.candidates("mnist") == []
    assert rollouts.load(repository.model_dir("mnist"), "mnist").stable == 2
    assert exp.pushed_candidate() is None
    assert "is a candidate" not in exp.summary()
    assert lines == ["mnist version 2 is stable (no server is up for this repository: the "
                     "next `up` serves it)"]


def test_with_nothing_pushed_there_is_nothing_to_promote_or_to_serve(tmp_path):
    exp = _experiment(tmp_path)
    with pytest.raises(RuntimeError, match="nothing to promote"):
        exp.promote()
    with pytest.raises(RuntimeError, match="nothing to serve"):
        exp.served_predictions(np.zeros((1, 28, 28), np.uint8))
    assert not (tmp_path / "serving").exists()  # no server was started for nothing


@pytest.mark.e2e
def test_the_candidate_is_tried_as_the_canary_and_served_only_once_promoted(
        tmp_path, saved_model_templates):
    """A real server (the process backend, as the notebook starts one): the pushed candidate
    answers through mnist-canary, label canary, and stays a candidate; held, the answer
    comes from stable; promoted, it is stable and answers requests naming no version."""
    import saved_models

    repository = ModelRepository(tmp_path / "repo")
    publish_copy(repository.root, "mnist", saved_model_templates / "mnist")  # version 1
    other = saved_models.export_mnist_like(tmp_path / "other-weights", seed=1)
    version = _candidate(repository, other)
    lines = []
    exp = _experiment(tmp_path, version, lines)
    images = np.random.default_rng(0).integers(0, 256, (64, 28, 28), dtype=np.uint8)
    try:
        rest_url = exp.serve().addresses.rest_url
        stable = _experiment(tmp_path).served_predictions(images)
        assert (stable.version, stable.entry, stable.label) == (1, "mnist", None)

        rollout.hold("mnist", repository.root, reason="release freeze")
        held = exp.served_predictions(images)
        assert (held.version, held.from_canary) == (1, False)
        assert "mnist is held" in held.note and "release freeze" in held.note
        assert held.classes.tolist() == stable.classes.tolist()
        assert "predictions come from the stable version" in lines[-1]
        rollout.release("mnist", repository.root)

        canary = exp.served_predictions(images)
        assert (canary.version, canary.entry, canary.label) == (2, "mnist-canary", "canary")
        assert canary.describe().startswith("mnist candidate version 2 (as the canary")
        assert (canary.classes != stable.classes).any()  # another model answered
        record = rollouts.load(repository.model_dir("mnist"), "mnist")
        assert (record.stable, record.canary) == (1, None)
        assert [(e["action"], e["version"]) for e in record.events
                if e["action"] in ("canary", "drop canary")] == [("canary", 2), ("drop canary", 2)]
        assert repository.candidates("mnist") == [2] and repository.versions("mnist") == [1]
        assert health.get_model_status(rest_url, "mnist").available() == [1]
        assert not health.get_model_status(rest_url, "mnist-canary").available()

        change = exp.promote()
        assert (change.record.stable, change.record.previous) == (2, 1)
        assert change.verified == {"stable": 2, "previous": 1}
        assert change.server == rest_url
        assert repository.versions("mnist") == [1, 2] and repository.candidates("mnist") == []
        served = exp.served_predictions(images)
        assert (served.version, served.label) == (2, None)  # a request naming no version
        assert served.classes.tolist() == canary.classes.tolist()
    finally:
        lifecycle.down(tmp_path / "serving")
