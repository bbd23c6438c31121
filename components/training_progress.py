"""Training progress from inside a Trainer module file, for the pipeline runner's console.

The Trainer runs in the pipeline's process, with its output sent to the run's log file.
`ProgressCallback` reports each epoch (loss, accuracy, validation metrics) and, at most a
few times a second, the step within the epoch, as records of the `PROGRESS_LOGGER`
logger carrying a `progress` attribute; the runner (`pipelines/runs/local.py`) renders
them under the Trainer's progress line. With no runner listening they are plain log lines.
"""

from __future__ import annotations

import logging
import time
from typing import Dict, Optional

import tf_keras as keras

PROGRESS_LOGGER = "tfx_toolkit.progress"
STEP_INTERVAL_SECONDS = 0.5

log = logging.getLogger(PROGRESS_LOGGER)


def format_metrics(metrics: Dict[str, float]) -> str:
    return ", ".join(f"{name} {value:.4f}" for name, value in metrics.items())


def _scalars(logs) -> Dict[str, float]:
    return {k: float(v) for k, v in (logs or {}).items() if _is_number(v)}


def _is_number(value) -> bool:
    try:
        float(value)
    except (TypeError, ValueError):
        return False
    return True


class ProgressCallback(keras.callbacks.Callback):
    """Epoch and step progress of `model.fit`, as log records the runner shows."""

    def __init__(self, epochs: int, steps_per_epoch: Optional[int], note: str = ""):
        super().__init__()
        self.epochs = epochs
        self.steps_per_epoch = steps_per_epoch
        self.note = note  # e.g. "warm-started from version 3"
        self._epoch = 0
        self._epoch_started = 0.0
        self._last_step_report = 0.0

    def on_train_begin(self, logs=None):
        if self.note:
            self._emit("note", f"training: {self.note}")

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch
        self._epoch_started = self._last_step_report = time.monotonic()

    def on_train_batch_end(self, batch, logs=None):
        now = time.monotonic()
        if now - self._last_step_report < STEP_INTERVAL_SECONDS:
            return
        self._last_step_report = now
        total = f"/{self.steps_per_epoch}" if self.steps_per_epoch else ""
        self._emit("step", f"epoch {self._epoch + 1}/{self.epochs} step {batch + 1}{total}: "
                           f"{format_metrics(_scalars(logs))}")

    def on_epoch_end(self, epoch, logs=None):
        seconds = time.monotonic() - self._epoch_started
        self._emit("epoch", f"epoch {epoch + 1}/{self.epochs}: "
                            f"{format_metrics(_scalars(logs))} ({seconds:.1f}s)")

    def _emit(self, kind: str, message: str) -> None:
        log.info(message, extra={"progress": kind})
