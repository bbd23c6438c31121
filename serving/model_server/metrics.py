"""Prometheus metrics, named like TF Serving's, on a registry owned by one server."""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Optional

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from serving.model_server.errors import Code, ServingError

_LATENCY_BUCKETS_US = tuple(10 * 1.8 ** i for i in range(33))  # 10 us .. ~1.5e9 us, as TF


class Metrics:
    """Request counts/latencies per model, API and entrypoint; model load states."""

    def __init__(self):
        self.registry = CollectorRegistry(auto_describe=True)
        self.request_count = Counter(
            ":tensorflow:serving:request_count",
            "The total number of requests.", ["model_name", "API", "entrypoint", "status"],
            registry=self.registry)
        self.request_latency = Histogram(
            ":tensorflow:serving:request_latency",
            "Distribution of wall time (in microseconds) for Tensorflow Serving request.",
            ["model_name", "API", "entrypoint"], buckets=_LATENCY_BUCKETS_US,
            registry=self.registry)
        self.model_state = Gauge(
            ":tensorflow:serving:model_version_state",
            "1 for the current state of each model version (START, LOADING, AVAILABLE, "
            "UNLOADING, END).", ["model_name", "model_version", "state"], registry=self.registry)
        self.load_attempts = Counter(
            ":tensorflow:cc:saved_model:load_attempt_count",
            "The number of times a SavedModel was successfully loaded.",
            ["model_path", "status"], registry=self.registry)  # TensorFlow's labels
        self.inflight = Gauge(
            ":tensorflow:serving:inflight_requests",
            "Requests received and not yet answered (what a SIGTERM drain waits for).",
            registry=self.registry)
        self._states = {}
        self._series = {}

    @contextlib.contextmanager
    def track(self, api: str, model_name: str, entrypoint: str):
        start = time.perf_counter()
        status = "OK"
        try:
            yield
        except ServingError as e:
            status = e.code.name
            raise
        except asyncio.CancelledError:  # the client's deadline passed, or it went away
            status = Code.CANCELLED.name
            raise
        except BaseException:
            status = Code.INTERNAL.name
            raise
        finally:
            count, latency = self._children(model_name, api, entrypoint, status)
            count.inc()
            latency.observe((time.perf_counter() - start) * 1e6)

    @contextlib.contextmanager
    def count_failures(self, api: str, model_name: str, entrypoint: str):
        """Count a request that fails here as that API's, with its status: for a front end
        decoding its wire format before the API counts the request itself."""
        try:
            yield
        except ServingError as e:
            self.refused(api, model_name, entrypoint, e.code)
            raise

    def refused(self, api: str, model_name: str, entrypoint: str, code: Code) -> None:
        """One request refused before it reached its API (no latency: it ran nothing)."""
        self._children(model_name, api, entrypoint, Code(code).name)[0].inc()

    def _children(self, model_name: str, api: str, entrypoint: str, status: str):
        """The (count, latency) series of one label set, looked up once and then cached:
        `labels()` validates and locks on every call, which showed up per request."""
        key = (model_name, api, entrypoint, status)
        children = self._series.get(key)
        if children is None:
            children = self._series[key] = (
                self.request_count.labels(model_name, api, entrypoint, status),
                self.request_latency.labels(model_name, api, entrypoint))
        return children

    def on_state(self, model: str, version: int, state, error: Optional[ServingError],
                 path: str) -> None:
        key = (model, str(version))
        old = self._states.get(key)
        if old is not None:
            self.model_state.labels(model, str(version), old).set(0)
        self.model_state.labels(model, str(version), state.name).set(1)
        self._states[key] = state.name
        if state.name == "AVAILABLE":
            self.load_attempts.labels(path, "success").inc()
        elif state.name == "END" and error is not None and old == "LOADING":
            self.load_attempts.labels(path, "fail").inc()

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
