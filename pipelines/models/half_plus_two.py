"""The half_plus_two pipeline: CSV (x, y) -> a model that serves like TF Serving's demo."""

from __future__ import annotations

import dataclasses
import posixpath
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import numpy as np
import tensorflow_model_analysis as tfma
from tfx import v1 as tfx

from components import half_plus_two_data, repository_pusher
from pipelines.models import retraining_pipeline, smoke
from pipelines.config import RunConfig
from pipelines.models.contract import ModelPipeline
from serving.lifecycle import health

MODEL_NAME = "half_plus_two"
COMPONENTS_DIR = Path(half_plus_two_data.__file__).parent
TRAINER_MODULE = str(COMPONENTS_DIR / "half_plus_two_trainer.py")
RETRAIN_SCHEMA_FILE = str(COMPONENTS_DIR / "half_plus_two_schema.pbtxt")
DRIFT_CONFIG_FILE = str(COMPONENTS_DIR / "half_plus_two_drift.pbtxt")
EVAL_SIGNATURE = "regress_x_to_y"
METRIC = "mean_squared_error"


@dataclasses.dataclass(frozen=True)
class Profile:
    num_examples: int = 2000
    train_steps: int = 1000
    eval_steps: int = 20
    # A correct model reaches ~1e-10; a model that is off by 0.01 in w or b does not pass.
    mse_threshold: float = 1e-4
    # Retraining: a warm-started model starts from the last w and b and takes fewer steps.
    warm_start_steps: int = 200
    # `make-spans`: rows per span and split.
    span_train_size: int = 800
    span_eval_size: int = 200


PROFILES = {"default": Profile(),
            "fast": Profile(num_examples=500, train_steps=600, warm_start_steps=100,
                            span_train_size=400, span_eval_size=100)}


def create_pipeline(*, pipeline_name: str, pipeline_root: str, data_root: str,
                    module_file: str, serving_model_dir: str, metadata_path: str,
                    beam_pipeline_args: List[str], enable_cache: bool,
                    profile: Profile, lineage: Optional[Dict[str, Any]] = None
                    ) -> tfx.dsl.Pipeline:
    """Wire the components; nothing else."""
    example_gen = tfx.components.CsvExampleGen(
        input_base=data_root,
        output_config=tfx.proto.Output(split_config=tfx.proto.SplitConfig(splits=[
            tfx.proto.SplitConfig.Split(name="train", hash_buckets=4),
            tfx.proto.SplitConfig.Split(name="eval", hash_buckets=1),
        ])))
    statistics_gen = tfx.components.StatisticsGen(examples=example_gen.outputs["examples"])
    schema_gen = tfx.components.SchemaGen(
        statistics=statistics_gen.outputs["statistics"], infer_feature_shape=True)
    example_validator = tfx.components.ExampleValidator(
        statistics=statistics_gen.outputs["statistics"], schema=schema_gen.outputs["schema"])
    trainer = tfx.components.Trainer(
        module_file=module_file,
        examples=example_gen.outputs["examples"],
        schema=schema_gen.outputs["schema"],
        train_args=tfx.proto.TrainArgs(num_steps=profile.train_steps),
        eval_args=tfx.proto.EvalArgs(num_steps=profile.eval_steps))
    evaluator = tfx.components.Evaluator(
        examples=example_gen.outputs["examples"],
        model=trainer.outputs["model"],
        eval_config=eval_config(profile.mse_threshold))
    pusher = repository_pusher.RepositoryPusher(
        model=trainer.outputs["model"], model_blessing=evaluator.outputs["blessing"],
        serving_model_dir=serving_model_dir, examples=example_gen.outputs["examples"],
        evaluation=evaluator.outputs["evaluation"], lineage=lineage)
    return retraining_pipeline.local_pipeline(
        pipeline_name, pipeline_root, [example_gen, statistics_gen, schema_gen,
                                       example_validator, trainer, evaluator, pusher],
        enable_cache, metadata_path, beam_pipeline_args)


def eval_config(mse_threshold: float) -> tfma.EvalConfig:
    """Bless only a model whose mean squared error on the eval split is under the threshold."""
    return tfma.EvalConfig(
        model_specs=[tfma.ModelSpec(signature_name=EVAL_SIGNATURE, label_key="y")],
        slicing_specs=[tfma.SlicingSpec()],
        metrics_specs=[tfma.MetricsSpec(metrics=[tfma.MetricConfig(
            class_name="MeanSquaredError",
            threshold=tfma.MetricThreshold(value_threshold=tfma.GenericValueThreshold(
                upper_bound={"value": mse_threshold})))])])


def retrain_parts(profile: Profile, trainer_module: str = TRAINER_MODULE
                  ) -> retraining_pipeline.ModelParts:
    """half_plus_two's part of the retraining pipeline: CSV spans, a curated schema, drift
    of x and y, the same Trainer and MSE gate as `run`."""
    return retraining_pipeline.ModelParts(
        example_gen=tfx.components.CsvExampleGen,
        schema_file=RETRAIN_SCHEMA_FILE,
        drift_config=retraining_pipeline.load_drift_config(DRIFT_CONFIG_FILE),
        trainer_module=trainer_module,
        trainer_config={"warm_start_steps": profile.warm_start_steps},
        train_steps=profile.train_steps,
        eval_steps=profile.eval_steps,
        eval_config=eval_config(profile.mse_threshold),
        infra_signatures=(EVAL_SIGNATURE,))


def prepare_data(config: RunConfig, profile: Profile, log=print) -> Path:
    """Validate the user's CSV directory, or write the generated one; returns ExampleGen's input."""
    if config.data_dir is not None:
        half_plus_two_data.validate_csv_dir(config.data_dir)
        return Path(config.data_dir).absolute()
    data_dir = config.pipeline_dir(MODEL_NAME) / "data" / f"n{profile.num_examples}"
    if not (data_dir / "data.csv").exists():
        half_plus_two_data.write_examples(data_dir, profile.num_examples)
    return data_dir


def build(config: RunConfig, log=print,
          lineage: Optional[Dict[str, Any]] = None) -> tfx.dsl.Pipeline:
    profile = PROFILES[config.profile]
    data_root = prepare_data(config, profile)
    return create_pipeline(
        pipeline_name=MODEL_NAME,
        pipeline_root=str(config.pipeline_dir(MODEL_NAME)),
        data_root=str(data_root),
        module_file=TRAINER_MODULE,
        serving_model_dir=str(config.model_destination(MODEL_NAME)),
        metadata_path=str(config.metadata_path(MODEL_NAME)),
        beam_pipeline_args=list(config.beam_args),
        enable_cache=config.enable_cache,
        profile=profile,
        lineage=lineage)


def write_spans(config: RunConfig, out_dir: Path, span_numbers: List[int],
                kind: str) -> List[Path]:
    """`make-spans`: generated (x, y) rows as CSV spans of the profile's size."""
    from components import spans

    profile = PROFILES[config.profile]
    sizes = {"train": profile.span_train_size, "eval": profile.span_eval_size}
    return [spans.write_span(out_dir, span, lambda split, d, span=span:
                             half_plus_two_data.write_span_split(d, span, split, sizes[split],
                                                                 kind))
            for span in span_numbers]


def smoke_check(eval_dir: Path, config: RunConfig, examples: int) -> smoke.SmokeCheck:
    """The post-push check: the first `examples` (x, y) rows of the newest span's eval CSV,
    through the server's Regress API (`regress_x_to_y`) and Predict API
    (`serving_default`); both must stay under the Evaluator's MSE gate."""
    threshold = PROFILES[config.profile].mse_threshold
    rows = half_plus_two_data.read_rows(eval_dir)[:examples]
    xs = np.array([x for x, _ in rows])
    ys = np.array([y for _, y in rows])

    def check(rest_url: str, entry: str, label: str) -> smoke.SmokeResult:
        regressed = health.regress(rest_url, entry,
                                   [{half_plus_two_data.FEATURE: float(x)} for x in xs],
                                   signature=EVAL_SIGNATURE, label=label)
        predicted = health.predict(rest_url, entry, xs.tolist(), label=label)
        metrics = {
            "regress mean_squared_error":
                float(np.mean((np.asarray(regressed["results"]) - ys) ** 2)),
            "predict mean_squared_error":
                float(np.mean((np.asarray(predicted["predictions"]) - ys) ** 2))}
        return smoke.SmokeResult(max(metrics.values()) < threshold, metrics,
                                 f"< {threshold:g}", len(ys))
    return check


def build_remote(*, pipeline_name: str, pipeline_root: str, data_root: str, repository: str,
                 profile: str, beam_args: Sequence[str]) -> tfx.dsl.Pipeline:
    """The pipeline for an orchestrator that runs it elsewhere (Kubeflow Pipelines, Vertex
    AI): paths are the workers' URIs, used as given; `data_root` already holds x,y CSV files
    (`validate_csv_dir` is not run on a remote directory), and nothing is written here."""
    return create_pipeline(
        pipeline_name=pipeline_name,
        pipeline_root=pipeline_root,
        data_root=data_root,
        module_file=TRAINER_MODULE,
        serving_model_dir=posixpath.join(repository, MODEL_NAME),
        # Kubeflow and Vertex AI keep ML Metadata themselves and ignore this connection.
        metadata_path=posixpath.join(pipeline_root, "metadata.sqlite"),
        beam_pipeline_args=list(beam_args),
        enable_cache=True,
        profile=PROFILES[profile])


def gates(config: RunConfig) -> Dict[str, str]:
    """The Evaluator's blessing gates, as the run summary shows them."""
    return {METRIC: f"< {PROFILES[config.profile].mse_threshold:g}"}


PIPELINE = ModelPipeline(
    name=MODEL_NAME, profiles=PROFILES,
    example_format="csv", prepare_data=prepare_data, write_spans=write_spans,
    data_errors=(half_plus_two_data.DataError,),
    schema_file=RETRAIN_SCHEMA_FILE, drift_config_file=DRIFT_CONFIG_FILE,
    trainer_module=TRAINER_MODULE,
    eval_config=lambda profile: eval_config(profile.mse_threshold), gates=gates,
    signatures=(EVAL_SIGNATURE,), smoke_check=smoke_check,
    # Its own wiring: `run` infers the schema (SchemaGen) from the generated CSV and trains
    # a fixed number of steps; retraining warm-starts for fewer.
    build=build, build_remote=build_remote, retrain_parts=retrain_parts)
