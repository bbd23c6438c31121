"""`up` before a model's first version, as TF Serving runs: the server starts, the model
waits, and its first version is served as soon as it is published. Both backends."""

from __future__ import annotations

import logging
import shutil
from concurrent.futures import ThreadPoolExecutor

import pytest

from lc_support import MODEL, push
from serving import lifecycle, lineage
from serving.lifecycle import health
from serving.repository import ModelRepository

pytestmark = pytest.mark.e2e


def test_up_on_a_missing_repository_then_the_first_version_is_served(
        serve, repo, templates, caplog):
    shutil.rmtree(repo)  # a fresh clone: no repository at all
    with caplog.at_level(logging.WARNING, logger="serving.lifecycle"):
        state = serve()
    assert (repo / MODEL).is_dir() and list((repo / MODEL).iterdir()) == []
    assert f"{MODEL}: waiting for a first version in {repo / MODEL}" in caplog.text

    report = lifecycle.status(serve.state_dir)
    [model] = report.models
    assert report.running and report.healthy and model.waiting and not model.healthy
    assert f"{MODEL}: waiting for a first version in {repo / MODEL}" in report.to_text()
    as_json = report.to_json()
    assert as_json["healthy"] and as_json["models"][0]["waiting"] is True
    assert as_json["models"][0]["base_path"] == str(repo / MODEL)
    with pytest.raises(lifecycle.WaitTimeout, match="no version published in"):
        lifecycle.wait_for_version(MODEL, None, 0.5, serve.state_dir)

    # `wait` with no version, started before the publish, returns once version 1 serves;
    # the pipeline's post-push check then verifies that version.
    with ThreadPoolExecutor(1) as pool:
        waited = pool.submit(lifecycle.wait_for_version, MODEL, None, 120, serve.state_dir)
        assert push(repo, templates[1])[0] == 1
        assert waited.result(timeout=150).available() == [1]
    status, prediction = lifecycle.verify_pushed(MODEL, 1, 60, serve.state_dir, [1.0])
    assert status.available() == [1] and prediction == {"predictions": [2.5]}
    assert health.predict(state.addresses.rest_url, MODEL, [1.0]) == {"predictions": [2.5]}
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

    push(repo, templates["mnist"], model="mnist")
    assert lifecycle.wait_for_version("mnist", None, 120, serve.state_dir).available() == [1]
    scores = lifecycle.sample_prediction("mnist", None, serve.state_dir)["predictions"][0]
    assert len(scores) == 10
    assert lifecycle.sample_prediction(MODEL, [1.0], serve.state_dir) == {"predictions": [2.5]}
    assert lifecycle.status(serve.state_dir).healthy
