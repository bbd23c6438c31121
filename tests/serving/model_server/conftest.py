"""Fixtures for the model server: SavedModels in tmp dirs and a real server process.

Process tests use `start_server` (function scope) or `toolkit_testing.running_servers` in
a module-scoped fixture; SavedModels are exported once per session (`model_templates`).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from toolkit_testing import copy_version, publish_copy, running_servers


@pytest.fixture
def start_server():
    """start_server(*flags, wait=True, rest=True, env=None) -> a ServerProcess, stopped
    after the test."""
    with running_servers() as start:
        yield start


@pytest.fixture(scope="session")
def model_templates(saved_model_templates) -> Path:
    """Exported once: the session's `saved_model_templates` (the pipeline's half_plus_two
    with b=2 'hp2_v1' and b=3 'hp2_v2', the MNIST-like 'mnist'), and beside them TF
    Serving's TF1 half_plus_two ('tf1_hp2', with a second meta graph tagged
    serve+experimental; 'tf1_hp2_main_op' with a main_op), and half_plus_two saved by
    tf.saved_model.save ('tf2_hp2') and by Keras ('keras_hp2')."""
    import saved_models

    root = saved_model_templates
    saved_models.export_tf1_half_plus_two(root / "tf1_hp2", extra_tags=["experimental"])
    saved_models.export_tf1_half_plus_two(root / "tf1_hp2_main_op", use_main_op=True)
    saved_models.export_tf2_half_plus_two(root / "tf2_hp2")
    saved_models.export_keras_half_plus_two(root / "keras_hp2")
    return root


@pytest.fixture
def make_version(model_templates):
    """make_version(base, version, template='hp2_v1') copies a template into base/version."""
    def make(base: Path, version, template: str = "hp2_v1") -> Path:
        return copy_version(model_templates / template, base, version)
    return make


@pytest.fixture
def publish(model_templates):
    """publish(repo_root, model, template) -> version, through ModelRepository's atomic publish."""
    def do(root: Path, model: str, template: str = "hp2_v1") -> int:
        return publish_copy(root, model, model_templates / template)[0]
    return do
