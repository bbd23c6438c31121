"""Retention for the pipeline root (pipelines/operations/retention.py) on a real ML Metadata store laid
out as TFX lays out runs: a `pipeline_run` context per run, executions associated with it,
artifacts with directories under the pipeline root and input/output events."""

from __future__ import annotations

import json
import sqlite3
import time

import pytest
from ml_metadata.proto import metadata_store_pb2

from pipelines import outcomes
from pipelines.runs import history, metadata
from pipelines.operations import retention
from toolkit_testing import run_main

DAY = 86400.0


class Store:
    """A store with helpers to add runs the way TFX records them."""

    def __init__(self, root):
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
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

    def run(self, run_id: str, outputs=(), inputs=(), cache_key: str = "",
            padding: int = 0) -> int:
        """A run of one execution (COMPLETE, as TFX leaves a successful one); `cache_key`:
        also in that `execution_cache` context, as TFX's cache records it; `padding`: a
        property of that many bytes (the size of what TFX records per execution)."""
        context = metadata.create_run(self.store, run_id)
        execution = metadata_store_pb2.Execution(
            type_id=self.execution_type, last_known_state=metadata_store_pb2.Execution.COMPLETE)
        if padding:
            execution.custom_properties["padding"].string_value = "x" * padding
        [execution_id] = self.store.put_executions([execution])
        step = metadata_store_pb2.Event.Path.Step
        events = [metadata_store_pb2.Event(
            artifact_id=a, execution_id=execution_id, type=metadata_store_pb2.Event.OUTPUT,
            path=metadata_store_pb2.Event.Path(steps=[step(key="model"), step(index=0)]))
            for a in outputs]
        events += [metadata_store_pb2.Event(artifact_id=a, execution_id=execution_id,
                                            type=metadata_store_pb2.Event.INPUT)
                   for a in inputs]
        self.store.put_events(events)
        metadata.add_to_run(self.store, context, [execution_id])
        if cache_key:
            cache = self.cache_context(cache_key)
            self.store.put_attributions_and_associations([], [metadata_store_pb2.Association(
                execution_id=execution_id, context_id=cache.id)])
        return execution_id

    def cached(self, run_id: str, outputs, cache_key: str) -> None:
        """A CACHED execution in run `run_id`: TFX's record of a component whose outputs
        (another run's) its cache handed out."""
        [run] = [c for c in metadata.run_contexts(self.store) if c.name == run_id]
        [execution_id] = self.store.put_executions([metadata_store_pb2.Execution(
            type_id=self.execution_type, last_known_state=metadata_store_pb2.Execution.CACHED)])
        step = metadata_store_pb2.Event.Path.Step
        self.store.put_events([metadata_store_pb2.Event(
            artifact_id=a, execution_id=execution_id, type=metadata_store_pb2.Event.OUTPUT,
            path=metadata_store_pb2.Event.Path(steps=[step(key="model"), step(index=0)]))
            for a in outputs])
        metadata.add_to_run(self.store, run, [execution_id])
        self.store.put_attributions_and_associations([], [metadata_store_pb2.Association(
            execution_id=execution_id, context_id=self.cache_context(cache_key).id)])

    def cache_context(self, key: str) -> metadata_store_pb2.Context:
        type_id = self.store.put_context_type(metadata_store_pb2.ContextType(
            name="execution_cache"))
        found = self.store.get_context_by_type_and_name("execution_cache", key)
        if found is not None:
            return found
        [context_id] = self.store.put_contexts([metadata_store_pb2.Context(
            type_id=type_id, name=key)])
        return self.store.get_contexts_by_id([context_id])[0]


@pytest.fixture
def store(tmp_path):
    # laid out as the pipeline root of `retrain half_plus_two`: tmp/runs/<pipeline>/
    return Store(tmp_path / "runs" / "half_plus_two_retrain")


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


def chain(store, runs=12, protected_run=2, padding=40_000):
    """`runs` runs of one execution each, run i training on run i-1's model (its input),
    each in a cache context of its own, with its outcome and span recorded as `retrain`
    records them. Returns the artifact ids by run number."""
    models = {}
    for i in range(1, runs + 1):
        models[i] = store.artifact(str(i))
        store.run(f"run-{i}", outputs=[models[i]], inputs=[models[i - 1]] if i > 1 else [],
                  cache_key=f"fingerprint-{i}", padding=padding)
        history.record_run(store.path, f"run-{i}", outcomes.PUSHED, span=i)
    return models


def rows(path, table):
    connection = sqlite3.connect(path)
    try:
        return connection.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
    finally:
        connection.close()


def test_old_runs_lose_their_rows_kept_runs_lineage_and_cache_stay(store, tmp_path):
    from tfx.orchestration import metadata as tfx_metadata
    from tfx.orchestration.portable import cache_utils
    from tfx.orchestration.portable.mlmd import context_lib

    models = chain(store)
    protected = store.store.get_artifacts_by_id([models[2]])[0].uri
    before = store.path.stat().st_size
    newest_context = max(c.id for c in store.store.get_contexts())
    decisions = retention.plan(store.path, keep_runs=3, keep_days=30,
                               protected_uris=[protected], now=time.time() + 60 * DAY)
    runs = {r.run_id: r for r in decisions.runs}
    gone = [f"run-{i}" for i in (1, 3, 4, 5, 6, 7, 8)]
    assert sorted(r for r, d in runs.items() if not d.keep) == sorted(gone)
    assert "newest 3" in runs["run-12"].why and "stays" in runs["run-9"].why  # run 10's input
    assert "stays" in runs["run-2"].why  # the Model behind a version in the repository

    removed = retention.apply(store.path, decisions)
    assert sorted(removed.pruned.runs) == sorted(gone)
    # runs 3-7's models go; run 1's and run 8's rows stay, DELETED: kept runs 2 and 9
    # trained on them (their lineage)
    assert removed.pruned.rows["executions"] == 7 and removed.pruned.rows["artifacts"] == 5
    assert removed.pruned.rows["contexts"] == 14  # 7 runs and their 7 cache contexts
    # the file shrank (VACUUM), by about the share of the runs that went
    assert store.path.stat().st_size < before * 0.6
    assert removed.pruned.bytes_after == store.path.stat().st_size

    mlmd = metadata.open_store(store.path)
    assert [c.name for c in metadata.run_contexts(mlmd)] == [
        "run-2", "run-9", "run-10", "run-11", "run-12"]
    assert not mlmd.get_artifacts_by_id([models[i] for i in (3, 4, 5, 6, 7)])
    kept = {a.id: a for a in mlmd.get_artifacts()}
    assert kept[models[2]].state == metadata_store_pb2.Artifact.LIVE  # lineage: its run too
    assert kept[models[1]].state == kept[models[8]].state == metadata_store_pb2.Artifact.DELETED
    [run_2] = [c for c in metadata.run_contexts(mlmd) if c.name == "run-2"]
    [trainer] = mlmd.get_executions_by_context(run_2.id)
    assert {e.artifact_id for e in mlmd.get_events_by_execution_ids([trainer.id])} == {
        models[1], models[2]}
    executions = {e.id for e in mlmd.get_executions()}
    # no event refers to a deleted artifact or execution
    for event in mlmd.get_events_by_execution_ids(executions):
        assert event.artifact_id in kept and event.execution_id in executions
    assert rows(store.path, "EventPath WHERE event_id NOT IN (SELECT id FROM Event)") == 0
    assert rows(store.path, "ExecutionProperty") == 5
    assert rows(store.path, "Association") == 10 and rows(store.path, "Attribution") == 0

    # TFX's cache: a kept execution's outputs are still handed out; a component whose
    # cached execution went finds nothing (its context made again) and runs again
    connection = tfx_metadata.sqlite_metadata_connection_config(str(store.path))
    with tfx_metadata.Metadata(connection) as handle:
        cached = cache_utils.get_cached_outputs(
            handle, context_lib.register_context_if_not_exists(
                handle, "execution_cache", "fingerprint-10"))
        assert [a.id for a in cached["model"]] == [models[10]]
        again = context_lib.register_context_if_not_exists(
            handle, "execution_cache", "fingerprint-5")
        assert again.id > newest_context  # ids are never reused
        assert cache_utils.get_cached_outputs(handle, again) is None

    # history reads what is left; retrain's "nothing new" check still finds the newest span
    result = run_main("pipelines", "history", "half_plus_two", "--json", "--pipeline-root",
                      str(tmp_path / "runs"), "--repository", str(tmp_path / "repo"))
    assert result.returncode == 0, result.stderr
    assert [r["run_id"] for r in json.loads(result.stdout)] == [
        "run-2", "run-9", "run-10", "run-11", "run-12"]
    assert history.last_finished_with(store.path, 12).run_id == "run-12"
    # a second pass finds nothing more
    again = retention.plan(store.path, keep_runs=3, keep_days=30, protected_uris=[protected],
                           now=time.time() + 60 * DAY)
    assert all(d.keep for d in again) and all(r.keep for r in again.runs)


def test_gc_dry_run_shows_the_rows_that_would_go_and_apply_deletes_them(store, tmp_path):
    chain(store, runs=5, padding=0)
    args = ["gc", "half_plus_two", "--pipeline-root", str(tmp_path / "runs"), "--repository",
            str(tmp_path / "repo"), "--keep-runs", "2", "--keep-days", "0"]
    before = rows(store.path, "Context")
    dry = run_main("pipelines", *args)
    assert dry.returncode == 0, dry.stderr
    assert "2 run(s)' rows would go (contexts 4, executions 2, events 3, artifacts 1" \
        in dry.stdout, dry.stdout  # run 2's model stays a row: run 3 trained on it
    assert "would delete the rows of run run-1:" in dry.stdout
    assert "keep run run-3: its output Model" in dry.stdout
    assert rows(store.path, "Context") == before and (store.root / "Trainer").exists()
    done = run_main("pipelines", *args, "--apply", "--json")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)["artifacts"]["half_plus_two_retrain"]
    assert report["pruned"]["runs"] == ["run-1", "run-2"]
    assert [r["run_id"] for r in report["runs"] if not r["keep"]] == ["run-1", "run-2"]
    assert rows(store.path, "Context") == before - 4


def test_an_unknown_schema_keeps_its_rows_with_a_warning(store, capsys, monkeypatch):
    # a store of another ml-metadata (a newer one migrates it to its schema as it opens it):
    # here, this code knowing only an older schema than the store's 10
    chain(store, runs=3, padding=0)
    monkeypatch.setattr(retention, "KNOWN_SCHEMA_VERSIONS", (9,))
    decisions = retention.plan(store.path, keep_runs=1, keep_days=0)
    removed = retention.apply(store.path, decisions)
    assert len(removed) == 1 and not (store.root / "Trainer" / "model" / "1").exists()
    assert "schema version is 10, not one this toolkit knows (9)" in removed.pruned.skipped
    assert "schema version is 10" in capsys.readouterr().err
    assert rows(store.path, "Context") == 6  # 3 runs, 3 cache contexts: nothing deleted


def test_abandoned_outputs_go_imported_ones_and_the_newest_spans_run_stay(store, tmp_path):
    rejected = store.artifact("rejected")
    [artifact] = store.store.get_artifacts_by_id([rejected])
    metadata.abandon(store.store, [artifact], "anomalies")
    imported_dir = tmp_path / "repo" / "half_plus_two" / "1"
    imported_dir.mkdir(parents=True)
    [imported] = store.store.put_artifacts([metadata_store_pb2.Artifact(
        type_id=store.artifact_type, uri=str(imported_dir),
        state=metadata_store_pb2.Artifact.LIVE)])
    store.run("run-1", outputs=[rejected, imported])
    history.record_run(store.path, "run-1", outcomes.ANOMALIES, span=7)
    store.run("run-2", outputs=[store.artifact("newest-span")])
    history.record_run(store.path, "run-2", outcomes.PUSHED, span=8)
    store.run("run-3", outputs=[store.artifact("3")])  # failed before its span was known
    history.record_run(store.path, "run-3", outcomes.ERROR)
    for i in (4, 5):
        store.run(f"run-{i}")
        history.record_run(store.path, f"run-{i}", outcomes.ERROR)
    decisions = retention.plan(store.path, keep_runs=1, keep_days=0)
    by_id = {d.artifact_id: d for d in decisions}
    assert not by_id[rejected].keep
    assert by_id[imported].keep and "outside" in by_id[imported].why
    runs = {r.run_id: r for r in decisions.runs}
    assert runs["run-2"].keep and "newest span" in runs["run-2"].why
    assert not runs["run-1"].keep  # its import stays, but is not its own
    retention.apply(store.path, decisions)
    assert imported_dir.exists() and not (store.root / "Trainer" / "model" / "rejected").exists()
    mlmd = metadata.open_store(store.path)
    assert [c.name for c in metadata.run_contexts(mlmd)] == ["run-2", "run-5"]
    assert mlmd.get_artifacts_by_id([imported])[0].state == metadata_store_pb2.Artifact.LIVE


def test_what_a_run_only_had_from_the_cache_does_not_hold_its_rows(store):
    """ImportSchemaGen's output, made once and handed out by TFX's cache to every run after:
    the run that made it keeps its rows (the schema is LIVE), the runs that were handed it
    lose theirs, and the cache still hands it out."""
    from tfx.orchestration import metadata as tfx_metadata
    from tfx.orchestration.portable import cache_utils
    from tfx.orchestration.portable.mlmd import context_lib

    schema = store.artifact("schema")
    store.run("run-1", outputs=[schema], cache_key="schema")
    for i in range(1, 5):
        if i > 1:
            store.run(f"run-{i}")
            store.cached(f"run-{i}", [schema], cache_key="schema")
        store.cached(f"run-{i}", [store.artifact(f"model-{i}")], cache_key=f"model-{i}")
    decisions = retention.plan(store.path, keep_runs=1, keep_days=0)
    runs = {r.run_id: r for r in decisions.runs}
    assert runs["run-1"].keep and "schema" in runs["run-1"].why
    assert [r for r, d in runs.items() if not d.keep] == ["run-2", "run-3"]
    retention.apply(store.path, decisions)
    connection = tfx_metadata.sqlite_metadata_connection_config(str(store.path))
    with tfx_metadata.Metadata(connection) as handle:
        cached = cache_utils.get_cached_outputs(
            handle, context_lib.register_context_if_not_exists(
                handle, "execution_cache", "schema"))
        assert [a.id for a in cached["model"]] == [schema]
