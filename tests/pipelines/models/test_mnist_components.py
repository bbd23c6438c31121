"""The MNIST pipeline's components, as create_components wires them (no run)."""

from __future__ import annotations

import json
import math

from pipelines.models import mnist

FAST = mnist.PROFILES["fast"]


def _components(**kwargs):
    return mnist.create_components(examples_dir="/data", serving_model_dir="/repo/mnist",
                                   profile=FAST, **kwargs)


def test_create_pipeline_runs_the_components_compared_with_the_latest_blessed_model(tmp_path):
    pipeline = mnist.create_pipeline(
        pipeline_name="mnist", pipeline_root=str(tmp_path), examples_dir="/data",
        serving_model_dir="/repo/mnist", metadata_path=str(tmp_path / "m.sqlite"),
        beam_pipeline_args=[], enable_cache=True, profile=FAST)
    by_id = {c.id: c for c in pipeline.components}
    assert sorted(by_id) == sorted([
        "ImportExampleGen", "StatisticsGen", "ImportSchemaGen", "ExampleValidator",
        "AnomaliesGate", "Transform", "Trainer", "latest_blessed_model_resolver", "Evaluator",
        "Pusher"])
    evaluator = by_id["Evaluator"]
    assert evaluator.inputs["baseline_model"].producer_component_id == \
        "latest_blessed_model_resolver"


def test_without_a_baseline_the_evaluator_has_the_absolute_gate_only():
    components = _components(baseline=None)
    assert components.baseline is None
    assert "baseline_model" not in components.evaluator.inputs
    assert [node.id for node in components.nodes] == [
        "ImportExampleGen", "StatisticsGen", "ImportSchemaGen", "ExampleValidator",
        "AnomaliesGate", "Transform", "Trainer", "Evaluator", "Pusher"]


def test_hyperparameters_reach_the_trainer_and_the_schedule_follows_the_epochs():
    components = _components(baseline=None, hyperparameters={"conv1_filters": 16, "epochs": 4})
    config = json.loads(components.trainer.exec_properties["custom_config"])
    assert config["conv1_filters"] == 16 and config["epochs"] == 4
    steps = json.loads(components.trainer.exec_properties["train_args"])["num_steps"]
    assert steps == 4 * math.ceil(FAST.train_limit / FAST.batch_size)
    default = json.loads(_components(baseline=None).trainer.exec_properties["custom_config"])
    assert "conv1_filters" not in default and default["epochs"] == FAST.epochs


def test_the_evaluator_computes_the_confusion_matrix_without_gating_on_it():
    [spec] = mnist.eval_config(FAST).metrics_specs
    by_name = {metric.class_name: metric for metric in spec.metrics}
    assert not by_name[mnist.CONFUSION_MATRIX_PLOT].HasField("threshold")
    assert by_name["SparseCategoricalAccuracy"].HasField("threshold")


def test_train_steps_are_spread_over_the_epochs_of_the_schedule_that_runs():
    """A warm start trains fewer epochs, gentler; when the Trainer falls back to a cold start
    (the base model does not fit) the same train_steps are spread over the cold epochs."""
    from components.mnist_trainer import DEFAULTS, training_schedule

    warm = training_schedule(DEFAULTS, True, 600, None)
    cold = training_schedule(DEFAULTS, False, 600, None)
    assert warm.epochs == DEFAULTS["warm_start_epochs"] < cold.epochs == DEFAULTS["epochs"]
    assert warm.epochs * warm.steps_per_epoch == cold.epochs * cold.steps_per_epoch == 600
    assert (warm.learning_rate, cold.learning_rate) == (DEFAULTS["warm_start_learning_rate"],
                                                        DEFAULTS["learning_rate"])
    one_pass = training_schedule(DEFAULTS, False, None, 1000)
    assert one_pass.steps_per_epoch == math.ceil(1000 / DEFAULTS["batch_size"])
