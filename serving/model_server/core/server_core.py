"""The server core (TF Serving's ServerCore): the models' lifecycle and the servable handles.

It owns the Source and the Manager, applies model configs (at startup, on
HandleReloadConfigRequest and when the config file changes), hands a request the version it
asks for, held until it is answered (`servable`), and counts requests from arrival to reply
(`request`), for the metrics and for a SIGTERM drain. The APIs over it are `apis`; the
warmup replay a version runs before it serves is `warmup`.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import threading
import time
from typing import Callable, Iterator, List, Optional

from tensorflow_serving.apis import model_pb2
from tensorflow_serving.config import model_server_config_pb2

from serving.model_server.servable import warmup
from serving.model_server.config import (BatchingOptions, ConfigError, ServerConfig,
                                         validate_model_server_config)
from serving.model_server.errors import Code, ServingError
from serving.model_server.servable.loader import Loader, Servable
from serving.model_server.core.manager import Manager, State, requested
from serving.model_server.metrics import Metrics
from serving.model_server.core.source import FileSystemSource, default_policy

log = logging.getLogger("serving.model_server")

EMPTY_CONFIG_TRANSITION = ("Cannot transition to requested config. It is only legal to "
                           "transition from one ModelConfigList to another.")


class ServerCore:
    """Models, versions and config; servable handles; requests in flight."""

    def __init__(self, config: ServerConfig, batching: Optional[BatchingOptions] = None,
                 metrics: Optional[Metrics] = None):
        self.config = config
        self.metrics = metrics or Metrics()
        self.batching = batching
        self._serving_listeners: List[Callable[[], None]] = []
        self.manager = Manager(self._make_loader, num_load_threads=1,
                               listener=self._state_changed,
                               max_load_retries=config.max_num_load_retries,
                               load_retry_interval=config.load_retry_interval_micros / 1e6)
        self.source = FileSystemSource(self.manager.set_aspired_versions,
                                       config.file_system_poll_wait_seconds)
        self._config_lock = threading.Lock()
        self.model_config: Optional[model_server_config_pb2.ModelServerConfig] = None
        self._inflight = 0
        self._cancel: Optional[threading.Event] = None
        self._inflight_cond = threading.Condition()
        self._draining = False
        self.cut_off = False  # a request was cancelled by the drain's deadline
        self.metrics.inflight.set_function(lambda: self._inflight)  # read when scraped

    # ---- lifecycle -----------------------------------------------------------------
    def on_serving_change(self, callback: Callable[[], None]) -> None:
        """Call `callback()` (from any thread) whenever versions or labels change."""
        self._serving_listeners.append(callback)

    def _state_changed(self, *state) -> None:
        self.metrics.on_state(*state)
        self._serving_changed()

    def _serving_changed(self) -> None:
        for callback in self._serving_listeners:
            callback()

    def _make_loader(self, name: str, version: int, path: str) -> Loader:
        replay = functools.partial(warmup.replay, config=self.config) \
            if self.config.enable_model_warmup else None
        return Loader(name, version, path, tags=self.config.tags(), batching=self.batching,
                      warmup=replay, session_config=self.config.session_config())

    def start(self, model_config: model_server_config_pb2.ModelServerConfig,
              timeout: Optional[float] = None, cancel: Optional[threading.Event] = None) -> None:
        """Apply the first config and block until every model has a version AVAILABLE (as
        tensorflow_model_server does); raises ServingError when one cannot load any, or
        CANCELLED when `cancel` is set while waiting."""
        self._cancel = cancel
        self.source.start()  # polling must run while we wait for the first versions
        self.apply_config(model_config, timeout=timeout, initial=True)

    def apply_config(self, model_config, timeout: Optional[float] = None,
                     initial: bool = False) -> None:
        try:
            validate_model_server_config(model_config)
        except ConfigError as e:
            raise ServingError(Code.INVALID_ARGUMENT, str(e)) from e
        if model_config.WhichOneof("config") is None:  # ServerCore::ReloadConfig's rule
            if self.model_config is None:
                log.info("Taking no action for empty config.")
                return
            raise ServingError(Code.FAILED_PRECONDITION, EMPTY_CONFIG_TRANSITION)
        with self._config_lock:
            models = {}
            for m in model_config.model_config_list.config:
                policy = m.model_version_policy if m.HasField("model_version_policy") \
                    else default_policy()
                models[m.name] = (m.base_path, policy)
            old = self.model_config
            log.info("Adding/updating models.")
            for name in models:
                log.info("(Re-)adding model: %s", name)
            allow = self.config.allow_version_labels_for_unavailable_models
            if allow:
                for m in model_config.model_config_list.config:
                    self.manager.set_labels(m.name, dict(m.version_labels), allow_unavailable=True)
            self.source.set_models(models)
            new_names = [n for n in models if old is None or n not in
                         {m.name for m in old.model_config_list.config}]
            self._wait_settled(list(models), new_names, timeout, initial)
            unavailable = [] if initial else self._unavailable(new_names)
            for m in model_config.model_config_list.config:
                self.manager.set_labels(m.name, dict(m.version_labels), allow_unavailable=allow)
            self.model_config = model_config
        self._serving_changed()
        if unavailable:  # the new config stays in effect, as in TF Serving
            raise ServingError(Code.UNKNOWN, f"{len(unavailable)} model(s) did not become "
                                             f"available: {{{''.join(unavailable)}}}")

    def _unavailable(self, names: List[str]) -> List[str]:
        """The models added by a reload that ended with no version AVAILABLE, each as
        TF Serving's ServerCore::WaitUntilModelsAvailable writes it
        (`{name: M version: V} due to error: CODE: message`), so HandleReloadConfigRequest
        answers UNKNOWN as tensorflow_model_server does, not OK."""
        out = []
        for name in names:
            states = self.manager.version_states(name)
            if not states or any(s.state != State.END for s in states):
                continue  # served, or still loading at the timeout: not a failure yet
            failed = [s for s in states if s.error is not None] or states[:1]
            out.append("".join(
                f"{{{{name: {name} version: {s.version}}}"
                + (f" due to error: {s.error.code.name}: {s.error.message}" if s.error else "")
                + "}, " for s in failed))
        return out

    def _wait_settled(self, names: List[str], new_names: List[str], timeout, initial) -> None:
        """Wait for the aspired versions to settle; at startup, fail if a model cannot load."""
        deadline = None if timeout is None else time.monotonic() + timeout
        started = time.monotonic()
        for name in names:
            logged = False
            while True:
                remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
                ok = self.manager.wait_for(lambda: self._settled(name, name in new_names),
                                           timeout=0.5 if remaining is None else
                                           min(0.5, remaining))
                if ok:
                    break
                if initial and self._cancel is not None and self._cancel.is_set():
                    raise ServingError(Code.CANCELLED, "startup cancelled")
                if remaining is not None and remaining <= 0:
                    if initial:
                        raise ServingError(Code.DEADLINE_EXCEEDED,
                                           f"Timed out waiting for model {name} to load")
                    return
                if not logged and time.monotonic() - started > 2:
                    log.info("Waiting for the first version of model %s to become available",
                             name)
                    logged = True
            if initial:
                settled, error = self.manager.initial_load_settled(name)
                if error:
                    raise ServingError(Code.UNKNOWN, f"Model {name} did not load: {error}")

    def _settled(self, name: str, must_have_version: bool) -> bool:
        states = self.manager.version_states(name)
        if any(s.state in (State.START, State.LOADING) for s in states):
            return False
        if must_have_version:
            return bool(states)
        return True

    def stop(self) -> None:
        self.source.stop()
        self.manager.close()

    # ---- requests in flight (drain) and metrics --------------------------------------
    @contextlib.contextmanager
    def request(self, api: str, model_name: str, entrypoint: str):
        """Count one API request from arrival to reply: in flight, so a drain can wait for
        it, and in the request metrics with the status it ended with."""
        with self._inflight_cond:
            self._inflight += 1
        try:
            with self.metrics.track(api, model_name, entrypoint):
                yield
        except asyncio.CancelledError:
            if self._draining:  # in a drain: (almost always) its deadline cut the request off
                self.cut_off = True
            raise
        finally:
            with self._inflight_cond:
                self._inflight -= 1
                if not self._inflight:
                    self._inflight_cond.notify_all()

    def begin_drain(self) -> None:
        """From now on a cancelled request counts as cut off (see `cut_off`)."""
        self._draining = True

    def wait_idle(self, timeout: float) -> bool:
        with self._inflight_cond:
            return self._inflight_cond.wait_for(lambda: self._inflight == 0, timeout)

    # ---- lookup: a request holds the version it runs on -----------------------------
    def lookup(self, model_spec: model_pb2.ModelSpec) -> Servable:
        name, version, label = requested(model_spec)
        return self.manager.resolve(name, version=version, label=label)

    @contextlib.contextmanager
    def servable(self, model_spec: model_pb2.ModelSpec) -> Iterator[Servable]:
        """The version `model_spec` asks for, held until the block ends (TF Serving's
        ServableHandle): it is not unloaded under the request."""
        for _ in range(3):
            found = self.lookup(model_spec)
            if found.acquire():
                break
        else:  # unloaded three times between lookup and hold: the model is churning
            raise ServingError(Code.UNAVAILABLE, f"{model_spec.name} is being unloaded")
        try:
            yield found
        finally:
            found.release()
