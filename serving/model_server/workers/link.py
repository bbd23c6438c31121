"""The link between the model process and its front-end worker processes
(--front_end_workers).

With workers, the gRPC and REST front ends (the wire: HTTP and JSON, gRPC framing) run in
worker processes, each with its own interpreter and so its own share of the cores, and
the one model process runs the APIs over the one ServerCore: one Manager, one set of
versions, one batching queue per version, one metrics registry. A worker passes each call
on as TF Serving's own request proto, serialized, and gets the response proto back - but for
a REST Predict, whose inputs the worker has already decoded from JSON into arrays: those
cross as arrays (dtype, shape, raw bytes), and so do its outputs, where a TensorProto would
be built by one process only for the other to parse it back. Either way the model process
makes the same `PredictCall` of it and awaits the one Predict entry point.

Each worker front end holds one connection to a Unix socket of the model process (in a
private directory: only this server's processes reach it). A frame is a header (the lengths
of what follows: 4 bytes, 8 bytes), a pickled tuple and a payload of raw bytes, empty but
for a REST Predict's arrays (`link_arrays`):
  worker -> model: ("call", id, method, entrypoint, timeout, request bytes)
                   ("call", id, "PredictArrays", entrypoint, timeout,
                    (model name, signature name, version, output_filter, descriptors))
                   + the inputs' bytes: a REST worker's Predict, its inputs decoded from
                   JSON there and sent as arrays (no TensorProto built and parsed back);
                   a gRPC worker passes Predict's request bytes through (the cheaper of
                   the two for a request that arrives as TensorProtos: benchmarks/README.md)
                   ("cancel", id)   the caller gave up (a gRPC deadline, a closed client)
                   ("refused", api, model name, entrypoint, code)   a request the front end
                   refused while decoding, for the metrics
  model -> worker: ("ok", id, response bytes) | ("error", id, code, message)
                   ("ok", id, ((model name, version, signature name), descriptors))
                   + the outputs' bytes: the answer to "PredictArrays"
                   ("serving", {model: ({version: SignatureDefMap bytes}, {label: version})})
                   the AVAILABLE versions, the signatures a Predict may run on each, and
                   the labels, sent on connecting, on every change and ahead of a NOT_FOUND
                   answer:
                   a REST worker converts JSON against the signature of the version it then
                   asks for by number (`ServingMirror`).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import pickle
import struct
from typing import Any, Dict, Optional, Sequence, Tuple

from google.protobuf.message import DecodeError
from tensorflow_serving.apis import (classification_pb2, get_model_metadata_pb2,
                                     get_model_status_pb2, inference_pb2, model_management_pb2,
                                     model_pb2, predict_pb2, regression_pb2)

from serving.model_server.core.manager import requested, resolve
from serving.model_server.errors import Code, ServingError, as_serving_error, invalid_argument
from serving.model_server.servable.run import PredictCall
from serving.model_server.workers import link_arrays

log = logging.getLogger("serving.model_server")

_HEADER = struct.Struct("!IQ")  # the pickled tuple's length, the payload's
# method -> (request type, Apis method, takes a timeout)
_PROTO_APIS = {
    "Classify": (classification_pb2.ClassificationRequest, "classify", True),
    "Regress": (regression_pb2.RegressionRequest, "regress", True),
    "MultiInference": (inference_pb2.MultiInferenceRequest, "multi_inference", True),
    "GetModelMetadata": (get_model_metadata_pb2.GetModelMetadataRequest,
                         "get_model_metadata", False),
    "GetModelStatus": (get_model_status_pb2.GetModelStatusRequest, "get_model_status", False),
    "HandleReloadConfigRequest": (model_management_pb2.ReloadConfigRequest, "reload_config",
                                  True),
}
GRPC_METHODS = ("Predict", *_PROTO_APIS)  # what a worker's gRPC front end passes on


def ready_path(link_path: str, worker_pid: int) -> str:
    """The file a front-end worker writes beside the link once it serves on every port."""
    return os.path.join(os.path.dirname(link_path), f"ready-{worker_pid}")


def _frame(message: tuple, payload: Sequence = ()) -> bytes:
    """One frame: `message` pickled, then the buffers of `payload` as they are."""
    data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    if not payload:
        return _HEADER.pack(len(data), 0) + data
    size = sum(memoryview(chunk).nbytes for chunk in payload)
    return b"".join((_HEADER.pack(len(data), size), data, *payload))


async def _read_frame(reader: asyncio.StreamReader) -> Tuple[tuple, memoryview]:
    """(message, payload): the payload is a view into the frame as read, not a copy."""
    size, payload = _HEADER.unpack(await reader.readexactly(_HEADER.size))
    frame = memoryview(await reader.readexactly(size + payload))
    message = pickle.loads(frame[:size])
    if not isinstance(message, tuple) or not message:
        raise ValueError(f"a link frame holds {type(message).__name__}, not a message")
    return message, frame[size:]


# ---- the model process's side --------------------------------------------------------------

class LinkServer:
    """Answers the workers' calls with this process's APIs; tells them what is serving."""

    def __init__(self, apis, path: str):
        self.apis = apis
        self.path = path
        self._writers = set()
        self._sigdefs: Dict[Tuple[str, int, int], bytes] = {}
        self._push_pending = False
        self._loop: Optional[asyncio.AbstractEventLoop] = None
        self._server = None

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._server = await asyncio.start_unix_server(self._serve, path=self.path)
        self.apis.core.on_serving_change(self.serving_changed)

    async def close(self) -> None:
        self._server.close()
        for writer in list(self._writers):
            writer.close()

    def serving_changed(self) -> None:
        """From any thread: send the new serving snapshot to every worker (coalesced)."""
        if self._loop is not None and not self._push_pending:
            self._push_pending = True
            self._loop.call_soon_threadsafe(self._push)

    def _push(self) -> None:
        self._push_pending = False
        message = _frame(("serving", self._snapshot()))
        for writer in self._writers:
            writer.write(message)

    def _snapshot(self):
        serving, labels = self.apis.core.manager.serving()
        snapshot, seen = {}, set()
        for model, versions in serving.items():
            sigdefs = {}
            for version, servable in versions.items():
                key = (model, version, id(servable))
                seen.add(key)
                if key not in self._sigdefs:
                    sigmap = get_model_metadata_pb2.SignatureDefMap()
                    for name, sig in servable.runnable_signatures.items():
                        sigmap.signature_def[name].CopyFrom(sig)
                    self._sigdefs[key] = sigmap.SerializeToString()
                sigdefs[version] = self._sigdefs[key]
            snapshot[model] = (sigdefs, labels.get(model, {}))
        for key in set(self._sigdefs) - seen:
            del self._sigdefs[key]
        return snapshot

    async def _serve(self, reader, writer) -> None:
        self._writers.add(writer)
        writer.write(_frame(("serving", self._snapshot())))
        tasks: Dict[int, asyncio.Task] = {}
        try:
            while True:
                message, payload = await _read_frame(reader)
                if message[0] == "call":
                    task = asyncio.create_task(self._answer(writer, *message[1:], payload))
                    tasks[message[1]] = task
                    task.add_done_callback(lambda _, i=message[1]: tasks.pop(i, None))
                elif message[0] == "cancel" and message[1] in tasks:
                    tasks[message[1]].cancel()
                elif message[0] == "refused":
                    self.apis.core.metrics.refused(*message[1:])
        except (asyncio.IncompleteReadError, ConnectionError):
            pass  # the worker stopped
        except Exception:  # noqa: BLE001 - a garbled frame: drop that worker, serve on
            log.exception("A front-end worker sent a malformed frame; dropping its link")
        finally:
            self._writers.discard(writer)
            for task in list(tasks.values()):
                task.cancel()
            writer.close()

    async def _answer(self, writer, call_id: int, method: str, entrypoint: str,
                      timeout: Optional[float], body: Any, payload: memoryview) -> None:
        frames, out = [], ()
        try:
            if method == "PredictArrays":
                answer, out = await self._predict_arrays(entrypoint, timeout, body, payload)
            else:
                answer = await self._call(method, entrypoint, timeout, body)
            reply = ("ok", call_id, answer)
        except Exception as e:  # noqa: BLE001 - never let a request take the server down
            error = as_serving_error(e, f"{method} from a front-end worker")
            reply = ("error", call_id, int(error.code), error.message)
            if error.code == Code.NOT_FOUND:
                # The worker may have asked for a version it last heard of that has just
                # unloaded, before this change's snapshot reached it: send what serves now
                # ahead of the answer, so that its one retry asks for a version that serves.
                frames.append(_frame(("serving", self._snapshot())))
        if not writer.is_closing():
            writer.writelines(frames + [_frame(reply, out)])

    async def _predict_arrays(self, entrypoint: str, timeout, body, payload: memoryview):
        """A REST worker's Predict: ((name, version, signature name), descriptors) and the
        outputs' bytes."""
        name, signature_name, version, output_filter, descriptors = body
        spec = model_pb2.ModelSpec(name=name, signature_name=signature_name)
        spec.version.value = version
        result = await self.apis.predict(
            PredictCall(spec, link_arrays.ArrayInputs(descriptors, payload), output_filter),
            entrypoint, timeout)
        descriptors, chunks = link_arrays.encode(result.outputs)
        answered = result.model_spec
        return ((answered.name, answered.version.value, answered.signature_name),
                descriptors), chunks

    async def _call(self, method: str, entrypoint: str, timeout, body: bytes) -> bytes:
        try:
            if method == "Predict":
                request = predict_pb2.PredictRequest.FromString(body)
                call = PredictCall.from_request(request, len(body))
                return (await self.apis.predict(call, entrypoint, timeout)) \
                    .to_proto().SerializeToString()
            if method == "Metrics":
                return await self.apis.metrics_text()
            request_type, name, timed = _PROTO_APIS[method]
            request = request_type.FromString(body)
        except DecodeError as e:
            raise invalid_argument(f"Could not parse the {method} request: {e}") from None
        args = (request, entrypoint, timeout) if timed else (request, entrypoint)
        return (await getattr(self.apis, name)(*args)).SerializeToString()


# ---- a worker's side --------------------------------------------------------------------------

class ServingMirror:
    """The model process's AVAILABLE versions and labels, as last told, with their
    signature defs: what a REST worker converts JSON against."""

    def __init__(self):
        self._models: Dict[str, Tuple[Dict[int, bytes], Dict[str, int]]] = {}
        self._parsed: Dict[Tuple[str, int], dict] = {}

    def update(self, snapshot) -> None:
        self._models = snapshot
        live = {(m, v) for m, (versions, _) in snapshot.items() for v in versions}
        self._parsed = {k: v for k, v in self._parsed.items() if k in live}

    def resolve(self, model_spec) -> Tuple[int, dict]:
        """(version, {signature name: SignatureDef a Predict may run}) of what `model_spec`
        names; the Manager's errors when there is none."""
        name, version, label = requested(model_spec)
        versions, labels = self._models.get(name, ({}, {}))
        version = resolve({v: v for v in versions}, labels, name, version, label)
        key = (name, version)
        if key not in self._parsed:
            sigmap = get_model_metadata_pb2.SignatureDefMap.FromString(versions[version])
            self._parsed[key] = dict(sigmap.signature_def)
        return version, self._parsed[key]


class LinkClient:
    """One front end's connection to the model process, on the event loop it runs on."""

    def __init__(self, reader, writer):
        self.mirror = ServingMirror()
        self._reader, self._writer = reader, writer
        self._ids = itertools.count(1)
        self._pending: Dict[int, asyncio.Future] = {}
        loop = asyncio.get_running_loop()
        self.closed = loop.create_future()
        self._snapshot_seen = loop.create_future()
        self._task = asyncio.create_task(self._read())

    @classmethod
    async def connect(cls, path: str) -> "LinkClient":
        """Connected, with the first serving snapshot in its mirror."""
        reader, writer = await asyncio.open_unix_connection(path)
        client = cls(reader, writer)
        await client._snapshot_seen
        return client

    async def _read(self) -> None:
        try:
            while True:
                message, payload = await _read_frame(self._reader)
                kind = message[0]
                if kind == "serving":
                    self.mirror.update(message[1])
                    if not self._snapshot_seen.done():
                        self._snapshot_seen.set_result(None)
                    continue
                future = self._pending.pop(message[1], None)
                if future is None or future.done():
                    continue
                if kind == "ok":
                    future.set_result((message[2], payload))
                else:
                    future.set_exception(ServingError(message[2], message[3]))
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        except Exception:  # noqa: BLE001 - a garbled frame: no caller may wait forever
            log.exception("The link to the model process failed")
        finally:
            gone = ServingError(Code.UNAVAILABLE, "The model process is gone")
            for future in self._pending.values():
                if not future.done():
                    future.set_exception(gone)
            self._pending.clear()
            if not self._snapshot_seen.done():
                self._snapshot_seen.set_exception(gone)
            if not self.closed.done():
                self.closed.set_result(None)
            self._writer.close()

    async def call(self, method: str, entrypoint: str, body: bytes,
                   timeout: Optional[float] = None) -> bytes:
        """The model process's answer (response bytes), or its ServingError."""
        return (await self.exchange(method, entrypoint, body, (), timeout))[0]

    async def exchange(self, method: str, entrypoint: str, body: Any, payload: Sequence,
                       timeout: Optional[float] = None) -> Tuple[Any, memoryview]:
        """The model process's answer and the payload that came with it (a view into its
        frame), or its ServingError; `payload`: buffers sent after the call's header."""
        if self.closed.done():
            raise ServingError(Code.UNAVAILABLE, "The model process is gone")
        call_id = next(self._ids)
        future = asyncio.get_running_loop().create_future()
        self._pending[call_id] = future
        self._writer.write(_frame(("call", call_id, method, entrypoint, timeout, body), payload))
        try:
            return await future
        except asyncio.CancelledError:
            self._pending.pop(call_id, None)
            if not self._writer.is_closing():
                self._writer.write(_frame(("cancel", call_id)))
            raise

    def refused(self, api: str, model_name: str, entrypoint: str, code: Code) -> None:
        if not self._writer.is_closing():
            self._writer.write(_frame(("refused", api, model_name, entrypoint, int(code))))
