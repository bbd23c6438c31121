"""The one serving core: every API over tensorflow_serving.apis protos.

Both front ends (REST and gRPC) call these methods, so they validate and answer the same
way; a failure is always a `ServingError`, whose code the front end maps through
`errors.STATUS_TABLE`. The core owns the Source and the Manager and applies model configs
(at startup, on HandleReloadConfigRequest and when the config file changes). Each request
holds the version it runs on (`servable`), and runs it by TF Serving's rules
(`signatures`).
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from pathlib import Path
from typing import Dict, Iterable, Iterator, List, Mapping, Optional

import numpy as np
import tensorflow as tf
from tensorflow_serving.apis import (classification_pb2, get_model_metadata_pb2,
                                     get_model_status_pb2, inference_pb2, model_management_pb2,
                                     model_pb2, predict_pb2, prediction_log_pb2, regression_pb2)
from tensorflow_serving.config import model_server_config_pb2

from serving.model_server import signatures, tensors
from serving.model_server.config import (BatchingOptions, ConfigError, ServerConfig,
                                         validate_model_server_config)
from serving.model_server.errors import Code, ServingError, invalid_argument
from serving.model_server.loader import Loader, Servable
from serving.model_server.manager import Manager, State
from serving.model_server.metrics import Metrics
from serving.model_server.source import FileSystemSource, default_policy

log = logging.getLogger("serving.model_server")

WARMUP_FILE = Path("assets.extra") / "tf_serving_warmup_requests"
MAX_WARMUP_RECORDS = 1000
EMPTY_CONFIG_TRANSITION = ("Cannot transition to requested config. It is only legal to "
                           "transition from one ModelConfigList to another.")


class ServingCore:
    """Model lifecycle plus Predict/Classify/Regress/MultiInference/Metadata/Status/Reload."""

    def __init__(self, config: ServerConfig, batching: Optional[BatchingOptions] = None,
                 metrics: Optional[Metrics] = None):
        self.config = config
        self.metrics = metrics or Metrics()
        self.batching = batching
        self.check_method = config.enable_signature_method_name_check
        self.max_elements = config.max_request_tensor_elements
        self.manager = Manager(self._make_loader, num_load_threads=1,
                               listener=self.metrics.on_state,
                               max_load_retries=config.max_num_load_retries,
                               load_retry_interval=config.load_retry_interval_micros / 1e6)
        self.source = FileSystemSource(self.manager.set_aspired_versions,
                                       config.file_system_poll_wait_seconds)
        self._config_lock = threading.Lock()
        self.model_config: Optional[model_server_config_pb2.ModelServerConfig] = None
        self._inflight = 0
        self._cancel: Optional[threading.Event] = None
        self._inflight_cond = threading.Condition()
        self.metrics.inflight.set_function(lambda: self._inflight)  # read when scraped

    # ---- lifecycle -----------------------------------------------------------------
    def _make_loader(self, name: str, version: int, path: str) -> Loader:
        warmup = self._warmup if self.config.enable_model_warmup else None
        return Loader(name, version, path, tags=self.config.tags(), batching=self.batching,
                      warmup=warmup, session_config=self.config.session_config())

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
            for m in model_config.model_config_list.config:
                self.manager.set_labels(m.name, dict(m.version_labels), allow_unavailable=allow)
            self.model_config = model_config

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

    def reload_config(self, request: model_management_pb2.ReloadConfigRequest,
                      timeout: Optional[float] = None) -> model_management_pb2.ReloadConfigResponse:
        self.apply_config(request.config, timeout=timeout if timeout is not None else 60.0)
        response = model_management_pb2.ReloadConfigResponse()
        response.status.error_code = Code.OK
        return response

    def stop(self) -> None:
        self.source.stop()
        self.manager.close()

    # ---- in-flight tracking (drain) and metrics -------------------------------------
    @contextlib.contextmanager
    def inflight(self):
        """Count a request from arrival to reply, so a drain can wait for it."""
        with self._inflight_cond:
            self._inflight += 1
        try:
            yield
        finally:
            with self._inflight_cond:
                self._inflight -= 1
                if not self._inflight:
                    self._inflight_cond.notify_all()

    def wait_idle(self, timeout: float) -> bool:
        with self._inflight_cond:
            return self._inflight_cond.wait_for(lambda: self._inflight == 0, timeout)

    # ---- lookup: a request holds the version it runs on -----------------------------
    def lookup(self, model_spec: model_pb2.ModelSpec) -> Servable:
        if not model_spec.name:
            raise invalid_argument("Missing ModelSpec")
        choice = model_spec.WhichOneof("version_choice")
        if choice == "version":
            return self.manager.resolve(model_spec.name, version=model_spec.version.value)
        if choice == "version_label":
            return self.manager.resolve(model_spec.name, label=model_spec.version_label)
        return self.manager.resolve(model_spec.name)

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

    def signature(self, servable: Servable, name: str, missing: Optional[str] = None):
        """(name, SignatureDef) for Predict; `missing` is the message prefix of a REST
        lookup, which TF Serving answers INVALID_ARGUMENT."""
        name = name or signatures.DEFAULT_SIGNATURE
        sig = servable.signature_defs.get(name)
        if sig is None or not signatures.runnable(sig):
            if missing is not None:
                raise invalid_argument(f'{missing}"{name}" not found in signature def')
            raise ServingError(Code.FAILED_PRECONDITION,
                               f'Serving signature key "{name}" not found.')
        signatures.check_predict_method(sig, self.check_method)
        return name, sig

    @staticmethod
    def _model_spec(servable: Servable, signature_name: str) -> model_pb2.ModelSpec:
        spec = model_pb2.ModelSpec(name=servable.name,
                                   signature_name=signature_name or signatures.DEFAULT_SIGNATURE)
        spec.version.value = servable.version
        return spec

    # ---- Predict -------------------------------------------------------------------
    def run_predict(self, servable: Servable, sig, inputs: Mapping[str, np.ndarray],
                    output_filter: Iterable[str] = (), timeout: Optional[float] = None
                    ) -> Dict[str, np.ndarray]:
        """Run a predict signature on `inputs` (by alias) -> outputs by alias. REST, warmup."""
        plan = signatures.predict_plan(sig, inputs, output_filter)
        return plan.response_tensors(servable.run(plan.feeds, plan.fetches, timeout))

    def _predict_plan(self, servable: Servable, request: predict_pb2.PredictRequest):
        name, sig = self.signature(servable, request.model_spec.signature_name)
        inputs = tensors.decode_request_tensors(request.inputs, self.max_elements)
        return name, signatures.predict_plan(sig, inputs, request.output_filter)

    def _predict_response(self, servable: Servable, name: str, plan, outputs
                          ) -> predict_pb2.PredictResponse:
        response = predict_pb2.PredictResponse(model_spec=self._model_spec(servable, name))
        for alias, value in plan.response_tensors(outputs).items():
            response.outputs[alias].CopyFrom(tensors.to_tensor_proto(value))
        return response

    def predict(self, request: predict_pb2.PredictRequest,
                timeout: Optional[float] = None) -> predict_pb2.PredictResponse:
        with self.servable(request.model_spec) as servable:
            name, plan = self._predict_plan(servable, request)
            outputs = servable.run(plan.feeds, plan.fetches, timeout)
            return self._predict_response(servable, name, plan, outputs)

    async def predict_async(self, request: predict_pb2.PredictRequest,
                            executor) -> predict_pb2.PredictResponse:
        """`predict` for an event-loop front end: the same checks and answer, but a batched
        request waits for its batch without holding a thread (the gRPC hot path). Deadlines
        are the caller's: cancelling this coroutine withdraws a request still queued."""
        with self.servable(request.model_spec) as servable:
            name, plan = self._predict_plan(servable, request)
            outputs = await servable.run_async(plan.feeds, plan.fetches, executor)
            return self._predict_response(servable, name, plan, outputs)

    # ---- Classify / Regress / MultiInference --------------------------------------
    def classify(self, request: classification_pb2.ClassificationRequest,
                 timeout: Optional[float] = None) -> classification_pb2.ClassificationResponse:
        with self.servable(request.model_spec) as servable:
            name, result = self._classify(servable, request.model_spec.signature_name,
                                          request.input, timeout)
            return classification_pb2.ClassificationResponse(
                model_spec=self._model_spec(servable, name), result=result)

    def regress(self, request: regression_pb2.RegressionRequest,
                timeout: Optional[float] = None) -> regression_pb2.RegressionResponse:
        with self.servable(request.model_spec) as servable:
            name, result = self._regress(servable, request.model_spec.signature_name,
                                         request.input, timeout)
            return regression_pb2.RegressionResponse(
                model_spec=self._model_spec(servable, name), result=result)

    def _classify(self, servable: Servable, signature_name: str, input_proto, timeout):
        return self._run_examples(servable, signature_name, input_proto, timeout,
                                  signatures.classification_tensors,
                                  signatures.classification_result)

    def _regress(self, servable: Servable, signature_name: str, input_proto, timeout):
        return self._run_examples(servable, signature_name, input_proto, timeout,
                                  signatures.regression_tensors, signatures.regression_result)

    def _run_examples(self, servable: Servable, signature_name: str, input_proto, timeout,
                      tensors_of, result_of):
        """Classify or Regress: the signature's tensors, one run on the serialized examples,
        the result made from its outputs. (signature name, result)."""
        name, sig = signatures.find_signature(servable.signature_defs, signature_name,
                                              "No signature was found with the name: ")
        input_name, fetches = tensors_of(sig, self.check_method)
        examples = signatures.serialize_examples(input_proto)
        outputs = servable.run({input_name: examples}, fetches, timeout)
        return name, result_of(sig, len(examples), outputs)

    def multi_inference(self, request: inference_pb2.MultiInferenceRequest,
                        timeout: Optional[float] = None) -> inference_pb2.MultiInferenceResponse:
        if not request.tasks:
            raise invalid_argument("Expected at least one task")
        with self.servable(request.tasks[0].model_spec) as servable:
            return self._multi_inference(servable, request, timeout)

    def _multi_inference(self, servable: Servable, request, timeout):
        """All tasks in one Session run (TensorFlowMultiInferenceRunner)."""
        input_names, fetches, resolved = signatures.multi_inference_tensors(
            servable.signature_defs, request.tasks, self.check_method)
        examples = signatures.serialize_examples(request.input)
        outputs = servable.run(dict.fromkeys(input_names, examples), fetches, timeout)
        response = inference_pb2.MultiInferenceResponse()
        for task, (name, sig) in zip(request.tasks, resolved):
            result = response.results.add()
            if task.method_name == signatures.CLASSIFY_METHOD:
                result.classification_result.CopyFrom(
                    signatures.classification_result(sig, len(examples), outputs))
            else:
                result.regression_result.CopyFrom(
                    signatures.regression_result(sig, len(examples), outputs))
            result.model_spec.CopyFrom(self._model_spec(servable, name))
        return response

    # ---- Metadata / Status ---------------------------------------------------------
    def get_model_metadata(self, request: get_model_metadata_pb2.GetModelMetadataRequest
                           ) -> get_model_metadata_pb2.GetModelMetadataResponse:
        if not request.metadata_field:
            raise invalid_argument("GetModelMetadataRequest must specify at least one "
                                   "metadata_field")
        for field in request.metadata_field:
            if field != "signature_def":
                raise invalid_argument(f"Metadata field {field} is not supported")
        servable = self.lookup(request.model_spec)  # reads only what loading set
        response = get_model_metadata_pb2.GetModelMetadataResponse()
        response.model_spec.name = servable.name
        response.model_spec.version.value = servable.version
        sigmap = get_model_metadata_pb2.SignatureDefMap()
        for k, v in servable.signature_defs.items():
            sigmap.signature_def[k].CopyFrom(v)
        response.metadata["signature_def"].Pack(sigmap)
        return response

    def get_model_status(self, request: get_model_status_pb2.GetModelStatusRequest
                         ) -> get_model_status_pb2.GetModelStatusResponse:
        spec = request.model_spec
        if not spec.name:
            raise invalid_argument("Missing model name in request.")
        states = self.manager.version_states(spec.name)
        choice = spec.WhichOneof("version_choice")
        version = None
        if choice == "version":
            version = spec.version.value
        elif choice == "version_label":
            version = self.manager.labels(spec.name).get(spec.version_label)
            if version is None:
                raise invalid_argument(
                    f"Unrecognized servable version label: {spec.version_label}")
        if version is not None:
            states = [s for s in states if s.version == version]
            if not states:
                raise ServingError(Code.NOT_FOUND,
                                   f"Could not find version {version} of model {spec.name}")
        elif not states:
            raise ServingError(Code.NOT_FOUND,
                               f"Could not find any versions of model {spec.name}")
        response = get_model_status_pb2.GetModelStatusResponse()
        for s in states:
            status = response.model_version_status.add(version=s.version, state=int(s.state))
            status.status.SetInParent()  # TF Serving always reports a status (OK here)
            if s.error is not None:
                status.status.error_code = int(s.error.code)
                status.status.error_message = s.error.message
        return response

    # ---- warmup --------------------------------------------------------------------
    def _warmup(self, servable: Servable) -> int:
        """Replay assets.extra/tf_serving_warmup_requests on the version before it serves."""
        path = Path(servable.path) / WARMUP_FILE
        if not path.is_file():
            return 0
        records = []
        try:
            for i, raw in enumerate(tf.data.TFRecordDataset(str(path)).as_numpy_iterator()):
                if i >= MAX_WARMUP_RECORDS:
                    raise ServingError(Code.INVALID_ARGUMENT,
                                       f"Number of warmup records exceeds the maximum "
                                       f"({MAX_WARMUP_RECORDS}) at {path}")
                log_entry = prediction_log_pb2.PredictionLog()
                log_entry.ParseFromString(raw)
                records.append(log_entry)
        except tf.errors.OpError as e:
            raise ServingError(Code.DATA_LOSS, f"Failed to read warmup data at {path}: "
                                               f"{e.message}") from e
        if not records:
            raise ServingError(Code.INVALID_ARGUMENT, f"No warmup data file found at {path}"
                                                      f" (empty)")
        for _ in range(max(1, self.config.num_request_iterations_for_warmup)):
            for entry in records:
                self._replay(servable, entry)
        return len(records)

    def _replay(self, servable: Servable, entry) -> None:
        kind = entry.WhichOneof("log_type")
        if kind == "predict_log":
            req = entry.predict_log.request
            _, sig = self.signature(servable, req.model_spec.signature_name)
            inputs = tensors.decode_request_tensors(req.inputs, self.max_elements)
            self.run_predict(servable, sig, inputs, req.output_filter)
        elif kind == "classify_log":
            req = entry.classify_log.request
            self._classify(servable, req.model_spec.signature_name, req.input, None)
        elif kind == "regress_log":
            req = entry.regress_log.request
            self._regress(servable, req.model_spec.signature_name, req.input, None)
        elif kind == "multi_inference_log":
            self._multi_inference(servable, entry.multi_inference_log.request, None)
        else:
            raise ServingError(Code.UNIMPLEMENTED,
                               f"Unsupported log_type for warmup: {kind}")
