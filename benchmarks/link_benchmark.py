"""The CPU a Predict costs on the link between a front-end worker and the model process.

In-process, no server, no sockets.

Times, per request, the link's encode + decode of a Predict, both ways (the worker's
request, the model process's answer), for MNIST bodies of 1 and of 32 images (float
`images` [N, 784] in, float `scores` [N, 10] out), and the worker's share of it alone
("worker side": encoding the request, decoding the answer):

  proto   the link before issue 22's change (725743c): the worker builds a PredictRequest
          from the decoded arrays (`tensor_content`), serializes it into a pickled
          frame; the model process parses it and decodes its TensorProtos
          (`PredictCall.from_request`, `ProtoInputs.decode`); the answer is a PredictResponse
          (`PredictResult.to_proto`), parsed back in the worker (`to_ndarray`).
  arrays  the link now (`link_arrays`): descriptors in the frame's pickled header, the
          arrays' bytes after it; read back with `np.frombuffer`.

and, for a gRPC Predict (a request that arrives in the worker as TensorProto bytes, built
the way `tf.make_tensor_proto` builds it: `tensor_content`), the worker's share of:

  grpc-pass     passing its bytes through (what the worker does): the frame only; the model
                process parses the PredictRequest and decodes its tensors.
  grpc-convert  parsing it in the worker, decoding its tensors and sending arrays; the model
                process reads the arrays.

Usage: python benchmarks/link_benchmark.py [--rounds 5]
Prints, per body and variant, the median and best time per request over the rounds (each
round the best of 3 timeit repeats), the variants interleaved round by round.
"""

from __future__ import annotations

import argparse
import asyncio
import pickle
import statistics
import struct
import sys
import timeit
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
_OLD_LENGTH = struct.Struct("!I")  # the link's frame before: a length and a pickled tuple


def _run(coroutine):
    """A coroutine that never suspends (its reader already holds the frame), run inline."""
    try:
        coroutine.send(None)
    except StopIteration as done:
        return done.value
    raise RuntimeError("the coroutine suspended")


def variants(images: int):
    import numpy as np
    from tensorflow.core.framework import tensor_pb2, types_pb2
    from tensorflow_serving.apis import model_pb2, predict_pb2

    from serving.model_server.workers import link, link_arrays
    from serving.model_server.servable.run import PredictCall, PredictResult
    from serving.model_server.servable.tensors import (DEFAULT_MAX_ELEMENTS, datatype_of,
                                                       decode_request_tensors, to_ndarray)

    rng = np.random.default_rng(images)
    inputs = {"images": rng.random((images, 784), dtype=np.float32)}
    outputs = {"scores": rng.random((images, 10), dtype=np.float32)}
    spec = model_pb2.ModelSpec(name="mnist", signature_name="predict_images")
    spec.version.value = 1
    sig = None  # neither Inputs reads the signature in the model process

    def reader(frame: bytes) -> asyncio.StreamReader:
        r = asyncio.StreamReader()
        r.feed_data(frame)
        return r

    def old_frame(message) -> bytes:
        data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
        return _OLD_LENGTH.pack(len(data)) + data

    async def old_read(r):
        (size,) = _OLD_LENGTH.unpack(await r.readexactly(_OLD_LENGTH.size))
        return pickle.loads(await r.readexactly(size))

    def packed(value):  # 725743c's to_tensor_proto(value, packed=True), numbers only
        value = np.asarray(value)
        tensor = tensor_pb2.TensorProto(dtype=datatype_of(value))
        for d in value.shape:
            tensor.tensor_shape.dim.add(size=d)
        tensor.tensor_content = value.ravel().tobytes()
        return tensor

    # each way: the sender's half (to a frame), the receiver's half (from the frame)
    def proto_request() -> bytes:  # the worker's
        request = predict_pb2.PredictRequest()
        request.model_spec.name = "mnist"
        request.model_spec.signature_name = "predict_images"
        request.model_spec.version.value = 1
        for alias, value in inputs.items():
            request.inputs[alias].CopyFrom(packed(value))
        return old_frame(("call", 1, "Predict", "REST", None, request.SerializeToString()))

    def proto_call(frame: bytes):  # the model process's
        body = _run(old_read(reader(frame)))[5]
        call = PredictCall.from_request(predict_pb2.PredictRequest.FromString(body), len(body))
        assert call.inputs.decode(sig, DEFAULT_MAX_ELEMENTS)["images"].shape == (images, 784)

    def proto_answer() -> bytes:  # the model process's
        return old_frame(("ok", 1, PredictResult(spec, outputs).to_proto().SerializeToString()))

    def proto_result(frame: bytes):  # the worker's
        response = predict_pb2.PredictResponse.FromString(_run(old_read(reader(frame)))[2])
        got = {a: to_ndarray(t, a) for a, t in response.outputs.items()}
        assert got["scores"].shape == (images, 10)

    def arrays_request() -> bytes:
        descriptors, payload = link_arrays.encode(inputs)
        return link._frame(("call", 1, "PredictArrays", "REST", None,
                            ("mnist", "predict_images", 1, (), descriptors)), payload)

    def arrays_call(frame: bytes):
        message, payload = _run(link._read_frame(reader(frame)))
        name, signature_name, version, output_filter, descriptors = message[5]
        model_spec = model_pb2.ModelSpec(name=name, signature_name=signature_name)
        model_spec.version.value = version
        call = PredictCall(model_spec, link_arrays.ArrayInputs(descriptors, payload),
                           output_filter)
        assert call.inputs.decode(sig, DEFAULT_MAX_ELEMENTS)["images"].shape == (images, 784)

    def arrays_answer() -> bytes:
        descriptors, chunks = link_arrays.encode(outputs)
        return link._frame(("ok", 1, (("mnist", 1, "predict_images"), descriptors)), chunks)

    def arrays_result(frame: bytes):
        message, payload = _run(link._read_frame(reader(frame)))
        (name, version, signature_name), descriptors = message[2]
        answered = model_pb2.ModelSpec(name=name, signature_name=signature_name)
        answered.version.value = version
        got = link_arrays.decode(descriptors, payload, link_arrays.elements(descriptors))
        assert got["scores"].shape == (images, 10)

    proto_frames = (proto_request(), proto_answer())
    arrays_frames = (arrays_request(), arrays_answer())

    grpc_request = predict_pb2.PredictRequest(model_spec=spec)
    tensor = grpc_request.inputs["images"]
    tensor.dtype = types_pb2.DT_FLOAT
    for d in inputs["images"].shape:
        tensor.tensor_shape.dim.add(size=d)
    tensor.tensor_content = inputs["images"].tobytes()
    grpc_bytes = grpc_request.SerializeToString()

    def grpc_pass():  # the worker's share: the frame
        link._frame(("call", 1, "Predict", "GRPC", None, grpc_bytes))

    def grpc_convert():  # the worker's share: parse, decode, encode, frame
        request = predict_pb2.PredictRequest.FromString(grpc_bytes)
        decoded = decode_request_tensors(request.inputs, DEFAULT_MAX_ELEMENTS)
        descriptors, payload = link_arrays.encode(decoded)
        link._frame(("call", 1, "PredictArrays", "GRPC", None,
                     (request.model_spec.name, request.model_spec.signature_name, 1,
                      tuple(request.output_filter), descriptors)), payload)

    def grpc_pass_model():  # the model process's share of a passed-through request
        body = _run(link._read_frame(reader(link._frame(
            ("call", 1, "Predict", "GRPC", None, grpc_bytes)))))[0][5]
        call = PredictCall.from_request(predict_pb2.PredictRequest.FromString(body), len(body))
        call.inputs.decode(sig, DEFAULT_MAX_ELEMENTS)

    return {"proto": lambda: (proto_result(proto_answer()), proto_call(proto_request())),
            "arrays": lambda: (arrays_result(arrays_answer()), arrays_call(arrays_request())),
            "proto worker side": lambda: (proto_request(), proto_result(proto_frames[1])),
            "arrays worker side": lambda: (arrays_request(), arrays_result(arrays_frames[1])),
            "grpc-pass": grpc_pass,
            "grpc-convert": grpc_convert, "grpc-pass model side": grpc_pass_model}


def _fmt(seconds: float) -> str:
    return f"{seconds * 1e6:.1f} us" if seconds < 1e-3 else f"{seconds * 1e3:.2f} ms"


async def _main(rounds: int) -> None:
    for images in (1, 32):
        fns = variants(images)
        times = {name: [] for name in fns}
        for _ in range(rounds):
            for name, fn in fns.items():
                n = 2000 if images == 1 else 500
                times[name].append(min(timeit.repeat(fn, number=n, repeat=3)) / n)
        for name, ts in times.items():
            print(f"{images:>2} image(s)  {name:<22} median {_fmt(statistics.median(ts)):>10}"
                  f"  best {_fmt(min(ts)):>10}", flush=True)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--rounds", type=int, default=5, help="rounds, each timing every variant")
    args = p.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    from serving.model_server import tf_protos
    tf_protos.without_runtime()  # as in a front-end worker: TensorFlow's protos only
    asyncio.run(_main(args.rounds))
    return 0


if __name__ == "__main__":
    sys.exit(main())
