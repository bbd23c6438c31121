"""The lifecycle's Python API: what the CLI and the pipeline runner call.

Every function takes the state directory `up` recorded its server in, so a later process
(`status`, `wait`, the pipeline runner after a push) talks to the same server. What each
server serves comes from the rollout records (serving/rollouts.py); the commands that
change them (promote, rollback, hold, the push's canary) are serving/lifecycle/rollout.py.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence

import requests

from serving.lifecycle import backends, health, model_config, sample, state as state_store
from serving.lifecycle.config import DEFAULT_STATE_DIR, MODEL_CONFIG_FILENAME, UpConfig
from serving.lifecycle.errors import (EnvironmentProblem, LifecycleError, NotRunning,
                                      ServerExited, VersionFailed, WaitTimeout)
from serving.lifecycle.report import ModelReport, ServerReport
from serving.lifecycle.state import ServerState
from serving import rollouts
from serving.repository import ModelRepository, RepositoryError

log = logging.getLogger("serving.lifecycle")

LOG_TAIL = 30
# How long `up` waits for the server to listen when it must not wait for versions.
START_SECONDS = 300.0


def up(config: UpConfig) -> ServerState:
    """Start serving `config.models`; returns once each model's stable version (its rollout
    record's, serving/rollouts.py) is AVAILABLE (unless config.wait_seconds is 0). The state
    is recorded first, so `down` works even when the wait fails.

    The server reads a generated models.config rendered from the rollout records (specific
    versions and labels, serving/lifecycle/model_config.py), so it comes back with the
    recorded stable version after a restart, not the newest in the repository.

    A model with no version yet is waiting: `up` creates the repository and the model's
    base directory, logs that the model is waiting, and does not wait for it. It joins the
    config when its first push is promoted (as the canary `<model>-canary` first, like
    every push). It is left out of the config until then: TF Serving's ReloadConfig waits
    for a newly added model's first version while it holds the config lock, so a waiting
    model in the config would block the first canary (and every later reload) on the
    official image. With wait_seconds 0, `up` returns once the server is started.
    """
    repo = ModelRepository(config.repository)
    try:  # decided before anything is created: a refused command line writes nothing
        waiting = [m for m in config.models if repo.latest_version(m) is None]
    except RepositoryError as e:  # a model name no base path can have
        raise ValueError(str(e)) from e
    clash = [m for m in config.models if model_config.canary_entry(m) in config.models]
    if clash:
        raise ValueError(f"{model_config.canary_entry(clash[0])} is the name {clash[0]}'s "
                         f"canary is served under; serve the two from different servers")
    _prepare_repository(config)
    existing = state_store.load(config.state_dir)
    if existing is not None:
        old = _backend_for(existing)
        if old.is_running(existing):
            raise EnvironmentProblem(
                f"a server is already up for state dir {config.state_dir} "
                f"({existing.backend}, REST {existing.addresses.rest_url})",
                next_step=f"`python -m serving down --state-dir {config.state_dir}` first, "
                          f"or pass another --state-dir")
        old.stop(existing, timeout=5)
        state_store.clear(config.state_dir)
    records = rollouts.prepare_for_serving(repo, config.models)
    backend = backends.choose(config)
    backend.remove_orphans(Path(config.state_dir))
    config_path = Path(config.state_dir).absolute() / "config" / MODEL_CONFIG_FILENAME
    state_store.write_atomically(config_path, model_config.render(
        backend.base_paths(config), records, config.models))
    server_args = _server_args(config, backend, config_path)
    log.info("starting %s backend: models %s from %s", backend.name, ",".join(config.models),
             repo.root)
    state = backend.start(config, server_args, config_path)
    state.docker_url = config.docker_url or ""
    state_store.save(state)
    log.info("listening: REST %s, gRPC %s", state.addresses.rest_url,
             state.addresses.grpc_target)
    for model in config.models:
        record = records[model]
        if record.stable is not None:
            log.info("%s: stable version %s%s%s", model, record.stable,
                     "" if record.stable_verified else " (not verified through a server)",
                     f"; {record.hold.describe()}" if record.hold else "")
        newer = [v for v in repo.versions(model) + repo.candidates(model)
                 if record.stable is not None and v > record.stable]
        if newer:
            log.warning("%s: versions %s are newer than stable %s and not served; "
                        "`python -m serving versions --model %s` says why", model, newer,
                        record.stable, model)
        for warning in _profile_warnings(repo, model, [record.stable]):
            log.warning(warning)
    deadline = time.monotonic() + (config.wait_seconds or START_SECONDS)
    try:
        if config.replicas > 1 or backend.name == "swarm":
            log.info("endpoint: %s", state.endpoint_mode)
            wait_for_replicas(state, config.replicas,
                              {m: r.stable for m, r in records.items() if m not in waiting},
                              deadline)
        if config.wait_seconds > 0:
            try:
                _wait_listening(state, deadline)
            except WaitTimeout:
                down(config.state_dir, timeout=5)  # it never listened: nothing to keep
                raise
        for model in waiting:
            log.warning("%s: waiting for a first version in %s (served once a push is "
                        "promoted)", model, repo.model_dir(model))
        if config.wait_seconds > 0:
            for model in config.models:
                if model not in waiting:
                    wait_for_version(model, records[model].stable,
                                     max(0.0, deadline - time.monotonic()), config.state_dir)
    except ServerExited as e:
        down(config.state_dir, timeout=5)  # nothing to keep: the error carries the log
        e.next_step = "fix what the log below says (extra server flags?) and `up` again"
        raise
    return state


def current(state_dir: Path = DEFAULT_STATE_DIR) -> ServerState:
    """The server `up` recorded in `state_dir`; NotRunning when there is none."""
    state = state_store.load(Path(state_dir))
    if state is None:
        raise NotRunning(f"no server recorded in {state_dir}",
                         next_step=f"`python -m serving up --state-dir {state_dir} ...`")
    return state


def status(state_dir: Path = DEFAULT_STATE_DIR) -> ServerReport:
    """Per model: expected version, versions and states as the server reports them; for a
    fleet, the same per replica."""
    state = current(state_dir)
    backend = _backend_for(state)
    running = backend.is_running(state)
    replicas = []
    if hasattr(backend, "replicas") and running:
        for replica in backend.replicas(state):
            row = replica.to_json()
            if replica.addresses is not None:
                row["models"] = {m: _replica_view(replica.addresses, m) for m in state.models}
            replicas.append(row)
    return ServerReport(state=state, running=running,
                        models=[_model_report(state, m) for m in state.models],
                        replicas=replicas)


def scale(replicas: int, state_dir: Path = DEFAULT_STATE_DIR,
          timeout: float = 300.0) -> ServerState:
    """Run `replicas` replicas of a fleet (swarm backend); returns once each one serves
    every model's stable version. A new replica reads the shared models.config at start,
    so it comes up in the current state."""
    state = current(state_dir)
    backend = _backend_for(state)
    if not hasattr(backend, "scale"):
        raise LifecycleError(f"the {state.backend} backend runs one server; only a swarm "
                             f"fleet scales", next_step="`up --backend swarm --replicas N`")
    backend.scale(state, replicas)
    state.replicas = replicas
    state_store.save(state)
    repo = ModelRepository(state.repository)
    stable = {m: rollouts.load(repo.model_dir(m), m).stable for m in state.models}
    wait_for_replicas(state, replicas, {m: v for m, v in stable.items() if v is not None},
                      time.monotonic() + timeout)
    return state


def wait_for_replicas(state: ServerState, count: int, stable: Dict[str, Optional[int]],
                      deadline: float) -> None:
    """Until exactly `count` replicas run and each one serves `stable` (model -> version)."""
    backend = _backend_for(state)
    while True:
        replicas = [r for r in backend.replicas(state)
                    if r.state == "running" and r.addresses is not None]
        ready = [r for r in replicas if all(
            health.get_model_status(r.addresses.rest_url, m).is_available(v)
            for m, v in stable.items() if v is not None)]
        if len(replicas) == count and len(ready) == count:
            return
        if time.monotonic() >= deadline:
            raise WaitTimeout(f"{len(ready)} of {count} replicas serve the stable versions "
                              f"{stable} ({len(replicas)} running)",
                              next_step="`python -m serving status` and `logs` show why",
                              details=_log_tail(backend, state))
        time.sleep(0.5)


def wait_for_version(model: str, version: Optional[int], timeout: float,
                     state_dir: Path = DEFAULT_STATE_DIR,
                     poll_seconds: float = 0.25) -> health.ModelStatus:
    """Block until `version` of `model` is AVAILABLE; returns the model's status.

    Raises VersionFailed (with the server's own error and the last log lines) when the
    server gave up on that version, WaitTimeout when time ran out, ServerExited when the
    server stopped, NotRunning when none is recorded. `version=None` waits for the latest
    version in the repository; where the model has none yet, for its first version to be
    published and then to be AVAILABLE.
    """
    state = current(state_dir)
    if model not in state.models:
        raise LifecycleError(f"model {model!r} is not served "
                             f"(serving: {', '.join(state.models)})",
                             next_step="pass one of those to --model")
    backend = _backend_for(state)
    deadline = time.monotonic() + timeout
    last = health.ModelStatus(model, error="not asked yet")
    while True:
        if version is None:
            version = _expected_version(state, model)
        last = health.get_model_status(state.addresses.rest_url, model)
        if version is not None and last.is_available(version):
            return last
        v = last.version(version) if version is not None else None
        if v is not None and v.failed:
            raise VersionFailed(
                f"{model} version {version} failed to load: {v.error_code}: {v.error_message}",
                next_step=f"fix or remove {state.repository}/{model}/{version}; "
                          f"`python -m serving status` shows what is served",
                details=_log_tail(backend, state))
        if last.error and not backend.is_running(state):
            raise ServerExited(f"the {state.backend} server stopped ({last.error})",
                               next_step="read the log below, then `python -m serving down` "
                                         "and `up` again",
                               details=_log_tail(backend, state))
        if time.monotonic() >= deadline:
            what = f"version {version} not AVAILABLE" if version is not None else \
                f"no version published in {ModelRepository(state.repository).model_dir(model)} " \
                f"is stable yet (a push is served once it is promoted)"
            raise WaitTimeout(
                f"{model}: {what} after {timeout:.0f}s; server says: {_describe(last)}",
                next_step="check that the version was published into the served repository, "
                          "or wait longer with --timeout",
                details=_log_tail(backend, state))
        time.sleep(poll_seconds)


def sample_prediction(model: str, instances: Optional[Sequence] = None,
                      state_dir: Path = DEFAULT_STATE_DIR,
                      version: Optional[int] = None, label: Optional[str] = None) -> dict:
    """One REST predict against the running server, of a version, a label, or what the
    server picks. With no `instances`, one instance of zeros shaped like the model's
    serving_default inputs (read from its metadata)."""
    state = current(state_dir)
    base = model_config.model_of(model)
    if base not in state.models:
        raise LifecycleError(f"model {model!r} is not served (serving: "
                             f"{', '.join(state.models)}; a canary: "
                             f"{model_config.canary_entry('NAME')})",
                             next_step="pass one of those to --model")
    if not _backend_for(state).is_running(state):
        raise NotRunning(f"the {state.backend} server recorded in {state_dir} is not running",
                         next_step="`python -m serving logs` shows why it stopped; "
                                   "`python -m serving up ...` starts it again")
    url = state.addresses.rest_url
    try:
        if instances is None:
            metadata = sample.get_metadata(url, model, version, label=label)
            instances = [sample.zero_instance(metadata)]
        return health.predict(url, model, list(instances), version=version, label=label)
    except requests.HTTPError as e:  # the server's own answer: TF Serving's error text
        canary = label == rollouts.CANARY and base == model
        raise LifecycleError(
            str(e), next_step=f"the canary is `--model {model_config.canary_entry(model)} "
                              f"--label {label}`" if canary else
            f"`python -m serving versions --model {base}` lists the versions and labels"
        ) from None
    except requests.RequestException as e:
        raise LifecycleError(f"the server at {url} did not answer: {e}",
                             next_step="`python -m serving status` says whether it is "
                                       "healthy") from None


def recorded_repository(model: str, state_dir: Path = DEFAULT_STATE_DIR) -> Optional[Path]:
    """The repository the server `up` recorded in `state_dir` serves `model` from, running or
    not: where an operator's rollout command acts when it names none (a hold during an
    incident must reach the repository of the server that went down, not a default one)."""
    state = state_store.load(Path(state_dir))
    if state is None or model not in state.models:
        return None
    return Path(state.repository)


def running_server_for(model: str, state_dir: Path = DEFAULT_STATE_DIR) -> Optional[ServerState]:
    """The server `up` recorded in `state_dir` when it is running and serves `model`."""
    state = state_store.load(Path(state_dir))
    if state is None or model not in state.models or \
            not _backend_for(state).is_running(state):
        return None
    return state


def logs(state_dir: Path = DEFAULT_STATE_DIR, tail: Optional[int] = None) -> str:
    state = current(state_dir)
    return _backend_for(state).logs(state, tail)


def down(state_dir: Path = DEFAULT_STATE_DIR, timeout: float = 30.0) -> bool:
    """Stop and remove the server `up` started here (and any leftover container labelled
    with this state dir). True when something was running."""
    state = state_store.load(Path(state_dir))
    if state is None:
        return False
    backend = _backend_for(state)
    was_running = backend.is_running(state)
    backend.stop(state, timeout=timeout)
    state_store.clear(Path(state_dir))
    return was_running


# ---- helpers ----

def _prepare_repository(config: UpConfig) -> ModelRepository:
    """The repository, with the base directory of each served model: created when missing,
    as TF Serving expects an (empty) base path before a model's first version, and as the
    docker backend mounts the repository."""
    repo = ModelRepository(config.repository)
    try:
        for model in config.models:
            repo.model_dir(model).mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise EnvironmentProblem(
            f"cannot create the model repository {repo.root}: {e.strerror or e}: "
            f"{e.filename or repo.root}",
            next_step="pass --repository with a directory you can write to (the one the "
                      "Pusher writes to)") from e
    return repo


def _wait_listening(state: ServerState, deadline: float) -> None:
    """Until the server answers HTTP (it has loaded its first config)."""
    backend = _backend_for(state)
    while not health.answers(state.addresses.rest_url):
        if not backend.is_running(state):
            raise ServerExited(f"the {state.backend} server stopped before it listened",
                               details=_log_tail(backend, state))
        if time.monotonic() >= deadline:
            raise WaitTimeout(f"the {state.backend} server does not answer on "
                              f"{state.addresses.rest_url}",
                              next_step="read the log below; wait longer with --timeout",
                              details=_log_tail(backend, state))
        time.sleep(0.25)


def _profile_warnings(repo: ModelRepository, model: str,
                      versions: Iterable[Optional[int]]) -> List[str]:
    """A warning for each of `versions` trained with a profile other than the default one
    (a fast or notebook model), from its lineage record."""
    warnings = []
    for version in sorted({v for v in versions if v is not None}):
        record = repo.lineage(model, version)
        warning = record.profile_warning(model, version) if record is not None else None
        if warning:
            warnings.append(warning)
    return warnings


def _server_args(config: UpConfig, backend, config_path: Optional[Path]) -> tuple:
    # A pushed version that cannot load must fail `wait` now, on either backend, not after
    # tensorflow_model_server's default 5 retries a minute apart. Extra flags may override.
    args = [f"--file_system_poll_wait_seconds={_flag_number(config.file_system_poll_seconds)}",
            "--max_num_load_retries=0"]
    if config_path is not None:
        # TF Serving's ServerCore::ReloadConfig assigns labels before it loads the config's
        # versions, so a first config with labels (a restart with a recorded stable) is
        # refused unless new labels may name versions still loading (tensorflow/serving#1230).
        args += ["--allow_version_labels_for_unavailable_models"]
        args += [f"--model_config_file={backend.config_path_for_server(config_path)}",
                 "--model_config_file_poll_wait_seconds="
                 f"{_flag_number(config.config_poll_seconds)}"]
    return tuple(args) + tuple(config.extra_args)


def _flag_number(value: float) -> str:
    """tensorflow_model_server's poll flags are integers; keep them so when possible."""
    return str(int(value)) if float(value).is_integer() else str(value)


def _backend_for(state: ServerState):
    return backends.create(state.backend, state.docker_url or None)


def _expected_version(state: ServerState, model: str) -> Optional[int]:
    """The model's stable version, as its rollout record says."""
    repo = ModelRepository(state.repository)
    return rollouts.load(repo.model_dir(model), model).stable


def _model_report(state: ServerState, model: str) -> ModelReport:
    st = health.get_model_status(state.addresses.rest_url, model)
    repo = ModelRepository(state.repository)
    lineage = {v.version: record for v in st.versions
               if (record := repo.lineage(model, v.version)) is not None}
    record = rollouts.load(repo.model_dir(model), model)
    expected = record.stable
    return ModelReport(model=model, expected_version=expected, record=record,
                       status=st, lineage=lineage,
                       base_path=str(repo.model_dir(model)),
                       warnings=_profile_warnings(repo, model, [expected, *st.available()]))


def _replica_view(addresses, model: str) -> dict:
    """One replica's view of a model: its versions' states and what its labels name."""
    from serving.lifecycle.sample import get_metadata

    st = health.get_model_status(addresses.rest_url, model)
    labels = {}
    for label in (rollouts.STABLE, rollouts.PREVIOUS):
        try:
            meta = get_metadata(addresses.rest_url, model, label=label, timeout=2)
            labels[label] = int(meta["model_spec"]["version"])
        except Exception:  # noqa: BLE001 - a label the replica does not have
            pass
    return {"versions": {v.version: v.state for v in st.versions}, "labels": labels,
            "error": st.error}


def _describe(st: health.ModelStatus) -> str:
    if st.error:
        return st.error
    parts = [f"v{v.version} {v.state}" + (f" ({v.error_message})" if v.error_message else "")
             for v in st.versions]
    return ", ".join(parts) or "no versions"


def _log_tail(backend, state: ServerState) -> str:
    try:
        text = backend.logs(state, LOG_TAIL)
    except Exception as e:  # noqa: BLE001 - the logs are a courtesy; keep the real error
        text = f"(could not read the logs: {e})"
    return f"last {LOG_TAIL} log lines of the {state.backend} server:\n{text.rstrip()}"
