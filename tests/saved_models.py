"""SavedModels for the model server's tests and benchmarks, built the ways users build them.

- `export_tf1_half_plus_two`: graph mode, placeholders and `tf.compat.v1.saved_model.Builder`,
  the way TF Serving's own test-data generator (saved_model_half_plus_two.py) builds its
  half_plus_two models: a predict signature fed at `x`, whose TensorInfo says [-1, 1];
  classify and regress signatures that run `ParseExample` on serialized tf.Examples; an
  asset file, and an init op (legacy_init_op or main_op) that reads it.
- `export_tf2_half_plus_two`: `tf.saved_model.save` of a tf.Module; every signature's method
  name is `tensorflow/serving/predict`, as TF2 writes it. Its classify signature returns
  class labels from a vocabulary asset through a lookup table, initialised by TF2's
  `__saved_model_init_op`.
- `export_keras_half_plus_two`: a Keras 2 model (`tf_keras`) saved in the SavedModel format.
- `export_half_plus_two`: what the project's pipeline exports (components/half_plus_two_trainer).
- `export_mnist_like`: the MNIST signature of TF Serving's mnist_saved_model.py with random
  weights, standing in for the trained CNN.

Every half_plus_two answers y = 0.5 * x + 2 on its default signature.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable, Optional

import numpy as np

MNIST_PIXELS = 784
MNIST_CLASSES = 10
ASSET_CONTENTS = "asset-file-contents"
CLASS_LABELS = ("negative", "positive")  # the TF2 model's vocabulary asset


def export_half_plus_two(export_dir, weight: float = 0.5, bias: float = 2.0) -> Path:
    from components.half_plus_two_trainer import export

    export(weight, bias, str(export_dir))
    return Path(export_dir)


def export_tf1_half_plus_two(export_dir, use_main_op: bool = False,
                             extra_tags: Optional[Iterable[str]] = None) -> Path:
    """TF Serving's half_plus_two, TF1 style. Signatures:

    - `serving_default` (predict): `x` -> `y` = 0.5x + 2, fed at the tensor `x` that
      ParseExample's output passes through (shape [-1, 1]), as TF Serving's model does;
    - `regress_x_to_y`, `regress_x_to_y2` (y2 = 0.5x + 3), `classify_x_to_y`: serialized
      tf.Examples under `inputs`, parsed by ParseExample (feature `x`, and `x2` default 0);
    - `regress_x2_to_y3`, `classify_x2_to_y3`: fed at `x2`, y3 = 0.5 * x2 + 3;
    - `asset_contents` (predict): the contents of `assets/foo.txt`, which the init op reads
      into a variable, so it answers only when the loader ran the init op with the asset's
      real path.

    With `extra_tags`, a second meta graph tagged {serve, *extra_tags} answers y = 0.5x + 3
    on `serving_default` instead: `--saved_model_tags` picks which one is served.
    """
    import tensorflow as tf

    v1 = tf.compat.v1
    build_info = v1.saved_model.utils.build_tensor_info
    constants = v1.saved_model.signature_constants

    def signature(inputs, outputs, method):
        return v1.saved_model.signature_def_utils.build_signature_def(
            {k: build_info(t) for k, t in inputs.items()},
            {k: build_info(t) for k, t in outputs.items()}, method)

    staging_assets = Path(export_dir).parent / f".{Path(export_dir).name}-assets"
    staging_assets.mkdir(parents=True, exist_ok=True)
    (staging_assets / "foo.txt").write_text(ASSET_CONTENTS)
    builder = v1.saved_model.Builder(str(export_dir))
    with tf.Graph().as_default(), v1.Session() as sess:
        a = v1.Variable(0.5, name="a")
        b = v1.Variable(2.0, name="b")
        c = v1.Variable(3.0, name="c")
        serialized = v1.placeholder(tf.string, name="tf_example")
        parsed = v1.parse_example(serialized, {
            "x": v1.FixedLenFeature([1], tf.float32),
            "x2": v1.FixedLenFeature([1], tf.float32, default_value=[0.0])})
        x = tf.identity(parsed["x"], name="x")
        y = tf.add(tf.multiply(a, x), b, name="y")
        y2 = tf.add(tf.multiply(a, x), c, name="y2")
        x2 = tf.identity(parsed["x2"], name="x2")
        y3 = tf.add(tf.multiply(a, x2), c, name="y3")
        asset_path = tf.constant(str(staging_assets / "foo.txt"), name="asset_path")
        v1.add_to_collection(v1.GraphKeys.ASSET_FILEPATHS, asset_path)
        contents = v1.Variable("", name="asset_contents", trainable=False, collections=[])
        read_asset = contents.assign(tf.io.read_file(asset_path))
        init = {"main_op": tf.group(v1.saved_model.main_op.main_op(), read_asset)} \
            if use_main_op else {"legacy_init_op": tf.group(read_asset)}
        sess.run(v1.global_variables_initializer())
        signatures = {
            constants.DEFAULT_SERVING_SIGNATURE_DEF_KEY:
                signature({"x": x}, {"y": y}, constants.PREDICT_METHOD_NAME),
            "regress_x_to_y": signature({"inputs": serialized}, {"outputs": y},
                                        constants.REGRESS_METHOD_NAME),
            "regress_x_to_y2": signature({"inputs": serialized}, {"outputs": y2},
                                         constants.REGRESS_METHOD_NAME),
            "regress_x2_to_y3": signature({"inputs": x2}, {"outputs": y3},
                                          constants.REGRESS_METHOD_NAME),
            "classify_x_to_y": signature({"inputs": serialized}, {"scores": y},
                                         constants.CLASSIFY_METHOD_NAME),
            "classify_x2_to_y3": signature({"inputs": x2}, {"scores": y3},
                                           constants.CLASSIFY_METHOD_NAME),
            "asset_contents": signature({}, {"contents": contents.value()},
                                        constants.PREDICT_METHOD_NAME),
        }
        assets = v1.get_collection(v1.GraphKeys.ASSET_FILEPATHS)
        builder.add_meta_graph_and_variables(
            sess, [tf.saved_model.SERVING], signature_def_map=signatures,
            assets_collection=assets, **init)
        if extra_tags:
            signatures = dict(signatures)
            signatures[constants.DEFAULT_SERVING_SIGNATURE_DEF_KEY] = signature(
                {"x": x}, {"y": y2}, constants.PREDICT_METHOD_NAME)
            # the graph's init op collection already holds `init`: it is saved again
            builder.add_meta_graph([tf.saved_model.SERVING, *extra_tags],
                                   signature_def_map=signatures, assets_collection=assets)
    builder.save()
    for f in staging_assets.iterdir():
        f.unlink()
    staging_assets.rmdir()
    return Path(export_dir)


def export_tf2_half_plus_two(export_dir) -> Path:
    """`tf.saved_model.save` of a tf.Module: `serving_default` x -> y; `regress_x_to_y`
    (inputs -> outputs) and `classify_x_to_y` (inputs -> classes, scores: the label of
    y > 3 from a vocabulary asset, and y), all with TF2's predict method name."""
    import tensorflow as tf

    vocab = Path(export_dir).parent / f".{Path(export_dir).name}-vocab.txt"
    vocab.parent.mkdir(parents=True, exist_ok=True)
    vocab.write_text("\n".join(CLASS_LABELS) + "\n")

    class HalfPlusTwo(tf.Module):
        def __init__(self):
            super().__init__()
            self.a = tf.Variable(0.5)
            self.b = tf.Variable(2.0)
            self.vocab = tf.saved_model.Asset(str(vocab))
            self.labels = tf.lookup.StaticHashTable(tf.lookup.TextFileInitializer(
                self.vocab, tf.int64, tf.lookup.TextFileIndex.LINE_NUMBER, tf.string,
                tf.lookup.TextFileIndex.WHOLE_LINE), default_value="?")

        def _parse(self, serialized):
            return tf.io.parse_example(serialized, {
                "x": tf.io.FixedLenFeature([1], tf.float32)})["x"]

        @tf.function(input_signature=[tf.TensorSpec([None], tf.float32, name="x")])
        def predict(self, x):
            return {"y": self.a * x + self.b}

        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="inputs")])
        def regress(self, inputs):
            return {"outputs": tf.reshape(self.a * self._parse(inputs) + self.b, [-1])}

        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="inputs")])
        def classify(self, inputs):
            y = self.a * self._parse(inputs) + self.b
            label = self.labels.lookup(tf.cast(y > 3.0, tf.int64))
            return {"classes": label, "scores": y}

    module = HalfPlusTwo()
    tf.saved_model.save(module, str(export_dir), signatures={
        "serving_default": module.predict, "regress_x_to_y": module.regress,
        "classify_x_to_y": module.classify})
    vocab.unlink()
    return Path(export_dir)


def export_keras_half_plus_two(export_dir) -> Path:
    """A Keras 2 (tf_keras) functional model, y = 0.5x + 2, saved as a SavedModel: its
    `serving_default` takes `x` of shape [-1, 1] and answers `y`."""
    import tf_keras as keras

    x = keras.Input(shape=(1,), name="x")
    dense = keras.layers.Dense(1, name="y")
    model = keras.Model(x, dense(x))
    dense.set_weights([np.array([[0.5]], np.float32), np.array([2.0], np.float32)])
    model.save(str(export_dir), save_format="tf")
    return Path(export_dir)


def export_mnist_like(export_dir, seed: int = 0) -> Path:
    """TF Serving's mnist_saved_model.py signature (`predict_images`: float `images`
    [None, 784] -> `scores` [None, 10], also `serving_default`) with random weights, plus
    `scores_and_classes` (two outputs, for the REST multi-output formats)."""
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


def predict_request(name: str = "half_plus_two", x=(1.0, 2.0, 5.0),
                    version: Optional[int] = None, label: Optional[str] = None,
                    signature: str = ""):
    """A PredictRequest feeding `x` (float32) to a half_plus_two's `x`, for the version or
    label given, else the latest."""
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2

    req = predict_pb2.PredictRequest()
    req.model_spec.name = name
    req.model_spec.signature_name = signature
    if version is not None:
        req.model_spec.version.value = version
    if label is not None:
        req.model_spec.version_label = label
    req.inputs["x"].CopyFrom(tf.make_tensor_proto(list(x), dtype=tf.float32))
    return req


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
