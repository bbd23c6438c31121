"""Trainer module file of model TEMPLATE_NAME (TFX's module_file: run_fn is the entry point).

A small dense network over the pixels, exported with the signatures TF Serving's clients use:
- `serving_default` (predict): `image` float32 [batch, PIXELS], raw pixels 0-255 ->
  `scores` [batch, len(CLASSES)]; REST: {"instances": [[64 pixel values]]};
- `classification` (classify): serialized tf.Example under the input key `inputs` ->
  `classes` and `scores`, for the Classify API; the Evaluator (TFMA) and InfraValidator
  call it.
Pixels are scaled inside the model, so training and serving see the same inputs.
Hyperparameters come from the Trainer's custom_config (the profile's fields). With a base
model (retraining), training starts from its weights for `warm_start_epochs`.
"""

from __future__ import annotations

import math
import os

import tensorflow as tf
import tf_keras as keras
from tensorflow_metadata.proto.v0 import schema_pb2
from tfx import v1 as tfx
from tfx_bsl.public import tfxio

from components.signatures import CLASSIFY_METHOD, set_method_names
from components.tf_keras_autograph import skip_tf_keras_internals
from TEMPLATE_NAME_data import CLASSES, IMAGE, LABEL, PIXELS

CLASSIFY_SIGNATURE = "classification"


def _dataset(fn_args, files, batch_size: int) -> tf.data.Dataset:
    """(pixels float32 [batch, PIXELS], label [batch]): read and parsed once, then kept in
    memory (a small data set), reshuffled and repeated."""
    schema = tfx.utils.parse_pbtxt_file(fn_args.schema_path, schema_pb2.Schema())
    return fn_args.data_accessor.tf_dataset_factory(
        files, tfxio.TensorFlowDatasetOptions(batch_size=batch_size, label_key=LABEL,
                                              shuffle=False, num_epochs=1), schema
    ).map(lambda features, label: (tf.cast(features[IMAGE], tf.float32),
                                   tf.reshape(label, [-1]))
          ).unbatch().cache().shuffle(10_000).batch(batch_size).repeat()


def build_model(learning_rate: float, hidden_units: int) -> keras.Model:
    model = keras.Sequential([
        keras.layers.Rescaling(1 / 255.0, input_shape=(PIXELS,)),
        keras.layers.Dense(hidden_units, activation="relu"),
        keras.layers.Dense(len(CLASSES), activation="softmax", name="scores"),
    ])
    model.compile(optimizer=keras.optimizers.Adam(learning_rate),
                  loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


class Serving(tf.Module):
    """What is served: the trained model behind TF Serving's predict and classify signatures."""

    def __init__(self, model: keras.Model):
        super().__init__()
        self.model = model

    @tf.function(input_signature=[tf.TensorSpec([None, PIXELS], tf.float32, name=IMAGE)])
    def predict(self, image):
        return {"scores": self.model(image, training=False)}

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="inputs")])
    def classify(self, inputs):
        parsed = tf.io.parse_example(inputs, {IMAGE: tf.io.FixedLenFeature([PIXELS], tf.int64)})
        scores = self.model(tf.cast(parsed[IMAGE], tf.float32), training=False)
        names = tf.constant([[str(i) for i in range(len(CLASSES))]])
        return {"classes": tf.tile(names, [tf.shape(scores)[0], 1]), "scores": scores}


def export(model: keras.Model, export_dir: str) -> None:
    serving = Serving(model)
    tf.saved_model.save(serving, export_dir, signatures={
        "serving_default": serving.predict, CLASSIFY_SIGNATURE: serving.classify})
    set_method_names(export_dir, {CLASSIFY_SIGNATURE: CLASSIFY_METHOD})


def run_fn(fn_args: tfx.components.FnArgs) -> None:
    """TFX Trainer entry point."""
    skip_tf_keras_internals()  # a first fit 13 s faster: components/tf_keras_autograph.py
    config = fn_args.custom_config or {}
    batch_size = int(config.get("batch_size", 32))
    model = build_model(float(config.get("learning_rate", 0.01)),
                        int(config.get("hidden_units", 32)))
    epochs = int(config.get("epochs", 5))
    if fn_args.base_model is not None:  # retraining: continue from the last blessed model
        tf.train.Checkpoint(model=model).read(
            os.path.join(fn_args.base_model, "variables", "variables")).expect_partial()
        epochs = int(config.get("warm_start_epochs", 1))
    steps = fn_args.train_steps or math.ceil(int(config.get("train_examples", 1000))
                                             / batch_size)
    model.fit(_dataset(fn_args, fn_args.train_files, batch_size), epochs=epochs,
              steps_per_epoch=steps, verbose=2,
              validation_data=_dataset(fn_args, fn_args.eval_files, batch_size),
              validation_steps=fn_args.eval_steps or 5, validation_freq=epochs)
    export(model, fn_args.serving_model_dir)
