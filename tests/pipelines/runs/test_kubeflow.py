"""`compile_pipeline`: each pipeline becomes a Kubeflow Pipelines v2 / Vertex AI PipelineJob
whose tasks are the TFX components, run the given image and use the given paths."""

from __future__ import annotations

import json
import posixpath
from pathlib import Path

import pytest
from google.protobuf import json_format
from kfp.pipeline_spec import pipeline_spec_pb2

from pipelines.models import mnist, registry
from pipelines.runs.kubeflow import compile_pipeline
from toolkit_testing import ROOT

IMAGE = "europe-docker.pkg.dev/project/repo/tfx-serving-toolkit-pipeline:1"
REPOSITORY = "/mnt/models"
BEAM_ARGS = ("--runner=DataflowRunner", "--project=project", "--region=europe-west4")
TFX_LAUNCHER = ["python", "-m", "tfx.orchestration.kubeflow.v2.container.kubeflow_v2_run_executor"]


def _paths(tmp_path: Path, name: str) -> dict:
    # A local pipeline root: TFX stages the module wheels there at compile time (a gs:// root
    # would be an upload). The data root is only passed through, so a URI is fine.
    return dict(pipeline_root=str(tmp_path / "root"), data_root=f"gs://bucket/data/{name}",
                repository=REPOSITORY, profile="fast", beam_args=BEAM_ARGS)


@pytest.fixture(scope="module", params=sorted(registry.PIPELINES))
def compiled(request, tmp_path_factory):
    """(name, paths, the JSON text, PipelineSpec, deployment config, TFX pipeline)."""
    name, tmp_path = request.param, tmp_path_factory.mktemp(f"kubeflow_{request.param}")
    paths = _paths(tmp_path, name)
    output = compile_pipeline(name, output=tmp_path / "out" / f"{name}.json", image=IMAGE,
                              **paths)
    text = output.read_text()
    job = json_format.Parse(text, pipeline_spec_pb2.PipelineJob())
    spec = json_format.ParseDict(json_format.MessageToDict(job.pipeline_spec),
                                 pipeline_spec_pb2.PipelineSpec())
    deployment = json_format.ParseDict(json_format.MessageToDict(spec.deployment_spec),
                                       pipeline_spec_pb2.PipelineDeploymentConfig())
    assert job.runtime_config.gcs_output_directory == paths["pipeline_root"]
    assert spec.pipeline_info.name == name.replace("_", "-")
    pipeline = registry.get(name).build_remote(pipeline_name=spec.pipeline_info.name, **paths)
    return name, paths, text, spec, deployment, pipeline


def _tasks_of(spec, node_id: str):
    """A Resolver node becomes one task per resolved channel, named `<id>-<channel>-...`."""
    return [task for name, task in spec.root.dag.tasks.items()
            if name == node_id or name.startswith(f"{node_id}-")]


def _executor(spec, deployment, task):
    label = spec.components[task.component_ref.name].executor_label
    return deployment.executors[label]


def test_every_component_is_a_task_and_runs_the_image(compiled):
    _, _, _, spec, deployment, pipeline = compiled
    node_ids = [component.id for component in pipeline.components]
    assert sum(len(_tasks_of(spec, node_id)) for node_id in node_ids) == len(spec.root.dag.tasks)
    for node_id in node_ids:
        tasks = _tasks_of(spec, node_id)
        assert tasks, f"{node_id} is not a task"
        for task in tasks:
            executor = _executor(spec, deployment, task)
            if executor.WhichOneof("spec") == "container":
                assert executor.container.image == IMAGE
                assert list(executor.container.command) == TFX_LAUNCHER
                assert list(executor.container.args[-len(BEAM_ARGS):]) == list(BEAM_ARGS)
            else:  # the baseline model resolver: a query the orchestrator runs itself
                assert executor.WhichOneof("spec") == "resolver", node_id


def test_the_project_executors_run_from_the_image(compiled):
    _, _, _, spec, deployment, _ = compiled
    [pusher] = _tasks_of(spec, "Pusher")
    args = list(_executor(spec, deployment, pusher).container.args)
    assert args[args.index("--executor_class_path") + 1] == "components.repository_pusher.Executor"


def test_data_and_repository_are_the_paths_given(compiled):
    name, paths, _, spec, _, _ = compiled
    [example_gen] = [task for task_id, task in spec.root.dag.tasks.items()
                     if task_id.endswith("ExampleGen")]
    assert (example_gen.inputs.parameters["input_base"].runtime_value.constant_value.string_value
            == paths["data_root"])
    [pusher] = _tasks_of(spec, "Pusher")
    destination = json.loads(
        pusher.inputs.parameters["push_destination"].runtime_value.constant_value.string_value)
    assert destination["filesystem"]["base_directory"] == posixpath.join(REPOSITORY, name)


def test_nothing_points_into_this_checkout(compiled):
    """The workers cannot read this machine: module files travel as wheels under the pipeline
    root, and the MNIST schema is read from the image."""
    _, paths, text, _, _, _ = compiled
    assert str(ROOT) not in text
    wheels = sorted(Path(paths["pipeline_root"], "_wheels").glob("*.whl"))
    assert wheels and all(str(wheel) in text for wheel in wheels)


def test_the_image_has_the_schema_where_the_mnist_pipeline_reads_it():
    dockerfile = (ROOT / "pipelines" / "image" / "Dockerfile").read_text()
    assert f"COPY components {posixpath.dirname(mnist.IMAGE_SCHEMA_FILE)}\n" in dockerfile
    assert Path(mnist.SCHEMA_FILE).name == posixpath.basename(mnist.IMAGE_SCHEMA_FILE)


@pytest.mark.parametrize("repository", ["gs://bucket/models", "models", "s3://bucket/models"])
def test_a_repository_the_pusher_cannot_rename_in_is_refused(tmp_path, repository):
    paths = dict(_paths(tmp_path, "mnist"), repository=repository)
    with pytest.raises(ValueError, match="absolute filesystem path"):
        compile_pipeline("mnist", output=tmp_path / "mnist.json", image=IMAGE, **paths)
    assert not (tmp_path / "mnist.json").exists()
