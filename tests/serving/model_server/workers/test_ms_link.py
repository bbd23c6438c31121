"""The link between a front-end worker and the model process (`link`, `link_arrays`):
a REST Predict's arrays cross it byte for byte in every dtype TF Serving accepts, the
model process answers as it does in-process, and a malformed frame is refused (INTERNAL,
or that one connection dropped) while the model process serves on. In-process: a real
ServerCore, Apis and LinkServer on a Unix socket, the worker's own RemoteApis and
LinkClient."""

from __future__ import annotations

import asyncio
import pickle
import struct
from concurrent.futures import ThreadPoolExecutor
from types import SimpleNamespace

import ml_dtypes
import numpy as np
import pytest
import tensorflow as tf
from tensorflow.core.framework import types_pb2
from tensorflow_serving.apis import model_pb2

from serving.model_server.workers import link_arrays

from serving.model_server.frontends import rest_json

from serving.model_server.config import ServerConfig
from serving.model_server.core.apis import Apis
from serving.model_server.core.server_core import ServerCore
from serving.model_server.errors import Code, ServingError
from serving.model_server.frontends.loop_thread import LoopThread
from serving.model_server.servable import tensors
from serving.model_server.servable.run import PredictCall
from serving.model_server.workers.link import LinkClient, LinkServer
from serving.model_server.workers.worker import RemoteApis
from toolkit_testing import copy_version

_RNG = np.random.default_rng(22)
# Every dtype TF Serving's Predict accepts, with values at its edges.
VALUES = {
    "float32": np.array([0.0, -0.0, 1.5, np.inf, -np.inf, np.nan, 3.4e38, 1e-45], np.float32),
    "float64": np.array([0.0, -0.0, 1e308, 5e-324, np.nan, -np.inf], np.float64),
    "float16": np.array([0.0, 65504.0, -6e-8, np.nan, np.inf], np.float16),
    "bfloat16": np.array([0.0, 1.5, -3.0e38, np.inf, 1e-40], ml_dtypes.bfloat16),
    "int8": np.array([-128, 0, 127], np.int8),
    "int16": np.array([-32768, 0, 32767], np.int16),
    "int32": np.array([-2 ** 31, 0, 2 ** 31 - 1], np.int32),
    "int64": np.array([-2 ** 63, 0, 2 ** 63 - 1], np.int64),
    "uint8": np.array([0, 1, 255], np.uint8),
    "uint16": np.array([0, 1, 65535], np.uint16),
    "uint32": np.array([0, 1, 2 ** 32 - 1], np.uint32),
    "uint64": np.array([0, 1, 2 ** 64 - 1], np.uint64),
    "bool": np.array([True, False, True]),
    "complex64": np.array([1 + 2j, -0.0 - np.inf * 1j, np.nan], np.complex64),
    "complex128": np.array([1e308 + 5e-324j, 0j, -1j], np.complex128),
    "string": tensors.object_array([b"", b"\x00\xff", "é".encode(), b"x" * 1000]),
}


def shaped(value: np.ndarray):
    """The value in the shapes a request can have: 0-d, empty, n-d, non-contiguous."""
    grid = np.resize(value, 24).reshape(2, 3, 4)
    return {
        "0-d": value.reshape(-1)[:1].reshape(()),
        "empty": value[:0].reshape(0, 3),
        "1-d": value,
        "3-d": grid,
        "transposed": grid.transpose(2, 0, 1),
        "strided": grid[:, ::2, 1::2],
        "broadcast": np.broadcast_to(value[:1], (4, 2)),
    }


def round_trip(arrays):
    descriptors, chunks = link_arrays.encode(arrays)
    payload = memoryview(b"".join(chunks))
    decoded = link_arrays.decode(descriptors, payload, link_arrays.elements(descriptors))
    return descriptors, decoded


def same_bytes(got: np.ndarray, want: np.ndarray) -> None:
    """Equal dtype, shape and bytes (strings: equal bytes objects)."""
    assert got.dtype == want.dtype and got.shape == want.shape
    if want.dtype == object:
        assert [type(v) for v in got.ravel()] == [bytes] * want.size
        assert got.ravel().tolist() == want.ravel().tolist()
    else:
        assert got.tobytes() == np.ascontiguousarray(want).tobytes()


@pytest.mark.parametrize("shape", list(shaped(VALUES["int8"])))
@pytest.mark.parametrize("dtype", list(VALUES))
def test_every_dtype_and_shape_crosses_the_link_byte_for_byte(dtype, shape):
    value = shaped(VALUES[dtype])[shape]
    descriptors, decoded = round_trip({"x": value, "second": value})
    assert [d[:3] for d in descriptors] == [("x", tensors.datatype_of(value), value.shape),
                                            ("second", tensors.datatype_of(value), value.shape)]
    for alias in ("x", "second"):
        same_bytes(decoded[alias], value)
        # what the model process read before from a request's TensorProto (TensorFlow's own)
        # and a worker from an answer's (typed fields): the same arrays
        same_bytes(decoded[alias], tensors.to_ndarray(tf.make_tensor_proto(value)))
        if value.size:
            same_bytes(decoded[alias], tensors.to_ndarray(tensors.to_tensor_proto(value)))


def test_numeric_arrays_are_read_in_place_and_strings_as_bytes():
    value = _RNG.random((3, 5), dtype=np.float32)
    _, decoded = round_trip({"x": value})
    assert not decoded["x"].flags.owndata and not decoded["x"].flags.writeable
    _, decoded = round_trip({"s": np.array(["a", "ü"])})  # str: utf-8, as to_tensor_proto
    assert decoded["s"].tolist() == [b"a", "ü".encode()]


def test_an_output_of_a_dtype_tensorflow_lacks_is_internal_as_before():
    with pytest.raises(ServingError) as e:
        link_arrays.encode({"t": np.array(["2020-01-01"], "datetime64[D]")})
    assert e.value.code == Code.INTERNAL and e.value.message == \
        "Cannot return a tensor of datetime64[D]"


F = types_pb2.DT_FLOAT
S = types_pb2.DT_STRING
MALFORMED = {
    "not descriptors": ("x", b""),
    "short descriptor": ((("x", F, (1,)),), b"\0" * 4),
    "bool dtype field": ((("x", True, (1,), 4),), b"\0" * 4),
    "unknown dtype": ((("x", 999, (1,), 4),), b"\0" * 4),
    "negative dimension": ((("x", F, (-1,), 4),), b"\0" * 4),
    "dimension not an int": ((("x", F, (1.0,), 4),), b"\0" * 4),
    "too many dimensions": ((("x", F, (1,) * 33, 4),), b"\0" * 4),
    "alias twice": ((("x", F, (1,), 4), ("x", F, (1,), 4)), b"\0" * 8),
    "bytes not the shape's": ((("x", F, (3,), 8),), b"\0" * 8),
    "payload longer": ((("x", F, (1,), 4),), b"\0" * 5),
    "payload shorter": ((("x", F, (2,), 8),), b"\0" * 4),
    "string lengths short": ((("s", S, (2,), 8),), b"\0" * 8),
    "string lengths over": ((("s", S, (1,), 9),), struct.pack("<q", 5) + b"x"),
    "negative string length": ((("s", S, (2,), 17),),
                               struct.pack("<qq", -1, 2) + b"x"),
    "bytes for no strings": ((("s", S, (0,), 1),), b"x"),
}


@pytest.mark.parametrize("case", list(MALFORMED))
def test_malformed_arrays_are_internal(case):
    descriptors, payload = MALFORMED[case]
    with pytest.raises(ServingError) as e:
        link_arrays.ArrayInputs(descriptors, memoryview(payload)).decode(None, 1 << 24)
    assert e.value.code == Code.INTERNAL
    assert e.value.message.startswith("Malformed arrays on the link: ")


def test_the_element_budget_is_charged_before_the_payload_is_read():
    inputs = link_arrays.ArrayInputs((("x", F, (1 << 20, 1 << 20), 0),), memoryview(b""))
    with pytest.raises(ServingError) as e:
        inputs.decode(None, 1 << 24)
    assert e.value.code == Code.INVALID_ARGUMENT
    assert "more than the server decodes for one request (16777216" in e.value.message


# ---- the link itself, between a real model process's APIs and a worker's -----------------

@pytest.fixture(scope="module")
def linked(model_templates, tmp_path_factory):
    base = tmp_path_factory.mktemp("link") / "hp"
    copy_version(model_templates / "hp2_v1", base, 1)
    config = ServerConfig(port=0, model_name="hp", model_base_path=str(base))
    core = ServerCore(config)
    core.start(config.load().model_config, timeout=120)
    executor = ThreadPoolExecutor(4)
    apis = Apis(core, executor)
    loop = LoopThread("link-test")
    path = str(tmp_path_factory.mktemp("sock") / "link")
    server = LinkServer(apis, path)
    loop.run(server.start())
    yield SimpleNamespace(apis=apis, loop=loop, path=path, executor=executor)
    loop.run(server.close())
    loop.stop()
    core.stop()
    executor.shutdown()


def predict_call(body: dict, version=None, output_filter=()) -> PredictCall:
    spec = model_pb2.ModelSpec(name="hp")
    if version is not None:
        spec.version.value = version
    inputs = rest_json.JsonInputs(body, 0)
    spec.signature_name = inputs.signature_name
    return PredictCall(spec, inputs, output_filter)


@pytest.mark.parametrize("body,output_filter", [
    ({"instances": [1.0, 2.0, 5.0]}, ()),
    ({"inputs": {"x": [[-0.5], [1e30]]}, "signature_name": "serving_default"}, ("y",)),
    ({"instances": []}, ()),
])
def test_a_rest_predict_over_the_link_answers_as_in_process(linked, body, output_filter):
    async def both():
        remote = RemoteApis(linked.path, 1 << 24, linked.executor)
        got = await remote.predict(predict_call(body, output_filter=output_filter), "REST")
        want = await linked.apis.predict(predict_call(body, output_filter=output_filter),
                                         "REST")
        return got, want

    try:
        got, want = linked.loop.run(both())
    except ServingError as e:  # an empty batch: the same error either way
        with pytest.raises(ServingError) as direct:
            linked.loop.run(linked.apis.predict(predict_call(body), "REST"))
        assert (e.code, e.message) == (direct.value.code, direct.value.message)
        return
    assert got.model_spec == want.model_spec
    assert list(got.outputs) == list(want.outputs)
    for alias in want.outputs:
        same_bytes(got.outputs[alias], want.outputs[alias])
    row = "instances" in body
    assert rest_json.dumps(rest_json.predict_json(got.outputs, row)) == \
        rest_json.dumps(rest_json.predict_json(want.outputs, row))


def test_errors_cross_the_link_as_the_apis_raise_them(linked):
    async def scenario():
        remote = RemoteApis(linked.path, 1 << 24, linked.executor)
        errors = []
        for call in (predict_call({"instances": [1.0]}, version=7),
                     predict_call({"instances": [1.0]}, output_filter=("nope",)),
                     predict_call({"instances": [1.0]}, output_filter=("y", "y"))):
            for apis in (remote, linked.apis):
                try:
                    await apis.predict(call, "REST")
                except ServingError as e:
                    errors.append((e.code, e.message))
        return errors

    errors = linked.loop.run(scenario())
    assert len(errors) == 6
    assert errors[0::2] == errors[1::2]
    codes = [code for code, _ in errors[0::2]]
    assert codes == [Code.NOT_FOUND, Code.INVALID_ARGUMENT, Code.INVALID_ARGUMENT]


def test_malformed_arrays_in_a_call_are_internal_and_the_link_serves_on(linked):
    async def scenario():
        client = await LinkClient.connect(linked.path)
        codes = []
        for descriptors, payload in MALFORMED.values():
            try:
                await client.exchange("PredictArrays", "REST",
                                      ("hp", "", 1, (), descriptors), [payload])
            except ServingError as e:
                codes.append(e.code)
        for body in (None, ("hp",), 5):  # not the call's tuple
            try:
                await client.exchange("PredictArrays", "REST", body, [])
            except ServingError as e:
                codes.append(e.code)
        x = np.array([[2.0]], np.float32)
        descriptors, chunks = link_arrays.encode({"x": x})
        (_, answer_descriptors), out = await client.exchange(
            "PredictArrays", "REST", ("hp", "", 1, (), descriptors), chunks)
        y = link_arrays.decode(answer_descriptors, out, link_arrays.elements(answer_descriptors))
        return codes, y

    codes, y = linked.loop.run(scenario())
    assert codes == [Code.INTERNAL] * (len(MALFORMED) + 3)
    assert y["y"].tolist() == [[3.0]]


@pytest.mark.parametrize("frame", [
    struct.pack("!IQ", 5, 0) + b"junk!",  # not a pickle
    struct.pack("!IQ", 4, 0) + pickle.dumps(7, protocol=2)[:4],  # cut short
    (lambda d: struct.pack("!IQ", len(d), 0) + d)(pickle.dumps(7)),  # not a message
    (lambda d: struct.pack("!IQ", len(d), 0) + d)(pickle.dumps(("call", 1))),  # no method
    (lambda d: struct.pack("!IQ", len(d), 0) + d)(pickle.dumps(("call", [1], "Predict", "REST",
                                                                None, b""))),  # id unhashable
], ids=["not-pickle", "bad-pickle", "not-tuple", "short-call", "bad-id"])
def test_a_garbled_frame_drops_that_link_only(linked, frame):
    async def scenario():
        reader, writer = await asyncio.open_unix_connection(linked.path)
        writer.write(frame)
        await writer.drain()
        rest = await asyncio.wait_for(reader.read(), 30)  # the snapshot, then EOF
        writer.close()
        client = await LinkClient.connect(linked.path)
        body = await client.call("GetModelStatus", "GRPC", _status_request())
        return rest, body

    rest, body = linked.loop.run(scenario())
    assert rest.startswith(struct.pack("!I", len(rest) - 12))  # one whole frame, no answer
    assert body  # a fresh connection is answered


def _status_request() -> bytes:
    from tensorflow_serving.apis import get_model_status_pb2
    return get_model_status_pb2.GetModelStatusRequest(
        model_spec=model_pb2.ModelSpec(name="hp")).SerializeToString()
