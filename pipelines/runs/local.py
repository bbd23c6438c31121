"""Run a pipeline with TFX's LocalDagRunner: progress per component, then a summary from MLMD.

The summary is read back from ML Metadata, from the executions of this very run (a
cached component's execution is recorded in the run too), not from the runner's memory,
so a cached run reports the same version, metric and path as the run that produced them.
Progress: one line per component from LocalDagRunner's own log records, and under the
Trainer its epochs (and, on a terminal, the step within the epoch) from the
`components.training_progress` records the Trainer module files emit.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Dict, Iterator, List, Optional, TextIO

from absl import logging as absl_logging

from pipelines.runs import interrupts
from serving import disk
from serving.lineage import span_ranges
from serving.repository import ModelRepository

if TYPE_CHECKING:  # TFX and MLMD import TensorFlow: only when a run starts
    from tfx import v1 as tfx

EVALUATOR, PUSHER, TRAINER, INFRA_VALIDATOR = "Evaluator", "Pusher", "Trainer", "InfraValidator"


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
    run_id: str = ""
    blessed: Optional[bool] = None
    metrics: Dict[str, float] = dataclasses.field(default_factory=dict)
    validation_failures: List[str] = dataclasses.field(default_factory=list)
    pushed: bool = False
    push_cached: bool = False
    version: Optional[int] = None
    model_path: Optional[Path] = None
    spans: List[int] = dataclasses.field(default_factory=list)
    # The Trainer's base model, when it had one: its artifact and the version it was pushed as.
    warm_start_uri: Optional[str] = None
    warm_start_version: Optional[int] = None
    # "passed", "FAILED", or "skipped: <why>"; "" when the pipeline has no such step.
    infra_validation: str = ""


class PipelineFailed(RuntimeError):
    """A component raised; `component` names it so the user knows where to look, and
    `run_id` is the failed run's (None if it failed before any component started)."""

    def __init__(self, component: Optional[str], cause: BaseException,
                 run_id: Optional[str] = None, pipeline_root: Optional[str] = None,
                 metadata_path: Optional[Path] = None):
        where = f"component {component} failed" if component else "pipeline failed"
        # A full disk, named (filesystem, free space, path) whatever error type said it.
        self.disk_full = disk.as_disk_full(cause, pipeline_root or "/",
                                           f"in {component or 'the run'}",
                                           database=metadata_path)
        why = self.disk_full if self.disk_full is not None else f"{type(cause).__name__}: {cause}"
        if self.disk_full is None and metadata_path is not None:
            from pipelines.runs import metadata

            if metadata.is_locked_error(cause):  # another process held the store too long
                why = f"{why}: the ML Metadata store {Path(metadata_path).absolute()}: " \
                      f"{metadata.describe_error(cause, metadata_path)}"
        super().__init__(f"{where}: {why}")
        self.component = component
        self.cause = cause
        self.run_id = run_id
        self.not_recorded = ""  # why its outcome could not be recorded, if it could not


class ProgressReporter(logging.Handler):
    """Turns LocalDagRunner's log records into one progress line per component, and the
    Trainer's progress records into lines under it."""

    _RUNNING = "Component %s is running."
    _FINISHED = "Component %s is finished."
    _CACHED = "A cached execution %d is used."

    TICK_SECONDS = 1.0  # on a terminal, the running component's line counts its seconds

    def __init__(self, node_ids: List[str], out: TextIO):
        super().__init__(level=logging.INFO)
        self.runs = [ComponentRun(node_id) for node_id in node_ids]
        self._by_id = {run.node_id: run for run in self.runs}
        self._out = out
        self._tty = out.isatty()
        self._width = max(map(len, node_ids), default=0)
        self._started = 0.0
        self._last_write = 0.0
        self._write_lock = threading.RLock()
        self._stop_ticking = threading.Event()
        self.current: Optional[ComponentRun] = None

    def start_ticking(self) -> None:
        """On a terminal, rewrite the running component's line with its elapsed time
        every second (unless the Trainer's own progress is being shown)."""
        if self._tty:
            threading.Thread(target=self._tick, name="progress", daemon=True).start()

    def stop_ticking(self) -> None:
        self._stop_ticking.set()

    def _tick(self) -> None:
        while not self._stop_ticking.wait(self.TICK_SECONDS):
            with self._write_lock:
                run = self.current
                if run is not None and time.monotonic() - self._last_write >= self.TICK_SECONDS:
                    self._write(f"{self._prefix(run)} running... "
                                f"{time.monotonic() - self._started:.0f}s\033[K\r")

    def emit(self, record: logging.LogRecord) -> None:
        kind = getattr(record, "progress", None)
        if kind is not None:
            self._progress(kind, record.getMessage())
        elif record.msg == self._RUNNING:
            self.current = self._by_id.get(record.args[0])
            self._started = time.monotonic()
            if self.current and self._tty:
                self._write(f"{self._prefix(self.current)} running...\r")
        elif record.msg == self._CACHED and self.current:
            self.current.cached = True
        elif record.msg == self._FINISHED and self.current:
            run = self.current
            run.seconds = time.monotonic() - self._started
            run.finished = True
            state = "cached" if run.cached else f"done in {run.seconds:.1f}s"
            self._write(f"{self._prefix(run)} {state}" + ("\033[K\n" if self._tty else "\n"))
            self.current = None

    def fail(self) -> None:
        """Close the current component's line: it raised."""
        if self.current is not None:
            seconds = time.monotonic() - self._started
            self._write(f"{self._prefix(self.current)} FAILED after {seconds:.1f}s"
                        + ("\033[K\n" if self._tty else "\n"))

    def _progress(self, kind: str, message: str) -> None:
        indent = " " * (len(self._prefix(self.runs[0])) + 1) if self.runs else "  "
        if kind == "step":  # only where it can be overwritten in place
            if self._tty:
                self._write(f"{indent}{message}\033[K\r")
        else:
            self._write(f"{indent}{message}" + ("\033[K\n" if self._tty else "\n"))

    def _write(self, text: str) -> None:
        with self._write_lock:
            self._out.write(text)
            self._out.flush()
            self._last_write = time.monotonic()

    def _prefix(self, run: ComponentRun) -> str:
        counter = f"[{self.runs.index(run) + 1}/{len(self.runs)}]"
        return f"{counter:>{2 * len(str(len(self.runs))) + 3}} {run.node_id:<{self._width}}"


def run_pipeline(pipeline: "tfx.dsl.Pipeline", *, model_name: str, repository: ModelRepository,
                 metadata_path: Path, out: TextIO = sys.stdout) -> RunResult:
    """Run `pipeline` to completion and summarise it; raises PipelineFailed on error."""
    from tfx import v1 as tfx

    repository.check_writable(model_name)
    before = _run_ids(metadata_path)
    node_ids = [component.id for component in pipeline.components]
    reporter = ProgressReporter(node_ids, out)
    started = time.monotonic()
    with _capture_progress(reporter):
        try:
            tfx.orchestration.LocalDagRunner().run(pipeline)
        except Exception as e:  # a component's own error, re-raised with its name
            reporter.fail()
            failed = reporter.current.node_id if reporter.current else None
            raise PipelineFailed(failed, e, _new_run_id(metadata_path, before),
                                 pipeline.pipeline_info.pipeline_root, metadata_path) from e
        except interrupts.RunAbandoned as e:  # a signal: say which run it stopped, if any
            reporter.fail()
            e.run_id = _new_run_id(metadata_path, before)
            raise
    result = RunResult(pipeline_name=pipeline.pipeline_info.pipeline_name, model_name=model_name,
                       wall_seconds=time.monotonic() - started, components=reporter.runs)
    _read_outcome(result, metadata_path, before, repository)
    return result


def _new_run_id(metadata_path: Path, before) -> Optional[str]:
    """The run TFX began since the run ids `before` were taken; None if it began none."""
    from pipelines.runs import metadata

    try:
        run = metadata.new_run(metadata.open_store(metadata_path), before) \
            if metadata_path.exists() else None
    except Exception:  # a store that failed with the run (full disk, locked): no run id
        return None
    return run.name if run else None


def _run_ids(metadata_path: Path):
    from pipelines.runs import metadata

    return metadata.run_context_ids(metadata.open_store(metadata_path)) \
        if metadata_path.exists() else set()


@contextlib.contextmanager
def _capture_progress(reporter: ProgressReporter) -> Iterator[None]:
    """Feed absl's INFO records (TFX's component lifecycle) and the Trainer's progress
    records to the reporter."""
    from components.training_progress import PROGRESS_LOGGER  # imports Keras: not before

    absl_logger = logging.getLogger("absl")
    progress_logger = logging.getLogger(PROGRESS_LOGGER)
    saved_verbosity = absl_logging.get_verbosity()
    saved_level = progress_logger.level
    # Through absl's verbosity flag, not logger.setLevel: TFX re-applies the flag mid-run.
    absl_logging.set_verbosity(absl_logging.INFO)
    progress_logger.setLevel(logging.INFO)
    absl_logger.addHandler(reporter)
    progress_logger.addHandler(reporter)
    reporter.start_ticking()
    try:
        yield
    finally:
        reporter.stop_ticking()
        absl_logger.removeHandler(reporter)
        progress_logger.removeHandler(reporter)
        progress_logger.setLevel(saved_level)
        absl_logging.set_verbosity(saved_verbosity)


def _read_outcome(result: RunResult, metadata_path: Path, before,
                  repository: ModelRepository) -> None:
    from components.span_window import span_of
    from pipelines.runs import metadata
    from tfx.types import artifact_utils

    store = metadata.open_store(metadata_path)
    run = metadata.new_run(store, before)
    if run is None:
        return
    result.run_id = run.name

    def node(node_id):
        return metadata.node_run(store, run, result.pipeline_name, node_id)

    trainer = node(TRAINER)
    if trainer is not None:
        examples = [artifact_utils.deserialize_artifact(_type(store, a), a)
                    for a in trainer.inputs.get("examples", [])]
        result.spans = sorted({span_of(e) for e in examples})
        base = trainer.inputs.get("base_model")
        if base:
            result.warm_start_uri = base[0].uri
            result.warm_start_version = repository.version_from_model(result.model_name,
                                                                      base[0].uri)
    evaluator = node(EVALUATOR)
    if evaluator is not None and evaluator.outputs.get("evaluation"):
        add_evaluation(result, evaluator.outputs["evaluation"][0].uri)
    infra = node(INFRA_VALIDATOR)
    if infra is not None and infra.outputs.get("blessing"):
        blessed = metadata.property_value(infra.outputs["blessing"][0], "blessed")
        result.infra_validation = "passed" if blessed == 1 else "FAILED"
    pusher = node(PUSHER)
    if pusher is not None and pusher.outputs.get("pushed_model"):
        pusher_run = next((r for r in result.components if r.node_id == PUSHER), None)
        add_push(result, pusher.outputs["pushed_model"][0],
                 cached=bool(pusher_run and pusher_run.cached))


def add_evaluation(result: RunResult, evaluation_uri: str) -> None:
    """What the Evaluator decided (its `evaluation` artifact at `evaluation_uri`)."""
    from components.evaluation_results import read_evaluation

    evaluation = read_evaluation(evaluation_uri)
    result.blessed, result.metrics = evaluation.blessed, evaluation.metrics
    result.validation_failures = evaluation.failures


def add_push(result: RunResult, pushed, cached: bool = False) -> None:
    """What the Pusher did, from its PushedModel (an MLMD artifact); `cached`: the Pusher's
    execution was reused from an earlier run."""
    from pipelines.runs import metadata

    result.pushed = metadata.property_value(pushed, "pushed") == 1
    if result.pushed:
        result.version = int(metadata.property_value(pushed, "pushed_version"))
        result.model_path = Path(metadata.property_value(pushed, "pushed_destination"))
    reused = metadata.property_value(pushed, "reused_version") == 1
    result.push_cached = cached or reused


def _type(store, artifact):
    return store.get_artifact_types_by_id([artifact.type_id])[0]


def format_summary(result: RunResult, thresholds: Dict[str, str]) -> str:
    """The lines a user reads at the end of a run."""
    lines = [f"{result.model_name}: "
             + (f"pushed version {result.version}" + (" (model unchanged: no new version)"
                                                      if result.push_cached else "")
                if result.pushed else "NOT pushed: " + _why_not_pushed(result))]
    if result.spans and result.spans != [0]:
        lines.append(f"  trained on spans {span_ranges(result.spans)}")
    if result.warm_start_uri:
        source = f"version {result.warm_start_version}" if result.warm_start_version \
            else result.warm_start_uri
        lines.append(f"  warm-started from {source} (the latest blessed model)")
    for name, value in sorted(result.metrics.items()):
        gate = f" (gate: {thresholds[name]})" if name in thresholds else ""
        lines.append(f"  eval {name} = {value:.6g}{gate}")
    if result.blessed is not None:
        lines.append(f"  blessed: {'yes' if result.blessed else 'no'}")
    if result.infra_validation:
        lines.append(f"  infra validation: {result.infra_validation}")
    if result.model_path:
        lines.append(f"  model path: {result.model_path}")
    lines.append(f"  wall time: {result.wall_seconds:.1f}s")
    return "\n".join(lines)


def _why_not_pushed(result: RunResult) -> str:
    if result.blessed is False:
        reasons = "; ".join(result.validation_failures) or "evaluation thresholds not met"
        return f"the model was not blessed by the Evaluator ({reasons})"
    if result.infra_validation == "FAILED":
        return ("InfraValidator could not load the model or get answers from it in the "
                "serving image (see the log with --verbose)")
    return "the Pusher did not push (see the log with --verbose)"
