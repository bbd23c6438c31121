"""Request tensors and TF Serving's JSON encoding: decoded as TensorFlow and TF Serving
decode them, within bounds, and refused with INVALID_ARGUMENT when malformed."""

from __future__ import annotations

import json
import tracemalloc

import numpy as np
import pytest
import tensorflow as tf
from tensorflow.core.framework import tensor_pb2, types_pb2

from serving.model_server.frontends import rest_json

from serving.model_server.errors import Code, ServingError
from serving.model_server.servable import tensors


@pytest.mark.parametrize("value", [
    np.random.default_rng(0).random((2, 784), dtype=np.float32),
    np.arange(6, dtype=np.int64).reshape(2, 3),
    np.array([[1, 255]], np.uint8),
    np.array([-3, 7], np.int8),
    np.array([0.5, -2.0], np.float64),
    np.array([1.5], np.float16),
    np.array([1.5 + 2j], np.complex64),
    np.zeros((0, 3), np.float32),
    np.array([True, False]),
    np.float32(3.0),
    np.array([b"a", b"bc"], dtype=object),
])
@pytest.mark.parametrize("content", [True, False], ids=["tensor_content", "typed_field"])
def test_to_ndarray_matches_make_ndarray(value, content):
    proto = tf.make_tensor_proto(value)
    if not content and proto.tensor_content:  # the same values in the typed field instead
        proto = tensors.to_tensor_proto(np.asarray(value))
    got = tensors.to_ndarray(proto, "x")
    expected = tf.make_ndarray(proto)
    assert got.dtype == expected.dtype and got.shape == expected.shape
    np.testing.assert_array_equal(got, expected)


def float_proto(shape, values=(), content=b"") -> tensor_pb2.TensorProto:
    proto = tensor_pb2.TensorProto(dtype=types_pb2.DT_FLOAT)
    for d in shape:
        proto.tensor_shape.dim.add(size=d)
    proto.float_val.extend(values)
    proto.tensor_content = content
    return proto


def test_typed_field_shorter_than_the_shape_repeats_its_last_value_as_tensorflow_does():
    assert tensors.to_ndarray(float_proto([5], [1.0, 2.0])).tolist() == [1, 2, 2, 2, 2]
    assert tensors.to_ndarray(float_proto([2], [1.0, 2.0, 3.0])).tolist() == [1, 2]
    assert tensors.to_ndarray(float_proto([3])).tolist() == [0, 0, 0]


def test_decoding_copies_at_most_once():
    """tensor_content is read in place; one broadcast value is not materialised."""
    content = np.arange(4, dtype=np.float32).tobytes()
    read = tensors.to_ndarray(float_proto([4], content=content))
    assert not read.flags.owndata and read.tolist() == [0, 1, 2, 3]
    broadcast = tensors.to_ndarray(float_proto([1 << 20], [7.0]))
    assert broadcast.strides == (0,) and broadcast[-1] == 7.0


@pytest.mark.parametrize("shape,content", [
    ([-1], b""), ([-2], b"\0" * 8), ([2, -1], b"\0" * 8), ([1 << 40, 1 << 40], b""),
])
def test_invalid_shapes_are_refused(shape, content):
    with pytest.raises(ServingError) as e:
        tensors.decode_request_tensors({"x": float_proto(shape, [1.0], content)})
    assert e.value.code == Code.INVALID_ARGUMENT
    assert "tensor parsing error: x" in e.value.message


def test_unknown_rank_and_unsupported_types_are_refused():
    proto = float_proto([1], [1.0])
    proto.tensor_shape.unknown_rank = True
    with pytest.raises(ServingError, match="unknown rank"):
        tensors.to_ndarray(proto, "x")
    proto = tensor_pb2.TensorProto(dtype=types_pb2.DT_RESOURCE)
    with pytest.raises(ServingError, match="unsupported dtype DT_RESOURCE"):
        tensors.to_ndarray(proto, "x")
    proto = tensor_pb2.TensorProto(dtype=types_pb2.DT_STRING, tensor_content=b"abc")
    proto.tensor_shape.dim.add(size=1)
    with pytest.raises(ServingError, match="cannot use tensor_content"):
        tensors.to_ndarray(proto, "x")


def test_tensor_content_of_the_wrong_size_is_invalid_argument():
    proto = tf.make_tensor_proto(np.zeros((3,), np.float32))
    proto.tensor_content = b"\0" * 8  # two floats for shape [3]
    with pytest.raises(ServingError) as e:
        tensors.to_ndarray(proto, "x")
    assert e.value.code == Code.INVALID_ARGUMENT
    assert "tensor parsing error: x: tensor_content holds 8 bytes" in e.value.message


def test_a_request_over_the_element_limit_is_refused_before_any_allocation():
    """The 20-byte request of issue 11: 134217728 floats from one float_val."""
    huge = float_proto([134217728], [1.0])
    assert len(huge.SerializeToString()) < 30
    tracemalloc.start()
    try:
        with pytest.raises(ServingError) as e:
            tensors.decode_request_tensors({"x": huge, "y": float_proto([1], [1.0])},
                                           max_elements=1 << 24)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert e.value.code == Code.INVALID_ARGUMENT
    assert "134217729 elements" in e.value.message and "16777216" in e.value.message
    assert peak < 1 << 20
    ok = tensors.decode_request_tensors({"x": float_proto([4], [1.0])}, max_elements=4)
    assert ok["x"].tolist() == [1.0] * 4


# ---- JSON -------------------------------------------------------------------------------

F32, I32, I8, I64, U64, BOOL, STR = (types_pb2.DT_FLOAT, types_pb2.DT_INT32, types_pb2.DT_INT8,
                                     types_pb2.DT_INT64, types_pb2.DT_UINT64, types_pb2.DT_BOOL,
                                     types_pb2.DT_STRING)


@pytest.mark.parametrize("value,dtype,expected", [
    ([1.5, 2], F32, [1.5, 2.0]),
    ([[1, 2], [3, 4]], I32, [[1, 2], [3, 4]]),
    ([16777215, -16777215], F32, [16777215.0, -16777215.0]),
    ([float("inf"), float("-inf")], F32, [float("inf"), float("-inf")]),
    ([-128, 127], I8, [-128, 127]),
    ([(1 << 63) - 1], I64, [(1 << 63) - 1]),
    ([(1 << 64) - 1], U64, [(1 << 64) - 1]),
    ([True, False], BOOL, [True, False]),
    (["a", {"b64": "AAE="}], STR, [b"a", b"\x00\x01"]),
    (3.0, F32, 3.0),
])
def test_json_values_of_the_signatures_type_convert(value, dtype, expected):
    assert rest_json.json_to_ndarray(value, dtype, "x").tolist() == expected


@pytest.mark.parametrize("value,dtype,message", [
    ([None], F32, "JSON Value: null Type: Null is not of expected type: float"),
    ([1.0, None], F32, "JSON Value: null Type: Null is not of expected type: float"),
    ([True], F32, "JSON Value: true Type: True is not of expected type: float"),
    (["1.5"], F32, 'JSON Value: "1.5" Type: String is not of expected type: float'),
    ([1 << 24], F32, "Cannot convert JSON value: 16777216 to float without loss of precision."),
    ([1 << 70], F32, "without loss of precision"),
    ([10 ** 400], types_pb2.DT_DOUBLE, "without loss of precision"),
    ([1e39], F32, "Cannot convert JSON value: 1e+39 to float without loss of precision."),
    ([1.0], I32, "JSON Value: 1.0 Type: Number is not of expected type: int32"),
    ([1 << 31], I32, "is not of expected type: int32"),
    ([128], I8, "JSON Value: 128 Type: Number is not of expected type: int8"),
    ([1 << 63], I64, "is not of expected type: int64"),
    ([-1], U64, "is not of expected type: uint64"),
    ([1], BOOL, "is not of expected type: bool"),
    ([1], STR, "JSON Value: 1 Type: Number is not of expected type: string"),
    ([{"b64": "!!"}], STR, "Unable to base64 decode"),
    ([{"c": 1}], STR, "not formatted correctly for base64 data"),
    ([[1.0, 2.0], [1.0]], F32, "Encountered list at unexpected size: 1 at level: 1"),
    ([[1.0], 2.0], F32, "JSON Value: 2.0 found at incorrect level: 2"),
    ([1.0, [2.0]], F32, "Encountered list at unexpected level"),
])
def test_json_values_tf_serving_refuses(value, dtype, message):
    with pytest.raises(ServingError) as e:
        rest_json.json_to_ndarray(value, dtype, "x")
    assert e.value.code == Code.INVALID_ARGUMENT
    assert message in e.value.message


def test_deep_json_and_budget_are_refused_before_conversion():
    deep = json.loads("[" * 500 + "]" * 500)  # the 1 KB body
    with pytest.raises(ServingError, match="nested more than 32 deep"):
        rest_json.json_to_ndarray(deep, F32, "x")
    budget = tensors.ElementBudget(5)
    assert rest_json.json_to_ndarray([1.0] * 3, F32, "x", budget).shape == (3,)
    with pytest.raises(ServingError, match="4 elements, more than the server decodes for one "
                                           r"request \(5"):
        rest_json.json_to_ndarray([1.0] * 4, F32, "y", budget)


def test_unimplemented_json_types_are_unimplemented():
    with pytest.raises(ServingError) as e:
        rest_json.json_to_ndarray([1.0], types_pb2.DT_HALF, "x")
    assert e.value.code == Code.UNIMPLEMENTED


def test_outputs_are_written_as_tf_serving_writes_them():
    values = np.array([0.1, 2.5, np.nan, np.inf, -np.inf], np.float32)
    text = rest_json.dumps({"outputs": rest_json.ndarray_to_json(values, "y")}).decode()
    assert text == '{"outputs":[0.1,2.5,NaN,Infinity,-Infinity]}'
    assert rest_json.ndarray_to_json(np.array([b"\xff", b"ok"], object), "s") == \
        [{"b64": "/w=="}, "ok"]
    assert rest_json.ndarray_to_json(np.array([b"ok"], object), "s_bytes") == [{"b64": "b2s="}]


def _answer_as_before(outputs, row):
    """A Predict answer's JSON as written before numeric arrays went to orjson whole: every
    output through ndarray_to_json, non-finite floats through Python's json."""
    listed = {k: rest_json.ndarray_to_json(v, k) for k, v in outputs.items()}
    if row:
        if len(listed) == 1:
            answer = {"predictions": next(iter(listed.values()))}
        else:
            batch = next(iter(outputs.values())).shape[0]
            answer = {"predictions": [{k: listed[k][i] for k in listed} for i in range(batch)]}
    else:
        answer = {"outputs": next(iter(listed.values())) if len(listed) == 1 else listed}
    return json.dumps(answer, separators=(",", ":"), allow_nan=True)


def _values(text: str) -> str:
    """The JSON values of `text`, written again one way (NaN included): equal only when every
    value is."""
    return json.dumps(json.loads(text))


_ANSWER_DTYPES = (np.float32, np.float64, np.int8, np.int16, np.int32, np.int64, np.uint8,
                  np.uint16, np.uint32, np.uint64, np.bool_)


@pytest.mark.parametrize("dtype", _ANSWER_DTYPES)
@pytest.mark.parametrize("shape", [(3,), (2, 3), (2, 3, 2), (0, 3), (2, 0), "transposed"])
def test_numeric_answers_read_back_as_ndarray_to_json_writes_them(dtype, shape):
    """Numeric outputs are handed to orjson as arrays: the text reads back to exactly the
    values ndarray_to_json gives (float32 at float precision, NaN and +/-Infinity as TF
    Serving writes them), in the row and the columnar format, with one output and two."""
    rng = np.random.default_rng(7)
    array_shape = (3, 2) if shape == "transposed" else shape
    if np.dtype(dtype).kind == "f":
        value = (rng.standard_normal(array_shape) * 10.0 ** rng.integers(-30, 30, array_shape))
        value = value.astype(dtype)
        if value.size > 3:
            value.flat[1:4] = [np.nan, np.inf, -np.inf]
    elif dtype is np.bool_:
        value = rng.integers(0, 2, array_shape).astype(bool)
    else:
        info = np.iinfo(dtype)
        value = rng.integers(info.min, info.max, array_shape, dtype=dtype, endpoint=True)
    if shape == "transposed":
        value = value.T  # not C-ordered, as a fetched output may be
    other = np.arange(value.shape[0] if value.ndim else 1, dtype=np.float32) / 3
    for outputs in ({"y": value}, {"y": value, "z": other}):
        for row in (True, False):
            if row and value.ndim and value.shape[0] == 0:
                continue  # a row-format answer needs a batch: refused alike before and after
            text = rest_json.dumps(rest_json.predict_json(outputs, row)).decode()
            assert _values(text) == _values(_answer_as_before(outputs, row)), (outputs, row)


def test_a_0d_a_string_and_a_big_endian_output_are_written_as_before():
    big_endian = {"y": np.array([1.5, 0.1], ">f4")}
    assert rest_json.dumps(rest_json.predict_json(big_endian, True)).decode() == \
        _answer_as_before(big_endian, True)
    outputs = {"s": np.array([b"\xff", b"ok"], object), "n": np.array([1.5, 0.1], np.float32)}
    assert json.loads(rest_json.dumps(rest_json.predict_json(outputs, True))) == \
        {"predictions": [{"s": {"b64": "/w=="}, "n": 1.5}, {"s": "ok", "n": 0.1}]}
    text = rest_json.dumps(rest_json.predict_json({"y": np.array(0.1, np.float32)}, False))
    assert text == b'{"outputs":0.1}'
