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


def test_drift_is_read_per_split_pair_and_reported_readably(tmp_path):
    from components.anomalies_gate import SPLIT_PAIR_DIR

    drift = anomalies_pb2.Anomalies()
    reason = drift.anomaly_info["label"].reason.add()
    reason.short_description = "High Linfty distance between current and previous"
    reason.description = "The Linfty distance between current and previous is 0.12."
    path = tmp_path / SPLIT_PAIR_DIR.format("train_train")
    path.mkdir()
    (path / ANOMALIES_FILE).write_bytes(drift.SerializeToString())
    found = read_anomalies(str(tmp_path), ["train_train"], SPLIT_PAIR_DIR)
    assert list(found) == ["train_train"]
    report = format_report(found, "drift:")
    assert report.splitlines() == [
        "drift:", "  [train_train] feature 'label': High Linfty distance between current and "
                  "previous: The Linfty distance between current and previous is 0.12."]
