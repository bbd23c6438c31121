"""The record of the server `up` started, so later processes (`status`, `wait`, `down`, the
pipeline runner) find it. One JSON file in the configured state directory, written
atomically; the directory also holds the generated models.config and the process log.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Dict, Optional, Tuple

from serving.files import write_atomically
from serving.lifecycle.config import Addresses

STATE_FILENAME = "server.json"


@dataclasses.dataclass
class ServerState:
    backend: str                 # "docker" or "process"
    handle: str                  # container id, or pid
    name: str                    # container name, or the server's command line marker
    image: str                   # docker image ("" for process)
    repository: str              # host path of the model repository
    models: Tuple[str, ...]
    addresses: Addresses
    state_dir: str
    model_config_path: str = ""  # host path of the generated models.config, if any
    # Server-side base path per model (/models/NAME in a container, host path otherwise).
    base_paths: Dict[str, str] = dataclasses.field(default_factory=dict)
    config_poll_seconds: float = 0.0
    started_at: float = 0.0
    log_path: str = ""
    docker_url: str = ""         # the daemon `up` talked to ("" = the SDK's default)
    # swarm: the replicas asked for, how clients reach them and why, the balancer's pid.
    replicas: int = 1
    endpoint_mode: str = ""
    balancer_pid: int = 0

    def to_json(self) -> dict:
        d = dataclasses.asdict(self)
        d["models"] = list(self.models)
        d["addresses"] = self.addresses.to_json()
        return d

    @classmethod
    def from_json(cls, d: dict) -> "ServerState":
        d = dict(d)
        a = d.pop("addresses")
        d["addresses"] = Addresses(a["host"], int(a["grpc_port"]), int(a["rest_port"]))
        d["models"] = tuple(d["models"])
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})


def state_path(state_dir: Path) -> Path:
    return Path(state_dir) / STATE_FILENAME


def load(state_dir: Path) -> Optional[ServerState]:
    path = state_path(state_dir)
    try:
        return ServerState.from_json(json.loads(path.read_text()))
    except FileNotFoundError:
        return None


def save(state: ServerState) -> None:
    write_atomically(state_path(Path(state.state_dir)), json.dumps(state.to_json(), indent=2))


def clear(state_dir: Path) -> None:
    try:
        state_path(state_dir).unlink()
    except FileNotFoundError:
        pass
