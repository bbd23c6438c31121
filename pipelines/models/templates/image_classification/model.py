"""Model TEMPLATE_NAME: what the toolkit needs to train, gate, serve and retrain it.

`PIPELINE` declares the model's parts (pipelines/models/contract.py documents each one);
the toolkit wires them into TFX pipelines: `run` (ExampleGen -> StatisticsGen ->
ExampleValidator -> [Transform] -> Trainer -> Evaluator -> Pusher), `retrain` (the same,
with the drift gate, a window of spans and a warm start), `compile` (Kubeflow Pipelines /
Vertex AI). Edit the parts below, the Trainer module and the data module; the commands
need nothing else. The toolkit reads MODEL_NAME before loading this file: keep it a
string literal.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Dict, List

import numpy as np

import TEMPLATE_NAME_data as data
from components import spans
from pipelines.models.contract import ModelPipeline

MODEL_NAME = "TEMPLATE_NAME"
HERE = Path(__file__).resolve().parent
CLASSIFY_SIGNATURE = "classification"  # TEMPLATE_NAME_trainer.py exports it
METRIC = "sparse_categorical_accuracy"


@dataclasses.dataclass(frozen=True)
class Profile:
    """Sizes; the Trainer receives every field in its custom_config."""

    train_examples: int = 2000     # `run`'s generated data
    eval_examples: int = 500
    epochs: int = 5
    warm_start_epochs: int = 1     # retraining continues from the last blessed model
    batch_size: int = 32
    learning_rate: float = 0.01
    hidden_units: int = 32
    accuracy_gate: float = 0.9
    max_regression: float = 0.05   # not blessed when this much worse than the last blessed
    span_train_size: int = 1000    # `make-spans`: images per span and split
    span_eval_size: int = 200


PROFILES = {"default": Profile(),
            "fast": Profile(train_examples=600, eval_examples=200, epochs=4,
                            span_train_size=300, span_eval_size=100)}


def prepare_data(config, profile: Profile, log=print) -> Path:
    """`run`'s input: --data-dir (train/ and eval/ TFRecords), else generated images."""
    if config.data_dir is not None:
        data.check_dir(config.data_dir)
        return Path(config.data_dir).absolute()
    root = config.pipeline_dir(MODEL_NAME) / "data" / \
        f"n{profile.train_examples}-{profile.eval_examples}"
    if not (root / "eval" / data.FILE_NAME).exists():
        log(f"generating {profile.train_examples + profile.eval_examples} images under {root}")
        data.write_split(root / "train", "train", profile.train_examples, seed=0)
        data.write_split(root / "eval", "eval", profile.eval_examples, seed=0)
    return root


def write_spans(config, out_dir: Path, span_numbers: List[int], kind: str) -> List[Path]:
    """`make-spans`: generated images as span-N/{train,eval}/data.tfrecord.gz."""
    spans.check_span_kind(kind)
    profile = PROFILES[config.profile]
    sizes = {"train": profile.span_train_size, "eval": profile.span_eval_size}
    return [spans.write_span(out_dir, number, lambda split, directory, number=number:
                             data.write_split(directory, split, sizes[split], number, kind))
            for number in span_numbers]


def eval_config(profile: Profile):
    """An absolute accuracy gate, and a no-regression gate against the latest blessed model."""
    import tensorflow_model_analysis as tfma

    return tfma.EvalConfig(
        model_specs=[tfma.ModelSpec(signature_name=CLASSIFY_SIGNATURE, label_key=data.LABEL,
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


def gates(config) -> Dict[str, str]:
    profile = PROFILES[config.profile]
    return {METRIC: f">= {profile.accuracy_gate:g}, and at most {profile.max_regression:g} "
                    f"below the latest blessed model"}


def smoke_check(eval_dir: Path, config, examples: int):
    """After a push, through the running server's canary: the first `examples` eval images
    of the newest span, by Classify and by Predict. Both must reach the accuracy gate, less
    what a batch this small cannot tell apart from it (3 standard errors)."""
    from pipelines.models.smoke import SmokeResult
    from serving.lifecycle import health

    gate = PROFILES[config.profile].accuracy_gate
    images, labels = data.read_examples(eval_dir, examples)
    floor = gate - 3 * math.sqrt(gate * (1 - gate) / max(1, len(labels)))

    def check(rest_url: str, entry: str, label: str) -> SmokeResult:
        classified = health.classify(rest_url, entry, [{data.IMAGE: image.tolist()}
                                                       for image in images],
                                     signature=CLASSIFY_SIGNATURE, label=label)["results"]
        classes = [int(max(result, key=lambda c: c[1])[0]) for result in classified]
        scores = health.predict(rest_url, entry, images.astype(float).tolist(),
                                label=label)["predictions"]
        metrics = {"classify accuracy": float(np.mean(np.asarray(classes) == labels)),
                   "predict accuracy": float(np.mean(np.argmax(scores, axis=1) == labels))}
        return SmokeResult(min(metrics.values()) >= floor, metrics,
                           f">= {floor:.3f}: {gate:g} less 3 standard errors of "
                           f"{len(labels)} examples", len(labels))
    return check


PIPELINE = ModelPipeline(
    name=MODEL_NAME,
    profiles=PROFILES,
    example_format="tfrecord",
    prepare_data=prepare_data,
    write_spans=write_spans,
    data_errors=(data.DataError,),
    schema_file=str(HERE / "schema.pbtxt"),
    drift_config_file=str(HERE / "drift.pbtxt"),
    trainer_module=str(HERE / f"{MODEL_NAME}_trainer.py"),
    eval_config=eval_config,
    gates=gates,
    signatures=(CLASSIFY_SIGNATURE,),
    smoke_check=smoke_check,
)
