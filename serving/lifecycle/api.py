"""The lifecycle's Python API: what the CLI and the pipeline runner call.

Every function takes the state directory `up` recorded its server in, so a later process
(`status`, `wait`, the pipeline runner after a push) talks to the same server.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Optional, Sequence, Tuple

from serving.lifecycle import backends, health, model_config, sample, state as state_store
from serving.lifecycle.config import DEFAULT_STATE_DIR, MODEL_CONFIG_FILENAME, UpConfig
from serving.lifecycle.errors import (EnvironmentProblem, LifecycleError, NotRunning,
                                      ServerExited, VersionFailed, WaitTimeout)
from serving.lifecycle.reload import reload_config
from serving.lifecycle.report import ModelReport, ServerReport
from serving.lifecycle.state import ServerState
from serving.repository import ModelRepository

log = logging.getLogger("serving.lifecycle")

LOG_TAIL = 30


def up(config: UpConfig) -> ServerState:
    """Start serving `config.models`; returns once each latest version is AVAILABLE
    (unless config.wait_seconds is 0). The state is recorded first, so `down` works even
    when the wait fails."""
    repo = _check_repository(config)
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
    backend = backends.choose(config)
    backend.remove_orphans(Path(config.state_dir))
    config_path = None
    if config.uses_model_config:
        config_path = Path(config.state_dir).absolute() / "config" / MODEL_CONFIG_FILENAME
        state_store.write_atomically(config_path, model_config.render(
            backend.base_paths(config), {}, config.models))
    server_args = _server_args(config, backend, config_path)
    log.info("starting %s backend: models %s from %s", backend.name, ",".join(config.models),
             repo.root)
    state = backend.start(config, server_args, config_path)
    state.docker_url = config.docker_url or ""
    state_store.save(state)
    log.info("listening: REST %s, gRPC %s", state.addresses.rest_url,
             state.addresses.grpc_target)
    if config.wait_seconds > 0:
        deadline = time.monotonic() + config.wait_seconds
        try:
            for model in config.models:
                wait_for_version(model, repo.latest_version(model),
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
    """Per model: expected version, versions and states as the server reports them."""
    state = current(state_dir)
    running = _backend_for(state).is_running(state)
    return ServerReport(state=state, running=running,
                        models=[_model_report(state, m) for m in state.models])


def wait_for_version(model: str, version: Optional[int], timeout: float,
                     state_dir: Path = DEFAULT_STATE_DIR,
                     poll_seconds: float = 0.25) -> health.ModelStatus:
    """Block until `version` of `model` is AVAILABLE; returns the model's status.

    Raises VersionFailed (with the server's own error and the last log lines) when the
    server gave up on that version, WaitTimeout when time ran out, ServerExited when the
    server stopped, NotRunning when none is recorded. `version=None` waits for the latest
    version in the repository.
    """
    state = current(state_dir)
    if model not in state.models:
        raise LifecycleError(f"model {model!r} is not served "
                             f"(serving: {', '.join(state.models)})",
                             next_step="pass one of those to --model")
    if version is None:
        version = _expected_version(state, model)
    backend = _backend_for(state)
    deadline = time.monotonic() + timeout
    last = health.ModelStatus(model, error="not asked yet")
    while True:
        last = health.get_model_status(state.addresses.rest_url, model)
        if last.is_available(version):
            return last
        v = last.version(version)
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
            raise WaitTimeout(
                f"{model} version {version} not AVAILABLE after {timeout:.0f}s; "
                f"server says: {_describe(last)}",
                next_step="check that the version was published into the served repository, "
                          "or wait longer with --timeout",
                details=_log_tail(backend, state))
        time.sleep(poll_seconds)


def sample_prediction(model: str, instances: Optional[Sequence] = None,
                      state_dir: Path = DEFAULT_STATE_DIR,
                      version: Optional[int] = None) -> dict:
    """One REST predict against the running server. With no `instances`, one instance of
    zeros shaped like the model's serving_default inputs (read from its metadata)."""
    state = current(state_dir)
    if instances is None:
        metadata = sample.get_metadata(state.addresses.rest_url, model, version)
        instances = [sample.zero_instance(metadata)]
    return health.predict(state.addresses.rest_url, model, list(instances), version=version)


def verify_pushed(model: str, version: int, timeout: float = 300.0,
                  state_dir: Path = DEFAULT_STATE_DIR,
                  instances: Optional[Sequence] = None) -> Optional[Tuple[health.ModelStatus, dict]]:
    """For the pipeline runner after a push: None when no server is up (nothing to check);
    otherwise wait until `version` is AVAILABLE and return its status and one prediction
    from exactly that version. Raises like wait_for_version when it does not come up."""
    if running_server_for(model, state_dir) is None:
        return None
    st = wait_for_version(model, version, timeout, state_dir)
    return st, sample_prediction(model, instances, state_dir, version=version)


def running_server_for(model: str, state_dir: Path = DEFAULT_STATE_DIR) -> Optional[ServerState]:
    """The server `up` recorded in `state_dir` when it is running and serves `model`."""
    state = state_store.load(Path(state_dir))
    if state is None or model not in state.models or \
            not _backend_for(state).is_running(state):
        return None
    return state


def rollback(model: str, to: Optional[int], state_dir: Path = DEFAULT_STATE_DIR,
             timeout: float = 120.0) -> health.ModelStatus:
    """Serve version `to` of `model` (None: back to the latest), with no restart.

    The version policy becomes `specific {versions: to}`: written to the polled
    models.config when there is one, and applied at once through ReloadConfig. Verified:
    returns once `to` is the only AVAILABLE version.
    """
    state = current(state_dir)
    backend = _backend_for(state)
    if not backend.is_running(state):
        raise NotRunning(f"the {state.backend} server is not running",
                         next_step="`python -m serving up ...` first")
    if model not in state.models:
        raise LifecycleError(f"model {model!r} is not served (serving: {', '.join(state.models)})")
    repo = ModelRepository(state.repository)
    pinned = dict(state.pinned)
    if to is None:
        pinned.pop(model, None)
    else:
        if to not in repo.versions(model):
            raise LifecycleError(f"{model} has no version {to} in {repo.root} "
                                 f"(versions: {repo.versions(model)})",
                                 next_step="pick one of the listed versions")
        pinned[model] = to
    config = model_config.build(state.base_paths, pinned, state.models)
    if state.model_config_path:
        state_store.write_atomically(Path(state.model_config_path), model_config.to_text(config))
    reload_config(state.addresses.grpc_target, config, timeout=timeout)
    state.pinned = pinned
    state_store.save(state)
    target = to if to is not None else repo.latest_version(model)
    deadline = time.monotonic() + timeout
    while True:
        st = wait_for_version(model, target, max(0.0, deadline - time.monotonic()), state_dir)
        if st.available() == [target]:
            log.info("rollback verified: %s serves only version %s", model, target)
            return st
        if time.monotonic() >= deadline:
            raise WaitTimeout(f"{model}: version {target} is AVAILABLE but so are "
                              f"{st.available()}", details=_log_tail(backend, state))
        time.sleep(0.25)


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

def _check_repository(config: UpConfig) -> ModelRepository:
    root = Path(config.repository)
    if not root.is_dir():
        raise EnvironmentProblem(
            f"model repository {root} does not exist",
            next_step="run the pipeline first (`make pipeline`) or pass --repository with "
                      "the directory the Pusher writes to")
    repo = ModelRepository(root)
    for model in config.models:
        if not repo.versions(model):
            raise EnvironmentProblem(
                f"model {model} has no version in {repo.root}",
                next_step=f"publish one first (`make pipeline-{model}`), or serve only "
                          f"models listed there: {', '.join(repo.models()) or '(none)'}")
    return repo


def _server_args(config: UpConfig, backend, config_path: Optional[Path]) -> tuple:
    # A pushed version that cannot load must fail `wait` now, on either backend, not after
    # tensorflow_model_server's default 5 retries a minute apart. Extra flags may override.
    args = [f"--file_system_poll_wait_seconds={_flag_number(config.file_system_poll_seconds)}",
            "--max_num_load_retries=0"]
    if config_path is not None:
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
    if model in state.pinned:
        return state.pinned[model]
    return ModelRepository(state.repository).latest_version(model)


def _model_report(state: ServerState, model: str) -> ModelReport:
    st = health.get_model_status(state.addresses.rest_url, model)
    repo = ModelRepository(state.repository)
    lineage = {v.version: record for v in st.versions
               if (record := repo.lineage(model, v.version)) is not None}
    return ModelReport(model=model, expected_version=_expected_version(state, model),
                       pinned=model in state.pinned, status=st, lineage=lineage)


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
