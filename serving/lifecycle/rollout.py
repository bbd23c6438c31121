"""Rollouts on TF Serving's version labels: canary, promote, rollback, hold, and the
registry view.

Every change goes the way TF Serving's documentation asks for labels: load first, then
move the label, then unload. TF Serving's ServerCore::ReloadConfig checks and assigns a
config's labels *before* it loads the config's versions, so a config that moves a label to
a version not yet loaded is refused whole. Hence three config reloads, each written to the
polled models.config before it is applied by ReloadConfig (so a poll in between applies
the same step, and a restarted server renders the same config from the records):

1. load: every version the old and the new state need, the old labels;
2. label: the same versions, the new labels (they now name AVAILABLE versions, which
   TF Serving requires unless --allow_version_labels_for_unavailable_models);
3. unload: the new state alone.

A version that fails to load in step 1 reverts the server to the old state, and the
record is not changed. The record (serving/rollouts.py) is updated under its lock for the
whole change, so a promote and a scheduled run's push take turns.

One canary at a time: the process that loads a canary holds the model's canary lock
(`<model>/.canary.lock`, an flock) until the canary is promoted or dropped. The kernel
releases it when that process dies however it dies (SIGKILL included), so a canary the
record names while its lock is free was left by a run that died mid-check or
mid-promotion: the next run drops it (`drop_dead_canary`), the server goes back to what the
record says, and that version waits as a candidate.
"""

from __future__ import annotations

import copy
import dataclasses
import fcntl
import logging
import os
import time
from pathlib import Path
from typing import Dict, List, Optional, Tuple

from serving import rollouts
from serving.lifecycle import health, model_config, state as state_store
from serving.lifecycle.api import _backend_for, _log_tail, running_server_for
from serving.lifecycle.backends import replica_addresses
from serving.lifecycle.config import DEFAULT_STATE_DIR
from serving.lifecycle.errors import (CanaryBusy, Held, LifecycleError, NotRunning,
                                      VersionFailed, WaitTimeout)
from serving.lifecycle.reload import reload_config
from serving.lifecycle.sample import get_metadata
from serving.lifecycle.state import ServerState
from serving.repository import ModelRepository
from serving.rollouts import Rollout

log = logging.getLogger("serving.lifecycle")

CANARY_LOCK = ".canary.lock"
_canary_locks: Dict[str, int] = {}  # model dir -> the fd of the canary lock this process holds


@dataclasses.dataclass
class Change:
    """What a rollout command did: the record after it, and what the server answered."""

    model: str
    record: Rollout
    server: Optional[str] = None      # the REST URL of the server changed, None: no server
    verified: Dict[str, int] = dataclasses.field(default_factory=dict)  # label -> version
    changed: bool = True              # False: the record already said so (a retried command)

    def to_json(self) -> dict:
        return {"model": self.model, "record": self.record.to_json(), "server": self.server,
                "verified_labels": self.verified, "changed": self.changed}


# ---- operator commands ----

def promote(model: str, version: int, repository: Path, state_dir: Path = DEFAULT_STATE_DIR,
            timeout: float = 120.0, unattended: bool = False, verified: Optional[bool] = None,
            by: str = "") -> Change:
    """`version` becomes stable: a candidate is moved into the repository's published
    versions, loaded, then labelled `stable` on the running server (when one is up for
    `repository`); the old stable becomes previous. An unattended promote (a pipeline run)
    raises Held while the model is held; an operator's promote keeps the hold."""
    repo = ModelRepository(repository)
    _require_model(repo, model)
    server = _server_for(model, repo, state_dir)
    with rollouts.update(repo.model_dir(model), model) as record:
        if unattended and record.held:
            raise Held(f"{model} is held ({record.hold.describe()}); version {version} stays "
                       f"a candidate", next_step=_promote_step(model, version, repo))
        _require_promotable(repo, model, version)
        old = copy.deepcopy(record)
        was_candidate = version in repo.candidates(model)
        repo.promote_candidate(model, version)
        record.make_stable(version, verified=server is not None if verified is None else verified)
        record.note("promote", version, by, "unattended" if unattended else "")
        change = Change(model, record)
        if server is not None:
            try:
                change.verified = _transition(server, model, old, record, timeout)
            except LifecycleError:
                if was_candidate:  # where no plain server sees it, as before
                    repo.return_to_candidates(model, version)
                raise
            change.server = server.addresses.rest_url
    if record.canary is None:
        _release_canary(repo.model_dir(model))
    log.info("%s: version %s is stable%s", model, version,
             "" if server is not None else " (no server is up: served from the next `up`)")
    return change


def rollback(model: str, repository: Path, to: Optional[int] = None,
             state_dir: Path = DEFAULT_STATE_DIR, timeout: float = 120.0,
             by: str = "") -> Change:
    """Stable goes back to previous (or to `to`, a version that was stable before): a label
    move on the running server, no restart. `to` the version already stable changes nothing
    and is no failure, so a retried `rollback --to N` (cron, a script after a timeout) ends
    as the first one did; a plain rollback goes back one more step each time."""
    repo = ModelRepository(repository)
    _require_model(repo, model)
    server = _server_for(model, repo, state_dir)
    with rollouts.update(repo.model_dir(model), model) as record:
        target = record.previous if to is None else to
        if target is None:
            raise LifecycleError(f"{model} has no previous stable version to roll back to "
                                 f"(stable: {record.stable})",
                                 next_step=f"`python -m serving versions --model {model}` "
                                           f"lists the versions; `rollback --to N` names one")
        if target == record.stable and to is not None:
            return Change(model, record, changed=False)
        if target == record.stable:
            raise LifecycleError(f"{model} version {target} is already stable")
        if target not in record.served:
            raise LifecycleError(
                f"{model} version {target} was never stable, so it is no rollback target "
                f"(stable before: {record.served or 'none'})",
                next_step=f"`python -m serving promote --model {model} --version {target}` "
                          f"serves a version that was never stable")
        if target not in repo.versions(model):
            raise LifecycleError(f"{model} version {target} is not in {repo.model_dir(model)} "
                                 f"any more", next_step="pick another with `--to N`")
        old = copy.deepcopy(record)
        record.roll_back(target)
        record.note("rollback", target, by, f"from {old.stable}")
        change = Change(model, record)
        if server is not None:
            change.verified = _transition(server, model, old, record, timeout)
            change.server = server.addresses.rest_url
    return change


def hold(model: str, repository: Path, reason: str = "", by: str = "") -> Rollout:
    """Freeze what is served: unattended runs publish candidates only until `release`."""
    repo = ModelRepository(repository)
    _require_model(repo, model)
    with rollouts.update(repo.model_dir(model), model) as record:
        record.hold = rollouts.Hold(by=by or rollouts.actor(), at=rollouts.now(), reason=reason)
        record.note("hold", record.stable, by, reason)
    return record


def release(model: str, repository: Path, by: str = "") -> Rollout:
    repo = ModelRepository(repository)
    _require_model(repo, model)
    with rollouts.update(repo.model_dir(model), model) as record:
        was = record.hold.describe() if record.hold else "not held"
        record.hold = None
        record.note("release", record.stable, by, was)
    return record


# ---- the push path (pipelines/operations/post_push.py) ----

def load_canary(model: str, version: int, repository: Path, state_dir: Path,
                timeout: float, by: str = "") -> Change:
    """Load candidate `version` as the canary (the `<model>-canary` entry, label `canary`)
    on the running server; stable keeps serving. Raises Held while the model is held,
    NotRunning with no server, and like wait_for_version when the canary does not load (the
    server is back to its state before, the record unchanged)."""
    repo = ModelRepository(repository)
    server = _server_for(model, repo, state_dir)
    if server is None:
        raise NotRunning(f"no server is up for {model} in {state_dir}")
    with rollouts.update(repo.model_dir(model), model) as record:
        if record.held:
            raise Held(f"{model} is held ({record.hold.describe()}); version {version} stays "
                       f"a candidate", next_step=_promote_step(model, version, repo))
        if version not in repo.candidates(model):
            raise LifecycleError(f"{model} has no candidate version {version} in "
                                 f"{repo.candidates_dir(model)}")
        model_dir = repo.model_dir(model)
        ours = str(model_dir) in _canary_locks
        if record.canary not in (None, version) and (ours or not _claim_canary(model_dir)):
            raise CanaryBusy(f"{model} version {record.canary} is being checked as the "
                             f"canary by another run; one canary at a time",
                             next_step="run again once it is promoted or rejected "
                                       "(`python -m serving versions` shows it)")
        if not _claim_canary(model_dir):  # a live run is about to load or drop its canary
            raise CanaryBusy(f"{model}: another run holds its canary lock "
                             f"({model_dir / CANARY_LOCK}); one canary at a time",
                             next_step="run again once its canary is promoted or rejected")
        old = copy.deepcopy(record)
        if record.canary not in (None, version):  # its lock was free: its run died
            rollouts.forget_canary(repo, model, record, "left by a run that died")
        record.canary = version
        record.note("canary", version, by)
        change = Change(model, record, server=server.addresses.rest_url)
        try:
            change.verified = _transition(server, model, old, record, timeout)
        except BaseException:
            if not ours:
                _release_canary(model_dir)
            raise
    return change


def drop_dead_canary(model: str, repository: Path, state_dir: Optional[Path],
                     timeout: float) -> Optional[int]:
    """Drop a canary left by a run that died (the record names one, its canary lock is
    free; see the module's docstring): a promotion it cut short is undone, the running
    server is put back to what the record says, and the version waits as a candidate.
    Returns that version; None when there was none (or its run is alive)."""
    repo = ModelRepository(repository)
    model_dir = repo.model_dir(model)
    if not model_dir.is_dir() or rollouts.load(model_dir, model).canary is None:
        return None
    server = _server_for(model, repo, state_dir)
    with rollouts.update(model_dir, model) as record:
        if record.canary is None or str(model_dir) in _canary_locks \
                or not _claim_canary(model_dir):
            return None
        try:
            old = copy.deepcopy(record)
            version = rollouts.forget_canary(repo, model, record, "left by a run that died")
            if server is not None:
                _transition(server, model, old, record, timeout)
        finally:
            _release_canary(model_dir)
    return version


def drop_canary(model: str, repository: Path, state_dir: Path, timeout: float,
                by: str = "", reject: Optional[Tuple[int, str]] = None) -> Optional[Path]:
    """Unload the canary (stable never changed); it stays a candidate, or, with `reject`
    = (version, reason), is withdrawn as `.rejected-N`, its lineage saying why (returns
    that path)."""
    repo = ModelRepository(repository)
    server = _server_for(model, repo, state_dir)
    try:
        with rollouts.update(repo.model_dir(model), model) as record:
            old = copy.deepcopy(record)
            record.canary = None
            record.note("reject" if reject else "drop canary",
                        reject[0] if reject else old.canary, by, reject[1] if reject else "")
            if server is not None and old.canary is not None:
                _transition(server, model, old, record, timeout)
            return repo.reject(model, *reject) if reject else None
    finally:
        _release_canary(repo.model_dir(model))


def withdraw_canary(model: str, version: int, reason: str, repository: Path, state_dir: Path,
                    timeout: float, by: str = "") -> Path:
    """Unload the canary and withdraw `version` as `.rejected-N` with `reason`."""
    return drop_canary(model, repository, state_dir, timeout, by, reject=(version, reason))


# ---- the registry view ----

def versions(model: str, repository: Path, state_dir: Optional[Path] = None) -> dict:
    """Every version of `model` in the repository with its role and lineage, and, when a
    server is up in `state_dir`, its live state there. Needs no server."""
    repo = ModelRepository(repository)
    _require_model(repo, model)
    record = rollouts.load(repo.model_dir(model), model)
    published, candidates = repo.versions(model), repo.candidates(model)
    rejected = repo.rejected_versions(model)
    live: Dict[int, str] = {}
    canary_live: Dict[int, str] = {}
    server = running_server_for(model, state_dir) if state_dir is not None else None
    if server is not None and Path(server.repository) == repo.root:
        live = {v.version: v.state for v in
                health.get_model_status(server.addresses.rest_url, model).versions}
        canary_live = {v.version: v.state for v in health.get_model_status(
            server.addresses.rest_url, model_config.canary_entry(model)).versions}
    rows = []
    for version in sorted(set(published) | set(candidates) | set(rejected)):
        where = "rejected" if version in rejected else \
            "candidate" if version in candidates else "published"
        lineage = repo.lineage(model, version)
        role = rollouts.role_of(record, version, version in published, version in candidates,
                                version in rejected)
        rows.append({
            "version": version, "role": role, "where": where,
            "path": str(repo.locate(model, version)),
            "live": live.get(version) or canary_live.get(version) if server else None,
            "rejected_reason": (lineage.rejected or {}).get("reason", "") if lineage else "",
            "lineage": lineage.to_json() if lineage else None})
    return {"model": model, "repository": str(repo.root), "stable": record.stable,
            "stable_verified": record.stable_verified, "previous": record.previous,
            "canary": record.canary, "hold": dataclasses.asdict(record.hold)
            if record.hold else None,
            "server": server.addresses.rest_url if server is not None else None,
            "versions": rows, "events": record.events[-10:]}


def versions_text(view: dict) -> str:
    hold = view["hold"]
    lines = [f"{view['model']} in {view['repository']}: stable {view['stable']}"
             f"{'' if view['stable_verified'] or view['stable'] is None else ' (not verified)'}"
             f", previous {view['previous']}, canary {view['canary']}"
             + (f"\nHELD by {hold['by']} at {hold['at']}"
                + (f": {hold['reason']}" if hold['reason'] else "") if hold else ""),
             f"server: {view['server'] or 'none up (no live state)'}",
             f"{'VERSION':>7}  {'ROLE':<13} {'LIVE':<10} {'CREATED':<25} SPANS   METRICS"]
    for row in view["versions"]:
        lineage = row["lineage"] or {}
        metrics = ", ".join(f"{k} {v:.4g}" for k, v in (lineage.get("metrics") or {}).items())
        spans = ",".join(str(s) for s in lineage.get("spans") or []) or "-"
        lines.append(f"{row['version']:>7}  {row['role']:<13} {row['live'] or '-':<10} "
                     f"{lineage.get('published_at') or '-':<25} {spans:<7} {metrics or '-'}")
        if lineage.get("run_id"):
            lines.append(f"{'':>9}run {lineage['run_id']} ({lineage.get('pipeline', '')})"
                         + (f"; gates {lineage['gates']}" if lineage.get("gates") else ""))
        if row["rejected_reason"]:
            lines.append(f"{'':>9}rejected: {row['rejected_reason']}")
    return "\n".join(lines)


# ---- helpers ----

def _transition(server: ServerState, model: str, old: Rollout, new: Rollout,
                timeout: float, undo: bool = True) -> Dict[str, int]:
    """Load, label, unload (see the module's docstring) on every replica of the server,
    all or nothing: a replica that cannot load puts every replica back to the old state, and
    a failure after the labels moved (a replica refusing a step, labels not answered in
    time) runs the steps back to it (once: `undo`). Returns the labels as the replicas
    answer them afterwards."""
    repo = ModelRepository(server.repository)
    backend = _backend_for(server)
    replicas = replica_addresses(backend, server)
    if not replicas:
        raise LifecycleError(f"no replica of the {server.backend} server is running",
                             next_step="`python -m serving status` shows them")
    others = {m: rollouts.load(repo.model_dir(m), m) for m in server.models if m != model}
    deadline = time.monotonic() + timeout

    def apply(records_new, also_old: bool, labels_from: Dict[str, Rollout],
              errors: Optional[List[str]] = None) -> None:
        """Write the step's config, then ReloadConfig on every replica; with `errors`, a
        replica that refuses is noted there and the others still get it."""
        config = model_config.build(server.base_paths, records_new, server.models,
                                    also_loaded={model: old} if also_old else {},
                                    labels_from=labels_from)
        if server.model_config_path:
            state_store.write_atomically(Path(server.model_config_path),
                                         model_config.to_text(config))
        for name, addresses in replicas:
            try:
                reload_config(addresses.grpc_target, config,
                              timeout=max(1.0, deadline - time.monotonic()))
            except LifecycleError as e:
                e.message = f"replica {name}: {e.message}" if len(replicas) > 1 else e.message
                if errors is None:
                    raise
                errors.append(e.message)

    records_new = {**others, model: new}
    records_old = {**others, model: old}
    try:
        apply(records_new, True, records_old)  # 1. load
        for name, addresses in replicas:
            for entry, version in _new_loads(model, old, new):
                _wait_available(server, addresses, entry, version, deadline,
                                name if len(replicas) > 1 else "")
    except LifecycleError as e:
        deadline = time.monotonic() + max(30.0, timeout)  # the revert gets time of its own
        failed = _revert(apply, records_old)
        if failed:
            e.details = (e.details + "\n" if e.details else "") + \
                "could not put back the old state on: " + "; ".join(failed)
        raise
    try:
        apply(records_new, True, records_new)  # 2. label
        apply(records_new, False, records_new)  # 3. unload
        answered = {}
        for name, addresses in replicas:
            answered = _verify_labels(server, addresses, model, new, deadline,
                                      name if len(replicas) > 1 else "")
        return answered
    except LifecycleError as e:
        if not undo:
            raise
        # Labels moved, old versions maybe unloaded: the same three steps the other way, so
        # the server is back to what it served (the record is not changed either).
        try:
            _transition(server, model, new, old, max(30.0, timeout), undo=False)
        except LifecycleError as back:
            e.details = (e.details + "\n" if e.details else "") + \
                f"could not put back the old state: {back.message}"
        raise


def _revert(apply, records_old) -> List[str]:
    """Every replica back to the old state; the replicas that refused, as messages."""
    errors: List[str] = []
    apply(records_old, False, records_old, errors)
    return errors


def _new_loads(model: str, old: Rollout, new: Rollout) -> List[tuple]:
    loads = [(model, v) for v in new.loaded_versions() if v not in old.loaded_versions()]
    if new.canary is not None and new.canary != old.canary:
        loads.append((model_config.canary_entry(model), new.canary))
    return loads


def _wait_available(server: ServerState, addresses, entry: str, version: int,
                    deadline: float, replica: str = "") -> None:
    backend = _backend_for(server)
    where = f"replica {replica}: " if replica else ""
    while True:
        st = health.get_model_status(addresses.rest_url, entry)
        if st.is_available(version):
            return
        v = st.version(version)
        if v is not None and v.failed:
            raise VersionFailed(f"{where}{entry} version {version} failed to load: "
                                f"{v.error_code}: {v.error_message}",
                                details=_log_tail(backend, server))
        if time.monotonic() >= deadline:
            raise WaitTimeout(f"{where}{entry} version {version} is not AVAILABLE in time; "
                              f"server says: "
                              f"{st.error or [(x.version, x.state) for x in st.versions]}",
                              next_step="wait longer with --timeout",
                              details=_log_tail(backend, server))
        time.sleep(0.1)


def _verify_labels(server: ServerState, addresses, model: str, record: Rollout,
                   deadline: float, replica: str = "") -> Dict[str, int]:
    """Ask one replica which version each label names (`GET .../labels/L/metadata`),
    until it answers as the record says."""
    wanted = {(model, label): version for label, version in record.labels().items()}
    if record.canary is not None:
        wanted[(model_config.canary_entry(model), rollouts.CANARY)] = record.canary
    while True:
        answered: Dict[str, int] = {}
        for (entry, label), version in wanted.items():
            try:
                meta = get_metadata(addresses.rest_url, entry, label=label)
                answered[label] = int(meta["model_spec"]["version"])
            except Exception:  # noqa: BLE001 - not yet: asked again until the deadline
                pass
        if all(answered.get(label) == v for (_, label), v in wanted.items()):
            return answered
        if time.monotonic() >= deadline:
            where = f"replica {replica}: " if replica else ""
            raise WaitTimeout(f"{where}{model}: the server's labels {answered} are not the "
                              f"recorded { {label: v for (_, label), v in wanted.items()} } "
                              f"in time", details=_log_tail(_backend_for(server), server))
        time.sleep(0.1)


def _claim_canary(model_dir: Path) -> bool:
    """Take the model's canary lock for this process (kept until `_release_canary`);
    False when another live process holds it."""
    if str(model_dir) in _canary_locks:
        return True
    fd = os.open(Path(model_dir) / CANARY_LOCK, os.O_CREAT | os.O_RDWR | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return False
    _canary_locks[str(model_dir)] = fd
    return True


def _release_canary(model_dir: Path) -> None:
    fd = _canary_locks.pop(str(model_dir), None)
    if fd is not None:
        os.close(fd)


def _server_for(model: str, repo: ModelRepository, state_dir: Optional[Path]):
    """The running server of `state_dir` when it serves `model` from `repo`, else None."""
    if state_dir is None:
        return None
    server = running_server_for(model, state_dir)
    if server is None or Path(server.repository) != repo.root:
        return None
    return server


def _require_model(repo: ModelRepository, model: str) -> None:
    if not repo.model_dir(model).is_dir():
        raise LifecycleError(f"no model {model!r} in {repo.root} "
                             f"(models: {', '.join(repo.models()) or 'none'})",
                             next_step="pass --repository with the repository the Pusher "
                                       "publishes to, or another --model")


def _require_promotable(repo: ModelRepository, model: str, version: int) -> None:
    if version in repo.versions(model) or version in repo.candidates(model):
        return
    if version in repo.rejected_versions(model):
        lineage = repo.lineage(model, version)
        why = (lineage.rejected or {}).get("reason", "") if lineage else ""
        raise LifecycleError(f"{model} version {version} was rejected ({why or 'no reason'}); "
                             f"it is kept for the post-mortem, not for serving")
    raise LifecycleError(f"{model} has no version {version} in {repo.model_dir(model)} "
                         f"(published {repo.versions(model)}, candidates "
                         f"{repo.candidates(model)})",
                         next_step=f"`python -m serving versions --model {model}`")


def _promote_step(model: str, version: int, repo: ModelRepository) -> str:
    return (f"`python -m serving promote --model {model} --version {version} "
            f"--repository {repo.root}` serves it (an operator's promote keeps the hold); "
            f"`python -m serving release --model {model}` lets runs promote again")
