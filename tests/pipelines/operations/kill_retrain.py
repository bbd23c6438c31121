"""Kill -9 a retraining run at a chosen step: a helper process for the half_plus_two
retraining scenario (tests/pipelines/operations/test_retrain_kill_e2e.py).

A new `python -m pipelines retrain` process spends most of its first 20 seconds importing
TensorFlow and TFX. This process imports them once, then, for each request read from
stdin (one JSON object a line), forks a child that runs the CLI's main() with the request's
arguments - what `python -m pipelines retrain ...` runs, in a process of its own, in a
process group of its own - and kills that group with SIGKILL as soon as the request's
marker appears: a line in the run's console output or in its log file, or a file created
in a directory (watched with inotify, so a step that lasts milliseconds is caught inside).
It answers each request with one JSON line: whether the child was killed, its pid, and
its exit code when it ended before the marker.

Request: {"argv": [...], "out": file for the child's stdout and stderr, "log_dir": the
pipeline's logs directory, "marker": {"text": "...", "in": "out" | "log"} or
{"created_in": directory, "name": regular expression}, "timeout": seconds}.
"""

from __future__ import annotations

import ctypes
import json
import os
import re
import select
import signal
import struct
import sys
import time
import traceback
from pathlib import Path

IN_CREATE, IN_MOVED_TO = 0x100, 0x80


class DirectoryWatch:
    """inotify on one directory: the names created in (or renamed into) it."""

    def __init__(self, directory: str):
        self._libc = ctypes.CDLL(None, use_errno=True)
        self.fd = self._libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
        if self.fd < 0 or self._libc.inotify_add_watch(
                self.fd, os.fsencode(directory), IN_CREATE | IN_MOVED_TO) < 0:
            raise OSError(ctypes.get_errno(), f"inotify on {directory}")

    def names(self, timeout: float):
        if not select.select([self.fd], [], [], timeout)[0]:
            return []
        data, names = os.read(self.fd, 65536), []
        offset = 0
        while offset < len(data):
            _, _, _, length = struct.unpack_from("iIII", data, offset)
            names.append(data[offset + 16:offset + 16 + length].rstrip(b"\0").decode())
            offset += 16 + length
        return names

    def close(self) -> None:
        os.close(self.fd)


def _child(argv, out: str) -> None:
    """In the forked child: the CLI's main(), its output to `out`; never returns."""
    code = 70
    try:
        os.setpgid(0, 0)
        fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        from pipelines.__main__ import main

        code = main(list(argv))
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else 1
    except BaseException:  # noqa: BLE001 - reported in its output, as the CLI would
        traceback.print_exc()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def _text_seen(path: Path, text: str) -> bool:
    try:
        return text in path.read_text(errors="replace")
    except FileNotFoundError:
        return False


def kill_at(request) -> dict:
    marker, out = request["marker"], Path(request["out"])
    log_dir = Path(request["log_dir"])
    logs_before = set(log_dir.glob("*.log")) if log_dir.is_dir() else set()
    watch = DirectoryWatch(marker["created_in"]) if "created_in" in marker else None
    pattern = re.compile(marker.get("name", "$^"))
    sys.stdout.flush()
    pid = os.fork()
    if pid == 0:
        _child(request["argv"], str(out))
    try:
        os.setpgid(pid, pid)
    except (PermissionError, ProcessLookupError):  # the child got there first
        pass
    started = time.monotonic()
    deadline = started + request.get("timeout", 300)
    seen = ""
    try:
        while time.monotonic() < deadline:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                return {"killed": False, "pid": pid, "exit": os.waitstatus_to_exitcode(status),
                        "seconds": round(time.monotonic() - started, 1)}
            if watch is not None:
                names = [n for n in watch.names(0.02) if pattern.fullmatch(n)]
                if names:
                    seen = names[0]
                    break
                continue
            if marker["in"] == "out":
                files = [out]
            else:
                files = [p for p in log_dir.glob("*.log") if p not in logs_before] \
                    if log_dir.is_dir() else []
            if any(_text_seen(f, marker["text"]) for f in files):
                seen = marker["text"]
                break
            time.sleep(0.02)
        else:
            seen = ""
        os.killpg(pid, signal.SIGKILL)  # kill -9 -PGID: the run and whatever it started
        _, status = os.waitpid(pid, 0)
        return {"killed": bool(seen), "pid": pid, "marker": seen,
                "exit": os.waitstatus_to_exitcode(status),
                "seconds": round(time.monotonic() - started, 1)}
    finally:
        if watch is not None:
            watch.close()


def main() -> None:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow  # noqa: F401 - what each child would import
    import tfx.v1  # noqa: F401
    import pipelines.models.half_plus_two  # noqa: F401
    import pipelines.operations.retrain  # noqa: F401

    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        if line.strip():
            print(json.dumps(kill_at(json.loads(line))), flush=True)


if __name__ == "__main__":
    main()
