"""Tensor conversions: TensorProto <-> numpy, and the element budget of one request.

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

TF Serving's REST JSON encoding of tensors is `rest_json`'s.
"""

from __future__ import annotations

from typing import Dict, Mapping, Optional

import ml_dtypes  # TensorFlow's own bfloat16 (tf.bfloat16.as_numpy_dtype)
import numpy as np
from tensorflow.core.framework import tensor_pb2, tensor_shape_pb2, types_pb2

from serving.model_server.errors import Code, ServingError, invalid_argument

DEFAULT_MAX_ELEMENTS = 1 << 24  # 64 MiB of float32; --max_request_tensor_elements
# numpy's limit on an array's rank (NPY_MAXDIMS in numpy 1.x). TensorFlow allows 254, so a
# request of higher rank is refused as a bad shape (INVALID_ARGUMENT), never decoded.
MAX_DIMS = 32


# DataType -> (numpy dtype, typed field, numpy dtype of that field's values)
_TYPES = {
    types_pb2.DT_FLOAT: (np.dtype(np.float32), "float_val", np.float32),
    types_pb2.DT_DOUBLE: (np.dtype(np.float64), "double_val", np.float64),
    types_pb2.DT_HALF: (np.dtype(np.float16), "half_val", np.uint16),
    types_pb2.DT_BFLOAT16: (np.dtype(ml_dtypes.bfloat16), "half_val", np.uint16),
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
    found = _DATATYPE_OF.get(value.dtype)
    if found is None and value.dtype.kind in "OSU":
        return types_pb2.DT_STRING
    return found


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


class ElementBudget:
    """How many tensor elements one request may still decode (--max_request_tensor_elements,
    all its inputs together); each input is charged before it is converted."""

    __slots__ = ("limit", "left")

    def __init__(self, limit: int = DEFAULT_MAX_ELEMENTS):
        self.limit = limit
        self.left = limit

    def charge(self, count: int) -> None:
        if count > self.left:
            raise invalid_argument(
                f"The request's tensors have {count} elements, more than the server decodes "
                f"for one request ({self.limit}, --max_request_tensor_elements)")
        self.left -= count


def shape_elements(proto: tensor_pb2.TensorProto, alias: str) -> int:
    """The element count of a request tensor's shape; INVALID_ARGUMENT unless it is a valid
    TensorShape (known rank, no negative dimension, no overflow)."""
    shape = proto.tensor_shape
    if shape.unknown_rank:
        raise invalid_argument(f"tensor parsing error: {alias}: the shape has unknown rank")
    if len(shape.dim) > MAX_DIMS:
        raise invalid_argument(f"tensor parsing error: {alias}: the shape has "
                               f"{len(shape.dim)} dimensions, more than the {MAX_DIMS} "
                               f"this server supports")
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


class ProtoInputs:
    """A PredictRequest's inputs (gRPC, warmup) for the Predict API: TensorProtos by alias."""

    def __init__(self, protos: Mapping[str, tensor_pb2.TensorProto], size: int = 0):
        self.protos = protos
        self.size = size  # bytes on the wire

    def signature_not_found(self, name: str) -> ServingError:
        return ServingError(Code.FAILED_PRECONDITION, f'Serving signature key "{name}" not found.')

    def decode(self, signature, max_elements: int) -> Dict[str, np.ndarray]:
        return decode_request_tensors(self.protos, max_elements)


def decode_request_tensors(protos: Mapping[str, tensor_pb2.TensorProto],
                           max_elements: int = DEFAULT_MAX_ELEMENTS) -> Dict[str, np.ndarray]:
    """A request's named TensorProtos as arrays, refusing more than `max_elements` elements
    in all before decoding any."""
    counts = {alias: shape_elements(proto, alias) for alias, proto in protos.items()}
    ElementBudget(max_elements).charge(sum(counts.values()))
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
    return object_array(values) if dtype is object else np.asarray(values, dtype)


def object_array(values) -> np.ndarray:
    """A 1-D object array of `values` (bytes), never an array of arrays."""
    out = np.empty(len(values), object)
    out[:] = values
    return out


def to_tensor_proto(value: np.ndarray) -> tensor_pb2.TensorProto:
    """numpy -> TensorProto in the typed repeated field (AsProtoField; strings in
    string_val)."""
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
