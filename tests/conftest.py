"""Shared fixtures. Tests marked `e2e` run the real thing (a TFX pipeline, a server process).

What is expensive to build is built once per session and shared by the tests that only read
it: the weak MNIST run (`mnist_seed`) and the SavedModels the servers load (`saved_model_templates`).
"""

from __future__ import annotations

import pytest

from toolkit_testing import seed_mnist, write_fake_saved_model


def pytest_addoption(parser):
    parser.addoption("--require-docker", action="store_true",
                     help="fail docker tests when no daemon or image is available, instead of "
                          "skipping them (CI sets this: it installs and starts Docker)")


@pytest.fixture
def make_fake_saved_model():
    return write_fake_saved_model


@pytest.fixture(scope="session")
def mnist_seed(tmp_path_factory):
    """One MNIST pipeline run per session (`toolkit_testing.seed_mnist`): a repository holding
    a weak version 1, pushed and recorded. The notebook's test builds on it (it pushes version
    2 and records its experiment: the only test that adds to it); InfraValidator's test reads
    its Trainer's model. Anything else that needs to change it works on its own run."""
    return seed_mnist(tmp_path_factory.mktemp("mnist_seed"))


@pytest.fixture(scope="session")
def saved_model_templates(tmp_path_factory):
    """Exported once per session, for the model server's and the lifecycle's tests alike
    (`saved_models`): the pipeline's half_plus_two with b=2 ('hp2_v1') and b=3 ('hp2_v2'),
    and the MNIST-like model ('mnist'). Tests copy them; none changes them."""
    import saved_models

    root = tmp_path_factory.mktemp("templates")
    saved_models.export_half_plus_two(root / "hp2_v1", 0.5, 2.0)
    saved_models.export_half_plus_two(root / "hp2_v2", 0.5, 3.0)
    saved_models.export_mnist_like(root / "mnist")
    return root
