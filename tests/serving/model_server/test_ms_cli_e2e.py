"""The command line: flags, config errors, waiting for a first version, SIGTERM draining."""

from __future__ import annotations

import shutil
import subprocess
import sys
import threading

import grpc
import pytest
import requests
import tensorflow as tf
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

from toolkit_testing import ROOT, run_script, wait_until

pytestmark = pytest.mark.e2e


def run_cli(*flags, timeout=60):
    return subprocess.run([sys.executable, "-m", "serving.model_server", *flags], cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout)


def test_unknown_flag_exits_2_with_a_clear_error():
    r = run_cli("--model_base_path=/tmp/x", "--no_such_flag=1")
    assert r.returncode == 2
    assert "unrecognized arguments: --no_such_flag=1" in r.stderr


def test_unsupported_tensorflow_model_server_flag_is_named():
    r = run_cli("--model_base_path=/tmp/x", "--ssl_config_file=/tmp/ssl")
    assert r.returncode == 2
    assert "--ssl_config_file" in r.stderr and "not supported" in r.stderr


def test_flag_defaults_match_tensorflow_model_server():
    from serving.model_server.__main__ import parse_config

    c = parse_config(["--model_base_path=/m"])
    assert (c.port, c.rest_api_port, c.rest_api_timeout_in_ms, c.model_name) == \
        (8500, 0, 30000, "default")
    assert (c.file_system_poll_wait_seconds, c.model_config_file_poll_wait_seconds) == (1, 0)
    assert (c.enable_batching, c.enable_model_warmup) == (False, True)
    assert (c.saved_model_tags, c.enable_signature_method_name_check) == ("serve", False)
    c = parse_config(["--enable_batching", "--enable_model_warmup=false", "--port", "9000",
                      "--enable_signature_method_name_check"])
    assert (c.enable_batching, c.enable_model_warmup, c.port) == (True, False, 9000)
    assert c.enable_signature_method_name_check


@pytest.mark.parametrize("text,message", [
    ("model_config_list { config { name: 'a' base_path: '/x' }",
     "Error parsing text-format tensorflow.serving.ModelServerConfig"),
    ("model_config_list { config { name: 'a' base_path: '/x' } "
     "config { name: 'a' base_path: '/y' } }",
     "Illegal to list model a multiple times in config list"),
    ("model_config_list { config { name: 'a' } }", "base_path is empty"),
    ("model_config_list { config { name: 'a' base_path: '/x' model_platform: 'pytorch' } }",
     "model_platform 'pytorch' is not supported"),
])
def test_bad_model_config_file_names_the_problem(tmp_path, text, message):
    (tmp_path / "models.config").write_text(text)
    r = run_cli(f"--model_config_file={tmp_path}/models.config")
    assert r.returncode == 1
    assert message in r.stderr
    assert str(tmp_path / "models.config") in r.stderr


def test_bad_batching_file_names_the_problem(tmp_path):
    (tmp_path / "b.config").write_text("max_batch_size { value: 8 } allowed_batch_sizes: 4")
    r = run_cli("--model_base_path=/tmp/x", "--enable_batching",
                f"--batching_parameters_file={tmp_path}/b.config")
    assert r.returncode == 1
    assert "final entry must equal max_batch_size" in r.stderr


def test_missing_base_path_waits_for_the_first_version(tmp_path, start_server, publish):
    server = start_server(f"--model_base_path={tmp_path}/hp2", "--model_name=hp2",
                          "--file_system_poll_wait_seconds=0.2", wait=False)
    server.wait_for_log("Could not find base path")
    server.wait_for_log("Waiting for the first version of model hp2")
    (tmp_path / "hp2").mkdir()
    server.wait_for_log("No versions of servable hp2 found under base path")
    assert server.proc.poll() is None
    publish(tmp_path, "hp2")
    server.wait_ready()
    r = requests.post(f"{server.rest_url}/v1/models/hp2:predict",
                      json={"instances": [1.0, 2.0, 5.0]}, timeout=10)
    assert r.json() == {"predictions": [2.5, 3.0, 4.5]}
    server.wait_for_log("Successfully loaded servable version {name: hp2 version: 1}")


def test_sigterm_while_waiting_for_a_first_version_exits_0(tmp_path, start_server):
    server = start_server(f"--model_base_path={tmp_path}", "--file_system_poll_wait_seconds=0.2",
                          wait=False)
    server.wait_for_log("No versions of servable default found")
    assert server.stop() == 0


def test_model_that_cannot_load_fails_startup(tmp_path, start_server):
    from saved_models import write_broken_version

    write_broken_version(tmp_path / "1")
    server = start_server(f"--model_base_path={tmp_path}", wait=False)
    assert server.proc.wait(60) == 1
    assert "Failed to start server" in server.output
    assert "{name: default version: 1}" in server.output


def test_only_version_without_variables_fails_startup_saying_so(tmp_path, start_server,
                                                                model_templates):
    """saved_model.pb and no variables/: not a wait forever with a hint about naming the
    version directory, but the loader's account of what is missing, and exit 1."""
    (tmp_path / "1").mkdir()
    shutil.copy(model_templates / "hp2_v1" / "saved_model.pb", tmp_path / "1")
    server = start_server(f"--model_base_path={tmp_path}", "--file_system_poll_wait_seconds=0.2",
                          wait=False)
    assert server.proc.wait(90) == 1
    assert "has no variables/ directory, but its graph has variables to restore" in \
        server.output
    assert "Did you forget to name your leaf directory" not in server.output


def test_saved_model_tags_that_match_no_meta_graph_fail_startup(tmp_path, start_server,
                                                                make_version):
    make_version(tmp_path, 1)
    server = start_server(f"--model_base_path={tmp_path}", "--saved_model_tags=serve,gpu",
                          wait=False)
    assert server.proc.wait(90) == 1
    assert "Could not find meta graph def matching supplied tags: { gpu serve }" in \
        server.output


@pytest.mark.parametrize("workers", [0, 2], ids=["in-process", "2-workers"])
def test_sigterm_drains_in_flight_requests_then_exits_0(tmp_path, start_server, make_version,
                                                        workers):
    """Requests parked in a 3 s batching window when SIGTERM arrives still get answers
    (with front-end workers: the workers drain first, the model process answers them)."""
    make_version(tmp_path / "hp2", 1)
    (tmp_path / "batching.config").write_text(
        "max_batch_size { value: 100 } batch_timeout_micros { value: 3000000 } "
        "num_batch_threads { value: 1 }")
    (tmp_path / "monitoring.config").write_text("prometheus_config { enable: true }")
    server = start_server(f"--model_base_path={tmp_path}/hp2", "--model_name=hp2",
                          "--enable_batching",
                          f"--batching_parameters_file={tmp_path}/batching.config",
                          f"--monitoring_config_file={tmp_path}/monitoring.config",
                          f"--front_end_workers={workers}")
    results = {}

    def rest_call():
        r = requests.post(f"{server.rest_url}/v1/models/hp2:predict",
                          json={"instances": [1.0]}, timeout=30)
        results["rest"] = (r.status_code, r.json())

    def grpc_call():
        with grpc.insecure_channel(server.grpc_target) as channel:
            req = predict_pb2.PredictRequest()
            req.model_spec.name = "hp2"
            req.inputs["x"].CopyFrom(tf.make_tensor_proto([2.0], dtype=tf.float32))
            resp = prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict(
                req, timeout=30)
            results["grpc"] = list(resp.outputs["y"].float_val)

    threads = [threading.Thread(target=f) for f in (rest_call, grpc_call)]
    for t in threads:
        t.start()

    def inflight():
        text = requests.get(f"{server.rest_url}/monitoring/prometheus/metrics", timeout=5).text
        line = next(ln for ln in text.splitlines()
                    if ln.startswith(":tensorflow:serving:inflight_requests "))
        return float(line.split()[1]) >= 2
    wait_until(inflight, 20, what="two requests in flight")
    assert server.stop() == 0
    for t in threads:
        t.join(30)
    assert results == {"rest": (200, {"predictions": [2.5]}), "grpc": [3.0]}
    assert "Shutting down: draining in-flight requests" in server.output


def test_version_flag():
    r = run_cli("--version")
    assert r.returncode == 0
    assert "TensorFlow ModelServer" in r.stdout and tf.__version__ in r.stdout


_FROZEN = """
import gc
import tensorflow as tf
from serving.model_server import __main__ as entry
import serving.model_server.server
gc.collect()
before = len(gc.get_objects())
entry.freeze_imports()
tracked = {id(o) for o in gc.get_objects()}
later = [[]]  # made after the freeze: the collector still walks it
print(before, len(tracked), id(tf.constant) in tracked, id(later) in {id(o) for o in gc.get_objects()})
"""


def test_the_imports_are_frozen_out_of_the_collectors_full_passes():
    """What the model server's imports leave (TensorFlow's heap) is out of reach of the
    garbage collector's full passes, and what is made later is not (a version's graph
    cycles are still collected when it unloads). In a process of its own: gc.freeze is
    process-wide."""
    result = run_script(_FROZEN)
    assert result.returncode == 0, result.stderr[-2000:]
    out = result.stdout.split()
    before, after = int(out[0]), int(out[1])
    assert before > 100_000 and after < before / 100, out
    assert out[2:] == ["False", "True"], out
