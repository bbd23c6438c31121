"""Arrays on the link (`link`): a REST Predict's decoded inputs and its outputs as raw bytes,
not as TensorProtos built by one process and parsed back by the other.

`encode(arrays)` gives the descriptors, one `(alias, DataType, shape, nbytes)` per array,
which travel in the frame's pickled header, and the chunks of the frame's payload, which
follow it as raw bytes: a numeric array's C-order bytes (the array itself where it is
contiguous, so the payload is copied once, into the frame); a DT_STRING array's element
lengths (int64) and then its elements' bytes, concatenated. `decode(descriptors, payload)`
reads them back, numeric arrays in place (`np.frombuffer`, read-only, no copy).

The two ends are this server's own processes, but a frame is checked all the same: a
descriptor that does not fit the payload is INTERNAL (`MalformedArrays`), never a crash.
"""

from __future__ import annotations

from typing import Dict, List, Mapping, Sequence, Tuple

import numpy as np
from tensorflow.core.framework import types_pb2

from serving.model_server.errors import Code, ServingError
from serving.model_server.servable.tensors import (MAX_DIMS, ElementBudget, datatype_of,
                                                   numpy_dtype, object_array)

Descriptor = Tuple[str, int, Tuple[int, ...], int]  # alias, DataType, shape, payload bytes
_LENGTH = np.dtype("<i8")  # a string element's length in the payload


class MalformedArrays(ServingError):
    def __init__(self, message: str):
        super().__init__(Code.INTERNAL, f"Malformed arrays on the link: {message}")


def encode(arrays: Mapping[str, np.ndarray]) -> Tuple[Tuple[Descriptor, ...], List]:
    """(descriptors, payload chunks) for `arrays`; an array of a dtype TensorFlow has no
    DataType for is INTERNAL, as `tensors.to_tensor_proto` says."""
    descriptors, chunks = [], []
    for alias, value in arrays.items():
        value = np.asarray(value)
        dtype = datatype_of(value)
        if dtype is None:
            raise ServingError(Code.INTERNAL, f"Cannot return a tensor of {value.dtype}")
        if dtype == types_pb2.DT_STRING:
            items = [v if isinstance(v, bytes) else str(v).encode() for v in value.ravel()]
            lengths = np.fromiter(map(len, items), _LENGTH, len(items))
            data = b"".join(items)
            chunks += (lengths, data)
            nbytes = lengths.nbytes + len(data)
        else:
            flat = np.ascontiguousarray(value).reshape(-1).view(np.uint8)
            chunks.append(flat)
            nbytes = flat.nbytes
        descriptors.append((alias, dtype, value.shape, nbytes))
    return tuple(descriptors), chunks


def elements(descriptors: Sequence[Descriptor]) -> List[int]:
    """Each array's element count, from its descriptor; MalformedArrays unless every
    descriptor is well formed, names a DataType this server converts, and an alias of its
    own."""
    if not isinstance(descriptors, (tuple, list)):
        raise MalformedArrays(f"descriptors of type {type(descriptors).__name__}")
    counts, aliases = [], set()
    for d in descriptors:
        if not (isinstance(d, tuple) and len(d) == 4 and isinstance(d[0], str)
                and type(d[1]) is int and isinstance(d[2], tuple) and type(d[3]) is int):
            raise MalformedArrays(f"descriptor {d!r:.200}")
        alias, dtype, shape, nbytes = d
        if alias in aliases:
            raise MalformedArrays(f"{alias} twice")
        aliases.add(alias)
        if (len(shape) > MAX_DIMS or any(type(n) is not int or n < 0 for n in shape)
                or nbytes < 0):
            raise MalformedArrays(f"{alias}: shape {shape!r:.200}, {nbytes} bytes")
        if dtype != types_pb2.DT_STRING:
            try:
                numpy_dtype(dtype)
            except (ServingError, ValueError):  # ValueError: no DataType of that number
                raise MalformedArrays(f"{alias}: DataType {dtype}") from None
        n = 1
        for size in shape:
            n *= size
        counts.append(n)
    return counts


def decode(descriptors: Sequence[Descriptor], payload: memoryview,
           counts: Sequence[int]) -> Dict[str, np.ndarray]:
    """The arrays `descriptors` describe, from `payload` (what follows the frame's header),
    `counts` being `elements(descriptors)`; MalformedArrays when they do not fit."""
    total = sum(d[3] for d in descriptors)
    if total != len(payload):
        raise MalformedArrays(f"the descriptors name {total} bytes, the payload has "
                              f"{len(payload)}")
    out, offset = {}, 0
    for (alias, dtype, shape, nbytes), n in zip(descriptors, counts):
        chunk = payload[offset:offset + nbytes]
        offset += nbytes
        if dtype == types_pb2.DT_STRING:
            out[alias] = _strings(alias, chunk, n).reshape(shape)
            continue
        numpy = numpy_dtype(dtype)
        if nbytes != n * numpy.itemsize:
            raise MalformedArrays(f"{alias}: {nbytes} bytes for shape {list(shape)} of "
                                  f"{numpy}")
        out[alias] = np.frombuffer(chunk, numpy).reshape(shape)
    return out


def _strings(alias: str, chunk: memoryview, n: int) -> np.ndarray:
    head = n * _LENGTH.itemsize
    if len(chunk) < head:
        raise MalformedArrays(f"{alias}: {len(chunk)} bytes for {n} string lengths")
    lengths = np.frombuffer(chunk[:head], _LENGTH)
    data = bytes(chunk[head:])
    if n and (lengths.min() < 0 or int(lengths.sum()) != len(data)):
        raise MalformedArrays(f"{alias}: string lengths do not add up to {len(data)} bytes")
    if not n and data:
        raise MalformedArrays(f"{alias}: {len(data)} bytes for no strings")
    ends = np.cumsum(lengths).tolist()
    starts = [0] + ends[:-1]
    return object_array([data[a:b] for a, b in zip(starts, ends)])


class ArrayInputs:
    """A Predict's inputs as a front-end worker sent them, decoded against the signature
    there (the model process's `Inputs` for a REST request): read from the frame once the
    element budget is charged, as `tensors.ProtoInputs` reads its TensorProtos."""

    def __init__(self, descriptors: Sequence[Descriptor], payload: memoryview):
        self.descriptors = descriptors
        self.payload = payload
        self.size = len(payload)  # bytes on the wire

    def signature_not_found(self, name: str) -> ServingError:
        return ServingError(Code.FAILED_PRECONDITION, f'Serving signature key "{name}" not found.')

    def decode(self, signature, max_elements: int) -> Dict[str, np.ndarray]:
        counts = elements(self.descriptors)
        ElementBudget(max_elements).charge(sum(counts))
        return decode(self.descriptors, self.payload, counts)
