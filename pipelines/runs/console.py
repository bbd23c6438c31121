"""Keep the console readable during a run: progress and summary there, everything else in a log.

This module imports nothing heavy, so it can take over the file descriptors before
TensorFlow is imported and prints its start-up noise.

Each run writes its own log file (`<pipeline root>/<pipeline>/logs/<command>-<time>.log`);
before a run opens its log, the older logs there are rotated as logrotate's `compress`
would: each older `*.log` is gzipped in place (`<name>.log.gz`; read it with `zless`),
then the newest KEEP_LOGS - 1 are kept, fewer when together they exceed MAX_LOGS_BYTES
(oldest removed first), so a model retrained for months keeps a bounded logs directory.
A TFX run log is mostly ML Metadata protos and compresses about 13 to 1 (291 KB to
22 KB for a half_plus_two retrain). Rotation runs under the model's run lock, so no
other run is writing the logs it compresses. A log that cannot be written (the
directory is a file, the disk is full) is a LogError saying what is in the way.
"""

from __future__ import annotations

import contextlib
import gzip
import os
import shutil
import sys
from pathlib import Path
from typing import Iterator, List, TextIO

from serving import disk

KEEP_LOGS = 50                    # run logs kept per pipeline, this run's included
MAX_LOGS_BYTES = 100 * 1024 ** 2  # and at most this much of older logs
LOG_SUFFIX = ".log"
COMPRESSED_SUFFIX = LOG_SUFFIX + ".gz"


class LogError(RuntimeError):
    """The run's log cannot be written; nothing has run yet."""


def compress_log(path: Path) -> Path:
    """Gzip one finished run log beside itself (`<name>.log.gz`, same modification time)
    and remove the original; returns the compressed file. Written to a temporary name and
    renamed, so a crash leaves either the log or its whole compressed copy. A log that
    cannot be compressed (no space) stays as it is."""
    target = path.with_name(path.name + ".gz")
    partial = path.with_name(f".{path.name}.gz.partial")
    try:
        stat = path.stat()
        with open(path, "rb") as source, gzip.open(partial, "wb") as sink:
            shutil.copyfileobj(source, sink)
        os.utime(partial, (stat.st_atime, stat.st_mtime))
        os.replace(partial, target)
        path.unlink()
    except OSError:
        with contextlib.suppress(OSError):
            partial.unlink()
        return path
    return target


def _is_log(path: Path) -> bool:
    return (path.name.endswith((LOG_SUFFIX, COMPRESSED_SUFFIX)) and not path.name.startswith(".")
            and path.is_file() and not path.is_symlink())


def rotate_logs(log_dir: Path, keep: int = KEEP_LOGS - 1,
                max_bytes: int = MAX_LOGS_BYTES) -> List[Path]:
    """Remove the oldest run logs (`*.log` and `*.log.gz` files) in `log_dir` beyond the
    newest `keep`, gzip the kept `*.log` ones, then remove the oldest beyond `max_bytes`
    in all (compressed sizes); returns what was removed. Newest by modification time,
    then by name; anything else in the directory is left alone. Call it only while no run
    is writing to `log_dir` (under the run lock)."""
    def newest_first(paths):
        entries = []
        for path in paths:
            with contextlib.suppress(OSError):
                entries.append((path.stat(), path))
        return sorted(entries, key=lambda entry: (entry[0].st_mtime, entry[1].name),
                      reverse=True)

    def remove(path):
        with contextlib.suppress(OSError):
            path.unlink()
            removed.append(path)

    try:
        found = [p for p in Path(log_dir).iterdir() if _is_log(p)]
        for partial in Path(log_dir).glob(".*.gz.partial"):  # a compression cut short
            partial.unlink()
    except OSError:
        return []
    removed: List[Path] = []
    kept = []
    for index, (_, path) in enumerate(newest_first(found)):
        if index >= keep:
            remove(path)
        else:
            kept.append(compress_log(path) if path.name.endswith(LOG_SUFFIX) else path)
    total = 0  # a log found beside its own .gz (a rotation cut short) is counted once
    for stat, path in newest_first(dict.fromkeys(kept)):
        total += stat.st_size
        if total > max_bytes:
            remove(path)
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
