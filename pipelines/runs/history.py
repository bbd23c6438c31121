"""The run history of a model, kept in ML Metadata beside TFX's own records.

At the end of every run (`run`, `retrain`, the notebook's push) the runner records on the
run's `pipeline_run` context how it ended and a compact summary (spans, metrics, pushed
version, warm start; a notebook experiment's hyperparameters). `python -m pipelines
history NAME` lists those runs from every pipeline of the model under the pipeline root
(`NAME`, `NAME_retrain` and the notebook's `NAME_notebook`); the retraining command reads
the newest of them to decide whether a span is new.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
from pathlib import Path
from typing import Any, Dict, List, Optional, Set

from pipelines.runs import metadata
from pipelines.config import RunConfig
from pipelines.runs.local import RunResult
from pipelines.outcomes import ABANDONED, DISK_FULL, ERROR, KILLED, Outcome

SUMMARY = "toolkit_summary"
SPAN = "toolkit_span"
SPAN_FINGERPRINT = "toolkit_span_fingerprint"


@dataclasses.dataclass
class RunRecord:
    """One run as `history` shows it."""

    pipeline: str
    run_id: str
    started: str                   # ISO 8601, local time
    outcome: str                   # an Outcome name ("killed": recorded by the next run), or
    #                                "incomplete" (still running, or died with no run since)
    reason: str = ""
    spans: List[int] = dataclasses.field(default_factory=list)
    metrics: Dict[str, float] = dataclasses.field(default_factory=dict)
    blessed: Optional[bool] = None
    pushed_version: Optional[int] = None
    warm_start_version: Optional[int] = None
    infra_validation: str = ""
    span: Optional[int] = None     # the newest span this run ingested (retraining)
    span_fingerprint: str = ""
    # What a notebook experiment changed from the Trainer's defaults ({} for the pipelines).
    hyperparameters: Dict[str, Any] = dataclasses.field(default_factory=dict)

    def to_json(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)

    def shown_spans(self) -> List[int]:
        """The spans trained on, else the span ingested; [] for a run without spans."""
        return self.spans if self.spans and self.spans != [0] else [self.span] if self.span else []


def record_run(metadata_path: Path, run_id: Optional[str], outcome: Outcome, reason: str = "",
               result: Optional[RunResult] = None, span: Optional[int] = None,
               span_fingerprint: str = "",
               hyperparameters: Optional[Dict[str, Any]] = None) -> None:
    """Write how run `run_id` ended onto its context (no-op for a run that never started).
    Raises NotRecorded, saying why, when the store cannot take it (its disk is full, another
    process holds it locked)."""
    if not run_id or not Path(metadata_path).exists():
        return
    try:
        _record_run(metadata_path, run_id, outcome, reason, result, span, span_fingerprint,
                    hyperparameters)
    except Exception as e:
        raise NotRecorded(
            f"the run's outcome ({outcome.name}) could not be recorded in the ML Metadata "
            f"store {Path(metadata_path).absolute()}: {metadata.describe_error(e, metadata_path)}; "
            f"`history` shows the run as incomplete") from e


class NotRecorded(RuntimeError):
    """A run's outcome that its ML Metadata store could not take."""


def record_run_or_note(metadata_path: Path, run_id: Optional[str], outcome: Outcome,
                       reason: str = "", result: Optional[RunResult] = None,
                       **facts) -> str:
    """record_run for a run whose outcome stands whether or not the store takes it (pushed,
    rolled back, not blessed...): "" when recorded, else a warning that says why not. The
    run's exit code stays its outcome's; only `history` misses it."""
    try:
        record_run(metadata_path, run_id, outcome, reason, result, **facts)
    except NotRecorded as e:
        return f"warning: the run ended {outcome.name}, but `history` will not show it: {e}"
    return ""


def _record_run(metadata_path, run_id, outcome, reason, result, span, span_fingerprint,
                hyperparameters) -> None:
    store = metadata.open_store(metadata_path, readonly=False)
    context = store.get_context_by_type_and_name(metadata.RUN_CONTEXT_TYPE, run_id)
    if context is None:
        return
    summary = {}
    if result is not None:
        summary = {"spans": result.spans, "metrics": result.metrics, "blessed": result.blessed,
                   "warm_start_version": result.warm_start_version,
                   "infra_validation": result.infra_validation}
    if hyperparameters:
        summary["hyperparameters"] = hyperparameters
    metadata.record(store, context, **{
        metadata.OUTCOME: outcome.name, metadata.REASON: reason[:2000],
        metadata.PUSHED_VERSION: result.version if result and result.pushed else None,
        SPAN: span, SPAN_FINGERPRINT: span_fingerprint or None,
        SUMMARY: json.dumps(summary, sort_keys=True)})


def runs(config: RunConfig, model: str) -> List[RunRecord]:
    """Every run of `model`'s pipelines under the pipeline root, oldest first."""
    records = []
    for pipeline in config.pipelines_of(model):
        path = config.metadata_path(pipeline)
        if path.exists():
            records += _read_runs(path, pipeline)
    return sorted(records, key=lambda r: r.started)


# Runs whose span is tried again: they may have ended before the data gates judged it.
RETRY = (ERROR.name, DISK_FULL.name, ABANDONED.name, KILLED.name, "incomplete")


def last_finished_with(metadata_path: Path, span: int) -> Optional[RunRecord]:
    """The newest run that ingested `span` and ended with an outcome (errors, abandoned and
    killed runs do not count: their span is tried again)."""
    if not Path(metadata_path).exists():
        return None
    done = [r for r in _read_runs(metadata_path, "") if r.span == span and r.outcome not in RETRY]
    return done[-1] if done else None


def judged_spans(metadata_path: Path) -> Set[int]:
    """The spans a run ingested and ended with an outcome: the data gates judged them
    (passed, or stopped them). A span whose run failed, was abandoned or was killed may
    have been ingested by ExampleGen without being judged."""
    if not Path(metadata_path).exists():
        return set()
    return {int(r.span) for r in _read_runs(metadata_path, "")
            if r.span is not None and r.outcome not in RETRY}


def record_killed(config: RunConfig, model: str) -> List[str]:
    """Record as KILLED every run of `model`'s `run` and `retrain` pipelines that never
    recorded an outcome. Only for a caller holding the model's run lock: no other run of
    those pipelines is going, so each of them died before it ended (SIGKILL, the OOM
    killer, a power loss). Returns their run ids. (A notebook's runs take no lock: left
    alone.) Raises NotRecorded, or metadata.StoreError, when the store cannot take it."""
    killed = []
    for pipeline in config.pipelines_of(model)[:2]:
        path = config.metadata_path(pipeline)
        if not path.exists():
            continue
        dead = [c.name for c in metadata.run_contexts(metadata.open_store(path))
                if not metadata.property_value(c, metadata.OUTCOME)]
        for run_id in dead:
            record_run(path, run_id, KILLED, "its process died before the run ended (found "
                                             "by the next run, which took over its lock); "
                                             "nothing it had not finished is served")
        killed += dead
    return killed


def _read_runs(path: Path, pipeline: str) -> List[RunRecord]:
    store = metadata.open_store(path)
    records = []
    for context in metadata.run_contexts(store):
        value = lambda name: metadata.property_value(context, name)  # noqa: E731
        summary = json.loads(value(SUMMARY) or "{}")
        pushed = value(metadata.PUSHED_VERSION)
        records.append(RunRecord(
            pipeline=pipeline, run_id=context.name,
            started=_local_time(context.create_time_since_epoch),
            outcome=value(metadata.OUTCOME) or "incomplete", reason=value(metadata.REASON) or "",
            spans=summary.get("spans", []), metrics=summary.get("metrics", {}),
            blessed=summary.get("blessed"), pushed_version=int(pushed) if pushed else None,
            warm_start_version=summary.get("warm_start_version"),
            infra_validation=summary.get("infra_validation", ""),
            span=value(SPAN), span_fingerprint=value(SPAN_FINGERPRINT) or "",
            hyperparameters=summary.get("hyperparameters", {})))
    return records


def _local_time(millis: int) -> str:
    return datetime.datetime.fromtimestamp(millis / 1000).isoformat(timespec="seconds")


def format_table(records: List[RunRecord], repository: Optional[Path] = None,
                 model: str = "") -> str:
    """A fixed-width table for the console; versions since withdrawn from `repository`
    (rolled back) are marked."""
    from serving.lineage import span_ranges
    from serving.repository import ModelRepository

    withdrawn = set(ModelRepository(repository).rejected_versions(model)) \
        if repository is not None and model else set()

    header = ("started", "pipeline", "spans", "metrics", "blessed", "version", "outcome")
    rows = [header]
    for r in records:
        metrics = ", ".join(f"{k} {v:.4g}" for k, v in sorted(r.metrics.items())) or "-"
        spans = r.shown_spans()
        rows.append((r.started.replace("T", " "), r.pipeline,
                     span_ranges(spans) if spans else "-", metrics,
                     {True: "yes", False: "no", None: "-"}[r.blessed],
                     (f"{r.pushed_version} (withdrawn)" if r.pushed_version in withdrawn
                      else str(r.pushed_version)) if r.pushed_version else "-",
                     r.outcome + (f": {headline(r.reason)}" if r.reason else "")))
    widths = [max(len(row[i]) for row in rows) for i in range(len(header) - 1)]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths)) + "  " + row[-1]
                     for row in rows)


def headline(reason: str, width: int = 100) -> str:
    """The line of a reason worth a table cell: a report's first finding, not its title."""
    lines = [line.strip() for line in reason.splitlines() if line.strip()]
    line = lines[1] if len(lines) > 1 and lines[0].endswith(":") else lines[0]
    return line if len(line) <= width else line[:width - 3] + "..."
