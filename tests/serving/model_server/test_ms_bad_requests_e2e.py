"""A corpus of hostile and careless requests, replayed against a real server process.

Each gets a client error (HTTP 4xx or gRPC INVALID_ARGUMENT, with TF Serving's wording
where it has one) and nothing else happens: the next good request is answered, the
server never counts an INTERNAL or UNKNOWN error, and it is still running at the end.
Add every new bad request found here.
"""

from __future__ import annotations

import json
import socket
import time

import grpc
import numpy as np
import pytest
import requests
from tensorflow.core.framework import types_pb2
from tensorflow_serving.apis import (classification_pb2, inference_pb2, predict_pb2,
                                     prediction_service_pb2_grpc)

from toolkit_testing import copy_version, running_servers, write_models_config

pytestmark = pytest.mark.e2e

GOOD = {"instances": [1.0, 2.0]}
GOOD_ANSWER = {"predictions": [2.5, 3.0]}


@pytest.fixture(scope="module")
def server(model_templates, tmp_path_factory):
    root = tmp_path_factory.mktemp("bad_requests")
    copy_version(model_templates / "hp2_v1", root / "half_plus_two", 1)
    copy_version(model_templates / "mnist", root / "mnist", 1)
    write_models_config(root, ("half_plus_two", "mnist"))
    (root / "monitoring.config").write_text('prometheus_config { enable: true path: "/m" }')
    with running_servers() as start:
        yield start(f"--model_config_file={root}/models.config",
                    f"--monitoring_config_file={root}/monitoring.config",
                    "--max_request_tensor_elements=100000")


@pytest.fixture(scope="module")
def stub(server):
    with grpc.insecure_channel(server.grpc_target) as channel:
        yield prediction_service_pb2_grpc.PredictionServiceStub(channel)


def still_serving(server, stub):
    r = requests.post(f"{server.rest_url}/v1/models/half_plus_two:predict", json=GOOD,
                      timeout=30)
    assert (r.status_code, r.json()) == (200, GOOD_ANSWER)
    req = float_request([1], [2.0])
    assert list(stub.Predict(req, timeout=30).outputs["y"].float_val) == [3.0]


# ---- REST -----------------------------------------------------------------------------

HP2 = "/v1/models/half_plus_two"
REST_CORPUS = [
    # (path, raw body, status, text in the error)
    (f"{HP2}:predict", b"[" * 500 + b"]" * 500, 400, "JSON"),  # 1 KB, 500 levels deep
    (f"{HP2}:predict", b'{"instances": ' + b"[" * 100000 + b"]" * 100000 + b"}", 400, "JSON"),
    (f"{HP2}:predict", b'{"instances": [' + b"[" * 60 + b"1.0" + b"]" * 60 + b"]}", 400,
     "nested more than 32 deep"),
    # deep objects, parsed or not, that error messages quote: 400 either way ("")
    (f"{HP2}:predict", b'{"instances": [' + b'{"a":' * 900 + b"1" + b"}" * 900 + b"]}", 400,
     ""),
    (f"{HP2}:predict", b'{"instances": [1.0, ' + b'{"a":' * 900 + b"1" + b"}" * 900 + b"]}",
     400, ""),
    (f"{HP2}:regress", b'{"signature_name": "regress_x_to_y", "examples": [{"x": ' +
     b'{"a":' * 900 + b"1" + b"}" * 900 + b"}]}", 400, ""),
    (f"{HP2}:predict", b'{"instances": [null]}', 400,
     "JSON Value: null Type: Null is not of expected type: float"),
    (f"{HP2}:predict", b'{"instances": [1' + b"0" * 400 + b"]}", 400,
     "to float without loss of precision"),
    (f"{HP2}:predict", b'{"instances": [9223372036854775808]}', 400,
     "without loss of precision"),
    (f"{HP2}:predict", b'{"instances": [true]}', 400, "Type: True is not of expected type"),
    (f"{HP2}:predict", b'{"instances": [[1.0], 2.0]}', 400,
     "Failed to process element: 1 of 'instances' list. Error: INVALID_ARGUMENT: Expecting "
     "shape [1] but got: []"),
    (f"{HP2}:predict", b'{"inputs": [[1.0], 2.0]}', 400, "found at incorrect level"),
    (f"{HP2}:predict", b'{"instances": []}', 400, "No values in 'instances' array"),
    (f"{HP2}:predict", b'{"instances": 1.0}', 400, "Excepting 'instances' to be an list/array"),
    (f"{HP2}:predict", b'{"instances": [1.0], "inputs": [1.0]}', 400, "only one of"),
    (f"{HP2}:predict", b'{"instances": [1.0], "signature_name": 7}', 400,
     "'signature_name' key must be a string value"),
    (f"{HP2}:predict", b'[1.0]', 400, "Is not object"),
    (f"{HP2}:predict", b'', 400, "The document is empty"),
    (f"{HP2}:predict", b'{"instances": [1.0]', 400, "JSON Parse error"),
    (f"{HP2}:predict", b'\xff\xfe{"instances": [1.0]}', 400, "JSON Parse error"),
    (f"{HP2}:predict", b'{"instances": [{"b64": "AAAA"}]}', 400,
     "Type: Object is not of expected type: float"),
    (f"{HP2}/versions/9223372036854775808:predict", b'{"instances": [1.0]}', 400,
     "Failed to convert version: 9223372036854775808 to numeric."),
    (f"{HP2}/versions/99999999999999999999999:predict", b'{"instances": [1.0]}', 400,
     "to numeric."),
    (f"{HP2}/versions/-1:predict", b'{"instances": [1.0]}', 400, "Malformed request"),
    (f"{HP2}:regress", b'{"signature_name": "regress_x_to_y", "examples": [{"x": null}]}', 400,
     "Feature: x has element with unexpected JSON type: Null"),
    (f"{HP2}:regress", b'{"signature_name": "regress_x_to_y", "examples": [{"x": [[1.0]]}]}',
     400, "has element with unexpected JSON type: Array"),
    (f"{HP2}:regress", b'{"signature_name": "regress_x_to_y", "examples": '
                       b'[{"x": 1' + b"0" * 400 + b"}]}", 400,
     "to float without loss of precision"),
    (f"{HP2}:regress", b'{"signature_name": "regress_x_to_y", "examples": '
                       b'[{"x": 9223372036854775808}]}', 400,
     "Feature: x has uint64 element. Only int64 is supported."),
    (f"{HP2}:regress", b'{"signature_name": "regress_x_to_y", "examples": [{"x": [1, 2.5]}]}',
     400, "Unexpected element type in feature: x expecting type: int64"),
    (f"{HP2}:classify", b'{"signature_name": "classify_x_to_y", "examples": [7]}', 400,
     "Example must be JSON object but got JSON Number"),
    (f"{HP2}:classify", b'{"signature_name": "classify_x_to_y", "examples": {}}', 400,
     "Expecting 'examples' value to be an list/array"),
    (f"{HP2}:classify", b'{"signature_name": "classify_x_to_y", "examples": []}', 400,
     "'examples' value is an empty array"),
    (f"{HP2}:classify", b'{"signature_name": "classify_x_to_y"}', 400,
     "key 'examples' is expected and was not found"),
    (f"{HP2}:regress", b'{"signature_name": "regress_x_to_y", "examples": '
                       b'[{"x": {"b64": "%%%"}}]}', 400, "Unable to base64 decode"),
    # lone surrogates: JSON can name them, UTF-8 cannot hold them (nor an error quoting them)
    (f"{HP2}:predict", b'{"signature_name": "\\ud800", "instances": [1.0]}', 400,
     "The surrogate pair in string is invalid"),
    (f"{HP2}:regress", b'{"signature_name": "regress_x_to_y", "examples": [{"x": "\\udfff"}]}',
     400, "The surrogate pair in string is invalid"),
    ("/v1/models/mnist:predict", b'{"inputs": [' + b",".join([b"[" + b"0," * 783 + b"0]"] * 128)
     + b"]}", 400, "more than the server decodes for one request (100000"),
]


@pytest.mark.parametrize("path,body,status,text", REST_CORPUS,
                         ids=[f"rest{i}" for i in range(len(REST_CORPUS))])
def test_rest_bad_request_is_a_client_error_and_nothing_else(
        server, stub, path, body, status, text):
    r = requests.post(server.rest_url + path, data=body, timeout=60)
    assert r.status_code == status, r.text[:500]
    assert text in r.json()["error"], r.text[:500]
    still_serving(server, stub)


def test_rest_non_finite_numbers_pass_through_as_tf_serving_writes_them(server):
    r = requests.post(f"{server.rest_url}{HP2}:predict",
                      data=b'{"instances": [NaN, Infinity, -Infinity, 1e400]}', timeout=30)
    assert r.status_code == 200
    assert r.text == '{"predictions":[NaN,Infinity,-Infinity,Infinity]}'


def test_rest_malformed_http_is_400_and_closes_the_connection(server, stub):
    with socket.create_connection(("127.0.0.1", server.rest_port), timeout=10) as s:
        s.sendall(b"POST /v1/models/half_plus_two:predict HTTP/1.1\r\nHost: x\r\n"
                  b"Content-Length: -5\r\n\r\n")
        reply = s.recv(4096)
    assert reply.startswith(b"HTTP/1.1 400") and b"connection: close" in reply
    assert "Content-Length" in json.loads(reply.split(b"\r\n\r\n", 1)[1])["error"]
    still_serving(server, stub)


def test_rest_chunk_declared_over_the_body_limit_is_413_at_once(server, stub):
    """A chunk size far above --rest_api_max_body_bytes, with none of its data sent: refused
    at once (413, JSON), not held open until the read timeout."""
    with socket.create_connection(("127.0.0.1", server.rest_port), timeout=10) as s:
        s.sendall(b"POST /v1/models/half_plus_two:predict HTTP/1.1\r\nHost: x\r\n"
                  b"Transfer-Encoding: chunked\r\n\r\nFFFFFFFFFFFF\r\n{\"inst")
        started = time.monotonic()
        reply = b""
        while chunk := s.recv(4096):
            reply += chunk
    assert time.monotonic() - started < 5, "held open instead of refused"
    assert reply.startswith(b"HTTP/1.1 413") and b"connection: close" in reply, reply
    assert "exceeds the limit" in json.loads(reply.split(b"\r\n\r\n", 1)[1])["error"]
    still_serving(server, stub)


def test_rest_chunk_size_line_split_over_two_reads_is_still_refused(server, stub):
    with socket.create_connection(("127.0.0.1", server.rest_port), timeout=10) as s:
        s.sendall(b"POST /v1/models/half_plus_two:predict HTTP/1.1\r\nHost: x\r\n"
                  b"Transfer-Encoding: chunked\r\n\r\n3\r\n{\"i\r\nFFFF")
        time.sleep(0.2)  # two reads on the server: the size line arrives in two parts
        s.sendall(b"FFFF;ext=1\r\nnstances")
        reply = b""
        while chunk := s.recv(4096):
            reply += chunk
    assert reply.startswith(b"HTTP/1.1 413"), reply
    still_serving(server, stub)


# ---- gRPC -----------------------------------------------------------------------------

def float_request(shape, values=(), content=b"", model="half_plus_two", name="x"):
    req = predict_pb2.PredictRequest()
    req.model_spec.name = model
    tensor = req.inputs[name]
    tensor.dtype = types_pb2.DT_FLOAT
    for d in shape:
        tensor.tensor_shape.dim.add(size=d)
    tensor.float_val.extend(values)
    tensor.tensor_content = content
    return req


def _without_model_spec(req):
    req.ClearField("model_spec")
    return req


def _with_dtype(dtype):
    req = float_request([1], [1.0])
    req.inputs["x"].dtype = dtype
    return req


def _unknown_rank():
    req = float_request([1], [1.0])
    req.inputs["x"].tensor_shape.unknown_rank = True
    return req


def _string_content():
    req = float_request([1], content=b"abcd")
    req.inputs["x"].dtype = types_pb2.DT_STRING
    return req


def _empty_classify():
    req = classification_pb2.ClassificationRequest()
    req.model_spec.name = "half_plus_two"
    req.model_spec.signature_name = "classify_x_to_y"
    return req


def _duplicate_output_filter():
    req = float_request([1], [1.0])
    req.output_filter.extend(["y", "y"])
    return req


def _multi_inference_without_tasks():
    req = inference_pb2.MultiInferenceRequest()
    req.input.example_list.examples.add()
    return req


GRPC_CORPUS = [
    # (method, request builder, text in the details)
    ("Predict", lambda: float_request([134217728], [1.0]),
     "134217728 elements, more than the server decodes for one request (100000"),
    ("Predict", lambda: float_request([1 << 40, 1 << 40], [1.0]), "more than 2^63 elements"),
    ("Predict", lambda: float_request([-1], content=b"\0" * 4), "negative dimension -1"),
    ("Predict", lambda: float_request([-2], content=b"\0" * 8), "negative dimension -2"),
    ("Predict", lambda: float_request([2, -1], [1.0]), "negative dimension -1"),
    ("Predict", _unknown_rank, "unknown rank"),
    ("Predict", lambda: float_request([1] * 33, [1.0]),
     "the shape has 33 dimensions, more than the 32 this server supports"),
    ("Predict", lambda: float_request([3], content=b"\0" * 8), "tensor_content holds 8 bytes"),
    ("Predict", _string_content, "a string tensor cannot use tensor_content"),
    ("Predict", lambda: _with_dtype(types_pb2.DT_RESOURCE), "unsupported dtype DT_RESOURCE"),
    ("Predict", lambda: _with_dtype(types_pb2.DT_VARIANT), "unsupported dtype DT_VARIANT"),
    ("Predict", lambda: _with_dtype(12345), "unsupported dtype 12345"),
    ("Predict", lambda: _with_dtype(types_pb2.DT_DOUBLE), "to be float but double is provided"),
    ("Predict", lambda: float_request([1], [1.0], name="z"),
     "input tensor alias not found in signature: z"),
    ("Predict", lambda: float_request([1], [1.0], model=""), "ModelSpec has no name specified."),
    ("Predict", lambda: _without_model_spec(float_request([1], [1.0])), "Missing ModelSpec"),
    ("Predict", _duplicate_output_filter, "duplicate output tensor alias: y"),
    ("Predict", lambda: float_request([1, 3], [1.0], model="mnist", name="images"),
     "Matrix size-incompatible"),
    ("Classify", _empty_classify, "Input is empty."),
    ("MultiInference", _multi_inference_without_tasks, "Expected at least one task"),
]


@pytest.mark.parametrize("method,build,text", GRPC_CORPUS,
                         ids=[f"grpc{i}" for i in range(len(GRPC_CORPUS))])
def test_grpc_bad_request_is_invalid_argument_and_nothing_else(
        server, stub, method, build, text):
    started = time.monotonic()
    with pytest.raises(grpc.RpcError) as e:
        getattr(stub, method)(build(), timeout=30)
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT, e.value.details()
    assert text in e.value.details()
    assert time.monotonic() - started < 10  # refused, not computed
    still_serving(server, stub)


def test_huge_broadcast_tensor_within_the_limit_is_answered(server, stub):
    """A broadcast float_val the limit allows decodes without a per-element copy and runs."""
    resp = stub.Predict(float_request([100000], [1.0]), timeout=60)
    values = np.array(resp.outputs["y"].float_val)
    assert values.shape == (100000,) and (values == 2.5).all()


def test_the_corpus_left_no_server_error_behind(server, stub):
    """Run last in this module: no request above was answered INTERNAL/UNKNOWN, and the
    process is the one that started."""
    still_serving(server, stub)
    metrics = requests.get(server.rest_url + "/m", timeout=10).text
    errors = [line for line in metrics.splitlines() if "request_count{" in line and
              ('status="INTERNAL"' in line or 'status="UNKNOWN"' in line)]
    assert errors == []
    assert 'status="INVALID_ARGUMENT"' in metrics
    assert server.proc.poll() is None
