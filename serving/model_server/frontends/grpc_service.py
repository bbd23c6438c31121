"""gRPC front end: PredictionService and ModelService, thin over the APIs.

Each method wraps the request proto in the API's request object, awaits the one entry point
(`apis.Apis`) and encodes the answer; a ServingError becomes the gRPC status of the shared
table. It runs on grpc.aio; Predict stays on the event loop (with batching on it awaits its
batch there, so a request costs no thread hand-off), the client's deadline cancels it, which
withdraws a request still queued. benchmarks/README.md has what these choices measured.
"""

from __future__ import annotations

import logging

import grpc
from tensorflow_serving.apis import model_service_pb2_grpc, prediction_service_pb2_grpc

from serving.model_server.core.apis import Apis
from serving.model_server.errors import as_serving_error
from serving.model_server.frontends.loop_thread import LoopThread
from serving.model_server.servable.run import PredictCall

log = logging.getLogger("serving.model_server")
ENTRYPOINT = "GRPC"  # the metrics' entrypoint label


async def _answer(api: str, context, awaitable):
    """Await one API call; a ServingError becomes the gRPC status from the shared table."""
    try:
        return await awaitable
    except Exception as e:  # noqa: BLE001 - never let a request take the server down
        error = as_serving_error(e, f"gRPC {api}")
    await context.abort(error.grpc_status, error.message)


class PredictionServicer(prediction_service_pb2_grpc.PredictionServiceServicer):
    def __init__(self, apis: Apis):
        self.apis = apis

    async def Predict(self, request, context):
        return await _answer("Predict", context, self._predict(request))

    async def _predict(self, request):
        call = PredictCall.from_request(request, request.ByteSize())
        return (await self.apis.predict(call, ENTRYPOINT)).to_proto()

    async def Classify(self, request, context):
        return await _answer("Classify", context, self.apis.classify(
            request, ENTRYPOINT, context.time_remaining()))

    async def Regress(self, request, context):
        return await _answer("Regress", context, self.apis.regress(
            request, ENTRYPOINT, context.time_remaining()))

    async def MultiInference(self, request, context):
        return await _answer("MultiInference", context, self.apis.multi_inference(
            request, ENTRYPOINT, context.time_remaining()))

    async def GetModelMetadata(self, request, context):
        return await _answer("GetModelMetadata", context,
                             self.apis.get_model_metadata(request, ENTRYPOINT))


class ModelServicer(model_service_pb2_grpc.ModelServiceServicer):
    def __init__(self, apis: Apis):
        self.apis = apis

    async def GetModelStatus(self, request, context):
        return await _answer("GetModelStatus", context,
                             self.apis.get_model_status(request, ENTRYPOINT))

    async def HandleReloadConfigRequest(self, request, context):
        return await _answer("HandleReloadConfigRequest", context, self.apis.reload_config(
            request, ENTRYPOINT, context.time_remaining()))


def add_servicers(apis: Apis):
    """`register` for a GrpcServer over the APIs of this process."""
    async def register(server) -> None:
        prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(
            PredictionServicer(apis), server)
        model_service_pb2_grpc.add_ModelServiceServicer_to_server(ModelServicer(apis), server)
    return register


class GrpcServer:
    """A grpc.aio server on its own event-loop thread, driven from synchronous code;
    `register(server)`, a coroutine function run on that loop, adds its services."""

    def __init__(self, options, register):
        self._loop = LoopThread("grpc-loop")
        self._server: grpc.aio.Server = self._loop.run(self._create(options, register))

    @staticmethod
    async def _create(options, register):
        server = grpc.aio.server(options=options)
        await register(server)
        return server

    def add_insecure_port(self, address: str) -> int:
        async def add():
            return self._server.add_insecure_port(address)
        return self._loop.run(add())

    def start(self) -> None:
        self._loop.run(self._server.start())

    def stop(self, grace: float) -> None:
        """Refuse new RPCs, let in-flight ones finish for up to `grace` seconds."""
        try:
            self._loop.run(self._server.stop(grace))
        finally:
            self._loop.stop()
