"""Rollouts on TF Serving's version labels, end to end, on real servers of both backends:
promote and rollback as label moves (REST `/labels/L` and gRPC `ModelSpec.version_label`),
a push deployed as a canary that requests naming no version never reach, a canary that
serves garbage or cannot load and is rejected, an operator's hold, and restarts that come
back with the recorded stable version. One server per test, several checks each.
"""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytest
import requests

import lc_support
from lc_support import (EXPECTED_Y, GARBAGE_Y, MODEL, ManyClients, grpc_predict, push,
                        push_broken, push_candidate, rest_predict, smoke_check_expecting)
from pipelines.operations import post_push
from serving import lifecycle, rollouts
from serving.__main__ import main as serving_main
from serving.lifecycle import health, rollout
from serving.lifecycle.errors import EXIT_NOT_RUNNING, WaitTimeout
from serving.repository import ModelRepository
from toolkit_testing import wait_until

pytestmark = pytest.mark.e2e

CANARY_ENTRY = f"{MODEL}-canary"
TIMEOUT = 120.0


def _no_label(rest_url: str, label: str, model: str = MODEL) -> str:
    """The server's error for a label it does not have (TF Serving: 404 or 400)."""
    r = requests.post(f"{rest_url}/v1/models/{model}/labels/{label}:predict",
                      json={"instances": [1.0]}, timeout=30)
    assert r.status_code in (400, 404), (label, r.status_code, r.text)
    return r.text


def _answers(state, model: str = MODEL) -> dict:
    """y(1.0) per route: unlabelled, and each label the record names, REST and gRPC."""
    rest, grpc_target = state.addresses.rest_url, state.addresses.grpc_target
    labels = rollouts.load(Path(state.repository) / model, model).labels()
    answers = {"rest": rest_predict(rest, model), "grpc": grpc_predict(grpc_target, model)}
    for label in labels:
        answers[f"rest {label}"] = rest_predict(rest, model, label=label)
        answers[f"grpc {label}"] = grpc_predict(grpc_target, model, label=label)
    return answers


def test_promote_then_rollback_move_the_labels(serve, repo, templates, capsys, monkeypatch):
    """labels/stable and labels/previous answer the recorded versions through REST and
    gRPC; a request naming no version gets stable. A retried `rollback --to N` is no
    failure; `predict`'s mistakes are one-line errors with the server's own text."""
    push(repo, templates[1])
    state = serve()
    rest, grpc_target = state.addresses.rest_url, state.addresses.grpc_target
    assert _answers(state) == {"rest": 2.5, "grpc": 2.5, "rest stable": 2.5, "grpc stable": 2.5}
    assert "previous" in _no_label(rest, "previous")

    v2 = push_candidate(repo, templates[2])
    assert v2 == 2 and rest_predict(rest) == EXPECTED_Y[1]  # a candidate is never served
    change = rollout.promote(MODEL, v2, repo, serve.state_dir, TIMEOUT)
    assert change.verified == {"stable": 2, "previous": 1} and change.server == rest
    assert ModelRepository(repo).versions(MODEL) == [1, 2]
    assert _answers(state) == {"rest": 3.5, "grpc": 3.5, "rest stable": 3.5, "grpc stable": 3.5,
                               "rest previous": 2.5, "grpc previous": 2.5}
    assert grpc_predict(grpc_target, version=1) == 2.5  # previous stays loaded below stable
    st = health.get_model_status(rest, MODEL)
    assert st.available() == [1, 2]

    # The rendered config the server polls says the same, in TF Serving's own proto.
    from google.protobuf import text_format
    from tensorflow_serving.config import model_server_config_pb2
    text = open(state.model_config_path).read()
    [entry] = text_format.Parse(text, model_server_config_pb2.ModelServerConfig()
                                ).model_config_list.config
    assert (entry.name, list(entry.model_version_policy.specific.versions),
            dict(entry.version_labels)) == (MODEL, [1, 2], {"stable": 2, "previous": 1})

    change = rollout.rollback(MODEL, repo, state_dir=serve.state_dir, timeout=TIMEOUT)
    assert (change.record.stable, change.record.previous) == (1, None)
    assert change.verified == {"stable": 1}
    assert _answers(state) == {"rest": 2.5, "grpc": 2.5, "rest stable": 2.5, "grpc stable": 2.5}
    _no_label(rest, "previous")  # version 2 was rolled back from: not kept as previous
    assert health.get_model_status(rest, MODEL).available() == [1]
    report = lifecycle.status(serve.state_dir)
    assert report.healthy and report.models[0].expected_version == 1
    assert report.to_json()["models"][0]["labels"] == {"stable": 1}

    # Forward again with --to through the command line, in this process; the same command
    # again (a retry after a timeout) changes nothing and exits 0.
    for changed in (True, False):
        events = len(rollouts.load(repo / MODEL, MODEL).events)
        capsys.readouterr()
        assert serving_main(["rollback", "--model", MODEL, "--to", "2", "--repository",
                             str(repo), "--state-dir", str(serve.state_dir), "--json"]) == 0
        answer = json.loads(capsys.readouterr().out)
        assert (answer["changed"], answer["record"]["stable"]) == (changed, 2)
        assert answer["repository"] == str(repo.absolute())
        assert len(rollouts.load(repo / MODEL, MODEL).events) == events + changed
    assert _answers(state)["rest stable"] == 3.5 and rest_predict(rest) == 3.5

    # predict's mistakes: exit 1 and one line of error (no traceback), the server's text.
    state_dir = str(serve.state_dir)
    for args, expected in (
            (["--model", "half_plus_tow"], "model 'half_plus_tow' is not served"),
            (["--model", MODEL, "--version", "9", "--instances", "[1.0]"],
             "HTTP 404: {\"error\":\"Servable not found for request: Specific(half_plus_two, 9)"),
            (["--model", MODEL, "--label", "canary"], f"`--model {CANARY_ENTRY} --label canary`")):
        capsys.readouterr()
        assert serving_main(["predict", *args, "--state-dir", state_dir]) == 1, args
        err = capsys.readouterr().err
        assert err.startswith("error: ") and expected in err, (args, err)
    assert serving_main(["predict", "--model", MODEL, "--state-dir", state_dir]) == 0
    assert json.loads(capsys.readouterr().out) == health.predict(rest, MODEL, [0.0])  # zeros

    # A promote whose labels are not answered in time after they moved (the last step's
    # check fails): the steps run back, so the server serves what it served, the record is
    # unchanged and the version is a candidate again.
    v3 = push_candidate(repo, templates[1])
    verify, failed = rollout._verify_labels, []

    def verify_failing_once(server, addresses, model, record, deadline, replica=""):
        if not failed:
            failed.append(record.stable)
            raise WaitTimeout("labels not answered (injected)")
        return verify(server, addresses, model, record, deadline, replica)

    monkeypatch.setattr(rollout, "_verify_labels", verify_failing_once)
    with pytest.raises(WaitTimeout, match="injected"):
        rollout.promote(MODEL, v3, repo, serve.state_dir, TIMEOUT)
    assert failed == [v3]
    record = rollouts.load(repo / MODEL, MODEL)
    assert (record.stable, ModelRepository(repo).candidates(MODEL)) == (2, [v3])
    assert _answers(state)["rest stable"] == 3.5 and rest_predict(rest) == 3.5
    assert health.get_model_status(rest, MODEL).available() == [2]


def test_32_clients_through_deploys_and_a_rollback(serve, repo, templates):
    """Under 32 concurrent REST clients: a push deployed as a canary, promoted; a canary
    that serves garbage, rejected; a rollback. No request fails, and a request naming no
    version is answered by the old or the new stable, never by a canary."""
    push(repo, templates[1])
    state = serve()
    rest = state.addresses.rest_url
    repository = ModelRepository(repo)
    smoke_calls = []
    with ManyClients(rest, n=32) as clients:
        clients.wait_for(EXPECTED_Y[1], 60)

        # A good push: candidate 2 is the canary, smoke-checked, then promoted.
        v2 = push_candidate(repo, templates[2])
        deployment = post_push.deploy(MODEL, v2, repository, serve.state_dir, TIMEOUT,
                                      smoke_check_expecting(EXPECTED_Y[2], smoke_calls),
                                      log=lambda *_: None)
        assert (deployment.status, deployment.serving_version) == (post_push.PROMOTED, 2), \
            deployment
        [smoked] = smoke_calls
        assert (smoked["entry"], smoked["label"], smoked["y"]) == (CANARY_ENTRY, "canary", 3.5)
        # Until the smoke check returned, stable had not changed: every answer received
        # by then came from version 1, although version 2 was loaded as the canary.
        assert clients.answers(answered_before=smoked["done"]) == {EXPECTED_Y[1]}, \
            "a request naming no version was answered by the canary before its promotion"
        promoted = time.monotonic()
        clients.wait_for(EXPECTED_Y[2], 60, sent_after=promoted)
        assert clients.answers(sent_after=promoted) == {EXPECTED_Y[2]}

        # A canary that loads and answers garbage: rejected, stable never changes.
        v3 = push_candidate(repo, templates["garbage"])
        before_garbage = time.monotonic()
        deployment = post_push.deploy(MODEL, v3, repository, serve.state_dir, TIMEOUT,
                                      smoke_check_expecting(EXPECTED_Y[2], smoke_calls),
                                      log=lambda *_: None)
        after_garbage = time.monotonic()
        assert (deployment.status, deployment.serving_version) == (post_push.REJECTED, 2), \
            deployment
        assert smoke_calls[-1]["y"] == GARBAGE_Y  # the check did reach the canary
        assert "served below the gate" in deployment.reason and str(GARBAGE_Y)[:3] in \
            deployment.reason
        assert (repo / MODEL / f".rejected-{v3}").is_dir()
        assert v3 not in repository.candidates(MODEL) + repository.versions(MODEL)
        assert repository.lineage(MODEL, v3).rejected["reason"] == deployment.reason
        record = rollouts.load(repo / MODEL, MODEL)
        assert (record.stable, record.previous, record.canary) == (2, 1, None)
        # Every answer to a request sent since the rejected deploy began came from stable 2
        # (a loaded machine may answer none inside the deploy itself: CI did once).
        clients.wait_for(EXPECTED_Y[2], 60, sent_after=after_garbage)
        assert clients.answers(sent_after=before_garbage) == {EXPECTED_Y[2]}
        assert "canary" in _no_label(rest, "canary", CANARY_ENTRY)  # unloaded

        # Rollback to version 1 under the same load.
        rollout.rollback(MODEL, repo, state_dir=serve.state_dir, timeout=TIMEOUT)
        rolled_back = time.monotonic()
        clients.wait_for(EXPECTED_Y[1], 60, sent_after=rolled_back)
        time.sleep(0.5)
    print(f"\n[{state.backend}] {len(clients.results)} requests from 32 clients")
    assert clients.failures == [], clients.failures[:5]
    assert GARBAGE_Y not in clients.answers(), "a request naming no version reached the canary"
    assert clients.answers() == {EXPECTED_Y[1], EXPECTED_Y[2]}
    assert clients.answers(sent_after=rolled_back) == {EXPECTED_Y[1]}


def test_broken_canary_rejected_hold_and_the_versions_view(serve, repo, templates, capsys):
    """A canary that cannot load is rejected and stable keeps serving; while the model is
    held a push stays a candidate (at once, not loaded) and an operator's promote works
    and keeps the hold; `versions` shows every role, with no server and with one."""
    push(repo, templates[1])
    repository = ModelRepository(repo)
    state = serve()
    rest = state.addresses.rest_url

    v2 = push_broken(repo, candidate=True)
    deployment = post_push.deploy(MODEL, v2, repository, serve.state_dir, TIMEOUT,
                                  smoke_check_expecting(EXPECTED_Y[1]), log=lambda *_: None)
    assert (deployment.status, deployment.serving_version) == (post_push.REJECTED, 1), deployment
    assert "did not load as the canary" in deployment.reason
    assert (repo / MODEL / f".rejected-{v2}").is_dir()
    assert rest_predict(rest) == 2.5 and rest_predict(rest, label="stable") == 2.5
    assert lifecycle.status(serve.state_dir).healthy
    assert rollouts.load(repo / MODEL, MODEL).canary is None

    held = rollout.hold(MODEL, repo, reason="quarter-end freeze", by="ops@example")
    assert held.held and held.stable == 1
    v3 = push_candidate(repo, templates[2])
    calls = []
    deployment = post_push.deploy(MODEL, v3, repository, serve.state_dir, TIMEOUT,
                                  smoke_check_expecting(EXPECTED_Y[2], calls),
                                  log=lambda *_: None)
    assert (deployment.status, deployment.serving_version) == (post_push.HELD, 1), deployment
    assert "held by ops@example" in deployment.reason and "quarter-end freeze" in \
        deployment.reason
    assert "promote --model half_plus_two --version 3" in deployment.next_step
    assert calls == []  # nothing was loaded nor checked
    assert repository.candidates(MODEL) == [v3] and repository.versions(MODEL) == [1]
    assert health.get_model_status(rest, CANARY_ENTRY).available() == []
    assert rest_predict(rest) == 2.5

    # An operator's promote during the hold: served, and the hold stays.
    change = rollout.promote(MODEL, v3, repo, serve.state_dir, TIMEOUT)
    assert change.verified == {"stable": 3, "previous": 1} and change.record.held
    assert rest_predict(rest) == 3.5 and rest_predict(rest, label="previous") == 2.5
    v4 = push_candidate(repo, templates["garbage"])
    assert post_push.deploy(MODEL, v4, repository, serve.state_dir, TIMEOUT,
                            log=lambda *_: None).status == post_push.HELD  # still held

    view = rollout.versions(MODEL, repo, serve.state_dir)
    roles = {row["version"]: (row["role"], row["where"]) for row in view["versions"]}
    assert roles == {1: ("previous", "published"), 2: ("rejected", "rejected"),
                     3: ("stable", "published"), 4: ("candidate", "candidate")}
    live = {row["version"]: row["live"] for row in view["versions"]}
    assert (live[1], live[3], live[4]) == ("AVAILABLE", "AVAILABLE", None)
    assert live[2] in (None, "END"), live  # the canary that failed to load, as last seen
    assert view["server"] == rest and view["hold"]["reason"] == "quarter-end freeze"
    [rejected] = [row for row in view["versions"] if row["role"] == "rejected"]
    assert "did not load as the canary" in rejected["rejected_reason"]
    text = rollout.versions_text(view)
    assert "HELD by ops@example" in text and "rejected: version 2 did not load" in text

    rollout.release(MODEL, repo)
    assert not rollouts.load(repo / MODEL, MODEL).held

    # The same view from the command line, with no server up.
    lifecycle.down(serve.state_dir, timeout=10)
    capsys.readouterr()
    assert serving_main(["versions", "--model", MODEL, "--repository", str(repo),
                         "--state-dir", str(serve.state_dir), "--json"]) == 0
    cli_view = json.loads(capsys.readouterr().out)
    assert cli_view["server"] is None and cli_view["hold"] is None
    assert [(r["version"], r["role"], r["live"]) for r in cli_view["versions"]] == \
        [(1, "previous", None), (2, "rejected", None), (3, "stable", None),
         (4, "candidate", None)]
    assert "did not load as the canary" in cli_view["versions"][1]["rejected_reason"]
    actions = [e["action"] for e in cli_view["events"]]
    assert actions[-1] == "release" and "hold" in actions and "reject" in actions, actions


def test_a_restart_serves_the_recorded_stable_not_the_newest(serve, repo, templates,
                                                             tmp_path, monkeypatch, capsys):
    """After a rollback to 1 while 2 exists: `down` + `up`, and a server killed with
    SIGKILL (the process's pid, or the container) + `up`, both serve 1. While it is down,
    an operator's hold reaches its repository (not the default one) and `predict` says it
    is not running."""
    push(repo, templates[1])
    state = serve()
    push(repo, templates[2])
    rollout.promote(MODEL, 2, repo, serve.state_dir, TIMEOUT)
    rollout.rollback(MODEL, repo, state_dir=serve.state_dir, timeout=TIMEOUT)
    assert ModelRepository(repo).latest_version(MODEL) == 2

    def serves_version_1(state):
        assert health.get_model_status(state.addresses.rest_url, MODEL).available() == [1]
        assert rest_predict(state.addresses.rest_url) == 2.5
        assert rest_predict(state.addresses.rest_url, label="stable") == 2.5
        assert grpc_predict(state.addresses.grpc_target) == 2.5
        report = lifecycle.status(serve.state_dir)
        assert report.healthy and report.models[0].expected_version == 1

    assert lifecycle.down(serve.state_dir, timeout=10)
    state = serve()
    serves_version_1(state)

    if state.backend == "process":
        os.killpg(int(state.handle), signal.SIGKILL)
        wait_until(lambda: not lc_support.pid_alive(int(state.handle)), 15,
                   what="the killed server gone")
    else:
        import docker
        docker.from_env().containers.get(state.handle).kill()
    wait_until(lambda: lifecycle.running_server_for(MODEL, serve.state_dir) is None, 15,
               what="the killed server seen as not running")
    elsewhere = tmp_path / "default-repository"
    push(elsewhere, templates[1])  # the same model name in the repository a default names
    monkeypatch.setenv("TOOLKIT_REPOSITORY", str(elsewhere))
    capsys.readouterr()
    assert serving_main(["predict", "--model", MODEL, "--state-dir",
                         str(serve.state_dir)]) == EXIT_NOT_RUNNING
    assert "is not running" in capsys.readouterr().err
    assert serving_main(["hold", "--model", MODEL, "--reason", "incident 43", "--state-dir",
                         str(serve.state_dir)]) == 0
    assert f"repository: {repo}" in capsys.readouterr().out
    assert rollouts.load(repo / MODEL, MODEL).held
    assert not rollouts.load(elsewhere / MODEL, MODEL).held
    rollout.release(MODEL, repo)
    state = serve()
    serves_version_1(state)
    record = rollouts.load(repo / MODEL, MODEL)
    assert (record.stable, record.canary) == (1, None)
