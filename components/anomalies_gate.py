"""AnomaliesGate: stop the pipeline when ExampleValidator found anomalies.

ExampleValidator only records anomalies; TFX runs the Trainer anyway. This component
turns a non-empty anomalies report into a failed run with the report as its message,
and the pipelines make Transform and Trainer wait for it.
"""


import os
from typing import Dict, List

from tensorflow_metadata.proto.v0 import anomalies_pb2
from tfx import v1 as tfx
from tfx.types import artifact_utils
from tfx.utils import io_utils

ANOMALIES_FILE = "SchemaDiff.pb"


class DataAnomaliesError(ValueError):
    """The examples do not match the schema; the message is the readable report."""


def read_anomalies(uri: str, split_names: List[str]) -> Dict[str, anomalies_pb2.Anomalies]:
    """{split: Anomalies} for each split that has any anomaly."""
    found = {}
    for split in split_names:
        anomalies = anomalies_pb2.Anomalies()
        path = os.path.join(uri, f"Split-{split}", ANOMALIES_FILE)
        anomalies.ParseFromString(io_utils.read_bytes_file(path))
        if anomalies.anomaly_info or anomalies.HasField("dataset_anomaly_info"):
            found[split] = anomalies
    return found


def format_report(found: Dict[str, anomalies_pb2.Anomalies]) -> str:
    lines = ["ExampleValidator found anomalies; the run stops before training:"]
    for split, anomalies in sorted(found.items()):
        for feature, info in sorted(anomalies.anomaly_info.items()):
            reasons = "; ".join(f"{r.short_description}: {r.description}" for r in info.reason)
            lines.append(f"  [{split}] feature '{feature}': {reasons}")
        if anomalies.HasField("dataset_anomaly_info"):
            reasons = "; ".join(r.description for r in anomalies.dataset_anomaly_info.reason)
            lines.append(f"  [{split}] dataset: {reasons}")
    return "\n".join(lines)


@tfx.dsl.components.component
def AnomaliesGate(
        anomalies: tfx.dsl.components.InputArtifact[tfx.types.standard_artifacts.ExampleAnomalies]
) -> None:
    """Raise DataAnomaliesError if any split has anomalies."""
    split_names = artifact_utils.decode_split_names(anomalies.split_names)
    found = read_anomalies(anomalies.uri, split_names)
    if found:
        raise DataAnomaliesError(format_report(found))
