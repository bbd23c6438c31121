"""Model TEMPLATE_NAME: what the toolkit needs to train, gate, serve and retrain it.

`PIPELINE` declares the model's parts (pipelines/models/contract.py documents each one);
the toolkit wires them into TFX pipelines: `run` (ExampleGen -> StatisticsGen ->
ExampleValidator -> Trainer -> Evaluator -> Pusher), `retrain` (the same, with the drift
gate, a window of spans and a warm start), `compile` (Kubeflow Pipelines / Vertex AI).
Edit the parts below, the Trainer module and the data module; the commands need nothing
else. The toolkit reads MODEL_NAME before loading this file: keep it a string literal.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Dict, List

import numpy as np

import TEMPLATE_NAME_data as data
from components import spans
from pipelines.models.contract import ModelPipeline

MODEL_NAME = "TEMPLATE_NAME"
HERE = Path(__file__).resolve().parent
REGRESS_SIGNATURE = "regression"  # TEMPLATE_NAME_trainer.py exports it
METRIC = "mean_squared_error"


@dataclasses.dataclass(frozen=True)
class Profile:
    """Sizes; the Trainer receives every field in its custom_config."""

    num_examples: int = 2000       # `run`'s generated data (train and eval together)
    train_steps: int = 200
    warm_start_steps: int = 50     # retraining continues from the last blessed model
    batch_size: int = 64
    learning_rate: float = 0.3
    mse_gate: float = 0.02         # the noise alone is 0.0025
    span_train_size: int = 800     # `make-spans`: rows per span and split
    span_eval_size: int = 200


PROFILES = {"default": Profile(),
            "fast": Profile(num_examples=600, train_steps=80, warm_start_steps=30,
                            span_train_size=300, span_eval_size=100)}


def prepare_data(config, profile: Profile, log=print) -> Path:
    """`run`'s input: --data-dir (train/ and eval/ CSV files), else generated rows."""
    if config.data_dir is not None:
        data.check_dir(config.data_dir)
        return Path(config.data_dir).absolute()
    root = config.pipeline_dir(MODEL_NAME) / "data" / f"n{profile.num_examples}"
    if not (root / "eval" / "data.csv").exists():
        log(f"generating {profile.num_examples} rows under {root}")
        eval_rows = max(1, profile.num_examples // 5)
        data.write_split(root / "train", "train", profile.num_examples - eval_rows, seed=0)
        data.write_split(root / "eval", "eval", eval_rows, seed=0)
    return root


def write_spans(config, out_dir: Path, span_numbers: List[int], kind: str) -> List[Path]:
    """`make-spans`: generated rows as span-N/{train,eval}/data.csv."""
    spans.check_span_kind(kind)
    profile = PROFILES[config.profile]
    sizes = {"train": profile.span_train_size, "eval": profile.span_eval_size}
    return [spans.write_span(out_dir, number, lambda split, directory, number=number:
                             data.write_split(directory, split, sizes[split], number, kind))
            for number in span_numbers]


def eval_config(profile: Profile):
    """Bless only a model whose mean squared error on the eval split is under the gate."""
    import tensorflow_model_analysis as tfma

    return tfma.EvalConfig(
        model_specs=[tfma.ModelSpec(signature_name=REGRESS_SIGNATURE, label_key=data.LABEL)],
        slicing_specs=[tfma.SlicingSpec()],
        metrics_specs=[tfma.MetricsSpec(metrics=[tfma.MetricConfig(
            class_name="MeanSquaredError",
            threshold=tfma.MetricThreshold(value_threshold=tfma.GenericValueThreshold(
                upper_bound={"value": profile.mse_gate})))])])


def gates(config) -> Dict[str, str]:
    return {METRIC: f"< {PROFILES[config.profile].mse_gate:g}"}


def smoke_check(eval_dir: Path, config, examples: int):
    """After a push, through the running server's canary: the first `examples` eval rows
    of the newest span, by Regress and by Predict; both must stay under the MSE gate."""
    from pipelines.models.smoke import SmokeResult
    from serving.lifecycle import health

    gate = PROFILES[config.profile].mse_gate
    features, labels = data.read_examples(eval_dir, examples)
    rows = [dict(zip(data.FEATURES, map(float, row))) for row in features]

    def check(rest_url: str, entry: str, label: str) -> SmokeResult:
        regressed = health.regress(rest_url, entry, rows, signature=REGRESS_SIGNATURE,
                                   label=label)["results"]
        predicted = health.predict(rest_url, entry, rows, label=label)["predictions"]
        metrics = {f"{api} {METRIC}": float(np.mean((np.ravel(values) - labels) ** 2))
                   for api, values in (("regress", regressed), ("predict", predicted))}
        return SmokeResult(max(metrics.values()) < gate, metrics, f"< {gate:g}", len(labels))
    return check


PIPELINE = ModelPipeline(
    name=MODEL_NAME,
    profiles=PROFILES,
    example_format="csv",
    prepare_data=prepare_data,
    write_spans=write_spans,
    data_errors=(data.DataError,),
    schema_file=str(HERE / "schema.pbtxt"),
    drift_config_file=str(HERE / "drift.pbtxt"),
    trainer_module=str(HERE / f"{MODEL_NAME}_trainer.py"),
    eval_config=eval_config,
    gates=gates,
    signatures=(REGRESS_SIGNATURE,),
    smoke_check=smoke_check,
)
