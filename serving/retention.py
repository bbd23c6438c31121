"""Retention for the model repository: which versions may go, and why each one stays.

A scheduled retrain adds a version every run (5.5 MB per MNIST version); nothing else
removes one. The policy, per model (`python -m pipelines gc`, and after every `retrain`):

- never removed: the rollout record's stable, previous and canary versions (whether or not
  the model is held), a version a running server reports loaded, a candidate newer than
  stable (waiting for an operator's promote), and the newest `keep_versions` versions
  (published and candidates together);
- a withdrawn version (`.rejected-N`) is kept `keep_rejected_days` after it was rejected
  (its lineage's `rejected.at`), for the post-mortem, then removed;
- everything else (published versions and candidates older than the newest N) goes.

Version numbers are never reused after a removal: ModelRepository keeps the highest number
it gave out in `<model>/.last-version`. A removal renames the version to a `.staging-`
name first (which servers ignore, and which the next publish reclaims if this process
dies), then deletes it.
"""

from __future__ import annotations

import dataclasses
import datetime
import os
import shutil
import uuid
from pathlib import Path
from typing import Iterable, List, Optional

from serving import rollouts
from serving.repository import REJECTED_PREFIX, STAGING_PREFIX, ModelRepository

DEFAULT_KEEP_VERSIONS = 10
DEFAULT_KEEP_REJECTED_DAYS = 14.0


@dataclasses.dataclass(frozen=True)
class Decision:
    version: int
    where: str          # "published", "candidate" or "rejected"
    path: Path
    keep: bool
    why: str

    def to_json(self) -> dict:
        return {"version": self.version, "where": self.where, "path": str(self.path),
                "keep": self.keep, "why": self.why}


def plan(repo: ModelRepository, model: str, keep_versions: int = DEFAULT_KEEP_VERSIONS,
         keep_rejected_days: float = DEFAULT_KEEP_REJECTED_DAYS,
         loaded: Iterable[int] = (), now: Optional[datetime.datetime] = None) -> List[Decision]:
    """What the policy keeps and removes for `model`, one decision per version, oldest
    first. Changes nothing."""
    if keep_versions < 1:
        raise ValueError("keep_versions must be at least 1: the newest version always stays")
    now = now or datetime.datetime.now(datetime.timezone.utc)
    record = rollouts.load(repo.model_dir(model), model)
    loaded = set(loaded)
    published, candidates = repo.versions(model), repo.candidates(model)
    newest = set(sorted(published + candidates)[-keep_versions:])
    roles = {record.stable: "stable", record.previous: "previous", record.canary: "canary"}
    decisions = []
    for version in sorted(set(published) | set(candidates)):
        where = "published" if version in published else "candidate"
        path = repo.version_path(model, version) if where == "published" else \
            repo.candidate_path(model, version)
        if version in roles:
            why = roles[version] + (" (held)" if record.held and version == record.stable else "")
            decisions.append(Decision(version, where, path, True, why))
        elif version in loaded:
            decisions.append(Decision(version, where, path, True, "loaded by the running server"))
        elif where == "candidate" and (record.stable is None or version > record.stable):
            decisions.append(Decision(version, where, path, True,
                                      "a candidate newer than stable (waiting for promote)"))
        elif version in newest:
            decisions.append(Decision(version, where, path, True,
                                      f"among the newest {keep_versions}"))
        else:
            decisions.append(Decision(version, where, path, False,
                                      f"older than the newest {keep_versions}, no role"))
    for version in repo.rejected_versions(model):
        path = repo.model_dir(model) / f"{REJECTED_PREFIX}{version}"
        age = _age_days(path, repo, model, version, now)
        keep = age < keep_rejected_days
        decisions.append(Decision(version, "rejected", path, keep,
                                  f"rejected {age:.1f} days ago; kept {keep_rejected_days:g} "
                                  f"days for the post-mortem"))
    return sorted(decisions, key=lambda d: (d.version, d.where))


def plan_with_server(repo: ModelRepository, model: str, state_dir: Optional[Path],
                     keep_versions: int = DEFAULT_KEEP_VERSIONS,
                     keep_rejected_days: float = DEFAULT_KEEP_REJECTED_DAYS) -> List[Decision]:
    """`plan`, keeping what the server recorded in `state_dir` reports loaded (when one
    is up and serves `model` from `repo`)."""
    from serving.lifecycle import health, running_server_for

    loaded: List[int] = []
    server = running_server_for(model, state_dir) if state_dir is not None else None
    if server is not None and Path(server.repository) == repo.root:
        status = health.get_model_status(server.addresses.rest_url, model)
        loaded = [v.version for v in status.versions if v.state != "END"]
    return plan(repo, model, keep_versions, keep_rejected_days, loaded)


def describe(decisions: Iterable[Decision], applied: bool) -> str:
    lines = []
    for d in decisions:
        verb = "keep  " if d.keep else ("remove" if applied else "would remove")
        lines.append(f"  {verb} {d.where} {d.version}: {d.why}")
    return "\n".join(lines)


def apply(repo: ModelRepository, decisions: Iterable[Decision]) -> List[Decision]:
    """Remove what `decisions` does not keep; returns the removed ones. Each is renamed out
    of the servers' sight first, then deleted."""
    removed = []
    for decision in decisions:
        if decision.keep or not decision.path.is_dir():
            continue
        doomed = decision.path.with_name(f"{STAGING_PREFIX}{os.getpid()}-gc-{uuid.uuid4().hex}")
        os.rename(decision.path, doomed)
        shutil.rmtree(doomed, ignore_errors=True)
        removed.append(decision)
    return removed


def _age_days(path: Path, repo: ModelRepository, model: str, version: int,
              now: datetime.datetime) -> float:
    """Days since the version was rejected (its lineage's record), else since its
    directory last changed."""
    lineage = repo.lineage(model, version)
    at = (lineage.rejected or {}).get("at") if lineage else None
    when = None
    if at:
        try:
            when = datetime.datetime.fromisoformat(at)
        except ValueError:
            when = None
    if when is None:
        when = datetime.datetime.fromtimestamp(path.stat().st_mtime, datetime.timezone.utc)
    if when.tzinfo is None:
        when = when.replace(tzinfo=datetime.timezone.utc)
    return max(0.0, (now - when).total_seconds() / 86400)
