"""What this project reads from and writes to a pipeline's ML Metadata store.

TFX records every run as a `pipeline_run` context, each component execution under it and
under its `node` context, and the artifacts through INPUT/OUTPUT events. On top of that
this project records, on the run's context, how the run ended for the operator (pushed,
rolled back, drift, ...), and marks artifacts that must never be used again ABANDONED:
TFX's resolvers and its cache only consider LIVE artifacts, so a rejected span drops out
of the training window and a rolled-back model stops being the baseline.
"""

from __future__ import annotations

import dataclasses
import sqlite3
import time
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Set, Union

import ml_metadata as mlmd
from ml_metadata.proto import metadata_store_pb2

RUN_CONTEXT_TYPE = "pipeline_run"
NODE_CONTEXT_TYPE = "node"
# Custom properties this project sets on a run's context.
OUTCOME = "toolkit_outcome"
REASON = "toolkit_reason"
PUSHED_VERSION = "toolkit_pushed_version"
# ...and on an artifact it abandons.
ABANDONED_REASON = "toolkit_abandoned_reason"

Value = Union[str, int, float]
# How long a run waits for a store that another process holds locked (a long transaction
# of a script or a `sqlite3` shell on metadata.sqlite) before it gives up, saying so.
STORE_WAIT_SECONDS = 60.0
# What ML Metadata says when another connection holds the SQLite file locked.
_LOCKED_TEXTS = ("database is locked", "Concurrent writes aborted",
                 "subset of tables in MLMD instance")


class StoreError(RuntimeError):
    """A store that cannot be opened; the message names it and says why."""


class StoreLocked(StoreError):
    """Another process holds the store locked for longer than the run waits."""

    def __init__(self, path: Path, waited: float):
        super().__init__(
            f"the ML Metadata store {Path(path).absolute()} is locked by another process "
            f"(waited {waited:.0f}s for it): a process holds a transaction open on it. Find "
            f"it with `fuser -v {Path(path).absolute()}` (or `lsof`), let it finish or stop "
            f"it, then run again")
        self.path = Path(path)


def wait_until_free(path: Path, write: bool, timeout: float) -> None:
    """Wait (at most `timeout` seconds) until no other process holds a lock on the store
    that would stop this one (any lock, to write; an exclusive one, to read); raises
    StoreLocked after that. SQLite's own busy handler does the waiting."""
    started = time.monotonic()
    try:
        mode = "rw" if write else "ro"  # a read-only connection takes no exclusive lock
        connection = sqlite3.connect(f"file:{Path(path).absolute()}?mode={mode}", uri=True,
                                     timeout=timeout, isolation_level=None)
    except sqlite3.Error:
        return  # no file or not a database: ML Metadata says what is wrong
    try:
        if write:
            # the lock a commit needs: waits for every reader and writer to finish
            connection.execute("BEGIN EXCLUSIVE")
        else:
            connection.execute("BEGIN")
            connection.execute("SELECT count(*) FROM sqlite_master").fetchall()
        connection.execute("ROLLBACK")
    except sqlite3.OperationalError as e:
        if "locked" in str(e) or "busy" in str(e):
            raise StoreLocked(path, time.monotonic() - started) from None
    finally:
        connection.close()


def is_locked_error(error: BaseException) -> bool:
    """Whether ML Metadata failed because another connection held the store locked."""
    return isinstance(error, StoreLocked) or any(marker in str(error)
                                                 for marker in _LOCKED_TEXTS)


def describe_error(error: BaseException, path: Path) -> str:
    """What went wrong with the store, in words: locked by another process, a full disk,
    else the error itself."""
    from serving import disk

    text = str(error)
    if isinstance(error, StoreLocked):
        return text
    if is_locked_error(error):
        return (f"it is locked by another process (find it with `fuser -v "
                f"{Path(path).absolute()}`, let it finish or stop it)")
    full = disk.as_disk_full(error, path)
    return str(full) if full is not None else f"{type(error).__name__}: {text}"


def open_store(path: Path, readonly: bool = True, create: bool = False,
               wait: Optional[float] = None) -> mlmd.MetadataStore:
    """`create`: a new, empty store when there is none at `path` (read-write). An existing
    store another process holds locked is waited for, `wait` seconds at most (default
    STORE_WAIT_SECONDS), then StoreLocked."""
    if Path(path).exists():
        wait_until_free(path, write=not readonly,
                        timeout=STORE_WAIT_SECONDS if wait is None else wait)
    modes = metadata_store_pb2.SqliteMetadataSourceConfig
    config = metadata_store_pb2.ConnectionConfig()
    config.sqlite.filename_uri = str(path)
    config.sqlite.connection_mode = (modes.READWRITE_OPENCREATE if create
                                     else modes.READONLY if readonly else modes.READWRITE)
    try:
        return mlmd.MetadataStore(config)
    except Exception as e:
        if readonly and "readonly database" in str(e):
            # a store whose creation was cut short (its disk filled up, its process was
            # killed) lacks some of its types: opening it read-write completes it
            return open_store(path, readonly=False, create=create, wait=wait)
        raise StoreError(f"cannot open the ML Metadata store {Path(path).absolute()}: "
                         f"{describe_error(e, path)}") from e


def run_contexts(store: mlmd.MetadataStore) -> List[metadata_store_pb2.Context]:
    """Every run, oldest first."""
    return sorted(store.get_contexts_by_type(RUN_CONTEXT_TYPE), key=lambda c: c.id)


def run_context_ids(store: mlmd.MetadataStore) -> Set[int]:
    return {c.id for c in run_contexts(store)}


def create_run(store: mlmd.MetadataStore, run_id: str) -> metadata_store_pb2.Context:
    """A `pipeline_run` context for a run that no TFX orchestrator records as one (a
    notebook experiment: InteractiveContext gives every component run a run of its own)."""
    type_id = store.put_context_type(metadata_store_pb2.ContextType(name=RUN_CONTEXT_TYPE))
    [context_id] = store.put_contexts([metadata_store_pb2.Context(type_id=type_id, name=run_id)])
    return store.get_contexts_by_id([context_id])[0]


def add_to_run(store: mlmd.MetadataStore, run: metadata_store_pb2.Context,
               execution_ids: Iterable[int]) -> None:
    """Make executions part of a run (as the orchestrators associate theirs)."""
    associations = [metadata_store_pb2.Association(execution_id=i, context_id=run.id)
                    for i in execution_ids]
    if associations:
        store.put_attributions_and_associations([], associations)


def new_run(store: mlmd.MetadataStore, before: Set[int]) -> Optional[metadata_store_pb2.Context]:
    """The run context created since `before` was taken (one run at a time: the lock)."""
    new = [c for c in run_contexts(store) if c.id not in before]
    return new[-1] if new else None


@dataclasses.dataclass
class NodeRun:
    """One component's execution in one run, with its input and output artifacts by key."""

    execution: metadata_store_pb2.Execution
    inputs: Dict[str, List[metadata_store_pb2.Artifact]]
    outputs: Dict[str, List[metadata_store_pb2.Artifact]]


def node_run(store: mlmd.MetadataStore, run: metadata_store_pb2.Context, pipeline_name: str,
             node_id: str) -> Optional[NodeRun]:
    """The node's latest execution within `run` (a cached execution counts), or None."""
    node = store.get_context_by_type_and_name(NODE_CONTEXT_TYPE, f"{pipeline_name}.{node_id}")
    if node is None:
        return None
    in_run = {e.id for e in store.get_executions_by_context(run.id)}
    executions = [e for e in store.get_executions_by_context(node.id) if e.id in in_run]
    if not executions:
        return None
    execution = max(executions, key=lambda e: e.id)
    events = store.get_events_by_execution_ids([execution.id])
    artifacts = {a.id: a for a in store.get_artifacts_by_id([e.artifact_id for e in events])}
    result = NodeRun(execution, {}, {})
    for event in events:
        side = result.inputs if event.type == metadata_store_pb2.Event.INPUT else \
            result.outputs if event.type == metadata_store_pb2.Event.OUTPUT else None
        if side is None or event.artifact_id not in artifacts:
            continue
        key = event.path.steps[0].key if event.path.steps else ""
        side.setdefault(key, []).append(artifacts[event.artifact_id])
    return result


def node_outputs(store: mlmd.MetadataStore, pipeline_name: str, node_id: str,
                 key: str) -> List[metadata_store_pb2.Artifact]:
    """Every `key` artifact the node ever output, in any run and any state."""
    node = store.get_context_by_type_and_name(NODE_CONTEXT_TYPE, f"{pipeline_name}.{node_id}")
    if node is None:
        return []
    executions = store.get_executions_by_context(node.id)
    events = store.get_events_by_execution_ids([e.id for e in executions])
    return store.get_artifacts_by_id([
        e.artifact_id for e in events if e.type == metadata_store_pb2.Event.OUTPUT
        and e.path.steps and e.path.steps[0].key == key])


def record(store: mlmd.MetadataStore, context: metadata_store_pb2.Context,
           **properties: Optional[Value]) -> None:
    """Set custom properties on a context (a run's outcome); None values are skipped."""
    for name, value in properties.items():
        if value is None:
            continue
        target = context.custom_properties[name]
        if isinstance(value, bool) or isinstance(value, int):
            target.int_value = int(value)
        elif isinstance(value, float):
            target.double_value = value
        else:
            target.string_value = str(value)
    store.put_contexts([context])


def abandon(store: mlmd.MetadataStore, artifacts: Iterable[metadata_store_pb2.Artifact],
            reason: str) -> None:
    """Mark artifacts ABANDONED (TFX's resolvers and cache skip them), saying why."""
    changed = []
    for artifact in artifacts:
        artifact.state = metadata_store_pb2.Artifact.ABANDONED
        artifact.custom_properties[ABANDONED_REASON].string_value = reason
        changed.append(artifact)
    if changed:
        store.put_artifacts(changed)


def property_value(message, name: str) -> Optional[Value]:
    """A custom property of an artifact, execution or context, as a plain value."""
    if name not in message.custom_properties:
        return None
    value = message.custom_properties[name]
    kind = value.WhichOneof("value")
    return getattr(value, kind) if kind else None
