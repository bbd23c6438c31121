"""Run a pipeline with TFX's LocalDagRunner: progress per component, then a summary from MLMD.

The summary is read back from ML Metadata, not from the runner's memory, so a cached
run reports the same version, metric and path as the run that produced them.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Dict, Iterator, List, Optional, TextIO

from absl import logging as absl_logging

from serving.repository import ModelRepository

if TYPE_CHECKING:  # TFX and MLMD import TensorFlow: only when a run starts
    import ml_metadata as mlmd
    from ml_metadata.proto import metadata_store_pb2
    from tfx import v1 as tfx


@dataclasses.dataclass
class ComponentRun:
    node_id: str
    seconds: float = 0.0
    cached: bool = False
    finished: bool = False


@dataclasses.dataclass
class RunResult:
    """What a run produced, as recorded in ML Metadata."""

    pipeline_name: str
    model_name: str
    wall_seconds: float
    components: List[ComponentRun]
    blessed: Optional[bool] = None
    metrics: Dict[str, float] = dataclasses.field(default_factory=dict)
    validation_failures: List[str] = dataclasses.field(default_factory=list)
    pushed: bool = False
    push_cached: bool = False
    version: Optional[int] = None
    model_path: Optional[Path] = None


class PipelineFailed(RuntimeError):
    """A component raised; `component` names it so the user knows where to look."""

    def __init__(self, component: Optional[str], cause: BaseException):
        where = f"component {component} failed" if component else "pipeline failed"
        super().__init__(f"{where}: {type(cause).__name__}: {cause}")
        self.component = component


class ProgressReporter(logging.Handler):
    """Turns LocalDagRunner's log records into one progress line per component."""

    _RUNNING = "Component %s is running."
    _FINISHED = "Component %s is finished."
    _CACHED = "A cached execution %d is used."

    def __init__(self, node_ids: List[str], out: TextIO):
        super().__init__(level=logging.INFO)
        self.runs = [ComponentRun(node_id) for node_id in node_ids]
        self._by_id = {run.node_id: run for run in self.runs}
        self._out = out
        self._width = max(map(len, node_ids), default=0)
        self._started = 0.0
        self.current: Optional[ComponentRun] = None

    def emit(self, record: logging.LogRecord) -> None:
        if record.msg == self._RUNNING:
            self.current = self._by_id.get(record.args[0])
            self._started = time.monotonic()
            if self.current and self._out.isatty():
                self._out.write(f"{self._prefix(self.current)} running...\r")
                self._out.flush()
        elif record.msg == self._CACHED and self.current:
            self.current.cached = True
        elif record.msg == self._FINISHED and self.current:
            run = self.current
            run.seconds = time.monotonic() - self._started
            run.finished = True
            state = "cached" if run.cached else f"done in {run.seconds:.1f}s"
            self._out.write(f"{self._prefix(run)} {state}\033[K\n" if self._out.isatty()
                            else f"{self._prefix(run)} {state}\n")
            self._out.flush()
            self.current = None

    def _prefix(self, run: ComponentRun) -> str:
        counter = f"[{self.runs.index(run) + 1}/{len(self.runs)}]"
        return f"{counter:>{2 * len(str(len(self.runs))) + 3}} {run.node_id:<{self._width}}"


def run_pipeline(pipeline: "tfx.dsl.Pipeline", *, model_name: str, repository: ModelRepository,
                 metadata_path: Path, out: TextIO = sys.stdout) -> RunResult:
    """Run `pipeline` to completion and summarise it; raises PipelineFailed on error."""
    from tfx import v1 as tfx

    repository.check_writable(model_name)
    node_ids = [component.id for component in pipeline.components]
    reporter = ProgressReporter(node_ids, out)
    started = time.monotonic()
    with _capture_tfx_logs(reporter):
        try:
            tfx.orchestration.LocalDagRunner().run(pipeline)
        except Exception as e:  # a component's own error, re-raised with its name
            failed = reporter.current.node_id if reporter.current else None
            raise PipelineFailed(failed, e) from e
    result = RunResult(pipeline_name=pipeline.pipeline_info.pipeline_name, model_name=model_name,
                       wall_seconds=time.monotonic() - started, components=reporter.runs)
    _read_outcome(result, metadata_path)
    return result


@contextlib.contextmanager
def _capture_tfx_logs(reporter: ProgressReporter) -> Iterator[None]:
    """Feed absl's INFO records (TFX's component lifecycle) to the reporter."""
    logger = logging.getLogger("absl")
    saved_verbosity = absl_logging.get_verbosity()
    # Through absl's verbosity flag, not logger.setLevel: TFX re-applies the flag mid-run.
    absl_logging.set_verbosity(absl_logging.INFO)
    logger.addHandler(reporter)
    try:
        yield
    finally:
        logger.removeHandler(reporter)
        absl_logging.set_verbosity(saved_verbosity)


def _read_outcome(result: RunResult, metadata_path: Path) -> None:
    store = _metadata_store(metadata_path)
    evaluation = _latest_output(store, result.pipeline_name, "Evaluator", "evaluation")
    if evaluation is not None:
        _read_evaluation(result, evaluation.uri)
    pushed = _latest_output(store, result.pipeline_name, "Pusher", "pushed_model")
    if pushed is not None:
        props = pushed.custom_properties
        result.pushed = props["pushed"].int_value == 1 if "pushed" in props else False
        if result.pushed:
            result.version = int(props["pushed_version"].string_value)
            result.model_path = Path(props["pushed_destination"].string_value)
        reused = props["reused_version"].int_value == 1 if "reused_version" in props else False
        pusher = next((run for run in result.components if run.node_id == "Pusher"), None)
        result.push_cached = bool(pusher and pusher.cached) or reused


def _read_evaluation(result: RunResult, uri: str) -> None:
    import tensorflow_model_analysis as tfma  # heavy; only needed once the run is over
    from google.protobuf import text_format

    validation = tfma.load_validation_result(uri)
    result.blessed = bool(validation.validation_ok)
    for failure in validation.metric_validations_per_slice:
        for detail in failure.failures:
            threshold = text_format.MessageToString(detail.metric_threshold, as_one_line=True)
            result.validation_failures.append(
                f"{detail.metric_key.name} = {detail.metric_value.double_value.value:.6g} "
                f"fails {{{threshold}}}" + (f": {detail.message}" if detail.message else ""))
    for slice_metrics in tfma.load_metrics(uri):
        if slice_metrics.slice_key.ByteSize():  # overall slice only
            continue
        for entry in slice_metrics.metric_keys_and_values:
            candidate = entry.key.model_name in ("", "candidate") and not entry.key.is_diff
            if candidate and entry.value.HasField("double_value"):
                result.metrics[entry.key.name] = entry.value.double_value.value


def _metadata_store(metadata_path: Path) -> "mlmd.MetadataStore":
    import ml_metadata as mlmd
    from ml_metadata.proto import metadata_store_pb2

    config = metadata_store_pb2.ConnectionConfig()
    config.sqlite.filename_uri = str(metadata_path)
    config.sqlite.connection_mode = metadata_store_pb2.SqliteMetadataSourceConfig.READONLY
    return mlmd.MetadataStore(config)


def _latest_output(store: "mlmd.MetadataStore", pipeline_name: str, node_id: str,
                   output_key: str) -> Optional["metadata_store_pb2.Artifact"]:
    """The `output_key` artifact of the node's most recent execution (cached ones included)."""
    from ml_metadata.proto import metadata_store_pb2

    context = store.get_context_by_type_and_name("node", f"{pipeline_name}.{node_id}")
    if context is None:
        return None
    executions = store.get_executions_by_context(context.id)
    if not executions:
        return None
    latest = max(executions, key=lambda e: e.id)
    artifact_ids = [event.artifact_id for event in store.get_events_by_execution_ids([latest.id])
                    if event.type == metadata_store_pb2.Event.OUTPUT
                    and any(step.key == output_key for step in event.path.steps)]
    artifacts = store.get_artifacts_by_id(artifact_ids)
    return artifacts[0] if artifacts else None


def format_summary(result: RunResult, thresholds: Dict[str, str]) -> str:
    """The lines a user reads at the end of a run."""
    lines = [f"{result.model_name}: "
             + (f"pushed version {result.version}" + (" (model unchanged: no new version)"
                                                      if result.push_cached else "")
                if result.pushed else "NOT pushed: " + _why_not_pushed(result))]
    for name, value in sorted(result.metrics.items()):
        gate = f" (gate: {thresholds[name]})" if name in thresholds else ""
        lines.append(f"  eval {name} = {value:.6g}{gate}")
    if result.blessed is not None:
        lines.append(f"  blessed: {'yes' if result.blessed else 'no'}")
    if result.model_path:
        lines.append(f"  model path: {result.model_path}")
    lines.append(f"  wall time: {result.wall_seconds:.1f}s")
    return "\n".join(lines)


def _why_not_pushed(result: RunResult) -> str:
    if result.blessed is False:
        reasons = "; ".join(result.validation_failures) or "evaluation thresholds not met"
        return f"the model was not blessed by the Evaluator ({reasons})"
    return "the Pusher did not push (see the log with --verbose)"
