"""The half_plus_two export serves like TF Serving's demo model, through every signature."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf
from tensorflow.core.protobuf import saved_model_pb2

from components.half_plus_two_trainer import export
from components.signatures import CLASSIFY_METHOD, PREDICT_METHOD, REGRESS_METHOD


def _examples(xs):
    return tf.constant([tf.train.Example(features=tf.train.Features(feature={
        "x": tf.train.Feature(float_list=tf.train.FloatList(value=[x]))})).SerializeToString()
        for x in xs])


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    path = tmp_path_factory.mktemp("export") / "1"
    export(0.5, 2.0, str(path))
    return path


def test_signatures_and_method_names(exported):
    saved_model = saved_model_pb2.SavedModel()
    saved_model.ParseFromString((exported / "saved_model.pb").read_bytes())
    signatures = saved_model.meta_graphs[0].signature_def
    assert signatures["serving_default"].method_name == PREDICT_METHOD
    assert signatures["regress_x_to_y"].method_name == REGRESS_METHOD
    assert signatures["classify_x_to_y"].method_name == CLASSIFY_METHOD
    assert list(signatures["serving_default"].inputs) == ["x"]
    assert list(signatures["regress_x_to_y"].inputs) == ["inputs"]
    assert list(signatures["regress_x_to_y"].outputs) == ["outputs"]
    assert list(signatures["classify_x_to_y"].outputs) == ["scores"]


def test_every_signature_computes_half_plus_two(exported):
    loaded = tf.saved_model.load(str(exported))
    xs = [1.0, 2.0, 5.0]
    predict = loaded.signatures["serving_default"](x=tf.constant(xs))["y"].numpy()
    regress = loaded.signatures["regress_x_to_y"](inputs=_examples(xs))["outputs"].numpy()
    classify = loaded.signatures["classify_x_to_y"](inputs=_examples(xs))["scores"].numpy()
    np.testing.assert_allclose(predict, [2.5, 3.0, 4.5], atol=1e-6)
    np.testing.assert_allclose(regress, [2.5, 3.0, 4.5], atol=1e-6)
    np.testing.assert_allclose(classify, [[2.5], [3.0], [4.5]], atol=1e-6)
