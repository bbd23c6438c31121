"""The APIs (TF Serving's PredictionService and ModelService): one entry point each, awaited
by both front ends.

A front end decodes its wire format into the request object - a `PredictCall` for Predict,
whose inputs are converted against the signature once the version is held (JSON needs its
dtypes), the tensorflow_serving.apis request proto for the others - awaits the entry point
with its entrypoint label, and encodes the answer. Here each request is counted (in flight
and in the metrics), holds its version until it is answered, is checked by TF Serving's rules
(`signatures`) and runs. A failure is always a `ServingError`, whose code the front end maps
through `errors.STATUS_TABLE`.

Predict stays on the event loop: with batching on it awaits its batch there without holding
a thread (`Servable.run_async`), and inputs large enough to take a while to convert
(OFFLOAD_BYTES) are converted on the executor. The other APIs run on the executor. Running
one API on a version already held is `servable.run`'s; warmup replays requests with it.
"""

from __future__ import annotations

import asyncio
import functools
from typing import Optional

from tensorflow_serving.apis import (classification_pb2, get_model_metadata_pb2,
                                     get_model_status_pb2, inference_pb2, model_management_pb2,
                                     regression_pb2)

from serving.model_server.core.server_core import ServerCore
from serving.model_server.errors import Code, ServingError, invalid_argument
from serving.model_server.servable.run import (PredictCall, PredictResult, answered_by,
                                               predict_plan, run_classify,
                                               run_multi_inference, run_regress)

OFFLOAD_BYTES = 256 << 10  # Predict inputs this large are converted off the event loop


class Apis:
    """Every API over one ServerCore; blocking work runs on `executor`."""

    def __init__(self, core: ServerCore, executor):
        self.core = core
        self.executor = executor
        self.check_method = core.config.enable_signature_method_name_check
        self.max_elements = core.config.max_request_tensor_elements

    def count_failures(self, api: str, model_name: str, entrypoint: str):
        """A context manager for a front end's decoding: a request it refuses is counted as
        that API's, with its status."""
        return self.core.metrics.count_failures(api, model_name, entrypoint)

    async def metrics_text(self) -> bytes:
        """The Prometheus exposition of this server's metrics."""
        return self.core.metrics.exposition()

    def _blocking(self, fn, *args):
        return asyncio.get_running_loop().run_in_executor(self.executor,
                                                          functools.partial(fn, *args))

    async def predict(self, call: PredictCall, entrypoint: str,
                      timeout: Optional[float] = None) -> PredictResult:
        """Predict. `timeout` bounds the wait for a batch; an event-loop caller's own
        deadline cancels this coroutine, which withdraws a request still queued."""
        with self.core.request("Predict", call.model_spec.name, entrypoint):
            if not call.spec_given:  # TF Serving's predictor checks this first
                raise invalid_argument("Missing ModelSpec")
            with self.core.servable(call.model_spec) as servable:
                if call.inputs.size >= OFFLOAD_BYTES:
                    name, plan = await self._blocking(predict_plan, servable, call,
                                                      self.check_method, self.max_elements)
                else:
                    name, plan = predict_plan(servable, call, self.check_method,
                                              self.max_elements)
                outputs = await servable.run_async(plan.feeds, plan.fetches, self.executor,
                                                   timeout)
                return PredictResult(answered_by(servable, name),
                                     plan.response_tensors(outputs))

    async def classify(self, request: classification_pb2.ClassificationRequest,
                       entrypoint: str, timeout: Optional[float] = None
                       ) -> classification_pb2.ClassificationResponse:
        with self.core.request("Classify", request.model_spec.name, entrypoint):
            return await self._blocking(self._examples, request, timeout, run_classify,
                                        classification_pb2.ClassificationResponse)

    async def regress(self, request: regression_pb2.RegressionRequest, entrypoint: str,
                      timeout: Optional[float] = None) -> regression_pb2.RegressionResponse:
        with self.core.request("Regress", request.model_spec.name, entrypoint):
            return await self._blocking(self._examples, request, timeout, run_regress,
                                        regression_pb2.RegressionResponse)

    def _examples(self, request, timeout, run, response_type):
        with self.core.servable(request.model_spec) as servable:
            name, result = run(servable, request.model_spec.signature_name, request.input,
                               self.check_method, timeout)
            return response_type(model_spec=answered_by(servable, name), result=result)

    async def multi_inference(self, request: inference_pb2.MultiInferenceRequest,
                              entrypoint: str, timeout: Optional[float] = None
                              ) -> inference_pb2.MultiInferenceResponse:
        name = request.tasks[0].model_spec.name if request.tasks else ""
        with self.core.request("MultiInference", name, entrypoint):
            return await self._blocking(self._multi_inference, request, timeout)

    def _multi_inference(self, request, timeout):
        if not request.tasks:
            raise invalid_argument("Expected at least one task")
        with self.core.servable(request.tasks[0].model_spec) as servable:
            return run_multi_inference(servable, request, self.check_method, timeout)

    async def get_model_metadata(self, request: get_model_metadata_pb2.GetModelMetadataRequest,
                                 entrypoint: str
                                 ) -> get_model_metadata_pb2.GetModelMetadataResponse:
        with self.core.request("GetModelMetadata", request.model_spec.name, entrypoint):
            return await self._blocking(get_model_metadata, self.core, request)

    async def get_model_status(self, request: get_model_status_pb2.GetModelStatusRequest,
                               entrypoint: str) -> get_model_status_pb2.GetModelStatusResponse:
        with self.core.request("GetModelStatus", request.model_spec.name, entrypoint):
            return await self._blocking(get_model_status, self.core, request)

    async def reload_config(self, request: model_management_pb2.ReloadConfigRequest,
                            entrypoint: str, timeout: Optional[float] = None
                            ) -> model_management_pb2.ReloadConfigResponse:
        with self.core.request("HandleReloadConfigRequest", "", entrypoint):
            if request.config.WhichOneof("config") != "model_config_list":  # TF's handler
                raise invalid_argument("ServerModelConfig type not supported by "
                                       "HandleReloadConfigRequest. Only ModelConfigList is "
                                       "currently supported")
            await self._blocking(functools.partial(
                self.core.apply_config, request.config,
                timeout=timeout if timeout is not None else 60.0))
            response = model_management_pb2.ReloadConfigResponse()
            response.status.error_code = Code.OK
            return response


# ---- the model service and metadata ---------------------------------------------------------

def get_model_metadata(core: ServerCore, request: get_model_metadata_pb2.GetModelMetadataRequest
                       ) -> get_model_metadata_pb2.GetModelMetadataResponse:
    if not request.metadata_field:
        raise invalid_argument("GetModelMetadataRequest must specify at least one "
                               "metadata_field")
    for field in request.metadata_field:
        if field != "signature_def":
            raise invalid_argument(f"Metadata field {field} is not supported")
    servable = core.lookup(request.model_spec)  # reads only what loading set
    response = get_model_metadata_pb2.GetModelMetadataResponse()
    response.model_spec.name = servable.name
    response.model_spec.version.value = servable.version
    sigmap = get_model_metadata_pb2.SignatureDefMap()
    for k, v in servable.signature_defs.items():
        sigmap.signature_def[k].CopyFrom(v)
    response.metadata["signature_def"].Pack(sigmap)
    return response


def get_model_status(core: ServerCore, request: get_model_status_pb2.GetModelStatusRequest
                     ) -> get_model_status_pb2.GetModelStatusResponse:
    """As TF Serving's GetModelStatusImpl: one version when the spec names one, else every
    version of the model, a version label included (it is not resolved for status)."""
    if not request.HasField("model_spec"):
        raise invalid_argument("Missing ModelSpec")
    spec = request.model_spec  # an empty name is a model with no versions, as in TF
    states = core.manager.version_states(spec.name)
    version = spec.version.value if spec.WhichOneof("version_choice") == "version" else None
    if version is not None:
        states = [s for s in states if s.version == version]
        if not states:
            raise ServingError(Code.NOT_FOUND,
                               f"Could not find version {version} of model {spec.name}")
    elif not states:
        raise ServingError(Code.NOT_FOUND, f"Could not find any versions of model {spec.name}")
    response = get_model_status_pb2.GetModelStatusResponse()
    for s in states:
        status = response.model_version_status.add(version=s.version, state=int(s.state))
        status.status.SetInParent()  # TF Serving always reports a status (OK here)
        if s.error is not None:
            status.status.error_code = int(s.error.code)
            status.status.error_message = s.error.message
    return response
