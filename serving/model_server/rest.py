"""REST front end: TF Serving's documented HTTP/JSON API, a thin layer over ServingCore.

Routes (all under /v1/models/{name}[/versions/{v}|/labels/{l}]):
  GET  ...             model status            GET  .../metadata   signature defs
  POST ...:predict     row ("instances") or columnar ("inputs") format
  POST ...:classify    POST ...:regress        ("examples", optional "context")
plus GET on the Prometheus path from --monitoring_config_file. Errors are
{"error": "..."} with the HTTP status from errors.STATUS_TABLE.
"""

from __future__ import annotations

import json
import logging
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Dict, Optional, Tuple

import numpy as np
import tensorflow as tf
from google.protobuf import json_format
from tensorflow.core.example import example_pb2, feature_pb2
from tensorflow_serving.apis import (classification_pb2, get_model_metadata_pb2,
                                     get_model_status_pb2, model_pb2, regression_pb2)

from serving.model_server import tensors
from serving.model_server.core import (CLASSIFY_METHOD, PREDICT_METHOD, REGRESS_METHOD,
                                       ServingCore)
from serving.model_server.errors import Code, ServingError, invalid_argument

log = logging.getLogger("serving.model_server")

_ROUTE = re.compile(
    r"^/v1/models/(?P<name>[^/:]+)"
    r"(?:/versions/(?P<version>-?\d+)|/labels/(?P<label>[^/:]+))?"
    r"(?:(?P<metadata>/metadata)|:(?P<verb>[A-Za-z]+))?/?$")


def _json_dumps(obj) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode("utf-8")


class RestApi:
    """Request handling independent of the HTTP server, so it can be tested directly."""

    def __init__(self, core: ServingCore, timeout_ms: int = 30000,
                 prometheus_path: Optional[str] = None):
        self.core = core
        self.timeout = timeout_ms / 1000.0 if timeout_ms > 0 else None
        self.prometheus_path = prometheus_path

    def handle(self, method: str, path: str, body: bytes) -> Tuple[int, str, bytes]:
        """(status, content type, body) for one request."""
        path = path.split("?", 1)[0]
        if self.prometheus_path and path == self.prometheus_path and method == "GET":
            return 200, "text/plain; version=0.0.4; charset=utf-8", self.core.metrics.exposition()
        m = _ROUTE.match(path)
        if not path.startswith("/v1/"):
            return 404, "application/json", _json_dumps({"error": f"Not found: {path}"})
        try:
            if m is None:
                raise invalid_argument(f"Malformed request: {method} {path}")
            spec = model_pb2.ModelSpec(name=m["name"])
            if m["version"] is not None:
                spec.version.value = int(m["version"])
            elif m["label"] is not None:
                spec.version_label = m["label"]
            verb = m["verb"]
            if method == "GET" and verb is None:
                api = "GetModelMetadata" if m["metadata"] else "GetModelStatus"
                with self.core.metrics.track(api, spec.name, "REST"):
                    result = self._metadata(spec) if m["metadata"] else self._status(spec)
            elif method == "POST" and not m["metadata"] and verb in (
                    "predict", "classify", "regress"):
                api = {"predict": "Predict", "classify": "Classify", "regress": "Regress"}[verb]
                with self.core.metrics.track(api, spec.name, "REST"):
                    request = _parse_json(body)
                    result = getattr(self, "_" + verb)(spec, request)
            else:
                raise invalid_argument(f"Malformed request: {method} {path}")
        except ServingError as e:
            return e.http_status, "application/json", _json_dumps({"error": e.message})
        except Exception as e:  # noqa: BLE001 - never let a request take the server down
            log.exception("REST request failed")
            return 500, "application/json", _json_dumps({"error": f"Internal error: {e}"})
        return 200, "application/json", _json_dumps(result)

    # ---- status / metadata ---------------------------------------------------------
    def _status(self, spec) -> Dict[str, Any]:
        response = self.core.get_model_status(
            get_model_status_pb2.GetModelStatusRequest(model_spec=spec))
        return json_format.MessageToDict(response, preserving_proto_field_name=True,
                                         including_default_value_fields=True)

    def _metadata(self, spec) -> Dict[str, Any]:
        response = self.core.get_model_metadata(get_model_metadata_pb2.GetModelMetadataRequest(
            model_spec=spec, metadata_field=["signature_def"]))
        sigmap = get_model_metadata_pb2.SignatureDefMap()
        response.metadata["signature_def"].Unpack(sigmap)
        model_spec = json_format.MessageToDict(response.model_spec,
                                               preserving_proto_field_name=True,
                                               including_default_value_fields=True)
        return {"model_spec": model_spec,
                "metadata": {"signature_def": json_format.MessageToDict(
                    sigmap, preserving_proto_field_name=True,
                    including_default_value_fields=True)}}

    # ---- predict -------------------------------------------------------------------
    def _predict(self, spec, request: Dict[str, Any]) -> Dict[str, Any]:
        signature_name = _signature_name(request)
        has_instances, has_inputs = "instances" in request, "inputs" in request
        if has_instances == has_inputs:
            raise invalid_argument(
                "Missing 'instances' or 'inputs' key" if not has_instances else
                "Only one of 'instances' or 'inputs' key may be specified")
        extra = set(request) - {"instances", "inputs", "signature_name"}
        if extra:
            raise invalid_argument(f"Unexpected key(s) in request: {', '.join(sorted(extra))}")
        servable = self.core.lookup(spec)
        name, sig = self.core.signature(servable, signature_name,
                                        (PREDICT_METHOD, CLASSIFY_METHOD, REGRESS_METHOD))
        if has_instances:
            inputs = _row_inputs(request["instances"], sig)
        else:
            inputs = _columnar_inputs(request["inputs"], sig)
        outputs = self.core.run_predict(servable, name, sig, inputs, timeout=self.timeout)
        if has_instances:
            return {"predictions": _row_outputs(outputs)}
        if len(outputs) == 1:
            (key, value), = outputs.items()
            return {"outputs": tensors.ndarray_to_json(value, key)}
        return {"outputs": {k: tensors.ndarray_to_json(v, k) for k, v in outputs.items()}}

    # ---- classify / regress --------------------------------------------------------
    def _examples_request(self, spec, request, message):
        signature_name = _signature_name(request)
        extra = set(request) - {"examples", "context", "signature_name"}
        if extra:
            raise invalid_argument(f"Unexpected key(s) in request: {', '.join(sorted(extra))}")
        examples = request.get("examples")
        if not isinstance(examples, list):
            raise invalid_argument("'examples' must be a JSON list of objects")
        msg = message(model_spec=spec)
        msg.model_spec.signature_name = signature_name
        if "context" in request:
            target = msg.input.example_list_with_context
            _fill_example(target.context, request["context"], "context")
        else:
            target = msg.input.example_list
        for i, ex in enumerate(examples):
            _fill_example(target.examples.add(), ex, f"examples[{i}]")
        return msg

    def _classify(self, spec, request) -> Dict[str, Any]:
        msg = self._examples_request(spec, request, classification_pb2.ClassificationRequest)
        response = self.core.classify(msg, timeout=self.timeout)
        return {"results": [[[c.label, _f32(c.score)] for c in cl.classes]
                            for cl in response.result.classifications]}

    def _regress(self, spec, request) -> Dict[str, Any]:
        msg = self._examples_request(spec, request, regression_pb2.RegressionRequest)
        response = self.core.regress(msg, timeout=self.timeout)
        return {"results": [_f32(r.value) for r in response.result.regressions]}


def _f32(v: float) -> float:
    return tensors.ndarray_to_json(np.float32(v), "v")


def _parse_json(body: bytes) -> Dict[str, Any]:
    try:
        request = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as e:
        raise invalid_argument(f"JSON Parse error: {e}") from e
    if not isinstance(request, dict):
        raise invalid_argument("JSON Value: request body must be a JSON object")
    return request


def _signature_name(request) -> str:
    name = request.get("signature_name", "")
    if not isinstance(name, str):
        raise invalid_argument("'signature_name' must be a string")
    return name


def _is_b64(value) -> bool:
    return isinstance(value, dict) and set(value) == {"b64"}


def _row_inputs(instances, sig) -> Dict[str, np.ndarray]:
    if not isinstance(instances, list):
        raise invalid_argument("'instances' must be a JSON list")
    if not instances:
        raise invalid_argument("'instances' is empty")
    named = isinstance(instances[0], dict) and not _is_b64(instances[0])
    if not named:
        if len(sig.inputs) != 1:
            raise invalid_argument(
                f"The signature has {len(sig.inputs)} inputs "
                f"({', '.join(sorted(sig.inputs))}): each instance must be a JSON object "
                f"naming them")
        alias = next(iter(sig.inputs))
        return {alias: _json_input(alias, instances, sig)}
    columns: Dict[str, list] = {}
    for i, inst in enumerate(instances):
        if not isinstance(inst, dict) or _is_b64(inst):
            raise invalid_argument(f"instances[{i}]: expected an object like instances[0]")
        if i and set(inst) != set(columns):
            raise invalid_argument(
                f"instances[{i}] has keys {sorted(inst)}, expected {sorted(columns)} "
                f"(every instance must name the same inputs)")
        for key, value in inst.items():
            columns.setdefault(key, []).append(value)
    return {key: _json_input(key, values, sig) for key, values in columns.items()}


def _columnar_inputs(inputs, sig) -> Dict[str, np.ndarray]:
    if isinstance(inputs, dict) and not _is_b64(inputs):
        return {key: _json_input(key, value, sig) for key, value in inputs.items()}
    if len(sig.inputs) != 1:
        raise invalid_argument(f"The signature has {len(sig.inputs)} inputs: 'inputs' must be "
                               f"a JSON object naming them")
    alias = next(iter(sig.inputs))
    return {alias: _json_input(alias, inputs, sig)}


def _json_input(key: str, value, sig) -> np.ndarray:
    """One named input's JSON value as an array of the signature's dtype."""
    if key not in sig.inputs:
        raise invalid_argument(
            f"input tensor alias not found in signature: {key}. Inputs expected to be in "
            f"the set {{{','.join(sorted(sig.inputs))}}}.")
    return tensors.json_to_ndarray(value, tf.as_dtype(sig.inputs[key].dtype), key)


def _row_outputs(outputs: Dict[str, np.ndarray]):
    sizes = {k: (v.shape[0] if v.ndim else None) for k, v in outputs.items()}
    batch = None
    for k, size in sizes.items():
        if size is None:
            raise ServingError(Code.INVALID_ARGUMENT,
                               f"Tensor name: {k} has no shape information ")
        if batch is None:
            batch = size
        elif size != batch:
            raise ServingError(Code.INVALID_ARGUMENT,
                               f"Tensor name: {k} has inconsistent batch size: {size} "
                               f"expecting: {batch}")
    if len(outputs) == 1:
        (key, value), = outputs.items()
        return tensors.ndarray_to_json(value, key)
    columns = {k: tensors.ndarray_to_json(v, k) for k, v in outputs.items()}
    return [{k: columns[k][i] for k in columns} for i in range(batch or 0)]


def _fill_example(example: example_pb2.Example, obj, where: str) -> None:
    """A JSON object of features -> tf.Example, typed as TF Serving's REST API does."""
    if not isinstance(obj, dict):
        raise invalid_argument(f"{where}: expected a JSON object of features")
    for key, value in obj.items():
        values = value if isinstance(value, list) else [value]
        feature: feature_pb2.Feature = example.features.feature[key]
        if not values:
            feature.float_list.SetInParent()
        elif all(isinstance(v, str) or _is_b64(v) for v in values):
            feature.bytes_list.value.extend(
                tensors._decode_strings(v, f"{where}.{key}") for v in values)
        elif all(isinstance(v, int) and not isinstance(v, bool) for v in values):
            feature.int64_list.value.extend(values)
        elif all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
            feature.float_list.value.extend(float(v) for v in values)
        else:
            raise invalid_argument(f"{where}.{key}: feature values must be all numbers or all "
                                   f"strings")


class _BadBody(Exception):
    """A request body that cannot be read; answered 400 and the connection closed."""


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "TFServingEmbedded"
    disable_nagle_algorithm = True  # else small replies wait ~40 ms for a delayed ACK

    def log_message(self, fmt, *args):  # keep stderr for the server's own log lines
        log.debug("REST %s - " + fmt, self.address_string(), *args)

    def _serve(self, method: str) -> None:
        if not self.path.startswith("/v1/"):  # metrics scrapes are not API requests
            self._serve_counted(method)
            return
        with self.server.api.core.inflight():
            self._serve_counted(method)

    def _serve_counted(self, method: str) -> None:
        api: RestApi = self.server.api
        if self.server.draining:
            self._reply(503, "application/json",
                        _json_dumps({"error": "Server is shutting down"}), close=True)
            return
        body = b""
        if method == "POST":
            try:
                body = self._read_body()
            except _BadBody as e:  # the rest of the stream cannot be trusted: close it
                self._reply(400, "application/json", _json_dumps({"error": str(e)}),
                            close=True)
                return
        status, ctype, payload = api.handle(method, self.path, body)
        self._reply(status, ctype, payload)

    def _read_body(self) -> bytes:
        """The request body, by Content-Length or chunked (clients streaming a body, such
        as `requests` given a generator, send no length), within --rest_api_max_body_bytes."""
        limit = self.server.max_body_bytes
        encoding = self.headers.get("Transfer-Encoding", "").strip().lower()
        if encoding == "chunked":
            return self._read_chunked(limit)
        if encoding:
            raise _BadBody(f"Unsupported Transfer-Encoding: {encoding}")
        try:
            n = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            n = -1
        if n < 0:
            raise _BadBody("invalid Content-Length")
        if n > limit:
            raise _BadBody(f"Request body of {n} bytes exceeds the limit of {limit} bytes")
        return self.rfile.read(n)

    def _read_chunked(self, limit: int) -> bytes:
        body = bytearray()
        while True:
            line = self.rfile.readline(1024)
            try:
                size = int(line.split(b";", 1)[0].strip(), 16)  # chunk extensions ignored
            except ValueError:
                raise _BadBody("invalid chunked request body") from None
            if size == 0:
                while self.rfile.readline(1024).strip():  # trailer fields, ignored
                    pass
                return bytes(body)
            if size < 0 or len(body) + size > limit:
                raise _BadBody(f"Request body exceeds the limit of {limit} bytes")
            chunk = self.rfile.read(size)
            if len(chunk) != size or self.rfile.readline(1024).strip():
                raise _BadBody("invalid chunked request body")
            body += chunk

    def _reply(self, status, ctype, payload, close=False):
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(payload)))
        if close:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        self.wfile.write(payload)

    def do_GET(self):
        self._serve("GET")

    def do_POST(self):
        self._serve("POST")

    def do_PUT(self):
        self._reply(405, "application/json", _json_dumps({"error": "Method not allowed"}))

    do_DELETE = do_PUT


class RestServer(ThreadingHTTPServer):
    """A thread per connection; `shutdown()` stops accepting, in-flight requests finish."""

    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self, address, api: RestApi, max_body_bytes: int):
        self.api = api
        self.draining = False
        self.max_body_bytes = max_body_bytes
        super().__init__(address, _Handler)

    def serve_in_thread(self) -> threading.Thread:
        t = threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.2},
                             name="rest", daemon=True)
        t.start()
        return t


__all__ = ["RestApi", "RestServer"]
