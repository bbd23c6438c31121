"""The rollout record (serving/rollouts.py) and the models.config rendered from it
(serving/lifecycle/model_config.py), without a server: stable/previous bookkeeping, the
versions and labels a record serves, the locked update, and the config of each step of a
change (load, label, unload)."""

from __future__ import annotations

import json
import multiprocessing

import pytest
from google.protobuf import text_format
from tensorflow_serving.config import model_server_config_pb2

from serving import rollouts
from serving.lifecycle import model_config
from serving.rollouts import Rollout


def record_of(*promoted: int) -> Rollout:
    record = Rollout(model="m")
    for version in promoted:
        record.make_stable(version, verified=True)
    return record


# ---- the record ----

def test_make_stable_moves_the_old_stable_to_previous():
    record = record_of(1)
    assert (record.stable, record.previous, record.served) == (1, None, [1])
    record.canary = 2
    record.make_stable(2, verified=False)
    assert (record.stable, record.previous, record.canary) == (2, 1, None)
    assert record.served == [1, 2] and record.stable_verified is False
    record.make_stable(2, verified=True)  # the same version again: only verified changes
    assert (record.stable, record.previous, record.stable_verified) == (2, 1, True)
    record.make_stable(2, verified=False)
    assert record.stable_verified is True  # once verified, it stays verified
    record.make_stable(3, verified=True)
    assert (record.stable, record.previous, record.served) == (3, 2, [1, 2, 3])


def test_roll_back_takes_previous_from_the_stables_before_the_target():
    record = record_of(1, 2, 3)
    record.roll_back(2)
    # previous: the stable before 2, never 3 (the version rolled back from)
    assert (record.stable, record.previous, record.stable_verified) == (2, 1, True)
    record = record_of(1, 2, 3)
    record.roll_back(1)
    assert (record.stable, record.previous) == (1, None)
    record = record_of(1, 2)
    record.roll_back(1)
    assert (record.stable, record.previous, record.served) == (1, None, [1, 2])
    record.make_stable(2, verified=True)  # forward again: a version served before
    assert (record.stable, record.previous, record.served) == (2, 1, [1, 2])


def test_loaded_versions_never_include_a_previous_above_stable():
    """A request naming no version gets the highest loaded version of the entry: that must
    be stable, so a previous above stable is neither loaded nor labelled."""
    record = record_of(1, 3, 2)  # 3 was stable before 2 (a candidate promoted late)
    assert (record.stable, record.previous) == (2, 3)
    assert record.loaded_versions() == [2]
    assert record.labels() == {"stable": 2}
    record = record_of(1, 2)
    assert record.loaded_versions() == [1, 2]
    assert record.labels() == {"stable": 2, "previous": 1}
    assert Rollout(model="m").loaded_versions() == [] and Rollout(model="m").labels() == {}
    canary = Rollout(model="m", stable=1, canary=2)
    assert canary.loaded_versions() == [1] and canary.labels() == {"stable": 1}


def test_the_record_round_trips_through_json_with_a_hold(tmp_path):
    with rollouts.update(tmp_path / "m", "m") as record:
        record.make_stable(1, verified=True)
        record.hold = rollouts.Hold(by="ops", at="2026-01-01T00:00:00+00:00", reason="freeze")
        record.note("hold", 1, "ops", "freeze")
    loaded = rollouts.load(tmp_path / "m", "m")
    assert loaded == record and loaded.held
    assert loaded.hold.describe() == "held by ops at 2026-01-01T00:00:00+00:00: freeze"
    assert json.loads((tmp_path / "m" / rollouts.RECORD_FILE).read_text())["format"] == 1
    assert rollouts.load(tmp_path / "other", "other") == Rollout(model="other")


def test_update_writes_nothing_when_its_body_raises(tmp_path):
    with pytest.raises(ZeroDivisionError):
        with rollouts.update(tmp_path / "m", "m") as record:
            record.make_stable(1, verified=True)
            1 / 0
    assert not (tmp_path / "m" / rollouts.RECORD_FILE).exists()
    with rollouts.update(tmp_path / "m", "m") as record:
        record.make_stable(1, verified=True)
    before = (tmp_path / "m" / rollouts.RECORD_FILE).read_text()
    with pytest.raises(RuntimeError):
        with rollouts.update(tmp_path / "m", "m") as record:
            record.make_stable(2, verified=True)
            raise RuntimeError("the server refused the change")
    assert (tmp_path / "m" / rollouts.RECORD_FILE).read_text() == before
    assert rollouts.load(tmp_path / "m", "m").stable == 1


def test_an_unreadable_record_says_how_to_fix_it(tmp_path):
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / rollouts.RECORD_FILE).write_text("{not json")
    with pytest.raises(rollouts.RolloutError, match="cannot be read.*promote"):
        rollouts.load(tmp_path / "m", "m")


def _note_many(model_dir: str, who: str, count: int, barrier) -> None:
    barrier.wait()
    for i in range(count):
        with rollouts.update(model_dir, "m") as record:
            record.note("test", i, who)


def test_concurrent_updates_from_two_processes_take_turns(tmp_path):
    """Each read-modify-write sees the other's writes: no event is lost."""
    context = multiprocessing.get_context("spawn")
    barrier, count = context.Barrier(2), 60
    processes = [context.Process(target=_note_many,
                                 args=(str(tmp_path / "m"), who, count, barrier))
                 for who in ("a", "b")]
    for process in processes:
        process.start()
    for process in processes:
        process.join(120)
        assert process.exitcode == 0
    events = rollouts.load(tmp_path / "m", "m").events
    assert len(events) == 2 * count, "an update was lost: the record was not locked"
    for who in ("a", "b"):
        assert [e["version"] for e in events if e["by"] == who] == list(range(count))


# ---- the rendered config ----

BASE = {"m": "/models/m", "n": "/models/n"}


def entries(config) -> dict:
    return {c.name: (c.base_path, list(c.model_version_policy.specific.versions)
                     or f"latest {c.model_version_policy.latest.num_versions}",
                     dict(c.version_labels))
            for c in config.model_config_list.config}


def test_rendered_config_with_a_canary_is_tf_serving_s_own_proto():
    """Stable 3, previous 2, canary 4: parses into TF Serving's ModelServerConfig and
    round-trips; the canary is an entry of its own over .candidates."""
    record = Rollout(model="m", stable=3, previous=2, canary=4)
    text = model_config.render(BASE, {"m": record}, ["m", "n"])
    parsed = text_format.Parse(text, model_server_config_pb2.ModelServerConfig())
    assert text_format.MessageToString(parsed) == text
    # n has nothing stable: no entry (ReloadConfig would wait for its first version)
    assert entries(parsed) == {"m": ("/models/m", [2, 3], {"stable": 3, "previous": 2}),
                               "m-canary": ("/models/m/.candidates", [4], {"canary": 4})}
    assert {c.model_platform for c in parsed.model_config_list.config} == {"tensorflow"}
    assert model_config.canary_entry("m") == "m-canary"
    assert model_config.to_text(model_config.build(BASE, {}, [])).strip() == \
        "model_config_list {\n}"


def steps(old: Rollout, new: Rollout) -> list:
    """The three configs of a change, as serving/lifecycle/rollout.py applies them."""
    return [entries(model_config.build(BASE, {"m": new}, ["m"], also_loaded={"m": old},
                                       labels_from={"m": old})),
            entries(model_config.build(BASE, {"m": new}, ["m"], also_loaded={"m": old},
                                       labels_from={"m": new})),
            entries(model_config.build(BASE, {"m": new}, ["m"]))]


def test_a_promote_loads_then_labels_then_unloads():
    old = Rollout(model="m", stable=2, previous=1, served=[1, 2])
    new = Rollout(model="m", stable=2, previous=1, served=[1, 2])
    new.make_stable(3, verified=True)
    load, label, unload = steps(old, new)
    assert load == {"m": ("/models/m", [1, 2, 3], {"stable": 2, "previous": 1})}
    assert label == {"m": ("/models/m", [1, 2, 3], {"stable": 3, "previous": 2})}
    assert unload == {"m": ("/models/m", [2, 3], {"stable": 3, "previous": 2})}


def test_a_rollback_moves_the_label_before_it_unloads():
    old = record_of(1, 2)
    new = record_of(1, 2)
    new.roll_back(1)
    load, label, unload = steps(old, new)
    assert load == {"m": ("/models/m", [1, 2], {"stable": 2, "previous": 1})}
    assert label == {"m": ("/models/m", [1, 2], {"stable": 1})}
    assert unload == {"m": ("/models/m", [1], {"stable": 1})}


def test_a_canary_is_labelled_once_loaded_and_unlabelled_before_it_unloads():
    old = record_of(1)
    new = record_of(1)
    new.canary = 2
    load, label, unload = steps(old, new)
    assert load == {"m": ("/models/m", [1], {"stable": 1}),
                    "m-canary": ("/models/m/.candidates", [2], {})}
    assert label == unload == {"m": ("/models/m", [1], {"stable": 1}),
                               "m-canary": ("/models/m/.candidates", [2], {"canary": 2})}
    load, label, unload = steps(new, old)  # the canary dropped
    assert load == {"m": ("/models/m", [1], {"stable": 1}),
                    "m-canary": ("/models/m/.candidates", [2], {"canary": 2})}
    assert label == {"m": ("/models/m", [1], {"stable": 1}),
                     "m-canary": ("/models/m/.candidates", [2], {})}
    assert unload == {"m": ("/models/m", [1], {"stable": 1})}


def test_the_first_stable_version_adds_the_model_s_entry():
    old, new = Rollout(model="m"), record_of(1)
    load, label, unload = steps(old, new)
    assert load == {"m": ("/models/m", [1], {})}
    assert label == unload == {"m": ("/models/m", [1], {"stable": 1})}
