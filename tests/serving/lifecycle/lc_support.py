"""Helpers for the lifecycle tests: versions pushed the Pusher's way (published, or as
candidates), clients that send requests continuously, smoke checks, and checks that
nothing is left behind. Ports, polling, copies and
server processes come from `toolkit_testing`, SavedModels from `saved_models`."""

from __future__ import annotations

import shutil
import threading
import time
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import requests

from saved_models import write_broken_version
from serving.lifecycle import config as C, health
from serving.repository import ModelRepository
from toolkit_testing import publish_copy

MODEL = "half_plus_two"
# y = 0.5 * x + bias; x = 1.0 tells the versions apart.
EXPECTED_Y = {1: 2.5, 2: 3.5}
GARBAGE_BIAS = 7.0  # the "garbage" template: loads, answers y(1.0) = 7.5
GARBAGE_Y = 0.5 + GARBAGE_BIAS


def push(repo_root: Path, template: Path, model: str = MODEL) -> Tuple[int, float]:
    """Publish `template` as the next version, like the Pusher (staging dir + rename).
    Returns (version, monotonic time just after the rename)."""
    return publish_copy(repo_root, model, template)


def push_candidate(repo_root: Path, template: Path, model: str = MODEL) -> int:
    """Publish `template` as a candidate (`<model>/.candidates/N`), as the Pusher does."""
    with ModelRepository(repo_root).publish(model, candidate=True) as pub:
        shutil.copytree(template, pub.staging, dirs_exist_ok=True)
    return pub.version


def push_broken(repo_root: Path, model: str = MODEL, candidate: bool = False) -> int:
    """A version that looks complete (saved_model.pb + variables/) but cannot load."""
    with ModelRepository(repo_root).publish(model, candidate=candidate) as pub:
        write_broken_version(pub.staging)
        (pub.staging / "variables" / "variables.index").write_bytes(b"corrupt")
    return pub.version


def smoke_check_expecting(y_at_1: float, calls: Optional[List[Dict]] = None):
    """A post_push smoke check (rest_url, entry, label) -> SmokeResult that passes when the
    canary answers y(1.0) == `y_at_1`, as a model's eval batch compares against its labels.
    Each call is appended to `calls` with the monotonic time it returned."""
    from pipelines.models.smoke import SmokeResult

    def check(rest_url: str, entry: str, label: str):
        got = health.predict(rest_url, entry, [1.0], label=label)["predictions"][0]
        result = SmokeResult(abs(got - y_at_1) < 1e-6, {"y_at_1": got}, f"y(1.0) == {y_at_1}",
                             1)
        if calls is not None:
            calls.append({"entry": entry, "label": label, "y": got, "done": time.monotonic()})
        return result
    return check


def grpc_predict(grpc_target: str, model: str = MODEL, label: Optional[str] = None,
                 version: Optional[int] = None) -> float:
    """y(1.0) through gRPC Predict, with ModelSpec.version_label or .version when given."""
    import grpc
    from tensorflow_serving.apis import prediction_service_pb2_grpc

    from saved_models import predict_request

    with grpc.insecure_channel(grpc_target) as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        response = stub.Predict(predict_request(model, x=[1.0], label=label, version=version),
                                timeout=30)
    return float(response.outputs["y"].float_val[0])


def rest_predict(rest_url: str, model: str = MODEL, label: Optional[str] = None) -> float:
    """y(1.0) through REST predict, at /labels/<label> when given."""
    return float(health.predict(rest_url, model, [1.0], label=label)["predictions"][0])


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


class ManyClients:
    """`n` threads, each sending REST predicts (x=1.0, no version, no label) back to back on
    its own requests.Session; every outcome is recorded as (sent, answered, y, error), with
    monotonic times."""

    def __init__(self, rest_url: str, n: int = 32, model: str = MODEL):
        self.url = f"{rest_url}/v1/models/{model}:predict"
        self.results: List[Tuple[float, float, Optional[float], str]] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(n)]

    def __enter__(self) -> "ManyClients":
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(60)

    def _run(self) -> None:
        with requests.Session() as session:
            while not self._stop.is_set():
                sent = time.monotonic()
                try:
                    r = session.post(self.url, json={"instances": [1.0]}, timeout=60)
                    y, error = (float(r.json()["predictions"][0]), "") if r.status_code == 200 \
                        else (None, f"HTTP {r.status_code}: {r.text[:200]}")
                except Exception as e:  # noqa: BLE001 - a failed request is what we count
                    y, error = None, f"{type(e).__name__}: {e}"
                with self._lock:
                    self.results.append((sent, time.monotonic(), y, error))

    def wait_for(self, y: float, timeout: float, sent_after: float = 0.0) -> None:
        """Block until a request sent after `sent_after` was answered with `y`."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if any(got == y and sent >= sent_after for sent, _, got, _ in list(self.results)):
                return
            time.sleep(0.05)
        raise AssertionError(f"no answer y={y} within {timeout}s; last: {self.results[-3:]}")

    @property
    def failures(self) -> list:
        return [r for r in self.results if r[3]]

    def answers(self, sent_after: float = float("-inf"), answered_before: float = float("inf")
                ) -> set:
        """The distinct y of requests sent after / answered before the given times."""
        return {y for sent, answered, y, e in list(self.results)
                if not e and sent >= sent_after and answered <= answered_before}
