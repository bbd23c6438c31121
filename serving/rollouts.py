"""The rollout record: which version of a model is served, kept with the repository.

Per model, `<repository>/<model>/.rollout.json` says what every server of that repository
serves: the **stable** version (what a request naming no version or the `stable` label
gets), the **previous** stable (kept loaded below stable, so a rollback is a label move),
the **canary** while a push is being verified, and an operator's **hold**. Every server
renders its model config from it (serving/lifecycle/model_config.py), so a restarted
server comes back with the recorded stable, not the newest version in the repository.

The record is not part of TF Serving's layout: a plain `tensorflow_model_server` ignores
it (a file, not an integer-named directory) and serves the newest published version,
which is the stable one unless an operator rolled back (see docs/rollouts.md).

Read-modify-write goes through `update()`, under the model's `.rollout.lock` (flock), and
the file is replaced atomically, so concurrent commands (a promote during a scheduled
retrain) see one record or the next, never a mix.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import fcntl
import getpass
import json
import logging
import os
import socket
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, Iterator, List, Optional

from serving.files import write_atomically

if TYPE_CHECKING:
    from serving.repository import ModelRepository

log = logging.getLogger("serving.rollouts")

RECORD_FILE = ".rollout.json"
LOCK_FILE = ".rollout.lock"
FORMAT = 1
MAX_EVENTS = 500  # the record's own history is bounded; `pipelines history` keeps the runs

# Roles a version can have, as `python -m serving versions` shows them.
STABLE, CANARY, PREVIOUS, CANDIDATE, REJECTED = "stable", "canary", "previous", "candidate", \
    "rejected"
SERVED_BEFORE, NEVER_SERVED = "served before", "never served"


class RolloutError(RuntimeError):
    """A rollout record that cannot be read or changed as asked."""


@dataclasses.dataclass
class Hold:
    by: str
    at: str
    reason: str = ""

    def describe(self) -> str:
        return f"held by {self.by} at {self.at}" + (f": {self.reason}" if self.reason else "")


@dataclasses.dataclass
class Rollout:
    """One model's served state. Versions are the repository's integer versions."""

    model: str
    stable: Optional[int] = None
    previous: Optional[int] = None
    canary: Optional[int] = None
    hold: Optional[Hold] = None
    # Every version that was ever stable, in the order it became stable (rollback --to
    # may only go back to one of these: they were verified, or served before verification).
    served: List[int] = dataclasses.field(default_factory=list)
    # Whether the stable version was verified through a server (False: promoted where no
    # server was up, or adopted from a repository that had no record).
    stable_verified: bool = False
    events: List[Dict[str, Any]] = dataclasses.field(default_factory=list)

    @property
    def held(self) -> bool:
        return self.hold is not None

    def loaded_versions(self) -> List[int]:
        """The versions the model's own entry loads: stable, and previous when it is lower
        (a request naming no version gets the highest loaded one, which must be stable)."""
        versions = [self.stable] if self.stable is not None else []
        if self.previous is not None and self.stable is not None and self.previous < self.stable:
            versions.insert(0, self.previous)
        return versions

    def labels(self) -> Dict[str, int]:
        """TF Serving version labels of the model's own entry."""
        labels = {}
        if self.stable is not None:
            labels[STABLE] = self.stable
        if self.previous is not None and self.previous in self.loaded_versions():
            labels[PREVIOUS] = self.previous
        return labels

    def make_stable(self, version: int, verified: bool) -> None:
        """`version` becomes stable; the old stable becomes previous."""
        if version == self.stable:
            self.stable_verified = self.stable_verified or verified
            return
        if self.stable is not None:
            self.previous = self.stable
        self.stable = version
        self.stable_verified = verified
        if self.canary == version:
            self.canary = None
        if version not in self.served:
            self.served.append(version)

    def roll_back(self, to: int) -> None:
        """Stable goes back to `to` (a version served before); previous becomes the stable
        before `to`, never the version rolled back from."""
        leaving = self.stable
        self.stable = to
        self.stable_verified = True
        earlier = [v for v in self.served[:self.served.index(to)] if v != leaving] \
            if to in self.served else []
        self.previous = earlier[-1] if earlier else None

    def note(self, action: str, version: Optional[int] = None, by: str = "",
             detail: str = "") -> None:
        self.events.append({"at": now(), "action": action, "version": version,
                            "by": by or actor(), **({"detail": detail} if detail else {})})
        del self.events[:-MAX_EVENTS]

    def to_json(self) -> Dict[str, Any]:
        d = dataclasses.asdict(self)
        return {"format": FORMAT, **d}

    @classmethod
    def from_json(cls, d: Dict[str, Any]) -> "Rollout":
        known = {f.name for f in dataclasses.fields(cls)}
        d = {k: v for k, v in d.items() if k in known}
        if d.get("hold"):
            d["hold"] = Hold(**d["hold"])
        return cls(**d)


def record_path(model_dir: Path) -> Path:
    return Path(model_dir) / RECORD_FILE


def load(model_dir: Path, model: str) -> Rollout:
    """The model's record; an empty one (nothing stable yet) when there is none."""
    path = record_path(model_dir)
    try:
        return Rollout.from_json(json.loads(path.read_text()))
    except FileNotFoundError:
        return Rollout(model=model)
    except (ValueError, TypeError) as e:
        raise RolloutError(f"the rollout record {path} cannot be read: {e}; fix or remove it "
                           f"(then `python -m serving promote` sets the stable version "
                           f"again)") from e


@contextlib.contextmanager
def update(model_dir: Path, model: str) -> Iterator[Rollout]:
    """Read, change and write the model's record under its lock. Nothing is written when
    the body raises."""
    model_dir = Path(model_dir)
    model_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(model_dir / LOCK_FILE, os.O_CREAT | os.O_RDWR | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        record = load(model_dir, model)
        yield record
        write_atomically(record_path(model_dir), json.dumps(record.to_json(), indent=2))
    finally:
        os.close(fd)


def role_of(record: Rollout, version: int, published: bool, candidate: bool,
            rejected: bool) -> str:
    """The role `versions` shows for one version."""
    if rejected:
        return REJECTED
    if version == record.stable:
        return STABLE
    if version == record.canary:
        return CANARY
    if version == record.previous:
        return PREVIOUS
    if candidate:
        return CANDIDATE
    if version in record.served:
        return SERVED_BEFORE
    return NEVER_SERVED


def prepare_for_serving(repo: "ModelRepository", models) -> Dict[str, Rollout]:
    """Each model's record as `up` serves it. A repository with no record yet (made before
    rollouts, or by another tool) adopts its newest published version as stable, as a
    plain TF Serving would serve it. A canary left by a run that died is dropped (the
    version stays a candidate)."""
    records = {}
    for model in models:
        with update(repo.model_dir(model), model) as record:
            published = repo.versions(model)
            if record.stable is not None and record.stable not in published:
                log.warning("%s: stable version %s is gone from %s; serving the newest "
                            "published version instead", model, record.stable,
                            repo.model_dir(model))
                record.stable = None
            if record.previous is not None and record.previous not in published:
                record.previous = None
            if record.stable is None and published:
                record.make_stable(published[-1], verified=False)
                record.note("adopt", published[-1],
                            detail="the newest published version (no stable recorded)")
            if record.canary is not None:
                forget_canary(repo, model, record,
                              "left by a run that did not finish; it stays a candidate")
            records[model] = record
    return records


def forget_canary(repo: "ModelRepository", model: str, record: Rollout,
                  why: str) -> Optional[int]:
    """Drop the record's canary, whose check will not finish (its run died). A canary whose
    promotion was cut short - already renamed into the published versions, but the record
    never said stable - goes back to the candidates, where no plain server sees it: stable
    is what the record says. Returns the version dropped, or None."""
    version = record.canary
    if version is None:
        return None
    if (version in repo.versions(model) and version != record.stable
            and version not in record.served):
        repo.return_to_candidates(model, version)
        why += "; its promotion had not finished, so it went back to the candidates"
    record.canary = None
    record.note("drop canary", version, detail=why)
    return version


def now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def actor() -> str:
    """Who acts: the user and host (an operator's command, or the scheduled run's user)."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = str(os.getuid())
    return f"{user}@{socket.gethostname()}"
