"""Request tensors: the tensor_content fast path reads what tf.make_ndarray reads."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from serving.model_server import tensors
from serving.model_server.errors import Code, ServingError


@pytest.mark.parametrize("value", [
    np.random.default_rng(0).random((2, 784), dtype=np.float32),
    np.arange(6, dtype=np.int64).reshape(2, 3),
    np.array([[1, 255]], np.uint8),
    np.array([0.5, -2.0], np.float64),
    np.array([1.5], np.float16),
    np.zeros((0, 3), np.float32),
    np.array([True, False]),
    np.float32(3.0),
    np.array([b"a", b"bc"], dtype=object),
])
def test_to_ndarray_matches_make_ndarray(value):
    proto = tf.make_tensor_proto(value)
    got = tensors.to_ndarray(proto)
    expected = tf.make_ndarray(proto)
    assert got.dtype == expected.dtype and got.shape == expected.shape
    np.testing.assert_array_equal(got, expected)


def test_typed_field_values_are_read_too():
    proto = tf.make_tensor_proto([1.0, 2.0, 5.0], dtype=tf.float32)
    proto.ClearField("tensor_content")
    proto.float_val.extend([1.0, 2.0, 5.0])
    assert tensors.to_ndarray(proto).tolist() == [1.0, 2.0, 5.0]


def test_tensor_content_of_the_wrong_size_is_invalid_argument():
    proto = tf.make_tensor_proto(np.zeros((3,), np.float32))
    proto.tensor_content = b"\0" * 8  # two floats for shape [3]
    with pytest.raises(ServingError) as e:
        tensors.to_ndarray(proto)
    assert e.value.code == Code.INVALID_ARGUMENT
    assert "invalid tensor proto" in e.value.message
