"""The retraining pipeline: the newest span in, a warm-started and verified model out.

One definition for every model; what differs (ExampleGen, schema, drift thresholds,
Transform, Trainer module, eval config, the signatures InfraValidator calls) comes in a
`ModelParts` from the model's own module (`pipelines/models/mnist.py`, `pipelines/models/half_plus_two.py`).

    ExampleGen (newest span) -> StatisticsGen -> ExampleValidator -> AnomaliesGate
                                              -> DistributionValidator -> DriftGate
                                 (vs. the previous span's statistics, from ML Metadata)
    span_window (newest K spans, from ML Metadata) -> [Transform] -> Trainer
                                 (warm start: the latest blessed model) -> Evaluator
                                 (absolute and no-regression gates) -> [InfraValidator] -> Pusher

`create_pipeline` only wires components; the gates, the window and the lineage record
are components of their own.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Dict, List, Optional, Sequence

import tensorflow_model_analysis as tfma
from tfx import v1 as tfx
from tfx.components import DistributionValidator  # not in tfx.v1 yet (TFX 1.16)
from tfx.proto import distribution_validator_pb2

from components import anomalies_gate, repository_pusher, spans
from components.span_window import SpanWindowStrategy
from pipelines.models import resolvers

EXAMPLE_GEN_ID = "ExampleGen"
STATISTICS_GEN_ID = "StatisticsGen"


@dataclasses.dataclass(frozen=True)
class ModelParts:
    """What one model brings to the retraining pipeline."""

    # (input_base, input_config) -> an ExampleGen component (Import or Csv).
    example_gen: Callable[..., Any]
    schema_file: str                     # curated schema (ImportSchemaGen)
    drift_config: distribution_validator_pb2.DistributionValidatorConfig
    trainer_module: str
    eval_config: tfma.EvalConfig
    infra_signatures: Sequence[str]      # signatures InfraValidator sends requests to
    trainer_config: Dict[str, Any] = dataclasses.field(default_factory=dict)
    train_steps: Optional[int] = None    # None: epochs over the window (the module decides)
    eval_steps: Optional[int] = None
    transform_module: Optional[str] = None


@dataclasses.dataclass
class DataGates:
    """The components that ingest one span and judge it, before anything trains on it."""

    example_gen: Any
    schema_gen: Any
    previous_statistics: Any
    statistics_gen: Any
    example_validator: Any
    anomalies: Any
    distribution_validator: Any
    drift: Any

    def components(self) -> List[Any]:
        return [self.example_gen, self.schema_gen, self.previous_statistics,
                self.statistics_gen, self.example_validator, self.anomalies,
                self.distribution_validator, self.drift]


def create_data_gates(parts: ModelParts, data_root: str, accept_drift: bool,
                      span: Optional[int] = None) -> DataGates:
    """ExampleGen on the newest span (or on `span`), its statistics, the schema gate and
    the drift gate against the previous accepted span."""
    range_config = None if span is None else tfx.proto.RangeConfig(
        static_range=tfx.proto.StaticRange(start_span_number=span, end_span_number=span))
    example_gen = parts.example_gen(input_base=data_root, input_config=spans.input_config(),
                                    range_config=range_config).with_id(EXAMPLE_GEN_ID)
    schema_gen = tfx.components.ImportSchemaGen(schema_file=parts.schema_file)
    # Before this run's StatisticsGen: the newest statistics still LIVE are the previous
    # accepted span's (a rejected span's are marked ABANDONED by the runner).
    previous_statistics = tfx.dsl.Resolver(
        strategy_class=tfx.dsl.experimental.LatestArtifactStrategy,
        statistics=tfx.dsl.Channel(type=tfx.types.standard_artifacts.ExampleStatistics,
                                   producer_component_id=STATISTICS_GEN_ID),
    ).with_id("previous_span_statistics")
    statistics_gen = tfx.components.StatisticsGen(
        examples=example_gen.outputs["examples"], schema=schema_gen.outputs["schema"]
    ).with_id(STATISTICS_GEN_ID)
    statistics_gen.add_upstream_node(previous_statistics)
    example_validator = tfx.components.ExampleValidator(
        statistics=statistics_gen.outputs["statistics"], schema=schema_gen.outputs["schema"])
    distribution_validator = DistributionValidator(
        statistics=statistics_gen.outputs["statistics"],
        baseline_statistics=previous_statistics.outputs["statistics"].as_optional(),
        config=parts.drift_config)
    return DataGates(
        example_gen=example_gen, schema_gen=schema_gen,
        previous_statistics=previous_statistics, statistics_gen=statistics_gen,
        example_validator=example_validator,
        anomalies=anomalies_gate.AnomaliesGate(
            anomalies=example_validator.outputs["anomalies"]),
        distribution_validator=distribution_validator,
        drift=anomalies_gate.DriftGate(anomalies=distribution_validator.outputs["anomalies"],
                                       accept_drift=accept_drift))


def create_ingest_pipeline(*, parts: ModelParts, pipeline_name: str, pipeline_root: str,
                           data_root: str, metadata_path: str, beam_pipeline_args: List[str],
                           enable_cache: bool, accept_drift: bool, span: int
                           ) -> tfx.dsl.Pipeline:
    """The data gates alone, on one older span: how a first run with several spans waiting
    fills its window (ExampleGen ingests one span per run, the newest unless told)."""
    gates = create_data_gates(parts, data_root, accept_drift, span)
    return local_pipeline(pipeline_name, pipeline_root, gates.components(), enable_cache,
                          metadata_path, beam_pipeline_args)


def create_pipeline(*, parts: ModelParts, model_name: str, pipeline_name: str,
                    pipeline_root: str,
                    data_root: str, serving_model_dir: str, metadata_path: str,
                    beam_pipeline_args: List[str], enable_cache: bool, window: int,
                    accept_drift: bool, infra_image: Optional[str],
                    lineage: Dict[str, Any]) -> tfx.dsl.Pipeline:
    """Wire the retraining components; nothing else. `infra_image` None: no InfraValidator."""
    gates = create_data_gates(parts, data_root, accept_drift)
    example_gen, schema_gen = gates.example_gen, gates.schema_gen
    span_window = tfx.dsl.Resolver(
        strategy_class=SpanWindowStrategy,
        config={"num_spans": window},
        examples=tfx.dsl.Channel(type=tfx.types.standard_artifacts.Examples,
                                 producer_component_id=EXAMPLE_GEN_ID),
    ).with_id("span_window")
    span_window.add_upstream_node(gates.anomalies)  # only spans that passed both gates
    span_window.add_upstream_node(gates.drift)
    examples = span_window.outputs["examples"]
    latest_blessed = resolvers.latest_blessed_model()
    transform = None
    if parts.transform_module:
        transform = tfx.components.Transform(
            examples=examples, schema=schema_gen.outputs["schema"],
            module_file=parts.transform_module, materialize=False,
            disable_statistics=True)  # StatisticsGen describes the data; no second pass
    trainer = tfx.components.Trainer(
        module_file=parts.trainer_module,
        examples=examples,
        transform_graph=transform.outputs["transform_graph"] if transform else None,
        schema=schema_gen.outputs["schema"],
        base_model=latest_blessed.outputs["model"],
        train_args=tfx.proto.TrainArgs(num_steps=parts.train_steps),
        eval_args=tfx.proto.EvalArgs(num_steps=parts.eval_steps),
        custom_config=parts.trainer_config)
    evaluator = tfx.components.Evaluator(
        examples=examples,
        model=trainer.outputs["model"],
        baseline_model=latest_blessed.outputs["model"],
        schema=schema_gen.outputs["schema"],
        eval_config=parts.eval_config)
    infra_validator = None
    if infra_image:
        from components import infra_validation  # the Docker SDK: only when it will run

        infra_validator = infra_validation.create_infra_validator(
            model=trainer.outputs["model"], examples=example_gen.outputs["examples"],
            image=infra_image, signature_names=list(parts.infra_signatures),
            model_name=model_name)
    pusher = repository_pusher.RepositoryPusher(
        model=trainer.outputs["model"], model_blessing=evaluator.outputs["blessing"],
        infra_blessing=infra_validator.outputs["blessing"] if infra_validator else None,
        serving_model_dir=serving_model_dir, examples=examples,
        evaluation=evaluator.outputs["evaluation"], base_model=latest_blessed.outputs["model"],
        lineage=lineage)
    components = gates.components() + [span_window, latest_blessed, transform, trainer,
                                       evaluator, infra_validator, pusher]
    return local_pipeline(pipeline_name, pipeline_root, [c for c in components if c is not None],
                          enable_cache, metadata_path, beam_pipeline_args)


def local_pipeline(name: str, root: str, components: List[Any], enable_cache: bool,
                   metadata_path: str, beam_pipeline_args: List[str]) -> tfx.dsl.Pipeline:
    """A TFX pipeline whose ML Metadata is the SQLite store at `metadata_path`: every
    pipeline here (`run`, `retrain`, its ingest) is built this way for LocalDagRunner."""
    return tfx.dsl.Pipeline(
        pipeline_name=name, pipeline_root=root, components=components,
        enable_cache=enable_cache,
        metadata_connection_config=tfx.orchestration.metadata.sqlite_metadata_connection_config(
            metadata_path),
        beam_pipeline_args=beam_pipeline_args)


def load_drift_config(path: str) -> distribution_validator_pb2.DistributionValidatorConfig:
    """A text DistributionValidatorConfig: which features to compare, and the thresholds."""
    from google.protobuf import text_format

    with open(path) as f:
        return text_format.Parse(f.read(), distribution_validator_pb2.DistributionValidatorConfig())
