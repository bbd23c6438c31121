"""The REST JSON decoder (`rest_json.json_to_ndarray`, the :predict row and columnar inputs)
against the decoder it replaced, kept below as the oracle: it checked and converted value by
value in Python. On every body, valid or not, both must give the same arrays (dtype, shape,
bytes), charge the same element budget, and refuse with the same code and message."""

from __future__ import annotations

import base64
import copy
import json
import math
from itertools import chain

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tensorflow.core.framework import types_pb2
from tensorflow.core.protobuf import meta_graph_pb2

from serving.model_server.errors import Code, ServingError, invalid_argument
from serving.model_server.frontends import rest_json
from serving.model_server.frontends.rest_json import _is_named, _type_error, decode_b64, json_text
from serving.model_server.servable.tensors import ElementBudget, dtype_name, numpy_dtype, object_array

# ---- the oracle: rest_json's decoder as it was before, value by value -----------------------

_MAX_JSON_RANK = 32
_FLOAT_LIMITS = {types_pb2.DT_FLOAT: (float(np.finfo(np.float32).max), (1 << 24) - 1),
                 types_pb2.DT_DOUBLE: (float(np.finfo(np.float64).max), (1 << 53) - 1)}
_INT_TYPES = (types_pb2.DT_INT8, types_pb2.DT_INT16, types_pb2.DT_INT32, types_pb2.DT_UINT8,
              types_pb2.DT_UINT16, types_pb2.DT_INT64, types_pb2.DT_UINT32, types_pb2.DT_UINT64)


def _ref_shape(value):
    shape = []
    while isinstance(value, list):
        shape.append(len(value))
        if len(shape) > _MAX_JSON_RANK:
            raise invalid_argument(f"JSON Value: lists nested more than {_MAX_JSON_RANK} deep")
        value = value[0] if value else None
    return shape


def _ref_flatten(value, shape):
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


def _ref_to_ndarray(value, dtype, name, budget=None):
    shape = _ref_shape(value)
    if budget is not None:
        budget.charge(math.prod(shape))
    flat = _ref_flatten(value, shape)
    if flat and isinstance(flat[0], list) or any(type(v) is list for v in flat):
        raise invalid_argument(f"Encountered list at unexpected level: {len(shape)} expected "
                               f"< {len(shape)}")
    if dtype == types_pb2.DT_STRING:
        return object_array(_ref_strings(flat)).reshape(shape)
    types = set(map(type, flat))
    if dtype in _FLOAT_LIMITS:
        if not types <= {int, float}:
            raise _type_error(next(v for v in flat if type(v) not in (int, float)), dtype)
        _ref_check_lossless(flat, dtype, types)
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


def _ref_check_lossless(flat, dtype, types):
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
    for v in flat:
        if type(v) is int:
            ok = -max_int <= v <= max_int
        else:
            ok = not math.isfinite(v) or -max_float <= v <= max_float
        if not ok:
            raise invalid_argument(f"Cannot convert JSON value: {json_text(v)} to "
                                   f"{dtype_name(dtype)} without loss of precision.")


def _ref_strings(flat):
    out = []
    for v in flat:
        if isinstance(v, str):
            out.append(v.encode("utf-8"))
        elif isinstance(v, dict):
            out.append(decode_b64(v))
        else:
            raise _type_error(v, types_pb2.DT_STRING)
    return out


def _ref_row_inputs(instances, sig, budget):
    """Whole inputs at a time, each charged before it is converted; any misfit is worded by
    TF Serving's instance-by-instance walk (`_ref_instances_error`)."""
    if not isinstance(instances, list):
        raise invalid_argument("JSON Value: Excepting 'instances' to be an list/array")
    if not instances:
        raise invalid_argument("JSON Value: No values in 'instances' array")
    names = sorted(sig.inputs)
    named = _is_named(instances[0])
    if not named and len(names) != 1:
        raise invalid_argument("instances is a plain list, but expecting list of objects "
                               "as multiple input tensors required as per tensorinfo_map")
    if named:
        alike = all(_is_named(item) and sorted(item) == names for item in instances)
    else:
        alike = not any(_is_named(item) for item in instances)
    if not alike:
        raise _ref_instances_error(instances, sig)
    columns = {name: [item[name] for item in instances] for name in names} if named else \
        {names[0]: instances}
    out = {}
    for key, values in columns.items():
        budget.charge(math.prod(_ref_shape(values)))
        try:
            out[key] = _ref_to_ndarray(values, sig.inputs[key].dtype, key)
        except ServingError:
            raise _ref_instances_error(instances, sig) from None
    return out


def _ref_instances_error(instances, sig):
    """FillTensorMapFromInstancesList and AddInstanceItem (json_tensor.cc), value by value:
    each instance on its own, the first instance's size and shape for the others."""
    names = sorted(sig.inputs)
    named = _is_named(instances[0])
    sizes, shapes = {}, {}
    for i, item in enumerate(instances):
        if named != _is_named(item):
            return invalid_argument(f"Expecting object but got list at item {i} of input list"
                                    if named else f"Expecting value/list but got object at "
                                                  f"item {i} of input list")
        for key, value in (item.items() if named else [(names[0], item)]):
            where = f"{i} key: {key}" if named else f"{i}"
            if key not in sig.inputs:
                status = f"INVALID_ARGUMENT: JSON object: does not have named input: {key}"
            else:
                try:
                    array = _ref_to_ndarray(value, sig.inputs[key].dtype, key)
                    status = None
                except ServingError as e:
                    status = f"{e.code.name}: {e.message}"
            if status is None and key not in sizes:
                sizes[key], shapes[key] = array.size, list(array.shape)
            elif status is None and sizes[key] != array.size:
                status = (f"INVALID_ARGUMENT: Expecting tensor size: {sizes[key]} but got: "
                          f"{array.size}")
            elif status is None and shapes[key] != list(array.shape):
                status = (f"INVALID_ARGUMENT: Expecting shape "
                          f"[{','.join(str(d) for d in shapes[key])}] but got: "
                          f"[{','.join(str(d) for d in array.shape)}]")
            if status is not None:
                return invalid_argument(f"Failed to process element: {where} of 'instances' "
                                        f"list. Error: {status}")
        if named and sorted(item) != names:
            return invalid_argument(f"Failed to process element: {i} of 'instances' list. JSON "
                                    f"object: {json_text(item)} keys must be equal to: "
                                    f"{','.join(names)}")
    raise AssertionError("a body that failed has no instance out of place")


def _ref_columnar_inputs(inputs, sig, budget):
    names = sorted(sig.inputs)
    if not _is_named(inputs):
        if len(names) != 1:
            raise invalid_argument("inputs is a plain value/list, but expecting an object as "
                                   "multiple input tensors required as per tensorinfo_map")
        return {names[0]: _ref_to_ndarray(inputs, sig.inputs[names[0]].dtype, names[0], budget)}
    out = {}
    for name in names:
        if name not in inputs:
            raise invalid_argument(f"Missing named input: {name} in 'inputs' object.")
        out[name] = _ref_to_ndarray(inputs[name], sig.inputs[name].dtype, name, budget)
    return out


# ---- comparing the two ----------------------------------------------------------------------

def _outcome(fn, *args):
    """What a call gave: its arrays as (dtype, shape, bytes or values), or its error."""
    try:
        result = fn(*args)
    except ServingError as e:
        return ("refused", e.code, e.message)
    except Exception as e:  # anything else must at least be the same failure
        return ("raised", type(e).__name__, str(e))
    if isinstance(result, dict):
        return {k: _array_view(v) for k, v in result.items()}
    return _array_view(result)


def _array_view(array: np.ndarray):
    assert isinstance(array, np.ndarray)
    content = array.tolist() if array.dtype == object else array.tobytes()
    return (array.dtype.str, array.shape, content)


def _same_tensor(value, dtype, max_elements=1 << 24):
    budgets = ElementBudget(max_elements), ElementBudget(max_elements)
    expected = _outcome(_ref_to_ndarray, value, dtype, "x", budgets[0])
    got = _outcome(rest_json.json_to_ndarray, value, dtype, "x", budgets[1])
    assert got == expected, f"{json_text(value, 300)} as {dtype_name(dtype)}"
    assert budgets[1].left == budgets[0].left
    return got


def _same_request(request, sig, max_elements=1 << 24):
    budget = ElementBudget(max_elements)
    value = request["instances" if "instances" in request else "inputs"]
    expected = _outcome(_ref_row_inputs if "instances" in request else _ref_columnar_inputs,
                        value, sig, budget)
    got = _outcome(rest_json.JsonInputs(request, 0).decode, sig, max_elements)
    assert got == expected, json_text(request, 300)
    return got


def _signature(**dtypes) -> meta_graph_pb2.SignatureDef:
    sig = meta_graph_pb2.SignatureDef()
    for name, dtype in dtypes.items():
        sig.inputs[name].dtype = dtype
    return sig


F32, F64, I64, BOOL, STR = (types_pb2.DT_FLOAT, types_pb2.DT_DOUBLE, types_pb2.DT_INT64,
                            types_pb2.DT_BOOL, types_pb2.DT_STRING)
DTYPES = (F32, F64, BOOL, STR, *_INT_TYPES, types_pb2.DT_HALF, types_pb2.DT_BFLOAT16,
          types_pb2.DT_COMPLEX64)
F32_MAX = float(np.finfo(np.float32).max)
INF, NAN = float("inf"), float("nan")
BOUNDARY_INTS = sorted({s * v for s in (1, -1) for v in (
    0, 1, 127, 128, 129, 255, 256, 32767, 32768, 32769, 65535, 65536, (1 << 24) - 1, 1 << 24,
    (1 << 24) + 1, (1 << 31) - 1, 1 << 31, (1 << 31) + 1, (1 << 32) - 1, 1 << 32,
    (1 << 53) - 1, 1 << 53, (1 << 53) + 1, (1 << 63) - 1, 1 << 63, (1 << 63) + 1,
    (1 << 64) - 1, 1 << 64, 1 << 70, 1 << 128, (1 << 1023) * 3, 10 ** 400)})
BOUNDARY_FLOATS = [0.0, -0.0, 0.5, 1.0, -1.0, NAN, INF, -INF, F32_MAX, -F32_MAX,
                   float(np.nextafter(F32_MAX, INF)), -float(np.nextafter(F32_MAX, INF)),
                   3.4028235677973366e38, 1e39, -1e39, 1.7976931348623157e308, 5e-324, 1e-45,
                   16777215.0, 16777216.0, -16777217.0, 2.0 ** 53, 2.0 ** 53 + 2, 1e30]


# ---- a corpus of bodies, valid and not -------------------------------------------------------

CORPUS = [
    ([[0.0, 0.5, 1.0]], F32), ([1.5, 2], F32), ([1, 2, 3], F32), (3.0, F32), (3, F64), ([], F32),
    ([[]], F32), ([[], []], I64), ([[[]]], STR), ([], BOOL),
    ([-0.0, 0.0], F32), ([-0.0], F64), ([NAN, 1], F32), ([NAN, INF, -INF], F32),
    ([INF, 1], F32), ([1, INF], F64), ([1e30, 1], F32), ([1, 1e30], F32), ([NAN, 1e39], F32),
    ([5, NAN, 1e39], F32), ([F32_MAX, -F32_MAX], F32),
    ([float(np.nextafter(F32_MAX, INF))], F32), ([1.7976931348623157e308], F64),
    ([(1 << 24) - 1, -((1 << 24) - 1)], F32), ([1 << 24], F32), ([0.5, -(1 << 24)], F32),
    ([(1 << 53) - 1], F64), ([1 << 53], F64), ([(1 << 53) + 1, 0.5], F64), ([1 << 70], F32),
    ([10 ** 400], F64), ([0.5, 10 ** 400], F32), ([1 << 64], F64),
    ([True], F32), ([1.0, False], F64), ([None], F32), ([1.0, None], F32), (["1.5"], F32),
    ([{"b64": "AAE="}], F32), ([{"a": 1}], F32), (None, F32), ("x", F32), (True, BOOL),
    ([1.0], types_pb2.DT_INT32), ([-128, 127], types_pb2.DT_INT8), ([128], types_pb2.DT_INT8),
    ([(1 << 63) - 1, -(1 << 63)], I64), ([1 << 63], I64), ([-(1 << 63) - 1], I64),
    ([(1 << 64) - 1, 0], types_pb2.DT_UINT64), ([1 << 64], types_pb2.DT_UINT64),
    ([-1], types_pb2.DT_UINT64), ([1, -1], types_pb2.DT_UINT32), ([True, 1], I64),
    ([[1, 2], [3, 4]], types_pb2.DT_UINT8), ([256, 1 << 70], types_pb2.DT_UINT8),
    ([True, False], BOOL), ([1], BOOL), ([True, None], BOOL),
    (["a", {"b64": "AAE="}], STR), ([1], STR), ([{"b64": "!!"}], STR), ([{"c": 1}], STR),
    (["\u00e9", ""], STR), ([[1.0, 2.0], [1.0]], F32), ([[1.0], 2.0], F32), ([1.0, [2.0]], F32),
    ([[1.0], [[2.0]]], F32), ([[[1.0]], [2.0]], F32), ([[1.0, [2.0]]], F32), ([[1, 2], []], F32),
    ([[], [1]], F32), ([[1.0], "ab"], F32), ([[1.0], {"b64": "AA=="}], STR),
    ([1.0], types_pb2.DT_HALF),
    ([[1.0], [2.0, 3.0]], types_pb2.DT_HALF), ([[1.0, [2.0]]], types_pb2.DT_COMPLEX64),
    (json.loads("[" * 32 + "1.0" + "]" * 32), F32), (json.loads("[" * 33 + "]" * 33), F32),
    (json.loads("[" * 500 + "]" * 500), F32), ([json.loads("[" * 31 + "]" * 31), 1], F32),
]


@pytest.mark.parametrize("value,dtype", CORPUS, ids=[f"{i}" for i in range(len(CORPUS))])
def test_corpus_decodes_as_before(value, dtype):
    _same_tensor(value, dtype)


def test_corpus_covers_valid_and_refused_bodies():
    outcomes = [_same_tensor(value, dtype) for value, dtype in CORPUS]
    refused = [o for o in outcomes if isinstance(o, tuple) and o[0] == "refused"]
    assert 30 < len(refused) < len(outcomes) - 20
    assert {o[1] for o in refused} == {Code.INVALID_ARGUMENT, Code.UNIMPLEMENTED}


@pytest.mark.parametrize("text", [
    b'{"instances": [[NaN, Infinity, -Infinity, 1e400, -1e400, 0.5]]}',
    b'{"instances": [[123456789012345678901234567890]]}',
    b'{"instances": [[1.0, 2.0], [3.0]]}', b'{"inputs": [[true, 1.0]]}',
    b'{"inputs": {"a": [1, 2], "b": [[1.5]]}}', b'{"inputs": {"a": [1, 2]}}',
    b'{"instances": [{"a": 1, "b": [2.5]}, {"a": 2, "b": [3.5]}]}',
    b'{"instances": [{"a": 1, "b": [2.5]}, {"a": 2, "b": [3.5, 1]}]}',
    b'{"instances": [{"a": 1, "b": [2.5]}, [1]]}', b'{"instances": [{"a": 1}]}',
    b'{"instances": [{"a": 1, "b": 1, "c": 1}]}', b'{"instances": [1, {"a": 1}]}',
    b'{"instances": []}', b'{"instances": 5}', b'{"instances": [[1e39]]}',
])
def test_bodies_decode_as_before(text):
    request = rest_json.loads(text)
    _same_request(request, _signature(a=types_pb2.DT_INT64, b=F32))
    _same_request(request, _signature(x=F32))
    _same_request(request, _signature(x=F64), max_elements=3)


def test_plain_instances_with_b64_objects_are_values():
    request = {"instances": [{"b64": "AAE="}, "ab"]}
    assert _same_request(request, _signature(s=STR))["s"][2] == [b"\x00\x01", b"ab"]
    request = {"instances": [{"b64": "AAE="}, {"c": "ab"}]}
    assert _same_request(request, _signature(s=STR)) == (
        "refused", Code.INVALID_ARGUMENT, "Expecting value/list but got object at item 1 of "
                                          "input list")


def test_an_mnist_body_is_decoded_without_a_value_by_value_check(monkeypatch):
    """The usual body settles as arrays: no Python pass over its values to check them."""
    def value_by_value(*args):
        raise AssertionError("checked value by value")

    monkeypatch.setattr(rest_json, "_check_lossless", value_by_value)
    monkeypatch.setattr(rest_json, "_check_level", value_by_value)
    pixels = np.random.default_rng(0).random((32, 784), dtype=np.float32)
    request = rest_json.loads(json.dumps({"instances": pixels.tolist()}).encode())
    images = rest_json.JsonInputs(request, 0).decode(_signature(images=F32), 1 << 24)["images"]
    assert images.dtype == np.float32 and np.array_equal(images, pixels)
    with pytest.raises(AssertionError, match="value by value"):  # but a value that may not fit is
        rest_json.json_to_ndarray([1.0, 1 << 24], F32, "x")


# ---- property-style: random shapes, dtypes and values ----------------------------------------

_b64 = st.binary(max_size=6).map(lambda b: {"b64": base64.b64encode(b).decode()})
INTS = st.one_of(st.integers(-300, 300), st.integers(-(1 << 70), 1 << 70),
                 st.sampled_from(BOUNDARY_INTS))
FLOATS = st.one_of(st.floats(0, 1, width=32), st.floats(), st.sampled_from(BOUNDARY_FLOATS))
ANY_LEAF = st.one_of(st.none(), st.booleans(), INTS, FLOATS, st.text(max_size=4), _b64,
                     st.dictionaries(st.text(max_size=2), st.integers(), max_size=2),
                     st.just([]), st.lists(st.integers(), min_size=1, max_size=2))
LEAVES = {F32: st.one_of(INTS, FLOATS), F64: st.one_of(INTS, FLOATS), BOOL: st.booleans(),
          STR: st.one_of(st.text(max_size=4), _b64)}


def _nest(flat, shape):
    """`flat` as nested lists of `shape` (a size 0 empties the levels below it)."""
    leaves = iter(flat)

    def level(dims):
        if len(dims) == 1:
            return [next(leaves) for _ in range(dims[0])]
        return [level(dims[1:]) for _ in range(dims[0])]
    return level(shape) if shape else flat[0]


@st.composite
def tensors(draw):
    """(value, dtype): a rectangular JSON array of the dtype's values, now and then with a
    value of another type, a list too short or too long, or a leaf where a list belongs."""
    dtype = draw(st.sampled_from(DTYPES))
    shape = draw(st.lists(st.integers(0, 4), max_size=4).filter(lambda s: math.prod(s) <= 64))
    valid = LEAVES.get(dtype, INTS)
    leaves = draw(st.sampled_from([valid, valid, st.one_of(valid, ANY_LEAF)]))
    flat = draw(st.lists(leaves, min_size=math.prod(shape), max_size=math.prod(shape)))
    value = copy.deepcopy(_nest(flat, shape))  # mutated below: never a value hypothesis holds
    mutation = draw(st.sampled_from(["none", "none", "append", "pop", "leaf", "list"]))
    if mutation != "none" and isinstance(value, list):
        node = value
        while node and isinstance(node[0], list) and draw(st.booleans()):
            child = node[draw(st.integers(0, len(node) - 1))]
            if not isinstance(child, list):  # a leaf that is itself a list or an object
                break
            node = child
        if mutation == "append":
            node.append(draw(ANY_LEAF) if not node or not isinstance(node[0], list) else [])
        elif mutation == "pop" and node:
            node.pop()
        elif node:
            i = draw(st.integers(0, len(node) - 1))
            node[i] = draw(valid) if mutation == "leaf" else [node[i]]
    return value, dtype


@settings(max_examples=600, deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
@given(tensors(), st.integers(0, 80))
def test_random_tensors_decode_as_before(case, max_elements):
    value, dtype = case
    _same_tensor(value, dtype, max_elements)


JSON = st.recursive(ANY_LEAF, lambda children: st.lists(children, max_size=3), max_leaves=12)


@settings(max_examples=300, deadline=None, database=None)
@given(JSON, st.sampled_from(DTYPES))
def test_random_json_decodes_as_before(value, dtype):
    _same_tensor(value, dtype)


@settings(max_examples=200, deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
@given(st.lists(tensors(), min_size=1, max_size=3), st.booleans(), st.integers(1, 200))
def test_random_requests_decode_as_before(cases, row, max_elements):
    names = [f"in{i}" for i in range(len(cases))]
    sig = _signature(**{n: dtype for n, (_, dtype) in zip(names, cases)})
    if row:
        rows = [v if isinstance(v, list) else [v] for v, _ in cases]
        count = min(map(len, rows))
        instances = ([rows[0][i] for i in range(count)] if len(cases) == 1 else
                     [{n: r[i] for n, r in zip(names, rows)} for i in range(count)])
        request = {"instances": instances}
    else:
        request = {"inputs": cases[0][0] if len(cases) == 1 else
                   {n: v for n, (v, _) in zip(names, cases)}}
    _same_request(request, sig, max_elements)
