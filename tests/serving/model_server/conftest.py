"""Fixtures for the model server: SavedModels in tmp dirs and a real server process.

Process tests use `start_server` (function scope) or `ms_support.running_servers` in a
module-scoped fixture; SavedModels are exported once per session (`model_templates`).
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import List

import pytest

from ms_support import ServerProcess, copy_version


@pytest.fixture
def start_server():
    """start_server(*flags) -> a ready ServerProcess, stopped after the test."""
    servers: List[ServerProcess] = []

    def start(*flags: str, wait: bool = True, rest: bool = True, env=None) -> ServerProcess:
        server = ServerProcess(*flags, rest=rest, env=env).start()
        servers.append(server)
        return server.wait_ready() if wait else server

    yield start
    for s in servers:
        s.stop()


@pytest.fixture(scope="session")
def model_templates(tmp_path_factory):
    """Exported once: half_plus_two w=0.5 b=2 ('hp2_v1') and b=3 ('hp2_v2'), MNIST-like,
    and a TF1-style half_plus_two like TF Serving's own test model ('tf1_hp2')."""
    from serving.model_server import testing

    root = tmp_path_factory.mktemp("templates")
    testing.export_half_plus_two(root / "hp2_v1", 0.5, 2.0)
    testing.export_half_plus_two(root / "hp2_v2", 0.5, 3.0)
    testing.export_mnist_like(root / "mnist")
    testing.export_tf1_half_plus_two(root / "tf1_hp2")
    return root


@pytest.fixture
def make_version(model_templates):
    """make_version(base, version, template='hp2_v1') copies a template into base/version."""
    def make(base: Path, version: int, template: str = "hp2_v1") -> Path:
        return copy_version(model_templates, base, version, template)
    return make


@pytest.fixture
def publish(model_templates):
    """publish(repo_root, model, template) -> version, through ModelRepository's atomic publish."""
    from serving.repository import ModelRepository

    def do(root: Path, model: str, template: str = "hp2_v1") -> int:
        repo = ModelRepository(root)
        with repo.publish(model) as pub:
            shutil.copytree(model_templates / template, pub.staging, dirs_exist_ok=True)
        return pub.version
    return do
