"""End to end: notebooks/mnist_experiment.ipynb, executed headlessly with nbclient in the
project's kernel (fast profile, through its parameters cell), against a temporary
repository, pipeline root and serving state dir.

The repository starts with one version that the MNIST pipeline pushed (a deliberately weak
one, so that the notebook's variant passes both gates whatever the training noise), so the
notebook takes the path a data scientist takes on a project where `make pipeline` ran:
compare with that version, push the next one, serve it.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

from toolkit_testing import CACHE, NOTEBOOKS, execute_notebook

pytestmark = pytest.mark.e2e

NOTEBOOK = NOTEBOOKS / "mnist_experiment.ipynb"
# The notebook's default variant (its parameters cell): half the first layer's filters.
VARIANT = {"conv1_filters": 16}


@pytest.fixture(scope="module")
def seeded(mnist_seed):
    """A repository holding version 1, pushed by the MNIST pipeline and recorded as `run`
    records its runs: the session's `mnist_seed`, which this module alone adds to."""
    return mnist_seed.root, mnist_seed.config


@pytest.fixture(scope="module")
def executed(seeded):
    """The executed notebook; the server it started is always taken down."""
    from serving import lifecycle

    tmp, config = seeded
    state_dir = tmp / "serving"
    try:
        yield execute_notebook(NOTEBOOK, {
            "PROFILE": "fast", "REPOSITORY": str(config.repository),
            "PIPELINE_ROOT": str(config.pipeline_root), "CACHE_DIR": str(CACHE),
            "SERVING_STATE_DIR": str(state_dir)})
    finally:
        lifecycle.down(state_dir)


def _outputs(notebook, tag):
    [cell] = [c for c in notebook.cells if tag in c.metadata.get("tags", [])]
    return cell.outputs


def _text(notebook, tag) -> str:
    return "".join(o.get("text", "") + o.get("data", {}).get("text/plain", "")
                   for o in _outputs(notebook, tag))


def test_the_notebook_runs_in_the_project_kernel():
    from jupyter_client.kernelspec import KernelSpecManager

    import nbformat

    name = nbformat.read(str(NOTEBOOK), as_version=4).metadata.kernelspec.name
    spec = KernelSpecManager().get_kernel_spec(name)  # NoSuchKernel: `make kernel` first
    assert Path(spec.argv[0]).absolute() == Path(sys.executable).absolute()


@pytest.mark.parametrize("tag", ["digits", "per-class", "confusion", "served-digits"])
def test_each_figure_is_drawn(executed, tag):
    assert [o for o in _outputs(executed, tag) if "image/png" in o.get("data", {})]


def test_the_variant_is_compared_with_the_repository_s_version(executed):
    assert "blessed (compared with version 1, the current one)." in _text(executed, "evaluate")


def test_the_blessed_variant_is_pushed_with_its_lineage_and_recorded(executed, seeded):
    from pipelines import history
    from serving.repository import ModelRepository

    _, config = seeded
    assert "mnist: pushed version 2" in _text(executed, "push")
    repository = ModelRepository(config.repository)
    assert repository.versions("mnist") == [1, 2]
    lineage = repository.lineage("mnist", 2)
    runs = history.runs(config, "mnist")
    assert [(r.pipeline, r.outcome, r.pushed_version) for r in runs] == [
        ("mnist", "pushed", 1), ("mnist_notebook", "pushed", 2)]
    experiment_run = runs[1]
    assert experiment_run.hyperparameters == VARIANT
    assert (lineage.pipeline, lineage.run_id) == ("mnist_notebook", experiment_run.run_id)
    assert lineage.metrics == experiment_run.metrics and lineage.metrics
    assert "mnist_notebook" in _text(executed, "history")


def test_the_experiment_s_run_holds_the_executions_it_ran(executed, seeded):
    from pipelines import metadata

    _, config = seeded
    store = metadata.open_store(config.metadata_path("mnist_notebook"))
    [run] = metadata.run_contexts(store)
    types = {t.id: t.name for t in store.get_execution_types()}
    ran = {types[e.type_id].rsplit(".", 1)[-1] for e in store.get_executions_by_context(run.id)}
    assert {"ImportExampleGen", "Trainer", "Importer", "Evaluator", "RepositoryPusher"} <= ran


def test_the_served_prediction_came_from_the_pushed_version(executed):
    served = _text(executed, "served")
    found = re.search(r"served by mnist version (\d+) at http://127\.0\.0\.1:\d+: "
                      r"([\d.]+)% of 500 test digits right", served)
    assert found, served
    assert int(found[1]) == 2
    assert float(found[2]) > 85, served
