"""Helpers for the model server tests: a real server process and polling.

`ServerProcess` starts `python -m serving.model_server` on free loopback ports, waits until
its ports accept connections (the server opens them only once its models are AVAILABLE, as
tensorflow_model_server does: a readiness poll, not a sleep) and stops it with SIGTERM.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import List, Optional

import pytest

ROOT = Path(__file__).resolve().parents[3]
SERVER_ENV = {
    # Bound the server's CPU use: the machine is shared with TFX training.
    "TF_NUM_INTRAOP_THREADS": "1", "TF_NUM_INTEROP_THREADS": "1",
    "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONUNBUFFERED": "1",
}


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(predicate, timeout: float = 30.0, interval: float = 0.05, what: str = ""):
    """Poll `predicate` until truthy; return its value or fail the test with `what`."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what or predicate}")
        time.sleep(interval)


class ServerProcess:
    """A `python -m serving.model_server` child process on loopback ports."""

    def __init__(self, *flags: str, rest: bool = True, env: Optional[dict] = None):
        self.grpc_port = free_port()
        self.rest_port = free_port() if rest else 0
        self.flags = [f"--port={self.grpc_port}", f"--rest_api_port={self.rest_port}",
                      "--host=127.0.0.1", "--tensorflow_intra_op_parallelism=1",
                      "--tensorflow_inter_op_parallelism=1", *flags]
        self.env = dict(os.environ, **SERVER_ENV, **(env or {}))
        self.proc: Optional[subprocess.Popen] = None
        self._lines: List[str] = []
        self._lock = threading.Lock()

    @property
    def rest_url(self) -> str:
        return f"http://127.0.0.1:{self.rest_port}"

    @property
    def grpc_target(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    def start(self) -> "ServerProcess":
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "serving.model_server", *self.flags], cwd=ROOT, env=self.env,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        threading.Thread(target=self._pump, daemon=True).start()
        return self

    def _pump(self) -> None:
        for line in self.proc.stdout:
            with self._lock:
                self._lines.append(line)

    @property
    def output(self) -> str:
        with self._lock:
            return "".join(self._lines)

    def wait_for_log(self, text: str, timeout: float = 30.0) -> None:
        wait_until(lambda: text in self.output or self._died(), timeout, what=f"log {text!r}")
        assert text in self.output, f"server exited before logging {text!r}:\n{self.output}"

    def _died(self) -> bool:
        return self.proc.poll() is not None

    def wait_ready(self, timeout: float = 60.0) -> "ServerProcess":
        """Ready = the gRPC port accepts connections (opened only once models are loaded)."""
        def ready():
            if self._died():
                pytest.fail(f"server exited with {self.proc.returncode}:\n{self.output}")
            try:
                with socket.create_connection(("127.0.0.1", self.grpc_port), timeout=0.2):
                    pass
            except OSError:
                return False
            if self.rest_port:
                try:
                    with socket.create_connection(("127.0.0.1", self.rest_port), timeout=0.2):
                        return True
                except OSError:
                    return False
            return True
        wait_until(ready, timeout, interval=0.1, what="server ready")
        return self

    def stop(self, timeout: float = 30.0) -> int:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else 0
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            pytest.fail(f"server did not exit on SIGTERM:\n{self.output}")


@contextlib.contextmanager
def running_servers():
    """Yields start(*flags) for module-scoped fixtures; stops every server on exit."""
    servers: List[ServerProcess] = []

    def start(*flags: str, wait: bool = True, rest: bool = True, env=None) -> ServerProcess:
        server = ServerProcess(*flags, rest=rest, env=env).start()
        servers.append(server)
        return server.wait_ready() if wait else server

    try:
        yield start
    finally:
        for s in servers:
            s.stop()


def copy_version(templates: Path, base: Path, version, template: str = "hp2_v1") -> Path:
    """Copy a template SavedModel into base/<version> (version may be "00000123")."""
    target = Path(base) / str(version)
    shutil.copytree(templates / template, target)
    return target
