"""Trainer module file of model TEMPLATE_NAME (TFX's module_file: run_fn is the entry point).

A linear model over FEATURES, exported with the signatures TF Serving's clients use:
- `serving_default` (predict): one float per feature, by name -> `y`;
  REST: {"instances": [{"x1": 0.5, "x2": -0.25}]};
- `regression` (regress): serialized tf.Example under the input key `inputs` -> `outputs`,
  for the Regress API; the Evaluator (TFMA) and InfraValidator call it.
Hyperparameters come from the Trainer's custom_config (the profile's fields). With a base
model (retraining), training starts from its weights and runs `warm_start_steps`.
"""

from __future__ import annotations

import os

import tensorflow as tf
import tf_keras as keras
from tensorflow_metadata.proto.v0 import schema_pb2
from tfx import v1 as tfx
from tfx_bsl.public import tfxio

from components.signatures import REGRESS_METHOD, set_method_names
from components.tf_keras_autograph import skip_tf_keras_internals
from TEMPLATE_NAME_data import FEATURES, LABEL

REGRESS_SIGNATURE = "regression"


def _dataset(fn_args, files, batch_size: int) -> tf.data.Dataset:
    """(features [batch, len(FEATURES)], label [batch, 1]): read and parsed once, then
    kept in memory (a small data set), reshuffled and repeated."""
    schema = tfx.utils.parse_pbtxt_file(fn_args.schema_path, schema_pb2.Schema())
    dataset = fn_args.data_accessor.tf_dataset_factory(
        files, tfxio.TensorFlowDatasetOptions(batch_size=batch_size, label_key=LABEL,
                                              shuffle=False, num_epochs=1), schema
    ).map(lambda features, label: (
        tf.concat([tf.cast(features[name], tf.float32) for name in FEATURES], axis=1),
        tf.cast(label, tf.float32)))
    return dataset.unbatch().cache().shuffle(10_000).batch(batch_size).repeat()


def build_model(learning_rate: float) -> keras.Model:
    model = keras.Sequential([keras.layers.Dense(1, input_shape=(len(FEATURES),))])
    model.compile(optimizer=keras.optimizers.SGD(learning_rate), loss="mse")
    return model


class Serving(tf.Module):
    """What is served: the trained model behind TF Serving's predict and regress signatures."""

    def __init__(self, model: keras.Model):
        super().__init__()
        self.model = model

    def _y(self, columns):
        return tf.reshape(self.model(tf.stack(columns, axis=1), training=False), [-1])

    @tf.function(input_signature=[{name: tf.TensorSpec([None], tf.float32, name=name)
                                   for name in FEATURES}])
    def predict(self, features):
        return {LABEL: self._y([features[name] for name in FEATURES])}

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="inputs")])
    def regress(self, inputs):
        parsed = tf.io.parse_example(
            inputs, {name: tf.io.FixedLenFeature([], tf.float32) for name in FEATURES})
        return {"outputs": self._y([parsed[name] for name in FEATURES])}


def export(model: keras.Model, export_dir: str) -> None:
    serving = Serving(model)
    tf.saved_model.save(serving, export_dir, signatures={
        "serving_default": serving.predict, REGRESS_SIGNATURE: serving.regress})
    set_method_names(export_dir, {REGRESS_SIGNATURE: REGRESS_METHOD})


def run_fn(fn_args: tfx.components.FnArgs) -> None:
    """TFX Trainer entry point."""
    skip_tf_keras_internals()  # a first fit 13 s faster: components/tf_keras_autograph.py
    config = fn_args.custom_config or {}
    batch_size = int(config.get("batch_size", 32))
    model = build_model(float(config.get("learning_rate", 0.3)))
    steps = fn_args.train_steps or int(config.get("train_steps", 200))
    if fn_args.base_model is not None:  # retraining: continue from the last blessed model
        checkpoint = tf.train.Checkpoint(model=model)
        checkpoint.read(os.path.join(fn_args.base_model, "variables", "variables")
                        ).expect_partial()
        steps = int(config.get("warm_start_steps", steps))
    model.fit(_dataset(fn_args, fn_args.train_files, batch_size), steps_per_epoch=steps,
              validation_data=_dataset(fn_args, fn_args.eval_files, batch_size),
              validation_steps=fn_args.eval_steps or 5, verbose=2)
    export(model, fn_args.serving_model_dir)
