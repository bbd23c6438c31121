"""A front-end worker process (`--front_end_workers=N`): both cores put to work.

One Python process is GIL-bound: its event loops decode and encode the wire (HTTP, JSON,
gRPC framing) one request at a time while TensorFlow runs batches on the other core. With
N workers, the model process (ModelServer) loads the models and runs the APIs as before,
and N worker processes - `serving.model_server.workers.worker` run through `tf_protos` (TensorFlow's
protos without its runtime: about 65 MB and half a second of start-up each), started and
watched by `workers.Workers` - run the gRPC and REST front ends: REST on the listening
socket the model process bound and hands down (one accept queue), gRPC on the same port in
every worker (SO_REUSEPORT, grpcio's default). They pass every call on over `link` - as TF
Serving's request proto, but a REST Predict as the arrays decoded from its JSON
(`link_arrays`) - so every client sees one server: one set of versions, one
batching queue per version, one metrics registry, and a version switch is the model
process's alone.

Here: `RemoteApis` (the REST front end's APIs over the link), `pass_through` (a gRPC
handler that passes request bytes through) and `main`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import socket
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import List, Optional

import grpc
from tensorflow_serving.apis import (classification_pb2, get_model_metadata_pb2,
                                     get_model_status_pb2, model_pb2, regression_pb2)

from serving.model_server.workers import link_arrays

from serving.model_server.config import EXIT_DRAIN_INCOMPLETE, ServerConfig
from serving.model_server.core.apis import OFFLOAD_BYTES
from serving.model_server.errors import Code, ServingError
from serving.model_server.logs import configure_logging
from serving.model_server.servable.run import PredictCall, PredictResult, predict_signature
from serving.model_server.workers.link import GRPC_METHODS, LinkClient, ready_path

log = logging.getLogger("serving.model_server")

WORKER_THREADS = 8  # a worker's executor: large bodies are converted there
_MODEL_SERVICE = ("GetModelStatus", "HandleReloadConfigRequest")  # the rest: PredictionService


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
                    try:
                        self._link = await LinkClient.connect(self.link_path)
                    except OSError as e:
                        raise ServingError(Code.UNAVAILABLE,
                                           f"The model process is gone: {e}") from None
        return self._link

    async def predict(self, call: PredictCall, entrypoint: str,
                      timeout: Optional[float] = None) -> PredictResult:
        link = await self.link()
        pinned = call.model_spec.WhichOneof("version_choice") == "version"
        for attempt in range(2):
            request, payload = await self._request(link, call, entrypoint)
            try:
                answer, out = await link.exchange("PredictArrays", entrypoint, request, payload,
                                                  timeout)
                break
            except ServingError as e:
                if pinned or attempt or e.code != Code.NOT_FOUND:
                    raise
        (name, version, signature_name), descriptors = answer
        spec = model_pb2.ModelSpec(name=name, signature_name=signature_name)
        spec.version.value = version
        return PredictResult(spec, link_arrays.decode(descriptors, out,
                                                      link_arrays.elements(descriptors)))

    async def _request(self, link: LinkClient, call: PredictCall, entrypoint: str):
        """The "PredictArrays" call for `call` and its payload: its inputs converted here,
        for a version by number."""
        with self.count_failures("Predict", call.model_spec.name, entrypoint):
            version, sigdefs = link.mirror.resolve(call.model_spec)
            _, sig = predict_signature(call, sigdefs)
            if call.inputs.size >= OFFLOAD_BYTES:
                inputs = await asyncio.get_running_loop().run_in_executor(
                    self.executor, call.inputs.decode, sig, self.max_elements)
            else:
                inputs = call.inputs.decode(sig, self.max_elements)
        descriptors, payload = link_arrays.encode(inputs)
        return (call.model_spec.name, call.model_spec.signature_name, version,
                tuple(call.output_filter), descriptors), payload

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

        for service, names in (
                ("tensorflow.serving.PredictionService",
                 [m for m in GRPC_METHODS if m not in _MODEL_SERVICE]),
                ("tensorflow.serving.ModelService", _MODEL_SERVICE)):
            server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(
                service, {m: handler(m) for m in names}),))
    return register


def main(argv: Optional[List[str]] = None) -> int:
    """A worker: `python -m serving.model_server.tf_protos serving.model_server.workers.worker
    CONFIG_JSON LINK_PATH REST_FD PROMETHEUS_PATH` (REST_FD -1: no REST; PROMETHEUS_PATH "":
    no metrics path)."""
    from serving.model_server.frontends.grpc_service import GrpcServer
    from serving.model_server.frontends.rest import HttpLimits, RestApp, RestServer

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
    # Serving on every port now: say so to the model process (workers.Workers.start).
    Path(ready_path(link_path, os.getpid())).touch()
    while not stop.wait(1.0):
        if os.getppid() != parent:  # the model process died: nothing left to serve
            log.error("Worker %d: the model process is gone; exiting", os.getpid())
            break
        if rest_server is not None and not rest_server.is_alive():
            log.error("Worker %d: its REST server stopped; exiting to be replaced",
                      os.getpid())
            return 1
    deadline = time.monotonic() + config.drain_timeout_seconds
    if rest_server is not None:
        rest_server.server.should_exit = True
    if grpc_server is not None:
        grpc_server.stop(config.drain_timeout_seconds)
    drained = rest_server is None or rest_server.stop(
        max(0.0, deadline - time.monotonic()) + 1.0)
    return 0 if drained else EXIT_DRAIN_INCOMPLETE


if __name__ == "__main__":
    sys.exit(main())
