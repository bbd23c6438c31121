"""The Prometheus exposition: TF Serving's counters as its exporter writes them."""

from __future__ import annotations

import re

import pytest
from prometheus_client.parser import text_string_to_metric_families

from serving.model_server.errors import Code, ServingError
from serving.model_server.metrics import Metrics


def test_request_count_is_tf_servings_series_and_parses():
    """`:tensorflow:serving:request_count{model_name, status}` with no `_total` and a whole
    number (what TF Serving's dashboards and alerts query); the per-API and per-entrypoint
    count beside it; a label value with quotes, a backslash or a newline stays one line."""
    m = Metrics()
    for _ in range(2):
        with m.track("Predict", "mnist", "REST"):
            pass
    with pytest.raises(ServingError):
        with m.track("Predict", "mnist", "GRPC"):
            raise ServingError(Code.NOT_FOUND, "no such version")
    m.refused("Classify", 'odd"name\\\n', "REST", Code.INVALID_ARGUMENT)
    text = m.exposition().decode()
    counts = re.findall(r"^:tensorflow:serving:request_count\{(.*)\} (\S+)$", text, re.M)
    assert counts == [('model_name="mnist",status="NOT_FOUND"', "1"),
                      ('model_name="mnist",status="OK"', "2"),
                      ('model_name="odd\\"name\\\\\\n",status="INVALID_ARGUMENT"', "1")]
    assert "# TYPE :tensorflow:serving:request_count counter" in text
    assert "_total" not in text
    by_entrypoint = {tuple(sorted(s.labels.items())): s.value
                     for f in text_string_to_metric_families(text)
                     if f.name == ":tensorflow:serving:request_count_by_entrypoint"
                     for s in f.samples}
    assert by_entrypoint[(("API", "Predict"), ("entrypoint", "GRPC"),
                          ("model_name", "mnist"), ("status", "NOT_FOUND"))] == 1
    assert by_entrypoint[(("API", "Classify"), ("entrypoint", "REST"),
                          ("model_name", 'odd"name\\\n'), ("status", "INVALID_ARGUMENT"))] == 1
    latency = [f for f in text_string_to_metric_families(text)
               if f.name == ":tensorflow:serving:request_latency"]
    assert latency and latency[0].type == "histogram"  # refused requests ran nothing: 3 runs
    assert sum(s.value for s in latency[0].samples if s.name.endswith("_count")) == 3
