"""A Trainer module file that injects training/serving skew (for the retraining tests).

It trains exactly like components/mnist_trainer.py and exports the same signatures, but
its `predict_images` / `serving_default` signature scales again what clients already
scaled to [0, 1] (pixels / 255, twice): the `classification`
signature TFMA evaluates is correct, so the Evaluator blesses the model, and the model
loads fine, yet every REST/gRPC Predict client gets garbage. Only a check through the
running server's Predict API catches it.
"""

from __future__ import annotations

import tensorflow as tf

from components import mnist_trainer


class SkewedServing(mnist_trainer.MnistServing):
    @tf.function(input_signature=[tf.TensorSpec([None, mnist_trainer.PIXELS], tf.float32,
                                                name="images")])
    def predict_images(self, images):
        return {"scores": self.model(images / 255.0, training=False)}


def run_fn(fn_args) -> None:
    original = mnist_trainer.MnistServing
    mnist_trainer.MnistServing = SkewedServing  # export() builds the served module from it
    try:
        mnist_trainer.run_fn(fn_args)
    finally:
        mnist_trainer.MnistServing = original
