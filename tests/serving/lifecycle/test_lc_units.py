"""Fast checks of the lifecycle's pieces and the CLI's errors and exit codes (no server)."""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from serving.__main__ import main, split_extra
from serving.lifecycle import api, backends, health, model_config, state as state_store
from serving.lifecycle.config import Addresses, UpConfig
from serving import rollouts
from serving.lifecycle.errors import (EXIT_ENVIRONMENT, EXIT_FAILED, EXIT_NOT_RUNNING,
                                      EXIT_USAGE)
from serving.lifecycle.process_backend import ProcessBackend
from serving.lifecycle.report import ModelReport
from serving.rollouts import Rollout
from toolkit_testing import require_docker, test_image

ROOT = Path(__file__).resolve().parents[3]


def cli(*args, cwd=ROOT):
    return subprocess.run([sys.executable, "-m", "serving", *args], cwd=cwd, text=True,
                          capture_output=True, timeout=120,
                          env=dict(os.environ, PYTHONPATH=str(ROOT)))


def fake_model(repo: Path, model: str = "half_plus_two", version: int = 1) -> None:
    path = repo / model / str(version)
    (path / "variables").mkdir(parents=True)
    (path / "saved_model.pb").write_bytes(b"graph")


class _FakeServing(BaseHTTPRequestHandler):
    body = {}

    def do_GET(self):  # noqa: N802 - http.server's naming
        data = json.dumps(self.server.body).encode()
        self.send_response(self.server.code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


@pytest.fixture
def fake_rest():
    """A REST endpoint on 127.0.0.1 whose /v1/models answer the test sets."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _FakeServing)
    server.code, server.body = 200, {}
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server
    server.shutdown()
    server.server_close()


def _status(version, state, code="OK", message=""):
    return {"version": str(version), "state": state,
            "status": {"error_code": code, "error_message": message}}


def test_open_port_is_not_health(fake_rest):
    url = f"http://127.0.0.1:{fake_rest.server_address[1]}"
    fake_rest.body = {"model_version_status": [_status(1, "LOADING")]}
    report = ModelReport("m", 1, health.get_model_status(url, "m"))
    assert not report.healthy
    fake_rest.body = {"model_version_status": [_status(1, "AVAILABLE")]}
    assert ModelReport("m", 1, health.get_model_status(url, "m")).healthy
    assert not ModelReport("m", 2, health.get_model_status(url, "m")).healthy
    fake_rest.code, fake_rest.body = 404, {"error": "Servable not found"}
    st = health.get_model_status(url, "m")
    assert "404" in st.error and not ModelReport("m", 1, st).healthy


def test_failed_version_carries_the_servers_error():
    st = health.parse_model_status("m", {"model_version_status": [
        _status(2, "AVAILABLE"), _status(3, "END", "DATA_LOSS", "Could not parse saved_model.pb")]})
    assert st.available() == [2]
    assert st.version(3).failed and "parse" in st.version(3).error_message
    assert not st.version(2).failed


def test_no_server_answering_is_an_error_not_an_exception():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, not listening
        st = health.get_model_status(f"http://127.0.0.1:{port}", "m", timeout=1)
    assert st.error and st.versions == ()


def test_model_config_serves_the_recorded_stable_and_leaves_a_waiting_model_out():
    from google.protobuf import text_format
    from tensorflow_serving.config import model_server_config_pb2

    record = Rollout(model="b", stable=3, previous=2)
    text = model_config.render({"a": "/models/a", "b": "/models/b"}, {"b": record}, ["a", "b"])
    parsed = text_format.Parse(text, model_server_config_pb2.ModelServerConfig())
    [b] = parsed.model_config_list.config  # "a" has nothing stable: no entry to wait on
    assert (b.name, b.base_path, b.model_platform) == ("b", "/models/b", "tensorflow")
    assert list(b.model_version_policy.specific.versions) == [2, 3]
    assert dict(b.version_labels) == {"stable": 3, "previous": 2}


def test_server_args_append_extra_flags_last(tmp_path):
    cfg = UpConfig(repository=tmp_path, models=("a", "b"), extra_args=("--enable_batching",),
                   config_poll_seconds=5, file_system_poll_seconds=1)
    args = api._server_args(cfg, ProcessBackend(), tmp_path / "models.config")
    assert args[0] == "--file_system_poll_wait_seconds=1"
    assert "--max_num_load_retries=0" in args  # a broken push fails now, on either backend
    assert f"--model_config_file={tmp_path / 'models.config'}" in args
    assert "--model_config_file_poll_wait_seconds=5" in args
    assert args[-1] == "--enable_batching"


def test_state_round_trip(tmp_path):
    s = state_store.ServerState(
        backend="docker", handle="abc", name="n", image="img", repository="/r", models=("a",),
        addresses=Addresses("127.0.0.1", 1, 2), state_dir=str(tmp_path),
        base_paths={"a": "/r/a"})
    state_store.save(s)
    assert state_store.load(tmp_path) == s
    state_store.clear(tmp_path)
    assert state_store.load(tmp_path) is None


def test_split_extra():
    assert split_extra(["up", "--model", "a", "--", "--x=1", "--y"]) == (
        ["up", "--model", "a"], ("--x=1", "--y"))
    assert split_extra(["status"]) == (["status"], ())


def test_auto_falls_back_to_process_and_says_why(tmp_path, caplog):
    cfg = UpConfig(repository=tmp_path, models=("a",), backend="auto",
                   docker_url=f"unix://{tmp_path}/no-daemon.sock")
    with caplog.at_level(logging.INFO, logger="serving.lifecycle"):
        chosen = backends.choose(cfg)
    assert chosen.name == "process"
    assert "backend auto -> process" in caplog.text and "does not answer" in caplog.text


def test_cli_help_and_usage_errors():
    assert cli("--help").returncode == 0
    for sub in ("up", "status", "wait", "logs", "down", "promote", "rollback", "hold",
                "release", "versions", "predict"):
        r = cli(sub, "--help")
        assert r.returncode == 0, (sub, r.stderr)
    assert "exit codes" in cli("--help").stdout
    assert cli("up", "--repository", ".").returncode == EXIT_USAGE  # --model missing
    assert cli("up", "--repository", ".", "--model", "a", "--backend", "k8s").returncode == 2
    assert cli("rollback", "--model", "a", "--to", "one").returncode == EXIT_USAGE
    assert cli("status", "--", "--x").returncode == EXIT_USAGE


def test_cli_repository_that_cannot_be_created(tmp_path):
    """A missing repository is created (a model's first version may come later); one that
    cannot be is an environment problem, reported before anything starts."""
    (tmp_path / "file").write_text("")
    r = cli("up", "--repository", str(tmp_path / "file" / "repository"), "--model", "a",
            "--backend", "process", "--state-dir", str(tmp_path / "s"))
    assert r.returncode == EXIT_ENVIRONMENT, r.stderr
    assert "cannot create the model repository" in r.stderr and "Next step:" in r.stderr
    assert not (tmp_path / "s" / "server.json").exists()


def test_cli_nothing_running(tmp_path):
    for args in (["status"], ["wait", "--model", "a", "--timeout", "1"], ["logs"]):
        r = cli(*args, "--state-dir", str(tmp_path))
        assert r.returncode == EXIT_NOT_RUNNING, (args, r.stderr)
        assert "no server recorded" in r.stderr
    r = cli("down", "--state-dir", str(tmp_path))
    assert r.returncode == 0 and "nothing was running" in r.stdout


def test_cli_rollback_with_no_server_changes_only_the_record(tmp_path):
    """The rollout commands need no server: the record lives with the repository. A model
    the repository lacks is a failed operation (exit 1) that names the models there."""
    repo, state_dir = tmp_path / "repo", tmp_path / "state"
    r = cli("rollback", "--model", "a", "--to", "1", "--repository", str(repo.parent),
            "--state-dir", str(state_dir))
    assert r.returncode == EXIT_FAILED, r.stderr
    assert "no model 'a'" in r.stderr and "Next step:" in r.stderr
    fake_model(repo, "a", 1)
    fake_model(repo, "a", 2)
    with rollouts.update(repo / "a", "a") as record:
        record.make_stable(1, verified=True)
        record.make_stable(2, verified=True)
    r = cli("rollback", "--model", "a", "--repository", str(repo), "--state-dir",
            str(state_dir))
    assert r.returncode == 0, r.stderr
    assert "rolled back to version 1 (no server is up: `up` serves it)" in r.stdout
    after = rollouts.load(repo / "a", "a")
    assert (after.stable, after.previous, after.events[-1]["action"]) == (1, None, "rollback")
    assert sorted(p.name for p in (repo / "a").iterdir() if not p.name.startswith(".")) == \
        ["1", "2"]  # nothing moved in the repository
    assert not state_dir.exists()  # and no server was started or recorded
    r = cli("rollback", "--model", "a", "--repository", str(repo), "--state-dir",
            str(state_dir))
    assert r.returncode == EXIT_FAILED and "no previous stable version" in r.stderr


def test_cli_damaged_rollout_record_is_an_error_not_a_traceback(tmp_path, capsys):
    """A .rollout.json broken by a hand edit: every rollout command says which file and what
    to do, on one line of error, and exits 1; nothing is rewritten."""
    repo = tmp_path / "repo"
    fake_model(repo, "a", 1)
    damaged = '{"format": 1, "model": "a", "stable": 1,'
    (repo / "a" / rollouts.RECORD_FILE).write_text(damaged)
    for args in (["hold", "--reason", "x"], ["release"], ["rollback"], ["versions"],
                 ["promote", "--version", "1"]):
        capsys.readouterr()
        code = main([args[0], "--model", "a", *args[1:], "--repository", str(repo),
                     "--state-dir", str(tmp_path / "state")])
        err = capsys.readouterr().err
        assert code == EXIT_FAILED, (args, err)
        assert err.startswith(f"error: the rollout record {repo / 'a' / rollouts.RECORD_FILE} "
                              f"cannot be read") and "Traceback" not in err, (args, err)
    assert (repo / "a" / rollouts.RECORD_FILE).read_text() == damaged


def test_port_with_only_time_wait_connections_is_free_but_a_listener_is_not():
    """A stopped server leaves its accepted connections in TIME_WAIT (it closed them first);
    `up` at once on the same port must not call that port "in use"."""
    from serving.lifecycle.errors import EnvironmentProblem
    from serving.lifecycle.ports import HOST, ensure_free

    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind((HOST, 0))
    listener.listen()
    port = listener.getsockname()[1]
    clients = [socket.create_connection((HOST, port)) for _ in range(3)]
    with pytest.raises(EnvironmentProblem, match=f"port {port} is already in use"):
        ensure_free(port, "--rest-port")
    for _ in clients:
        conn, _ = listener.accept()
        conn.close()  # the server side closes first: its end goes to TIME_WAIT
    listener.close()
    for c in clients:
        c.close()
    local_states = [line.split()[3] for line in Path("/proc/net/tcp").read_text().splitlines()[1:]
                    if int(line.split()[1].split(":")[1], 16) == port]
    assert "06" in local_states  # TCP_TIME_WAIT: what made the old check say "in use"
    ensure_free(port, "--rest-port")


@pytest.mark.parametrize("which", ["--rest-port", "--grpc-port"])
@pytest.mark.parametrize("backend", ["process", "docker"])
def test_cli_port_taken(tmp_path, which, backend, pytestconfig):
    if backend == "docker":
        require_docker(pytestconfig)
    fake_model(tmp_path / "repo")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        r = cli("up", "--repository", str(tmp_path / "repo"), "--model", "half_plus_two",
                "--backend", backend, "--image", test_image(), which, str(port),
                "--state-dir", str(tmp_path / "s"))
    assert r.returncode == EXIT_ENVIRONMENT, r.stderr
    assert f"port {port} is already in use" in r.stderr and f"{which} 0" in r.stderr
    assert not (tmp_path / "s" / "server.json").exists()


def test_a_push_with_no_server_up_is_promoted_unverified(tmp_path):
    """With no server to verify it on, a pushed candidate becomes stable at once (as a push
    always did) and the record says it was not verified through a server."""
    from pipelines.operations import post_push
    from serving.repository import ModelRepository

    repo = ModelRepository(tmp_path / "repo")
    with repo.publish("half_plus_two", candidate=True) as pub:
        (pub.staging / "variables").mkdir()
        (pub.staging / "saved_model.pb").write_bytes(b"graph")
    deployment = post_push.deploy("half_plus_two", pub.version, repo, tmp_path / "state", 1,
                                  log=lambda *_: None)
    assert (deployment.status, deployment.serving_version) == (post_push.NO_SERVER, 1)
    assert repo.versions("half_plus_two") == [1] and repo.candidates("half_plus_two") == []
    record = rollouts.load(repo.model_dir("half_plus_two"), "half_plus_two")
    assert (record.stable, record.stable_verified) == (1, False)


def test_cli_docker_daemon_not_answering(tmp_path):
    fake_model(tmp_path / "repo")
    r = cli("up", "--repository", str(tmp_path / "repo"), "--model", "half_plus_two",
            "--backend", "docker", "--docker-url", f"unix://{tmp_path}/no-daemon.sock",
            "--state-dir", str(tmp_path / "s"))
    assert r.returncode == EXIT_ENVIRONMENT, r.stderr
    assert "Docker daemon does not answer" in r.stderr and "--backend process" in r.stderr


def test_cli_image_missing(tmp_path, pytestconfig):
    require_docker(pytestconfig, need_image=False)
    fake_model(tmp_path / "repo")
    r = cli("up", "--repository", str(tmp_path / "repo"), "--model", "half_plus_two",
            "--backend", "docker", "--image", "tfx-serving-toolkit/no-such-image:0",
            "--state-dir", str(tmp_path / "s"))
    assert r.returncode == EXIT_ENVIRONMENT, r.stderr
    assert "is not present" in r.stderr and "make serving-image" in r.stderr


def test_status_shows_a_model_with_no_version_as_waiting_and_warns_of_a_fast_model(
        fake_rest, tmp_path):
    from serving import lineage
    from serving.lifecycle.report import ServerReport
    from serving.repository import ModelRepository

    repo = tmp_path / "repo"
    fake_model(repo, "fast_model", 1)
    fake_model(repo, "fast_model", 2)
    lineage.write(repo / "fast_model" / "1", lineage.Lineage(profile="default"))
    lineage.write(repo / "fast_model" / "2", lineage.Lineage(
        run_id="r2", profile="fast", hyperparameters={"epochs": 2}))
    (repo / "new_model").mkdir()
    state = state_store.ServerState(
        backend="process", handle="0", name="n", image="", repository=str(repo),
        models=("fast_model", "new_model"),
        addresses=Addresses("127.0.0.1", 1, fake_rest.server_address[1]),
        state_dir=str(tmp_path / "s"))
    # what `up` does first: no record yet, so the newest published version is stable
    prepared = rollouts.prepare_for_serving(ModelRepository(repo), state.models)
    assert (prepared["fast_model"].stable, prepared["new_model"].stable) == (2, None)
    fake_rest.body = {"model_version_status": [_status(2, "AVAILABLE")]}
    fast = api._model_report(state, "fast_model")
    # TF Serving's answer for a model in its config with no version yet
    fake_rest.code, fake_rest.body = 404, {"error": "Could not find any versions of model "
                                                    "new_model"}
    new = api._model_report(state, "new_model")
    report = ServerReport(state, True, [fast, new])

    assert fast.healthy and not fast.waiting and new.waiting and not new.healthy
    assert report.healthy  # waiting for a first version is not a failure
    warning = ("fast_model version 2 was trained with the fast profile, not the default one "
               "(epochs=2)")
    assert fast.warnings == [warning] and new.warnings == []
    text = report.to_text()
    assert f"new_model: waiting for a first version in {repo / 'new_model'}" in text
    assert f"  WARNING: {warning}" in text and "from run r2, fast profile" in text
    assert "Could not find any versions" not in text
    as_json = report.to_json()
    assert as_json["healthy"] is True
    assert [(m["waiting"], m["healthy"], m["warnings"]) for m in as_json["models"]] == [
        (False, True, [warning]), (True, False, [])]
    assert as_json["models"][1]["base_path"] == str(repo / "new_model")
    # Version 1 (default profile) is not served: nothing to warn about it, nor with no record.
    assert api._profile_warnings(ModelRepository(repo), "fast_model", [1, None]) == []
