"""One run of a model at a time: an flock on `<pipeline root>/.locks/<model>.lock`.

The kernel releases an flock when its process dies, however it dies, so a lock left by a
run killed with SIGKILL is free again at once; the file still names that run, which lets
the next run say whose lock it took over. A second run while one is going finds the lock
held and is told which run holds it (pid, start time, command).
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import json
import os
import socket
import sys
import time
from pathlib import Path
from typing import Iterator, Optional

LOCK_DIR = ".locks"


@dataclasses.dataclass(frozen=True)
class Holder:
    pid: int
    started: float
    host: str
    command: str

    def describe(self) -> str:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(self.started))
        return f"pid {self.pid} on {self.host}, started {when}: {self.command}"


class Locked(RuntimeError):
    """Another run of the same model holds the lock."""

    def __init__(self, model: str, path: Path, holder: Optional[Holder]):
        who = holder.describe() if holder else "a run that did not say who it is"
        super().__init__(f"another run of {model} is in progress ({who}); lock {path}")
        self.holder = holder


def lock_path(pipeline_root: Path, model: str) -> Path:
    return Path(pipeline_root).absolute() / LOCK_DIR / f"{model}.lock"


@contextlib.contextmanager
def hold(pipeline_root: Path, model: str, log=None) -> Iterator[Optional[Holder]]:
    """Hold the model's run lock for the `with` block; raises Locked when it is taken.
    Yields the holder recorded by a previous run that died holding it, if any."""
    path = lock_path(pipeline_root, model)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise Locked(model, path, _read(fd)) from None
        stale = _read(fd)
        if stale is not None and log is not None:
            log(f"took over the lock of a run that is gone ({stale.describe()})")
        me = Holder(os.getpid(), time.time(), socket.gethostname(), " ".join(sys.argv))
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(dataclasses.asdict(me)).encode(), 0)
        try:
            yield stale
        finally:
            os.ftruncate(fd, 0)  # a clean exit leaves no holder behind
    finally:
        os.close(fd)  # releases the flock


def _read(fd: int) -> Optional[Holder]:
    try:
        data = json.loads(os.pread(fd, 65536, 0).decode() or "null")
        return Holder(**data) if data else None
    except (ValueError, TypeError):
        return None
