"""Source/Loader/Manager on real SavedModels: policies, labels, failures, version switches."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import numpy as np
import pytest
from google.protobuf import text_format

from serving.model_server.core.manager import Manager, State
from serving.model_server.core.source import FileSystemSource, VersionPolicy, default_policy
from serving.model_server.errors import Code, ServingError
from serving.model_server.servable.loader import Loader


def policy(text: str) -> VersionPolicy:
    return text_format.Parse(text, VersionPolicy())


class Harness:
    """A manager fed by a source that is polled by hand, recording every state change."""

    def __init__(self, base: Path, pol: VersionPolicy = None, name: str = "m",
                 loader_factory=Loader, **manager_options):
        self.name = name
        self.base = base
        self.events = []
        self.manager = Manager(loader_factory,
                               listener=lambda m, v, s, e, path: self.events.append((v, s)),
                               **manager_options)
        # a periodic source's rules, but never started: this harness polls it by hand
        self.source = FileSystemSource(self.manager.set_aspired_versions,
                                       poll_wait_seconds=3600)
        self.source.set_models({name: (str(base), pol or default_policy())})

    def poll(self):
        self.source.poll_once()
        self.settle()

    def settle(self, timeout=30):
        def settled():
            return all(s.state not in (State.START, State.LOADING)
                       for s in self.manager.version_states(self.name))
        assert self.manager.wait_for(settled, timeout), self.manager.version_states(self.name)

    def states(self):
        return {s.version: s.state for s in self.manager.version_states(self.name)}

    def predict(self, **kw):
        """(version, y) of serving_default at x = 1.0 on the version `kw` resolves to."""
        servable = self.manager.resolve(self.name, **kw)
        sig = servable.signature_defs["serving_default"]
        y = sig.outputs["y"].name
        outputs = servable.run({sig.inputs["x"].name: np.array([1.0], np.float32)}, (y,))
        return servable.version, float(outputs[y][0])


@pytest.fixture
def harnesses():
    made = []

    def make(*a, **kw):
        h = Harness(*a, **kw)
        made.append(h)
        return h
    yield make
    for h in made:
        h.source.stop()
        h.manager.close()


def test_default_policy_serves_only_the_latest_version(tmp_path, make_version, harnesses):
    make_version(tmp_path, 1)
    make_version(tmp_path, 2, "hp2_v2")
    h = harnesses(tmp_path)
    h.settle()
    assert h.states() == {2: State.AVAILABLE}
    assert h.predict() == (2, 3.5)
    assert h.predict(version=2) == (2, 3.5)
    with pytest.raises(ServingError) as e:
        h.manager.resolve("m", version=1)
    assert e.value.code == Code.NOT_FOUND
    assert e.value.message == "Servable not found for request: Specific(m, 1)"


@pytest.mark.parametrize("text,expected", [
    ("latest { num_versions: 2 }", {2, 3}),
    ("all {}", {1, 2, 3}),
    ("specific { versions: 1 versions: 3 }", {1, 3}),
])
def test_version_policies(tmp_path, make_version, harnesses, text, expected):
    for v in (1, 2, 3):
        make_version(tmp_path, v)
    h = harnesses(tmp_path, policy(text))
    h.settle()
    assert {v for v, s in h.states().items() if s == State.AVAILABLE} == expected
    assert h.predict()[0] == max(expected)


def test_specific_policy_ignores_newer_versions(tmp_path, make_version, harnesses):
    make_version(tmp_path, 1)
    h = harnesses(tmp_path, policy("specific { versions: 1 }"))
    h.settle()
    make_version(tmp_path, 2, "hp2_v2")
    h.poll()
    assert h.states() == {1: State.AVAILABLE}


def test_new_version_is_available_before_the_old_one_unloads(tmp_path, publish, harnesses):
    assert publish(tmp_path, "m") == 1
    h = harnesses(tmp_path / "m")
    h.settle()
    assert h.predict() == (1, 2.5)
    h.events.clear()
    assert publish(tmp_path, "m", "hp2_v2") == 2
    h.poll()
    assert h.states() == {2: State.AVAILABLE, 1: State.END}
    assert h.events.index((2, State.AVAILABLE)) < h.events.index((1, State.UNLOADING))
    assert h.events[-2:] == [(1, State.UNLOADING), (1, State.END)]
    assert h.predict() == (2, 3.5)


def test_failing_version_reports_error_and_keeps_serving_the_old_one(tmp_path, make_version,
                                                                     harnesses):
    from saved_models import write_broken_version

    make_version(tmp_path, 1)
    h = harnesses(tmp_path)
    h.settle()
    write_broken_version(tmp_path / "2")
    h.poll()
    statuses = {s.version: s for s in h.manager.version_states("m")}
    assert statuses[2].state == State.END and statuses[2].error is not None
    assert "Could not parse the SavedModel" in statuses[2].error.message  # for GetModelStatus
    assert statuses[1].state == State.AVAILABLE
    assert h.predict() == (1, 2.5)
    # A good version after the broken one replaces both.
    make_version(tmp_path, 3, "hp2_v2")
    h.poll()
    assert h.states() == {3: State.AVAILABLE, 2: State.END, 1: State.END}
    assert h.predict() == (3, 3.5)


def test_half_written_version_is_not_loaded_until_complete(
        tmp_path, make_version, harnesses, model_templates):
    make_version(tmp_path, 1)
    h = harnesses(tmp_path)
    h.settle()
    partial = tmp_path / "2"
    shutil.copytree(model_templates / "hp2_v2" / "variables", partial / "variables")
    h.poll()
    assert h.states() == {1: State.AVAILABLE}  # not even attempted, still serving 1
    shutil.copy(model_templates / "hp2_v2" / "saved_model.pb", partial / "saved_model.pb")
    h.poll()
    assert h.states() == {2: State.AVAILABLE, 1: State.END}
    assert h.predict() == (2, 3.5)


def test_incomplete_version_that_stops_changing_is_loaded_and_says_what_is_wrong(
        tmp_path, make_version, harnesses, model_templates, monkeypatch):
    """saved_model.pb with no variables/ that nobody completes: after the settle time the
    loader tries it, and its error says what is missing (a startup fails on it)."""
    from serving.model_server.core import source

    monkeypatch.setattr(source, "INCOMPLETE_SETTLE_SECONDS", 0.3)
    h = harnesses(tmp_path)
    (tmp_path / "1").mkdir()
    shutil.copy(model_templates / "hp2_v1" / "saved_model.pb", tmp_path / "1")
    h.poll()
    h.poll()
    assert h.states() == {}  # not settled yet: it may still be being copied
    time.sleep(0.35)
    h.poll()
    (status,) = h.manager.version_states("m")
    assert status.state == State.END and status.error.code == Code.FAILED_PRECONDITION
    assert "has no variables/ directory" in status.error.message
    assert h.manager.initial_load_settled("m")[1]  # what fails a startup


def test_failed_version_is_retried_when_its_files_change(
        tmp_path, make_version, harnesses, model_templates):
    """A non-atomic copy caught half-way (graph there, variables/ still empty) fails to
    load; once the copy finishes, the changed files make the manager try again."""
    make_version(tmp_path, 1)
    h = harnesses(tmp_path)
    h.settle()
    partial = tmp_path / "2"
    (partial / "variables").mkdir(parents=True)
    shutil.copy(model_templates / "hp2_v2" / "saved_model.pb", partial / "saved_model.pb")
    h.poll()
    assert h.states() == {2: State.END, 1: State.AVAILABLE}
    h.poll()
    assert h.states() == {2: State.END, 1: State.AVAILABLE}  # unchanged files: no retry
    shutil.copytree(model_templates / "hp2_v2" / "variables", partial / "variables",
                    dirs_exist_ok=True)
    h.poll()
    assert h.states() == {2: State.AVAILABLE, 1: State.END}
    assert h.predict() == (2, 3.5)


class FlakyLoader(Loader):
    """Fails its first `failures` loads (storage not ready), then loads for real."""

    def __init__(self, *args, failures: int, attempts: list):
        super().__init__(*args)
        self.failures = failures
        self.attempts = attempts

    def load(self):
        self.attempts.append(self.version)
        if len(self.attempts) <= self.failures:
            raise ServingError(Code.UNAVAILABLE, "storage not ready")
        return super().load()


@pytest.mark.parametrize("retries,available", [(2, True), (1, False)])
def test_failed_load_is_retried_max_num_load_retries_times(tmp_path, make_version, harnesses,
                                                           retries, available):
    make_version(tmp_path, 1)
    attempts = []
    h = harnesses(tmp_path, loader_factory=lambda n, v, p: FlakyLoader(
        n, v, p, failures=2, attempts=attempts), max_load_retries=retries,
        load_retry_interval=0.05)
    h.settle()
    assert len(attempts) == retries + 1
    if available:
        assert h.states() == {1: State.AVAILABLE} and h.predict() == (1, 2.5)
    else:
        (status,) = h.manager.version_states("m")
        assert status.state == State.END and status.error.message == "storage not ready"


def test_a_load_retry_wait_ends_when_the_version_is_no_longer_wanted(tmp_path, make_version,
                                                                     harnesses):
    import time

    make_version(tmp_path, 1)
    attempts = []
    h = harnesses(tmp_path, loader_factory=lambda n, v, p: FlakyLoader(
        n, v, p, failures=99, attempts=attempts), max_load_retries=5, load_retry_interval=60)
    assert h.manager.wait_for(lambda: attempts, 30)
    shutil.rmtree(tmp_path / "1")
    started = time.monotonic()
    h.poll()  # no version aspired any more: the minute-long retry wait is cut short
    assert time.monotonic() - started < 10
    assert attempts == [1]
    assert h.states() == {1: State.END}


def test_empty_base_path_then_first_version(tmp_path, make_version, harnesses):
    h = harnesses(tmp_path / "missing")
    h.settle()
    with pytest.raises(ServingError) as e:
        h.manager.resolve("m")
    assert e.value.code == Code.NOT_FOUND
    assert e.value.message == "Servable not found for request: Latest(m)"
    make_version(tmp_path / "missing", 1)
    h.poll()
    assert h.predict() == (1, 2.5)


def test_deleted_versions_unload(tmp_path, make_version, harnesses):
    make_version(tmp_path, 1)
    h = harnesses(tmp_path)
    h.settle()
    shutil.rmtree(tmp_path / "1")
    h.poll()
    assert h.states() == {1: State.END}


def test_labels(tmp_path, make_version, harnesses):
    make_version(tmp_path, 1)
    make_version(tmp_path, 2, "hp2_v2")
    h = harnesses(tmp_path, policy("all {}"))
    h.settle()
    h.manager.set_labels("m", {"stable": 1, "canary": 2})
    assert h.predict(label="stable") == (1, 2.5)
    assert h.predict(label="canary") == (2, 3.5)
    with pytest.raises(ServingError) as e:
        h.manager.resolve("m", label="nope")
    assert e.value.code == Code.INVALID_ARGUMENT
    assert "Unrecognized servable version label: nope" in e.value.message
    with pytest.raises(ServingError) as e:
        h.manager.set_labels("m", {"stable": 1, "next": 7})
    assert e.value.code == Code.FAILED_PRECONDITION
    assert "version 7 of model m" in e.value.message
    assert h.manager.labels("m") == {"stable": 1, "canary": 2}  # unchanged on failure
    # --allow_version_labels_for_unavailable_models: only a *new* label may point ahead.
    h.manager.set_labels("m", {"stable": 1, "canary": 2, "next": 7}, allow_unavailable=True)
    with pytest.raises(ServingError):
        h.manager.set_labels("m", {"stable": 8}, allow_unavailable=True)


def test_select_versions_latest_n_picks_highest():
    from serving.model_server.core.source import select_versions

    assert select_versions(policy("latest { num_versions: 2 }"), [3, 1, 10, 2]) == [3, 10]
    assert select_versions(default_policy(), []) == []
