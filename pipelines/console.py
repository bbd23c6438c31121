"""Keep the console readable during a run: progress and summary there, everything else in a log.

This module imports nothing heavy, so it can take over the file descriptors before
TensorFlow is imported and prints its start-up noise.

Each run writes its own log file (`<pipeline root>/<pipeline>/logs/<command>-<time>.log`);
before a run opens its log, the older logs there are rotated: the newest KEEP_LOGS - 1
are kept, fewer when together they exceed MAX_LOGS_BYTES (oldest removed first), so a
model retrained for months keeps a bounded logs directory. A log that cannot be written
(the directory is a file, the disk is full) is a LogError saying what is in the way.
"""

from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path
from typing import Iterator, List, TextIO

from serving import disk

KEEP_LOGS = 50                    # run logs kept per pipeline, this run's included
MAX_LOGS_BYTES = 100 * 1024 ** 2  # and at most this much of older logs
LOG_SUFFIX = ".log"


class LogError(RuntimeError):
    """The run's log cannot be written; nothing has run yet."""


def rotate_logs(log_dir: Path, keep: int = KEEP_LOGS - 1,
                max_bytes: int = MAX_LOGS_BYTES) -> List[Path]:
    """Remove the oldest run logs (`*.log` files) in `log_dir` beyond the newest `keep`,
    and beyond `max_bytes` in all; returns what was removed. Newest by modification time,
    then by name; anything else in the directory is left alone."""
    try:
        logs = [(p.stat(), p) for p in Path(log_dir).iterdir()
                if p.name.endswith(LOG_SUFFIX) and p.is_file() and not p.is_symlink()]
    except OSError:
        return []
    logs.sort(key=lambda entry: (entry[0].st_mtime, entry[1].name), reverse=True)
    removed, total = [], 0
    for index, (stat, path) in enumerate(logs):
        total += stat.st_size
        if index >= keep or total > max_bytes:
            try:
                path.unlink()
                removed.append(path)
            except OSError:
                pass
    return removed


@contextlib.contextmanager
def output_to_log(log_path: Path) -> Iterator[TextIO]:
    """Send everything written to fds 1 and 2 to `log_path`; yield a stream to the console.

    TensorFlow's C++ logging, Beam, and the Trainer's pip and setuptools subprocesses all
    write straight to the file descriptors, so redirecting sys.stdout would not catch them.
    The older logs beside it are rotated first (`rotate_logs`).
    """
    try:
        log_path.parent.mkdir(parents=True, exist_ok=True)
        rotate_logs(log_path.parent)
        log = open(log_path, "ab")
    except OSError as e:
        if e.errno in disk.NO_SPACE_ERRNOS:
            raise disk.DiskFull(log_path, "opening the run's log") from e
        raise LogError(
            f"cannot write the run's log {log_path}: {e.strerror or e}"
            f"{': ' + str(e.filename) if e.filename and str(e.filename) != str(log_path) else ''}"
            f"; make {log_path.parent} a writable directory (move away what is in the way, "
            f"free space), or run with --verbose to send the log to the console") from e
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    console = os.fdopen(os.dup(saved[0]), "w", buffering=1)
    with log:
        os.dup2(log.fileno(), 1)
        os.dup2(log.fileno(), 2)
        try:
            yield console
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            for fd in saved:
                os.close(fd)
            console.close()
