"""The process backend: the embedded model server (`python -m serving.model_server`) as a
child process in its own session, so it outlives the CLI that started it.

It binds 127.0.0.1 only. A pid is trusted only while /proc says it is still our server
(same command line), so `down` never signals a process that merely reused the pid.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, Optional, Tuple

import serving
from serving.lifecycle.config import Addresses, UpConfig
from serving.lifecycle.ports import HOST, ensure_free, pick_free
from serving.lifecycle.state import ServerState

MARKER = "serving.model_server"
LOG_FILENAME = "server.log"
PROJECT_ROOT = Path(serving.__file__).resolve().parents[1]


class ProcessBackend:
    name = "process"

    def base_paths(self, config: UpConfig) -> Dict[str, str]:
        repo = Path(config.repository).absolute()
        return {m: str(repo / m) for m in config.models}

    def config_path_for_server(self, host_path: Path) -> str:
        return str(host_path.absolute())

    def start(self, config: UpConfig, server_args: Tuple[str, ...],
              model_config_host_path: Optional[Path]) -> ServerState:
        ensure_free(config.grpc_port, "--grpc-port")
        ensure_free(config.rest_port, "--rest-port")
        grpc_port = config.grpc_port or pick_free()
        rest_port = config.rest_port or pick_free()
        while rest_port == grpc_port:
            rest_port = pick_free()
        state_dir = Path(config.state_dir).absolute()
        state_dir.mkdir(parents=True, exist_ok=True)
        log_path = state_dir / LOG_FILENAME
        repo = Path(config.repository).absolute()
        # The official image's contract, spelled as flags: the same server_args follow.
        cmd = [sys.executable, "-m", MARKER, f"--port={grpc_port}",
               f"--rest_api_port={rest_port}", f"--host={HOST}"]
        if model_config_host_path is None:
            cmd += [f"--model_name={config.models[0]}",
                    f"--model_base_path={repo / config.models[0]}"]
        cmd += list(server_args)
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(PROJECT_ROOT), env.get("PYTHONPATH", "")) if p)
        env["PYTHONUNBUFFERED"] = "1"
        with open(log_path, "ab") as log_file:
            proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log_file,
                                    stderr=subprocess.STDOUT, cwd=str(state_dir), env=env,
                                    start_new_session=True)
        return ServerState(
            backend=self.name, handle=str(proc.pid), name=" ".join(cmd[1:4]), image="",
            repository=str(repo), models=tuple(config.models),
            addresses=Addresses(HOST, grpc_port, rest_port), state_dir=str(state_dir),
            model_config_path=str(model_config_host_path or ""),
            base_paths=self.base_paths(config), config_poll_seconds=config.config_poll_seconds,
            started_at=time.time(), log_path=str(log_path))

    def is_running(self, state: ServerState) -> bool:
        pid = int(state.handle)
        _reap(pid)
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            return False
        zombie = stat.rsplit(")", 1)[-1].split()[0] == "Z"
        return not zombie and MARKER in cmdline and \
            f"--rest_api_port={state.addresses.rest_port}" in cmdline

    def logs(self, state: ServerState, tail: Optional[int] = None) -> str:
        try:
            lines = Path(state.log_path).read_text(errors="replace").splitlines()
        except OSError:
            return ""
        if tail is not None:
            lines = lines[len(lines) - tail:] if tail else []
        return "\n".join(lines) + ("\n" if lines else "")

    def stop(self, state: ServerState, timeout: float = 30.0) -> None:
        if not self.is_running(state):
            return
        pid = int(state.handle)
        _signal_group(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.is_running(state):
                return
            time.sleep(0.1)
        _signal_group(pid, signal.SIGKILL)
        for _ in range(50):
            if not self.is_running(state):
                return
            time.sleep(0.1)

    def remove_orphans(self, state_dir: Path) -> int:
        return 0  # a process is recorded before `up` returns; nothing else to look for


def _signal_group(pid: int, sig: int) -> None:
    try:
        os.killpg(pid, sig)  # start_new_session: the server leads its own group
    except ProcessLookupError:
        pass


def _reap(pid: int) -> None:
    """Collect our own exited child, if it is one, so it does not linger as a zombie."""
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass
