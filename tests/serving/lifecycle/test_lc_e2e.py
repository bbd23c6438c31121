"""The serving lifecycle contract, end to end, for both backends (docker and process).

Docker runs against a real Docker Engine with the official image when present, else the
stand-in built by `make serving-image`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import requests

import lc_support
from lc_support import EXPECTED_Y, MODEL, ContinuousClient, push, push_broken
from serving import lifecycle, rollouts
from serving.lifecycle import health, rollout
from toolkit_testing import free_port, test_image

pytestmark = pytest.mark.e2e

POLL_SECONDS = 1.0  # the serve fixture's --file_system_poll / config poll interval


def test_health_passes_only_once_version_1_is_available(serve, repo, templates):
    push(repo, templates[1])
    serve(wait_seconds=0)  # return at once: the server is still starting
    seen_unhealthy = False
    deadline = time.monotonic() + 180
    while True:
        report = lifecycle.status(serve.state_dir)
        # Health is exactly "version 1 AVAILABLE", whatever the port does meanwhile.
        assert report.models[0].expected_version == 1
        assert report.healthy == report.models[0].status.is_available(1)
        if not report.healthy:
            seen_unhealthy = True
            assert report.to_json()["models"][0]["healthy"] is False
        else:
            break
        assert time.monotonic() < deadline, report.to_text()
        time.sleep(0.1)
    assert seen_unhealthy, "status was healthy before the server could have loaded v1"
    assert lifecycle.status(serve.state_dir).models[0].status.available() == [1]
    assert lifecycle.sample_prediction(MODEL, [1.0], serve.state_dir) == {"predictions": [2.5]}


def test_promote_of_version_2_is_served_with_no_failed_request(serve, repo, templates):
    """A version published into the repository is not served until it is promoted; the
    promote (load, label, unload) fails no request."""
    push(repo, templates[1])
    state = serve()
    with ContinuousClient(state.addresses.rest_url) as client:
        client.wait_for(EXPECTED_Y[1], 30)
        version, _ = push(repo, templates[2])
        assert version == 2
        time.sleep(2.5 * POLL_SECONDS)  # several file-system polls: v2 stays unloaded
        assert lifecycle.status(serve.state_dir).models[0].status.available() == [1]
        assert set(client.values()) == {EXPECTED_Y[1]}, "v2 was served before its promote"
        started = time.monotonic()
        change = rollout.promote(MODEL, 2, repo, serve.state_dir, timeout=120)
        promoted_in = time.monotonic() - started
        assert change.verified == {"stable": 2, "previous": 1}
        client.wait_for(EXPECTED_Y[2], 30)
        time.sleep(0.5)  # keep sending after the switch
    print(f"\n[{state.backend}] promote: {promoted_in:.2f}s, {len(client.results)} requests")
    assert client.failures == []
    assert set(client.values()) <= {EXPECTED_Y[1], EXPECTED_Y[2]}
    assert client.values()[-1] == EXPECTED_Y[2]
    assert lifecycle.sample_prediction(MODEL, [1.0], serve.state_dir) == {"predictions": [3.5]}
    # One prediction with an instance built from the signature (x = 0.0 -> y = bias = 3.0).
    assert lifecycle.sample_prediction(MODEL, None, serve.state_dir) == {"predictions": [3.0]}
    assert lifecycle.status(serve.state_dir).models[0].expected_version == 2


def test_broken_version_3_keeps_version_2_serving(serve, repo, templates):
    push(repo, templates[1])
    push(repo, templates[2])
    state = serve()  # no record yet: the newest published version (2) is adopted as stable
    with ContinuousClient(state.addresses.rest_url) as client:
        client.wait_for(EXPECTED_Y[2], 30)
        assert push_broken(repo) == 3
        with pytest.raises(lifecycle.VersionFailed) as failed:
            rollout.promote(MODEL, 3, repo, serve.state_dir, timeout=120)
        time.sleep(0.5)
    assert "version 3 failed to load" in str(failed.value)
    assert "log lines" in str(failed.value.details)  # the server's last log lines come with it
    assert client.failures == []
    assert set(client.values()) == {EXPECTED_Y[2]}
    record = rollouts.load(repo / MODEL, MODEL)
    assert (record.stable, record.previous) == (2, None), "a failed promote changed the record"
    report = lifecycle.status(serve.state_dir)
    model = report.models[0]
    assert model.status.available() == [2] and model.expected_version == 2
    assert report.healthy  # the server went back to what it served before
    assert "versions: 3" not in Path(state.model_config_path).read_text()


def test_rollback_to_version_1_without_restart(serve, repo, templates):
    push(repo, templates[1])
    state = serve()
    push(repo, templates[2])
    rollout.promote(MODEL, 2, repo, serve.state_dir, timeout=120)
    before = _identity(state)
    with ContinuousClient(state.addresses.rest_url) as client:
        client.wait_for(EXPECTED_Y[2], 30)
        change = rollout.rollback(MODEL, repo, state_dir=serve.state_dir, timeout=120)
        assert change.record.stable == 1 and change.verified == {"stable": 1}
        client.wait_for(EXPECTED_Y[1], 30)
        time.sleep(0.5)
    assert client.failures == []
    assert lifecycle.sample_prediction(MODEL, [1.0], serve.state_dir) == {"predictions": [2.5]}
    report = lifecycle.status(serve.state_dir)
    assert report.healthy and report.models[0].expected_version == 1
    assert report.models[0].status.available() == [1]
    assert _identity(lifecycle.current(serve.state_dir)) == before  # same server, no restart
    # Forward again: version 2 was stable before, so promote serves it again.
    assert rollout.promote(MODEL, 2, repo, serve.state_dir).verified == \
        {"stable": 2, "previous": 1}
    assert lifecycle.status(serve.state_dir).models[0].status.available() == [1, 2]


def test_several_models_share_one_server(serve, repo, templates):
    """mnist and half_plus_two from one server, through a generated models.config."""
    push(repo, templates[1])
    push(repo, templates["mnist"], model="mnist")
    state = serve(models=("mnist", MODEL))
    assert state.model_config_path
    report = lifecycle.status(serve.state_dir)
    assert report.healthy and [m.model for m in report.models] == ["mnist", MODEL]
    # With no instances given, one is built from the signature: 784 zeros -> 10 scores.
    scores = lifecycle.sample_prediction("mnist", None, serve.state_dir)["predictions"][0]
    assert len(scores) == 10 and abs(sum(scores) - 1.0) < 1e-4
    assert lifecycle.sample_prediction(MODEL, [1.0], serve.state_dir) == {"predictions": [2.5]}
    # Promote and rollback with a polled models.config: the file and the running server
    # agree, the next polls of the file keep version 1, and mnist is untouched.
    push(repo, templates[2])
    rollout.promote(MODEL, 2, repo, serve.state_dir, timeout=120)
    rollout.rollback(MODEL, repo, state_dir=serve.state_dir, timeout=120)
    assert "versions: 1\n" in Path(state.model_config_path).read_text()
    assert "versions: 2\n" not in Path(state.model_config_path).read_text()
    time.sleep(2.5 * POLL_SECONDS)
    assert lifecycle.status(serve.state_dir).models[1].status.available() == [1]
    assert lifecycle.status(serve.state_dir).models[0].status.available() == [1]
    assert lifecycle.sample_prediction(MODEL, [1.0], serve.state_dir) == {"predictions": [2.5]}
    if state.backend == "docker":  # the repository (and the config) are mounted read-only
        import docker
        mounts = docker.from_env().containers.get(state.handle).attrs["Mounts"]
        assert {m["Destination"] for m in mounts} == {"/models", "/serving_config"}
        assert all(m["RW"] is False for m in mounts)


def test_cli_round_trip(backend, repo, templates, tmp_path):
    """The CLI in separate processes, finding the server through the state dir."""
    push(repo, templates[1])
    state_dir = str(tmp_path / "cli_state")
    cli = _cli(state_dir)
    try:
        r = cli("up", "--repository", str(repo), "--model", MODEL, "--backend", backend,
                "--image", test_image(), "--grpc-port", "0", "--rest-port", "0",
                "--json", "--", "--file_system_poll_wait_seconds=1")
        assert r.returncode == 0, r.stderr
        assert json.loads(r.stdout)["backend"] == backend
        r = cli("status", "--json")
        assert r.returncode == 0, r.stdout + r.stderr
        report = json.loads(r.stdout)
        assert report["healthy"] and report["models"][0]["serving"] == [1]
        assert report["addresses"]["rest_url"].startswith("http://127.0.0.1:")
        assert cli("wait", "--model", MODEL, "--version", "1", "--timeout", "30").returncode == 0
        r = cli("wait", "--model", MODEL, "--version", "7", "--timeout", "1")
        assert r.returncode == 1 and "not AVAILABLE" in r.stderr and "log lines" in r.stderr
        assert "half_plus_two" in cli("logs", "--tail", "50").stdout
        r = cli("predict", "--model", MODEL)
        assert json.loads(r.stdout) == {"predictions": [2.0]}, r.stderr
        assert cli("down").returncode == 0
        assert cli("status").returncode == 4
    finally:
        lifecycle.down(Path(state_dir), timeout=10)


def test_up_fails_with_the_servers_own_error(serve, repo, templates):
    push(repo, templates[1])
    with pytest.raises(lifecycle.ServerExited) as exited:
        serve(extra_args=("--no_such_flag=1",))
    assert "no_such_flag" in exited.value.details  # the server's log comes with the error
    assert lifecycle.state.load(serve.state_dir) is None  # and nothing is left running


def test_down_leaves_nothing_behind(serve, repo, templates):
    push(repo, templates[1])
    state = serve()
    assert lifecycle.down(serve.state_dir) is True
    _assert_gone(state)
    assert lifecycle.down(serve.state_dir) is False  # idempotent


def test_up_again_at_once_on_the_same_ports_after_traffic(serve, repo, templates):
    """serve, a few hundred requests, down, up at once: the stopped server's connections
    in TIME_WAIT must not make `up` say the port is in use."""
    push(repo, templates[1])
    ports = dict(grpc_port=free_port(), rest_port=free_port())
    state = serve(**ports)
    with requests.Session() as session:
        url = f"{state.addresses.rest_url}/v1/models/{MODEL}:predict"
        for _ in range(300):
            assert session.post(url, json={"instances": [1.0]}, timeout=30).status_code == 200
    assert lifecycle.down(serve.state_dir) is True
    again = serve(**ports)
    assert (again.addresses.grpc_port, again.addresses.rest_port) == \
        (ports["grpc_port"], ports["rest_port"])


def test_fixture_cleans_up_after_a_test_that_fails_midway(backend, repo, templates, tmp_path):
    """A test that fails after `up` must still leave no server behind."""
    inner = tmp_path / "inner"
    inner.mkdir()
    here = Path(__file__).parent
    (inner / "conftest.py").write_text((here / "conftest.py").read_text())
    (inner / "test_fails_midway.py").write_text(textwrap.dedent(f"""
        import json
        from pathlib import Path

        import lc_support

        def test_fails(serve, repo):
            lc_support.push(repo, Path({str(templates[1])!r}))
            state = serve()
            Path({str(tmp_path / "inner_state.json")!r}).write_text(json.dumps(state.to_json()))
            assert False, "failing on purpose, midway"
    """))
    tests = here.parents[1]  # toolkit_testing, saved_models
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(here), str(tests), str(Path.cwd()),
                                                       os.environ.get("PYTHONPATH", "")]))
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--rootdir", str(inner),
         "-o", "addopts=", "-k", backend, str(inner)],
        cwd=inner, env=env, capture_output=True, text=True, timeout=600)
    assert "1 failed" in result.stdout, result.stdout + result.stderr
    recorded = json.loads((tmp_path / "inner_state.json").read_text())
    inner_state = lifecycle.state.ServerState.from_json(recorded)
    _assert_gone(inner_state)


def _cli(state_dir: str):
    def run(*args):
        return subprocess.run([sys.executable, "-m", "serving", *args, "--state-dir", state_dir]
                              if "--" not in args else
                              [sys.executable, "-m", "serving", *args[:args.index("--")],
                               "--state-dir", state_dir, *args[args.index("--"):]],
                              capture_output=True, text=True, timeout=300)
    return run


def _identity(state):
    if state.backend == "docker":
        import docker
        c = docker.from_env().containers.get(state.handle)
        return state.handle, c.attrs["State"]["StartedAt"], c.attrs["RestartCount"]
    return state.handle, lc_support.pid_alive(int(state.handle))


def _assert_gone(state):
    if state.backend == "docker":
        import docker
        from docker.errors import NotFound
        with pytest.raises(NotFound):
            docker.from_env().containers.get(state.handle)
        assert lc_support.labelled_containers(Path(state.state_dir)) == []
    else:
        deadline = time.monotonic() + 15
        while lc_support.pid_alive(int(state.handle)) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not lc_support.pid_alive(int(state.handle))
    assert health.get_model_status(state.addresses.rest_url, MODEL, timeout=2).error
