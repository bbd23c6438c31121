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
    destination = tmp_path / "repo" / "half_plus_two" / "2"
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
    assert sorted(p.name for p in (tmp_path / "repo" / "half_plus_two").iterdir()) == ["1"]
