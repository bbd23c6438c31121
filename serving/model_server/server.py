"""ModelServer: wires config, server core, APIs, gRPC and REST together; start, run, drain,
stop."""

from __future__ import annotations

import logging
import os
import shutil
import socket
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Optional

from serving.model_server.core.apis import Apis
from serving.model_server.config import (ConfigError, LoadedConfig, ServerConfig,
                                         parse_model_server_config)
from serving.model_server.errors import ServingError
from serving.model_server.frontends.grpc_service import GrpcServer, add_servicers
from serving.model_server.workers.link import LinkServer
from serving.model_server.frontends.loop_thread import LoopThread
from serving.model_server.frontends.rest import HttpLimits, RestApp, RestServer
from serving.model_server.core.server_core import ServerCore
from serving.model_server.workers.supervisor import Workers

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
        self.workers: Optional[Workers] = None
        self.link: Optional[LinkServer] = None
        self._link_loop: Optional[LoopThread] = None
        self._link_dir: Optional[str] = None

    def start(self, load_timeout: Optional[float] = None) -> None:
        """Load the models (blocking, as tensorflow_model_server does), then listen.

        Raises ConfigError for a bad flag/file and ServingError when a model cannot load.
        """
        cfg = self.config
        loaded = self._loaded or cfg.load()
        prometheus_path = loaded.prometheus_path
        try:
            self.core = ServerCore(cfg, loaded.batching)
            self.core.start(loaded.model_config, timeout=load_timeout, cancel=self._stop)
            self._executor = ThreadPoolExecutor(max_workers=API_WORKERS,
                                                thread_name_prefix="api")
            apis = Apis(self.core, self._executor)
            if cfg.front_end_workers:
                self._start_workers(apis, loaded)
            else:
                self._start_grpc(apis, loaded.grpc_options, tcp=bool(cfg.port))
                self._start_rest(apis, prometheus_path)
        except BaseException:  # release what did start: models, link, workers, ports
            self.shutdown(0)
            raise
        if cfg.port:
            log.info("Running gRPC ModelServer at %s:%d ...", cfg.host, self.grpc_port)
        if cfg.grpc_socket_path:
            log.info("Running gRPC ModelServer at UNIX socket %s ...", cfg.grpc_socket_path)
        if cfg.rest_api_port:
            log.info("Exporting HTTP/REST API at:localhost:%d ...", self.rest_port)
        elif prometheus_path:
            log.warning("--monitoring_config_file is set but --rest_api_port is 0: metrics "
                        "are served on the REST port only")

        if cfg.model_config_file and cfg.model_config_file_poll_wait_seconds > 0:
            self._config_poller = threading.Thread(target=self._poll_config, daemon=True,
                                                   name="config-poll")
            self._config_poller.start()

    def _start_grpc(self, apis: Apis, options, tcp: bool) -> None:
        """gRPC in this process: on --port when `tcp`, and on --grpc_socket_path."""
        cfg = self.config
        if not (tcp or cfg.grpc_socket_path):
            return
        self.grpc_server = GrpcServer(options, add_servicers(apis))
        try:
            if tcp:
                self.grpc_port = self.grpc_server.add_insecure_port(f"{cfg.host}:{cfg.port}")
            if cfg.grpc_socket_path:
                self.grpc_server.add_insecure_port(f"unix:{cfg.grpc_socket_path}")
        except RuntimeError as e:
            raise ConfigError(f"cannot bind gRPC port {cfg.port or cfg.grpc_socket_path}: "
                              f"{e}") from e
        if tcp and not self.grpc_port:
            raise ConfigError(f"cannot bind gRPC port {cfg.port}")
        self.grpc_server.start()

    def _bind_rest(self) -> Optional[socket.socket]:
        cfg = self.config
        if not cfg.rest_api_port:
            return None
        try:
            sock = socket.create_server((cfg.host, cfg.rest_api_port), backlog=2048)
        except OSError as e:
            raise ConfigError(f"cannot bind REST port {cfg.rest_api_port}: {e}") from e
        self.rest_port = sock.getsockname()[1]
        return sock

    def _start_rest(self, apis: Apis, prometheus_path: Optional[str]) -> None:
        sock = self._bind_rest()
        if sock is not None:
            app = RestApp(apis, HttpLimits.of(self.config), prometheus_path)
            self.rest_server = RestServer(app, sock=sock,
                                          drain_timeout=self.config.drain_timeout_seconds)
            self.rest_server.start()

    def _start_workers(self, apis: Apis, loaded: LoadedConfig) -> None:
        """--front_end_workers: the front ends run in worker processes that pass each call
        to this one over `link`; gRPC on a UNIX socket stays here (one path, one server)."""
        cfg = self.config
        self._link_dir = tempfile.mkdtemp(prefix="model-server-")  # mode 0700
        self._link_loop = LoopThread("link-loop", fast=True)
        self.link = LinkServer(apis, os.path.join(self._link_dir, "link.sock"))
        self._link_loop.run(self.link.start())
        self._start_grpc(apis, loaded.grpc_options, tcp=False)
        rest_sock = self._bind_rest()
        self.grpc_port = cfg.port or None
        self.workers = Workers(cfg, self.link.path, rest_sock, loaded.prometheus_path)
        try:  # the REST socket stays open here too, for a worker that is restarted
            self.workers.start()
        except RuntimeError as e:
            raise ConfigError(str(e)) from e
        log.info("Serving through %d front-end worker processes", cfg.front_end_workers)

    def _poll_config(self) -> None:
        """Re-read --model_config_file on its poll interval and apply it when it differs
        from the config in force (as TF Serving's poller does; the file may have changed
        between the start's read and the first poll). A file that cannot be read or applied
        is logged once and the config in force stays; nothing stops the polling."""
        path = self.config.model_config_file
        last = None
        while not self._stop.wait(self.config.model_config_file_poll_wait_seconds):
            try:
                data = self._read_config_bytes(path)
                if data is None or data == last:
                    continue
                last = data
                new_config = parse_model_server_config(data, path)
                if new_config == self.core.model_config:
                    continue
                log.info("Model config file %s changed; reloading", path)
                try:
                    self.core.apply_config(new_config, timeout=60.0)
                except ServingError as e:
                    if self.core.model_config is not new_config:
                        raise
                    log.error("Applied model config file %s, but %s", path, e)  # TF's too
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
        idle = True
        if self.core is not None:
            self.core.begin_drain()
        if self.workers is not None:  # they finish their calls while this process answers
            idle = self.workers.stop(grace)
        if self.rest_server is not None:
            self.rest_server.server.should_exit = True  # stops accepting at its next tick
        if self.grpc_server is not None:
            self.grpc_server.stop(grace)  # returns once its in-flight RPCs are done
        if self.core is not None:
            idle = self.core.wait_idle(max(0.0, deadline - time.monotonic())) and idle
        if self.rest_server is not None:
            idle = self.rest_server.stop(max(0.0, deadline - time.monotonic()) + 1.0) and idle
        if self.core is not None and self.core.cut_off:  # gRPC and uvicorn cancel, then return
            idle = False
        if self._link_loop is not None:
            self._link_loop.run(self.link.close())
            self._link_loop.stop()
            shutil.rmtree(self._link_dir, ignore_errors=True)
        if self._executor is not None:
            self._executor.shutdown(wait=False)
        if self.core is not None:
            self.core.stop()
        log.info("Server stopped%s", "" if idle else
                 " (some requests did not finish: drain incomplete)")
        return idle
