"""The Manager: version states, the availability-preserving policy, and servable lookup.

States follow TF Serving's ModelVersionStatus: START -> LOADING -> AVAILABLE -> UNLOADING
-> END, and a failed load ends in END with its error. Unloading follows TF Serving's
AvailabilityPreservingPolicy: a version the source no longer aspires to is unloaded only
when an aspired version is AVAILABLE, when nothing is aspired any more, or when more than
one unaspired version is still serving - so a new version that fails to load (or is still
loading) never takes down the version being served.
"""

from __future__ import annotations

import dataclasses
import enum
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Dict, List, Mapping, Optional, Tuple, TypeVar

from serving.model_server.errors import Code, ServingError, invalid_argument
from serving.model_server.servable.loader import Loader, Servable

log = logging.getLogger("serving.model_server")
T = TypeVar("T")


class State(enum.IntEnum):
    """ModelVersionStatus.State values, so they convert to the proto one-to-one."""

    UNKNOWN = 0
    START = 10
    LOADING = 20
    AVAILABLE = 30
    UNLOADING = 40
    END = 50


@dataclasses.dataclass
class VersionStatus:
    version: int
    state: State
    error: Optional[ServingError] = None


@dataclasses.dataclass
class _Entry:
    version: int
    path: str
    loader: Loader
    state: State = State.START
    aspired: bool = True
    error: Optional[ServingError] = None
    servable: Optional[Servable] = None
    where: object = None


def servable_id(name: str, version: int) -> str:
    return f"{{name: {name} version: {version}}}"


def requested(model_spec) -> Tuple[str, Optional[int], Optional[str]]:
    """(model name, version, label) a request's ModelSpec asks for (version and label
    None: the version the policy serves); INVALID_ARGUMENT without a model name, in TF
    Serving's words (ServerCore::ServableRequestFromModelSpec)."""
    if not model_spec.name:
        raise invalid_argument("ModelSpec has no name specified.")
    choice = model_spec.WhichOneof("version_choice")
    return (model_spec.name, model_spec.version.value if choice == "version" else None,
            model_spec.version_label if choice == "version_label" else None)


def resolve(serving: Mapping[int, T], labels: Mapping[str, int], model: str,
            version: Optional[int] = None, label: Optional[str] = None) -> T:
    """What a model spec names among a model's AVAILABLE versions `serving`: the latest, a
    specific version, or a label's; TF Serving's errors when there is none."""
    if label:
        version = labels.get(label)
        if version is None:
            raise ServingError(Code.INVALID_ARGUMENT,
                               f"Unrecognized servable version label: {label}")
    if version is None:
        if not serving:
            raise ServingError(Code.NOT_FOUND, f"Servable not found for request: Latest({model})")
        return serving[max(serving)]
    found = serving.get(version)
    if found is None:
        raise ServingError(Code.NOT_FOUND,
                           f"Servable not found for request: Specific({model}, {version})")
    return found


LoaderFactory = Callable[[str, int, str], Loader]
# (model, version, new state, load error or None, version directory)
StateListener = Callable[[str, int, State, Optional[ServingError], str], None]


class Manager:
    """Owns every version of every model; thread-safe; loads on a small thread pool."""

    def __init__(self, loader_factory: LoaderFactory, num_load_threads: int = 1,
                 listener: Optional[StateListener] = None, max_load_retries: int = 0,
                 load_retry_interval: float = 60.0):
        self._loader_factory = loader_factory
        self._listener = listener
        self._max_load_retries = max(0, max_load_retries)
        self._load_retry_interval = max(0.0, load_retry_interval)
        self._cond = threading.Condition(threading.RLock())
        self._models: Dict[str, Dict[int, _Entry]] = {}
        self._labels: Dict[str, Dict[str, int]] = {}
        # model -> {version: servable} of its AVAILABLE versions: a snapshot replaced (never
        # mutated) on every state change, so `resolve`, once per request, takes no lock.
        self._serving: Dict[str, Dict[int, Servable]] = {}
        self._pool = ThreadPoolExecutor(max_workers=max(1, num_load_threads),
                                        thread_name_prefix="load")
        self._closed = False

    # ---- source side ---------------------------------------------------------------
    def set_aspired_versions(self, model: str, aspired: Mapping[int, object]) -> None:
        """The source's whole current wish for `model` (an empty mapping unloads it).

        Values are paths or `VersionDir`s; a version that failed to load is retried only
        when its VersionDir (path or file fingerprint) has changed since.
        """
        with self._cond:
            if self._closed:
                return
            entries = self._models.setdefault(model, {})
            for version, entry in entries.items():
                entry.aspired = version in aspired
            for version, where in sorted(aspired.items()):
                path = where if isinstance(where, str) else where.path
                entry = entries.get(version)
                if entry is not None and entry.state != State.END:
                    continue
                if entry is not None and entry.error is not None and entry.where == where:
                    continue  # failed before; not retried until the directory changes
                if entry is not None and entry.error is not None:
                    log.info("Retrying servable version %s: its files changed since it "
                             "failed to load", servable_id(model, version))
                entry = _Entry(version, path, self._loader_factory(model, version, path),
                               where=where)
                entries[version] = entry
                self._set_state(model, entry, State.START)
                self._pool.submit(self._load, model, entry)
            self._reconcile(model)
            self._cond.notify_all()  # a load waiting to retry checks if it is still wanted

    def _load(self, model: str, entry: _Entry) -> None:
        with self._cond:
            if self._closed or not entry.aspired or self._models[model].get(entry.version) \
                    is not entry:
                self._set_state(model, entry, State.END)
                return
            self._set_state(model, entry, State.LOADING)
        log.info("Loading servable version %s", servable_id(model, entry.version))
        started = time.monotonic()
        retry = 0
        while True:
            try:
                servable = entry.loader.load()
                break
            except BaseException as e:  # noqa: BLE001 - a failed load is a state, not a crash
                error = e if isinstance(e, ServingError) else ServingError(
                    Code.UNKNOWN, f"{type(e).__name__}: {e}")
            log.error("Loading servable version %s failed: %s: %s",
                      servable_id(model, entry.version), error.code.name, error.message)
            if retry < self._max_load_retries and self._wait_to_retry(model, entry):
                retry += 1
                log.info("Retrying of Loading servable version %s retry: %d",
                         servable_id(model, entry.version), retry)
                continue
            with self._cond:
                entry.error = error
                self._set_state(model, entry, State.END)
                self._reconcile(model)
            return
        with self._cond:
            if self._closed:
                servable.close()
                self._set_state(model, entry, State.END)
                return
            entry.servable = servable
            self._set_state(model, entry, State.AVAILABLE)
            log.info("Successfully loaded servable version %s (%.2f s)",
                     servable_id(model, entry.version), time.monotonic() - started)
            self._reconcile(model)

    def _wait_to_retry(self, model: str, entry: _Entry) -> bool:
        """Sleep the retry interval (--load_retry_interval_micros); False when the version
        stopped being wanted meanwhile (no longer aspired, replaced, or shutting down)."""
        def cancelled():
            return (self._closed or not entry.aspired
                    or self._models[model].get(entry.version) is not entry)
        with self._cond:
            return not self._cond.wait_for(cancelled, timeout=self._load_retry_interval)

    def _reconcile(self, model: str) -> None:
        """Unload unaspired versions, one at a time, as long as the policy allows it."""
        entries = self._models.get(model, {})
        while True:
            has_aspired = any(e.aspired for e in entries.values())
            aspired_serving = any(e.aspired and e.state == State.AVAILABLE
                                  for e in entries.values())
            unaspired_serving = sorted(v for v, e in entries.items()
                                       if not e.aspired and e.state == State.AVAILABLE)
            if unaspired_serving and (not has_aspired or aspired_serving
                                      or len(unaspired_serving) > 1):
                self._unload(model, entries[unaspired_serving[0]])
            else:
                return

    def _unload(self, model: str, entry: _Entry) -> None:
        # A request that already holds the servable keeps it alive until it finishes;
        # removing it here only stops new requests from finding it.
        sid = servable_id(model, entry.version)
        self._set_state(model, entry, State.UNLOADING)
        log.info("Quiescing servable version %s", sid)
        servable, entry.servable = entry.servable, None
        if servable is not None:
            threading.Thread(target=servable.close, daemon=True).start()
        self._set_state(model, entry, State.END)
        log.info("Done unloading servable version %s", sid)

    def _set_state(self, model: str, entry: _Entry, state: State) -> None:
        entry.state = state
        self._serving[model] = {v: e.servable for v, e in self._models[model].items()
                                if e.state == State.AVAILABLE and e.servable is not None}
        self._cond.notify_all()
        if self._listener is not None:
            try:
                self._listener(model, entry.version, state, entry.error, entry.path)
            except Exception:  # metrics must never break state changes
                log.exception("state listener failed")

    # ---- labels --------------------------------------------------------------------
    def set_labels(self, model: str, labels: Mapping[str, int],
                   allow_unavailable: bool = False) -> None:
        """Assign version labels; a label may only point at an AVAILABLE version unless
        allow_unavailable, and then only when the label is new (TF Serving's rule)."""
        with self._cond:
            current = self._labels.get(model, {})
            entries = self._models.get(model, {})
            for label, version in labels.items():
                entry = entries.get(version)
                available = entry is not None and entry.state == State.AVAILABLE
                if available or (allow_unavailable and label not in current) or \
                        current.get(label) == version:
                    continue
                raise ServingError(
                    Code.FAILED_PRECONDITION,
                    f"Request to assign label to version {version} of model {model}, which is "
                    f"not currently available for inference")
            self._labels[model] = dict(labels)

    def labels(self, model: str) -> Dict[str, int]:
        with self._cond:
            return dict(self._labels.get(model, {}))

    # ---- lookup and status ---------------------------------------------------------
    def resolve(self, model: str, version: Optional[int] = None,
                label: Optional[str] = None) -> Servable:
        """The one lookup: latest AVAILABLE, a specific version, or a label."""
        return resolve(self._serving.get(model, {}), self._labels.get(model, {}), model,
                       version, label)

    def serving(self) -> Tuple[Dict[str, Dict[int, Servable]], Dict[str, Dict[str, int]]]:
        """(model -> {version: servable} of the AVAILABLE versions, model -> labels)."""
        with self._cond:
            return dict(self._serving), {m: dict(v) for m, v in self._labels.items()}

    def models(self) -> List[str]:
        with self._cond:
            return sorted(self._models)

    def version_states(self, model: str) -> List[VersionStatus]:
        """Every version the manager has seen for `model`, newest first (as TF Serving)."""
        with self._cond:
            entries = self._models.get(model, {})
            return [VersionStatus(v, e.state, e.error)
                    for v, e in sorted(entries.items(), reverse=True)]

    def wait_for(self, predicate: Callable[[], bool], timeout: Optional[float] = None) -> bool:
        """Block until `predicate()` (evaluated under the manager lock) holds."""
        with self._cond:
            return self._cond.wait_for(predicate, timeout)

    def initial_load_settled(self, model: str) -> Tuple[bool, Optional[str]]:
        """(settled, error): settled once a version is AVAILABLE or every aspired one failed."""
        entries = self._models.get(model, {})
        if any(e.state == State.AVAILABLE for e in entries.values()):
            return True, None
        aspired = [e for e in entries.values() if e.aspired]
        if aspired and all(e.state == State.END for e in aspired):
            errors = "; ".join(f"{servable_id(model, e.version)}: "
                               f"{e.error.message if e.error else 'unloaded'}" for e in aspired)
            return True, errors
        return False, None

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()  # ends a load's retry wait
            servables = [e.servable for m in self._models.values() for e in m.values()
                         if e.servable is not None]
        self._pool.shutdown(wait=False, cancel_futures=True)
        for s in servables:
            s.close()
