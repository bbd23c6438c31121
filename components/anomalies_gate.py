"""Data gates: stop the pipeline when the data is bad, before anything is trained on it.

ExampleValidator (schema anomalies) and DistributionValidator (drift against the previous
span) only record what they found; TFX runs the Trainer anyway. AnomaliesGate and
DriftGate turn a non-empty report into a failed run with the report as its message, and
the pipelines make Transform and Trainer wait for them. DriftGate can be told to accept
drift (an operator who has looked at the report), and then only logs it.
"""


import os
from typing import Dict, List

from absl import logging
from tensorflow_metadata.proto.v0 import anomalies_pb2
from tfx import v1 as tfx
from tfx.types import artifact_utils
from tfx.utils import io_utils

ANOMALIES_FILE = "SchemaDiff.pb"


SPLIT_DIR = "Split-{}"            # ExampleValidator: one report per split
SPLIT_PAIR_DIR = "SplitPair-{}"   # DistributionValidator: per (current, baseline) split pair


class DataAnomaliesError(ValueError):
    """The examples do not match the schema; the message is the readable report."""


class DataDriftError(ValueError):
    """The new span's distribution moved beyond a drift threshold; the message is the report."""


def read_anomalies(uri: str, split_names: List[str],
                   directory: str = SPLIT_DIR) -> Dict[str, anomalies_pb2.Anomalies]:
    """{split: Anomalies} for each split that has any anomaly."""
    found = {}
    for split in split_names:
        anomalies = anomalies_pb2.Anomalies()
        path = os.path.join(uri, directory.format(split), ANOMALIES_FILE)
        anomalies.ParseFromString(io_utils.read_bytes_file(path))
        if anomalies.anomaly_info or anomalies.HasField("dataset_anomaly_info"):
            found[split] = anomalies
    return found


def format_report(found: Dict[str, anomalies_pb2.Anomalies],
                  headline: str = "ExampleValidator found anomalies; the run stops before "
                                  "training:") -> str:
    lines = [headline]
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


@tfx.dsl.components.component
def DriftGate(
        anomalies: tfx.dsl.components.InputArtifact[tfx.types.standard_artifacts.ExampleAnomalies],
        accept_drift: tfx.dsl.components.Parameter[bool] = False,
) -> None:
    """Raise DataDriftError if DistributionValidator found drift, unless it is accepted.

    With no previous span (the first run) DistributionValidator compares nothing and
    writes no split pairs, so there is nothing to stop."""
    pairs = artifact_utils.decode_split_names(anomalies.split_names or "[]")
    found = read_anomalies(anomalies.uri, pairs, SPLIT_PAIR_DIR)
    if not found:
        return
    report = format_report(
        {pair.split("_")[0]: a for pair, a in found.items()},
        "DistributionValidator found drift against the previous span; the run stops "
        "before training:")
    if accept_drift:
        logging.warning("Drift accepted by the operator:\n%s", report)
        return
    raise DataDriftError(report)
