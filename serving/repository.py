"""The model repository: `<root>/<model>/<version>/saved_model.pb`, the layout TF Serving polls.

A model server polling a base path loads every integer-named directory it finds, so a
version must appear there complete or not at all (tensorflow/serving#631, tfx#4466).
Publishing therefore copies into a non-integer staging directory beside the versions
(same filesystem) and renames it into place; a failed publish removes its staging
directory and leaves the repository as it was. A publisher killed with SIGKILL cannot
clean up, so each staging directory has a lock file beside it that its publisher holds
(flock, released by the kernel when the process dies): the next publish removes the
staging directories whose lock is free, and never one whose publisher is alive.

A push lands as a **candidate**, `<root>/<model>/.candidates/<version>/`: a server polling
the base path (the official image's default `latest` policy included) never sees it, as
it is not an integer-named child of `<model>/`. `promote_candidate` renames it into
`<model>/<version>` once it is verified (or at once, where no server can verify it); the
rollout record (serving/rollouts.py) says which published version is served. The canary
entry of a server's model config points at `.candidates/`, so a canary is loaded from
there and never by a plain server. Version numbers are one sequence over the published
versions, the candidates and the rejected ones, taken under the model's `.versions.lock`.

A version found bad (a failed canary, a failed post-push check) is withdrawn by renaming
it to `.rejected-<version>`: servers stop seeing it at their next poll, its number is
never given out again, and its lineage record says why.

A publish that runs out of space (ENOSPC anywhere: the copy, the lineage record, the
fsync, the rename) raises `RepositoryDiskFull`, naming the filesystem, its free space and
the path; its staging directory is removed like any failed publish's, so the next publish,
once there is space, needs no cleanup.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import fcntl
import hashlib
import logging
import os
import re
import shutil
import uuid
from pathlib import Path
from typing import Iterator, List, Optional, Tuple

from serving import disk
from serving.files import write_atomically
from serving import lineage as lineage_record

log = logging.getLogger("serving.repository")

STAGING_PREFIX = ".staging-"
CANDIDATES_DIR = ".candidates"
VERSIONS_LOCK = ".versions.lock"
# The highest number given out, so one removed by retention (serving/retention.py) is
# never given out again.
LAST_VERSION_FILE = ".last-version"
STAGING_LOCK_SUFFIX = ".lock"
# Where a TFX Model artifact keeps its SavedModel (tfx.utils.path_utils.serving_model_path).
SERVING_MODEL_DIR = "Format-Serving"
REJECTED_PREFIX = ".rejected-"
SAVED_MODEL_FILES = ("saved_model.pb", "saved_model.pbtxt")
_STAGING_PID = re.compile(r"^\.staging-(\d+)-")


class RepositoryError(RuntimeError):
    """A repository operation that cannot be done as asked (not writable, invalid model...)."""


class RepositoryDiskFull(disk.DiskFull, RepositoryError):
    """A publish ran out of space; nothing was published and its staging copy is gone."""


def is_complete_saved_model(path: Path) -> bool:
    """True when `path` holds what a server needs to load it: the graph and the variables."""
    return any((path / name).is_file() for name in SAVED_MODEL_FILES) and (path / "variables").is_dir()


@dataclasses.dataclass
class Publication:
    """A publish in progress: fill `staging`; after the `with` block `version`/`path` are set."""

    model_name: str
    staging: Path
    version: Optional[int] = None
    path: Optional[Path] = None


class ModelRepository:
    """Versioned SavedModels on a filesystem, written atomically, read by TF Serving."""

    def __init__(self, root: os.PathLike | str):
        self.root = Path(root).absolute()

    def __repr__(self) -> str:
        return f"ModelRepository({str(self.root)!r})"

    def model_dir(self, model_name: str) -> Path:
        if not model_name or "/" in model_name or model_name.startswith("."):
            raise RepositoryError(f"invalid model name {model_name!r}")
        return self.root / model_name

    def version_path(self, model_name: str, version: int) -> Path:
        return self.model_dir(model_name) / str(version)

    def versions(self, model_name: str) -> List[int]:
        """Published versions, ascending: integer-named directories holding a complete SavedModel."""
        return [v for v in self._listed_versions(model_name)[0]
                if is_complete_saved_model(self.version_path(model_name, v))]

    def latest_version(self, model_name: str) -> Optional[int]:
        versions = self.versions(model_name)
        return versions[-1] if versions else None

    def candidates_dir(self, model_name: str) -> Path:
        """Where pushed versions wait to be verified and promoted (a base path of its own)."""
        return self.model_dir(model_name) / CANDIDATES_DIR

    def candidate_path(self, model_name: str, version: int) -> Path:
        return self.candidates_dir(model_name) / str(version)

    def return_to_candidates(self, model_name: str, version: int) -> Path:
        """Undo `promote_candidate` (a promotion the server refused): `<model>/<version>`
        back to `.candidates/<version>`, where no plain server sees it."""
        with self._versions_lock(model_name):
            target = self.candidate_path(model_name, version)
            self.candidates_dir(model_name).mkdir(exist_ok=True)
            os.rename(self.version_path(model_name, version), target)
            _fsync_dir(self.model_dir(model_name))
            _fsync_dir(self.candidates_dir(model_name))
        return target

    def candidates(self, model_name: str) -> List[int]:
        """Versions pushed but not promoted (complete SavedModels), ascending."""
        return [v for v in _numbered(self.candidates_dir(model_name))
                if is_complete_saved_model(self.candidate_path(model_name, v))]

    def locate(self, model_name: str, version: int) -> Optional[Path]:
        """The directory of `version` wherever it is: published, candidate or rejected."""
        for path in (self.version_path(model_name, version),
                     self.candidate_path(model_name, version),
                     self.model_dir(model_name) / f"{REJECTED_PREFIX}{version}"):
            if path.is_dir():
                return path
        return None

    def promote_candidate(self, model_name: str, version: int) -> Path:
        """Rename candidate `version` into `<model>/<version>`, where servers polling the
        base path see it; a version already published is left as it is. Returns its path."""
        target = self.version_path(model_name, version)
        with self._versions_lock(model_name):
            if is_complete_saved_model(target):
                return target
            source = self.candidate_path(model_name, version)
            if not is_complete_saved_model(source):
                raise RepositoryError(f"{model_name} has no candidate version {version} in "
                                      f"{self.candidates_dir(model_name)}")
            os.rename(source, target)
            _fsync_dir(self.model_dir(model_name))
            _fsync_dir(self.candidates_dir(model_name))
        return target

    def version_with_same_content(self, model_name: str, path: Path) -> Optional[int]:
        """The newest published version, or the newest candidate, when it holds exactly the
        files under `path`, else None.

        Lets a re-run that produced the same model (a cached Trainer re-evaluated against
        itself) skip a publish that would only make every server reload identical bytes.
        """
        newest = [(v, self.version_path(model_name, v)) for v in self.versions(model_name)[-1:]]
        newest += [(v, self.candidate_path(model_name, v))
                   for v in self.candidates(model_name)[-1:]]
        if not newest:
            return None
        digest = tree_digest(Path(path))
        for version, where in sorted(newest, reverse=True):
            if tree_digest(where) == digest:
                return version
        return None

    def models(self) -> List[str]:
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir()
                      if p.is_dir() and not p.name.startswith("."))

    def check_writable(self, model_name: str) -> None:
        """Fail early (before hours of training) when a publish could not succeed.

        Probes the nearest existing directory on the way to `<root>/<model>` and leaves
        nothing behind, so a run that fails later has not touched the repository.
        """
        model_dir = self.model_dir(model_name)
        existing = model_dir
        while not existing.exists() and existing != existing.parent:
            existing = existing.parent
        try:
            if not existing.is_dir():
                raise NotADirectoryError(errno.ENOTDIR, "not a directory", str(existing))
            probe = existing / f"{STAGING_PREFIX}probe-{uuid.uuid4().hex}"
            probe.mkdir()
            probe.rmdir()
        except OSError as e:
            raise RepositoryError(
                f"model repository {self.root} is not writable: "
                f"{e.strerror or e}: {e.filename or existing}") from e

    @contextlib.contextmanager
    def publish(self, model_name: str, candidate: bool = False) -> Iterator[Publication]:
        """Stage a new version; on clean exit it becomes the next integer version atomically:
        `<model>/<version>`, or `<model>/.candidates/<version>` when `candidate`.

        The body writes a SavedModel into `publication.staging`. If the body raises, or the
        staged directory is not a complete SavedModel, the staging directory is removed and
        no version appears. Staging directories left by dead publishers are removed first.
        """
        model_dir = self.model_dir(model_name)
        self.reclaim_staging(model_name)  # first: what a publisher killed mid-copy left frees space
        try:
            self.check_writable(model_name)
            model_dir.mkdir(parents=True, exist_ok=True)
            staging = model_dir / f"{STAGING_PREFIX}{os.getpid()}-{uuid.uuid4().hex}"
            lock_path = _lock_path(staging)
            lock_fd = os.open(lock_path, os.O_CREAT | os.O_RDWR | os.O_CLOEXEC, 0o644)
        except (OSError, RepositoryError) as e:
            self._raise_if_full(e, model_name, model_dir)
            raise
        try:
            fcntl.flock(lock_fd, fcntl.LOCK_EX)  # ours alone: the name is new
            publication = Publication(model_name=model_name, staging=staging)
            try:
                staging.mkdir()  # a full directory table fails here
                yield publication
                if not is_complete_saved_model(staging):
                    raise RepositoryError(f"refusing to publish {model_name}: {staging} has no "
                                          f"saved_model.pb and variables/")
                _fsync_tree(staging)
                publication.version = self._rename_into_next_version(model_name, staging,
                                                                     candidate)
            except Exception as e:  # the copy (TensorFlow's errors too), fsync, rename
                self._raise_if_full(e, model_name, staging)
                raise
            publication.path = (self.candidate_path if candidate else self.version_path)(
                model_name, publication.version)
        finally:
            if staging.exists():
                shutil.rmtree(staging, ignore_errors=True)
            lock_path.unlink(missing_ok=True)
            os.close(lock_fd)

    def _raise_if_full(self, error: BaseException, model_name: str, where: Path) -> None:
        path = disk.find_full_disk(error)
        if path is not None:
            raise RepositoryDiskFull(
                path or where, f"publishing {model_name} into {self.root}",
                "nothing was published (the staging copy is removed)") from error

    def reclaim_staging(self, model_name: str) -> List[Path]:
        """Remove staging directories whose publisher is gone (killed mid-publish); returns
        them. A staging directory whose lock is held, or whose lock file is already gone
        (its publisher is finishing), is left alone."""
        model_dir = self.model_dir(model_name)
        if not model_dir.is_dir():
            return []
        removed = []
        for staging in model_dir.glob(f"{STAGING_PREFIX}*"):
            if staging.name.endswith(STAGING_LOCK_SUFFIX):
                # a publisher killed after it removed its staging copy leaves the lock alone
                if not staging.with_name(staging.name[:-len(STAGING_LOCK_SUFFIX)]).exists() \
                        and not _held(staging):
                    staging.unlink(missing_ok=True)
                continue
            if not staging.is_dir():
                continue
            if _owner_alive(staging):
                continue
            shutil.rmtree(staging, ignore_errors=True)
            _lock_path(staging).unlink(missing_ok=True)
            log.info("removed %s, left by a publisher that is gone", staging)
            removed.append(staging)
        return removed

    def reject(self, model_name: str, version: int, reason: str) -> Path:
        """Withdraw a published or candidate version: rename it to `.rejected-<version>`
        (servers stop seeing it, the number is never reused) and record why in its lineage.
        Returns the new path."""
        target = self.model_dir(model_name) / f"{REJECTED_PREFIX}{version}"
        with self._versions_lock(model_name):
            path = self.version_path(model_name, version)
            if not path.is_dir():
                path = self.candidate_path(model_name, version)
            if not path.is_dir():
                raise RepositoryError(f"{model_name} has no version {version} in {self.root}")
            os.rename(path, target)
            _fsync_dir(self.model_dir(model_name))
        record = lineage_record.read(target) or lineage_record.Lineage()
        record.rejected = {"at": lineage_record.now(), "reason": reason}
        lineage_record.write(target, record)
        return target

    def rejected_versions(self, model_name: str) -> List[int]:
        return self._listed_versions(model_name)[1]

    def lineage(self, model_name: str, version: int) -> Optional[lineage_record.Lineage]:
        """The lineage record of `version`, published, candidate or rejected."""
        path = self.locate(model_name, version)
        return lineage_record.read(path) if path is not None else None

    def version_from_model(self, model_name: str, model_uri: str) -> Optional[int]:
        """The version published from the Model artifact at `model_uri` (by its lineage);
        else, for a model a run found unchanged (its Pusher published nothing, as the bytes
        under `<model_uri>/Format-Serving` equal the newest version's), that version. A
        retrain warm-started from such a model names the version it started from."""
        for version in sorted(self.versions(model_name) + self.candidates(model_name),
                              reverse=True):
            record = self.lineage(model_name, version)
            if record is not None and record.model_uri == model_uri:
                return version
        serving_dir = Path(model_uri) / SERVING_MODEL_DIR
        if serving_dir.is_dir():
            return self.version_with_same_content(model_name, serving_dir)
        return None

    def _listed_versions(self, model_name: str) -> Tuple[List[int], List[int]]:
        """(integer-named entries, complete or not; rejected versions), ascending, from one
        listing of the model's directory."""
        model_dir = self.model_dir(model_name)
        if not model_dir.is_dir():
            return [], []
        numbered, rejected = [], []
        for entry in model_dir.iterdir():
            name = entry.name
            if name.isascii() and name.isdigit() and int(name) > 0:
                numbered.append(int(name))
            elif name.startswith(REJECTED_PREFIX) and name[len(REJECTED_PREFIX):].isdigit():
                rejected.append(int(name[len(REJECTED_PREFIX):]))
        return sorted(numbered), sorted(rejected)

    def _rename_into_next_version(self, model_name: str, staging: Path,
                                  candidate: bool) -> int:
        # Under the model's versions lock, so a number is taken once across the published
        # versions, the candidates and the rejected ones (a promotion or a withdrawal moves
        # a number between them under the same lock). rename(2) onto a non-empty directory
        # fails as well, for a publisher that does not take the lock (an older toolkit).
        if candidate:
            self.candidates_dir(model_name).mkdir(exist_ok=True)
        with self._versions_lock(model_name):
            while True:
                # a taken number - an integer-named entry, complete or not, a candidate or
                # a rejected version - is never reused
                numbered, rejected = self._listed_versions(model_name)
                version = max(numbered + rejected + _numbered(self.candidates_dir(model_name))
                              + [self._last_version(model_name)], default=0) + 1
                target = (self.candidate_path if candidate else self.version_path)(
                    model_name, version)
                try:
                    os.rename(staging, target)
                except OSError as e:
                    if e.errno in (errno.ENOTEMPTY, errno.EEXIST):
                        continue
                    raise
                _fsync_dir(target.parent)
                self._record_last_version(model_name, version)
                return version

    def _last_version(self, model_name: str) -> int:
        try:
            return int((self.model_dir(model_name) / LAST_VERSION_FILE).read_text().strip())
        except (FileNotFoundError, ValueError):
            return 0

    def _record_last_version(self, model_name: str, version: int) -> None:
        """Under the versions lock: remember the highest number given out. Best effort: the
        version is already in place, and while it exists it bounds the next number too."""
        path = self.model_dir(model_name) / LAST_VERSION_FILE
        try:
            write_atomically(path, f"{version}\n")
        except OSError as e:
            log.warning("could not record %s's last version %d in %s: %s", model_name,
                        version, path, e)

    @contextlib.contextmanager
    def _versions_lock(self, model_name: str) -> Iterator[None]:
        """The model's lock over version numbers and where each version lives."""
        model_dir = self.model_dir(model_name)
        model_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(model_dir / VERSIONS_LOCK, os.O_CREAT | os.O_RDWR | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)


def _numbered(directory: Path) -> List[int]:
    """The positive integer-named entries of `directory`, ascending ([] when it is absent)."""
    try:
        names = [entry.name for entry in directory.iterdir()]
    except (FileNotFoundError, NotADirectoryError):
        return []
    return sorted(int(n) for n in names if n.isascii() and n.isdigit() and int(n) > 0)


def tree_digest(root: Path) -> str:
    """sha256 over every file's relative path and bytes, in a stable order; the lineage
    record is not part of the model."""
    digest = hashlib.sha256()
    files = (p for p in root.rglob("*") if p.is_file() and p != root / lineage_record.LINEAGE_FILE)
    for file in sorted(files):
        digest.update(str(file.relative_to(root)).encode() + b"\0")
        with file.open("rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()


def _fsync_tree(root: Path) -> None:
    """Flush the staged files so a crash after the rename cannot expose empty files."""
    for dirpath, _, filenames in os.walk(root):
        for name in filenames:
            fd = os.open(os.path.join(dirpath, name), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        _fsync_dir(Path(dirpath))


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _lock_path(staging: Path) -> Path:
    """The lock file a live publisher holds beside its staging directory."""
    return staging.with_name(staging.name + STAGING_LOCK_SUFFIX)


def _held(lock_path: Path) -> bool:
    """Whether a live process holds the flock on `lock_path` (False when it is gone)."""
    try:
        fd = os.open(lock_path, os.O_RDWR | os.O_CLOEXEC)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # closing releases a lock we took
    return False


def _owner_alive(staging: Path) -> bool:
    """Whether the publisher of a staging directory still runs: its lock file is held. A
    staging directory with no lock file is judged by the pid in its name."""
    lock_path = _lock_path(staging)
    if not lock_path.exists():
        match = _STAGING_PID.match(staging.name)
        return match is None or _pid_alive(int(match.group(1)))
    return _held(lock_path)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
