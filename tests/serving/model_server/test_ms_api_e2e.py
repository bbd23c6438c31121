"""Every gRPC method and REST route against real server processes on loopback.

One module-scoped pair of servers over the same models: batching off (with monitoring and
a UNIX socket) and batching on, so the batching-identical-answers tests compare the two.
"""

from __future__ import annotations

import base64
import json
import re

import grpc
import numpy as np
import pytest
import requests
import tensorflow as tf
from tensorflow.core.example import example_pb2
from tensorflow_serving.apis import (classification_pb2, get_model_metadata_pb2,
                                     get_model_status_pb2, inference_pb2, model_service_pb2_grpc,
                                     predict_pb2, prediction_service_pb2_grpc, regression_pb2)

from saved_models import predict_request
from toolkit_testing import copy_version, running_servers, wait_until

pytestmark = pytest.mark.e2e

CONFIG = """
model_config_list {
  config {
    name: "half_plus_two" base_path: "%(root)s/half_plus_two" model_platform: "tensorflow"
    model_version_policy { all {} }
    version_labels { key: "stable" value: 1 }
    version_labels { key: "canary" value: 2 }
  }
  config { name: "mnist" base_path: "%(root)s/mnist" model_platform: "tensorflow" }
}
"""


@pytest.fixture(scope="module")
def servers(model_templates, tmp_path_factory):
    root = tmp_path_factory.mktemp("api_repo")
    copy_version(model_templates / "hp2_v1", root / "half_plus_two", 1)
    copy_version(model_templates / "hp2_v2", root / "half_plus_two", 2)
    copy_version(model_templates / "mnist", root / "mnist", 1)
    (root / "models.config").write_text(CONFIG % {"root": root})
    (root / "monitoring.config").write_text(
        'prometheus_config { enable: true, path: "/monitoring/prometheus/metrics" }')
    (root / "batching.config").write_text(
        "max_batch_size { value: 16 } batch_timeout_micros { value: 20000 } "
        "num_batch_threads { value: 1 } max_enqueued_batches { value: 100 } "
        "allowed_batch_sizes: 4 allowed_batch_sizes: 16")
    with running_servers() as start:
        plain = start(f"--model_config_file={root}/models.config",
                      f"--monitoring_config_file={root}/monitoring.config",
                      f"--grpc_socket_path={root}/grpc.sock",
                      "--rest_api_max_body_bytes=1000000", wait=False)
        batching = start(f"--model_config_file={root}/models.config", "--enable_batching",
                         f"--batching_parameters_file={root}/batching.config", wait=False)
        plain.wait_ready()
        batching.wait_ready()
        plain.socket = f"unix:{root}/grpc.sock"
        yield {"plain": plain, "batching": batching}


@pytest.fixture(scope="module")
def server(servers):
    return servers["plain"]


@pytest.fixture(scope="module")
def stub(server):
    with grpc.insecure_channel(server.grpc_target) as channel:
        yield prediction_service_pb2_grpc.PredictionServiceStub(channel)


@pytest.fixture(scope="module")
def model_stub(server):
    with grpc.insecure_channel(server.grpc_target) as channel:
        yield model_service_pb2_grpc.ModelServiceStub(channel)


def example(x: float) -> example_pb2.Example:
    ex = example_pb2.Example()
    ex.features.feature["x"].float_list.value.append(x)
    return ex


def images(n=2, seed=1):
    return np.random.default_rng(seed).random((n, 784), dtype=np.float32)


# ---- gRPC PredictionService ---------------------------------------------------------

def test_grpc_predict_latest_specific_and_label(stub):
    resp = stub.Predict(predict_request(), timeout=10)
    assert list(resp.outputs["y"].float_val) == [3.5, 4.0, 5.5]  # latest = version 2 (b=3)
    assert resp.model_spec.name == "half_plus_two"
    assert resp.model_spec.version.value == 2
    assert resp.model_spec.signature_name == "serving_default"
    resp = stub.Predict(predict_request(version=1), timeout=10)
    assert list(resp.outputs["y"].float_val) == [2.5, 3.0, 4.5]
    resp = stub.Predict(predict_request(label="stable"), timeout=10)
    assert resp.model_spec.version.value == 1
    resp = stub.Predict(predict_request(label="canary"), timeout=10)
    assert resp.model_spec.version.value == 2


def test_grpc_predict_mnist_like_mnist_client(stub):
    """What TF Serving's mnist_client.py does: one image, read outputs['scores'].float_val."""
    req = predict_pb2.PredictRequest()
    req.model_spec.name = "mnist"
    req.model_spec.signature_name = "predict_images"
    req.inputs["images"].CopyFrom(tf.make_tensor_proto(images(1)[0], shape=[1, 784]))
    resp = stub.Predict(req, timeout=10)
    scores = np.array(resp.outputs["scores"].float_val)
    assert scores.shape == (10,)
    assert scores.sum() == pytest.approx(1.0, abs=1e-5)
    assert tf.make_ndarray(resp.outputs["scores"]).shape == (1, 10)


def test_grpc_predict_output_filter(stub):
    req = predict_pb2.PredictRequest()
    req.model_spec.name = "mnist"
    req.model_spec.signature_name = "scores_and_classes"
    req.inputs["images"].CopyFrom(tf.make_tensor_proto(images(3)))
    req.output_filter.append("classes")
    resp = stub.Predict(req, timeout=10)
    assert list(resp.outputs) == ["classes"]
    assert len(resp.outputs["classes"].int64_val) == 3


@pytest.mark.parametrize("mutate,code,text", [
    (lambda r: setattr(r.model_spec, "name", "nope"), grpc.StatusCode.NOT_FOUND,
     "Servable not found for request: Latest(nope)"),
    (lambda r: r.model_spec.version.__setattr__("value", 9), grpc.StatusCode.NOT_FOUND,
     "Servable not found for request: Specific(half_plus_two, 9)"),
    (lambda r: setattr(r.model_spec, "signature_name", "nope"),
     grpc.StatusCode.FAILED_PRECONDITION, 'Serving signature key "nope" not found.'),
    (lambda r: r.inputs["z"].CopyFrom(r.inputs.pop("x")), grpc.StatusCode.INVALID_ARGUMENT,
     "input tensor alias not found in signature: z"),
    (lambda r: r.inputs["x"].CopyFrom(tf.make_tensor_proto(["a"])),
     grpc.StatusCode.INVALID_ARGUMENT, "to be float but string is provided"),
    (lambda r: (setattr(r.model_spec, "name", "mnist"), r.inputs.pop("x"),
                r.inputs["images"].CopyFrom(tf.make_tensor_proto([[1.0, 2.0]]))),
     grpc.StatusCode.INVALID_ARGUMENT, "Matrix size-incompatible"),  # the graph says so
    (lambda r: r.inputs.pop("x"), grpc.StatusCode.INVALID_ARGUMENT,
     "Missing but required: {x}"),
    (lambda r: setattr(r.inputs["x"], "tensor_content", b"\0" * 8),  # 2 floats for shape [3]
     grpc.StatusCode.INVALID_ARGUMENT, "tensor parsing error: x"),
    (lambda r: r.output_filter.append("w"), grpc.StatusCode.INVALID_ARGUMENT,
     "output tensor alias not found in signature: w"),
])
def test_grpc_predict_errors(stub, mutate, code, text):
    req = predict_request()
    mutate(req)
    with pytest.raises(grpc.RpcError) as e:
        stub.Predict(req, timeout=10)
    assert e.value.code() == code
    assert text in e.value.details()
    assert stub.Predict(predict_request(), timeout=10).outputs["y"].float_val  # still serving


def test_grpc_classify_and_regress(stub):
    req = classification_pb2.ClassificationRequest()
    req.model_spec.name = "half_plus_two"
    req.model_spec.signature_name = "classify_x_to_y"
    req.model_spec.version.value = 1
    req.input.example_list.examples.extend([example(2.0), example(4.0)])
    resp = stub.Classify(req, timeout=10)
    assert [[(c.label, c.score) for c in cl.classes] for cl in resp.result.classifications] == \
        [[("", 3.0)], [("", 4.0)]]
    assert resp.model_spec.signature_name == "classify_x_to_y"

    req = regression_pb2.RegressionRequest()
    req.model_spec.name = "half_plus_two"
    req.model_spec.signature_name = "regress_x_to_y"
    req.input.example_list.examples.append(example(2.0))
    resp = stub.Regress(req, timeout=10)
    assert [r.value for r in resp.result.regressions] == [4.0]  # latest: 0.5*2+3
    assert resp.model_spec.version.value == 2


def test_grpc_classify_with_context_and_wrong_method(stub):
    req = regression_pb2.RegressionRequest()
    req.model_spec.name = "half_plus_two"
    req.model_spec.signature_name = "regress_x_to_y"
    req.input.example_list_with_context.context.CopyFrom(example(10.0))
    req.input.example_list_with_context.examples.extend([example_pb2.Example(), example(4.0)])
    resp = stub.Regress(req, timeout=10)
    assert [r.value for r in resp.result.regressions] == [8.0, 5.0]  # context fills x
    req.model_spec.signature_name = "serving_default"  # a predict signature
    with pytest.raises(grpc.RpcError) as e:
        stub.Regress(req, timeout=10)
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "No regression inputs found in SignatureDef" in e.value.details()


def regress_and_classify_request(name: str, version=None):
    """MultiInference: regress_x_to_y and classify_x_to_y on one example, x = 2.0."""
    req = inference_pb2.MultiInferenceRequest()
    for sig, method in (("regress_x_to_y", "tensorflow/serving/regress"),
                        ("classify_x_to_y", "tensorflow/serving/classify")):
        task = req.tasks.add()
        task.model_spec.name = name
        if version is not None:
            task.model_spec.version.value = version
        task.model_spec.signature_name = sig
        task.method_name = method
    req.input.example_list.examples.append(example(2.0))
    return req


def test_grpc_multi_inference(stub):
    req = regress_and_classify_request("half_plus_two", version=1)
    resp = stub.MultiInference(req, timeout=10)
    assert resp.results[0].regression_result.regressions[0].value == 3.0
    assert resp.results[1].classification_result.classifications[0].classes[0].score == 3.0
    assert resp.results[0].model_spec.version.value == 1
    task = req.tasks.add()
    task.CopyFrom(req.tasks[0])
    with pytest.raises(grpc.RpcError) as e:
        stub.MultiInference(req, timeout=10)
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "Duplicate evaluation of signature: regress_x_to_y" in e.value.details()


def test_grpc_get_model_metadata(stub):
    req = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
    req.model_spec.name = "half_plus_two"
    resp = stub.GetModelMetadata(req, timeout=10)
    assert resp.model_spec.version.value == 2
    sigmap = get_model_metadata_pb2.SignatureDefMap()
    resp.metadata["signature_def"].Unpack(sigmap)
    sigs = sigmap.signature_def
    assert {"serving_default", "regress_x_to_y", "classify_x_to_y"} <= set(sigs)
    assert sigs["regress_x_to_y"].method_name == "tensorflow/serving/regress"
    assert sigs["serving_default"].inputs["x"].dtype == tf.float32.as_datatype_enum
    req.metadata_field[:] = ["nope"]
    with pytest.raises(grpc.RpcError) as e:
        stub.GetModelMetadata(req, timeout=10)
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_grpc_over_unix_socket(server):
    with grpc.insecure_channel(server.socket) as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        resp = stub.Predict(predict_request(version=1, x=[2.0]), timeout=10)
    assert list(resp.outputs["y"].float_val) == [3.0]


# ---- gRPC ModelService --------------------------------------------------------------

def test_grpc_get_model_status(model_stub):
    req = get_model_status_pb2.GetModelStatusRequest()
    req.model_spec.name = "half_plus_two"
    resp = model_stub.GetModelStatus(req, timeout=10)
    got = [(s.version, s.state, s.status.error_code, s.status.error_message)
           for s in resp.model_version_status]
    available = get_model_status_pb2.ModelVersionStatus.AVAILABLE
    assert got == [(2, available, 0, ""), (1, available, 0, "")]
    req.model_spec.version.value = 1
    assert [s.version for s in model_stub.GetModelStatus(req, timeout=10)
            .model_version_status] == [1]
    req.model_spec.version.value = 7
    with pytest.raises(grpc.RpcError) as e:
        model_stub.GetModelStatus(req, timeout=10)
    assert e.value.code() == grpc.StatusCode.NOT_FOUND
    assert e.value.details() == "Could not find version 7 of model half_plus_two"
    req = get_model_status_pb2.GetModelStatusRequest()
    req.model_spec.name = "nope"
    with pytest.raises(grpc.RpcError) as e:
        model_stub.GetModelStatus(req, timeout=10)
    assert e.value.details() == "Could not find any versions of model nope"
    # TF Serving's GetModelStatusImpl: no ModelSpec, then an empty name (a model with no
    # versions)
    for req, code, details in (
            (get_model_status_pb2.GetModelStatusRequest(), grpc.StatusCode.INVALID_ARGUMENT,
             "Missing ModelSpec"),
            (get_model_status_pb2.GetModelStatusRequest(model_spec={"signature_name": "x"}),
             grpc.StatusCode.NOT_FOUND, "Could not find any versions of model ")):
        with pytest.raises(grpc.RpcError) as e:
            model_stub.GetModelStatus(req, timeout=10)
        assert (e.value.code(), e.value.details()) == (code, details)


# ---- REST ---------------------------------------------------------------------------

def post(server, path, body):
    data = body if isinstance(body, (bytes, str)) else json.dumps(body)
    return requests.post(server.rest_url + path, data=data, timeout=10)


def test_rest_seed_curl_example(server):
    r = post(server, "/v1/models/half_plus_two/versions/1:predict", {"instances": [1.0, 2.0, 5.0]})
    assert r.status_code == 200
    assert r.json() == {"predictions": [2.5, 3.0, 4.5]}
    assert r.headers["Content-Type"] == "application/json"


def test_rest_predict_routes_and_formats(server):
    assert post(server, "/v1/models/half_plus_two:predict",
                {"instances": [1.0]}).json() == {"predictions": [3.5]}
    assert post(server, "/v1/models/half_plus_two/labels/stable:predict",
                {"instances": [1.0]}).json() == {"predictions": [2.5]}
    # percent-escapes are decoded in the name and the label, as TF Serving does
    assert post(server, "/v1/models/half%5Fplus%5Ftwo/labels/sta%62le:predict",
                {"instances": [1.0]}).json() == {"predictions": [2.5]}
    r = requests.get(server.rest_url + "/v1/models/half%5fplus_two/versions/1", timeout=10)
    assert r.json()["model_version_status"][0]["state"] == "AVAILABLE"
    assert post(server, "/v1/models/half_plus_two/versions/1:predict",
                {"inputs": [1.0, 2.0]}).json() == {"outputs": [2.5, 3.0]}
    assert post(server, "/v1/models/half_plus_two/versions/1:predict",
                {"inputs": {"x": [1.0]}}).json() == {"outputs": [2.5]}
    assert post(server, "/v1/models/half_plus_two/versions/1:predict",
                {"instances": [{"x": 1.0}, {"x": 2.0}]}).json() == {"predictions": [2.5, 3.0]}


def test_rest_multiple_outputs_row_and_columnar(server, stub):
    imgs = images(2)
    row = post(server, "/v1/models/mnist:predict", {
        "signature_name": "scores_and_classes",
        "instances": [{"images": img.tolist()} for img in imgs]}).json()
    assert [set(p) for p in row["predictions"]] == [{"scores", "classes"}] * 2
    col = post(server, "/v1/models/mnist:predict", {
        "signature_name": "scores_and_classes", "inputs": {"images": imgs.tolist()}}).json()
    assert set(col["outputs"]) == {"scores", "classes"}
    assert col["outputs"]["classes"] == [p["classes"] for p in row["predictions"]]
    # REST and gRPC give the same answer.
    req = predict_pb2.PredictRequest()
    req.model_spec.name = "mnist"
    req.model_spec.signature_name = "predict_images"
    req.inputs["images"].CopyFrom(tf.make_tensor_proto(imgs))
    grpc_scores = tf.make_ndarray(stub.Predict(req, timeout=10).outputs["scores"])
    rest_scores = post(server, "/v1/models/mnist:predict", {
        "signature_name": "predict_images", "instances": imgs.tolist()}).json()["predictions"]
    np.testing.assert_array_equal(np.array(rest_scores, np.float32), grpc_scores)


def test_rest_b64_string_input(server):
    serialized = base64.b64encode(example(2.0).SerializeToString()).decode()
    r = post(server, "/v1/models/half_plus_two/versions/1:predict", {
        "signature_name": "regress_x_to_y", "instances": [{"b64": serialized}]})
    assert r.status_code == 200, r.text
    assert r.json() == {"predictions": [3.0]}
    r = post(server, "/v1/models/half_plus_two/versions/1:predict", {
        "signature_name": "regress_x_to_y", "inputs": {"inputs": [{"b64": serialized}]}})
    assert r.json() == {"outputs": [3.0]}


def test_rest_classify_and_regress(server):
    r = post(server, "/v1/models/half_plus_two/versions/1:classify",
             {"signature_name": "classify_x_to_y", "examples": [{"x": 2.0}, {"x": 4.0}]})
    assert r.json() == {"results": [[["", 3.0]], [["", 4.0]]]}
    r = post(server, "/v1/models/half_plus_two/versions/1:regress",
             {"signature_name": "regress_x_to_y", "examples": [{"x": 2.0}]})
    assert r.json() == {"results": [3.0]}
    r = post(server, "/v1/models/half_plus_two:regress",
             {"signature_name": "regress_x_to_y", "context": {"x": 10.0}, "examples": [{}]})
    assert r.json() == {"results": [8.0]}
    # JSON integers become int64 features (TF Serving's typing): a float feature rejects them.
    r = post(server, "/v1/models/half_plus_two:regress",
             {"signature_name": "regress_x_to_y", "examples": [{"x": 4}]})
    assert r.status_code == 400 and "error" in r.json()


def test_rest_status_routes(server):
    expected_v1 = {"version": "1", "state": "AVAILABLE",
                   "status": {"error_code": "OK", "error_message": ""}}
    r = requests.get(server.rest_url + "/v1/models/half_plus_two", timeout=10)
    assert r.json() == {"model_version_status": [dict(expected_v1, version="2"), expected_v1]}
    r = requests.get(server.rest_url + "/v1/models/half_plus_two/versions/1", timeout=10)
    assert r.json() == {"model_version_status": [expected_v1]}
    for label in ("stable", "nope"):  # as TF Serving: status does not resolve a label
        r = requests.get(server.rest_url + f"/v1/models/half_plus_two/labels/{label}",
                         timeout=10)
        assert r.json() == {"model_version_status": [dict(expected_v1, version="2"),
                                                     expected_v1]}
    r = requests.get(server.rest_url + "/v1/models/nope", timeout=10)
    assert r.status_code == 404
    assert r.json() == {"error": "Could not find any versions of model nope"}


def test_rest_metadata_routes(server):
    r = requests.get(server.rest_url + "/v1/models/half_plus_two/versions/1/metadata",
                     timeout=10)
    body = r.json()
    assert body["model_spec"] == {"name": "half_plus_two", "signature_name": "",
                                  "version": "1"}
    sig = body["metadata"]["signature_def"]["signature_def"]["serving_default"]
    assert sig["method_name"] == "tensorflow/serving/predict"
    assert sig["inputs"]["x"]["dtype"] == "DT_FLOAT"
    assert sig["inputs"]["x"]["tensor_shape"] == {"dim": [{"size": "-1", "name": ""}],
                                                  "unknown_rank": False}
    r = requests.get(server.rest_url + "/v1/models/mnist/metadata", timeout=10)
    assert "predict_images" in r.json()["metadata"]["signature_def"]["signature_def"]


@pytest.mark.parametrize("path,body,status,text", [
    ("/v1/models/half_plus_two:predict", "{not json", 400, "JSON Parse error"),
    ("/v1/models/half_plus_two:predict", {"instances": ["a"]}, 400,  # TF Serving's words
     "Failed to process element: 0 of 'instances' list. Error: INVALID_ARGUMENT: "
     'JSON Value: "a" Type: String is not of expected type: float'),
    ("/v1/models/half_plus_two:predict", {"instances": [{"z": 1.0}]}, 400,
     "does not have named input: z"),
    ("/v1/models/half_plus_two:predict", {}, 400, "Missing 'inputs' or 'instances' key"),
    ("/v1/models/half_plus_two:predict", {"signature_name": "x"}, 400,  # the signature first
     'Serving signature name: "x" not found in signature def'),
    ("/v1/models/half_plus_two:predict", {"signature_name": "nope", "instances": [1.0]}, 400,
     'Serving signature name: "nope" not found in signature def'),
    ("/v1/models/mnist:predict", {"instances": [[1.0, 2.0], [1.0]]}, 400,
     "Failed to process element: 1 of 'instances' list. Error: INVALID_ARGUMENT: "
     "Expecting tensor size: 2 but got: 1"),
    ("/v1/models/half_plus_two:predict", {"instances": [1.0, [2.0]]}, 400,
     "Failed to process element: 1 of 'instances' list. Error: INVALID_ARGUMENT: "
     "Expecting shape [] but got: [1]"),
    ("/v1/models/half_plus_two:predict", {"inputs": [[1.0, 2.0], [1.0]]}, 400,  # columnar
     "Encountered list at unexpected size: 1 at level: 1 expected size: 2"),
    ("/v1/models/mnist:predict", {"instances": [[1.0] * 3]}, 400, "Matrix size-incompatible"),
    ("/v1/models/nope:predict", {"instances": [1.0]}, 404,
     "Servable not found for request: Latest(nope)"),
    ("/v1/models/nope:predict", {}, 404,  # the model before the body's keys, as TF Serving
     "Servable not found for request: Latest(nope)"),
    ("/v1/models/half_plus_two/versions/9:predict", {"instances": [1.0]}, 404,
     "Servable not found for request: Specific(half_plus_two, 9)"),
    ("/v1/models/half_plus_two:frobnicate", {"instances": [1.0]}, 400, "Malformed request"),
    ("/v1/models/half_plus_two:regress", {"examples": [{"x": 1.0}]}, 400,
     "No regression inputs found in SignatureDef"),
])
def test_rest_errors(server, path, body, status, text):
    r = post(server, path, body)
    assert r.status_code == status, r.text
    assert set(r.json()) == {"error"}
    assert text in r.json()["error"]
    assert post(server, "/v1/models/half_plus_two:predict",
                {"instances": [1.0]}).status_code == 200


def test_rest_oversized_body_is_rejected_and_server_keeps_serving(server):
    r = post(server, "/v1/models/mnist:predict", {"instances": images(400).tolist()})
    assert r.status_code == 413  # Payload Too Large, as TF Serving's libevent
    assert "exceeds the limit" in r.json()["error"]
    assert post(server, "/v1/models/half_plus_two:predict",
                {"instances": [1.0]}).json() == {"predictions": [3.5]}


def test_rest_chunked_request_bodies(server):
    """A body streamed without Content-Length (requests with a generator: chunked)."""
    def chunks(text: str, size: int = 7):
        for i in range(0, len(text), size):
            yield text[i:i + size].encode()

    url = server.rest_url + "/v1/models/half_plus_two/versions/1:predict"
    r = requests.post(url, data=chunks(json.dumps({"instances": [1.0, 2.0, 5.0]})), timeout=10)
    assert r.status_code == 200, r.text
    assert r.json() == {"predictions": [2.5, 3.0, 4.5]}
    big = json.dumps({"instances": images(400).tolist()})  # over the 1 MB limit
    r = requests.post(url, data=chunks(big, 65536), timeout=10)
    assert r.status_code == 413
    assert "exceeds the limit" in r.json()["error"]
    assert post(server, "/v1/models/half_plus_two:predict",
                {"instances": [1.0]}).json() == {"predictions": [3.5]}


def test_prometheus_metrics(server):
    post(server, "/v1/models/half_plus_two:predict", {"instances": [1.0]})
    text = requests.get(server.rest_url + "/monitoring/prometheus/metrics", timeout=10).text
    assert "# TYPE" in text
    # TF Serving's name and labels, as its exporter writes a counter (no _total)
    assert re.search(r'^:tensorflow:serving:request_count\{model_name="half_plus_two",'
                     r'status="OK"\} [1-9][0-9]*$', text, re.M), text
    assert "_total" not in text and "# TYPE :tensorflow:serving:request_count counter" in text
    assert (':tensorflow:serving:request_count_by_entrypoint{model_name="half_plus_two",'
            'API="Predict",entrypoint="REST",status="OK"}') in text
    assert ':tensorflow:serving:request_latency_bucket{API="Predict"' in text
    assert ('model_version_state{model_name="half_plus_two",model_version="2",'
            'state="AVAILABLE"} 1.0') in text
    assert re.search(r':tensorflow:cc:saved_model:load_attempt_count\{model_path="[^"]*'
                     r'/half_plus_two/2",status="success"\} 1$', text, re.M), text


# ---- batching on vs off -------------------------------------------------------------

def test_batching_on_and_off_give_identical_answers(servers):
    """Concurrent requests on the batching server (so they really batch) == batching off."""
    from concurrent.futures import ThreadPoolExecutor

    imgs = images(24, seed=7)

    def ask(server, i):
        r = post(server, "/v1/models/mnist:predict",
                 {"signature_name": "predict_images", "instances": imgs[i:i + 1 + i % 3].tolist()})
        assert r.status_code == 200, r.text
        return r.json()["predictions"]

    def ask_hp2(server, i):
        return post(server, "/v1/models/half_plus_two:predict",
                    {"instances": [float(i), i + 0.5]}).json()["predictions"]

    with ThreadPoolExecutor(12) as pool:
        off = list(pool.map(lambda i: ask(servers["plain"], i), range(20)))
        on = list(pool.map(lambda i: ask(servers["batching"], i), range(20)))
        hp_off = list(pool.map(lambda i: ask_hp2(servers["plain"], i), range(20)))
        hp_on = list(pool.map(lambda i: ask_hp2(servers["batching"], i), range(20)))
    assert hp_on == hp_off
    for a, b in zip(on, off):
        np.testing.assert_allclose(np.array(a), np.array(b), rtol=1e-6, atol=1e-7)


def test_grpc_batching_on_and_off_give_identical_answers(servers):
    """The gRPC Predict path awaits its batch on the event loop; same answers as REST's."""
    from concurrent.futures import ThreadPoolExecutor

    imgs = images(24, seed=11)

    def request(i):
        req = predict_pb2.PredictRequest()
        req.model_spec.name = "mnist"
        req.model_spec.signature_name = "predict_images"
        req.inputs["images"].CopyFrom(tf.make_tensor_proto(imgs[i:i + 1 + i % 3]))
        return req

    answers = {}
    for kind in ("plain", "batching"):
        with grpc.insecure_channel(servers[kind].grpc_target) as channel:
            stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
            with ThreadPoolExecutor(12) as pool:
                answers[kind] = list(pool.map(
                    lambda i: tf.make_ndarray(stub.Predict(request(i), timeout=30)
                                              .outputs["scores"]), range(20)))
    for i, (a, b) in enumerate(zip(answers["batching"], answers["plain"])):
        assert a.shape == (1 + i % 3, 10)
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)


def test_grpc_deadline_withdraws_a_queued_request(model_templates, tmp_path):
    """A client deadline that passes while its request waits for a batch: the client gets
    DEADLINE_EXCEEDED, the server counts it CANCELLED, and keeps serving."""
    copy_version(model_templates / "hp2_v1", tmp_path / "half_plus_two", 1)
    (tmp_path / "batching.config").write_text(
        "max_batch_size { value: 64 } batch_timeout_micros { value: 2000000 } "
        "num_batch_threads { value: 1 }")
    (tmp_path / "monitoring.config").write_text(
        'prometheus_config { enable: true, path: "/metrics" }')
    with running_servers() as start:
        server = start("--model_name=half_plus_two",
                       f"--model_base_path={tmp_path}/half_plus_two", "--enable_batching",
                       f"--batching_parameters_file={tmp_path}/batching.config",
                       f"--monitoring_config_file={tmp_path}/monitoring.config")
        with grpc.insecure_channel(server.grpc_target) as channel:
            stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
            with pytest.raises(grpc.RpcError) as e:
                stub.Predict(predict_request(x=[1.0]), timeout=0.3)
            assert e.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
            counted = ('request_count_by_entrypoint{model_name="half_plus_two",API="Predict",'
                       'entrypoint="GRPC",status="CANCELLED"} 1\n')
            wait_until(lambda: counted in requests.get(server.rest_url + "/metrics",
                                                       timeout=10).text,
                       timeout=10, what="the cancelled request in the metrics")
            resp = stub.Predict(predict_request(x=[1.0]), timeout=10)
            assert list(resp.outputs["y"].float_val) == [2.5]


def test_batching_server_grpc_and_classify(servers):
    with grpc.insecure_channel(servers["batching"].grpc_target) as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        resp = stub.Predict(predict_request(version=1), timeout=10)
        assert list(resp.outputs["y"].float_val) == [2.5, 3.0, 4.5]
        big = predict_request(x=[1.0] * 17)  # > max_batch_size 16
        with pytest.raises(grpc.RpcError) as e:
            stub.Predict(big, timeout=10)
        assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "larger than maximum input batch size 16" in e.value.details()
        scalar = predict_request(version=1)
        scalar.inputs["x"].CopyFrom(tf.make_tensor_proto(3.0, dtype=tf.float32))
        with pytest.raises(grpc.RpcError) as e:  # no batch dimension: as TF Serving batching
            stub.Predict(scalar, timeout=10)
        assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert e.value.details() == \
            "Batching Run() input tensors must have at least one dimension"
    path = "/v1/models/half_plus_two/versions/1:predict"
    r = post(servers["batching"], path, {"inputs": 3.0})
    assert r.status_code == 400 and r.json() == {
        "error": "Batching Run() input tensors must have at least one dimension"}
    assert post(servers["plain"], path, {"inputs": 3.0}).json() == {"outputs": 3.5}
    r = post(servers["batching"], "/v1/models/half_plus_two/versions/1:classify",
             {"signature_name": "classify_x_to_y", "examples": [{"x": 2.0}]})
    assert r.json() == {"results": [[["", 3.0]]]}


# ---- one request path: REST and gRPC answer alike ------------------------------------

def _json_of(message):
    from google.protobuf import json_format

    return json_format.MessageToDict(message, preserving_proto_field_name=True,
                                     including_default_value_fields=True)


def _examples_input(request, xs):
    request.model_spec.name = "half_plus_two"
    request.model_spec.version.value = 1
    request.input.example_list.examples.extend([example(x) for x in xs])
    return request


def _same_predict(server, stub, columnar):
    imgs = images(3, seed=5)
    body = {"signature_name": "scores_and_classes"}
    body.update({"inputs": {"images": imgs.tolist()}} if columnar else
                {"instances": [{"images": img.tolist()} for img in imgs]})
    rest = post(server, "/v1/models/mnist:predict", body).json()
    req = predict_pb2.PredictRequest()
    req.model_spec.name = "mnist"
    req.model_spec.signature_name = "scores_and_classes"
    req.inputs["images"].CopyFrom(tf.make_tensor_proto(imgs))
    outputs = stub.Predict(req, timeout=10).outputs
    for alias in ("scores", "classes"):
        got = rest["outputs"][alias] if columnar else [p[alias] for p in rest["predictions"]]
        want = tf.make_ndarray(outputs[alias])
        np.testing.assert_array_equal(np.array(got, want.dtype), want)


def _same_classify(server, stub):
    rest = post(server, "/v1/models/half_plus_two/versions/1:classify",
                {"signature_name": "classify_x_to_y", "examples": [{"x": 2.0}, {"x": 4.0}]})
    req = _examples_input(classification_pb2.ClassificationRequest(), [2.0, 4.0])
    req.model_spec.signature_name = "classify_x_to_y"
    grpc_result = stub.Classify(req, timeout=10).result
    assert rest.json()["results"] == [[[c.label, c.score] for c in cl.classes]
                                      for cl in grpc_result.classifications]


def _same_regress(server, stub):
    rest = post(server, "/v1/models/half_plus_two/versions/1:regress",
                {"signature_name": "regress_x_to_y", "examples": [{"x": 2.0}, {"x": 7.0}]})
    req = _examples_input(regression_pb2.RegressionRequest(), [2.0, 7.0])
    req.model_spec.signature_name = "regress_x_to_y"
    assert rest.json()["results"] == [r.value for r in stub.Regress(req, timeout=10)
                                      .result.regressions]


def _same_metadata(server, stub):
    rest = requests.get(server.rest_url + "/v1/models/mnist/metadata", timeout=10).json()
    req = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
    req.model_spec.name = "mnist"
    response = stub.GetModelMetadata(req, timeout=10)
    sigmap = get_model_metadata_pb2.SignatureDefMap()
    response.metadata["signature_def"].Unpack(sigmap)
    assert rest["model_spec"] == _json_of(response.model_spec)
    assert rest["metadata"]["signature_def"] == _json_of(sigmap)


def _same_status(server, model_stub):
    rest = requests.get(server.rest_url + "/v1/models/half_plus_two/labels/canary",
                        timeout=10).json()
    req = get_model_status_pb2.GetModelStatusRequest()
    req.model_spec.name = "half_plus_two"
    req.model_spec.version_label = "canary"
    assert rest == _json_of(model_stub.GetModelStatus(req, timeout=10))


def _same_error(server, stub):
    rest = post(server, "/v1/models/half_plus_two/versions/9:predict", {"instances": [1.0]})
    with pytest.raises(grpc.RpcError) as e:
        stub.Predict(predict_request(version=9), timeout=10)
    assert (rest.status_code, e.value.code()) == (404, grpc.StatusCode.NOT_FOUND)
    assert rest.json() == {"error": e.value.details()}


@pytest.mark.parametrize("api", ["predict-row", "predict-columnar", "classify", "regress",
                                 "metadata", "status", "error"])
def test_rest_and_grpc_give_identical_answers(server, stub, model_stub, api):
    """The same request through either front end reaches the same API entry point and
    gets the same answer (REST's JSON is gRPC's proto, as TF Serving writes it)."""
    if api.startswith("predict"):
        _same_predict(server, stub, columnar=api.endswith("columnar"))
    elif api == "status":
        _same_status(server, model_stub)
    else:
        {"classify": _same_classify, "regress": _same_regress, "metadata": _same_metadata,
         "error": _same_error}[api](server, stub)
