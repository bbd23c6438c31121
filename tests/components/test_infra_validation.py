"""InfraValidator in real TFX pipelines (LocalDagRunner, ML Metadata) against the serving
image on the real Docker Engine: a model that loads and answers requests built from the
eval examples is blessed and pushed; one that cannot load or cannot answer is neither."""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Dict, List, NamedTuple, Optional

import pytest
import tensorflow as tf
from tfx import v1 as tfx

from components import half_plus_two_data, repository_pusher
from components.half_plus_two_trainer import export
from components.infra_validation import create_infra_validator
from components.signatures import CLASSIFY_METHOD, REGRESS_METHOD, set_method_names
from toolkit_testing import CACHE, require_docker, test_image

pytestmark = pytest.mark.e2e

HALF_PLUS_TWO_SIGNATURES = ["regress_x_to_y", "classify_x_to_y"]
# One try of this long per half_plus_two candidate: a good one loads in ~5 s here, and the
# wait ends as soon as it is AVAILABLE.
LOADING_SECONDS = 45
# The one that cannot load costs its whole wait, as it would with tensorflow/serving (the
# server opens its ports only once its models are AVAILABLE, so InfraValidator cannot see
# the failed load): its own, shorter setting. The image's server logs the failed load about
# 7 s after the container starts on 2 busy cores (load average 8.8).
UNLOADABLE_LOADING_SECONDS = 20


@pytest.fixture(autouse=True)
def _docker(pytestconfig):
    require_docker(pytestconfig)


def _importer(node_id: str, model_uri: Path):
    """A Model artifact for a SavedModel under `model_uri`/Format-Serving, as the Trainer
    writes it (the tfx_version property tells TFX that layout is the current one)."""
    return tfx.dsl.Importer(
        source_uri=str(model_uri), artifact_type=tfx.types.standard_artifacts.Model,
        custom_properties={"tfx_version": tfx.__version__}).with_id(node_id)


def _validate_and_push(root: Path, example_gen, candidates: Dict[str, Path], model_name: str,
                       signature_names: List[str], per_candidate: Optional[Dict[str, dict]] = None,
                       **validation) -> None:
    """One LocalDagRunner run: per candidate, an Importer, an InfraValidator and a Pusher
    that publishes into `root`/repo/<candidate> only what InfraValidator blessed.
    `validation`: create_infra_validator's settings; `per_candidate`: a candidate's own."""
    components = [example_gen]
    for name, model_uri in candidates.items():
        model = _importer(f"import_{name}", model_uri)
        validator = create_infra_validator(
            model=model.outputs["result"], examples=example_gen.outputs["examples"],
            image=test_image(), signature_names=signature_names, model_name=model_name,
            **{**validation, **(per_candidate or {}).get(name, {})}).with_id(f"validate_{name}")
        pusher = repository_pusher.RepositoryPusher(
            model=model.outputs["result"], model_blessing=None,
            infra_blessing=validator.outputs["blessing"],
            serving_model_dir=str(root / "repo" / name)).with_id(f"push_{name}")
        components += [model, validator, pusher]
    tfx.orchestration.LocalDagRunner().run(tfx.dsl.Pipeline(
        pipeline_name="infra_validation", pipeline_root=str(root / "pipeline"),
        components=components, enable_cache=False,
        metadata_connection_config=tfx.orchestration.metadata.sqlite_metadata_connection_config(
            str(root / "metadata.sqlite"))))


def _blessed(root: Path, name: str) -> bool:
    """The InfraBlessing's verdict, from ML Metadata (the property the Pusher reads)."""
    import ml_metadata as mlmd
    from ml_metadata.proto import metadata_store_pb2

    config = metadata_store_pb2.ConnectionConfig()
    config.sqlite.filename_uri = str(root / "metadata.sqlite")
    store = mlmd.MetadataStore(config)
    [blessing] = [artifact for artifact in store.get_artifacts_by_type("InfraBlessing")
                  if f"/validate_{name}/" in artifact.uri]
    return blessing.custom_properties["blessed"].int_value == 1


def _pushed_versions(root: Path, name: str) -> List[str]:
    """The versions the Pusher published (as candidates: the run deploys them after)."""
    candidates = root / "repo" / name / ".candidates"
    return sorted(p.name for p in candidates.iterdir()) if candidates.exists() else []


class _ExpectsAnotherFeature(tf.Module):
    """half_plus_two's Regress and Classify signatures, computed from a feature `z` that
    the examples do not have: it loads, and fails every request."""

    def _z(self, inputs):
        return tf.io.parse_example(inputs, {"z": tf.io.FixedLenFeature([1], tf.float32)})["z"]

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="inputs")])
    def regress(self, inputs):
        return {"outputs": tf.reshape(self._z(inputs), [-1])}

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="inputs")])
    def classify(self, inputs):
        return {"scores": self._z(inputs)}


class _ModelServerLogs(logging.Handler):
    """The model server logs InfraValidator fetches from the container after a failed try."""

    def __init__(self):
        super().__init__(logging.ERROR)
        self.logs: List[str] = []

    def emit(self, record):
        message = record.getMessage()
        if "BEGIN_MODEL_SERVER_LOG" in message:
            self.logs.append(message)


class _Run(NamedTuple):
    root: Path
    server_logs: List[str]


@pytest.fixture(scope="module")
def half_plus_two_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("infra_validation")
    models = root / "models"
    export(0.5, 2.0, str(models / "good" / "Format-Serving"))
    skewed = _ExpectsAnotherFeature()
    tf.saved_model.save(skewed, str(models / "skewed" / "Format-Serving"), signatures={
        "regress_x_to_y": skewed.regress, "classify_x_to_y": skewed.classify})
    set_method_names(models / "skewed" / "Format-Serving",
                     {"regress_x_to_y": REGRESS_METHOD, "classify_x_to_y": CLASSIFY_METHOD})
    # An intact saved_model.pb (the requests are built from its signatures) with variables
    # that cannot be restored: the server fails to load it and exits.
    export(0.5, 2.0, str(models / "unloadable" / "Format-Serving"))
    for path in (models / "unloadable" / "Format-Serving" / "variables").iterdir():
        path.write_bytes(b"not a checkpoint")

    data = half_plus_two_data.write_examples(root / "data", 100).parent
    server_logs = _ModelServerLogs()
    logging.getLogger("absl").addHandler(server_logs)
    try:
        _validate_and_push(root, tfx.components.CsvExampleGen(input_base=str(data)),
                           {name: models / name for name in ("good", "skewed", "unloadable")},
                           "half_plus_two", HALF_PLUS_TWO_SIGNATURES,
                           per_candidate={"unloadable": {
                               "max_loading_time_seconds": UNLOADABLE_LOADING_SECONDS}},
                           max_loading_time_seconds=LOADING_SECONDS, num_tries=1)
    finally:
        logging.getLogger("absl").removeHandler(server_logs)
    return _Run(root, server_logs.logs)


def test_half_plus_two_loads_answers_and_is_pushed(half_plus_two_run):
    assert _blessed(half_plus_two_run.root, "good")
    assert _pushed_versions(half_plus_two_run.root, "good") == ["1"]


def test_a_model_whose_signatures_fail_on_the_examples_is_not_blessed(half_plus_two_run):
    assert not _blessed(half_plus_two_run.root, "skewed")
    assert _pushed_versions(half_plus_two_run.root, "skewed") == []


def test_a_model_the_server_cannot_load_is_not_blessed(half_plus_two_run):
    assert not _blessed(half_plus_two_run.root, "unloadable")
    assert _pushed_versions(half_plus_two_run.root, "unloadable") == []


def test_the_pipeline_log_has_the_servers_reason_for_a_failed_load(half_plus_two_run):
    """The image's server keeps retrying, as tensorflow_model_server does, so the container
    is still there with its log when InfraValidator's loading deadline passes."""
    failed_load = re.compile(r"Loading servable.*half_plus_two version: 1.* failed")
    logs = half_plus_two_run.server_logs
    assert any(failed_load.search(log) for log in logs), [log[-2000:] for log in logs]


def test_a_corrupt_saved_model_pb_fails_the_run_before_any_push(tmp_path):
    """The requests are built from the SavedModel's signatures, so InfraValidator itself
    fails on a saved_model.pb it cannot parse: the run stops, nothing is pushed."""
    model = tmp_path / "models" / "corrupt"
    export(0.5, 2.0, str(model / "Format-Serving"))
    (model / "Format-Serving" / "saved_model.pb").write_bytes(b"not a SavedModel")
    data = half_plus_two_data.write_examples(tmp_path / "data", 20).parent
    with pytest.raises(Exception, match="Cannot parse file .*saved_model.pb"):
        _validate_and_push(tmp_path, tfx.components.CsvExampleGen(input_base=str(data)),
                           {"corrupt": model}, "half_plus_two", HALF_PLUS_TWO_SIGNATURES)
    assert _pushed_versions(tmp_path, "corrupt") == []


@pytest.fixture(scope="module")
def mnist_run(tmp_path_factory, mnist_seed):
    """The model the MNIST pipeline's own Transform and Trainer trained on a sliver of real
    MNIST (the session's `mnist_seed`: barely trained; its serving signature is the real
    one), then InfraValidator, with requests from MNIST's eval examples."""
    from components import mnist_data
    from pipelines.models import mnist

    root = tmp_path_factory.mktemp("infra_validation_mnist")
    examples = mnist_data.prepare_mnist(CACHE / "mnist", train_limit=256, eval_limit=64)
    eval_split = tfx.components.ImportExampleGen(
        input_base=str(examples),
        input_config=tfx.proto.Input(splits=[tfx.proto.Input.Split(name="eval",
                                                                   pattern="eval/*")]))
    _validate_and_push(root, eval_split, {"mnist": mnist_seed.trained_model()},
                       mnist.MODEL_NAME, [mnist.EVAL_SIGNATURE])
    return root


def test_mnist_classification_loads_answers_and_is_pushed(mnist_run):
    assert _blessed(mnist_run, "mnist")
    assert _pushed_versions(mnist_run, "mnist") == ["1"]
