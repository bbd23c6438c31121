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
stays resolvable. An artifact no run produced or used is kept.

Removal is marked in ML Metadata first: the artifact's state becomes DELETED (with the
reason in a custom property), which TFX's resolvers skip and its cache refuses
(`tfx/orchestration/portable/cache_utils.py`: "Non-live artifact means partial result,
will not be used"), so a component whose cached output is gone runs again instead of
failing. Then its directory is removed. A process killed in between leaves a DELETED
artifact with its files, never a LIVE artifact without them.
"""

from __future__ import annotations

import dataclasses
import shutil
import time
from pathlib import Path
from typing import Iterable, List, Set

from ml_metadata.proto import metadata_store_pb2

from pipelines import metadata

DEFAULT_KEEP_RUNS = 10
DEFAULT_KEEP_DAYS = 30.0
DELETED_REASON = "toolkit_deleted_reason"


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


def plan(metadata_path: Path, keep_runs: int = DEFAULT_KEEP_RUNS,
         keep_days: float = DEFAULT_KEEP_DAYS, protected_uris: Iterable[str] = (),
         now: float = 0.0) -> List[ArtifactDecision]:
    """One decision per LIVE artifact of the store at `metadata_path`. Changes nothing."""
    if keep_runs < 1:
        raise ValueError("keep_runs must be at least 1")
    if not Path(metadata_path).exists():
        return []
    now = now or time.time()
    protected = {_normal(u) for u in protected_uris if u}
    store = metadata.open_store(metadata_path)
    runs = metadata.run_contexts(store)
    recent = {c.id for c in runs[-keep_runs:]}
    young = {c.id for c in runs if now - c.create_time_since_epoch / 1000 < keep_days * 86400}
    kept_runs, used_by_any_run = set(), set()
    for run in runs:
        execution_ids = [e.id for e in store.get_executions_by_context(run.id)]
        events = store.get_events_by_execution_ids(execution_ids) if execution_ids else []
        ids = {e.artifact_id for e in events}
        used_by_any_run |= ids
        if run.id in recent or run.id in young:
            kept_runs |= ids
    types = {t.id: t.name for t in store.get_artifact_types()}
    decisions = []
    for artifact in store.get_artifacts():
        if artifact.state != metadata_store_pb2.Artifact.LIVE:
            continue
        type_name = types.get(artifact.type_id, "")
        size = _size(artifact.uri)
        if _normal(artifact.uri) in protected:
            keep, why = True, "behind a version in the repository (its lineage)"
        elif artifact.id in kept_runs:
            keep, why = True, f"used by one of the newest {keep_runs} runs, or one younger " \
                              f"than {keep_days:g} days"
        elif artifact.id not in used_by_any_run:
            keep, why = True, "not part of any run"
        else:
            keep, why = False, f"only used by runs outside the newest {keep_runs} and older " \
                               f"than {keep_days:g} days"
        decisions.append(ArtifactDecision(artifact.id, artifact.uri, type_name, size, keep, why))
    return decisions


def apply(metadata_path: Path, decisions: Iterable[ArtifactDecision],
          reason: str = "retention") -> List[ArtifactDecision]:
    """Mark what `decisions` does not keep DELETED in ML Metadata, then remove its files.
    Returns the removed ones."""
    doomed = [d for d in decisions if not d.keep]
    if not doomed:
        return []
    store = metadata.open_store(metadata_path, readonly=False)
    artifacts = store.get_artifacts_by_id([d.artifact_id for d in doomed])
    for artifact in artifacts:
        artifact.state = metadata_store_pb2.Artifact.DELETED
        artifact.custom_properties[DELETED_REASON].string_value = reason
    store.put_artifacts(artifacts)
    for decision in doomed:
        path = Path(decision.uri)
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        elif path.exists():
            path.unlink()
    return doomed


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


def _size(uri: str) -> int:
    path = Path(uri)
    if path.is_file():
        return path.stat().st_size
    if not path.is_dir():
        return 0
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
