"""SavedModels and warmup files for tests and benchmarks of the server.

`export_mnist_like` stands in for the MNIST model until the real one exists: the same
signature as TF Serving's mnist_saved_model.py (`predict_images`: float `images`
[None, 784] -> `scores` [None, 10], also as `serving_default`), random weights, plus
`scores_and_classes` (two outputs, for the REST multi-output formats).
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable, Optional

import numpy as np

MNIST_PIXELS = 784
MNIST_CLASSES = 10


def export_half_plus_two(export_dir, weight: float = 0.5, bias: float = 2.0) -> Path:
    from components.half_plus_two_trainer import export

    export(weight, bias, str(export_dir))
    return Path(export_dir)


def export_mnist_like(export_dir, seed: int = 0) -> Path:
    import tensorflow as tf

    rng = np.random.default_rng(seed)

    class Mnist(tf.Module):
        def __init__(self):
            super().__init__()
            self.w = tf.Variable(rng.normal(0, 0.05, (MNIST_PIXELS, MNIST_CLASSES))
                                 .astype(np.float32), name="w")
            self.b = tf.Variable(np.zeros(MNIST_CLASSES, np.float32), name="b")

        @tf.function(input_signature=[tf.TensorSpec([None, MNIST_PIXELS], tf.float32,
                                                    name="images")])
        def predict(self, images):
            return {"scores": tf.nn.softmax(tf.matmul(images, self.w) + self.b)}

        @tf.function(input_signature=[tf.TensorSpec([None, MNIST_PIXELS], tf.float32,
                                                    name="images")])
        def scores_and_classes(self, images):
            scores = tf.nn.softmax(tf.matmul(images, self.w) + self.b)
            return {"scores": scores, "classes": tf.argmax(scores, axis=1)}

    module = Mnist()
    tf.saved_model.save(module, str(export_dir), signatures={
        "predict_images": module.predict, "serving_default": module.predict,
        "scores_and_classes": module.scores_and_classes})
    return Path(export_dir)


def write_broken_version(export_dir) -> Path:
    """A directory that looks complete (saved_model.pb + variables/) but cannot load."""
    export_dir = Path(export_dir)
    (export_dir / "variables").mkdir(parents=True, exist_ok=True)
    (export_dir / "saved_model.pb").write_bytes(b"this is not a SavedModel")
    return export_dir


def write_warmup_requests(export_dir, model_name: str, x_values: Iterable[float],
                          signature_name: str = "", input_name: str = "x",
                          path: Optional[Path] = None) -> Path:
    """assets.extra/tf_serving_warmup_requests: one PredictionLog per value in x_values."""
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2, prediction_log_pb2

    target = path or Path(export_dir) / "assets.extra" / "tf_serving_warmup_requests"
    target.parent.mkdir(parents=True, exist_ok=True)
    with tf.io.TFRecordWriter(str(target)) as writer:
        for x in x_values:
            request = predict_pb2.PredictRequest()
            request.model_spec.name = model_name
            request.model_spec.signature_name = signature_name
            request.inputs[input_name].CopyFrom(tf.make_tensor_proto([x], dtype=tf.float32))
            log = prediction_log_pb2.PredictionLog(
                predict_log=prediction_log_pb2.PredictLog(request=request))
            writer.write(log.SerializeToString())
    return target


def export_tf1_half_plus_two(export_dir, a: float = 0.5, b: float = 2.0) -> Path:
    """A TF1-style (graph + SavedModelBuilder) half_plus_two, like TF Serving's own
    saved_model_half_plus_two_cpu test model: predict `x`->`y`, classify/regress on
    serialized tf.Examples under `inputs`, the shapes and method names it declares."""
    import tensorflow as tf

    v1 = tf.compat.v1
    sig_utils = v1.saved_model.signature_def_utils
    with tf.Graph().as_default():
        va = v1.Variable(a, name="a")
        vb = v1.Variable(b, name="b")
        serialized = v1.placeholder(tf.string, name="tf_example")
        parsed = v1.parse_example(serialized, {"x": v1.FixedLenFeature([1], tf.float32)})
        x_ex = tf.identity(parsed["x"], name="x_from_example")
        y_ex = tf.add(tf.multiply(va, x_ex), vb, name="y_from_example")
        x = v1.placeholder(tf.float32, name="x")
        y = tf.add(tf.multiply(va, x), vb, name="y")
        with v1.Session() as sess:
            sess.run(v1.global_variables_initializer())
            builder = v1.saved_model.Builder(str(export_dir))
            predict = sig_utils.predict_signature_def({"x": x}, {"y": y})
            regress = sig_utils.regression_signature_def(serialized, y_ex)
            classify = sig_utils.classification_signature_def(serialized, None, y_ex)
            builder.add_meta_graph_and_variables(
                sess, ["serve"], signature_def_map={
                    "serving_default": predict, "regress_x_to_y": regress,
                    "classify_x_to_y": classify})
            builder.save()
    return Path(export_dir)
