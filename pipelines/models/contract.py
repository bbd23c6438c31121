"""What a model provides to be trained, served and retrained by the toolkit: `ModelPipeline`.

A model is one `ModelPipeline` value, `PIPELINE`, in its module: the built-in ones in
pipelines/models/mnist.py and pipelines/models/half_plus_two.py, a model project's in its `model.py`
(`python -m pipelines new` writes one; `--model-dir DIR` or $TOOLKIT_MODEL_DIR names it).
Every command reaches a model through this contract and nothing else
(pipelines/models/registry.py loads it and calls `check`).

The parts are declared once, below, each with what it is for. The pipelines themselves
(`run`'s, the remote one `compile` writes, the retraining pipeline's model part) are the
toolkit's standard wiring (pipelines/models/standard.py) unless the model brings its own
`build`, `build_remote` or `retrain_parts`; likewise what a notebook experiment
(pipelines/notebook/experiment.py) needs.

This module imports nothing heavy: the CLI reads it before TensorFlow is imported.
"""

from __future__ import annotations

import dataclasses
import inspect
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

if TYPE_CHECKING:  # for the annotations only: importing them pulls in TensorFlow
    import tensorflow_model_analysis as tfma
    from tfx import v1 as tfx

    from pipelines.models import retraining_pipeline, smoke

# The profiles every command's --profile offers; each model defines both.
PROFILE_NAMES = ("default", "fast")
EXAMPLE_FORMATS = ("csv", "tfrecord")
MODEL_NAME_PATTERN = re.compile(r"^[a-z][a-z0-9_]*$")


class ModelContractError(ValueError):
    """A model that does not meet the contract; the message names the part."""


def part(doc: str, kind: str, *, required: bool = True, params: Tuple[str, ...] = (),
         default: Any = None) -> Any:
    """A declared part of the contract: `doc` says what it is for (and is what an error
    about it quotes); `kind` how `check` verifies it; `params` a callable's parameters."""
    return dataclasses.field(default=default, metadata={
        "doc": doc, "kind": kind, "required": required, "params": params})


@dataclasses.dataclass(frozen=True)
class ModelPipeline:
    """A model, as the toolkit trains, gates, publishes, serves and retrains it."""

    # ---- identity ----------------------------------------------------------------------
    name: str = part(
        "the model's name: its directory in the repository (<repository>/NAME/), the name "
        "servers serve it under, and its pipelines' names (NAME, NAME_retrain, "
        "NAME_notebook); lower case letters, digits and _", "name")

    # ---- sizes -------------------------------------------------------------------------
    profiles: Mapping[str, Any] = part(
        "named sizes, 'default' and 'fast' (the tests' small, quick configuration): each a "
        "dataclass instance, whose fields the Trainer receives in its custom_config and the "
        "lineage record lists as hyperparameters", "profiles")

    # ---- data source and spans ---------------------------------------------------------
    example_format: str = part(
        "what ExampleGen reads: 'csv' (CsvExampleGen; a header row names the features) or "
        "'tfrecord' (ImportExampleGen; GZIP or plain TFRecords of tf.Example)", "format")
    prepare_data: Callable[..., Path] = part(
        "prepare_data(config, profile, log) -> a directory holding train/ and eval/ files, "
        "`run`'s input: config.data_dir (--data-dir) checked when given, else the model's "
        "own data source (downloaded, generated or shipped)", "callable",
        params=("config", "profile", "log"))
    write_spans: Callable[..., List[Path]] = part(
        "write_spans(config, out_dir, span_numbers, kind) -> the span directories written "
        "(components/spans.write_span: span-N/train/, span-N/eval/), for `make-spans`; kind "
        "is clean, corrupted (the schema gate must stop it) or label-shift (the drift gate "
        "must stop it)", "callable", params=("config", "out_dir", "span_numbers", "kind"))
    data_errors: Tuple[type, ...] = part(
        "exception classes prepare_data raises for unusable input data: reported in one "
        "line, without a traceback", "exceptions", required=False, default=())

    # ---- schema and drift --------------------------------------------------------------
    schema_file: str = part(
        "the curated schema (a TFMD Schema in text format, ImportSchemaGen): ExampleValidator "
        "and the AnomaliesGate stop data that breaks it", "file")
    drift_config_file: str = part(
        "the drift thresholds (a DistributionValidatorConfig in text format): retraining's "
        "DriftGate stops a span whose statistics moved further than these from the "
        "previous accepted span's", "file")

    # ---- transform and trainer ---------------------------------------------------------
    trainer_module: str = part(
        "the Trainer's module file (TFX's module_file, with run_fn(fn_args)); it exports the "
        "SavedModel with `signatures`, and warm-starts from fn_args.base_model when "
        "retraining", "file")
    transform_module: Optional[str] = part(
        "the Transform's module file (preprocessing_fn), or None for no Transform; the "
        "Trainer then receives fn_args.transform_output", "file", required=False)
    trainer_config: Optional[Callable[..., Dict[str, Any]]] = part(
        "trainer_config(profile) -> the Trainer's custom_config (default: the profile's "
        "fields)", "callable", required=False, params=("profile",))

    # ---- evaluation gates --------------------------------------------------------------
    eval_config: Callable[..., "tfma.EvalConfig"] = part(
        "eval_config(profile) -> the Evaluator's tfma.EvalConfig: the metrics and their "
        "thresholds (value thresholds, and change thresholds against the latest blessed "
        "model); only a model that passes is blessed and pushed", "callable",
        params=("profile",))
    gates: Callable[..., Dict[str, str]] = part(
        "gates(config) -> {metric: the gate in words}, as the run summary and the lineage "
        "record show eval_config's thresholds", "callable", params=("config",))

    # ---- signatures --------------------------------------------------------------------
    signatures: Sequence[str] = part(
        "the SavedModel's signatures that take serialized tf.Examples (classify, regress or "
        "predict): InfraValidator sends the eval examples to each before a push; the "
        "Evaluator scores the one eval_config's model_spec names. serving_default serves "
        "REST/gRPC predict as clients send instances", "signatures")

    # ---- after the push ----------------------------------------------------------------
    smoke_check: Callable[..., "smoke.SmokeCheck"] = part(
        "smoke_check(eval_dir, config, examples) -> check(rest_url, entry, label) -> "
        "smoke.SmokeResult: the first `examples` eval examples of the newest span, "
        "through the running server's canary; a failed check rejects the version",
        "callable", params=("eval_dir", "config", "examples"))

    # ---- wiring (optional: the toolkit's standard wiring otherwise) --------------------
    build: Optional[Callable[..., "tfx.dsl.Pipeline"]] = part(
        "build(config, log, lineage) -> `run`'s pipeline (default: "
        "pipelines.models.standard.build)", "callable", required=False,
        params=("config", "log", "lineage"))
    build_remote: Optional[Callable[..., "tfx.dsl.Pipeline"]] = part(
        "build_remote(pipeline_name=, pipeline_root=, data_root=, repository=, profile=, "
        "beam_args=) -> the pipeline `compile` writes for Kubeflow Pipelines / Vertex AI "
        "(default: pipelines.models.standard.build_remote)", "callable", required=False)
    retrain_parts: Optional[Callable[..., "retraining_pipeline.ModelParts"]] = part(
        "retrain_parts(profile, trainer_module) -> the model's part of the retraining "
        "pipeline (default: pipelines.models.standard.retrain_parts)", "callable", required=False,
        params=("profile", "trainer_module"))

    # ---- notebook experiments (optional: pipelines/notebook/experiment.py) --------------
    create_components: Optional[Callable[..., Any]] = part(
        "create_components(examples_dir=, serving_model_dir=, profile=, baseline=, lineage=, "
        "hyperparameters=) -> `run`'s components, wired, for a notebook to run one by one in "
        "TFX's InteractiveContext: an object with .nodes, .baseline, .evaluator and .pusher "
        "(default: pipelines.models.standard.create_components)", "callable", required=False)
    hyperparameters: Optional[Callable[..., Dict[str, Any]]] = part(
        "hyperparameters(profile) -> the Trainer's hyperparameters a notebook experiment may "
        "vary, with the pipeline's values (default: trainer_config's)", "callable",
        required=False, params=("profile",))
    instances: Optional[Callable[..., list]] = part(
        "instances(inputs) -> serving_default's REST instances, for a notebook's "
        "served_predictions (default: the inputs as a list)", "callable", required=False,
        params=("inputs",))

    # Where the model was declared (set by pipelines/models/registry.py): errors name it.
    source: str = dataclasses.field(default="", compare=False)

    def profile(self, name: str) -> Any:
        """The profile `name`, or an error naming the profiles there are."""
        if name not in self.profiles:
            raise ModelContractError(f"{self.describe()}: no profile {name!r} (it has "
                                     f"{', '.join(sorted(self.profiles))})")
        return self.profiles[name]

    def describe(self) -> str:
        return f"model {self.name!r}" + (f" ({self.source})" if self.source else "")


def parts() -> List[dataclasses.Field]:
    """The contract's parts, in declaration order."""
    return [f for f in dataclasses.fields(ModelPipeline) if "doc" in f.metadata]


def required_parts() -> List[str]:
    return [f.name for f in parts() if f.metadata["required"]]


def check(pipeline: Any, source: str = "") -> ModelPipeline:
    """`pipeline` as a checked ModelPipeline: every required part there, each of the right
    kind, its files present (a relative path is taken from `source`'s directory). Raises
    ModelContractError naming the first missing or unusable part and what it is for."""
    where = source or "the model"
    if not isinstance(pipeline, ModelPipeline):
        raise ModelContractError(
            f"{where}: PIPELINE must be a pipelines.models.contract.ModelPipeline, got "
            f"{type(pipeline).__name__}")
    base = Path(source).parent if source else Path.cwd()
    changes: Dict[str, Any] = {"source": source}
    for field in parts():
        value = getattr(pipeline, field.name)
        meta = field.metadata
        if value is None or (meta["required"] and value == ()):
            if meta["required"]:
                raise ModelContractError(
                    f"{where}: the model does not provide `{field.name}`, which the contract "
                    f"requires: {meta['doc']}")
            continue
        problem, value = _check_part(meta["kind"], value, meta["params"], base)
        if problem:
            raise ModelContractError(f"{where}: `{field.name}` {problem}; it is {meta['doc']}")
        changes[field.name] = value
    return dataclasses.replace(pipeline, **changes)


def _check_part(kind: str, value: Any, params: Tuple[str, ...], base: Path
                ) -> Tuple[str, Any]:
    """("" or what is wrong with a part, the value to keep)."""
    if kind == "name":
        if not isinstance(value, str) or not MODEL_NAME_PATTERN.match(value):
            return f"must be lower case letters, digits and _, starting with a letter " \
                   f"(got {value!r})", value
    elif kind == "profiles":
        if not isinstance(value, Mapping):
            return f"must map profile names to sizes (got {type(value).__name__})", value
        missing = [p for p in PROFILE_NAMES if p not in value]
        if missing:
            return f"lacks the profile(s) {', '.join(missing)}", value
        odd = [k for k, v in value.items() if not dataclasses.is_dataclass(v)]
        if odd:
            return f"profile(s) {', '.join(odd)} must be dataclass instances", value
    elif kind == "format":
        if value not in EXAMPLE_FORMATS:
            return f"must be one of {', '.join(EXAMPLE_FORMATS)} (got {value!r})", value
    elif kind == "file":
        path = Path(value)
        path = path if path.is_absolute() else base / path
        if not path.is_file():
            return f"names {path}, which is not a file", value
        return "", str(path)
    elif kind == "signatures":
        if isinstance(value, str) or not value or not all(isinstance(s, str) and s
                                                          for s in value):
            return f"must be a non-empty list of signature names (got {value!r})", value
        return "", tuple(value)
    elif kind == "exceptions":
        if not all(isinstance(e, type) and issubclass(e, BaseException) for e in value):
            return "must be a tuple of exception classes", value
        return "", tuple(value)
    elif kind == "callable":
        if not callable(value):
            return f"must be callable (got {type(value).__name__})", value
        if params:
            try:
                inspect.signature(value).bind(*params)
            except TypeError:
                return f"must take ({', '.join(params)})", value
            except ValueError:  # a builtin without a signature: trust it
                pass
    return "", value
