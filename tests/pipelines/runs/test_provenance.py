"""The static lineage fields `run`, `retrain` and a notebook experiment record: which
profile, sizes and hyperparameters, and which Trainer module made a version."""

from __future__ import annotations

import json

from pipelines.models import half_plus_two, mnist
from pipelines.runs import provenance
from pipelines.config import RunConfig
from serving import lineage


def test_a_fast_run_records_its_profile_sizes_steps_and_trainer():
    config = RunConfig(profile="fast")
    fields = provenance.lineage_fields("mnist", config, mnist.PIPELINE)
    assert fields["pipeline"] == "mnist" and fields["profile"] == "fast"
    assert fields["gates"] == mnist.gates(config)
    sizes = fields["hyperparameters"]
    assert (sizes["train_limit"], sizes["eval_limit"], sizes["epochs"],
            sizes["batch_size"]) == (8000, 1000, 2, 128)
    assert sizes["train_steps"] == 2 * 63 and sizes["eval_steps"] == 8  # ceil(n / 128)
    assert fields["trainer_module"] == "components/mnist_trainer.py"
    assert fields["git_commit"] == provenance.git_state()[0]
    # What the Pusher's custom_config carries: plain JSON, every field in the record.
    record = lineage.Lineage.from_json(json.loads(json.dumps(fields)))
    assert (record.profile, record.hyperparameters, record.trainer_module) == (
        "fast", sizes, "components/mnist_trainer.py")
    assert record.profile_warning("mnist", 3).startswith(
        "mnist version 3 was trained with the fast profile, not the default one (")


def test_the_default_profile_is_recorded_and_not_warned_about():
    fields = provenance.lineage_fields("half_plus_two", RunConfig(), half_plus_two.PIPELINE)
    assert fields["profile"] == "default"
    assert fields["hyperparameters"]["num_examples"] == 2000
    assert fields["hyperparameters"]["train_steps"] == 1000  # a field of this Profile
    assert fields["trainer_module"] == "components/half_plus_two_trainer.py"
    assert lineage.Lineage.from_json(fields).profile_warning("half_plus_two", 1) is None


def test_a_notebook_experiment_is_a_profile_of_its_own_with_its_variant():
    fields = provenance.lineage_fields("mnist_notebook", RunConfig(), mnist.PIPELINE, notebook=True,
                                       hyperparameters={"epochs": 4, "conv1_filters": 16},
                                       run_id="r1")
    assert fields["profile"] == "notebook" and fields["run_id"] == "r1"
    sizes = fields["hyperparameters"]
    assert sizes["epochs"] == 4 and sizes["conv1_filters"] == 16
    assert sizes["train_steps"] == 4 * 469  # the variant's epochs over all 60,000 images
    fast = provenance.lineage_fields("mnist_notebook", RunConfig(profile="fast"), mnist.PIPELINE,
                                     notebook=True)
    assert fast["profile"] == "notebook-fast" and fast["hyperparameters"]["epochs"] == 2


def test_retrain_records_another_trainer_module_and_its_extra_fields(tmp_path):
    module = tmp_path / "my_trainer.py"
    fields = provenance.lineage_fields("half_plus_two_retrain", RunConfig(profile="fast"),
                                       half_plus_two.PIPELINE, trainer_module=module,
                                       infra_validation="skipped: off")
    assert fields["trainer_module"] == str(module)
    assert fields["infra_validation"] == "skipped: off"
    assert fields["hyperparameters"]["warm_start_steps"] == 100
