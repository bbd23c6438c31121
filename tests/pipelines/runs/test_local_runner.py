"""Progress lines and the run summary, from LocalDagRunner's own log records."""

from __future__ import annotations

import io
import logging
import types
from pathlib import Path

import pytest

from pipelines.runs import interrupts, local as local_runner, metadata
from pipelines.runs.local import ComponentRun, ProgressReporter, RunResult, format_summary
from serving.repository import ModelRepository
from toolkit_testing import wait_until


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


class _Terminal(io.StringIO):
    def isatty(self):
        return True


def _fit_with_progress(epochs=2, steps=3):
    """A real Keras fit with the Trainer modules' callback, its records fed to a reporter."""
    import numpy as np
    import tf_keras as keras

    from components.training_progress import PROGRESS_LOGGER, ProgressCallback

    records = []
    handler = logging.Handler()
    handler.emit = records.append
    logger = logging.getLogger(PROGRESS_LOGGER)
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        model = keras.Sequential([keras.layers.Dense(1, input_shape=(1,))])
        model.compile("sgd", "mse", metrics=["mae"])
        x = np.arange(12, dtype=np.float32).reshape(-1, 1)
        model.fit(x, 2 * x, batch_size=4, epochs=epochs, verbose=0,
                  callbacks=[ProgressCallback(epochs, steps, "warm-started from v1")])
    finally:
        logger.removeHandler(handler)
    return records


def test_training_progress_shows_every_epoch_under_the_trainer():
    records = _fit_with_progress()
    for out in (io.StringIO(), _Terminal()):
        reporter = ProgressReporter(["Trainer"], out)
        reporter.emit(_record("Component %s is running.", "Trainer"))
        for record in records:
            reporter.emit(record)
        reporter.emit(_record("Component %s is finished.", "Trainer"))
        text = out.getvalue()
        assert "training: warm-started from v1" in text
        assert "epoch 1/2: loss " in text and "epoch 2/2: loss " in text and ", mae " in text
        assert text.rstrip().splitlines()[-1].startswith("[1/1] Trainer")


def test_steps_within_an_epoch_are_shown_only_on_a_terminal():
    step = logging.LogRecord("tfx_toolkit.progress", logging.INFO, __file__, 1,
                             "epoch 1/2 step 7/9: loss 0.5", (), None)
    step.progress = "step"
    plain, terminal = io.StringIO(), _Terminal()
    for out in (plain, terminal):
        ProgressReporter(["Trainer"], out).emit(step)
    assert plain.getvalue() == ""
    assert "epoch 1/2 step 7/9: loss 0.5" in terminal.getvalue()
    assert terminal.getvalue().endswith("\r")


def test_on_a_terminal_the_running_component_counts_its_seconds():
    out = _Terminal()
    reporter = ProgressReporter(["Transform"], out)
    reporter.TICK_SECONDS = 0.05
    reporter.emit(_record("Component %s is running.", "Transform"))
    reporter.start_ticking()
    try:
        wait_until(lambda: out.getvalue().count("running...") >= 3, timeout=5, interval=0.01,
                   what="three ticks")
    finally:
        reporter.stop_ticking()
    assert out.getvalue().count("running...") >= 3
    assert "running... 0s\033[K\r" in out.getvalue()


@pytest.mark.parametrize("tfx_began_a_run", [False, True])
def test_a_signal_names_the_run_it_stopped_never_an_earlier_one(
        tmp_path, monkeypatch, tfx_began_a_run):
    """SIGTERM during LocalDagRunner.run: RunAbandoned carries this run's id, or None when
    TFX had not created its run context yet - never the previous run's, which `retrain`
    would then mark ABANDONED. The store is a real MLMD store holding an earlier run."""
    from tfx import v1 as tfx

    metadata_path = tmp_path / "metadata.sqlite"
    metadata.create_run(metadata.open_store(metadata_path, create=True), "earlier-run")

    def run(self, pipeline):
        if tfx_began_a_run:
            metadata.create_run(metadata.open_store(metadata_path, readonly=False), "this-run")
        raise interrupts.RunAbandoned("SIGTERM")

    monkeypatch.setattr(tfx.orchestration.LocalDagRunner, "run", run)
    with pytest.raises(interrupts.RunAbandoned) as stopped:
        local_runner.run_pipeline(types.SimpleNamespace(components=[]), model_name="m",
                                  repository=ModelRepository(tmp_path / "repo"),
                                  metadata_path=metadata_path, out=io.StringIO())
    assert stopped.value.run_id == ("this-run" if tfx_began_a_run else None)
