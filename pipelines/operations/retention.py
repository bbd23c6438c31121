"""Retention for the pipeline root: the artifacts of old runs, and what ML Metadata says
about them.

Every run writes Examples, statistics, a Transform graph, a Model and a Pusher copy under
`<pipeline root>/<pipeline>/` (27 MB for a cold MNIST run) and nothing ever removes them.
The policy (`python -m pipelines gc`, and after every `retrain`): an artifact goes when
every run that produced or used it is

- outside the newest `keep_runs` runs of its pipeline (at least the retraining window:
  the runs whose spans, statistics and models the next run resolves), and
- older than `keep_days`,

unless its URI is behind a version still in the repository (a published version's,
a candidate's or a rejected one's `lineage.json` names its Model artifact), so lineage
stays resolvable. An artifact no run produced or used is kept, and so is one whose URI is
outside the pipeline's directory (an Importer's: a repository version a notebook
experiment imported as its baseline is not this policy's to remove). LIVE artifacts go,
and so do ABANDONED ones (a rejected span's, a rolled-back model's) and PENDING ones (a
killed run's partial outputs) once their runs are old.

Removal is marked in ML Metadata first: the artifact's state becomes DELETED (with the
reason in a custom property), which TFX's resolvers skip and its cache refuses
(`tfx/orchestration/portable/cache_utils.py`: "Non-live artifact means partial result,
will not be used"), so a component whose cached output is gone runs again instead of
failing. Then its directory is removed. A process killed in between leaves a DELETED
artifact with its files; the next pass removes them.

Then the rows of the runs whose outputs are all gone are deleted from the store, so it
levels off instead of growing about 0.16 MB a run (marked rows are never reclaimed). A run
loses its rows when it is outside the newest `keep_runs`, older than `keep_days`, not the
run that last finished the newest span (what `retrain` reads to tell new data from old),
and every artifact it produced under the pipeline's directory is DELETED with its files
gone (TFX's resolvers find an artifact through the OUTPUT event of the execution that
produced it; what a resolver resolved or a CACHED execution handed out again is another
run's): a run that produced the Model behind a version in the repository, or the Examples
of a span still in the window, keeps its rows (their lineage). Deleted: the run's
`pipeline_run` context, its executions with their properties, events (and their paths) and
associations, the DELETED artifacts no remaining execution refers to with their properties
and attributions, and the `execution_cache` contexts left without an execution. Kept: the
pipeline and node contexts, the types, every row of a kept run. TFX's cache looks up
executions through their cache context; an execution whose rows are gone is no candidate,
so the component runs again. `history` then lists the runs the policy keeps. With
`keep_runs` at least the window, the runs that ingested the window's spans stay; should a
span's run lose its rows while the span is still in the window (its Examples were removed:
runs that failed before resolving the window took its places), `retrain` no longer finds
the span among ExampleGen's outputs and ingests it again (pipelines/operations/retrain.py), instead of
training on a window that silently lacks it; a rejected span is stopped again.

ML Metadata has no API to delete anything: by design, "if the entire database is not
useful, consider drop the db; if the artifact is abandoned, please mark its `state` as
DELETED" (google/ml-metadata#38), and "no APIs are supported to delete the provenance
information" (google/ml-metadata#69, tensorflow/tfx#2484; a GC process for MLMD is an
open proposal, tensorflow/tfx-addons#179). Its maintainers also warn that the physical
schema is undocumented and may change (google/ml-metadata#19). So the rows are deleted in
SQL on the SQLite store, guarded: the schema version (`MLMDEnv.schema_version`) is read
first and anything but a version this code was written against (`KNOWN_SCHEMA_VERSIONS`:
10, ml-metadata 1.16) is refused with a warning (the rows stay, marked DELETED, as
before); everything is decided again and deleted in one `BEGIN IMMEDIATE` transaction
(a concurrent writer waits, a failure rolls it all back); AUTOINCREMENT ids are never
reused; then `VACUUM` returns the freed pages to the disk (a failed VACUUM, e.g. a locked
store or a full disk, only leaves the pages for SQLite to reuse).
"""

from __future__ import annotations

import dataclasses
import shutil
import sqlite3
import sys
import time
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Set

from ml_metadata.proto import metadata_store_pb2

from pipelines.runs import metadata

DEFAULT_KEEP_RUNS = 10
DEFAULT_KEEP_DAYS = 30.0
DELETED_REASON = "toolkit_deleted_reason"
# The ML Metadata schema versions whose tables `prune_rows` knows (ml-metadata 1.16: 10).
KNOWN_SCHEMA_VERSIONS = (10,)

_State = metadata_store_pb2.Artifact
# Artifacts the policy may remove (a DELETED one again only while its files are there).
_REMOVABLE = (_State.LIVE, _State.ABANDONED, _State.PENDING)
# What an execution produced: not a resolver's INTERNAL_OUTPUT (what it resolved, made by
# another run), nor the outputs of a CACHED execution (another run's, handed out again).
_OUTPUT_EVENTS = (metadata_store_pb2.Event.DECLARED_OUTPUT, metadata_store_pb2.Event.OUTPUT,
                  metadata_store_pb2.Event.PENDING_OUTPUT)
_CACHED = metadata_store_pb2.Execution.CACHED
_CACHE_CONTEXT_TYPE = "execution_cache"  # tfx.orchestration.portable.mlmd.context_lib
_CONTEXT_TYPE_KIND = 2  # Type.type_kind of a context type (0 execution, 1 artifact)


@dataclasses.dataclass(frozen=True)
class ArtifactDecision:
    artifact_id: int
    uri: str
    type_name: str
    bytes: int
    keep: bool
    why: str

    def to_json(self) -> dict:
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class RunDecision:
    """Whether a run's rows stay in ML Metadata."""

    context_id: int
    run_id: str
    started_ms: int
    keep: bool
    why: str

    def to_json(self) -> dict:
        return dataclasses.asdict(self)


@dataclasses.dataclass
class PruneResult:
    """What `prune_rows` deleted (or, dry, would delete), row counts by table."""

    runs: List[str] = dataclasses.field(default_factory=list)
    rows: Dict[str, int] = dataclasses.field(default_factory=dict)
    skipped: str = ""  # why nothing was deleted (an unknown schema, ...)
    bytes_before: int = 0
    bytes_after: int = 0

    def to_json(self) -> dict:
        return dataclasses.asdict(self)

    def describe(self, applied: bool) -> str:
        if self.skipped:
            return f"rows not deleted: {self.skipped}"
        counts = ", ".join(f"{table} {n}" for table, n in self.rows.items() if n)
        if not self.runs:
            return "no run's rows " + ("deleted" if applied else "would go")
        text = f"{len(self.runs)} run(s)' rows {'deleted' if applied else 'would go'} ({counts})"
        if applied and self.bytes_before:
            text += f"; file {self.bytes_before / 2**20:.2f} -> {self.bytes_after / 2**20:.2f} MiB"
        return text


class Plan(list):
    """The ArtifactDecisions of a store (a list, as before), and its RunDecisions."""

    def __init__(self, artifacts: Iterable[ArtifactDecision] = (),
                 runs: Iterable[RunDecision] = ()):
        super().__init__(artifacts)
        self.runs: List[RunDecision] = list(runs)


class Removed(list):
    """The ArtifactDecisions `apply` removed, and what it deleted from the store."""

    pruned: Optional[PruneResult] = None


def plan(metadata_path: Path, keep_runs: int = DEFAULT_KEEP_RUNS,
         keep_days: float = DEFAULT_KEEP_DAYS, protected_uris: Iterable[str] = (),
         now: float = 0.0) -> Plan:
    """One decision per artifact the policy may remove (LIVE, ABANDONED, PENDING, and
    DELETED with its files still there) and one per run of the store at `metadata_path`.
    Changes nothing."""
    if keep_runs < 1:
        raise ValueError("keep_runs must be at least 1")
    if not Path(metadata_path).exists():
        return Plan()
    now = now or time.time()
    pipeline_dir = _normal(str(Path(metadata_path).absolute().parent))
    protected = {_normal(u) for u in protected_uris if u}
    store = metadata.open_store(metadata_path)
    runs = metadata.run_contexts(store)
    recent = {c.id for c in runs[-keep_runs:]}
    young = {c.id for c in runs if now - c.create_time_since_epoch / 1000 < keep_days * 86400}
    newest_span = _last_finished_newest_span(runs)
    kept_runs, used_by_any_run = set(), set()
    outputs_of: Dict[int, Set[int]] = {}
    for run in runs:
        executions = store.get_executions_by_context(run.id)
        execution_ids = [e.id for e in executions]
        produced = {e.id for e in executions if e.last_known_state != _CACHED}
        events = store.get_events_by_execution_ids(execution_ids) if execution_ids else []
        ids = {e.artifact_id for e in events}
        outputs_of[run.id] = {e.artifact_id for e in events
                              if e.type in _OUTPUT_EVENTS and e.execution_id in produced}
        used_by_any_run |= ids
        if run.id in recent or run.id in young:
            kept_runs |= ids
    types = {t.id: t.name for t in store.get_artifact_types()}
    decisions, gone = [], set()
    artifacts = {a.id: a for a in store.get_artifacts()}
    for artifact in artifacts.values():
        if artifact.state == _State.DELETED:
            if _inside(artifact.uri, pipeline_dir) and Path(artifact.uri).exists() \
                    and DELETED_REASON in artifact.custom_properties:
                decisions.append(ArtifactDecision(
                    artifact.id, artifact.uri, types.get(artifact.type_id, ""),
                    _size(artifact.uri), False, "marked DELETED by a pass that was cut short"))
            else:
                gone.add(artifact.id)
            continue
        if artifact.state not in _REMOVABLE:
            continue
        type_name = types.get(artifact.type_id, "")
        size = _size(artifact.uri)
        if _normal(artifact.uri) in protected:
            keep, why = True, "behind a version in the repository (its lineage)"
        elif not _inside(artifact.uri, pipeline_dir):
            keep, why = True, "outside the pipeline's directory (imported, not this run's)"
        elif artifact.id in kept_runs:
            keep, why = True, f"used by one of the newest {keep_runs} runs, or one younger " \
                              f"than {keep_days:g} days"
        elif artifact.id not in used_by_any_run:
            keep, why = True, "not part of any run"
        else:
            keep, why = False, f"only used by runs outside the newest {keep_runs} and older " \
                               f"than {keep_days:g} days"
        if not keep:
            gone.add(artifact.id)
        decisions.append(ArtifactDecision(artifact.id, artifact.uri, type_name, size, keep, why))
    run_decisions = []
    for run in runs:
        if run.id in recent:
            keep, why = True, f"one of the newest {keep_runs} runs"
        elif run.id in young:
            keep, why = True, f"younger than {keep_days:g} days"
        elif run.id == newest_span:
            keep, why = True, "the run that last finished the newest span (retrain reads it)"
        else:
            left = sorted(a for a in outputs_of[run.id] if a not in gone
                          and a in artifacts and _inside(artifacts[a].uri, pipeline_dir))
            if left:
                first = artifacts[left[0]]
                keep, why = True, f"its output {types.get(first.type_id, '')} " \
                                  f"{first.uri} stays"
            else:
                keep, why = False, f"outside the newest {keep_runs} runs, older than " \
                                   f"{keep_days:g} days, its outputs gone"
        run_decisions.append(RunDecision(run.id, run.name, run.create_time_since_epoch,
                                         keep, why))
    return Plan(decisions, run_decisions)


def apply(metadata_path: Path, decisions: Iterable[ArtifactDecision],
          reason: str = "retention") -> Removed:
    """Mark what `decisions` does not keep DELETED in ML Metadata, then remove its files;
    then, for a Plan, delete the rows of the runs it lets go (`prune_rows`). Returns the
    removed artifacts (`.pruned`: what was deleted from the store)."""
    decisions = decisions if isinstance(decisions, list) else list(decisions)
    doomed = Removed(d for d in decisions if not d.keep)
    if doomed:
        store = metadata.open_store(metadata_path, readonly=False)
        artifacts = store.get_artifacts_by_id([d.artifact_id for d in doomed])
        for artifact in artifacts:
            if artifact.state != _State.DELETED:
                artifact.state = _State.DELETED
                artifact.custom_properties[DELETED_REASON].string_value = reason
        store.put_artifacts(artifacts)
        for decision in doomed:
            path = Path(decision.uri)
            if path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
            elif path.exists():
                path.unlink()
    runs = [r.context_id for r in getattr(decisions, "runs", []) if not r.keep]
    if runs:
        doomed.pruned = prune_rows(metadata_path, runs)
        if doomed.pruned.skipped:
            print(f"warning: {metadata_path}: ML Metadata {doomed.pruned.describe(True)}",
                  file=sys.stderr)
    return doomed


def prune_rows(metadata_path: Path, run_ids: Iterable[int], apply: bool = True,
               assume_deleted: Iterable[int] = (), vacuum: bool = True) -> PruneResult:
    """Delete from the SQLite store at `metadata_path` the rows of the runs (`pipeline_run`
    context ids) in `run_ids` whose outputs under the pipeline's directory are all DELETED
    with their files gone (checked again here, in the transaction): see the module's
    docstring for what goes and what stays. `apply=False`: count, delete nothing
    (`assume_deleted`: artifact ids to count as DELETED, what a dry run would remove).
    Raises metadata.StoreLocked when another process holds the store longer than
    STORE_WAIT_SECONDS, metadata.StoreError on any other SQLite error (nothing deleted)."""
    path = Path(metadata_path).absolute()
    result = PruneResult()
    run_ids = sorted(set(run_ids))
    if not run_ids or not path.exists():
        return result
    try:
        connection = sqlite3.connect(f"file:{path}?mode={'rw' if apply else 'ro'}", uri=True,
                                     timeout=metadata.STORE_WAIT_SECONDS, isolation_level=None)
    except sqlite3.Error as e:
        raise metadata.StoreError(f"cannot open the ML Metadata store {path}: {e}") from e
    started = time.monotonic()
    try:
        version = _schema_version(connection)
        if version not in KNOWN_SCHEMA_VERSIONS:
            result.skipped = (f"its ML Metadata schema version is {version}, not one this "
                              f"toolkit knows ({', '.join(map(str, KNOWN_SCHEMA_VERSIONS))})")
            return result
        result.bytes_before = path.stat().st_size
        connection.execute("BEGIN IMMEDIATE" if apply else "BEGIN")
        try:
            _select(connection, run_ids, set(assume_deleted), path.parent, result)
            if apply:
                _delete(connection)
            connection.execute("COMMIT" if apply else "ROLLBACK")
        except BaseException:
            connection.execute("ROLLBACK")
            raise
        if apply and vacuum and result.runs:
            try:
                connection.execute("VACUUM")
            except sqlite3.Error as e:  # the pages stay free for SQLite to reuse
                print(f"warning: {path}: VACUUM after deleting rows failed ({e})",
                      file=sys.stderr)
        result.bytes_after = path.stat().st_size
    except sqlite3.OperationalError as e:
        if "locked" in str(e) or "busy" in str(e):
            raise metadata.StoreLocked(path, time.monotonic() - started) from None
        raise metadata.StoreError(f"cannot delete rows from the ML Metadata store {path}: "
                                  f"{metadata.describe_error(e, path)}") from e
    except sqlite3.Error as e:
        raise metadata.StoreError(f"cannot delete rows from the ML Metadata store {path}: "
                                  f"{e}") from e
    finally:
        connection.close()
    return result


def _schema_version(connection: sqlite3.Connection) -> Optional[int]:
    try:
        rows = connection.execute("SELECT schema_version FROM MLMDEnv").fetchall()
    except sqlite3.OperationalError as e:
        if "no such table" in str(e):
            return None
        raise
    return rows[0][0] if len(rows) == 1 else None


def _select(connection: sqlite3.Connection, run_ids: List[int], assume_deleted: Set[int],
            pipeline_dir: Path, result: PruneResult) -> None:
    """Fill the temporary tables doomed_run, doomed_execution, doomed_event,
    doomed_artifact and doomed_context with what goes, checking every rule again."""
    q = connection.execute
    for table in ("doomed_run", "doomed_execution", "doomed_event", "doomed_artifact",
                  "doomed_context", "assumed_deleted"):
        q(f"CREATE TEMP TABLE IF NOT EXISTS {table} (id INTEGER PRIMARY KEY)")
        q(f"DELETE FROM {table}")
    connection.executemany("INSERT INTO assumed_deleted VALUES (?)",
                           [(i,) for i in assume_deleted])
    run_type = _type_id(connection, metadata.RUN_CONTEXT_TYPE, _CONTEXT_TYPE_KIND)
    if run_type is None:
        return
    inside = _normal(str(pipeline_dir))
    outputs = ",".join(str(int(t)) for t in _OUTPUT_EVENTS)
    names = {}
    for run_id in run_ids:
        row = q("SELECT name FROM Context WHERE id = ? AND type_id = ?",
                (run_id, run_type)).fetchone()
        if row is None:
            continue
        blocking = q(f"""
            SELECT a.id, a.uri, a.state FROM Association s
            JOIN Execution x ON x.id = s.execution_id
                AND coalesce(x.last_known_state, 0) != {int(_CACHED)}
            JOIN Event e ON e.execution_id = s.execution_id AND e.type IN ({outputs})
            JOIN Artifact a ON a.id = e.artifact_id
            WHERE s.context_id = ?""", (run_id,)).fetchall()
        if any(_inside(uri or "", inside) and artifact not in assume_deleted
               and (state != _State.DELETED or Path(uri).exists())
               for artifact, uri, state in blocking):
            continue
        names[run_id] = row[0]
        q("INSERT INTO doomed_run VALUES (?)", (run_id,))
    # executions of the doomed runs and of no other run
    q("""INSERT INTO doomed_execution SELECT DISTINCT s.execution_id FROM Association s
         WHERE s.context_id IN (SELECT id FROM doomed_run)
         AND NOT EXISTS (SELECT 1 FROM Association o JOIN Context c ON c.id = o.context_id
                         WHERE o.execution_id = s.execution_id AND c.type_id = ?
                         AND o.context_id NOT IN (SELECT id FROM doomed_run))""", (run_type,))
    q("""INSERT INTO doomed_event SELECT id FROM Event
         WHERE execution_id IN (SELECT id FROM doomed_execution)""")
    # DELETED artifacts (files gone) that no remaining execution refers to
    candidates = q(f"""
        SELECT DISTINCT a.id, a.uri FROM Event e JOIN Artifact a ON a.id = e.artifact_id
        WHERE e.id IN (SELECT id FROM doomed_event)
        AND (a.state = {int(_State.DELETED)} OR a.id IN (SELECT id FROM assumed_deleted))
        AND NOT EXISTS (SELECT 1 FROM Event o WHERE o.artifact_id = a.id
                        AND o.id NOT IN (SELECT id FROM doomed_event))""").fetchall()
    connection.executemany("INSERT INTO doomed_artifact VALUES (?)", [
        (a,) for a, uri in candidates if a in assume_deleted or not Path(uri or "").exists()])
    # the runs, and the cache contexts only doomed executions were in
    q("INSERT INTO doomed_context SELECT id FROM doomed_run")
    cache_type = _type_id(connection, _CACHE_CONTEXT_TYPE, _CONTEXT_TYPE_KIND)
    if cache_type is not None:
        q("""INSERT INTO doomed_context SELECT DISTINCT s.context_id FROM Association s
             JOIN Context c ON c.id = s.context_id AND c.type_id = ?
             WHERE s.execution_id IN (SELECT id FROM doomed_execution)
             AND NOT EXISTS (SELECT 1 FROM Association o WHERE o.context_id = s.context_id
                             AND o.execution_id NOT IN (SELECT id FROM doomed_execution))""",
          (cache_type,))
    result.runs = [names[i] for i in sorted(names)]
    count = lambda sql: q(sql).fetchone()[0]  # noqa: E731
    result.rows = {
        "contexts": count("SELECT count(*) FROM doomed_context"),
        "executions": count("SELECT count(*) FROM doomed_execution"),
        "events": count("SELECT count(*) FROM doomed_event"),
        "artifacts": count("SELECT count(*) FROM doomed_artifact"),
        "properties": count(
            "SELECT (SELECT count(*) FROM ExecutionProperty WHERE execution_id IN "
            "(SELECT id FROM doomed_execution)) + (SELECT count(*) FROM ArtifactProperty "
            "WHERE artifact_id IN (SELECT id FROM doomed_artifact)) + (SELECT count(*) FROM "
            "ContextProperty WHERE context_id IN (SELECT id FROM doomed_context))"),
        "associations and attributions": count(
            "SELECT (SELECT count(*) FROM Association WHERE execution_id IN "
            "(SELECT id FROM doomed_execution) OR context_id IN (SELECT id FROM "
            "doomed_context)) + (SELECT count(*) FROM Attribution WHERE artifact_id IN "
            "(SELECT id FROM doomed_artifact) OR context_id IN (SELECT id FROM "
            "doomed_context))"),
    }


def _delete(connection: sqlite3.Connection) -> None:
    for sql in (
            "DELETE FROM EventPath WHERE event_id IN (SELECT id FROM doomed_event)",
            "DELETE FROM Event WHERE id IN (SELECT id FROM doomed_event)",
            "DELETE FROM Association WHERE execution_id IN (SELECT id FROM doomed_execution) "
            "OR context_id IN (SELECT id FROM doomed_context)",
            "DELETE FROM ExecutionProperty WHERE execution_id IN "
            "(SELECT id FROM doomed_execution)",
            "DELETE FROM Execution WHERE id IN (SELECT id FROM doomed_execution)",
            "DELETE FROM Attribution WHERE artifact_id IN (SELECT id FROM doomed_artifact) "
            "OR context_id IN (SELECT id FROM doomed_context)",
            "DELETE FROM ArtifactProperty WHERE artifact_id IN (SELECT id FROM doomed_artifact)",
            "DELETE FROM Artifact WHERE id IN (SELECT id FROM doomed_artifact)",
            "DELETE FROM ParentContext WHERE context_id IN (SELECT id FROM doomed_context) "
            "OR parent_context_id IN (SELECT id FROM doomed_context)",
            "DELETE FROM ContextProperty WHERE context_id IN (SELECT id FROM doomed_context)",
            "DELETE FROM Context WHERE id IN (SELECT id FROM doomed_context)"):
        connection.execute(sql)


def _type_id(connection: sqlite3.Connection, name: str, kind: int) -> Optional[int]:
    row = connection.execute("SELECT id FROM Type WHERE name = ? AND type_kind = ?",
                             (name, kind)).fetchone()
    return row[0] if row else None


def _last_finished_newest_span(runs: List[metadata_store_pb2.Context]) -> Optional[int]:
    """The run that last finished the newest span recorded on the runs (history's
    last_finished_with for it), or None."""
    from pipelines import outcomes
    from pipelines.runs import history

    not_finished = (outcomes.ERROR.name, outcomes.DISK_FULL.name, outcomes.ABANDONED.name,
                    "incomplete")  # as history.last_finished_with counts them
    finished = []
    for run in runs:
        span = metadata.property_value(run, history.SPAN)
        outcome = metadata.property_value(run, metadata.OUTCOME) or "incomplete"
        if span is not None and outcome not in not_finished:
            finished.append((int(span), run.id))
    return max(finished)[1] if finished else None


def protected_model_uris(repository, model: str) -> Set[str]:
    """The Model artifacts behind every version in the repository (published, candidate,
    rejected), from their lineage records."""
    uris = set()
    for version in (repository.versions(model) + repository.candidates(model)
                    + repository.rejected_versions(model)):
        record = repository.lineage(model, version)
        if record is not None and record.model_uri:
            uris.add(record.model_uri)
            if record.warm_start and record.warm_start.get("model_uri"):
                uris.add(record.warm_start["model_uri"])
    return uris


def _normal(uri: str) -> str:
    return str(Path(uri)).rstrip("/")


def _inside(uri: str, directory: str) -> bool:
    """Whether `uri` is a local path under `directory` (both normalised)."""
    if not uri or "://" in uri:
        return False
    return _normal(str(Path(uri).absolute())).startswith(directory.rstrip("/") + "/")


def _size(uri: str) -> int:
    path = Path(uri)
    if path.is_file():
        return path.stat().st_size
    if not path.is_dir():
        return 0
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
