"""The model repository: `<root>/<model>/<version>/saved_model.pb`, the layout TF Serving polls.

A model server polling a base path loads every integer-named directory it finds, so a
version must appear there complete or not at all (tensorflow/serving#631, tfx#4466).
Publishing therefore copies into a non-integer staging directory beside the versions
(same filesystem) and renames it into place; a failed publish removes its staging
directory and leaves the repository as it was.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import hashlib
import os
import shutil
import uuid
from pathlib import Path
from typing import Iterator, List, Optional

STAGING_PREFIX = ".staging-"
SAVED_MODEL_FILES = ("saved_model.pb", "saved_model.pbtxt")


class RepositoryError(RuntimeError):
    """A repository operation that cannot be done as asked (not writable, invalid model...)."""


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
        return [v for v in self._taken_versions(model_name)
                if is_complete_saved_model(self.version_path(model_name, v))]

    def latest_version(self, model_name: str) -> Optional[int]:
        versions = self.versions(model_name)
        return versions[-1] if versions else None

    def version_with_same_content(self, model_name: str, path: Path) -> Optional[int]:
        """The latest version when it holds exactly the files under `path`, else None.

        Lets a re-run that produced the same model (a cached Trainer re-evaluated against
        itself) skip a publish that would only make every server reload identical bytes.
        """
        latest = self.latest_version(model_name)
        if latest is None:
            return None
        same = tree_digest(self.version_path(model_name, latest)) == tree_digest(Path(path))
        return latest if same else None

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
    def publish(self, model_name: str) -> Iterator[Publication]:
        """Stage a new version; on clean exit it becomes the next integer version atomically.

        The body writes a SavedModel into `publication.staging`. If the body raises, or the
        staged directory is not a complete SavedModel, the staging directory is removed and
        no version appears.
        """
        self.check_writable(model_name)
        self.model_dir(model_name).mkdir(parents=True, exist_ok=True)
        staging = self.model_dir(model_name) / f"{STAGING_PREFIX}{os.getpid()}-{uuid.uuid4().hex}"
        staging.mkdir()
        publication = Publication(model_name=model_name, staging=staging)
        try:
            yield publication
            if not is_complete_saved_model(staging):
                raise RepositoryError(
                    f"refusing to publish {model_name}: {staging} has no saved_model.pb and variables/")
            _fsync_tree(staging)
            publication.version = self._rename_into_next_version(model_name, staging)
            publication.path = self.version_path(model_name, publication.version)
        finally:
            if staging.exists():
                shutil.rmtree(staging, ignore_errors=True)

    def _taken_versions(self, model_name: str) -> List[int]:
        """Every integer-named entry, complete or not: a taken number is never reused."""
        model_dir = self.model_dir(model_name)
        if not model_dir.is_dir():
            return []
        taken = []
        for entry in model_dir.iterdir():
            if entry.name.isascii() and entry.name.isdigit() and int(entry.name) > 0:
                taken.append(int(entry.name))
        return sorted(taken)

    def _rename_into_next_version(self, model_name: str, staging: Path) -> int:
        # rename(2) onto a non-empty directory fails, so two racing publishers that pick
        # the same number cannot both win: the loser retries with the next number.
        while True:
            taken = self._taken_versions(model_name)
            version = taken[-1] + 1 if taken else 1
            try:
                os.rename(staging, self.version_path(model_name, version))
            except OSError as e:
                if e.errno in (errno.ENOTEMPTY, errno.EEXIST):
                    continue
                raise
            _fsync_dir(self.model_dir(model_name))
            return version


def tree_digest(root: Path) -> str:
    """sha256 over every file's relative path and bytes, in a stable order."""
    digest = hashlib.sha256()
    for file in sorted(p for p in root.rglob("*") if p.is_file()):
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
