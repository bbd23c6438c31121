"""Model config reload (HandleReloadConfigRequest and file polling) and warmup, end to end."""

from __future__ import annotations

import grpc
import pytest
import requests
from google.protobuf import text_format
from tensorflow_serving.apis import (get_model_status_pb2, model_management_pb2,
                                     model_service_pb2_grpc)

from toolkit_testing import wait_until

pytestmark = pytest.mark.e2e

AVAILABLE = get_model_status_pb2.ModelVersionStatus.AVAILABLE
END = get_model_status_pb2.ModelVersionStatus.END


def model_config(root, *models):
    """models: (name, extra text) pairs -> ModelServerConfig text."""
    body = "".join(f'config {{ name: "{n}" base_path: "{root}/{n}" model_platform: '
                   f'"tensorflow" {extra} }}\n' for n, extra in models)
    return f"model_config_list {{\n{body}}}\n"


def predict(server, model, x=1.0, suffix=""):
    r = requests.post(f"{server.rest_url}/v1/models/{model}{suffix}:predict",
                      json={"instances": [x]}, timeout=10)
    return r.status_code, r.json()


def statuses(stub, model):
    req = get_model_status_pb2.GetModelStatusRequest()
    req.model_spec.name = model
    try:
        resp = stub.GetModelStatus(req, timeout=10)
    except grpc.RpcError:
        return {}
    return {s.version: (s.state, s.status.error_code, s.status.error_message)
            for s in resp.model_version_status}


@pytest.fixture
def setup(tmp_path, start_server, make_version):
    make_version(tmp_path / "a", 1, "hp2_v1")
    make_version(tmp_path / "b", 1, "hp2_v2")
    make_version(tmp_path / "b", 2, "hp2_v1")
    (tmp_path / "models.config").write_text(model_config(tmp_path, ("a", "")))
    server = start_server(f"--model_config_file={tmp_path}/models.config",
                          "--model_config_file_poll_wait_seconds=0.3",
                          "--file_system_poll_wait_seconds=0.2")
    channel = grpc.insecure_channel(server.grpc_target)
    yield tmp_path, server, model_service_pb2_grpc.ModelServiceStub(channel)
    channel.close()


def reload_request(text):
    req = model_management_pb2.ReloadConfigRequest()
    text_format.Parse(text, req.config)
    return req


def test_handle_reload_config_request(setup):
    root, server, stub = setup
    assert predict(server, "b")[0] == 404
    text = model_config(root, ("a", ""), ("b", "model_version_policy { all {} } "
                                               "version_labels { key: 'old' value: 1 }"))
    resp = stub.HandleReloadConfigRequest(reload_request(text), timeout=60)
    assert resp.status.error_code == 0
    # The reload returns once the new model's versions are loaded, labels applied.
    assert predict(server, "b") == (200, {"predictions": [2.5]})  # latest = 2 (hp2_v1)
    assert predict(server, "b", suffix="/labels/old") == (200, {"predictions": [3.5]})
    assert statuses(stub, "b") == {2: (AVAILABLE, 0, ""), 1: (AVAILABLE, 0, "")}

    # A label for a version that is not available is refused, as TF Serving does.
    bad = model_config(root, ("a", ""), ("b", "model_version_policy { all {} } "
                                              "version_labels { key: 'next' value: 9 }"))
    with pytest.raises(grpc.RpcError) as e:
        stub.HandleReloadConfigRequest(reload_request(bad), timeout=60)
    assert e.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "version 9 of model b" in e.value.details()

    # A new model that cannot load: UNKNOWN with TF Serving's words ("{", then per model
    # "{" + ServableId::DebugString() + error + "}, "), and what served serves.
    (root / "c" / "1" / "variables").mkdir(parents=True)
    (root / "c" / "1" / "saved_model.pb").write_bytes(b"not a SavedModel")
    with_c = model_config(root, ("a", ""), ("b", "model_version_policy { all {} } "
                                                 "version_labels { key: 'old' value: 1 }"),
                          ("c", ""))
    with pytest.raises(grpc.RpcError) as e:
        stub.HandleReloadConfigRequest(reload_request(with_c), timeout=60)
    assert e.value.code() == grpc.StatusCode.UNKNOWN
    assert e.value.details().startswith(
        "1 model(s) did not become available: {{{name: c version: 1} due to error: DATA_LOSS: ")
    assert e.value.details().endswith("}, }")
    [(state, code, _)] = statuses(stub, "c").values()
    assert (state, code) == (END, grpc.StatusCode.DATA_LOSS.value[0])
    assert predict(server, "a") == (200, {"predictions": [2.5]})
    assert predict(server, "b", suffix="/labels/old") == (200, {"predictions": [3.5]})

    # Removing a model unloads it.
    stub.HandleReloadConfigRequest(reload_request(model_config(root, ("b", ""))), timeout=60)
    wait_until(lambda: statuses(stub, "a") == {1: (END, 0, "")}, 10, what="a unloaded")
    assert predict(server, "a")[0] == 404


def test_config_file_is_polled_and_a_bad_file_keeps_the_old_config(setup):
    root, server, stub = setup
    (root / "models.config").write_text(model_config(root, ("b", "")))
    wait_until(lambda: predict(server, "b")[0] == 200, 20, what="b served after file change")
    wait_until(lambda: predict(server, "a")[0] == 404, 10, what="a removed")
    (root / "models.config").write_text("model_config_list { config { name: 'c' ")
    server.wait_for_log("Not applying model config file")
    assert "Error parsing text-format tensorflow.serving.ModelServerConfig" in server.output
    assert predict(server, "b") == (200, {"predictions": [2.5]})


def test_warmup_runs_before_a_version_serves_and_a_failing_warmup_fails_the_load(
        setup, make_version):
    from saved_models import write_warmup_requests

    root, server, stub = setup
    v2 = make_version(root / "staging_a2", 2, "hp2_v2")
    write_warmup_requests(v2, "a", [1.0, 2.0, 3.0])
    v2.rename(root / "a" / "2")
    wait_until(lambda: predict(server, "a") == (200, {"predictions": [3.5]}), 20,
               what="version 2 of a")
    assert "Number of warmup records read: 3." in server.output
    assert server.output.index("Number of warmup records read: 3.") < \
        server.output.index("Successfully loaded servable version {name: a version: 2}")

    v3 = make_version(root / "staging_a3", 3, "hp2_v1")
    write_warmup_requests(v3, "a", [1.0], input_name="not_an_input")
    v3.rename(root / "a" / "3")

    def failed():
        s = statuses(stub, "a").get(3)
        return s if s and s[0] == END and s[1] != 0 else None
    state, code, message = wait_until(failed, 20, what="version 3 failed")
    assert "not_an_input" in message
    assert statuses(stub, "a")[2] == (AVAILABLE, 0, "")
    assert predict(server, "a") == (200, {"predictions": [3.5]})
    r = requests.get(f"{server.rest_url}/v1/models/a/versions/3", timeout=10).json()
    assert r["model_version_status"][0]["state"] == "END"
    assert r["model_version_status"][0]["status"]["error_code"] == "INVALID_ARGUMENT"


def test_a_config_file_that_is_not_utf8_never_stops_the_poller(setup):
    """Non-UTF-8 bytes used to kill the poller thread: later valid changes never applied."""
    root, server, stub = setup
    (root / "models.config").write_bytes(b"model_config_list { config { name: '\xff\xfe' } }")
    server.wait_for_log("not UTF-8 text")
    assert predict(server, "a") == (200, {"predictions": [2.5]})
    (root / "models.config").write_text(model_config(root, ("a", ""), ("b", "")))
    wait_until(lambda: predict(server, "b")[0] == 200, 20, what="b served after a valid file")


def test_an_empty_config_file_keeps_the_models_as_tf_serving_does(setup):
    """TF Serving refuses to go from a model list to no config; `model_config_list {}`,
    an explicit empty list, does unload every model."""
    root, server, stub = setup
    (root / "models.config").write_text("")
    server.wait_for_log("Cannot transition to requested config. It is only legal to "
                        "transition from one ModelConfigList to another.")
    assert predict(server, "a") == (200, {"predictions": [2.5]})
    with pytest.raises(grpc.RpcError) as e:  # the RPC refuses it before ServerCore sees it
        stub.HandleReloadConfigRequest(model_management_pb2.ReloadConfigRequest(), timeout=60)
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert e.value.details() == ("ServerModelConfig type not supported by "
                                 "HandleReloadConfigRequest. Only ModelConfigList is currently "
                                 "supported")
    (root / "models.config").write_text("model_config_list {}")
    wait_until(lambda: predict(server, "a")[0] == 404, 20, what="a unloaded by an empty list")
