"""Shared fixtures. Tests marked `e2e` run the real thing (a TFX pipeline, a server process).

What is expensive to build is built once per session and shared by the tests that only read
it: the weak MNIST run (`mnist_seed`) and the SavedModels the servers load (`saved_model_templates`).
"""

from __future__ import annotations

import os
import shutil
import tempfile

import pytest

# No test reaches the developer's own server, repository or runs through a default: the
# commands' defaults (serving/defaults.py) point into a directory of this test process,
# set before anything reads them. The MNIST data cache stays the project's (shared, read
# through toolkit_testing.CACHE). Tests that check the defaults themselves unset these.
_DEFAULTS_HOME = tempfile.mkdtemp(prefix="toolkit-tests-")
os.environ.update(TOOLKIT_REPOSITORY=os.path.join(_DEFAULTS_HOME, "model_repository"),
                  TOOLKIT_PIPELINE_ROOT=os.path.join(_DEFAULTS_HOME, "tfx_runs"),
                  TOOLKIT_STATE_DIR=os.path.join(_DEFAULTS_HOME, "serving"))
os.environ.pop("TOOLKIT_CACHE_DIR", None)

from toolkit_testing import seed_config, seed_mnist, write_fake_saved_model  # noqa: E402 - after the env


# `make test` runs three pytest-xdist workers with --dist loadfile: a module's tests run on one
# worker, so its module-scoped servers and runs are built once. The slowest modules are
# handed out first (--no-loadscope-reorder keeps this order), so that the workers finish
# at about the same time; the order comes from the durations in benchmarks/README.md, and a
# module not listed runs after these. (--dist loadgroup, which could also keep the MNIST
# seed's two modules together, groups nothing with pytest 9: each worker may build the seed.)
SLOWEST_FIRST = (
    "tests/pipelines/operations/test_retrain_half_plus_two_e2e.py",  # the 5-run soak of `schedule`
    "tests/pipelines/operations/test_retrain_e2e.py",
    "tests/pipelines/operations/test_retrain_kill_e2e.py",
    "tests/pipelines/test_faults.py",
    "tests/pipelines/models/test_model_project_e2e.py",
    "tests/serving/lifecycle/test_lc_swarm_e2e.py",
    "tests/serving/lifecycle/test_lc_rollouts_e2e.py",
    "tests/pipelines/operations/test_rollout_scenario_e2e.py",
    "tests/serving/lifecycle/test_lc_e2e.py",
    "tests/pipelines/models/test_half_plus_two.py",
    "tests/pipelines/models/test_mnist.py",
    "tests/notebooks/test_mnist_experiment_e2e.py",
    "tests/components/test_infra_validation.py",
    "tests/pipelines/test_main.py",
    "tests/serving/model_server/test_ms_cli_e2e.py",
    "tests/serving/lifecycle/test_lc_first_version_e2e.py",
    "tests/serving/model_server/test_ms_api_e2e.py",
    "tests/serving/lifecycle/test_manifests.py",
)


def pytest_collection_modifyitems(config, items):
    """The slowest modules first (SLOWEST_FIRST), each module's tests in their own order."""
    def rank(item) -> int:
        module = item.nodeid.split("::", 1)[0]
        return SLOWEST_FIRST.index(module) if module in SLOWEST_FIRST else len(SLOWEST_FIRST)
    items.sort(key=rank)


def pytest_unconfigure(config):
    shutil.rmtree(_DEFAULTS_HOME, ignore_errors=True)


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
    its Trainer's model. Anything else that needs to change it works on its own run.

    Built once for the whole session, not once per pytest-xdist worker: the workers share
    the parent of their base temporary directories, and the first to take the lock builds
    the seed there while the other waits for it (the two modules run on different workers)."""
    import fcntl

    from toolkit_testing import MnistSeed

    if not os.environ.get("PYTEST_XDIST_WORKER"):
        return seed_mnist(tmp_path_factory.mktemp("mnist_seed"))
    root = tmp_path_factory.getbasetemp().parent / "mnist_seed"
    with open(f"{root}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (root / "built").is_file():
            return MnistSeed(root, seed_config(root))
        shutil.rmtree(root, ignore_errors=True)  # a worker that failed half-way
        seed = seed_mnist(root)
        (root / "built").touch()
        return seed


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
