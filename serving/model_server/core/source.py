"""The Source: polls each model's base path and emits the versions the policy aspires to.

Like TF Serving's FileSystemStoragePathSource, every integer-named directory under a base
path is a version. Unlike it, a directory that is not yet a complete SavedModel (a copy in
progress, no saved_model.pb + variables/) is not aspired while it is still changing, so a
half-written version can neither fail a load nor displace the served one from `latest`.
One that stays as it is for INCOMPLETE_SETTLE_SECONDS (and two polls) is aspired as it is:
the loader then says what is wrong with it (or loads it, if its graph has no variables),
instead of the server waiting for it forever.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from pathlib import Path
from typing import Callable, Dict, List, Mapping, NamedTuple, Optional, Tuple

from tensorflow_serving.config import file_system_storage_path_source_pb2 as fs_pb2

log = logging.getLogger("serving.model_server")

VersionPolicy = fs_pb2.FileSystemStoragePathSourceConfig.ServableVersionPolicy
SAVED_MODEL_FILES = ("saved_model.pb", "saved_model.pbtxt")
INCOMPLETE_SETTLE_SECONDS = 3.0


class VersionDir(NamedTuple):
    """An aspired version's directory and a fingerprint of its files (names, sizes,
    mtimes), so a version whose load failed is retried once its files change - e.g. a
    non-atomic copy that was caught half-way."""

    path: str
    fingerprint: int = 0


AspiredCallback = Callable[[str, Dict[int, VersionDir]], None]


def fingerprint(path: str) -> int:
    entries = []
    for dirpath, _, filenames in os.walk(path):
        for name in filenames:
            full = os.path.join(dirpath, name)
            try:
                st = os.stat(full)
            except OSError:
                continue
            entries.append((os.path.relpath(full, path), st.st_size, st.st_mtime_ns))
    return hash(tuple(sorted(entries)))


def default_policy() -> VersionPolicy:
    p = VersionPolicy()
    p.latest.num_versions = 1
    return p


def select_versions(policy: VersionPolicy, versions: List[int]) -> List[int]:
    """The versions `policy` aspires to among the complete `versions` (any order)."""
    versions = sorted(set(versions))
    choice = policy.WhichOneof("policy_choice")
    if choice == "all":
        return versions
    if choice == "specific":
        wanted = set(policy.specific.versions)
        return [v for v in versions if v in wanted]
    n = policy.latest.num_versions if choice == "latest" else 1
    n = n or 1  # TF Serving treats an unset num_versions as 1
    return versions[-n:] if versions else []


def scan_versions(base_path: Path) -> Tuple[Dict[int, str], List[str]]:
    """(complete versions -> path, incomplete version dirs) under base_path."""
    complete: Dict[int, str] = {}
    incomplete: List[str] = []
    for entry in base_path.iterdir():
        name = entry.name
        if not (name.isascii() and name.isdigit()) or not entry.is_dir():
            continue
        version = int(name)
        if is_complete_saved_model(entry):
            complete[version] = str(entry)
        else:
            incomplete.append(str(entry))
    return complete, incomplete


class FileSystemSource:
    """Polls base paths every `poll_wait_seconds`; calls `callback(model, {version: VersionDir})`
    whenever that changes.

    poll_wait_seconds > 0 polls periodically; 0 (or less) polls once per model, as the
    tensorflow_model_server flag does.
    """

    def __init__(self, callback: AspiredCallback, poll_wait_seconds: float = 1.0):
        self._callback = callback
        self._poll_wait = poll_wait_seconds
        self._lock = threading.Lock()
        self._models: Dict[str, Tuple[Path, VersionPolicy]] = {}
        self._last: Dict[str, Optional[Dict[int, VersionDir]]] = {}
        self._warned: Dict[str, str] = {}
        self._unchanged: Dict[str, Tuple[int, float, int]] = {}  # path -> (print, since, polls)
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None

    def set_models(self, models: Mapping[str, Tuple[str, VersionPolicy]]) -> None:
        """Replace the polled models; removed ones get an empty aspired set (unload)."""
        with self._lock:
            removed = set(self._models) - set(models)
            new = {}
            for name, (base_path, policy) in models.items():
                new[name] = (Path(base_path), policy)
                old = self._models.get(name)
                if old is None or old[0] != new[name][0] or old[1] != policy:
                    self._last.pop(name, None)  # force an emit on the next poll
            self._models = new
            for name in removed:
                self._last.pop(name, None)
                self._warned.pop(name, None)
        for name in removed:
            self._callback(name, {})
        self.poll_once()

    def poll_once(self) -> None:
        with self._lock:
            models = dict(self._models)
        for name, (base_path, policy) in models.items():
            aspired = self._aspired(name, base_path, policy)
            with self._lock:
                if self._models.get(name, (None, None))[0] != base_path:
                    continue  # removed or re-pointed while we scanned
                if self._last.get(name) == aspired:
                    continue
                self._last[name] = aspired
            self._callback(name, aspired)

    def _aspired(self, name: str, base_path: Path,
                 policy: VersionPolicy) -> Dict[int, VersionDir]:
        try:
            complete, incomplete = scan_versions(base_path)
        except FileNotFoundError:
            self._warn_once(name, "missing",
                            f"Could not find base path {base_path} for servable {name} "
                            f"with error NOT_FOUND: {base_path} not found; "
                            f"waiting for the first version of model {name}")
            return {}
        except OSError as e:
            self._warn_once(name, "error", f"Could not list base path {base_path} for "
                                           f"servable {name}: {e}")
            return {}
        prefix = str(base_path) + os.sep
        for path in [p for p in self._unchanged if p.startswith(prefix) and
                     p not in incomplete]:
            del self._unchanged[path]  # completed or removed
        waiting = []
        for path in sorted(incomplete):
            if self._settled(path):
                complete[int(Path(path).name)] = path
            else:
                waiting.append(path)
        if waiting:
            self._warn_once(name, "incomplete:" + ",".join(waiting),
                            f"Not loading {', '.join(waiting)} of servable {name} yet: no "
                            f"complete saved_model.pb and variables/ (still being written?). "
                            f"Loading it as it is if it stays unchanged for "
                            f"{INCOMPLETE_SETTLE_SECONDS:g} s")
        elif not complete:
            self._warn_once(name, "empty",
                            f"No versions of servable {name} found under base path {base_path}. "
                            f"Did you forget to name your leaf directory as a number "
                            f"(eg. '/1/')? Waiting for the first version of model {name}")
        else:
            self._warned.pop(name, None)
        selected = select_versions(policy, list(complete))
        if policy.WhichOneof("policy_choice") == "specific":
            missing = sorted(set(policy.specific.versions) - set(selected))
            if missing:
                self._warn_once(name, f"specific-missing:{missing}",
                                f"Versions {missing} of servable {name} requested by the "
                                f"specific version policy are not under {base_path}")
        return {v: VersionDir(complete[v], fingerprint(complete[v])) for v in selected}

    def _settled(self, path: str) -> bool:
        """True once an incomplete version directory has stopped changing: the same files,
        sizes and mtimes for INCOMPLETE_SETTLE_SECONDS and two polls (at once when the
        source polls only once)."""
        if self._poll_wait <= 0:
            return True
        now, print_ = time.monotonic(), fingerprint(path)
        seen = self._unchanged.get(path)
        if seen is None or seen[0] != print_:
            self._unchanged[path] = (print_, now, 0)
            return False
        polls = seen[2] + 1
        self._unchanged[path] = (print_, seen[1], polls)
        return polls >= 2 and now - seen[1] >= INCOMPLETE_SETTLE_SECONDS

    def _warn_once(self, name: str, kind: str, message: str) -> None:
        if self._warned.get(name) != kind:
            self._warned[name] = kind
            log.warning(message)

    def start(self) -> None:
        if self._poll_wait <= 0 or self._thread is not None:
            return
        self._thread = threading.Thread(target=self._run, name="fs-source", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self._poll_wait):
            try:
                self.poll_once()
            except Exception:  # a poll must never kill the source
                log.exception("file system poll failed")

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)


def is_complete_saved_model(path: Path) -> bool:
    """What a version directory needs before it is loaded: the graph and the variables (a
    publisher that copies in place, unlike serving/repository.py's rename, shows them late).
    Here, not imported from the repository: the model server depends on nothing else in
    serving/, so its image carries only serving/model_server/."""
    return any((path / name).is_file() for name in SAVED_MODEL_FILES) and \
        (path / "variables").is_dir()
