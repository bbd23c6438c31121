"""`up` before a model's first version: the server starts, the model waits, and its first
version is served once its push is promoted (through the canary, like every push). Both
backends."""

from __future__ import annotations

import logging
import shutil
from concurrent.futures import ThreadPoolExecutor

import pytest

from lc_support import EXPECTED_Y, MODEL, push, push_candidate, smoke_check_expecting
from pipelines.operations import post_push
from serving import lifecycle, lineage
from serving.lifecycle import health, rollout
from serving.repository import ModelRepository

pytestmark = pytest.mark.e2e


def test_up_on_a_missing_repository_then_the_first_version_is_served(
        serve, repo, templates, caplog):
    shutil.rmtree(repo)  # a fresh clone: no repository at all
    # A long config poll: the push below comes before the server re-reads models.config,
    # as a pipeline's first push may come right after `up` with any poll interval (the
    # waiting model is not in the config, so the canary's reload never waits for it).
    with caplog.at_level(logging.WARNING, logger="serving.lifecycle"):
        state = serve(config_poll_seconds=30)
    assert (repo / MODEL).is_dir()
    assert [p.name for p in (repo / MODEL).iterdir() if not p.name.startswith(".")] == []
    assert f"{MODEL}: waiting for a first version in {repo / MODEL}" in caplog.text

    report = lifecycle.status(serve.state_dir)
    [model] = report.models
    assert report.running and report.healthy and model.waiting and not model.healthy
    assert f"{MODEL}: waiting for a first version in {repo / MODEL}" in report.to_text()
    as_json = report.to_json()
    assert as_json["healthy"] and as_json["models"][0]["waiting"] is True
    assert as_json["models"][0]["base_path"] == str(repo / MODEL)
    with pytest.raises(lifecycle.WaitTimeout, match="is stable yet"):
        lifecycle.wait_for_version(MODEL, None, 0.5, serve.state_dir)

    # `wait` with no version, started before the push, returns once version 1 serves. The
    # push goes the pipeline's way: a candidate, loaded as the canary, smoke-checked on
    # labels/canary, then promoted.
    calls = []
    with ThreadPoolExecutor(1) as pool:
        waited = pool.submit(lifecycle.wait_for_version, MODEL, None, 60, serve.state_dir)
        version = push_candidate(repo, templates[1])
        assert version == 1
        deployment = post_push.deploy(MODEL, version, ModelRepository(repo), serve.state_dir,
                                      120, smoke_check_expecting(EXPECTED_Y[1], calls))
        assert (deployment.status, deployment.serving_version) == (post_push.PROMOTED, 1), \
            f"the first push after `up` of a model waiting for its first version was not " \
            f"promoted: {deployment}"
        assert waited.result(timeout=90).available() == [1]
    assert [(c["entry"], c["label"], c["y"]) for c in calls] == \
        [(f"{MODEL}-canary", "canary", EXPECTED_Y[1])]
    assert health.predict(state.addresses.rest_url, MODEL, [1.0]) == {"predictions": [2.5]}
    assert health.predict(state.addresses.rest_url, MODEL, [1.0], label="stable") == \
        {"predictions": [2.5]}
    report = lifecycle.status(serve.state_dir)
    assert report.healthy and report.models[0].healthy and not report.models[0].waiting


def test_models_with_a_version_are_awaited_the_waiting_one_joins_later(
        serve, repo, templates, caplog):
    """half_plus_two has a version (trained with the fast profile), mnist none: `up` returns
    once half_plus_two is AVAILABLE, warns about its profile, and mnist's first version is
    served when it is published, while half_plus_two keeps serving."""
    with ModelRepository(repo).publish(MODEL) as pub:
        shutil.copytree(templates[1], pub.staging, dirs_exist_ok=True)
        lineage.write(pub.staging, lineage.Lineage(run_id="r1", profile="fast",
                                                   hyperparameters={"train_steps": 600}))
    with caplog.at_level(logging.WARNING, logger="serving.lifecycle"):
        state = serve(models=(MODEL, "mnist"))
    assert f"{MODEL} version 1 was trained with the fast profile" in caplog.text
    assert f"mnist: waiting for a first version in {repo / 'mnist'}" in caplog.text
    assert health.get_model_status(state.addresses.rest_url, MODEL).available() == [1]

    report = lifecycle.status(serve.state_dir)
    assert report.healthy and [m.waiting for m in report.models] == [False, True]
    assert report.models[0].warnings == [
        f"{MODEL} version 1 was trained with the fast profile, not the default one "
        f"(train_steps=600)"]
    assert f"WARNING: {MODEL} version 1 was trained with the fast profile" in report.to_text()

    # Published straight into mnist/1 (TF Serving's layout, as another tool would, no
    # rollout record): not served until promoted, as every version; `promote` then adds
    # mnist to the server's config, and `wait` with no version and `status` see it.
    push(repo, templates["mnist"], model="mnist")
    with pytest.raises(lifecycle.WaitTimeout, match="a push is served once it is promoted"):
        lifecycle.wait_for_version("mnist", None, 2, serve.state_dir)
    assert health.get_model_status(state.addresses.rest_url, "mnist").available() == []
    rollout.promote("mnist", 1, repo, serve.state_dir, 120)
    waited = lifecycle.wait_for_version("mnist", None, 10, serve.state_dir)
    assert waited.available() == [1]
    scores = lifecycle.sample_prediction("mnist", None, serve.state_dir)["predictions"][0]
    assert len(scores) == 10
    assert lifecycle.sample_prediction(MODEL, [1.0], serve.state_dir) == {"predictions": [2.5]}
    assert lifecycle.status(serve.state_dir).healthy
