"""Trainer module file for half_plus_two: fit y = w·x + b and export TF Serving's signatures.

The export serves exactly like TF Serving's own half_plus_two demo model:
- `serving_default` (predict): float `x`, one scalar per instance -> `y`;
- `regress_x_to_y` (regress) and `classify_x_to_y` (classify): serialized tf.Example with
  feature `x` under the input key `inputs`, as the Classify/Regress APIs require.
TFMA evaluates through `regress_x_to_y`, so it scores the signature that is served.
With a base model (retraining), training starts from its w and b and runs
`warm_start_steps` (custom_config) instead of `train_args.num_steps`.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf
import tf_keras as keras
from tfx import v1 as tfx
from tensorflow_metadata.proto.v0 import schema_pb2
from tfx_bsl.public import tfxio

from components.half_plus_two_data import FEATURE, LABEL
from components.signatures import CLASSIFY_METHOD, REGRESS_METHOD, set_method_names
from components.tf_keras_autograph import skip_tf_keras_internals
from components.training_progress import ProgressCallback

BATCH_SIZE = 64
LEARNING_RATE = 0.01
EVAL_SIGNATURE = "regress_x_to_y"


def _dataset(fn_args: tfx.components.FnArgs, files, batch_size: int) -> tf.data.Dataset:
    return fn_args.data_accessor.tf_dataset_factory(
        files,
        tfxio.TensorFlowDatasetOptions(batch_size=batch_size, label_key=LABEL),
        schema=tfx.utils.parse_pbtxt_file(fn_args.schema_path, schema_pb2.Schema()),
    ).map(lambda features, label: (tf.cast(features[FEATURE], tf.float32),
                                   tf.cast(label, tf.float32)))


def build_model() -> keras.Model:
    model = keras.Sequential([keras.layers.Dense(1, input_shape=(1,), name="linear")])
    model.compile(optimizer=keras.optimizers.SGD(LEARNING_RATE, momentum=0.9), loss="mse")
    return model


class HalfPlusTwo(tf.Module):
    """The served model: the trained weight and bias, with TF Serving's demo signatures."""

    def __init__(self, weight: float, bias: float):
        super().__init__()
        self.w = tf.Variable(weight, dtype=tf.float32, name="w")
        self.b = tf.Variable(bias, dtype=tf.float32, name="b")

    def _y(self, x):
        return self.w * x + self.b

    def _parse_x(self, serialized):
        features = tf.io.parse_example(
            serialized, {FEATURE: tf.io.FixedLenFeature([1], tf.float32)})
        return features[FEATURE]

    @tf.function(input_signature=[tf.TensorSpec([None], tf.float32, name="x")])
    def predict(self, x):
        return {"y": self._y(x)}

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="inputs")])
    def regress(self, inputs):
        return {"outputs": tf.reshape(self._y(self._parse_x(inputs)), [-1])}

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="inputs")])
    def classify(self, inputs):
        return {"scores": self._y(self._parse_x(inputs))}


def export(weight: float, bias: float, export_dir: str) -> None:
    module = HalfPlusTwo(weight, bias)
    tf.saved_model.save(module, export_dir, signatures={
        "serving_default": module.predict,
        "regress_x_to_y": module.regress,
        "classify_x_to_y": module.classify,
    })
    set_method_names(export_dir, {"regress_x_to_y": REGRESS_METHOD,
                                  "classify_x_to_y": CLASSIFY_METHOD})


def run_fn(fn_args: tfx.components.FnArgs) -> None:
    """TFX Trainer entry point."""
    skip_tf_keras_internals()  # a first fit 13 s faster: components/tf_keras_autograph.py
    config = fn_args.custom_config or {}
    train = _dataset(fn_args, fn_args.train_files, BATCH_SIZE)
    evaluation = _dataset(fn_args, fn_args.eval_files, BATCH_SIZE)
    model = build_model()
    steps, note = fn_args.train_steps, "from scratch"
    if fn_args.base_model is not None:
        base = tf.saved_model.load(fn_args.base_model)
        model.get_layer("linear").set_weights([np.reshape(base.w.numpy(), (1, 1)),
                                               np.reshape(base.b.numpy(), (1,))])
        steps = int(config.get("warm_start_steps", steps))
        note = f"warm-started from {fn_args.base_model}"
    model.fit(train, steps_per_epoch=steps, validation_data=evaluation,
              validation_steps=fn_args.eval_steps, verbose=2,
              callbacks=[ProgressCallback(1, steps, note)])
    kernel, bias = model.get_layer("linear").get_weights()
    export(float(kernel[0][0]), float(bias[0]), fn_args.serving_model_dir)
