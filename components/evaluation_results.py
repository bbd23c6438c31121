"""What the Evaluator decided, read back from its `evaluation` artifact (TFMA's files).

The run summary, the lineage record and `python -m pipelines history` all show the same
three things: blessed or not, the candidate's overall metrics, and each failed gate.
"""

from __future__ import annotations

import dataclasses
from typing import Dict, List, Optional


@dataclasses.dataclass
class Evaluation:
    blessed: Optional[bool] = None
    metrics: Dict[str, float] = dataclasses.field(default_factory=dict)
    failures: List[str] = dataclasses.field(default_factory=list)


def read_evaluation(uri: str) -> Evaluation:
    """The candidate's overall-slice metrics and the validation outcome at `uri`."""
    import tensorflow_model_analysis as tfma  # heavy; only once a run is over
    from google.protobuf import text_format

    result = Evaluation()
    validation = tfma.load_validation_result(uri)
    result.blessed = bool(validation.validation_ok)
    for failure in validation.metric_validations_per_slice:
        for detail in failure.failures:
            threshold = text_format.MessageToString(detail.metric_threshold, as_one_line=True)
            result.failures.append(
                f"{detail.metric_key.name} = {detail.metric_value.double_value.value:.6g} "
                f"fails {{{threshold}}}" + (f": {detail.message}" if detail.message else ""))
    for slice_metrics in tfma.load_metrics(uri):
        if slice_metrics.slice_key.ByteSize():  # overall slice only
            continue
        for entry in slice_metrics.metric_keys_and_values:
            candidate = entry.key.model_name in ("", "candidate") and not entry.key.is_diff
            if candidate and entry.value.HasField("double_value"):
                result.metrics[entry.key.name] = entry.value.double_value.value
    return result
