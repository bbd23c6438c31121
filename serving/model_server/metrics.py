"""Prometheus metrics, named like TF Serving's, on a registry owned by one server.

TF Serving's counters are exposed as its exporter writes them (util/prometheus_exporter.cc):
the name with no `_total`, no `_created` series, whole numbers, and TF Serving's labels -
`:tensorflow:serving:request_count{model_name, status}` - so dashboards and alerts written for
tensorflow_model_server (`rate(:tensorflow:serving:request_count{status!="OK"}[5m])`) work
unchanged. prometheus_client's Counter renames a counter `<name>_total`, so the counters are
written here; the histogram and the gauges are prometheus_client's.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from typing import Dict, Optional, Tuple

from prometheus_client import CollectorRegistry, Gauge, Histogram, generate_latest

from serving.model_server.errors import Code, ServingError

_LATENCY_BUCKETS_US = tuple(10 * 1.8 ** i for i in range(33))  # 10 us .. ~1.5e9 us, as TF


class TfCounter:
    """A counter written as TF Serving's exporter writes one (see the module's docstring)."""

    def __init__(self, name: str, documentation: str, labelnames: Tuple[str, ...]):
        self.name, self.documentation, self.labelnames = name, documentation, labelnames
        self._cells: Dict[Tuple[str, ...], int] = {}
        self._lock = threading.Lock()

    def inc(self, *labels: str) -> None:
        with self._lock:
            self._cells[labels] = self._cells.get(labels, 0) + 1

    def exposition(self) -> str:
        with self._lock:
            cells = sorted(self._cells.items())
        lines = [f"# HELP {self.name} {self.documentation}", f"# TYPE {self.name} counter"]
        for labels, count in cells:
            text = ",".join(f'{k}="{_escape(v)}"' for k, v in zip(self.labelnames, labels))
            lines.append(f"{self.name}{{{text}}} {count}")
        return "\n".join(lines) + "\n"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


class Metrics:
    """Request counts/latencies per model, API and entrypoint; model load states."""

    def __init__(self):
        self.registry = CollectorRegistry(auto_describe=True)
        self.request_count = TfCounter(  # TF Serving's: servables/tensorflow/util.cc
            ":tensorflow:serving:request_count", "The total number of requests.",
            ("model_name", "status"))
        self.request_count_by_entrypoint = TfCounter(  # this server's: which API, REST/gRPC
            ":tensorflow:serving:request_count_by_entrypoint",
            "The total number of requests, by API and entrypoint (REST, GRPC).",
            ("model_name", "API", "entrypoint", "status"))
        self.request_latency = Histogram(
            ":tensorflow:serving:request_latency",
            "Distribution of wall time (in microseconds) for Tensorflow Serving request.",
            ["model_name", "API", "entrypoint"], buckets=_LATENCY_BUCKETS_US,
            registry=self.registry)
        self.model_state = Gauge(
            ":tensorflow:serving:model_version_state",
            "1 for the current state of each model version (START, LOADING, AVAILABLE, "
            "UNLOADING, END).", ["model_name", "model_version", "state"], registry=self.registry)
        self.load_attempts = TfCounter(  # TensorFlow's name and labels
            ":tensorflow:cc:saved_model:load_attempt_count",
            "The number of times a SavedModel was successfully loaded.",
            ("model_path", "status"))
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
            self._count(model_name, api, entrypoint, status)
            self._latency(model_name, api, entrypoint).observe(
                (time.perf_counter() - start) * 1e6)

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
        self._count(model_name, api, entrypoint, Code(code).name)

    def _count(self, model_name: str, api: str, entrypoint: str, status: str) -> None:
        self.request_count.inc(model_name, status)
        self.request_count_by_entrypoint.inc(model_name, api, entrypoint, status)

    def _latency(self, model_name: str, api: str, entrypoint: str):
        """The latency series of one label set, looked up once and then cached: `labels()`
        validates and locks on every call, which showed up per request."""
        key = (model_name, api, entrypoint)
        child = self._series.get(key)
        if child is None:
            child = self._series[key] = self.request_latency.labels(model_name, api,
                                                                    entrypoint)
        return child

    def on_state(self, model: str, version: int, state, error: Optional[ServingError],
                 path: str) -> None:
        key = (model, str(version))
        old = self._states.get(key)
        if old is not None:
            self.model_state.labels(model, str(version), old).set(0)
        self.model_state.labels(model, str(version), state.name).set(1)
        self._states[key] = state.name
        if state.name == "AVAILABLE":
            self.load_attempts.inc(path, "success")
        elif state.name == "END" and error is not None and old == "LOADING":
            self.load_attempts.inc(path, "fail")

    def exposition(self) -> bytes:
        counters = (self.request_count, self.request_count_by_entrypoint, self.load_attempts)
        return "".join(c.exposition() for c in counters).encode() + \
            generate_latest(self.registry)
