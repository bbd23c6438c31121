"""Fixtures for the lifecycle tests: one contract, run against both backends.

`backend` is parametrized docker/process; the docker case skips (with the reason) only
when no daemon answers or the image is missing. `serve` starts a server in a fresh
repository and state dir and always takes it down afterwards, even when the test fails.
"""

from __future__ import annotations

from pathlib import Path

import pytest

import lc_support
import toolkit_testing
from serving import lifecycle
from serving.lifecycle.config import UpConfig

POLL_SECONDS = 1.0


@pytest.fixture(scope="session")
def templates(saved_model_templates, tmp_path_factory):
    """Exported once per session (`saved_model_templates`, shared with the model server's
    tests): half_plus_two versions 1 (b=2) and 2 (b=3), and an MNIST-shaped model (the
    model server's stand-in for the trained one) under "mnist"; and under "garbage" a
    half_plus_two that loads and answers, wrongly (b=7: y(1.0) = 7.5), for a canary that
    must fail its smoke check."""
    import saved_models

    root = saved_model_templates
    garbage = saved_models.export_half_plus_two(tmp_path_factory.mktemp("garbage") / "hp2_b7",
                                                0.5, lc_support.GARBAGE_BIAS)
    return {1: root / "hp2_v1", 2: root / "hp2_v2", "mnist": root / "mnist",
            "garbage": garbage}


@pytest.fixture(params=["docker", "process"])
def backend(request):
    if request.param == "docker":
        toolkit_testing.require_docker(request.config)
    return request.param


@pytest.fixture
def repo(tmp_path) -> Path:
    path = tmp_path / "repository"
    path.mkdir()
    return path


@pytest.fixture
def serve(backend, repo, tmp_path):
    """serve(**overrides) -> ServerState; `down` runs after the test whatever happened."""
    state_dir = tmp_path / "state"

    def start(**overrides):
        fields = dict(repository=repo, models=(lc_support.MODEL,), state_dir=state_dir,
                      backend=backend, image=toolkit_testing.test_image(), grpc_port=0,
                      rest_port=0, file_system_poll_seconds=POLL_SECONDS,
                      config_poll_seconds=POLL_SECONDS, wait_seconds=180)
        fields.update(overrides)
        return lifecycle.up(UpConfig(**fields))

    start.state_dir = state_dir
    yield start
    lifecycle.down(state_dir, timeout=10)
    if backend == "docker":
        assert lc_support.labelled_containers(state_dir) == []
