"""Trainer module file for MNIST: a Keras CNN exported with TF Serving's MNIST contract.

Signatures of the exported SavedModel:
- `predict_images` (predict): `images` float32 [batch, 784] in [0, 1] -> `scores` float32
  [batch, 10]. The contract of TF Serving's mnist_saved_model.py / mnist_client.py.
- `serving_default` (predict): the same, so REST `{"instances": [[784 floats]]}` works
  with no signature name.
- `classification` (classify): `inputs` = serialized tf.Example with the raw int64
  `image` feature (784 values, 0-255) -> `classes` (string "0".."9") and `scores`
  [batch, 10]. It applies the Transform graph, so it is exactly the training-time
  preprocessing; TFMA evaluates through it and TF Serving's Classify API calls it.

Hyperparameters come from the Trainer's `custom_config` (DEFAULTS lists them). With a
base model (the latest blessed model, resolved by the retraining pipeline) training is
warm-started from its weights, for `warm_start_epochs` at `warm_start_learning_rate`;
a base model of another architecture is reported and training starts from scratch.
With no `train_args.num_steps`, an epoch is one pass over the training examples.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
from typing import Any, Dict, Optional

import tensorflow as tf
import tensorflow_transform as tft
import tf_keras as keras
from tfx import v1 as tfx
from tfx_bsl.public import tfxio

from components.mnist_transform import IMAGE, LABEL
from components.signatures import CLASSIFY_METHOD, set_method_names
from components.tf_keras_autograph import skip_tf_keras_internals
from components.training_progress import ProgressCallback

log = logging.getLogger(__name__)

PIXELS = 784
NUM_CLASSES = 10
CLASSIFY_SIGNATURE = "classification"
PREDICT_SIGNATURE = "predict_images"
DEFAULTS = {"epochs": 5, "batch_size": 128, "learning_rate": 2e-3,
            "warm_start_epochs": 2, "warm_start_learning_rate": 5e-4,
            "conv1_filters": 32, "conv2_filters": 64, "dense_units": 128, "dropout": 0.4}
ARCHITECTURE = ("conv1_filters", "conv2_filters", "dense_units", "dropout")  # build_model's
# A shuffle buffer as large as MNIST's training set: each epoch is a uniform permutation.
SHUFFLE_BUFFER = 60_000


def build_model(total_steps: int, learning_rate: float, conv1_filters: int = 32,
                conv2_filters: int = 64, dense_units: int = 128,
                dropout: float = 0.4) -> keras.Model:
    """Two 5x5 conv blocks and a small dense head: ~99.3-99.4% in 5 epochs on 2 CPU cores
    (3x3 kernels are cheaper, but reached 99.2% in 4 epochs: benchmarks/README.md)."""
    layers = keras.layers
    model = keras.Sequential([
        layers.Reshape((28, 28, 1), input_shape=(PIXELS,)),
        layers.Conv2D(conv1_filters, 5, padding="same", activation="relu"),
        layers.MaxPooling2D(),
        layers.Conv2D(conv2_filters, 5, padding="same", activation="relu"),
        layers.MaxPooling2D(),
        layers.Flatten(),
        layers.Dense(dense_units, activation="relu"),
        layers.Dropout(dropout),
        layers.Dense(NUM_CLASSES, activation="softmax", name="scores"),
    ])
    schedule = keras.optimizers.schedules.CosineDecay(learning_rate, decay_steps=total_steps)
    model.compile(optimizer=keras.optimizers.Adam(schedule),
                  loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


def _dataset(fn_args, files, transform_output, batch_size: int, shuffle: bool) -> tf.data.Dataset:
    """Raw examples -> (Transform graph applied to image, label), read, parsed and
    transformed once: the examples are then kept in memory (60,000 MNIST images are 188 MB
    as float32), reshuffled as a whole each epoch, and repeated."""
    tft_layer = transform_output.transform_features_layer()
    dataset = fn_args.data_accessor.tf_dataset_factory(
        files, tfxio.TensorFlowDatasetOptions(batch_size=batch_size, shuffle=False, num_epochs=1),
        transform_output.raw_metadata.schema)
    dataset = dataset.map(
        lambda raw: (tft_layer({IMAGE: raw[IMAGE]})[IMAGE], tf.reshape(raw[LABEL], [-1])),
        num_parallel_calls=tf.data.AUTOTUNE).unbatch().cache()
    if shuffle:
        dataset = dataset.shuffle(SHUFFLE_BUFFER, reshuffle_each_iteration=True)
    return dataset.batch(batch_size).repeat().prefetch(tf.data.AUTOTUNE)


class MnistServing(tf.Module):
    """What gets served: the trained model, the Transform graph and TF Serving's signatures."""

    def __init__(self, model: keras.Model, transform_output: tft.TFTransformOutput):
        super().__init__()
        self.model = model
        self.tft_layer = transform_output.transform_features_layer()
        self._raw_spec = {IMAGE: transform_output.raw_feature_spec()[IMAGE]}

    @tf.function(input_signature=[tf.TensorSpec([None, PIXELS], tf.float32, name="images")])
    def predict_images(self, images):
        return {"scores": self.model(images, training=False)}

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="inputs")])
    def classify(self, inputs):
        raw = tf.io.parse_example(inputs, self._raw_spec)
        scores = self.model(self.tft_layer(raw)[IMAGE], training=False)
        labels = tf.constant([[str(digit) for digit in range(NUM_CLASSES)]])
        return {"classes": tf.tile(labels, [tf.shape(scores)[0], 1]), "scores": scores}


def export(model: keras.Model, transform_output: tft.TFTransformOutput, export_dir: str) -> None:
    serving = MnistServing(model, transform_output)
    tf.saved_model.save(serving, export_dir, signatures={
        PREDICT_SIGNATURE: serving.predict_images,
        "serving_default": serving.predict_images,
        CLASSIFY_SIGNATURE: serving.classify,
    })
    set_method_names(export_dir, {CLASSIFY_SIGNATURE: CLASSIFY_METHOD})


def warm_start(model: keras.Model, base_model_dir: str) -> Optional[str]:
    """Load the weights of a model exported by `export` into `model`; None when done, else
    why it could not be (another architecture, unreadable files)."""
    checkpoint = tf.train.Checkpoint(model=model)
    try:
        status = checkpoint.read(os.path.join(base_model_dir, "variables", "variables"))
        status.assert_existing_objects_matched()
        status.expect_partial()  # the Transform layer and Keras' metric state stay behind
    except (AssertionError, ValueError, tf.errors.OpError) as e:
        return f"{type(e).__name__}: {str(e).splitlines()[0][:200]}"
    return None


def count_examples(files) -> int:
    """Records in the (GZIP) TFRecord files of a split: one pass, no parsing."""
    paths = [path for pattern in files for path in tf.io.gfile.glob(pattern)]
    dataset = tf.data.TFRecordDataset(paths, compression_type="GZIP")
    return int(dataset.reduce(tf.constant(0, tf.int64), lambda n, _: n + 1))


@dataclasses.dataclass(frozen=True)
class Schedule:
    """How long and how fast one training runs."""

    epochs: int
    steps_per_epoch: int
    learning_rate: float


def training_schedule(params: Dict[str, Any], warm: bool, train_steps: Optional[int],
                      train_examples: Optional[int]) -> Schedule:
    """A warm start's shorter, gentler schedule, or a cold one's: the Trainer's train_steps
    spread over its epochs, else one pass over `train_examples` per epoch."""
    epochs = max(1, int(params["warm_start_epochs" if warm else "epochs"]))
    if train_steps:
        steps = max(1, train_steps // epochs)
    else:
        steps = math.ceil(train_examples / int(params["batch_size"]))
    return Schedule(epochs, steps,
                    float(params["warm_start_learning_rate" if warm else "learning_rate"]))


def run_fn(fn_args: tfx.components.FnArgs) -> None:
    """TFX Trainer entry point; hyperparameters come from the Trainer's custom_config."""
    skip_tf_keras_internals()  # a first fit 13 s faster: components/tf_keras_autograph.py
    params = {**DEFAULTS, **(fn_args.custom_config or {})}
    transform_output = tft.TFTransformOutput(fn_args.transform_output)
    batch_size = int(params["batch_size"])
    train = _dataset(fn_args, fn_args.train_files, transform_output, batch_size, True)
    evaluation = _dataset(fn_args, fn_args.eval_files, transform_output, batch_size, False)
    warm = fn_args.base_model is not None
    train_examples = None if fn_args.train_steps else count_examples(fn_args.train_files)
    plan = training_schedule(params, warm, fn_args.train_steps, train_examples)
    eval_steps = fn_args.eval_steps or math.ceil(count_examples(fn_args.eval_files) / batch_size)
    architecture = {k: params[k] for k in ARCHITECTURE}
    model = build_model(plan.steps_per_epoch * plan.epochs, plan.learning_rate, **architecture)
    note = "from scratch"
    if warm:
        problem = warm_start(model, fn_args.base_model)
        if problem is None:
            note = f"warm-started from {fn_args.base_model}"
        else:
            plan = training_schedule(params, False, fn_args.train_steps, train_examples)
            log.warning("Not warm-starting from %s (%s); training from scratch for %d epochs",
                        fn_args.base_model, problem, plan.epochs)
            model = build_model(plan.steps_per_epoch * plan.epochs, plan.learning_rate,
                                **architecture)
            note = "from scratch (the base model does not fit this architecture)"
    model.fit(train, epochs=plan.epochs, steps_per_epoch=plan.steps_per_epoch,
              validation_data=evaluation, validation_steps=eval_steps, verbose=2,
              validation_freq=plan.epochs,  # once, after the last epoch: the Evaluator's job
              callbacks=[ProgressCallback(plan.epochs, plan.steps_per_epoch, note)])
    export(model, transform_output, fn_args.serving_model_dir)
