"""Front-end worker processes (--front_end_workers=N): both cores put to work.

One Python process is GIL-bound: its event loops decode and encode the wire (HTTP, JSON,
gRPC framing) one request at a time while TensorFlow runs batches on the other core. With
N workers, the model process (ModelServer) loads the models and runs the APIs as before,
and N worker processes - `python -m serving.model_server.workers` - run the gRPC and REST
front ends: REST on the listening socket the model process bound and hands down (one
accept queue), gRPC on the same port in every worker (SO_REUSEPORT, grpcio's default).
They pass every call on over `link` as TF Serving's request proto, so every client sees one
server: one set of versions, one batching queue per version, one metrics registry, and a
version switch is the model process's alone.

Here: the worker's side (`RemoteApis`, the REST front end's APIs over the link; a gRPC
handler that passes request bytes through; `main`) and the model process's side
(`Workers`: start, watch, restart, drain).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Dict, List, Optional

import grpc
from tensorflow_serving.apis import (classification_pb2, get_model_metadata_pb2,
                                     get_model_status_pb2, predict_pb2, regression_pb2)

from serving.model_server import signatures
from serving.model_server.apis import OFFLOAD_BYTES, PredictCall, PredictResult
from serving.model_server.config import ServerConfig
from serving.model_server.errors import Code, ServingError
from serving.model_server.link import METHODS, LinkClient
from serving.model_server.tensors import to_ndarray, to_tensor_proto

log = logging.getLogger("serving.model_server")

WORKER_THREADS = 8  # a worker's executor: large bodies are converted there
_GRPC_SERVICES = ("tensorflow.serving.PredictionService", "tensorflow.serving.ModelService")


# ---- the worker's side ------------------------------------------------------------------------

class RemoteApis:
    """The APIs as the REST front end calls them (`apis.Apis`'s interface), answered by the
    model process. Predict converts its JSON here, against the signature of the version the
    mirror names, and asks for that version by number; were it unloaded meanwhile (a version
    switch), the call is made once more against the version then serving."""

    def __init__(self, link_path: str, max_elements: int, executor):
        self.link_path = link_path
        self.max_elements = max_elements
        self.executor = executor
        self._link: Optional[LinkClient] = None
        self._connecting: Optional[asyncio.Lock] = None

    async def link(self) -> LinkClient:
        if self._link is None:
            if self._connecting is None:
                self._connecting = asyncio.Lock()
            async with self._connecting:
                if self._link is None:
                    self._link = await LinkClient.connect(self.link_path)
        return self._link

    async def predict(self, call: PredictCall, entrypoint: str,
                      timeout: Optional[float] = None) -> PredictResult:
        link = await self.link()
        pinned = call.model_spec.WhichOneof("version_choice") == "version"
        for attempt in range(2):
            request = await self._request(link, call, entrypoint)
            try:
                body = await link.call("Predict", entrypoint, request.SerializeToString(),
                                       timeout)
                break
            except ServingError as e:
                if pinned or attempt or e.code != Code.NOT_FOUND:
                    raise
        response = predict_pb2.PredictResponse.FromString(body)
        return PredictResult(response.model_spec,
                             {alias: to_ndarray(t, alias) for alias, t in response.outputs.items()})

    async def _request(self, link: LinkClient, call: PredictCall,
                       entrypoint: str) -> predict_pb2.PredictRequest:
        """The PredictRequest for `call`, its inputs converted here, for a version by number."""
        try:
            version, sigdefs = link.mirror.resolve(call.model_spec)
            name = call.model_spec.signature_name or signatures.DEFAULT_SIGNATURE
            sig = sigdefs.get(name)
            if sig is None or not signatures.runnable(sig):
                raise call.inputs.signature_not_found(name)
            if call.inputs.size >= OFFLOAD_BYTES:
                inputs = await asyncio.get_running_loop().run_in_executor(
                    self.executor, call.inputs.decode, sig, self.max_elements)
            else:
                inputs = call.inputs.decode(sig, self.max_elements)
        except ServingError as e:
            link.refused("Predict", call.model_spec.name, entrypoint, e.code)
            raise
        request = predict_pb2.PredictRequest(output_filter=call.output_filter)
        request.model_spec.name = call.model_spec.name
        request.model_spec.signature_name = call.model_spec.signature_name
        request.model_spec.version.value = version
        for alias, value in inputs.items():
            request.inputs[alias].CopyFrom(to_tensor_proto(value, packed=True))
        return request

    async def _proto(self, method, request, response_type, entrypoint, timeout=None):
        link = await self.link()
        return response_type.FromString(await link.call(
            method, entrypoint, request.SerializeToString(), timeout))

    async def classify(self, request, entrypoint, timeout=None):
        return await self._proto("Classify", request,
                                 classification_pb2.ClassificationResponse, entrypoint, timeout)

    async def regress(self, request, entrypoint, timeout=None):
        return await self._proto("Regress", request, regression_pb2.RegressionResponse,
                                 entrypoint, timeout)

    async def get_model_metadata(self, request, entrypoint):
        return await self._proto("GetModelMetadata", request,
                                 get_model_metadata_pb2.GetModelMetadataResponse, entrypoint)

    async def get_model_status(self, request, entrypoint):
        return await self._proto("GetModelStatus", request,
                                 get_model_status_pb2.GetModelStatusResponse, entrypoint)

    @contextlib.contextmanager
    def count_failures(self, api: str, model_name: str, entrypoint: str):
        try:
            yield
        except ServingError as e:
            if self._link is not None:
                self._link.refused(api, model_name, entrypoint, e.code)
            raise

    async def metrics_text(self) -> bytes:
        return await (await self.link()).call("Metrics", "REST", b"")


def pass_through(link_path: str):
    """`register` for a GrpcServer whose PredictionService and ModelService calls go to the
    model process as they came, bytes in and bytes out."""
    async def register(server) -> None:
        link = await LinkClient.connect(link_path)

        def handler(method: str):
            async def call(request: bytes, context):
                timeout = None if method == "Predict" else context.time_remaining()
                try:
                    return await link.call(method, "GRPC", request, timeout)
                except ServingError as e:
                    await context.abort(e.grpc_status, e.message)
            return grpc.unary_unary_rpc_method_handler(call)

        handlers = {m: handler(m) for m in METHODS if m != "Metrics"}
        for service in _GRPC_SERVICES:
            server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(
                service, handlers),))
    return register


def main(argv: Optional[List[str]] = None) -> int:
    """A worker: `python -m serving.model_server.workers CONFIG_JSON LINK_PATH REST_FD
    PROMETHEUS_PATH` (REST_FD -1: no REST; PROMETHEUS_PATH "": no metrics path)."""
    from serving.model_server.__main__ import configure_logging
    from serving.model_server.grpc_service import GrpcServer
    from serving.model_server.rest import HttpLimits, RestApp, RestServer

    configure_logging()
    config_json, link_path, rest_fd, prometheus_path = argv if argv is not None \
        else sys.argv[1:]
    config = ServerConfig(**json.loads(config_json))
    stop = threading.Event()
    parent = os.getppid()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    grpc_server = rest_server = None
    if config.port:
        grpc_server = GrpcServer(config.grpc_options(), pass_through(link_path))
        try:
            bound = grpc_server.add_insecure_port(f"{config.host}:{config.port}")
        except RuntimeError:
            bound = 0
        if not bound:
            log.error("Worker %d cannot bind gRPC port %d", os.getpid(), config.port)
            return 1
        grpc_server.start()
    executor = ThreadPoolExecutor(WORKER_THREADS, thread_name_prefix="worker")
    if int(rest_fd) >= 0:
        apis = RemoteApis(link_path, config.max_request_tensor_elements, executor)
        app = RestApp(apis, HttpLimits.of(config), prometheus_path or None)
        rest_server = RestServer(app, sock=socket.socket(fileno=int(rest_fd)),
                                 drain_timeout=config.drain_timeout_seconds)
        rest_server.start()
    while not stop.wait(1.0):
        if os.getppid() != parent:  # the model process died: nothing left to serve
            log.error("Worker %d: the model process is gone; exiting", os.getpid())
            break
    deadline = time.monotonic() + config.drain_timeout_seconds
    if rest_server is not None:
        rest_server.server.should_exit = True
    if grpc_server is not None:
        grpc_server.stop(config.drain_timeout_seconds)
    drained = rest_server is None or rest_server.stop(
        max(0.0, deadline - time.monotonic()) + 1.0)
    return 0 if drained else 3


# ---- the model process's side -----------------------------------------------------------------

class Workers:
    """Starts N worker processes, restarts one that dies, and drains them on shutdown."""

    def __init__(self, config: ServerConfig, link_path: str, rest_sock: Optional[socket.socket],
                 prometheus_path: Optional[str]):
        self.config = config
        self.link_path = link_path
        self.rest_sock = rest_sock
        self.prometheus_path = prometheus_path or ""
        self.procs: Dict[int, subprocess.Popen] = {}
        self._stopping = threading.Event()
        self._watcher = threading.Thread(target=self._watch, name="workers", daemon=True)

    def _spawn(self, index: int) -> None:
        fd = self.rest_sock.fileno() if self.rest_sock is not None else -1
        config = json.dumps(dataclasses.asdict(self.config))
        self.procs[index] = subprocess.Popen(
            [sys.executable, "-m", "serving.model_server.workers", config, self.link_path,
             str(fd), self.prometheus_path], pass_fds=() if fd < 0 else (fd,))
        log.info("Started front-end worker %d (pid %d)", index, self.procs[index].pid)

    def start(self, ready, timeout: float = 120.0) -> None:
        """Start them; return once `ready(n)` says n workers are serving."""
        for i in range(self.config.front_end_workers):
            self._spawn(i)
        deadline = time.monotonic() + timeout
        while not ready(len(self.procs)):
            dead = {i: p.returncode for i, p in self.procs.items() if p.poll() is not None}
            if dead or time.monotonic() > deadline:
                self.stop(0)
                raise RuntimeError(f"front-end workers did not start (exit codes {dead})")
            time.sleep(0.05)
        self._watcher.start()

    def _watch(self) -> None:
        while not self._stopping.wait(0.5):
            for i, proc in list(self.procs.items()):
                if proc.poll() is not None and not self._stopping.is_set():
                    log.error("Front-end worker %d (pid %d) exited with %s; restarting it",
                              i, proc.pid, proc.returncode)
                    self._spawn(i)

    def stop(self, grace: float) -> bool:
        """SIGTERM every worker: each stops accepting and finishes what it is answering.
        True when each of them drained (exit code 0) within `grace` (+5 s to exit). The
        REST socket is closed then."""
        self._stopping.set()
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        drained = True
        deadline = time.monotonic() + grace + 5.0
        for proc in self.procs.values():
            try:
                drained = proc.wait(max(0.0, deadline - time.monotonic())) == 0 and drained
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
                drained = False
        if self.rest_sock is not None:
            self.rest_sock.close()
        return drained


if __name__ == "__main__":
    sys.exit(main())
