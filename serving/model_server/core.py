"""The one serving core: every API over tensorflow_serving.apis protos.

Both front ends (REST and gRPC) call these methods, so they validate and answer the same
way; a failure is always a `ServingError`, whose code the front end maps through
`errors.STATUS_TABLE`. The core owns the Source and the Manager and applies model configs
(at startup, on HandleReloadConfigRequest and when the config file changes).
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Tuple

import numpy as np
import tensorflow as tf
from tensorflow.core.example import example_pb2
from tensorflow.core.framework import types_pb2
from tensorflow_serving.apis import (classification_pb2, get_model_metadata_pb2,
                                     get_model_status_pb2, inference_pb2, model_management_pb2,
                                     model_pb2, predict_pb2, prediction_log_pb2, regression_pb2)
from tensorflow_serving.config import model_server_config_pb2

from serving.model_server import tensors
from serving.model_server.config import ConfigError, ServerConfig, validate_model_server_config
from serving.model_server.errors import Code, ServingError, invalid_argument
from serving.model_server.loader import Loader, Servable
from serving.model_server.manager import Manager, State
from serving.model_server.metrics import Metrics
from serving.model_server.source import FileSystemSource, default_policy

log = logging.getLogger("serving.model_server")

DEFAULT_SIGNATURE = "serving_default"
PREDICT_METHOD = "tensorflow/serving/predict"
CLASSIFY_METHOD = "tensorflow/serving/classify"
REGRESS_METHOD = "tensorflow/serving/regress"
WARMUP_FILE = Path("assets.extra") / "tf_serving_warmup_requests"
MAX_WARMUP_RECORDS = 1000


class ServingCore:
    """Model lifecycle plus Predict/Classify/Regress/MultiInference/Metadata/Status/Reload."""

    def __init__(self, config: ServerConfig, metrics: Optional[Metrics] = None):
        self.config = config
        self.metrics = metrics or Metrics()
        self.batching = config.batching()
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
        return Loader(name, version, path, tags=self.config.saved_model_tags.split(","),
                      batching=self.batching, warmup=warmup)

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

    # ---- lookup --------------------------------------------------------------------
    def lookup(self, model_spec: model_pb2.ModelSpec) -> Servable:
        if not model_spec.name:
            raise invalid_argument("Missing ModelSpec")
        choice = model_spec.WhichOneof("version_choice")
        if choice == "version":
            return self.manager.resolve(model_spec.name, version=model_spec.version.value)
        if choice == "version_label":
            return self.manager.resolve(model_spec.name, label=model_spec.version_label)
        return self.manager.resolve(model_spec.name)

    @staticmethod
    def signature(servable: Servable, name: str, methods: Optional[Iterable[str]] = None,
                  kind: str = "prediction"):
        name = name or DEFAULT_SIGNATURE
        sig = servable.signature_defs.get(name)
        if sig is None or not servable.can_run(name):
            raise ServingError(Code.FAILED_PRECONDITION,
                               f'Serving signature key "{name}" not found.')
        if methods is not None and sig.method_name not in methods:
            raise invalid_argument(
                f"Expected {kind} signature method_name to be "
                f"{' or '.join(methods)}. Was: {sig.method_name}")
        return name, sig

    @staticmethod
    def _model_spec(servable: Servable, signature_name: str) -> model_pb2.ModelSpec:
        spec = model_pb2.ModelSpec(name=servable.name, signature_name=signature_name)
        spec.version.value = servable.version
        return spec

    def _run(self, servable: Servable, signature_name: str, inputs, timeout=None):
        return servable.run(signature_name, inputs, timeout=timeout)

    # ---- Predict -------------------------------------------------------------------
    def check_predict(self, servable: Servable, sig, inputs: Dict[str, np.ndarray],
                      output_filter: Iterable[str] = ()) -> List[str]:
        """Validate `inputs` and `output_filter` against the signature; the outputs to keep."""
        expected = set(sig.inputs)
        for alias in inputs:
            if alias not in expected:
                raise invalid_argument(
                    f"input tensor alias not found in signature: {alias}. Inputs expected to "
                    f"be in the set {{{','.join(sorted(expected))}}}.")
        missing = expected - set(inputs)
        if missing:
            raise invalid_argument(
                f"Request inputs do not match required inputs for model `{servable.name}`. "
                f"Send extra: {{}}. Missing but required: {{{','.join(sorted(missing))}}}.")
        for position, (alias, value) in enumerate(sorted(inputs.items())):
            _check_tensor(alias, value, sig.inputs[alias], position)
        filtered = list(output_filter)
        for alias in filtered:
            if alias not in sig.outputs:
                raise invalid_argument(
                    f"output tensor alias not found in signature: {alias} Outputs expected to "
                    f"be in the set {{{','.join(sorted(sig.outputs))}}}.")
        return filtered or list(sig.outputs)

    def run_predict(self, servable: Servable, signature_name: str, sig,
                    inputs: Dict[str, np.ndarray], output_filter: Iterable[str] = (),
                    timeout: Optional[float] = None) -> Dict[str, np.ndarray]:
        """Validate `inputs` against the signature and run it; shared by REST and gRPC."""
        keep = self.check_predict(servable, sig, inputs, output_filter)
        return _select(self._run(servable, signature_name, inputs, timeout), keep)

    def _prepare_predict(self, request: predict_pb2.PredictRequest):
        servable = self.lookup(request.model_spec)
        name, sig = self.signature(servable, request.model_spec.signature_name,
                                   (PREDICT_METHOD, CLASSIFY_METHOD, REGRESS_METHOD))
        inputs = {k: tensors.to_ndarray(v) for k, v in request.inputs.items()}
        keep = self.check_predict(servable, sig, inputs, request.output_filter)
        return servable, name, inputs, keep

    def _predict_response(self, servable: Servable, name: str,
                          outputs: Dict[str, np.ndarray]) -> predict_pb2.PredictResponse:
        response = predict_pb2.PredictResponse(model_spec=self._model_spec(servable, name))
        for k, v in outputs.items():
            response.outputs[k].CopyFrom(tensors.to_tensor_proto(v))
        return response

    def predict(self, request: predict_pb2.PredictRequest,
                timeout: Optional[float] = None) -> predict_pb2.PredictResponse:
        servable, name, inputs, keep = self._prepare_predict(request)
        outputs = self._run(servable, name, inputs, timeout)
        return self._predict_response(servable, name, _select(outputs, keep))

    async def predict_async(self, request: predict_pb2.PredictRequest,
                            executor) -> predict_pb2.PredictResponse:
        """`predict` for an event-loop front end: the same checks and answer, but a batched
        request waits for its batch without holding a thread (the gRPC hot path). Deadlines
        are the caller's: cancelling this coroutine withdraws a request still queued."""
        servable, name, inputs, keep = self._prepare_predict(request)
        outputs = await servable.run_async(name, inputs, executor)
        return self._predict_response(servable, name, _select(outputs, keep))

    # ---- Classify / Regress / MultiInference --------------------------------------
    def classify(self, request: classification_pb2.ClassificationRequest,
                 timeout: Optional[float] = None) -> classification_pb2.ClassificationResponse:
        servable = self.lookup(request.model_spec)
        name, sig = self.signature(servable, request.model_spec.signature_name,
                                   (CLASSIFY_METHOD,), "classification")
        response = classification_pb2.ClassificationResponse(
            model_spec=self._model_spec(servable, name))
        response.result.CopyFrom(self._classify(servable, name, sig, request.input, timeout))
        return response

    def regress(self, request: regression_pb2.RegressionRequest,
                timeout: Optional[float] = None) -> regression_pb2.RegressionResponse:
        servable = self.lookup(request.model_spec)
        name, sig = self.signature(servable, request.model_spec.signature_name,
                                   (REGRESS_METHOD,), "regression")
        response = regression_pb2.RegressionResponse(model_spec=self._model_spec(servable, name))
        response.result.CopyFrom(self._regress(servable, name, sig, request.input, timeout))
        return response

    def _examples_input(self, sig, input_proto) -> Dict[str, np.ndarray]:
        if len(sig.inputs) != 1:
            raise invalid_argument("Expected one input Tensor.")
        serialized = serialize_examples(input_proto)
        alias = next(iter(sig.inputs))
        return {alias: np.array(serialized, dtype=object)}

    def _classify(self, servable, name, sig, input_proto, timeout):
        if "classes" not in sig.outputs and "scores" not in sig.outputs:
            raise invalid_argument("Expected classification signature outputs to contain at "
                                   "least one of classes, scores.")
        inputs = self._examples_input(sig, input_proto)
        n = len(next(iter(inputs.values())))
        outputs = self._run(servable, name, inputs, timeout)
        classes, scores = outputs.get("classes"), outputs.get("scores")
        for label, t in (("classes", classes), ("scores", scores)):
            if t is not None and (t.ndim != 2 or t.shape[0] != n):
                raise invalid_argument(
                    f"Expected Tensor shape: [batch_size num_classes] but got "
                    f"{list(t.shape)} for output {label}")
        if classes is not None and scores is not None and classes.shape != scores.shape:
            raise invalid_argument("Tensors class and score should match in shape")
        result = classification_pb2.ClassificationResult()
        width = (classes if classes is not None else scores).shape[1]
        for i in range(n):
            c = result.classifications.add()
            for j in range(width):
                cls = c.classes.add()
                if classes is not None:
                    label = classes[i][j]
                    cls.label = label.decode("utf-8", "replace") if isinstance(label, bytes) \
                        else str(label)
                if scores is not None:
                    cls.score = float(scores[i][j])
        return result

    def _regress(self, servable, name, sig, input_proto, timeout):
        if "outputs" not in sig.outputs:
            raise invalid_argument('Expected output Tensor "outputs" in regression signature.')
        inputs = self._examples_input(sig, input_proto)
        n = len(next(iter(inputs.values())))
        values = self._run(servable, name, inputs, timeout)["outputs"]
        if not (values.shape == (n,) or values.shape == (n, 1)):
            raise invalid_argument(f"Expected output Tensor shape to be either [batch_size] or "
                                   f"[batch_size, 1] but got {list(values.shape)}")
        result = regression_pb2.RegressionResult()
        for v in values.reshape(-1):
            result.regressions.add().value = float(v)
        return result

    def multi_inference(self, request: inference_pb2.MultiInferenceRequest,
                        timeout: Optional[float] = None) -> inference_pb2.MultiInferenceResponse:
        if not request.tasks:
            raise invalid_argument("Expected at least one task")
        model_name = request.tasks[0].model_spec.name
        seen = set()
        for task in request.tasks:
            if task.model_spec.name != model_name:
                raise invalid_argument("All ModelSpecs in a MultiInferenceRequest must access "
                                       "the same model name.")
            sig_name = task.model_spec.signature_name or DEFAULT_SIGNATURE
            if sig_name in seen:
                raise invalid_argument(f"Duplicate evaluation of signature: {sig_name}")
            seen.add(sig_name)
            if task.method_name not in (CLASSIFY_METHOD, REGRESS_METHOD):
                raise invalid_argument(f"Unsupported signature method_name: {task.method_name}")
        servable = self.lookup(request.tasks[0].model_spec)
        response = inference_pb2.MultiInferenceResponse()
        for task in request.tasks:
            kind = "classification" if task.method_name == CLASSIFY_METHOD else "regression"
            name, sig = self.signature(servable, task.model_spec.signature_name,
                                       (task.method_name,), kind)
            result = response.results.add()
            result.model_spec.CopyFrom(self._model_spec(servable, name))
            if task.method_name == CLASSIFY_METHOD:
                result.classification_result.CopyFrom(
                    self._classify(servable, name, sig, request.input, timeout))
            else:
                result.regression_result.CopyFrom(
                    self._regress(servable, name, sig, request.input, timeout))
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
        servable = self.lookup(request.model_spec)
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
            name, sig = self.signature(servable, req.model_spec.signature_name)
            inputs = {k: tensors.to_ndarray(v) for k, v in req.inputs.items()}
            self.run_predict(servable, name, sig, inputs, req.output_filter)
        elif kind == "classify_log":
            req = entry.classify_log.request
            name, sig = self.signature(servable, req.model_spec.signature_name,
                                       (CLASSIFY_METHOD,), "classification")
            self._classify(servable, name, sig, req.input, None)
        elif kind == "regress_log":
            req = entry.regress_log.request
            name, sig = self.signature(servable, req.model_spec.signature_name,
                                       (REGRESS_METHOD,), "regression")
            self._regress(servable, name, sig, req.input, None)
        elif kind == "multi_inference_log":
            for task in entry.multi_inference_log.request.tasks:
                method = task.method_name
                name, sig = self.signature(servable, task.model_spec.signature_name, (method,))
                fn = self._classify if method == CLASSIFY_METHOD else self._regress
                fn(servable, name, sig, entry.multi_inference_log.request.input, None)
        else:
            raise ServingError(Code.UNIMPLEMENTED,
                               f"Unsupported log_type for warmup: {kind}")


def _select(outputs: Dict[str, np.ndarray], keep: Iterable[str]) -> Dict[str, np.ndarray]:
    return {k: outputs[k] for k in keep if k in outputs}


def serialize_examples(input_proto) -> List[bytes]:
    """tensorflow.serving.Input -> serialized tf.Examples (context merged into each)."""
    kind = input_proto.WhichOneof("kind")
    if kind == "example_list":
        examples = [e.SerializeToString() for e in input_proto.example_list.examples]
    elif kind == "example_list_with_context":
        ctx = input_proto.example_list_with_context.context
        examples = []
        for e in input_proto.example_list_with_context.examples:
            merged = example_pb2.Example()
            merged.CopyFrom(ctx)
            merged.MergeFrom(e)
            examples.append(merged.SerializeToString())
    else:
        raise invalid_argument("Input is empty.")
    if not examples:
        raise invalid_argument("Input is empty.")
    return examples


def _check_tensor(alias: str, value: np.ndarray, info, position: int) -> None:
    """dtype and shape against the signature's TensorInfo, with TF's error wording."""
    expected = tf.as_dtype(info.dtype)
    got = tf.string if value.dtype == object or value.dtype.kind in "SU" else \
        tf.as_dtype(value.dtype)
    if got != expected:
        raise invalid_argument(f"Expects arg[{position}] to be {_dtype_name(expected)} but "
                               f"{_dtype_name(got)} is provided (input {alias})")
    shape = info.tensor_shape
    if shape.unknown_rank:
        return
    dims = [d.size for d in shape.dim]
    if len(dims) != value.ndim or any(d >= 0 and d != s for d, s in zip(dims, value.shape)):
        raise invalid_argument(
            f"input {alias}: shape {list(value.shape)} is incompatible with the signature's "
            f"shape {[d if d >= 0 else None for d in dims]}")


def _dtype_name(dtype: tf.DType) -> str:
    """TensorFlow's DataTypeString: DT_FLOAT -> 'float', DT_INT64 -> 'int64'."""
    return types_pb2.DataType.Name(dtype.as_datatype_enum)[3:].lower()


def model_config_names(cfg) -> Tuple[str, ...]:
    return tuple(m.name for m in cfg.model_config_list.config)
