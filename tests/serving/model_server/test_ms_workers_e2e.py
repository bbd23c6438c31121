"""--front_end_workers: the front ends in worker processes, one model process behind them.

Every client sees one server: the same answers and errors as the in-process front ends,
one metrics view whichever worker took a connection, and a worker that dies is replaced.
(The version switch under load and the SIGTERM drain run with workers too, in
test_ms_switch_e2e and test_ms_cli_e2e.)
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
from pathlib import Path

import grpc
import pytest
import requests
from tensorflow_serving.apis import (get_model_status_pb2, model_service_pb2_grpc,
                                     prediction_service_pb2_grpc)

from saved_models import predict_request
from toolkit_testing import copy_version, running_servers, wait_until

pytestmark = pytest.mark.e2e

CONFIG = """
model_config_list {
  config {
    name: "half_plus_two" base_path: "%(root)s/half_plus_two" model_platform: "tensorflow"
    model_version_policy { all {} }
    version_labels { key: "stable" value: 1 }
  }
}
"""


@pytest.fixture(scope="module")
def server(model_templates, tmp_path_factory):
    root = tmp_path_factory.mktemp("workers")
    copy_version(model_templates / "hp2_v1", root / "half_plus_two", 1)
    copy_version(model_templates / "hp2_v2", root / "half_plus_two", 2)
    (root / "models.config").write_text(CONFIG % {"root": root})
    (root / "monitoring.config").write_text('prometheus_config { enable: true path: "/m" }')
    with running_servers() as start:
        yield start(f"--model_config_file={root}/models.config", "--front_end_workers=2",
                    f"--monitoring_config_file={root}/monitoring.config")


def workers_of(server):
    out = subprocess.run(["pgrep", "-P", str(server.proc.pid)], capture_output=True, text=True)
    return sorted(int(p) for p in out.stdout.split())


def test_answers_and_errors_are_the_in_process_servers(server):
    url = f"{server.rest_url}/v1/models/half_plus_two"
    assert requests.post(f"{url}:predict", json={"instances": [1.0, 2.0]},
                         timeout=10).json() == {"predictions": [3.5, 4.0]}
    assert requests.post(f"{url}/labels/stable:predict", json={"inputs": {"x": [1.0]}},
                         timeout=10).json() == {"outputs": [2.5]}
    assert requests.post(f"{url}/versions/1:regress", json={
        "signature_name": "regress_x_to_y", "examples": [{"x": 2.0}]}, timeout=10).json() == \
        {"results": [3.0]}
    r = requests.post(f"{url}:predict", json={"signature_name": "nope", "instances": [1.0]},
                      timeout=10)
    assert (r.status_code, r.json()) == (
        400, {"error": 'Serving signature name: "nope" not found in signature def'})
    r = requests.post(f"{url}/versions/9:predict", json={"instances": [1.0]}, timeout=10)
    assert (r.status_code, r.json()) == (
        404, {"error": "Servable not found for request: Specific(half_plus_two, 9)"})
    status = requests.get(url, timeout=10).json()
    assert [s["version"] for s in status["model_version_status"]] == ["2", "1"]
    with grpc.insecure_channel(server.grpc_target) as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        resp = stub.Predict(predict_request(x=[1.0, 2.0]), timeout=10)
        assert list(resp.outputs["y"].float_val) == [3.5, 4.0]
        assert resp.model_spec.version.value == 2
        with pytest.raises(grpc.RpcError) as e:
            stub.Predict(predict_request(x=[1.0], label="nope"), timeout=10)
        assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert e.value.details() == "Unrecognized servable version label: nope"
        req = get_model_status_pb2.GetModelStatusRequest()
        req.model_spec.name = "half_plus_two"
        got = model_service_pb2_grpc.ModelServiceStub(channel).GetModelStatus(req, timeout=10)
        assert [s.version for s in got.model_version_status] == [2, 1]


def test_tensorflows_runtime_is_loaded_in_the_model_process_and_in_no_worker(server):
    """A worker imports TensorFlow's protos only (tf_protos): 65 MB, not 600."""
    def mapped(pid):
        return "libtensorflow_framework" in Path(f"/proc/{pid}/maps").read_text()

    assert mapped(server.proc.pid)
    assert [pid for pid in workers_of(server) if mapped(pid)] == []


def test_one_metrics_view_whichever_worker_answers(server):
    """Requests on 20 fresh connections (spread over the workers by the kernel) all show
    in the one exposition, which any worker serves."""
    def count(text):
        m = re.search(r'request_count_by_entrypoint\{model_name="half_plus_two",API="Predict",'
                      r'entrypoint="REST",status="OK"\} ([0-9]+)', text)
        return float(m.group(1)) if m else 0.0

    before = count(requests.get(server.rest_url + "/m", timeout=10).text)
    for _ in range(20):
        with requests.Session() as s:  # a new connection each time
            assert s.post(f"{server.rest_url}/v1/models/half_plus_two:predict",
                          json={"instances": [1.0]}, timeout=10).status_code == 200
    assert count(requests.get(server.rest_url + "/m", timeout=10).text) == before + 20


def test_a_worker_that_dies_is_replaced_and_the_server_keeps_serving(server):
    server.wait_for_log("Serving through 2 front-end worker processes")  # start finished
    workers = workers_of(server)
    assert len(workers) == 2
    os.kill(workers[0], signal.SIGKILL)
    server.wait_for_log("exited with -9; restarting it")
    wait_until(lambda: len(workers_of(server)) == 2 and workers[0] not in workers_of(server),
               timeout=60, what="a new worker")
    for _ in range(10):
        r = requests.post(f"{server.rest_url}/v1/models/half_plus_two:predict",
                          json={"instances": [1.0]}, timeout=10)
        assert r.json() == {"predictions": [3.5]}
