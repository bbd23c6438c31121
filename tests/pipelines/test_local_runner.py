"""Progress lines and the run summary, from LocalDagRunner's own log records."""

from __future__ import annotations

import io
import logging
from pathlib import Path

from pipelines.local_runner import ComponentRun, ProgressReporter, RunResult, format_summary


def _record(msg, *args):
    return logging.LogRecord("absl", logging.INFO, __file__, 1, msg, args, None)


def test_one_progress_line_per_component_with_cache_state():
    out = io.StringIO()
    reporter = ProgressReporter(["CsvExampleGen", "Trainer"], out)
    reporter.emit(_record("Component %s is running.", "CsvExampleGen"))
    reporter.emit(_record("A cached execution %d is used.", 3))
    reporter.emit(_record("Component %s is finished.", "CsvExampleGen"))
    reporter.emit(_record("Component %s is running.", "Trainer"))
    reporter.emit(_record("unrelated %s", "noise"))
    reporter.emit(_record("Component %s is finished.", "Trainer"))
    lines = out.getvalue().splitlines()
    assert len(lines) == 2
    assert lines[0].startswith("[1/2] CsvExampleGen") and lines[0].endswith("cached")
    assert lines[1].startswith("[2/2] Trainer") and "done in" in lines[1]
    assert [run.cached for run in reporter.runs] == [True, False]


def test_summary_names_version_metric_path_and_time():
    result = RunResult(pipeline_name="p", model_name="half_plus_two", wall_seconds=12.34,
                       components=[ComponentRun("Pusher")], blessed=True,
                       metrics={"mean_squared_error": 2e-9}, pushed=True, version=4,
                       model_path=Path("/repo/half_plus_two/4"))
    summary = format_summary(result, {"mean_squared_error": "< 0.0001"})
    assert "pushed version 4" in summary
    assert "mean_squared_error = 2e-09 (gate: < 0.0001)" in summary
    assert "/repo/half_plus_two/4" in summary
    assert "12.3s" in summary


def test_summary_says_why_nothing_was_pushed():
    result = RunResult(pipeline_name="p", model_name="m", wall_seconds=1.0, components=[],
                       blessed=False, validation_failures=["mean_squared_error 0.3 > 0.0001"])
    summary = format_summary(result, {})
    assert "NOT pushed" in summary
    assert "not blessed" in summary and "0.3 > 0.0001" in summary
