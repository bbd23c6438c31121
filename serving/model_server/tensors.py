"""Tensor conversions: TensorProto <-> numpy, and TF Serving's REST JSON tensor encoding.

Responses fill the typed repeated fields (float_val, int64_val, ...) the way TF Serving's
AsProtoField does, because clients such as TF Serving's mnist_client.py read
`outputs['scores'].float_val` directly; tf.make_ndarray reads either form.
"""

from __future__ import annotations

import base64
import math
from typing import Any

import numpy as np
import tensorflow as tf
from tensorflow.core.framework import tensor_pb2, tensor_shape_pb2, types_pb2

from serving.model_server.errors import invalid_argument

_FIELD = {
    types_pb2.DT_FLOAT: "float_val", types_pb2.DT_DOUBLE: "double_val",
    types_pb2.DT_INT32: "int_val", types_pb2.DT_INT16: "int_val", types_pb2.DT_INT8: "int_val",
    types_pb2.DT_UINT8: "int_val", types_pb2.DT_UINT16: "int_val",
    types_pb2.DT_INT64: "int64_val", types_pb2.DT_UINT32: "uint32_val",
    types_pb2.DT_UINT64: "uint64_val", types_pb2.DT_BOOL: "bool_val",
    types_pb2.DT_STRING: "string_val",
}


# dtypes whose tensor_content is the plain little-endian array, as clients send it
# (tf.make_tensor_proto of a numpy array): read with one np.frombuffer
_CONTENT_DTYPES = {
    types_pb2.DT_FLOAT: np.dtype(np.float32), types_pb2.DT_DOUBLE: np.dtype(np.float64),
    types_pb2.DT_HALF: np.dtype(np.float16), types_pb2.DT_INT8: np.dtype(np.int8),
    types_pb2.DT_INT16: np.dtype(np.int16), types_pb2.DT_INT32: np.dtype(np.int32),
    types_pb2.DT_INT64: np.dtype(np.int64), types_pb2.DT_UINT8: np.dtype(np.uint8),
    types_pb2.DT_UINT16: np.dtype(np.uint16), types_pb2.DT_UINT32: np.dtype(np.uint32),
    types_pb2.DT_UINT64: np.dtype(np.uint64), types_pb2.DT_BOOL: np.dtype(np.bool_),
}


def to_ndarray(proto: tensor_pb2.TensorProto) -> np.ndarray:
    """The request tensor as a (possibly read-only) array."""
    dtype = _CONTENT_DTYPES.get(proto.dtype)
    if dtype is not None and proto.tensor_content:
        # The hot path of every gRPC Predict; tf.make_ndarray costs several times more.
        shape = [d.size for d in proto.tensor_shape.dim]
        content = proto.tensor_content
        if min(shape, default=0) >= 0 and len(content) == math.prod(shape) * dtype.itemsize:
            return np.frombuffer(content, dtype).reshape(shape)
    try:
        return tf.make_ndarray(proto)  # typed fields, strings; and the error if malformed
    except Exception as e:  # noqa: BLE001 - any malformed tensor is the client's error
        raise invalid_argument(f"invalid tensor proto: {e}") from e


def to_tensor_proto(value: np.ndarray) -> tensor_pb2.TensorProto:
    """numpy -> TensorProto in the typed repeated field (AsProtoField)."""
    value = np.asarray(value)
    dtype = tf.as_dtype(value.dtype if value.dtype != object else tf.string).as_datatype_enum
    field = _FIELD.get(dtype)
    if field is None:
        return tf.make_tensor_proto(value)
    proto = tensor_pb2.TensorProto(dtype=dtype, tensor_shape=tensor_shape_pb2.TensorShapeProto(
        dim=[tensor_shape_pb2.TensorShapeProto.Dim(size=d) for d in value.shape]))
    flat = value.ravel()
    if dtype == types_pb2.DT_STRING:
        proto.string_val.extend(v if isinstance(v, bytes) else str(v).encode() for v in flat)
    else:
        getattr(proto, field).extend(flat.tolist())
    return proto


# ---- JSON (TF Serving's REST encoding) -------------------------------------------------

def json_to_ndarray(value: Any, dtype: tf.DType, name: str) -> np.ndarray:
    """A JSON value (nested lists, {"b64": ...} for bytes) as an array of `dtype`."""
    try:
        if dtype == tf.string:
            return np.array(_decode_strings(value, name), dtype=object)
        if _contains_b64(value):
            raise invalid_argument(f"{{\"b64\": ...}} given for input {name} of type "
                                   f"{dtype.name}; b64 is only for DT_STRING")
        arr = np.array(value, dtype=dtype.as_numpy_dtype)
    except ValueError as e:
        message = str(e)
        if "inhomogeneous" in message or "sequence" in message:
            raise invalid_argument(f"input {name}: tensors must be rectangular "
                                   f"(all lists at one depth the same length): {e}") from e
        raise invalid_argument(f"input {name}: cannot convert JSON value to "
                               f"{dtype.name}: {e}") from e
    except TypeError as e:
        raise invalid_argument(f"input {name}: cannot convert JSON value to "
                               f"{dtype.name}: {e}") from e
    if dtype != tf.string and dtype.is_integer and _has_non_integer(value):
        raise invalid_argument(f"input {name}: expected integers for {dtype.name}")
    if dtype != tf.bool and _has_bool(value):
        raise invalid_argument(f"input {name}: expected {dtype.name} but got a boolean")
    return arr


def _contains_b64(value) -> bool:
    if isinstance(value, dict):
        return True
    if isinstance(value, list):
        return any(_contains_b64(v) for v in value)
    return False


def _has_non_integer(value) -> bool:
    if isinstance(value, list):
        return any(_has_non_integer(v) for v in value)
    return isinstance(value, float) and not value.is_integer()


def _has_bool(value) -> bool:
    if isinstance(value, list):
        return any(_has_bool(v) for v in value)
    return isinstance(value, bool)


def _decode_strings(value, name):
    if isinstance(value, list):
        return [_decode_strings(v, name) for v in value]
    if isinstance(value, dict):
        if set(value) != {"b64"} or not isinstance(value["b64"], str):
            raise invalid_argument(f"input {name}: a binary value must be {{\"b64\": \"...\"}}")
        try:
            return base64.b64decode(value["b64"], validate=True)
        except ValueError as e:
            raise invalid_argument(f"input {name}: invalid base64: {e}") from e
    if isinstance(value, str):
        return value.encode("utf-8")
    raise invalid_argument(f"input {name}: expected a string for DT_STRING, got "
                           f"{type(value).__name__}")


def ndarray_to_json(value: np.ndarray, name: str) -> Any:
    """An output array as JSON: float32 at float precision, bytes as {"b64"} for *_bytes."""
    if value.dtype == object or value.dtype.kind in "SU":
        as_b64 = name.endswith("_bytes")
        return _map_nested(value, lambda b: _string_to_json(b, as_b64))
    if value.dtype == np.float32:
        return _map_nested(value, _float32_to_json)
    if value.dtype.kind == "f":
        return _map_nested(value, _float_to_json)
    return value.tolist()


def _map_nested(value: np.ndarray, fn):
    if value.ndim == 0:
        return fn(value.item() if value.dtype != np.float32 else value[()])
    if value.size == 0:
        return np.empty(value.shape).tolist()
    flat = [fn(v) for v in value.ravel()]
    for dim in reversed(value.shape[1:]):
        flat = [flat[i:i + dim] for i in range(0, len(flat), dim)]
    return flat


def _float32_to_json(v):
    """Shortest text that round-trips the float32 (2.5, 0.1), not its float64 expansion."""
    f = float(v)
    return float(str(np.float32(v))) if math.isfinite(f) else f


def _float_to_json(v):
    return float(v)


def _string_to_json(b, as_b64: bool):
    if isinstance(b, str):
        b = b.encode()
    if as_b64:
        return {"b64": base64.b64encode(b).decode("ascii")}
    try:
        return b.decode("utf-8")
    except UnicodeDecodeError:
        return {"b64": base64.b64encode(b).decode("ascii")}
