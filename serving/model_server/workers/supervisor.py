"""The model process's side of `--front_end_workers=N`: start N front-end worker
processes (`worker.py` says what they do), restart one that exits, drain them on shutdown."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from typing import Dict, Optional

from serving.model_server.config import ServerConfig
from serving.model_server.workers.link import ready_path

log = logging.getLogger("serving.model_server")

RESTART_DELAY_MAX = 30.0  # seconds between restarts of a worker that keeps failing


class Workers:
    """Starts N worker processes, restarts one that dies, and drains them on shutdown."""

    def __init__(self, config: ServerConfig, link_path: str, rest_sock: Optional[socket.socket],
                 prometheus_path: Optional[str]):
        self.config = config
        self.link_path = link_path
        self.rest_sock = rest_sock
        self.prometheus_path = prometheus_path or ""
        self.procs: Dict[int, subprocess.Popen] = {}
        self._stopping = threading.Event()
        self._spawning = threading.Lock()  # no worker is started once stop() has begun
        self._watcher = threading.Thread(target=self._watch, name="workers", daemon=True)

    def _spawn(self, index: int) -> None:
        fd = self.rest_sock.fileno() if self.rest_sock is not None else -1
        config = json.dumps(dataclasses.asdict(self.config))
        self.procs[index] = subprocess.Popen(
            [sys.executable, "-m", "serving.model_server.tf_protos", "serving.model_server.workers.worker",
             config, self.link_path, str(fd), self.prometheus_path],
            pass_fds=() if fd < 0 else (fd,))
        log.info("Started front-end worker %d (pid %d)", index, self.procs[index].pid)

    def start(self, timeout: float = 120.0) -> None:
        """Start them; return once each serves on every port it was given (its ready file:
        `worker.main` writes it after its gRPC and REST servers started)."""
        for i in range(self.config.front_end_workers):
            self._spawn(i)
        deadline = time.monotonic() + timeout
        while not all(os.path.exists(ready_path(self.link_path, p.pid))
                      for p in self.procs.values()):
            dead = {i: p.returncode for i, p in self.procs.items() if p.poll() is not None}
            if dead or time.monotonic() > deadline:
                self.stop(0)
                raise RuntimeError(f"front-end workers did not start (exit codes {dead})")
            time.sleep(0.05)
        self._watcher.start()

    def _watch(self) -> None:
        """Restart a worker that exits; one that keeps failing at once is restarted after a
        delay that doubles each time (up to RESTART_DELAY_MAX s), not in a busy loop."""
        delays = {i: 0.0 for i in self.procs}
        due = {i: 0.0 for i in self.procs}
        while not self._stopping.wait(0.5):
            for i, proc in list(self.procs.items()):
                if proc.poll() is None:
                    if time.monotonic() - due[i] > RESTART_DELAY_MAX:
                        delays[i] = 0.0  # it has served a while: the next exit is news
                    continue
                if time.monotonic() < due[i]:
                    continue
                with self._spawning:
                    if self._stopping.is_set():
                        return
                    log.error("Front-end worker %d (pid %d) exited with %s; restarting it%s",
                              i, proc.pid, proc.returncode,
                              f" after {delays[i]:g} s" if delays[i] else "")
                    try:
                        self._spawn(i)
                    except OSError:
                        log.exception("Front-end worker %d could not be started", i)
                delays[i] = min(max(1.0, 2 * delays[i]), RESTART_DELAY_MAX)
                due[i] = time.monotonic() + delays[i]

    def stop(self, grace: float) -> bool:
        """SIGTERM every worker: each stops accepting and finishes what it is answering.
        True when each of them drained (exit code 0) within `grace` (+5 s to exit). The
        REST socket is closed then."""
        with self._spawning:
            self._stopping.set()
            for proc in self.procs.values():
                if proc.poll() is None:
                    proc.send_signal(signal.SIGTERM)
        if self.rest_sock is not None:  # new connections are refused, not queued
            self.rest_sock.close()
        drained = True
        deadline = time.monotonic() + grace + 5.0
        for proc in self.procs.values():
            try:
                drained = proc.wait(max(0.0, deadline - time.monotonic())) == 0 and drained
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
                drained = False
        if self._watcher.is_alive():
            self._watcher.join()
        return drained
