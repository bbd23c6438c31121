"""Helpers for the lifecycle tests: versions pushed the Pusher's way, a client that sends
requests continuously, and checks that nothing is left behind. Ports, polling, copies and
server processes come from `toolkit_testing`, SavedModels from `saved_models`."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import List, Optional, Tuple

import requests

from saved_models import write_broken_version
from serving.lifecycle import config as C
from serving.repository import ModelRepository
from toolkit_testing import publish_copy

MODEL = "half_plus_two"
# y = 0.5 * x + bias; x = 1.0 tells the versions apart.
EXPECTED_Y = {1: 2.5, 2: 3.5}


def push(repo_root: Path, template: Path, model: str = MODEL) -> Tuple[int, float]:
    """Publish `template` as the next version, like the Pusher (staging dir + rename).
    Returns (version, monotonic time just after the rename)."""
    return publish_copy(repo_root, model, template)


def push_broken(repo_root: Path, model: str = MODEL) -> int:
    """A version that looks complete (saved_model.pb + variables/) but cannot load."""
    with ModelRepository(repo_root).publish(model) as pub:
        write_broken_version(pub.staging)
        (pub.staging / "variables" / "variables.index").write_bytes(b"corrupt")
    return pub.version


def labelled_containers(state_dir: Path) -> List[str]:
    import docker
    client = docker.from_env(timeout=10)
    return [c.name for c in client.containers.list(all=True, filters={"label": [
        f"{C.LABEL_MANAGED}=true", f"{C.LABEL_STATE_DIR}={Path(state_dir).absolute()}"]})]


def pid_alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"


class ContinuousClient:
    """Sends REST predicts (x=1.0) back to back in a thread; records every outcome."""

    def __init__(self, rest_url: str, model: str = MODEL, pause: float = 0.01):
        self.url = f"{rest_url}/v1/models/{model}:predict"
        self.pause = pause
        self.results: List[Tuple[float, Optional[float], str]] = []  # (t, y, error)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> "ContinuousClient":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(30)

    def _run(self) -> None:
        session = requests.Session()
        while not self._stop.is_set():
            t = time.monotonic()
            try:
                r = session.post(self.url, json={"instances": [1.0]}, timeout=30)
                if r.status_code == 200:
                    self.results.append((t, float(r.json()["predictions"][0]), ""))
                else:
                    self.results.append((t, None, f"HTTP {r.status_code}: {r.text[:200]}"))
            except Exception as e:  # noqa: BLE001 - a failed request is what we count
                self.results.append((t, None, f"{type(e).__name__}: {e}"))
            time.sleep(self.pause)

    def wait_for(self, y: float, timeout: float) -> float:
        """Block until a response carries `y`; returns when it was sent."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for t, got, _ in list(self.results):
                if got == y:
                    return t
            time.sleep(0.05)
        raise AssertionError(f"no response with y={y} within {timeout}s; "
                             f"last: {self.results[-3:]}")

    @property
    def failures(self) -> List[Tuple[float, Optional[float], str]]:
        return [r for r in self.results if r[2]]

    def values(self) -> List[float]:
        return [y for _, y, e in self.results if not e]
