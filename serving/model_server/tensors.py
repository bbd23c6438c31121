"""Tensor conversions: TensorProto <-> numpy, and TF Serving's REST JSON tensor encoding.

Request tensors are decoded the way TensorFlow's Tensor::FromProto reads them (the shape
must be valid; `tensor_content` must hold exactly the shape's bytes; typed fields with
fewer values than the shape are filled with their last value), and within a bound: a
request may decode at most `max_elements` elements in all (--max_request_tensor_elements),
checked from the shapes before anything is allocated, so a 20-byte request cannot ask for
gigabytes. Decoding copies the payload at most once: `tensor_content` is read in place
and a single broadcast value is never materialised.

Responses fill the typed repeated fields (float_val, int64_val, ...) the way TF Serving's
AsProtoField does, because clients such as TF Serving's mnist_client.py read
`outputs['scores'].float_val` directly.

JSON follows tensorflow_serving/util/json_tensor.cc: a value must be of the signature's
type (a JSON integer for integer types, a number for floats, never null), integers must
fit the type (floats: without loss of precision), lists must be rectangular, and floats
are written back at their own precision, with NaN and +/-Infinity as TF Serving writes them.
"""

from __future__ import annotations

import base64
import math
from itertools import chain
from typing import Any, Dict, List, Mapping, Optional

import numpy as np
from tensorflow.core.framework import tensor_pb2, tensor_shape_pb2, types_pb2

from serving.model_server.errors import Code, ServingError, invalid_argument

DEFAULT_MAX_ELEMENTS = 1 << 24  # 64 MiB of float32; --max_request_tensor_elements
MAX_JSON_RANK = 32  # deeper JSON lists are refused before they are walked


def _bfloat16():
    import tensorflow as tf

    return np.dtype(tf.bfloat16.as_numpy_dtype)


# DataType -> (numpy dtype, typed field, numpy dtype of that field's values)
_TYPES = {
    types_pb2.DT_FLOAT: (np.dtype(np.float32), "float_val", np.float32),
    types_pb2.DT_DOUBLE: (np.dtype(np.float64), "double_val", np.float64),
    types_pb2.DT_HALF: (np.dtype(np.float16), "half_val", np.uint16),
    types_pb2.DT_BFLOAT16: (_bfloat16(), "half_val", np.uint16),
    types_pb2.DT_INT8: (np.dtype(np.int8), "int_val", np.int32),
    types_pb2.DT_INT16: (np.dtype(np.int16), "int_val", np.int32),
    types_pb2.DT_INT32: (np.dtype(np.int32), "int_val", np.int32),
    types_pb2.DT_UINT8: (np.dtype(np.uint8), "int_val", np.int32),
    types_pb2.DT_UINT16: (np.dtype(np.uint16), "int_val", np.int32),
    types_pb2.DT_INT64: (np.dtype(np.int64), "int64_val", np.int64),
    types_pb2.DT_UINT32: (np.dtype(np.uint32), "uint32_val", np.uint32),
    types_pb2.DT_UINT64: (np.dtype(np.uint64), "uint64_val", np.uint64),
    types_pb2.DT_BOOL: (np.dtype(np.bool_), "bool_val", np.bool_),
    types_pb2.DT_COMPLEX64: (np.dtype(np.complex64), "scomplex_val", np.float32),
    types_pb2.DT_COMPLEX128: (np.dtype(np.complex128), "dcomplex_val", np.float64),
}
_DATATYPE_OF = {numpy: dt for dt, (numpy, _, _) in _TYPES.items()}


def datatype_of(value: np.ndarray) -> Optional[int]:
    """The TensorFlow DataType of an array (DT_STRING for bytes/str/object), or None."""
    if value.dtype == object or value.dtype.kind in "SU":
        return types_pb2.DT_STRING
    return _DATATYPE_OF.get(value.dtype)


def dtype_name(dtype: Optional[int]) -> str:
    """TensorFlow's DataTypeString: DT_FLOAT -> 'float', DT_INT64 -> 'int64'."""
    return types_pb2.DataType.Name(dtype or 0)[3:].lower()


def numpy_dtype(dtype: int) -> np.dtype:
    if dtype == types_pb2.DT_STRING:
        return np.dtype(object)
    entry = _TYPES.get(dtype)
    if entry is None:
        raise invalid_argument(f"Unsupported tensor type: {dtype_name(dtype)}")
    return entry[0]


def element_limit_error(count: int, limit: int) -> ServingError:
    return invalid_argument(
        f"The request's tensors have {count} elements, more than the server decodes for one "
        f"request ({limit}, --max_request_tensor_elements)")


def shape_elements(proto: tensor_pb2.TensorProto, alias: str) -> int:
    """The element count of a request tensor's shape; INVALID_ARGUMENT unless it is a valid
    TensorShape (known rank, no negative dimension, no overflow)."""
    shape = proto.tensor_shape
    if shape.unknown_rank:
        raise invalid_argument(f"tensor parsing error: {alias}: the shape has unknown rank")
    n = 1
    for d in shape.dim:
        if d.size < 0:
            raise invalid_argument(f"tensor parsing error: {alias}: negative dimension "
                                   f"{d.size} in shape {[x.size for x in shape.dim]}")
        n *= d.size
        if n >= 1 << 63:
            raise invalid_argument(f"tensor parsing error: {alias}: the shape has more than "
                                   f"2^63 elements")
    return n


def decode_request_tensors(protos: Mapping[str, tensor_pb2.TensorProto],
                           max_elements: int = DEFAULT_MAX_ELEMENTS) -> Dict[str, np.ndarray]:
    """A request's named TensorProtos as arrays, refusing more than `max_elements` elements
    in all before decoding any."""
    counts = {alias: shape_elements(proto, alias) for alias, proto in protos.items()}
    total = sum(counts.values())
    if total > max_elements:
        raise element_limit_error(total, max_elements)
    return {alias: to_ndarray(proto, alias, counts[alias]) for alias, proto in protos.items()}


def to_ndarray(proto: tensor_pb2.TensorProto, alias: str = "",
               elements: Optional[int] = None) -> np.ndarray:
    """One TensorProto as a (possibly read-only) array, as Tensor::FromProto reads it."""
    n = shape_elements(proto, alias) if elements is None else elements
    shape = tuple(d.size for d in proto.tensor_shape.dim)
    if proto.dtype == types_pb2.DT_STRING:
        if proto.tensor_content:
            raise invalid_argument(f"tensor parsing error: {alias}: a string tensor cannot "
                                   f"use tensor_content")
        return _fill(list(proto.string_val), n, shape, object)
    entry = _TYPES.get(proto.dtype)
    if entry is None:
        known = proto.dtype in types_pb2.DataType.values()
        raise invalid_argument(f"tensor parsing error: {alias}: unsupported dtype "
                               f"{types_pb2.DataType.Name(proto.dtype) if known else proto.dtype}")
    dtype, field, field_dtype = entry
    if proto.tensor_content:
        content = proto.tensor_content
        if len(content) != n * dtype.itemsize:
            raise invalid_argument(
                f"tensor parsing error: {alias}: tensor_content holds {len(content)} bytes, "
                f"shape {list(shape)} of {dtype_name(proto.dtype)} needs "
                f"{n * dtype.itemsize}")
        return np.frombuffer(content, dtype).reshape(shape)
    values = getattr(proto, field)
    per_element = 2 if field in ("scomplex_val", "dcomplex_val") else 1
    available = len(values) // per_element
    if n == 0:
        return np.zeros(shape, dtype)
    if available == 0:
        return np.broadcast_to(np.zeros((), dtype), shape)
    take = min(n, available) * per_element
    raw = np.fromiter(values[:take] if take < len(values) else values, field_dtype, take)
    if per_element == 2:
        raw = raw.view(dtype)
    elif field == "half_val":
        raw = raw.view(dtype)
    elif raw.dtype != dtype:
        raw = raw.astype(dtype)  # int_val holds int8/16, uint8/16 values, as in TensorFlow
    return _fill(raw, n, shape, dtype)


def _fill(values, n: int, shape, dtype) -> np.ndarray:
    """`values` as `shape`: extra values ignored, missing ones repeat the last (FromProto)."""
    k = len(values)
    if k == n:
        out = values if isinstance(values, np.ndarray) else _array(values, dtype)
        return out.reshape(shape)
    if n == 0:
        return np.zeros(shape, dtype)
    if k == 0:
        return np.broadcast_to(np.array(b"" if dtype is object else 0, dtype), shape)
    if k == 1:
        return np.broadcast_to(_array(values[:1], dtype)[0], shape)  # no n-sized copy
    if k > n:
        return _array(values[:n], dtype).reshape(shape)
    out = np.empty(n, dtype)
    out[:k] = values
    out[k:] = values[-1]
    return out.reshape(shape)


def _array(values, dtype) -> np.ndarray:
    if dtype is object:
        out = np.empty(len(values), object)
        out[:] = values
        return out
    return np.asarray(values, dtype)


def to_tensor_proto(value: np.ndarray) -> tensor_pb2.TensorProto:
    """numpy -> TensorProto in the typed repeated field (AsProtoField)."""
    value = np.asarray(value)
    dtype = datatype_of(value)
    if dtype is None:
        raise ServingError(Code.INTERNAL, f"Cannot return a tensor of {value.dtype}")
    proto = tensor_pb2.TensorProto(dtype=dtype, tensor_shape=tensor_shape_pb2.TensorShapeProto(
        dim=[tensor_shape_pb2.TensorShapeProto.Dim(size=d) for d in value.shape]))
    flat = value.ravel()
    if dtype == types_pb2.DT_STRING:
        proto.string_val.extend(v if isinstance(v, bytes) else str(v).encode() for v in flat)
        return proto
    field = _TYPES[dtype][1]
    if field == "half_val":
        proto.half_val.extend(flat.view(np.uint16).tolist())
    elif field in ("scomplex_val", "dcomplex_val"):
        getattr(proto, field).extend(flat.view(_TYPES[dtype][2]).tolist())
    else:
        getattr(proto, field).extend(flat.tolist())
    return proto


# ---- JSON (TF Serving's REST encoding) -------------------------------------------------

_FLOAT_LIMITS = {types_pb2.DT_FLOAT: (float(np.finfo(np.float32).max), (1 << 24) - 1),
                 types_pb2.DT_DOUBLE: (float(np.finfo(np.float64).max), (1 << 53) - 1)}
_INT_TYPES = (types_pb2.DT_INT8, types_pb2.DT_INT16, types_pb2.DT_INT32, types_pb2.DT_UINT8,
              types_pb2.DT_UINT16, types_pb2.DT_INT64, types_pb2.DT_UINT32, types_pb2.DT_UINT64)


def json_type(value) -> str:
    if value is None:
        return "Null"
    if isinstance(value, bool):
        return "True" if value else "False"
    if isinstance(value, dict):
        return "Object"
    if isinstance(value, list):
        return "Array"
    if isinstance(value, str):
        return "String"
    return "Number"


def json_text(value, limit: int = 100) -> str:
    """A JSON value as text for an error message, cut at `limit` characters."""
    import json

    try:
        text = json.dumps(value)
    except (TypeError, ValueError, RecursionError):  # deeply nested: name its type only
        text = json_type(value)
    return text if len(text) <= limit else text[:limit] + "..."


def _type_error(value, dtype: int) -> ServingError:
    return invalid_argument(f"JSON Value: {json_text(value)} Type: {json_type(value)} is not "
                            f"of expected type: {dtype_name(dtype)}")


def is_b64(value) -> bool:
    return isinstance(value, dict) and len(value) == 1 and isinstance(value.get("b64"), str)


def json_shape(value) -> List[int]:
    """The dense shape a JSON value describes, following the first element of each list
    (GetDenseTensorShape); at most MAX_JSON_RANK deep."""
    shape = []
    while isinstance(value, list):
        shape.append(len(value))
        if len(shape) > MAX_JSON_RANK:
            raise invalid_argument(f"JSON Value: lists nested more than {MAX_JSON_RANK} deep")
        value = value[0] if value else None
    return shape


def json_flatten(value, shape: List[int]) -> list:
    """The leaves of a rectangular JSON value of `shape`, in row-major order (FillTensorProto:
    every list at a level has that level's size, every leaf is at the last level)."""
    level = [value]
    for depth, size in enumerate(shape):
        for item in level:
            if not isinstance(item, list):
                raise invalid_argument(
                    f"JSON Value: {json_text(item)} found at incorrect level: {depth + 1} in "
                    f"the JSON DOM. Expected at level: {len(shape)}")
            if len(item) != size:
                raise invalid_argument(f"Encountered list at unexpected size: {len(item)} at "
                                       f"level: {depth} expected size: {size}")
        level = list(chain.from_iterable(level))
    return level


def json_to_ndarray(value: Any, dtype: int, name: str, budget: Optional[List[int]] = None
                    ) -> np.ndarray:
    """A JSON value (nested lists, {"b64": ...} for bytes) as an array of `dtype`.

    `budget`, a one-item list, is the number of elements the request may still decode;
    it is charged before any conversion."""
    shape = json_shape(value)
    n = math.prod(shape)
    if budget is not None:
        if n > budget[0]:
            raise element_limit_error(n, budget[1] if len(budget) > 1 else budget[0])
        budget[0] -= n
    flat = json_flatten(value, shape)
    if flat and isinstance(flat[0], list) or any(type(v) is list for v in flat):
        raise invalid_argument(f"Encountered list at unexpected level: {len(shape)} expected "
                               f"< {len(shape)}")
    if dtype == types_pb2.DT_STRING:
        return _fill(_json_strings(flat), len(flat), shape, object)
    types = set(map(type, flat))
    if dtype in _FLOAT_LIMITS:
        if not types <= {int, float}:
            raise _type_error(next(v for v in flat if type(v) not in (int, float)), dtype)
        _check_lossless(flat, dtype, types)
    elif dtype in _INT_TYPES:
        if not types <= {int}:
            raise _type_error(next(v for v in flat if type(v) is not int), dtype)
        info = np.iinfo(numpy_dtype(dtype))
        if flat and (min(flat) < info.min or max(flat) > info.max):
            raise _type_error(next(v for v in flat if not info.min <= v <= info.max), dtype)
    elif dtype == types_pb2.DT_BOOL:
        if not types <= {bool}:
            raise _type_error(next(v for v in flat if type(v) is not bool), dtype)
    else:
        raise ServingError(Code.UNIMPLEMENTED, f"Conversion of JSON Value: "
                                               f"{json_text(value)} to type: "
                                               f"{dtype_name(dtype)}")
    return np.array(flat, dtype=numpy_dtype(dtype)).reshape(shape)


def _check_lossless(flat: list, dtype: int, types) -> None:
    """IsLosslessDecimal: integers within the float's exact range, finite numbers within
    its range (NaN and +/-Infinity pass)."""
    max_float, max_int = _FLOAT_LIMITS[dtype]
    if not flat:
        return
    bound = max_int if int in types else max_float
    try:
        low, high = min(flat), max(flat)
        if -bound <= low and high <= bound:
            return
    except TypeError:
        pass
    for v in flat:  # rare: name the first value that does not fit
        if type(v) is int:
            ok = -max_int <= v <= max_int
        else:
            ok = not math.isfinite(v) or -max_float <= v <= max_float
        if not ok:
            raise invalid_argument(f"Cannot convert JSON value: {json_text(v)} to "
                                   f"{dtype_name(dtype)} without loss of precision.")


def _json_strings(flat: list) -> list:
    out = []
    for v in flat:
        if isinstance(v, str):
            out.append(v.encode("utf-8"))
        elif isinstance(v, dict):
            out.append(decode_b64(v))
        else:
            raise _type_error(v, types_pb2.DT_STRING)
    return out


def decode_b64(value) -> bytes:
    """{"b64": "..."} -> bytes, as JsonDecodeBase64Object."""
    if not is_b64(value):
        raise invalid_argument(f"JSON Value: {json_text(value)} not formatted correctly for "
                               f"base64 data")
    try:
        return base64.b64decode(value["b64"], validate=True)
    except ValueError:
        raise invalid_argument("Unable to base64 decode") from None


def ndarray_to_json(value: np.ndarray, name: str) -> Any:
    """An output array as JSON-ready values: float32 at float precision, non-finite floats
    as TF Serving writes them (see `dumps`), bytes as {"b64"} for names ending `_bytes`."""
    if value.dtype == object or value.dtype.kind in "SU":
        as_b64 = name.endswith("_bytes")
        return _map_nested(value, lambda b: _string_to_json(b, as_b64))
    if value.dtype == np.float32:
        return _map_nested(value, _float32_to_json)
    if value.dtype.kind == "f":
        return value.astype(np.float64).tolist()
    if value.dtype.kind == "c" or value.dtype == np.float16:
        raise ServingError(Code.INVALID_ARGUMENT, f"Failed to write JSON value for tensor "
                                                  f"type: {dtype_name(datatype_of(value))}")
    return value.tolist()


def _map_nested(value: np.ndarray, fn):
    if value.ndim == 0:
        return fn(value[()])
    if value.size == 0:
        return np.empty(value.shape).tolist()
    flat = [fn(v) for v in value.ravel()]
    for dim in reversed(value.shape[1:]):
        flat = [flat[i:i + dim] for i in range(0, len(flat), dim)]
    return flat


def _float32_to_json(v):
    """Shortest text that round-trips the float32 (2.5, 0.1), not its float64 expansion."""
    f = float(v)
    return float(str(v)) if math.isfinite(f) else f


def _string_to_json(b, as_b64: bool):
    if isinstance(b, str):
        b = b.encode()
    if as_b64:
        return {"b64": base64.b64encode(b).decode("ascii")}
    try:
        return b.decode("utf-8")
    except UnicodeDecodeError:
        return {"b64": base64.b64encode(b).decode("ascii")}


def dumps(obj) -> bytes:
    """JSON text as TF Serving writes it: NaN, Infinity and -Infinity for non-finite floats
    (RapidJSON's kWriteNanAndInfFlag; Python's json, JavaScript's JSON5 and RapidJSON with
    kParseNanAndInfFlag read them back), everything else plain JSON."""
    import json

    return json.dumps(obj, separators=(",", ":"), allow_nan=True).encode("utf-8")
