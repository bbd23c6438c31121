"""gRPC front end: PredictionService and ModelService servicers, thin over ServingCore.

It runs on grpc.aio. Predict, the hot path, stays on the event loop: its checks are cheap,
and with batching on it awaits its batch there (ServingCore.predict_async), so a request
costs no thread hand-off; the model itself runs on the batch threads, or on a thread pool
when batching is off. The other methods run their blocking core calls on that pool.
benchmarks/README.md has what each of these choices measured on 2 cores.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Optional

import grpc
from tensorflow_serving.apis import model_service_pb2_grpc, prediction_service_pb2_grpc

from serving.model_server.core import ServingCore
from serving.model_server.errors import Code, ServingError

log = logging.getLogger("serving.model_server")


async def _call(core: ServingCore, executor, api: str, model_name: str, context, fn, *args,
                **kwargs):
    """Run one blocking core call on `executor`."""
    loop = asyncio.get_running_loop()
    return await _answer(core, api, model_name, context, loop.run_in_executor(
        executor, functools.partial(fn, *args, **kwargs)))


async def _answer(core: ServingCore, api: str, model_name: str, context, awaitable):
    """Await one core call; a ServingError becomes the gRPC status from the shared table."""
    with core.inflight():
        try:
            with core.metrics.track(api, model_name, "GRPC"):
                return await awaitable
        except ServingError as e:
            error = e
        except Exception as e:  # noqa: BLE001 - never let a request take the server down
            log.exception("gRPC %s failed", api)
            error = ServingError(Code.INTERNAL, f"{type(e).__name__}: {e}")
    await context.abort(error.grpc_status, error.message)


class PredictionServicer(prediction_service_pb2_grpc.PredictionServiceServicer):
    def __init__(self, core: ServingCore, executor):
        self.core = core
        self.executor = executor

    def _run(self, api, name, context, fn, request, deadline=True):
        kwargs = {"timeout": context.time_remaining()} if deadline else {}
        return _call(self.core, self.executor, api, name, context, fn, request, **kwargs)

    async def Predict(self, request, context):
        # On the loop itself: the checks are cheap, and with batching on the request then
        # waits for its batch without a thread hand-off (see ServingCore.predict_async).
        # At the client's deadline grpc.aio cancels this coroutine, which withdraws it.
        return await _answer(self.core, "Predict", request.model_spec.name, context,
                             self.core.predict_async(request, self.executor))

    async def Classify(self, request, context):
        return await self._run("Classify", request.model_spec.name, context,
                               self.core.classify, request)

    async def Regress(self, request, context):
        return await self._run("Regress", request.model_spec.name, context, self.core.regress,
                               request)

    async def MultiInference(self, request, context):
        name = request.tasks[0].model_spec.name if request.tasks else ""
        return await self._run("MultiInference", name, context, self.core.multi_inference,
                               request)

    async def GetModelMetadata(self, request, context):
        return await self._run("GetModelMetadata", request.model_spec.name, context,
                               self.core.get_model_metadata, request, deadline=False)


class ModelServicer(model_service_pb2_grpc.ModelServiceServicer):
    def __init__(self, core: ServingCore, executor):
        self.core = core
        self.executor = executor

    async def GetModelStatus(self, request, context):
        return await _call(self.core, self.executor, "GetModelStatus", request.model_spec.name,
                           context, self.core.get_model_status, request)

    async def HandleReloadConfigRequest(self, request, context):
        return await _call(self.core, self.executor, "HandleReloadConfigRequest", "", context,
                           self.core.reload_config, request, timeout=context.time_remaining())


class GrpcServer:
    """A grpc.aio server on its own event-loop thread, driven from synchronous code."""

    def __init__(self, core: ServingCore, options, max_workers: int = 64):
        self._executor = ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="grpc")
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="grpc-loop",
                                        daemon=True)
        self._thread.start()
        self._server: Optional[grpc.aio.Server] = self._run(self._create(core, options))

    def _run(self, coro):
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()

    async def _create(self, core, options):
        server = grpc.aio.server(options=options)
        prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(
            PredictionServicer(core, self._executor), server)
        model_service_pb2_grpc.add_ModelServiceServicer_to_server(
            ModelServicer(core, self._executor), server)
        return server

    def add_insecure_port(self, address: str) -> int:
        async def add():
            return self._server.add_insecure_port(address)
        return self._run(add())

    def start(self) -> None:
        self._run(self._server.start())

    def stop(self, grace: float) -> None:
        """Refuse new RPCs, let in-flight ones finish for up to `grace` seconds."""
        try:
            self._run(self._server.stop(grace))
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=5)
            self._executor.shutdown(wait=False)
