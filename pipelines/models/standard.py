"""The toolkit's standard wiring of a model's parts (pipelines/models/contract.py) into TFX
pipelines, for a model that brings no `build`, `build_remote` or `retrain_parts` of its own.

`run`'s pipeline, and the one `compile` writes for another orchestrator:

    ExampleGen (train/*, eval/*) -> StatisticsGen -> ExampleValidator (curated schema)
    -> AnomaliesGate -> [Transform] -> Trainer -> Evaluator (the model's gates, against
    the latest blessed model) -> RepositoryPusher

and the model's part of the retraining pipeline (pipelines/models/retraining_pipeline.py): the same
ExampleGen, schema, drift thresholds, Transform, Trainer and gates. Only wiring here.
"""

from __future__ import annotations

import dataclasses
import posixpath
from typing import Any, Dict, List, Optional, Sequence

from tfx import v1 as tfx

from components import anomalies_gate, repository_pusher
from pipelines.models import resolvers, retraining_pipeline
from pipelines.config import RunConfig
from pipelines.models.contract import ModelPipeline


def example_gen_class(model: ModelPipeline):
    return {"csv": tfx.components.CsvExampleGen,
            "tfrecord": tfx.components.ImportExampleGen}[model.example_format]


def trainer_config(model: ModelPipeline, profile: Any) -> Dict[str, Any]:
    """The Trainer's custom_config: the model's own, else the profile's fields."""
    if model.trainer_config is not None:
        return dict(model.trainer_config(profile))
    return dataclasses.asdict(profile)


@dataclasses.dataclass(frozen=True)
class Components:
    """`run`'s components, wired: `create_pipeline` runs them all; a notebook runs them one
    by one with TFX's InteractiveContext (pipelines/notebook/experiment.py)."""

    example_gen: Any
    statistics_gen: Any
    schema_gen: Any
    example_validator: Any
    anomalies_gate: Any
    transform: Optional[Any]
    trainer: Any
    baseline: Optional[Any]  # a node with a `model` output: the model the Evaluator compares with
    evaluator: Any
    pusher: Any

    @property
    def nodes(self) -> List[Any]:
        """In pipeline order, without the parts a model does not have."""
        nodes = [getattr(self, f.name) for f in dataclasses.fields(self)]
        return [node for node in nodes if node is not None]


def create_components(model: ModelPipeline, profile: Any, *, data_root: str,
                      serving_model_dir: str, baseline: Optional[Any],
                      lineage: Optional[Dict[str, Any]] = None,
                      hyperparameters: Optional[Dict[str, Any]] = None) -> Components:
    """The components of `run`'s pipeline. `baseline`: a node with a `model` output the
    Evaluator compares with (None: the value thresholds only). `hyperparameters` (a
    notebook's variant) replace the profile's fields of the same name and are added to
    the Trainer's custom_config."""
    overrides = dict(hyperparameters or {})
    fields = {f.name for f in dataclasses.fields(profile)}
    profile = dataclasses.replace(profile, **{k: overrides.pop(k) for k in list(overrides)
                                              if k in fields})
    example_gen = example_gen_class(model)(
        input_base=data_root,
        input_config=tfx.proto.Input(splits=[
            tfx.proto.Input.Split(name="train", pattern="train/*"),
            tfx.proto.Input.Split(name="eval", pattern="eval/*"),
        ]))
    statistics_gen = tfx.components.StatisticsGen(examples=example_gen.outputs["examples"])
    schema_gen = tfx.components.ImportSchemaGen(schema_file=model.schema_file)
    example_validator = tfx.components.ExampleValidator(
        statistics=statistics_gen.outputs["statistics"], schema=schema_gen.outputs["schema"])
    gate = anomalies_gate.AnomaliesGate(anomalies=example_validator.outputs["anomalies"])
    transform = None
    if model.transform_module:
        transform = tfx.components.Transform(
            examples=example_gen.outputs["examples"], schema=schema_gen.outputs["schema"],
            module_file=model.transform_module, materialize=False,
            disable_statistics=True)  # StatisticsGen describes the data; no second pass
        transform.add_upstream_node(gate)
    trainer = tfx.components.Trainer(
        module_file=model.trainer_module,
        examples=example_gen.outputs["examples"],
        transform_graph=transform.outputs["transform_graph"] if transform else None,
        schema=schema_gen.outputs["schema"],
        train_args=tfx.proto.TrainArgs(),  # epochs: the module decides (custom_config)
        eval_args=tfx.proto.EvalArgs(),
        custom_config={**trainer_config(model, profile), **overrides})
    trainer.add_upstream_node(gate)
    evaluator = tfx.components.Evaluator(
        examples=example_gen.outputs["examples"],
        model=trainer.outputs["model"],
        baseline_model=baseline.outputs["model"] if baseline is not None else None,
        schema=schema_gen.outputs["schema"],
        eval_config=model.eval_config(profile))
    pusher = repository_pusher.RepositoryPusher(
        model=trainer.outputs["model"], model_blessing=evaluator.outputs["blessing"],
        serving_model_dir=serving_model_dir, examples=example_gen.outputs["examples"],
        evaluation=evaluator.outputs["evaluation"], lineage=lineage)
    return Components(example_gen, statistics_gen, schema_gen, example_validator, gate,
                      transform, trainer, baseline, evaluator, pusher)


def create_pipeline(model: ModelPipeline, profile: Any, *, pipeline_name: str,
                    pipeline_root: str, data_root: str, serving_model_dir: str,
                    metadata_path: str, beam_pipeline_args: List[str], enable_cache: bool,
                    lineage: Optional[Dict[str, Any]] = None) -> tfx.dsl.Pipeline:
    """`create_components`, compared with the latest blessed model, as one pipeline."""
    components = create_components(model, profile, data_root=data_root,
                                   serving_model_dir=serving_model_dir,
                                   baseline=resolvers.latest_blessed_model(), lineage=lineage)
    return retraining_pipeline.local_pipeline(pipeline_name, pipeline_root, components.nodes,
                                              enable_cache, metadata_path, beam_pipeline_args)


def build(model: ModelPipeline, config: RunConfig, log=print,
          lineage: Optional[Dict[str, Any]] = None) -> tfx.dsl.Pipeline:
    """`run`'s pipeline over the model's own data (or --data-dir)."""
    profile = model.profile(config.profile)
    data_root = model.prepare_data(config, profile, log)
    return create_pipeline(
        model, profile, pipeline_name=model.name,
        pipeline_root=str(config.pipeline_dir(model.name)), data_root=str(data_root),
        serving_model_dir=str(config.model_destination(model.name)),
        metadata_path=str(config.metadata_path(model.name)),
        beam_pipeline_args=list(config.beam_args), enable_cache=config.enable_cache,
        lineage=lineage)


def build_remote(model: ModelPipeline, *, pipeline_name: str, pipeline_root: str,
                 data_root: str, repository: str, profile: str,
                 beam_args: Sequence[str]) -> tfx.dsl.Pipeline:
    """The pipeline for an orchestrator that runs it elsewhere: paths are the workers'
    URIs, used as given; `data_root` already holds train/ and eval/. The model's schema
    and module files are read from the same paths in the workers' image."""
    return create_pipeline(
        model, model.profile(profile), pipeline_name=pipeline_name,
        pipeline_root=pipeline_root, data_root=data_root,
        serving_model_dir=posixpath.join(repository, model.name),
        # Kubeflow and Vertex AI keep ML Metadata themselves and ignore this connection.
        metadata_path=posixpath.join(pipeline_root, "metadata.sqlite"),
        beam_pipeline_args=list(beam_args), enable_cache=True)


def retrain_parts(model: ModelPipeline, profile: Any,
                  trainer_module: Optional[str] = None) -> retraining_pipeline.ModelParts:
    """The model's part of the retraining pipeline, from its declared parts."""
    return retraining_pipeline.ModelParts(
        example_gen=example_gen_class(model),
        schema_file=model.schema_file,
        drift_config=retraining_pipeline.load_drift_config(model.drift_config_file),
        transform_module=model.transform_module,
        trainer_module=trainer_module or model.trainer_module,
        trainer_config=trainer_config(model, profile),
        eval_config=model.eval_config(profile),
        infra_signatures=tuple(model.signatures))


def complete(model: ModelPipeline) -> ModelPipeline:
    """`model` with the standard wiring wherever it brings none of its own."""
    import functools

    def components(*, examples_dir: str, serving_model_dir: str, profile: Any,
                   baseline: Optional[Any], lineage: Optional[Dict[str, Any]] = None,
                   hyperparameters: Optional[Dict[str, Any]] = None) -> Components:
        return create_components(model, profile, data_root=examples_dir,
                                 serving_model_dir=serving_model_dir, baseline=baseline,
                                 lineage=lineage, hyperparameters=hyperparameters)

    return dataclasses.replace(
        model,
        build=model.build or (lambda config, log, lineage: build(model, config, log, lineage)),
        build_remote=model.build_remote or functools.partial(build_remote, model),
        retrain_parts=model.retrain_parts or functools.partial(retrain_parts, model),
        create_components=model.create_components or components,
        hyperparameters=model.hyperparameters or functools.partial(trainer_config, model),
        instances=model.instances or (lambda inputs: [
            x.tolist() if hasattr(x, "tolist") else x for x in inputs]))
