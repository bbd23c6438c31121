"""TF Serving's REST JSON: the body codec, tensors as JSON, and the :predict, :classify and
:regress request and response formats, after tensorflow_serving/util/json_tensor.cc.

Pure functions and small objects, no I/O: the REST front end decodes a body into the API's
request objects here and encodes the answer. A tensor value must be of the signature's type
(a JSON integer for integer types, a number for floats, never null), integers must fit the
type (floats: without loss of precision), lists must be rectangular and at most
MAX_JSON_RANK deep, and floats are written back at their own precision, with NaN and
+/-Infinity as TF Serving writes them. Bodies are parsed with orjson; what it refuses but
TF Serving's RapidJSON reads (NaN, Infinity, numbers beyond a double, integers beyond 64
bits) is read again with Python's json, which also words the error of a body neither reads.
"""

from __future__ import annotations

import base64
import json
import math
from itertools import chain
from typing import Any, Dict, List, Optional

import numpy as np
import orjson
from google.protobuf import json_format
from tensorflow.core.example import example_pb2, feature_pb2
from tensorflow.core.framework import types_pb2
from tensorflow_serving.apis import get_model_metadata_pb2

from serving.model_server.errors import Code, ServingError, invalid_argument
from serving.model_server.servable.tensors import (ElementBudget, datatype_of, dtype_name,
                                                   numpy_dtype, object_array)

MAX_JSON_RANK = 32  # deeper JSON lists are refused before they are walked
_INT64 = (-(1 << 63), (1 << 63) - 1)
_FLOAT32_MAX = float(np.finfo(np.float32).max)


# ---- the body ----------------------------------------------------------------------------

def loads(body: bytes) -> Dict[str, Any]:
    """A request body as a JSON object; INVALID_ARGUMENT with TF Serving's wording if not."""
    if not body:
        raise invalid_argument("JSON Parse error: The document is empty")
    try:
        request = orjson.loads(body)
    except orjson.JSONDecodeError:
        request = _loads_extended(body)
    if not isinstance(request, dict):
        raise invalid_argument(f"JSON Value: {json_text(request)} Is not object")
    return request


def _loads_extended(body: bytes):
    """What orjson refuses but TF Serving's RapidJSON reads (NaN, Infinity), by Python's
    json; a lone surrogate (`"\\ud800"`), which no UTF-8 text can hold, is refused as
    RapidJSON refuses it."""
    try:
        request = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as e:
        raise invalid_argument(f"JSON Parse error: {e}") from None
    except RecursionError:
        raise invalid_argument("JSON Parse error: the document nests too deeply") from None
    try:  # the only text json.loads reads that UTF-8 cannot hold
        json.dumps(request, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        raise invalid_argument("JSON Parse error: The surrogate pair in string is invalid.") \
            from None
    except (RecursionError, ValueError):  # deep nesting or huge numbers: refused later
        pass
    return request


def dumps(obj) -> bytes:
    """JSON text as TF Serving writes it: NaN, Infinity and -Infinity for non-finite floats
    (RapidJSON's kWriteNanAndInfFlag; Python's json, JavaScript's JSON5 and RapidJSON with
    kParseNanAndInfFlag read them back), everything else plain JSON. orjson writes
    non-finite floats as null, and nothing here is ever None: a null means one was there.
    `obj` may hold numeric arrays as `_numeric_json` leaves them: orjson writes those in C
    (a float32 as the shortest text that reads back as that float32, as
    `ndarray_to_json`); Python's json gets them through `ndarray_to_json`."""
    text = orjson.dumps(obj, option=orjson.OPT_SERIALIZE_NUMPY)
    if b"null" in text:
        text = json.dumps(obj, separators=(",", ":"), allow_nan=True, ensure_ascii=False,
                          default=_listed).encode("utf-8")
    return text


def _listed(value):
    """json.dumps's `default`: an array (or numpy scalar) `_numeric_json` left as it was."""
    if isinstance(value, (np.ndarray, np.generic)):
        return ndarray_to_json(value, "")
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def error_body(message: str) -> bytes:
    """`{"error": message}`; never fails (a message quoting what cannot be UTF-8 is escaped)."""
    try:
        return orjson.dumps({"error": message})
    except TypeError:
        return json.dumps({"error": message}).encode("ascii")


# ---- tensors -----------------------------------------------------------------------------
_FLOAT_LIMITS = {types_pb2.DT_FLOAT: (float(np.finfo(np.float32).max), (1 << 24) - 1),
                 types_pb2.DT_DOUBLE: (float(np.finfo(np.float64).max), (1 << 53) - 1)}
_INT_TYPES = (types_pb2.DT_INT8, types_pb2.DT_INT16, types_pb2.DT_INT32, types_pb2.DT_UINT8,
              types_pb2.DT_UINT16, types_pb2.DT_INT64, types_pb2.DT_UINT32, types_pb2.DT_UINT64)
# The types a leaf may have for each kind of tensor, compared exactly: a bool is no number.
_NUMBERS, _INTEGERS, _BOOLS, _LIST = frozenset({int, float}), frozenset({int}), \
    frozenset({bool}), {list}


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
    every list at a level has that level's size, every leaf is at the last level). Each level
    is checked whole, its items' types and lengths as sets; only a level that fails is walked
    item by item, to name the first item out of place."""
    level = [value]
    for depth, size in enumerate(shape):
        if level and (set(map(type, level)) != _LIST or set(map(len, level)) != {size}):
            _check_level(level, depth, size, len(shape))
        level = list(chain.from_iterable(level))
    return level


def _check_level(level: list, depth: int, size: int, rank: int) -> None:
    for item in level:
        if not isinstance(item, list):
            raise invalid_argument(
                f"JSON Value: {json_text(item)} found at incorrect level: {depth + 1} in "
                f"the JSON DOM. Expected at level: {rank}")
        if len(item) != size:
            raise invalid_argument(f"Encountered list at unexpected size: {len(item)} at "
                                   f"level: {depth} expected size: {size}")


def json_to_ndarray(value: Any, dtype: int, name: str, budget: Optional[ElementBudget] = None,
                    shape: Optional[List[int]] = None) -> np.ndarray:
    """A JSON value (nested lists, {"b64": ...} for bytes) as an array of `dtype`; the
    request's `budget` is charged before any conversion (`shape`: the value's json_shape,
    when the caller has it already). The leaves are typed as one set and converted and
    range-checked as a whole array; a value is looked at on its own only to word an error or
    where the array cannot settle it (`_floats`, `_integers`)."""
    if shape is None:
        shape = json_shape(value)
    if budget is not None:
        budget.charge(math.prod(shape))
    flat = json_flatten(value, shape)
    types = set(map(type, flat))
    if list in types:
        raise invalid_argument(f"Encountered list at unexpected level: {len(shape)} expected "
                               f"< {len(shape)}")
    if dtype == types_pb2.DT_STRING:
        return object_array(_json_strings(flat)).reshape(shape)
    if dtype in _FLOAT_LIMITS:
        if not types <= _NUMBERS:
            raise _type_error(next(v for v in flat if type(v) not in _NUMBERS), dtype)
        array = _floats(flat, dtype, types)
    elif dtype in _INT_TYPES:
        if not types <= _INTEGERS:
            raise _type_error(next(v for v in flat if type(v) is not int), dtype)
        array = _integers(flat, dtype)
    elif dtype == types_pb2.DT_BOOL:
        if not types <= _BOOLS:
            raise _type_error(next(v for v in flat if type(v) is not bool), dtype)
        array = np.array(flat, dtype=np.bool_)
    else:
        raise ServingError(Code.UNIMPLEMENTED, f"Conversion of JSON Value: "
                                               f"{json_text(value)} to type: "
                                               f"{dtype_name(dtype)}")
    return array.reshape(shape)


def _floats(flat: list, dtype: int, types) -> np.ndarray:
    """JSON numbers as the float `dtype`, IsLosslessDecimal checked on the whole array: as
    doubles (exact for floats; an integer rounds, never across 2**24 or 2**53), every value
    within the integers' exact range, or with no integer within the float's range (NaN
    passes), settles it. +/-Infinity, a float beyond 2**24 next to an integer, an integer
    beyond a double: `_check_lossless` value by value."""
    max_float, max_int = _FLOAT_LIMITS[dtype]
    try:
        wide = np.array(flat, dtype=np.float64)
    except OverflowError:  # an integer beyond any double
        wide = None
    if wide is None or (np.abs(wide) > (max_int if int in types else max_float)).any():
        _check_lossless(flat, dtype, types)  # names the first value that does not fit
        return np.array(flat, dtype=numpy_dtype(dtype))
    return wide if dtype == types_pb2.DT_DOUBLE else wide.astype(np.float32)


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


def _integers(flat: list, dtype: int) -> np.ndarray:
    """JSON integers as the integer `dtype`, range-checked as an int64 array; values beyond
    int64 (uint64's upper half, or out of every range) are checked as Python integers."""
    target = numpy_dtype(dtype)
    info = np.iinfo(target)
    try:
        wide = np.array(flat, dtype=np.int64)
    except OverflowError:
        wide = None
    if wide is not None and (not flat or info.min <= int(wide.min()) and
                             int(wide.max()) <= info.max):
        return wide.astype(target, copy=False)
    if min(flat) < info.min or max(flat) > info.max:
        raise _type_error(next(v for v in flat if not info.min <= v <= info.max), dtype)
    return np.array(flat, dtype=target)


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


def _numeric_json(value: np.ndarray, name: str) -> Any:
    """`ndarray_to_json`, but an array of numbers or bools stays an array (made C-ordered),
    for `dumps` to write in one C pass instead of a Python value per element: the answer
    of a Predict is most of the REST front end's output work (benchmarks/README.md, "Issue
    22"). Dtypes orjson does not write (strings, float16, complex, a byte order not this
    machine's) and 0-d arrays go through `ndarray_to_json`, its errors included."""
    if value.ndim and value.dtype.kind in "biuf" and value.dtype != np.float16 \
            and value.dtype.isnative:
        return np.ascontiguousarray(value)
    return ndarray_to_json(value, name)


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


# ---- :predict ------------------------------------------------------------------------------

def signature_name(request: Dict[str, Any]) -> str:
    name = request.get("signature_name", "")
    if not isinstance(name, str):
        raise invalid_argument("JSON Value: not formatted correctly. 'signature_name' key "
                               "must be a string value.")
    return name


class JsonInputs:
    """The inputs of a :predict body for the Predict API: "instances" (row format) or
    "inputs" (columnar), converted against the signature (FillPredictRequestFromJson)."""

    def __init__(self, request: Dict[str, Any], size: int):
        self.signature_name = signature_name(request)
        self.row = "instances" in request
        self.request = request
        self.size = size  # bytes on the wire

    def signature_not_found(self, name: str) -> ServingError:
        return invalid_argument(f'Serving signature name: "{name}" not found in signature def')

    def decode(self, signature, max_elements: int) -> Dict[str, np.ndarray]:
        # In FillPredictRequestFromJson's order: the version and signature first (a model
        # that is not served is 404 whatever the body), then the body's keys.
        if not signature.inputs:  # nothing JSON could name
            raise invalid_argument(f"Failed to get input map for signature: "
                                   f"{self.signature_name or 'DEFAULT'}")
        if self.row and "inputs" in self.request:
            raise invalid_argument("JSON Value: Not formatted correctly expecting only one of "
                                   "'inputs' or 'instances' keys to exist")
        if not (self.row or "inputs" in self.request):
            raise invalid_argument("Missing 'inputs' or 'instances' key")
        budget = ElementBudget(max_elements)
        if self.row:
            return _row_inputs(self.request["instances"], signature, budget)
        return _columnar_inputs(self.request["inputs"], signature, budget)


def _is_named(value) -> bool:
    return isinstance(value, dict) and not is_b64(value)


def _row_inputs(instances, sig, budget) -> Dict[str, np.ndarray]:
    """FillTensorMapFromInstancesList: a list of values (one input) or of objects naming
    every input; each instance adds one row to each input. Converted a whole input at a time;
    a body that fails is walked instance by instance (`_instances_error`) for the error TF
    Serving gives, which names the instance."""
    if not isinstance(instances, list):
        raise invalid_argument("JSON Value: Excepting 'instances' to be an list/array")
    if not instances:
        raise invalid_argument("JSON Value: No values in 'instances' array")
    names = sorted(sig.inputs)
    if not _is_named(instances[0]) and len(names) != 1:
        raise invalid_argument("instances is a plain list, but expecting list of objects "
                               "as multiple input tensors required as per tensorinfo_map")
    try:
        columns = _instance_columns(instances, names)
    except ServingError as e:
        raise _instances_error(instances, sig) or e
    out = {}
    for key, values in columns.items():
        shape = json_shape(values)
        budget.charge(math.prod(shape))  # here: a conversion's errors are worded below
        try:
            out[key] = json_to_ndarray(values, sig.inputs[key].dtype, key, shape=shape)
        except ServingError as e:
            raise _instances_error(instances, sig) or e
    return out


def _instance_columns(instances: list, names: List[str]) -> Dict[str, list]:
    """Each input's values, an instance each; refuses a body whose instances do not all have
    the first one's form (a value, or an object with every input)."""
    if not _is_named(instances[0]):
        if dict in set(map(type, instances)) and any(map(_is_named, instances)):
            raise invalid_argument("an object among values")  # worded by _instances_error
        return {names[0]: instances}
    columns: Dict[str, list] = {name: [] for name in names}
    for item in instances:
        if not _is_named(item) or item.keys() != columns.keys():
            raise invalid_argument("an instance unlike the first")  # worded likewise
        for key, value in item.items():
            columns[key].append(value)
    return columns


def _instances_error(instances: list, sig) -> Optional[ServingError]:
    """The first error TF Serving finds in a row body, instance by instance as
    FillTensorMapFromInstancesList and AddInstanceItem do (json_tensor.cc): each instance is
    converted on its own and must have the first one's size and shape; its error is wrapped
    as `Failed to process element: I [key: K ]of 'instances' list. Error: CODE: message`."""
    names = sorted(sig.inputs)
    named = _is_named(instances[0])
    first: Dict[str, tuple] = {}
    for i, item in enumerate(instances):
        if named and not _is_named(item):
            return invalid_argument(f"Expecting object but got list at item {i} of input list")
        if not named and _is_named(item):
            return invalid_argument(f"Expecting value/list but got object at item {i} of input "
                                    f"list")
        for key, value in item.items() if named else [(names[0], item)]:
            error = _instance_item_error(key, value, sig, first)
            if error is not None:
                where = f"{i} key: {key}" if named else str(i)
                return invalid_argument(f"Failed to process element: {where} of 'instances' "
                                        f"list. Error: {error}")
        if named and set(item) != set(names):
            return invalid_argument(f"Failed to process element: {i} of 'instances' list. JSON "
                                    f"object: {json_text(item)} keys must be equal to: "
                                    f"{','.join(names)}")
    return None


def _instance_item_error(key: str, value, sig, first: Dict[str, tuple]) -> Optional[str]:
    """AddInstanceItem's error for one input of one instance, as Status::ToString() writes
    it, or None; `first` holds each input's shape in the first instance."""
    if key not in sig.inputs:
        return f"INVALID_ARGUMENT: JSON object: does not have named input: {key}"
    try:
        shape = json_to_ndarray(value, sig.inputs[key].dtype, key).shape
    except ServingError as e:
        return f"{e.code.name}: {e.message}"
    expected = first.setdefault(key, shape)
    if math.prod(expected) != math.prod(shape):
        return (f"INVALID_ARGUMENT: Expecting tensor size: {math.prod(expected)} but got: "
                f"{math.prod(shape)}")
    if expected != shape:
        return (f"INVALID_ARGUMENT: Expecting shape [{','.join(map(str, expected))}] but got: "
                f"[{','.join(map(str, shape))}]")
    return None


def _columnar_inputs(inputs, sig, budget) -> Dict[str, np.ndarray]:
    """FillTensorMapFromInputsMap: a value (one input) or an object naming every input."""
    names = sorted(sig.inputs)
    if not _is_named(inputs):
        if len(names) != 1:
            raise invalid_argument("inputs is a plain value/list, but expecting an object as "
                                   "multiple input tensors required as per tensorinfo_map")
        return {names[0]: _json_input(names[0], inputs, sig, budget)}
    out = {}
    for name in names:
        if name not in inputs:
            raise invalid_argument(f"Missing named input: {name} in 'inputs' object.")
        out[name] = _json_input(name, inputs[name], sig, budget)
    return out


def _json_input(key: str, value, sig, budget) -> np.ndarray:
    """One named input's JSON value as an array of the signature's dtype."""
    return json_to_ndarray(value, sig.inputs[key].dtype, key, budget)


def predict_json(outputs: Dict[str, np.ndarray], row: bool) -> Dict[str, Any]:
    """MakeJsonFromTensors: {"predictions": ...} for a row-format request, {"outputs": ...}
    for a columnar one."""
    if row:
        return {"predictions": _row_outputs(outputs)}
    if len(outputs) == 1:
        (key, value), = outputs.items()
        return {"outputs": _numeric_json(value, key)}
    return {"outputs": {k: _numeric_json(v, k) for k, v in outputs.items()}}


def _row_outputs(outputs: Dict[str, np.ndarray]):
    """MakeRowFormatJsonFromTensors: every output batched alike; one output is a list of
    its rows, several are a list of objects."""
    batch = None
    for k, v in outputs.items():
        if v.ndim == 0:
            raise invalid_argument(f"Tensor name: {k} has no shape information ")
        if v.shape[0] < 1:
            raise invalid_argument(f"Tensor name: {k} has invalid batch size: {v.shape[0]}")
        if batch is not None and v.shape[0] != batch:
            raise invalid_argument(f"Tensor name: {k} has inconsistent batch size: "
                                   f"{v.shape[0]} expecting: {batch}")
        batch = v.shape[0]
    if len(outputs) == 1:
        (key, value), = outputs.items()
        return _numeric_json(value, key)
    columns = {k: _numeric_json(v, k) for k, v in outputs.items()}
    return [{k: columns[k][i] for k in columns} for i in range(batch or 0)]


# ---- :classify and :regress -------------------------------------------------------------

def fill_examples_request(message, request: Dict[str, Any]):
    """FillClassifyRegressRequestFromJson into a Classification/RegressionRequest whose
    model_spec names the model and version."""
    message.model_spec.signature_name = signature_name(request)
    if "context" in request:
        target = message.input.example_list_with_context
        _fill_example(target.context, request["context"])
    else:
        target = message.input.example_list
    examples = request.get("examples")
    if examples is None:
        raise invalid_argument("JSON Value: When method is classify, key 'examples' is "
                               "expected and was not found")
    if not isinstance(examples, list):
        raise invalid_argument("JSON Value: Expecting 'examples' value to be an list/array")
    if not examples:
        raise invalid_argument("JSON Value: 'examples' value is an empty array")
    for ex in examples:
        _fill_example(target.examples.add(), ex)
    return message


def classify_json(response) -> Dict[str, Any]:
    return {"results": [[[c.label, _f32(c.score)] for c in cl.classes]
                        for cl in response.result.classifications]}


def regress_json(response) -> Dict[str, Any]:
    return {"results": [_f32(r.value) for r in response.result.regressions]}


def _f32(v: float) -> float:
    return ndarray_to_json(np.float32(v), "v")


def _fill_example(example: example_pb2.Example, obj) -> None:
    """MakeExampleFromJsonObject: each feature a value or a list of values; strings and
    {"b64"} are bytes, JSON integers and booleans int64, other numbers float."""
    if not isinstance(obj, dict):
        raise invalid_argument(f"Example must be JSON object but got JSON {json_type(obj)}")
    for key, content in obj.items():
        feature: feature_pb2.Feature = example.features.feature[key]
        feature.Clear()
        for value in content if isinstance(content, list) else [content]:
            _add_feature_value(feature, key, value)


def _add_feature_value(feature, key: str, value) -> None:
    unexpected = value is None or isinstance(value, list) or _is_named(value)
    if unexpected:
        raise invalid_argument(f"Feature: {key} has element with unexpected JSON type: "
                               f"{json_type(value)}")
    if isinstance(value, (str, dict)):
        kind, data = "bytes_list", (value.encode("utf-8") if isinstance(value, str)
                                    else decode_b64(value))
    elif isinstance(value, bool) or (isinstance(value, int) and
                                     _INT64[0] <= value <= _INT64[1]):
        kind, data = "int64_list", int(value)
    elif isinstance(value, int) and 0 < value < 1 << 64:
        raise invalid_argument(f"Feature: {key} has uint64 element. Only int64 is supported.")
    else:  # a float, or an integer beyond uint64 (a double to RapidJSON)
        try:
            data = float(value)
        except OverflowError:
            data = None
        if data is None or (math.isfinite(data) and abs(data) > _FLOAT32_MAX):
            raise invalid_argument(f"Cannot convert JSON value: {json_text(value)} to "
                                   f"float without loss of precision.")
        kind = "float_list"
    current = feature.WhichOneof("kind")
    if current is not None and current != kind:
        raise invalid_argument(f"Unexpected element type in feature: {key} expecting type: "
                               f"{current.split('_')[0]}")
    getattr(feature, kind).value.append(data)


# ---- status and metadata -----------------------------------------------------------------

def _message_json(message) -> Dict[str, Any]:
    return json_format.MessageToDict(message, preserving_proto_field_name=True,
                                     including_default_value_fields=True)


def status_json(response) -> Dict[str, Any]:
    """A GetModelStatusResponse as TF Serving's GET /v1/models/{name} writes it."""
    return _message_json(response)


def metadata_json(response) -> Dict[str, Any]:
    """A GetModelMetadataResponse as GET .../metadata writes it: the SignatureDefMap
    unpacked."""
    sigmap = get_model_metadata_pb2.SignatureDefMap()
    response.metadata["signature_def"].Unpack(sigmap)
    return {"model_spec": _message_json(response.model_spec),
            "metadata": {"signature_def": _message_json(sigmap)}}
