"""Every API against the SavedModels users bring, answered as TF Serving answers them.

TF1 models built as TF Serving's own test-data generator builds half_plus_two (graph mode,
placeholders, ParseExample classify/regress signatures, an asset file and an init op, a
version directory 00000123), and TF2 models saved by tf.saved_model.save and by Keras 2,
whose signatures all carry the predict method name. One server serves them all with
tensorflow_model_server's defaults; a second one has --saved_model_tags and
--enable_signature_method_name_check set.
"""

from __future__ import annotations

import grpc
import pytest
import requests
import tensorflow as tf
from tensorflow.core.example import example_pb2
from tensorflow_serving.apis import (classification_pb2, get_model_metadata_pb2,
                                     inference_pb2, predict_pb2, prediction_service_pb2_grpc,
                                     regression_pb2)

from saved_models import ASSET_CONTENTS
from toolkit_testing import copy_version, running_servers, write_models_config

pytestmark = pytest.mark.e2e

MODELS = {  # model name -> (template, version directory)
    "tf1": ("tf1_hp2", "00000123"),
    "tf1_main_op": ("tf1_hp2_main_op", "1"),
    "tf2": ("tf2_hp2", "1"),
    "keras": ("keras_hp2", "1"),
}
CLASSIFY, REGRESS = "tensorflow/serving/classify", "tensorflow/serving/regress"


@pytest.fixture(scope="module")
def servers(model_templates, tmp_path_factory):
    root = tmp_path_factory.mktemp("models_repo")
    for name, (template, version) in MODELS.items():
        copy_version(model_templates / template, root / name, version)
    write_models_config(root, MODELS)
    with running_servers() as start:
        default = start(f"--model_config_file={root}/models.config", wait=False)
        tagged = start("--model_name=tf1", f"--model_base_path={root}/tf1",
                       "--saved_model_tags=serve,experimental",
                       "--enable_signature_method_name_check", wait=False)
        yield {"default": default.wait_ready(), "tagged": tagged.wait_ready()}


@pytest.fixture(scope="module")
def server(servers):
    return servers["default"]


@pytest.fixture(scope="module")
def stub(server):
    with grpc.insecure_channel(server.grpc_target) as channel:
        yield prediction_service_pb2_grpc.PredictionServiceStub(channel)


def rest(server, model, verb, body):
    r = requests.post(f"{server.rest_url}/v1/models/{model}:{verb}", json=body, timeout=30)
    return r.status_code, r.json()


def example(x: float) -> example_pb2.Example:
    ex = example_pb2.Example()
    ex.features.feature["x"].float_list.value.append(x)
    return ex


# ---- REST ---------------------------------------------------------------------------

@pytest.mark.parametrize("model,body,expected", [
    # TF Serving's README example on its own TF1 model: x is fed at a [-1, 1] tensor.
    ("tf1", {"instances": [2.0, 3.0, 4.0]}, {"predictions": [3.0, 3.5, 4.0]}),
    ("tf1", {"inputs": [2.0, 3.0, 4.0]}, {"outputs": [3.0, 3.5, 4.0]}),
    ("tf1", {"instances": [[2.0], [3.0]]}, {"predictions": [[3.0], [3.5]]}),
    ("tf1", {"instances": [{"x": 1.0}]}, {"predictions": [2.5]}),
    ("tf1_main_op", {"instances": [2.0]}, {"predictions": [3.0]}),
    ("tf2", {"instances": [1.0, 2.0]}, {"predictions": [2.5, 3.0]}),
    ("tf2", {"inputs": {"x": [1.0, 2.0]}}, {"outputs": [2.5, 3.0]}),
    ("keras", {"instances": [[1.0], [2.0]]}, {"predictions": [[2.5], [3.0]]}),
    ("keras", {"inputs": [[4.0]]}, {"outputs": [[4.0]]}),
])
def test_rest_predict_row_and_columnar(server, model, body, expected):
    assert rest(server, model, "predict", body) == (200, expected)


@pytest.mark.parametrize("model,verb,body,expected", [
    ("tf1", "classify", {"signature_name": "classify_x_to_y", "examples": [{"x": 2.0}]},
     {"results": [[["", 3.0]]]}),
    ("tf1", "regress", {"signature_name": "regress_x_to_y", "examples": [{"x": 2.0}]},
     {"results": [3.0]}),
    ("tf1", "regress", {"signature_name": "regress_x_to_y2", "examples": [{"x": 2.0}]},
     {"results": [4.0]}),
    ("tf1", "regress", {"signature_name": "regress_x_to_y", "context": {"x": 4.0},
                        "examples": [{}, {"x": 0.0}]}, {"results": [4.0, 2.0]}),
    # TF2 signatures say `predict`: served, as TF Serving does with the check off
    ("tf2", "classify", {"signature_name": "classify_x_to_y",
                         "examples": [{"x": 2.0}, {"x": 4.0}]},
     {"results": [[["negative", 3.0]], [["positive", 4.0]]]}),
    ("tf2", "regress", {"signature_name": "regress_x_to_y", "examples": [{"x": 2.0}]},
     {"results": [3.0]}),
])
def test_rest_classify_and_regress(server, model, verb, body, expected):
    assert rest(server, model, verb, body) == (200, expected)


@pytest.mark.parametrize("model,verb,body,text", [
    # the graph decides what shapes it takes: Keras' Dense needs a matrix
    ("keras", "predict", {"instances": [1.0, 2.0]}, "In[0] is not a matrix"),
    # a Regress on a signature whose input is a float tensor: the Session's dtype error
    ("tf1", "regress", {"signature_name": "regress_x2_to_y3", "examples": [{"x": 2.0}]},
     "Type mismatch: actual string vs. expect float"),
    ("keras", "classify", {"examples": [{"x": 2.0}]},
     "No classification inputs found in SignatureDef"),
    ("tf2", "regress", {"signature_name": "classify_x_to_y", "examples": [{"x": 2.0}]},
     "Expected one output Tensor."),
    ("tf1", "predict", {"signature_name": "asset_contents", "inputs": {}},
     "Failed to get input map for signature: asset_contents"),
])
def test_rest_errors_are_tf_servings(server, model, verb, body, text):
    status, answer = rest(server, model, verb, body)
    assert status == 400 and text in answer["error"], answer


def test_rest_status_of_version_00000123(server):
    r = requests.get(f"{server.rest_url}/v1/models/tf1", timeout=10)
    assert r.json() == {"model_version_status": [{
        "version": "123", "state": "AVAILABLE",
        "status": {"error_code": "OK", "error_message": ""}}]}


# ---- gRPC ---------------------------------------------------------------------------

def predict_request(model, signature="", **inputs):
    req = predict_pb2.PredictRequest()
    req.model_spec.name = model
    req.model_spec.signature_name = signature
    for name, value in inputs.items():
        req.inputs[name].CopyFrom(tf.make_tensor_proto(value))
    return req


@pytest.mark.parametrize("model,x,expected", [
    ("tf1", [[2.0], [4.0]], [[3.0], [4.0]]),
    ("tf1", [3.0], [3.5]),
    ("tf1_main_op", [[1.0]], [[2.5]]),
    ("tf2", [1.0, 3.0], [2.5, 3.5]),
    ("keras", [[1.0]], [[2.5]]),
])
def test_grpc_predict(stub, model, x, expected):
    resp = stub.Predict(predict_request(model, x=tf.constant(x, tf.float32).numpy()),
                        timeout=30)
    assert tf.make_ndarray(resp.outputs["y"]).tolist() == expected
    assert resp.model_spec.name == model and resp.model_spec.signature_name == \
        "serving_default"


@pytest.mark.parametrize("model", ["tf1", "tf1_main_op"])
def test_asset_files_are_fed_to_the_init_op(stub, model):
    """The init op (legacy_init_op / main_op) read assets/foo.txt at its real path."""
    resp = stub.Predict(predict_request(model, "asset_contents"), timeout=30)
    assert resp.outputs["contents"].string_val == [ASSET_CONTENTS.encode()]


def test_grpc_classify_regress_and_multi_inference_on_tf2_signatures(stub):
    req = classification_pb2.ClassificationRequest()
    req.model_spec.name = "tf2"
    req.model_spec.signature_name = "classify_x_to_y"
    req.input.example_list.examples.extend([example(2.0), example(6.0)])
    resp = stub.Classify(req, timeout=30)
    assert [[(c.label, c.score) for c in cl.classes] for cl in resp.result.classifications] == \
        [[("negative", 3.0)], [("positive", 5.0)]]

    req = regression_pb2.RegressionRequest()
    req.model_spec.name = "tf2"
    req.model_spec.signature_name = "regress_x_to_y"
    req.input.example_list.examples.append(example(2.0))
    assert [r.value for r in stub.Regress(req, timeout=30).result.regressions] == [3.0]

    multi = inference_pb2.MultiInferenceRequest()
    for sig, method in (("regress_x_to_y", REGRESS), ("classify_x_to_y", CLASSIFY)):
        task = multi.tasks.add(method_name=method)
        task.model_spec.name = "tf2"
        task.model_spec.signature_name = sig
    multi.input.example_list.examples.append(example(6.0))
    resp = stub.MultiInference(multi, timeout=30)
    assert resp.results[0].regression_result.regressions[0].value == 5.0
    assert resp.results[1].classification_result.classifications[0].classes[0].label == \
        "positive"
    assert [r.model_spec.signature_name for r in resp.results] == \
        ["regress_x_to_y", "classify_x_to_y"]


def test_grpc_multi_inference_on_tf1_shared_input(stub):
    multi = inference_pb2.MultiInferenceRequest()
    for sig, method in (("regress_x_to_y2", REGRESS), ("classify_x_to_y", CLASSIFY)):
        task = multi.tasks.add(method_name=method)
        task.model_spec.name = "tf1"
        task.model_spec.signature_name = sig
    multi.input.example_list.examples.extend([example(2.0), example(4.0)])
    resp = stub.MultiInference(multi, timeout=30)
    assert [r.value for r in resp.results[0].regression_result.regressions] == [4.0, 5.0]
    assert [c.classes[0].score for c in resp.results[1].classification_result
            .classifications] == [3.0, 4.0]
    assert resp.results[0].model_spec.version.value == 123


@pytest.mark.parametrize("model,signatures", [
    ("tf1", {"serving_default": "tensorflow/serving/predict",
             "classify_x_to_y": CLASSIFY, "regress_x2_to_y3": REGRESS}),
    ("tf2", {"serving_default": "tensorflow/serving/predict",
             "classify_x_to_y": "tensorflow/serving/predict", "__saved_model_init_op": ""}),
    ("keras", {"serving_default": "tensorflow/serving/predict"}),
])
def test_grpc_metadata_lists_the_signatures_as_exported(stub, model, signatures):
    req = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
    req.model_spec.name = model
    sigmap = get_model_metadata_pb2.SignatureDefMap()
    stub.GetModelMetadata(req, timeout=30).metadata["signature_def"].Unpack(sigmap)
    got = {name: sig.method_name for name, sig in sigmap.signature_def.items()}
    assert signatures.items() <= got.items()
    x = sigmap.signature_def["serving_default"].inputs["x"]
    assert x.dtype == tf.float32.as_datatype_enum


def test_a_signature_that_names_an_op_is_not_run_by_predict(servers):
    """TF2's `__saved_model_init_op` names the init op, not tensors: running it would
    initialise the model again, so Predict answers as for a signature it does not have
    (through the default front-end worker, which converts against the signatures it is
    sent)."""
    status, answer = rest(servers["default"], "tf2", "predict",
                          {"signature_name": "__saved_model_init_op", "instances": [1.0]})
    assert (status, answer) == (400, {"error": 'Serving signature name: '
                                               '"__saved_model_init_op" not found in signature def'})


# ---- --saved_model_tags and --enable_signature_method_name_check ------------------------

def test_saved_model_tags_pick_the_meta_graph(servers):
    """The serve+experimental graph answers 0.5x + 3 where the serve graph answers 0.5x + 2."""
    assert rest(servers["tagged"], "tf1", "predict", {"instances": [2.0]}) == \
        (200, {"predictions": [4.0]})


def test_method_name_check_refuses_what_the_default_serves(servers):
    body = {"examples": [{"x": 2.0}]}
    status, answer = rest(servers["tagged"], "tf1", "classify", body)
    assert status == 400 and answer["error"] == (
        "Expected classification signature method_name to be tensorflow/serving/classify. "
        "Was: tensorflow/serving/predict")
    status, answer = rest(servers["default"], "tf1", "classify", body)
    assert status == 400 and "No classification inputs found" in answer["error"]
    assert rest(servers["tagged"], "tf1", "classify",
                dict(body, signature_name="classify_x_to_y")) == \
        (200, {"results": [[["", 3.0]]]})
