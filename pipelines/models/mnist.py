"""The MNIST pipeline: real MNIST -> a CNN that serves TF Serving's MNIST clients unchanged."""

from __future__ import annotations

import dataclasses
import math
import posixpath
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import numpy as np
import tensorflow_model_analysis as tfma
from tfx import v1 as tfx

from components import anomalies_gate, mnist_data, repository_pusher
from pipelines.models import resolvers, retraining_pipeline, smoke, standard as standard_pipeline
from pipelines.config import RunConfig
from pipelines.models.contract import ModelPipeline
from serving.lifecycle import health

MODEL_NAME = "mnist"
COMPONENTS_DIR = Path(mnist_data.__file__).parent
TRANSFORM_MODULE = str(COMPONENTS_DIR / "mnist_transform.py")
TRAINER_MODULE = str(COMPONENTS_DIR / "mnist_trainer.py")
SCHEMA_FILE = str(COMPONENTS_DIR / "mnist_schema.pbtxt")  # curated, not inferred
DRIFT_CONFIG_FILE = str(COMPONENTS_DIR / "mnist_drift.pbtxt")
# The same file in the pipeline image (pipelines/image/Dockerfile), for remote orchestrators.
IMAGE_SCHEMA_FILE = "/opt/tfx-serving-toolkit/components/mnist_schema.pbtxt"
EVAL_SIGNATURE = "classification"
METRIC = "sparse_categorical_accuracy"
CONFUSION_MATRIX_PLOT = "MultiClassConfusionMatrixPlot"


@dataclasses.dataclass(frozen=True)
class Profile:
    train_limit: Optional[int] = None  # None: all 60,000 training images
    eval_limit: Optional[int] = None   # None: the whole official 10,000-image test set
    epochs: int = 5
    batch_size: int = 128
    learning_rate: float = 2e-3
    accuracy_gate: float = 0.99
    # Not blessed if more than this much worse than the latest blessed model (0.5 points).
    max_regression: float = 0.005
    # Retraining: a warm-started model trains this many epochs over the window.
    warm_start_epochs: int = 2
    # `make-spans`: examples per span (train from the training set, eval from the test set).
    span_train_size: int = 10_000
    span_eval_size: int = 2_000

    def train_steps(self) -> int:
        examples = self.train_limit or 60_000
        return self.epochs * math.ceil(examples / self.batch_size)

    def eval_steps(self) -> int:
        return math.ceil((self.eval_limit or 10_000) / self.batch_size)


PROFILES = {
    "default": Profile(),
    # The tests' configuration: same components and code, a subset and two short epochs.
    "fast": Profile(train_limit=8000, eval_limit=1000, epochs=2, accuracy_gate=0.9,
                    warm_start_epochs=1, span_train_size=3000, span_eval_size=500),
}


# The MNIST pipeline's components, wired: the standard wiring's set (create_pipeline runs them
# all; a notebook runs them one by one with TFX's InteractiveContext).
Components = standard_pipeline.Components


def create_components(*, examples_dir: str, serving_model_dir: str, profile: Profile,
                      baseline: Optional[Any], lineage: Optional[Dict[str, Any]] = None,
                      hyperparameters: Optional[Dict[str, Any]] = None,
                      schema_file: str = SCHEMA_FILE) -> Components:
    """Wire the components; nothing else. `baseline`: the node whose `model` output the
    no-regression gate compares with (None: the absolute gate only). `hyperparameters`
    override components/mnist_trainer.py's DEFAULTS (the schedule ones through the profile,
    so the step count follows, e.g. epochs=4 trains four epochs)."""
    hyperparameters = dict(hyperparameters or {})
    profile = dataclasses.replace(profile, **{name: hyperparameters.pop(name)
                                              for name in list(hyperparameters)
                                              if name in SCHEDULE})
    example_gen = tfx.components.ImportExampleGen(
        input_base=examples_dir,
        input_config=tfx.proto.Input(splits=[
            tfx.proto.Input.Split(name="train", pattern="train/*"),
            tfx.proto.Input.Split(name="eval", pattern="eval/*"),  # the official test set
        ]))
    statistics_gen = tfx.components.StatisticsGen(examples=example_gen.outputs["examples"])
    schema_gen = tfx.components.ImportSchemaGen(schema_file=schema_file)
    example_validator = tfx.components.ExampleValidator(
        statistics=statistics_gen.outputs["statistics"], schema=schema_gen.outputs["schema"])
    gate = anomalies_gate.AnomaliesGate(anomalies=example_validator.outputs["anomalies"])
    transform = tfx.components.Transform(
        examples=example_gen.outputs["examples"], schema=schema_gen.outputs["schema"],
        module_file=TRANSFORM_MODULE, materialize=False,
        disable_statistics=True)  # StatisticsGen describes the data; no second pass
    transform.add_upstream_node(gate)
    trainer = tfx.components.Trainer(
        module_file=TRAINER_MODULE,
        examples=example_gen.outputs["examples"],
        transform_graph=transform.outputs["transform_graph"],
        schema=schema_gen.outputs["schema"],
        train_args=tfx.proto.TrainArgs(num_steps=profile.train_steps()),
        eval_args=tfx.proto.EvalArgs(num_steps=profile.eval_steps()),
        custom_config=trainer_config(profile, **hyperparameters))
    trainer.add_upstream_node(gate)
    evaluator = tfx.components.Evaluator(
        examples=example_gen.outputs["examples"],
        model=trainer.outputs["model"],
        baseline_model=baseline.outputs["model"] if baseline is not None else None,
        schema=schema_gen.outputs["schema"],
        eval_config=eval_config(profile))
    pusher = repository_pusher.RepositoryPusher(
        model=trainer.outputs["model"], model_blessing=evaluator.outputs["blessing"],
        serving_model_dir=serving_model_dir, examples=example_gen.outputs["examples"],
        evaluation=evaluator.outputs["evaluation"], lineage=lineage)
    return Components(example_gen, statistics_gen, schema_gen, example_validator, gate,
                      transform, trainer, baseline, evaluator, pusher)


def create_pipeline(*, pipeline_name: str, pipeline_root: str, examples_dir: str,
                    serving_model_dir: str, metadata_path: str,
                    beam_pipeline_args: List[str], enable_cache: bool,
                    profile: Profile, schema_file: str = SCHEMA_FILE,
                    lineage: Optional[Dict[str, Any]] = None) -> tfx.dsl.Pipeline:
    """The components, compared with the latest blessed model, as one pipeline."""
    components = create_components(examples_dir=examples_dir,
                                   serving_model_dir=serving_model_dir, profile=profile,
                                   baseline=resolvers.latest_blessed_model(), lineage=lineage,
                                   schema_file=schema_file)
    return retraining_pipeline.local_pipeline(pipeline_name, pipeline_root, components.nodes,
                                              enable_cache, metadata_path, beam_pipeline_args)


# The Trainer's schedule: Profile fields that trainer_config passes on.
SCHEDULE = ("epochs", "warm_start_epochs", "batch_size", "learning_rate")


def trainer_config(profile: Profile, **hyperparameters) -> Dict[str, Any]:
    """The Trainer's custom_config: the profile's schedule, and any hyperparameter of
    components/mnist_trainer.py's DEFAULTS to try (e.g. conv1_filters=16)."""
    return {**{name: getattr(profile, name) for name in SCHEDULE}, **hyperparameters}


def retrain_parts(profile: Profile, trainer_module: str = TRAINER_MODULE
                  ) -> retraining_pipeline.ModelParts:
    """MNIST's part of the retraining pipeline: TFRecord spans, the curated schema, label
    drift, the same Transform and Trainer as `run`, epochs over the window."""
    return retraining_pipeline.ModelParts(
        example_gen=tfx.components.ImportExampleGen,
        schema_file=SCHEMA_FILE,
        drift_config=retraining_pipeline.load_drift_config(DRIFT_CONFIG_FILE),
        transform_module=TRANSFORM_MODULE,
        trainer_module=trainer_module,
        trainer_config=trainer_config(profile),
        eval_config=eval_config(profile),
        infra_signatures=(EVAL_SIGNATURE,))


def eval_config(profile: Profile) -> tfma.EvalConfig:
    """An absolute accuracy gate, and a no-regression gate against the latest blessed model;
    and the confusion matrix (a plot: no gate), from which accuracy per digit follows."""
    return tfma.EvalConfig(
        model_specs=[tfma.ModelSpec(signature_name=EVAL_SIGNATURE, label_key="label",
                                    prediction_key="scores")],
        slicing_specs=[tfma.SlicingSpec()],
        metrics_specs=[tfma.MetricsSpec(metrics=[
            tfma.MetricConfig(
                class_name="SparseCategoricalAccuracy",
                threshold=tfma.MetricThreshold(
                    value_threshold=tfma.GenericValueThreshold(
                        lower_bound={"value": profile.accuracy_gate}),
                    change_threshold=tfma.GenericChangeThreshold(
                        direction=tfma.MetricDirection.HIGHER_IS_BETTER,
                        absolute={"value": -profile.max_regression}))),
            tfma.MetricConfig(class_name=CONFUSION_MATRIX_PLOT)])])


def prepare_data(config: RunConfig, profile: Profile, log=print) -> Path:
    """ImportExampleGen's input: the user's TFRecords as given, or MNIST from its routes."""
    if config.data_dir is not None and mnist_data.is_examples_dir(config.data_dir):
        mnist_data.check_examples_dir(config.data_dir)  # readable; ExampleValidator checks contents
        return Path(config.data_dir).absolute()
    return mnist_data.prepare_mnist(
        (config.cache_dir / "mnist").absolute(), data_dir=config.data_dir,
        train_limit=profile.train_limit, eval_limit=profile.eval_limit, log=log).absolute()


def build(config: RunConfig, profile: Optional[Profile] = None, log=print,
          lineage: Optional[Dict[str, Any]] = None) -> tfx.dsl.Pipeline:
    profile = profile or PROFILES[config.profile]
    return create_pipeline(
        pipeline_name=MODEL_NAME,
        pipeline_root=str(config.pipeline_dir(MODEL_NAME)),
        examples_dir=str(prepare_data(config, profile, log)),
        serving_model_dir=str(config.model_destination(MODEL_NAME)),
        metadata_path=str(config.metadata_path(MODEL_NAME)),
        beam_pipeline_args=list(config.beam_args),
        enable_cache=config.enable_cache,
        profile=profile,
        lineage=lineage)


def write_spans(config: RunConfig, out_dir: Path, span_numbers: List[int],
                kind: str) -> List[Path]:
    """`make-spans`: MNIST as spans of the profile's size, from the verified loader."""
    profile = PROFILES[config.profile]
    arrays = mnist_data.load_mnist((config.cache_dir / "mnist").absolute(),
                                   data_dir=config.data_dir).arrays
    return mnist_data.write_spans(arrays, out_dir, span_numbers, profile.span_train_size,
                                  profile.span_eval_size, kind)


def smoke_check(eval_dir: Path, config: RunConfig, examples: int) -> smoke.SmokeCheck:
    """The post-push check: the first `examples` eval examples of the newest span, through
    the server's Classify API (the `classification` signature, raw tf.Examples) and its
    Predict API (`serving_default`, pixels scaled as clients send them). Both must reach
    the Evaluator's accuracy gate, less what a batch this small cannot tell apart from it
    (3 standard errors): a model at the gate passes, one that serves garbage does not."""
    profile = PROFILES[config.profile]
    pixels, labels = mnist_data.read_examples(eval_dir, examples)
    gate = profile.accuracy_gate
    floor = gate - 3 * math.sqrt(gate * (1 - gate) / max(1, len(labels)))

    def check(rest_url: str, entry: str, label: str) -> smoke.SmokeResult:
        classified = health.classify(rest_url, entry,
                                     [{mnist_data.IMAGE_KEY: p} for p in pixels.tolist()],
                                     signature=EVAL_SIGNATURE, label=label)
        classes = [int(max(result, key=lambda c: c[1])[0]) for result in classified["results"]]
        predicted = health.predict(rest_url, entry, (pixels / 255.0).tolist(),
                                   label=label)
        scores = np.asarray(predicted["predictions"])
        metrics = {"classify accuracy": float(np.mean(np.asarray(classes) == labels)),
                   "predict accuracy": float(np.mean(scores.argmax(axis=1) == labels))}
        return smoke.SmokeResult(
            min(metrics.values()) >= floor, metrics,
            f">= {floor:.3f}: {gate:g} less 3 standard errors of {len(labels)} examples",
            len(labels))
    return check


def build_remote(*, pipeline_name: str, pipeline_root: str, data_root: str, repository: str,
                 profile: str, beam_args: Sequence[str]) -> tfx.dsl.Pipeline:
    """The pipeline for an orchestrator that runs it elsewhere (Kubeflow Pipelines, Vertex
    AI): paths are the workers' URIs, used as given; `data_root` already holds the `train/`
    and `eval/` TFRecords that `prepare_data` writes, and nothing is downloaded here."""
    return create_pipeline(
        pipeline_name=pipeline_name,
        pipeline_root=pipeline_root,
        examples_dir=data_root,
        serving_model_dir=posixpath.join(repository, MODEL_NAME),
        # Kubeflow and Vertex AI keep ML Metadata themselves and ignore this connection.
        metadata_path=posixpath.join(pipeline_root, "metadata.sqlite"),
        beam_pipeline_args=list(beam_args),
        enable_cache=True,
        profile=PROFILES[profile],
        schema_file=IMAGE_SCHEMA_FILE)


def gates(config: RunConfig) -> Dict[str, str]:
    """The Evaluator's blessing gates, as the run summary shows them."""
    profile = PROFILES[config.profile]
    return {METRIC: f">= {profile.accuracy_gate:g}, and at most "
                    f"{profile.max_regression * 100:g} points below the latest blessed model"}


def _hyperparameters(profile: Profile) -> Dict[str, Any]:
    """Every hyperparameter of the Trainer (components/mnist_trainer.py's DEFAULTS), with
    the profile's schedule over them."""
    from components.mnist_trainer import DEFAULTS  # imports TensorFlow

    return {**DEFAULTS, **trainer_config(profile)}


def _instances(images) -> list:
    """uint8 images [N, 28, 28] as serving_default takes them: 784 pixels scaled to [0, 1]."""
    return (np.asarray(images).reshape(len(images), mnist_data.PIXELS) / 255.0).tolist()


def _build(config: RunConfig, log=print, lineage: Optional[Dict[str, Any]] = None
           ) -> tfx.dsl.Pipeline:
    return build(config, log=log, lineage=lineage)


PIPELINE = ModelPipeline(
    name=MODEL_NAME, profiles=PROFILES,
    example_format="tfrecord", prepare_data=prepare_data, write_spans=write_spans,
    data_errors=(mnist_data.MnistDataError,),
    schema_file=SCHEMA_FILE, drift_config_file=DRIFT_CONFIG_FILE,
    transform_module=TRANSFORM_MODULE, trainer_module=TRAINER_MODULE,
    trainer_config=trainer_config, eval_config=eval_config, gates=gates,
    signatures=(EVAL_SIGNATURE,), smoke_check=smoke_check,
    # Its own wiring: the remote pipeline reads the schema from the pipeline image.
    build=_build, build_remote=build_remote, retrain_parts=retrain_parts,
    # Notebook experiments (notebooks/mnist_experiment.ipynb): its own components, every
    # hyperparameter of the Trainer's, and images sent as TF Serving's MNIST clients do.
    create_components=create_components, hyperparameters=_hyperparameters,
    instances=_instances)
