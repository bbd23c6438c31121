"""The repository Pusher executor: pushes only blessed models, as integer versions."""

from __future__ import annotations

import json

from tfx.types import standard_artifacts

from components.repository_pusher import Executor


def _inputs(model_dir, blessed: bool):
    model = standard_artifacts.Model()
    model.uri = str(model_dir)
    blessing = standard_artifacts.ModelBlessing()
    blessing.uri = str(model_dir.parent / "blessing")
    blessing.set_int_custom_property("blessed", int(blessed))
    return {"model": [model], "model_blessing": [blessing]}


def _push(tmp_path, model_dir, blessed: bool, name: str):
    pushed = standard_artifacts.PushedModel()
    pushed.uri = str(tmp_path / f"pushed_{name}")
    destination = {"filesystem": {"base_directory": str(tmp_path / "repo" / "half_plus_two")}}
    Executor().Do(_inputs(model_dir, blessed), {"pushed_model": [pushed]},
                  {"push_destination": json.dumps(destination), "custom_config": "null"})
    return pushed


def _serving_model_dir(tmp_path, make_fake_saved_model):
    # The Trainer's Model artifact keeps the SavedModel under Format-Serving/.
    return make_fake_saved_model(tmp_path / "model" / "Format-Serving").parent


def test_blessed_models_become_successive_versions(tmp_path, make_fake_saved_model):
    model_dir = _serving_model_dir(tmp_path, make_fake_saved_model)
    first = _push(tmp_path, model_dir, True, "a")
    (model_dir / "Format-Serving" / "saved_model.pb").write_bytes(b"retrained")
    second = _push(tmp_path, model_dir, True, "b")
    assert first.get_int_custom_property("pushed") == 1
    assert first.get_string_custom_property("pushed_version") == "1"
    assert second.get_string_custom_property("pushed_version") == "2"
    # a candidate: where no server polling the model's directory sees it until promoted
    destination = tmp_path / "repo" / "half_plus_two" / ".candidates" / "2"
    assert second.get_string_custom_property("pushed_destination") == str(destination)
    assert (destination / "saved_model.pb").is_file()


def test_unblessed_model_is_not_pushed(tmp_path, make_fake_saved_model):
    pushed = _push(tmp_path, _serving_model_dir(tmp_path, make_fake_saved_model), False, "a")
    assert pushed.get_int_custom_property("pushed") == 0
    assert not (tmp_path / "repo").exists()


def test_the_same_model_is_not_published_twice(tmp_path, make_fake_saved_model):
    model_dir = _serving_model_dir(tmp_path, make_fake_saved_model)
    _push(tmp_path, model_dir, True, "a")
    again = _push(tmp_path, model_dir, True, "b")
    assert again.get_int_custom_property("pushed") == 1
    assert again.get_string_custom_property("pushed_version") == "1"
    assert again.get_int_custom_property("reused_version") == 1
    assert sorted(p.name for p in (tmp_path / "repo" / "half_plus_two" / ".candidates")
                  .iterdir()) == ["1"]


def _examples(tmp_path, span: int, payload: bytes):
    examples = standard_artifacts.Examples()
    examples.uri = str(tmp_path / f"examples-{span}")
    (tmp_path / f"examples-{span}" / "Split-train").mkdir(parents=True)
    (tmp_path / f"examples-{span}" / "Split-train" / "data.gz").write_bytes(payload)
    examples.set_int_custom_property("span", span)
    return examples


def test_each_version_carries_its_lineage_record(tmp_path, make_fake_saved_model):
    from serving import lineage

    model_dir = _serving_model_dir(tmp_path, make_fake_saved_model)
    first = _push(tmp_path, model_dir, True, "a")
    (model_dir / "Format-Serving" / "saved_model.pb").write_bytes(b"retrained")
    base = standard_artifacts.Model()
    base.uri = str(model_dir)  # the first push's model is the base of the second
    inputs = _inputs(model_dir, True)
    inputs.update(examples=[_examples(tmp_path, 2, b"two"), _examples(tmp_path, 1, b"one")],
                  base_model=[base])
    pushed = standard_artifacts.PushedModel()
    pushed.uri = str(tmp_path / "pushed_b")
    config = {"lineage": {"pipeline": "p_retrain", "git_commit": "abc", "git_dirty": False,
                          "gates": {"accuracy": ">= 0.9"}}}
    Executor().Do(inputs, {"pushed_model": [pushed]}, {
        "push_destination": json.dumps({"filesystem": {
            "base_directory": str(tmp_path / "repo" / "half_plus_two")}}),
        "custom_config": json.dumps(config)})

    version_dir = tmp_path / "repo" / "half_plus_two" / ".candidates" / "2"
    record = lineage.read(version_dir)
    assert record.pipeline == "p_retrain" and record.git_commit == "abc"
    assert record.gates == {"accuracy": ">= 0.9"}
    assert record.spans == [1, 2]
    assert len(record.data_sha256) == 64
    assert record.model_uri == str(model_dir)
    # version 1 was published from the same Model artifact: the warm start names it
    assert lineage.read(version_dir.parent / "1").model_uri == str(model_dir)
    assert record.warm_start == {"model_uri": str(model_dir), "version": 1}
    assert first.get_string_custom_property("pushed_version") == "1"


def test_the_data_checksum_changes_with_the_data_only(tmp_path):
    from components.repository_pusher import examples_sha256

    one = examples_sha256([_examples(tmp_path / "a", 1, b"rows")])
    renamed = examples_sha256([_examples(tmp_path / "b", 1, b"rows")])
    changed = examples_sha256([_examples(tmp_path / "c", 1, b"other rows")])
    assert one == renamed != changed


def test_a_run_id_in_the_lineage_config_stands_when_the_orchestrator_gives_none(
        tmp_path, make_fake_saved_model):
    """TFX's InteractiveContext gives executors no run id; a notebook experiment names its
    run in the lineage config, and the version's record keeps it."""
    from serving import lineage

    pushed = standard_artifacts.PushedModel()
    pushed.uri = str(tmp_path / "pushed")
    config = {"lineage": {"pipeline": "mnist_notebook", "run_id": "2026-11-25T10:24:14.788774"}}
    Executor().Do(_inputs(_serving_model_dir(tmp_path, make_fake_saved_model), True),
                  {"pushed_model": [pushed]}, {
        "push_destination": json.dumps({"filesystem": {
            "base_directory": str(tmp_path / "repo" / "mnist")}}),
        "custom_config": json.dumps(config)})

    record = lineage.read(tmp_path / "repo" / "mnist" / ".candidates" / "1")
    assert (record.pipeline, record.run_id) == ("mnist_notebook", "2026-11-25T10:24:14.788774")
    assert record.run_started_at.startswith("2026-11-25T") and record.run_started_at.endswith(
        "+00:00")
