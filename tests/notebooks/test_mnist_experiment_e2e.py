"""End to end: notebooks/mnist_experiment.ipynb, executed headlessly with nbclient in the
project's kernel (fast profile, through its parameters cell), against a temporary
repository, pipeline root and serving state dir.

The repository starts with one version that the MNIST pipeline pushed and promoted (a
deliberately weak one, so that the notebook's variant passes both gates whatever the
training noise), so the notebook takes the path a data scientist takes on a project where
`make pipeline` ran: compare with that stable version, push the next one as a candidate,
try it on the server as the canary without serving it. Unattended (PROMOTE = False) the
notebook changes nothing that is served; the command it prints then promotes the candidate.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

from toolkit_testing import CACHE, NOTEBOOKS, execute_notebook, run_cli

pytestmark = pytest.mark.e2e

NOTEBOOK = NOTEBOOKS / "mnist_experiment.ipynb"
# The notebook's default variant (its parameters cell): half the first layer's filters.
VARIANT = {"conv1_filters": 16}


@pytest.fixture(scope="module")
def seeded(mnist_seed):
    """A repository holding stable version 1, pushed by the MNIST pipeline, deployed as
    `run` deploys a push with no server up (promoted), and recorded as `run` records its
    runs: the session's `mnist_seed`, which this module alone adds to."""
    from pipelines.operations import post_push
    from serving.repository import ModelRepository

    repository = ModelRepository(mnist_seed.config.repository)
    if 1 in repository.candidates("mnist"):  # the Pusher's candidate, not deployed yet
        deployment = post_push.deploy("mnist", 1, repository, mnist_seed.root / "no-server",
                                      timeout=60, log=lambda line: None)
        assert deployment.status == post_push.NO_SERVER, deployment
    assert _record(mnist_seed.config).stable == 1
    return mnist_seed.root, mnist_seed.config


def _record(config):
    from serving import rollouts
    from serving.repository import ModelRepository

    return rollouts.load(ModelRepository(config.repository).model_dir("mnist"), "mnist")


def _state_dir(seeded) -> Path:
    return seeded[0] / "serving"


@pytest.fixture(scope="module")
def executed(seeded):
    """The executed notebook; the server it started is always taken down."""
    from serving import lifecycle

    tmp, config = seeded
    state_dir = _state_dir(seeded)
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
    assert "blessed (compared with version 1, the stable one)." in _text(executed, "evaluate")


def test_the_blessed_variant_is_pushed_as_a_candidate_with_its_lineage_and_recorded(
        executed, seeded):
    from pipelines.runs import history
    from serving.repository import ModelRepository

    _, config = seeded
    pushed = _text(executed, "push")
    assert "mnist: pushed version 2" in pushed
    assert "version 2 is a candidate, not served" in pushed
    repository = ModelRepository(config.repository)
    assert repository.candidates("mnist") == [2] and repository.versions("mnist") == [1]
    assert not repository.version_path("mnist", 2).exists()
    assert repository.candidate_path("mnist", 2).is_dir()
    lineage = repository.lineage("mnist", 2)
    runs = history.runs(config, "mnist")
    assert [(r.pipeline, r.outcome, r.pushed_version) for r in runs] == [
        ("mnist", "pushed", 1), ("mnist_notebook", "candidate", 2)]
    experiment_run = runs[1]
    assert experiment_run.hyperparameters == VARIANT
    assert (lineage.pipeline, lineage.run_id) == ("mnist_notebook", experiment_run.run_id)
    assert lineage.metrics == experiment_run.metrics and lineage.metrics
    assert "mnist_notebook" in _text(executed, "history")


def test_the_experiment_s_run_holds_the_executions_it_ran(executed, seeded):
    from pipelines.runs import metadata

    _, config = seeded
    store = metadata.open_store(config.metadata_path("mnist_notebook"))
    [run] = metadata.run_contexts(store)
    types = {t.id: t.name for t in store.get_execution_types()}
    ran = {types[e.type_id].rsplit(".", 1)[-1] for e in store.get_executions_by_context(run.id)}
    assert {"ImportExampleGen", "Trainer", "Importer", "Evaluator", "RepositoryPusher"} <= ran


def test_the_served_prediction_came_from_the_candidate_as_the_canary(executed, seeded):
    served = _text(executed, "served")
    found = re.search(r"served by mnist candidate version (\d+) \(as the canary: mnist-canary, "
                      r"label canary; still a candidate\) at http://127\.0\.0\.1:\d+: "
                      r"([\d.]+)% of 500 test digits right", served)
    assert found, served
    assert int(found[1]) == 2
    assert float(found[2]) > 85, served
    # loaded as the canary for the predictions, then unloaded: stable never changed
    record = _record(seeded[1])
    assert [(e["action"], e["version"]) for e in record.events
            if e["action"] in ("canary", "drop canary")] == [("canary", 2), ("drop canary", 2)]
    assert (record.stable, record.canary) == (1, None)


def test_unattended_the_notebook_leaves_the_server_s_stable_version_as_it_was(executed, seeded):
    from serving import lifecycle
    from serving.lifecycle import health, sample

    assert "version 2 stays a candidate (PROMOTE = False)" in _text(executed, "promote")
    server = lifecycle.running_server_for("mnist", _state_dir(seeded))
    assert server is not None
    rest_url = server.addresses.rest_url
    stable = sample.get_metadata(rest_url, "mnist", label="stable")
    assert int(stable["model_spec"]["version"]) == 1
    assert health.get_model_status(rest_url, "mnist").available() == [1]
    assert not health.get_model_status(rest_url, "mnist-canary").available()


def test_the_promote_command_the_notebook_prints_makes_the_candidate_stable(executed, seeded):
    """Last in this module: it changes what is served."""
    from serving import lifecycle
    from serving.lifecycle import sample
    from serving.repository import ModelRepository

    _, config = seeded
    [command] = [line.strip() for line in _text(executed, "promote").splitlines()
                 if line.strip().startswith("python -m serving promote")]
    assert command == (f"python -m serving promote --model mnist --version 2 "
                       f"--repository {config.repository}")
    args = command.split()[2:] + ["--state-dir", str(_state_dir(seeded))]
    done = run_cli(*args)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "mnist: version 2 is stable" in done.stdout

    repository = ModelRepository(config.repository)
    assert repository.versions("mnist") == [1, 2] and repository.candidates("mnist") == []
    assert (_record(config).stable, _record(config).previous) == (2, 1)
    server = lifecycle.running_server_for("mnist", _state_dir(seeded))
    stable = sample.get_metadata(server.addresses.rest_url, "mnist", label="stable")
    assert int(stable["model_spec"]["version"]) == 2
