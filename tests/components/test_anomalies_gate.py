"""AnomaliesGate turns ExampleValidator's report into a readable, failing error."""

from __future__ import annotations

from tensorflow_metadata.proto.v0 import anomalies_pb2

from components.anomalies_gate import ANOMALIES_FILE, format_report, read_anomalies


def _write(uri, split, anomalies):
    path = uri / f"Split-{split}"
    path.mkdir(parents=True)
    (path / ANOMALIES_FILE).write_bytes(anomalies.SerializeToString())


def test_clean_splits_report_nothing(tmp_path):
    _write(tmp_path, "train", anomalies_pb2.Anomalies())
    _write(tmp_path, "eval", anomalies_pb2.Anomalies())
    assert read_anomalies(str(tmp_path), ["train", "eval"]) == {}


def test_anomalies_are_reported_per_split_and_feature(tmp_path):
    bad = anomalies_pb2.Anomalies()
    reason = bad.anomaly_info["label"].reason.add()
    reason.short_description = "Out-of-range values"
    reason.description = "Unexpectedly large value: 12."
    _write(tmp_path, "train", bad)
    _write(tmp_path, "eval", anomalies_pb2.Anomalies())
    found = read_anomalies(str(tmp_path), ["train", "eval"])
    assert list(found) == ["train"]
    report = format_report(found)
    assert "[train] feature 'label': Out-of-range values: Unexpectedly large value: 12." in report
    assert "before training" in report
