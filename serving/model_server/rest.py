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
import math
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Dict, Optional, Tuple

import numpy as np
from google.protobuf import json_format
from tensorflow.core.example import example_pb2, feature_pb2
from tensorflow_serving.apis import (classification_pb2, get_model_metadata_pb2,
                                     get_model_status_pb2, model_pb2, regression_pb2)

from serving.model_server import tensors
from serving.model_server.core import ServingCore
from serving.model_server.errors import ServingError, invalid_argument

log = logging.getLogger("serving.model_server")

_ROUTE = re.compile(
    r"^/v1/models/(?P<name>[^/:]+)"
    r"(?:/versions/(?P<version>\d+)|/labels/(?P<label>[^/:]+))?"
    r"(?:(?P<metadata>/metadata)|:(?P<verb>[A-Za-z]+))?/?$")


_json_dumps = tensors.dumps
INT64_MAX = (1 << 63) - 1


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
                if int(m["version"]) > INT64_MAX:
                    raise invalid_argument(f"Failed to convert version: {m['version']} to "
                                           f"numeric.")
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
        """FillPredictRequestFromJson, then Predict, then MakeJsonFromTensors."""
        signature_name = _signature_name(request)
        has_instances, has_inputs = "instances" in request, "inputs" in request
        if has_instances and has_inputs:
            raise invalid_argument("JSON Value: Not formatted correctly expecting only one of "
                                   "'inputs' or 'instances' keys to exist")
        if not (has_instances or has_inputs):
            raise invalid_argument("Missing 'inputs' or 'instances' key")
        with self.core.servable(spec) as servable:
            _, sig = self.core.signature(servable, signature_name,
                                         missing="Serving signature name: ")
            if not sig.inputs:  # nothing JSON could name
                raise invalid_argument(f"Failed to get input map for signature: "
                                       f"{signature_name or 'DEFAULT'}")
            budget = [self.core.max_elements, self.core.max_elements]
            if has_instances:
                inputs = _row_inputs(request["instances"], sig, budget)
            else:
                inputs = _columnar_inputs(request["inputs"], sig, budget)
            outputs = self.core.run_predict(servable, sig, inputs, timeout=self.timeout)
        if has_instances:
            return {"predictions": _row_outputs(outputs)}
        if len(outputs) == 1:
            (key, value), = outputs.items()
            return {"outputs": tensors.ndarray_to_json(value, key)}
        return {"outputs": {k: tensors.ndarray_to_json(v, k) for k, v in outputs.items()}}

    # ---- classify / regress --------------------------------------------------------
    def _examples_request(self, spec, request, message):
        """FillClassifyRegressRequestFromJson."""
        msg = message(model_spec=spec)
        msg.model_spec.signature_name = _signature_name(request)
        if "context" in request:
            target = msg.input.example_list_with_context
            _fill_example(target.context, request["context"])
        else:
            target = msg.input.example_list
        examples = request.get("examples")
        if examples is None:
            raise invalid_argument("JSON Value: When method is classify, key 'examples' is "
                                   "expected and was not found")
        if not isinstance(examples, list):
            raise invalid_argument("JSON Value: Expecting 'examples' value to be an list/array")
        if not examples:
            raise invalid_argument("JSON Value: 'examples' value is an empty array")
        for ex in examples:
            _fill_example(target.examples.add(), ex)
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
    if not body:
        raise invalid_argument("JSON Parse error: The document is empty")
    try:
        request = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as e:
        raise invalid_argument(f"JSON Parse error: {e}") from e
    except RecursionError:
        raise invalid_argument("JSON Parse error: the document nests too deeply") from None
    if not isinstance(request, dict):
        raise invalid_argument(f"JSON Value: {tensors.json_text(request)} Is not object")
    return request


def _signature_name(request) -> str:
    name = request.get("signature_name", "")
    if not isinstance(name, str):
        raise invalid_argument("JSON Value: not formatted correctly. 'signature_name' key "
                               "must be a string value.")
    return name


def _is_named(value) -> bool:
    return isinstance(value, dict) and not tensors.is_b64(value)


def _row_inputs(instances, sig, budget) -> Dict[str, np.ndarray]:
    """FillTensorMapFromInstancesList: a list of values (one input) or of objects naming
    every input; each instance adds one row to each input."""
    if not isinstance(instances, list):
        raise invalid_argument("JSON Value: Excepting 'instances' to be an list/array")
    if not instances:
        raise invalid_argument("JSON Value: No values in 'instances' array")
    names = sorted(sig.inputs)
    if not _is_named(instances[0]):
        if len(names) != 1:
            raise invalid_argument("instances is a plain list, but expecting list of objects "
                                   "as multiple input tensors required as per tensorinfo_map")
        for i, item in enumerate(instances):
            if _is_named(item):
                raise invalid_argument(f"Expecting value/list but got object at item {i} of "
                                       f"input list")
        return {names[0]: _json_input(names[0], instances, sig, budget)}
    columns: Dict[str, list] = {name: [] for name in names}
    for i, item in enumerate(instances):
        if not _is_named(item):
            raise invalid_argument(f"Expecting object but got list at item {i} of input list")
        for key in item:
            if key not in columns:
                raise invalid_argument(f"Failed to process element: {i} key: {key} of "
                                       f"'instances' list. Error: JSON object: does not have "
                                       f"named input: {key}")
        if len(item) != len(names):
            raise invalid_argument(f"Failed to process element: {i} of 'instances' list. JSON "
                                   f"object: {tensors.json_text(item)} must only have keys: "
                                   f"{','.join(names)}")
        for key, value in item.items():
            columns[key].append(value)
    return {key: _json_input(key, values, sig, budget) for key, values in columns.items()}


def _columnar_inputs(inputs, sig, budget) -> Dict[str, np.ndarray]:
    """FillTensorMapFromInputsMap: a value (one input) or an object naming every input."""
    names = sorted(sig.inputs)
    if not _is_named(inputs):
        if len(names) != 1:
            raise invalid_argument("inputs is a plain value/list, but expecting an object as "
                                   "multiple input tensors required as per tensorinfo_map")
        return {names[0]: _json_input(names[0], inputs, sig, budget)}
    out = {}
    for name in names:
        if name not in inputs:
            raise invalid_argument(f"Missing named input: {name} in 'inputs' object.")
        out[name] = _json_input(name, inputs[name], sig, budget)
    return out


def _json_input(key: str, value, sig, budget) -> np.ndarray:
    """One named input's JSON value as an array of the signature's dtype."""
    return tensors.json_to_ndarray(value, sig.inputs[key].dtype, key, budget)


def _row_outputs(outputs: Dict[str, np.ndarray]):
    """MakeRowFormatJsonFromTensors: every output batched alike; one output is a list of
    its rows, several are a list of objects."""
    batch = None
    for k, v in outputs.items():
        if v.ndim == 0:
            raise invalid_argument(f"Tensor name: {k} has no shape information ")
        if v.shape[0] < 1:
            raise invalid_argument(f"Tensor name: {k} has invalid batch size: {v.shape[0]}")
        if batch is not None and v.shape[0] != batch:
            raise invalid_argument(f"Tensor name: {k} has inconsistent batch size: "
                                   f"{v.shape[0]} expecting: {batch}")
        batch = v.shape[0]
    if len(outputs) == 1:
        (key, value), = outputs.items()
        return tensors.ndarray_to_json(value, key)
    columns = {k: tensors.ndarray_to_json(v, k) for k, v in outputs.items()}
    return [{k: columns[k][i] for k in columns} for i in range(batch or 0)]


_INT64 = (-(1 << 63), (1 << 63) - 1)
_FLOAT32_MAX = float(np.finfo(np.float32).max)


def _fill_example(example: example_pb2.Example, obj) -> None:
    """MakeExampleFromJsonObject: each feature a value or a list of values; strings and
    {"b64"} are bytes, JSON integers and booleans int64, other numbers float."""
    if not isinstance(obj, dict):
        raise invalid_argument(f"Example must be JSON object but got JSON "
                               f"{tensors.json_type(obj)}")
    for key, content in obj.items():
        feature: feature_pb2.Feature = example.features.feature[key]
        feature.Clear()
        for value in content if isinstance(content, list) else [content]:
            _add_feature_value(feature, key, value)


def _add_feature_value(feature, key: str, value) -> None:
    unexpected = value is None or isinstance(value, list) or _is_named(value)
    if unexpected:
        raise invalid_argument(f"Feature: {key} has element with unexpected JSON type: "
                               f"{tensors.json_type(value)}")
    if isinstance(value, (str, dict)):
        kind, data = "bytes_list", (value.encode("utf-8") if isinstance(value, str)
                                    else tensors.decode_b64(value))
    elif isinstance(value, bool) or (isinstance(value, int) and
                                     _INT64[0] <= value <= _INT64[1]):
        kind, data = "int64_list", int(value)
    elif isinstance(value, int) and 0 < value < 1 << 64:
        raise invalid_argument(f"Feature: {key} has uint64 element. Only int64 is supported.")
    else:  # a float, or an integer beyond uint64 (a double to RapidJSON)
        try:
            data = float(value)
        except OverflowError:
            data = None
        if data is None or (math.isfinite(data) and abs(data) > _FLOAT32_MAX):
            raise invalid_argument(f"Cannot convert JSON value: {tensors.json_text(value)} to "
                                   f"float without loss of precision.")
        kind = "float_list"
    current = feature.WhichOneof("kind")
    if current is not None and current != kind:
        raise invalid_argument(f"Unexpected element type in feature: {key} expecting type: "
                               f"{current.split('_')[0]}")
    getattr(feature, kind).value.append(data)


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
