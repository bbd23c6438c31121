"""ModelServer: wires config, server core, APIs, gRPC and REST together; start, run, drain,
stop."""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Optional

from serving.model_server.apis import Apis
from serving.model_server.config import (ConfigError, LoadedConfig, ServerConfig,
                                         parse_model_server_config)
from serving.model_server.errors import ServingError
from serving.model_server.grpc_service import GrpcServer
from serving.model_server.rest import HttpLimits, RestApp, RestServer
from serving.model_server.server_core import ServerCore

log = logging.getLogger("serving.model_server")

# Threads for blocking API work (Classify, Regress, metadata, unbatched runs, large bodies):
# each may wait on a batch, so enough for max_batch_size * 2 waiting clients.
API_WORKERS = 64


class ModelServer:
    """One server instance; no global state, so tests may run several in one process."""

    def __init__(self, config: ServerConfig, loaded: Optional[LoadedConfig] = None):
        self.config = config
        self._loaded = loaded
        self.core: Optional[ServerCore] = None
        self._executor: Optional[ThreadPoolExecutor] = None
        self.grpc_server: Optional[GrpcServer] = None
        self.rest_server: Optional[RestServer] = None
        self.grpc_port: Optional[int] = None
        self.rest_port: Optional[int] = None
        self._stop = threading.Event()
        self._config_poller: Optional[threading.Thread] = None

    def start(self, load_timeout: Optional[float] = None) -> None:
        """Load the models (blocking, as tensorflow_model_server does), then listen.

        Raises ConfigError for a bad flag/file and ServingError when a model cannot load.
        """
        cfg = self.config
        loaded = self._loaded or cfg.load()
        prometheus_path = loaded.prometheus_path
        self.core = ServerCore(cfg, loaded.batching)
        self.core.start(loaded.model_config, timeout=load_timeout, cancel=self._stop)

        self._executor = ThreadPoolExecutor(max_workers=API_WORKERS, thread_name_prefix="api")
        apis = Apis(self.core, self._executor)
        self.grpc_server = GrpcServer(apis, loaded.grpc_options)
        try:
            if cfg.port:
                self.grpc_port = self.grpc_server.add_insecure_port(f"{cfg.host}:{cfg.port}")
            if cfg.grpc_socket_path:
                self.grpc_server.add_insecure_port(f"unix:{cfg.grpc_socket_path}")
        except RuntimeError as e:
            raise ConfigError(f"cannot bind gRPC port {cfg.port or cfg.grpc_socket_path}: "
                              f"{e}") from e
        if cfg.port and not self.grpc_port:
            raise ConfigError(f"cannot bind gRPC port {cfg.port}")
        self.grpc_server.start()
        if cfg.port:
            log.info("Running gRPC ModelServer at %s:%d ...", cfg.host, self.grpc_port)
        if cfg.grpc_socket_path:
            log.info("Running gRPC ModelServer at UNIX socket %s ...", cfg.grpc_socket_path)

        if cfg.rest_api_port:
            app = RestApp(apis, HttpLimits.of(cfg), prometheus_path)
            try:
                self.rest_server = RestServer(app, cfg.host, cfg.rest_api_port,
                                              cfg.drain_timeout_seconds)
            except OSError as e:
                raise ConfigError(f"cannot bind REST port {cfg.rest_api_port}: {e}") from e
            self.rest_port = self.rest_server.port
            self.rest_server.start()
            log.info("Exporting HTTP/REST API at:localhost:%d ...", self.rest_port)
        elif prometheus_path:
            log.warning("--monitoring_config_file is set but --rest_api_port is 0: metrics "
                        "are served on the REST port only")

        if cfg.model_config_file and cfg.model_config_file_poll_wait_seconds > 0:
            self._config_poller = threading.Thread(target=self._poll_config, daemon=True,
                                                   name="config-poll")
            self._config_poller.start()

    def _poll_config(self) -> None:
        """Re-read --model_config_file on its poll interval. A file that cannot be read or
        applied is logged and the config in force stays; nothing stops the polling."""
        path = self.config.model_config_file
        last = self._read_config_bytes(path)
        while not self._stop.wait(self.config.model_config_file_poll_wait_seconds):
            try:
                data = self._read_config_bytes(path)
                if data is None or data == last:
                    continue
                last = data
                new_config = parse_model_server_config(data, path)
                log.info("Model config file %s changed; reloading", path)
                self.core.apply_config(new_config, timeout=60.0)
            except (ConfigError, ServingError) as e:
                log.error("Not applying model config file %s: %s", path, e)
            except Exception:  # noqa: BLE001 - the poller must outlive any one bad file
                log.exception("Not applying model config file %s", path)

    @staticmethod
    def _read_config_bytes(path: str) -> Optional[bytes]:
        try:
            return Path(path).read_bytes()
        except OSError as e:
            log.error("Cannot read model config file %s: %s", path, e)
            return None

    def wait(self, timeout: Optional[float] = None) -> bool:
        return self._stop.wait(timeout)

    def request_stop(self) -> None:
        self._stop.set()

    def shutdown(self, grace: Optional[float] = None) -> bool:
        """Stop accepting, let in-flight requests finish (up to `grace` s), release models.
        True when every request in flight was answered (the drain completed)."""
        grace = self.config.drain_timeout_seconds if grace is None else grace
        deadline = time.monotonic() + grace
        self._stop.set()
        log.info("Shutting down: draining in-flight requests (up to %.0f s)", grace)
        if self.rest_server is not None:
            self.rest_server.server.should_exit = True  # stops accepting at its next tick
        if self.grpc_server is not None:
            self.grpc_server.stop(grace)  # returns once its in-flight RPCs are done
        idle = True
        if self.core is not None:
            idle = self.core.wait_idle(max(0.0, deadline - time.monotonic()))
        if self.rest_server is not None:
            idle = self.rest_server.stop(max(0.0, deadline - time.monotonic()) + 1.0) and idle
        if self._executor is not None:
            self._executor.shutdown(wait=False)
        if self.core is not None:
            self.core.stop()
        log.info("Server stopped%s", "" if idle else
                 " (some requests did not finish: drain incomplete)")
        return idle
