"""Retention for the pipeline root (pipelines/retention.py) on a real ML Metadata store laid
out as TFX lays out runs: a `pipeline_run` context per run, executions associated with it,
artifacts with directories under the pipeline root and input/output events."""

from __future__ import annotations

import time

import pytest
from ml_metadata.proto import metadata_store_pb2

from pipelines import metadata, retention

DAY = 86400.0


class Store:
    """A store with helpers to add runs the way TFX records them."""

    def __init__(self, root):
        self.root = root
        self.path = root / "metadata.sqlite"
        self.store = metadata.open_store(self.path, readonly=False, create=True)
        self.artifact_type = self.store.put_artifact_type(
            metadata_store_pb2.ArtifactType(name="Model"))
        self.execution_type = self.store.put_execution_type(
            metadata_store_pb2.ExecutionType(name="Trainer"))

    def artifact(self, name: str) -> int:
        directory = self.root / "Trainer" / "model" / name
        directory.mkdir(parents=True)
        (directory / "saved_model.pb").write_bytes(b"x" * 1000)
        [artifact_id] = self.store.put_artifacts([metadata_store_pb2.Artifact(
            type_id=self.artifact_type, uri=str(directory),
            state=metadata_store_pb2.Artifact.LIVE)])
        return artifact_id

    def run(self, run_id: str, outputs=(), inputs=()) -> None:
        context = metadata.create_run(self.store, run_id)
        [execution_id] = self.store.put_executions([metadata_store_pb2.Execution(
            type_id=self.execution_type)])
        events = [metadata_store_pb2.Event(artifact_id=a, execution_id=execution_id,
                                           type=metadata_store_pb2.Event.OUTPUT)
                  for a in outputs]
        events += [metadata_store_pb2.Event(artifact_id=a, execution_id=execution_id,
                                            type=metadata_store_pb2.Event.INPUT)
                   for a in inputs]
        self.store.put_events(events)
        metadata.add_to_run(self.store, context, [execution_id])


@pytest.fixture
def store(tmp_path):
    return Store(tmp_path)


def test_old_runs_lose_their_artifacts_recent_and_protected_ones_stay(store):
    old, reused, protected_model, newest = (store.artifact(n) for n in ("1", "2", "3", "4"))
    unattached = store.artifact("5")
    store.run("run-1", outputs=[old, reused])
    store.run("run-2", outputs=[protected_model])
    store.run("run-3", outputs=[newest], inputs=[reused])  # a newer run used it (cache, base)
    uris = {a.id: a.uri for a in store.store.get_artifacts()}
    later = time.time() + 60 * DAY
    decisions = {d.artifact_id: d for d in retention.plan(
        store.path, keep_runs=1, keep_days=30, protected_uris=[uris[protected_model]],
        now=later)}
    assert not decisions[old].keep
    assert decisions[reused].keep and "newest 1" in decisions[reused].why
    assert decisions[protected_model].keep and "repository" in decisions[protected_model].why
    assert decisions[newest].keep
    assert decisions[unattached].keep and "not part of any run" in decisions[unattached].why

    removed = retention.apply(store.path, decisions.values())
    assert [d.artifact_id for d in removed] == [old]
    [marked] = metadata.open_store(store.path).get_artifacts_by_id([old])
    assert marked.state == metadata_store_pb2.Artifact.DELETED  # TFX's cache refuses it
    assert marked.custom_properties[retention.DELETED_REASON].string_value == "retention"
    assert not (store.root / "Trainer" / "model" / "1").exists()
    assert (store.root / "Trainer" / "model" / "2").exists()
    # a second pass finds nothing more to remove, and no LIVE artifact lost its files
    again = retention.plan(store.path, keep_runs=1, keep_days=30,
                           protected_uris=[uris[protected_model]], now=later)
    assert all(d.keep for d in again)
    for artifact in metadata.open_store(store.path).get_artifacts():
        if artifact.state == metadata_store_pb2.Artifact.LIVE:
            assert (store.root / "Trainer" / "model").joinpath(artifact.uri).exists()


def test_young_runs_keep_their_artifacts_whatever_their_number(store):
    first = store.artifact("1")
    store.run("run-1", outputs=[first])
    store.run("run-2", outputs=[store.artifact("2")])
    decisions = retention.plan(store.path, keep_runs=1, keep_days=30)
    assert all(d.keep for d in decisions)


def test_no_store_no_decisions_and_bad_keep_runs(tmp_path, store):
    assert retention.plan(tmp_path / "none.sqlite") == []
    with pytest.raises(ValueError):
        retention.plan(store.path, keep_runs=0)
