"""REST front end: TF Serving's HTTP/JSON API as a minimal ASGI app on uvicorn (httptools
parser, uvloop event loop), thin over the APIs.

Routes (all under /v1/models/{name}[/versions/{v}|/labels/{l}]):
  GET  ...             model status            GET  .../metadata   signature defs
  POST ...:predict     row ("instances") or columnar ("inputs") format
  POST ...:classify    POST ...:regress        ("examples", optional "context")
plus GET on the Prometheus path from --monitoring_config_file. Every error, the HTTP layer's
included, is {"error": "..."} with its HTTP status (the API's from errors.STATUS_TABLE).

The body is decoded into the API's request object (`rest_json`), the API awaited on the event
loop, the answer encoded; a large body is parsed on the executor. The HTTP layer is uvicorn's,
with what a server facing arbitrary clients needs besides (`HttpProtocol`): a read timeout for
a request (headers and body) from its first byte, an idle timeout from the connection's first
byte (uvicorn's keep-alive timeout, which it arms only after a first response), bounds on the
request line, headers, body and open connections, JSON bodies for the parser's own refusals,
and a drain that cuts off requests still arriving.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import logging
import re
import socket
import threading
import time
from typing import Optional, Tuple
from urllib.parse import unquote

import httptools
import uvicorn
from tensorflow_serving.apis import (classification_pb2, get_model_metadata_pb2,
                                     get_model_status_pb2, model_pb2, regression_pb2)
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from serving.model_server.config import ServerConfig
from serving.model_server.core.apis import OFFLOAD_BYTES, Apis
from serving.model_server.errors import ServingError, invalid_argument
from serving.model_server.frontends import rest_json
from serving.model_server.servable.run import PredictCall

log = logging.getLogger("serving.model_server")

ENTRYPOINT = "REST"  # the metrics' entrypoint label
JSON = b"application/json"
MAX_URL_BYTES = 8 << 10  # a longer request target is answered 414
MAX_HEADER_BYTES = 64 << 10  # longer headers in all are answered 431
CHUNK_LINE_BYTES = 256  # the raw bytes kept from one read for a chunk-size line split over two
INT64_MAX = (1 << 63) - 1
_ROUTE = re.compile(
    r"^/v1/models/(?P<name>[^/:]+)"
    r"(?:/versions/(?P<version>\d+)|/labels/(?P<label>[^/:]+))?"
    r"(?:(?P<metadata>/metadata)|:(?P<verb>[A-Za-z]+))?/?$")
_EXAMPLES_APIS = {"classify": ("Classify", classification_pb2.ClassificationRequest),
                  "regress": ("Regress", regression_pb2.RegressionRequest)}


@dataclasses.dataclass(frozen=True)
class HttpLimits:
    """What one client may take of the REST server (flags in ServerConfig)."""

    max_body_bytes: int
    read_timeout: float  # seconds from a request's first byte to its last
    idle_timeout: float  # seconds a connection may wait for its next request
    max_connections: int  # open connections; requests on more are answered 503
    batch_timeout: Optional[float]  # --rest_api_timeout_in_ms: the wait for a batch

    @classmethod
    def of(cls, config: ServerConfig) -> "HttpLimits":
        ms = config.rest_api_timeout_in_ms
        return cls(config.rest_api_max_body_bytes, config.rest_api_read_timeout_seconds,
                   config.rest_api_idle_timeout_seconds, config.rest_api_max_connections,
                   ms / 1000.0 if ms > 0 else None)


class _BadBody(Exception):
    """A body that is not read: answered `status` (400, or 413 over the body limit) and the
    connection closed."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


def over_limit_message(limit: int, declared: Optional[int] = None) -> str:
    if declared is None:
        return f"Request body exceeds the limit of {limit} bytes"
    return f"Request body of {declared} bytes exceeds the limit of {limit} bytes"


class _Gone(Exception):
    """The client disconnected before its body arrived: nothing to answer."""


class RestApp:
    """The ASGI application: one HTTP request -> one API call -> one JSON answer."""

    def __init__(self, apis: Apis, limits: HttpLimits, prometheus_path: Optional[str] = None):
        """`apis`: this process's `Apis`, or a front-end worker's `worker.RemoteApis`."""
        self.apis = apis
        self.limits = limits
        self.prometheus_path = prometheus_path

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":  # lifespan is off; nothing else reaches an HTTP/1.1 app
            return
        try:
            status, ctype, body, close = await self._respond(scope, receive)
        except _Gone:
            return
        headers = [(b"content-type", ctype), (b"content-length", b"%d" % len(body))]
        if close:
            headers.append((b"connection", b"close"))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    async def _respond(self, scope, receive) -> Tuple[int, bytes, bytes, bool]:
        """(status, content type, body, close the connection) for one request."""
        method = scope["method"]
        path = scope["raw_path"].decode("latin-1")
        if method not in ("GET", "POST"):
            return _error(405, f"Method not allowed: {method}")
        metrics = self.prometheus_path and path == self.prometheus_path and method == "GET"
        if not metrics and not path.startswith("/v1/"):
            return _error(404, f"Not found: {path}")
        try:
            body = await self._read_body(scope, receive) if method == "POST" else b""
        except _BadBody as e:  # the rest of the stream cannot be trusted: close it
            return _error(e.status, str(e), close=True)
        try:
            if metrics:
                return (200, b"text/plain; version=0.0.4; charset=utf-8",
                        await self.apis.metrics_text(), False)
            return 200, JSON, rest_json.dumps(await self._route(method, path, body)), False
        except ServingError as e:
            return e.http_status, JSON, rest_json.error_body(e.message), False
        except Exception as e:  # noqa: BLE001 - never let a request take the server down
            log.exception("REST request failed")
            return _error(500, f"Internal error: {e}")

    async def _read_body(self, scope, receive) -> bytes:
        """The whole body (uvicorn de-chunks it), within --rest_api_max_body_bytes: 413 over
        it, as TF Serving's libevent answers (a declared chunk size over it is refused by
        HttpProtocol before the chunk arrives)."""
        limit = self.limits.max_body_bytes
        declared = next((v for k, v in scope["headers"] if k == b"content-length"), None)
        if declared is not None and int(declared) > limit:  # llhttp checked it is a number
            raise _BadBody(over_limit_message(limit, int(declared)), 413)
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise _Gone()
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                raise _BadBody(over_limit_message(limit), 413)
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)

    async def _route(self, method: str, path: str, body: bytes):
        m = _ROUTE.match(path)
        if m is None:
            raise invalid_argument(f"Malformed request: {method} {path}")
        # Percent-escapes in the name and the label are decoded after the match, as TF
        # Serving's ParseModelInfo does (DecodeArg, curl_easy_unescape).
        spec = model_pb2.ModelSpec(name=unquote(m["name"]))
        if m["version"] is not None:
            if int(m["version"]) > INT64_MAX:
                raise invalid_argument(f"Failed to convert version: {m['version']} to numeric.")
            spec.version.value = int(m["version"])
        elif m["label"] is not None:
            spec.version_label = unquote(m["label"])
        verb = m["verb"]
        if method == "GET" and verb is None:
            if m["metadata"]:
                return rest_json.metadata_json(await self.apis.get_model_metadata(
                    get_model_metadata_pb2.GetModelMetadataRequest(
                        model_spec=spec, metadata_field=["signature_def"]), ENTRYPOINT))
            return rest_json.status_json(await self.apis.get_model_status(
                get_model_status_pb2.GetModelStatusRequest(model_spec=spec), ENTRYPOINT))
        if method == "POST" and not m["metadata"] and verb == "predict":
            with self.apis.count_failures("Predict", spec.name, ENTRYPOINT):
                inputs = rest_json.JsonInputs(await self._parse(body), len(body))
            spec.signature_name = inputs.signature_name
            result = await self.apis.predict(PredictCall(spec, inputs), ENTRYPOINT,
                                             self.limits.batch_timeout)
            return rest_json.predict_json(result.outputs, inputs.row)
        if method == "POST" and not m["metadata"] and verb in _EXAMPLES_APIS:
            api, message = _EXAMPLES_APIS[verb]
            with self.apis.count_failures(api, spec.name, ENTRYPOINT):
                request = rest_json.fill_examples_request(message(model_spec=spec),
                                                          await self._parse(body))
            if verb == "classify":
                return rest_json.classify_json(await self.apis.classify(
                    request, ENTRYPOINT, self.limits.batch_timeout))
            return rest_json.regress_json(await self.apis.regress(
                request, ENTRYPOINT, self.limits.batch_timeout))
        raise invalid_argument(f"Malformed request: {method} {path}")

    async def _parse(self, body: bytes):
        """The body as a JSON object; a large one is parsed on the executor, so the event
        loop goes on serving meanwhile."""
        if len(body) < OFFLOAD_BYTES:
            return rest_json.loads(body)
        return await asyncio.get_running_loop().run_in_executor(self.apis.executor,
                                                                rest_json.loads, body)


def _error(status: int, message: str, close: bool = False) -> Tuple[int, bytes, bytes, bool]:
    return status, JSON, rest_json.error_body(message), close


def error_response(status: int, message: str) -> bytes:
    """A whole HTTP/1.1 response with a JSON error that closes the connection."""
    body = rest_json.error_body(message)
    return (b"HTTP/1.1 %d %s\r\ncontent-type: application/json\r\ncontent-length: %d\r\n"
            b"connection: close\r\n\r\n" % (status, _REASONS.get(status, b"Error"), len(body))
            + body)


_REASONS = {400: b"Bad Request", 408: b"Request Timeout", 413: b"Payload Too Large",
            414: b"URI Too Long",
            431: b"Request Header Fields Too Large", 503: b"Service Unavailable"}


class _Refused(Exception):
    """Raised in a parser callback: the request is answered `status` and the connection
    closed."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


class HttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with the limits of `HttpLimits` and JSON refusals."""

    def __init__(self, *args, limits: HttpLimits, **kwargs):
        super().__init__(*args, **kwargs)
        self.limits = limits
        self.read_timer: Optional[asyncio.TimerHandle] = None
        self.header_bytes = 0
        self.over_limit = False
        # Chunked bodies: bytes of this request's body so far, of the current chunk so far,
        # and whether a chunk's size line was read and its data is not complete yet.
        self.body_bytes = 0
        self.chunk_bytes = 0
        self.in_chunk = False
        self.new_chunk = False
        self.raw_tail = b""

    def connection_made(self, transport) -> None:
        super().connection_made(transport)
        self.over_limit = len(self.connections) > self.limits.max_connections
        # Idle from the first byte: uvicorn arms its keep-alive timer only after a response.
        self.timeout_keep_alive_task = self.loop.call_later(self.timeout_keep_alive,
                                                            self.timeout_keep_alive_handler)

    def connection_lost(self, exc) -> None:
        self._stop_read_timer()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self.timeout_keep_alive_task is not None:
            self.timeout_keep_alive_task.cancel()
            self.timeout_keep_alive_task = None
        self.new_chunk = False
        try:
            self.parser.feed_data(data)
            if self.in_chunk and self.new_chunk:
                self._check_chunk_size(data)
            self.raw_tail = data[-CHUNK_LINE_BYTES:]
        except httptools.HttpParserUpgrade:  # no protocol upgrades: the request is served
            pass
        except _Refused as e:
            self.refuse(e.status, e.message)
        except httptools.HttpParserCallbackError as e:
            cause = e.__context__
            if isinstance(cause, _Refused):
                self.refuse(cause.status, cause.message)
            else:
                log.error("REST request parsing failed: %r", cause)
                self.refuse(400, "Malformed HTTP request")
        except httptools.HttpParserError as e:
            self.refuse(400, f"Malformed HTTP request: {e}")

    def refuse(self, status: int, message: str) -> None:
        """Answer `status` with a JSON error (unless a response is under way) and close."""
        self._stop_read_timer()
        if self.transport.is_closing():
            return
        cycle = self.cycle
        if cycle is None or not cycle.response_started or cycle.response_complete:
            self.transport.write(error_response(status, message))
        self.transport.close()

    # ---- parser callbacks ------------------------------------------------------------
    def on_message_begin(self) -> None:
        super().on_message_begin()
        self.header_bytes = 0
        self.body_bytes = self.chunk_bytes = 0
        self.in_chunk = False
        self._stop_read_timer()
        self.read_timer = self.loop.call_later(self.limits.read_timeout, self._read_timed_out)

    def on_url(self, url: bytes) -> None:
        super().on_url(url)
        if len(self.url) > MAX_URL_BYTES:
            raise _Refused(414, f"The request target is longer than {MAX_URL_BYTES} bytes")

    def on_header(self, name: bytes, value: bytes) -> None:
        self.header_bytes += len(name) + len(value) + 4
        if self.header_bytes > MAX_HEADER_BYTES:
            raise _Refused(431, f"The request's headers are longer than {MAX_HEADER_BYTES} "
                                f"bytes")
        super().on_header(name, value)

    def on_body(self, body: bytes) -> None:
        self.body_bytes += len(body)
        self.chunk_bytes += len(body)
        super().on_body(body)

    def on_chunk_header(self) -> None:
        self.in_chunk = self.new_chunk = True
        self.chunk_bytes = 0

    def on_chunk_complete(self) -> None:
        self.in_chunk = False

    def _check_chunk_size(self, data: bytes) -> None:
        """A chunk whose data is still to come: refuse it now (413) when its declared size
        takes the body over the limit, instead of waiting out the read timeout for bytes
        that would be refused anyway (libevent's evhttp does the same). llhttp does not
        report the size: it is the hex line just before the chunk's data, which ends
        `chunk_bytes` before the end of what was fed."""
        head = (self.raw_tail + data)[:len(self.raw_tail) + len(data) - self.chunk_bytes]
        if not head.endswith(b"\r\n"):
            return
        line = head[:-2].rsplit(b"\n", 1)[-1].split(b";", 1)[0].strip()
        try:
            size = int(line, 16)
        except ValueError:  # a line longer than the tail kept: llhttp checks it anyway
            return
        limit = self.limits.max_body_bytes
        if self.body_bytes - self.chunk_bytes + size > limit:
            raise _Refused(413, over_limit_message(limit))

    def on_headers_complete(self) -> None:
        if self.over_limit:
            raise _Refused(503, f"Too many connections (more than "
                                f"{self.limits.max_connections}, --rest_api_max_connections)")
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self._stop_read_timer()
        super().on_message_complete()

    # ---- timers and drain ----------------------------------------------------------------
    def _read_timed_out(self) -> None:
        self.read_timer = None
        if self.cycle is not None and self.cycle.response_complete:
            self.transport.close()  # answered early (404, 405): no second, unasked answer
            return
        self.refuse(408, f"The request did not arrive within {self.limits.read_timeout:g} s "
                         f"(--rest_api_read_timeout_seconds)")

    def _stop_read_timer(self) -> None:
        if self.read_timer is not None:
            self.read_timer.cancel()
            self.read_timer = None

    def shutdown(self) -> None:
        """Draining: a request still arriving is cut off (503); one being answered finishes
        and its connection closes after it; an idle connection closes now."""
        if self.read_timer is not None:
            self.refuse(503, "Server is shutting down")
        else:
            super().shutdown()


class RestServer:
    """uvicorn serving a RestApp on its own event-loop thread, driven from synchronous code,
    on a listening socket bound before (so a taken port fails at once, and front-end workers
    share the model process's)."""

    def __init__(self, app: RestApp, sock: socket.socket, drain_timeout: float):
        config = uvicorn.Config(
            app, http=functools.partial(HttpProtocol, limits=app.limits), loop="uvloop",
            lifespan="off", log_config=None, access_log=False, proxy_headers=False,
            server_header=False, date_header=False,
            timeout_keep_alive=app.limits.idle_timeout,
            timeout_graceful_shutdown=drain_timeout)
        self.server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self.server.run, kwargs={"sockets": [sock]},
                                        name="rest-loop", daemon=True)

    def start(self, timeout: float = 30.0) -> None:
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the REST server did not start")
            time.sleep(0.01)

    def is_alive(self) -> bool:
        return self._thread.is_alive()

    def stop(self, timeout: float) -> bool:
        """Stop accepting, close idle connections, let requests being answered finish
        (uvicorn cancels what is left after the drain timeout); True when it stopped."""
        self.server.should_exit = True
        self._thread.join(timeout)
        return not self._thread.is_alive()
