"""The MNIST pipeline: real MNIST -> a CNN that serves TF Serving's MNIST clients unchanged."""

from __future__ import annotations

import dataclasses
import math
import posixpath
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import tensorflow_model_analysis as tfma
from tfx import v1 as tfx

from components import anomalies_gate, mnist_data, repository_pusher
from pipelines.config import RunConfig

MODEL_NAME = "mnist"
COMPONENTS_DIR = Path(mnist_data.__file__).parent
TRANSFORM_MODULE = str(COMPONENTS_DIR / "mnist_transform.py")
TRAINER_MODULE = str(COMPONENTS_DIR / "mnist_trainer.py")
SCHEMA_FILE = str(COMPONENTS_DIR / "mnist_schema.pbtxt")  # curated, not inferred
# The same file in the pipeline image (pipelines/image/Dockerfile), for remote orchestrators.
IMAGE_SCHEMA_FILE = "/opt/tfx-serving-toolkit/components/mnist_schema.pbtxt"
EVAL_SIGNATURE = "classification"
METRIC = "sparse_categorical_accuracy"


@dataclasses.dataclass(frozen=True)
class Profile:
    train_limit: Optional[int] = None  # None: all 60,000 training images
    eval_limit: Optional[int] = None   # None: the whole official 10,000-image test set
    epochs: int = 6
    batch_size: int = 128
    learning_rate: float = 2e-3
    accuracy_gate: float = 0.99
    # Not blessed if more than this much worse than the latest blessed model (0.5 points).
    max_regression: float = 0.005

    def train_steps(self) -> int:
        examples = self.train_limit or 60_000
        return self.epochs * math.ceil(examples / self.batch_size)

    def eval_steps(self) -> int:
        return math.ceil((self.eval_limit or 10_000) / self.batch_size)


PROFILES = {
    "default": Profile(),
    # The tests' configuration: same components and code, a subset and two short epochs.
    "fast": Profile(train_limit=8000, eval_limit=1000, epochs=2, accuracy_gate=0.9),
}


def create_pipeline(*, pipeline_name: str, pipeline_root: str, examples_dir: str,
                    serving_model_dir: str, metadata_path: str,
                    beam_pipeline_args: List[str], enable_cache: bool,
                    profile: Profile, schema_file: str = SCHEMA_FILE) -> tfx.dsl.Pipeline:
    """Wire the components; nothing else."""
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
        module_file=TRANSFORM_MODULE, materialize=False)
    transform.add_upstream_node(gate)
    trainer = tfx.components.Trainer(
        module_file=TRAINER_MODULE,
        examples=example_gen.outputs["examples"],
        transform_graph=transform.outputs["transform_graph"],
        schema=schema_gen.outputs["schema"],
        train_args=tfx.proto.TrainArgs(num_steps=profile.train_steps()),
        eval_args=tfx.proto.EvalArgs(num_steps=profile.eval_steps()),
        custom_config={"epochs": profile.epochs, "batch_size": profile.batch_size,
                       "learning_rate": profile.learning_rate})
    trainer.add_upstream_node(gate)
    baseline = tfx.dsl.Resolver(
        strategy_class=tfx.dsl.experimental.LatestBlessedModelStrategy,
        model=tfx.dsl.Channel(type=tfx.types.standard_artifacts.Model),
        model_blessing=tfx.dsl.Channel(type=tfx.types.standard_artifacts.ModelBlessing),
    ).with_id("latest_blessed_model_resolver")
    evaluator = tfx.components.Evaluator(
        examples=example_gen.outputs["examples"],
        model=trainer.outputs["model"],
        baseline_model=baseline.outputs["model"],
        schema=schema_gen.outputs["schema"],
        eval_config=eval_config(profile))
    pusher = repository_pusher.RepositoryPusher(
        model=trainer.outputs["model"], model_blessing=evaluator.outputs["blessing"],
        serving_model_dir=serving_model_dir)
    return tfx.dsl.Pipeline(
        pipeline_name=pipeline_name,
        pipeline_root=pipeline_root,
        components=[example_gen, statistics_gen, schema_gen, example_validator, gate, transform,
                    trainer, baseline, evaluator, pusher],
        enable_cache=enable_cache,
        metadata_connection_config=tfx.orchestration.metadata.sqlite_metadata_connection_config(
            metadata_path),
        beam_pipeline_args=beam_pipeline_args)


def eval_config(profile: Profile) -> tfma.EvalConfig:
    """An absolute accuracy gate, and a no-regression gate against the latest blessed model."""
    return tfma.EvalConfig(
        model_specs=[tfma.ModelSpec(signature_name=EVAL_SIGNATURE, label_key="label",
                                    prediction_key="scores")],
        slicing_specs=[tfma.SlicingSpec()],
        metrics_specs=[tfma.MetricsSpec(metrics=[tfma.MetricConfig(
            class_name="SparseCategoricalAccuracy",
            threshold=tfma.MetricThreshold(
                value_threshold=tfma.GenericValueThreshold(
                    lower_bound={"value": profile.accuracy_gate}),
                change_threshold=tfma.GenericChangeThreshold(
                    direction=tfma.MetricDirection.HIGHER_IS_BETTER,
                    absolute={"value": -profile.max_regression})))])])


def prepare_data(config: RunConfig, profile: Profile, log=print) -> Path:
    """ImportExampleGen's input: the user's TFRecords as given, or MNIST from its routes."""
    if config.data_dir is not None and mnist_data.is_examples_dir(config.data_dir):
        mnist_data.check_examples_dir(config.data_dir)  # readable; ExampleValidator checks contents
        return Path(config.data_dir).absolute()
    return mnist_data.prepare_mnist(
        (config.cache_dir / "mnist").absolute(), data_dir=config.data_dir,
        train_limit=profile.train_limit, eval_limit=profile.eval_limit, log=log).absolute()


def build(config: RunConfig, profile: Optional[Profile] = None, log=print) -> tfx.dsl.Pipeline:
    profile = profile or PROFILES[config.profile]
    return create_pipeline(
        pipeline_name=MODEL_NAME,
        pipeline_root=str(config.pipeline_dir(MODEL_NAME)),
        examples_dir=str(prepare_data(config, profile, log)),
        serving_model_dir=str(config.model_destination(MODEL_NAME)),
        metadata_path=str(config.metadata_path(MODEL_NAME)),
        beam_pipeline_args=list(config.beam_args),
        enable_cache=config.enable_cache,
        profile=profile)


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
