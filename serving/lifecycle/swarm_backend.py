"""The swarm backend: TF Serving as a Docker Swarm service of N replicas, behind HAProxy.

The service (one per state dir, named like the docker backend's container):
- the serving image (official or stand-in), the repository bind-mounted read-only at
  /models and the state dir's config/ at /serving_config, so every replica polls the same
  models.config (rendered from the rollout records) and a replica started later comes up
  in the current state;
- `--endpoint-mode dnsrr` with each replica's 8500/8501 published in host mode on a port
  of its own: the routing mesh needs IPVS, which not every kernel has (this one has no
  /proc/net/ip_vs; its published ports answer nothing). The rollout commands reach each
  replica through these ports, so a label move is verified on every replica;
- a restart policy (any exit), resource limits, a healthcheck (stand-in image: every
  served model has an AVAILABLE version; the official image has no shell tools, so none),
  and rolling updates that start the new task first and roll back on failure.

Clients use one endpoint: HAProxy (serving/lifecycle/balancer.py) on 127.0.0.1 at the REST
and gRPC ports `up` was given, kept in step with the replicas' ports by a small watcher
process. `swarm init` is run for a single node when the engine is in no swarm (logged).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import List, Optional, Tuple

from docker import errors as docker_errors
from docker import types as docker_types

from serving.lifecycle import config as C
from serving.lifecycle.config import Addresses, UpConfig
from serving.lifecycle.docker_backend import DockerBackend, container_name, _short
from serving.lifecycle.errors import EnvironmentProblem, LifecycleError
from serving.lifecycle.ports import HOST, ensure_free, pick_free
from serving.lifecycle.state import ServerState

log = logging.getLogger("serving.lifecycle")

BALANCER_LOG = "balancer.log"
STANDIN_REPOSITORY = C.STANDIN_IMAGE.split(":")[0]
# Every model in the config has a version AVAILABLE (the stand-in image has Python).
HEALTHCHECK_SCRIPT = (
    "import json,sys,urllib.request as u\n"
    "for m in sys.argv[1:]:\n"
    "    s=json.load(u.urlopen('http://127.0.0.1:8501/v1/models/'+m,timeout=8))\n"
    "    assert any(v['state']=='AVAILABLE' for v in s['model_version_status']),m\n")


@dataclasses.dataclass(frozen=True)
class Replica:
    """One task of the service, as the rollout commands reach it."""

    name: str                 # service.slot
    task_id: str
    node: str
    state: str                # the task's state: running, starting, ...
    health: str               # healthy, starting, unhealthy, "" (no healthcheck)
    addresses: Optional[Addresses]

    def to_json(self) -> dict:
        return {"name": self.name, "task": self.task_id, "node": self.node,
                "state": self.state, "health": self.health,
                "addresses": self.addresses.to_json() if self.addresses else None}


class SwarmBackend(DockerBackend):
    name = "swarm"

    def start(self, config: UpConfig, server_args: Tuple[str, ...],
              model_config_host_path: Optional[Path]) -> ServerState:
        self.require_image(config.image)
        ensure_free(config.grpc_port, "--grpc-port")
        ensure_free(config.rest_port, "--rest-port")
        self._ensure_swarm()
        state_dir = Path(config.state_dir).absolute()
        state_dir.mkdir(parents=True, exist_ok=True)
        name = container_name(state_dir)
        mounts = [docker_types.Mount(C.CONTAINER_MODEL_BASE_PATH,
                                     str(Path(config.repository).absolute()), type="bind",
                                     read_only=True)]
        if model_config_host_path is not None:
            mounts.append(docker_types.Mount(C.CONTAINER_CONFIG_DIR,
                                             str(model_config_host_path.parent.absolute()),
                                             type="bind", read_only=True))
        try:
            self.client.services.create(
                config.image, args=list(server_args), name=name,
                labels={C.LABEL_MANAGED: "true", C.LABEL_STATE_DIR: str(state_dir)},
                container_labels={C.LABEL_MANAGED: "true", C.LABEL_STATE_DIR: str(state_dir)},
                env=[f"MODEL_NAME={config.models[0]}"], mounts=mounts,
                mode=docker_types.ServiceMode("replicated", replicas=config.replicas),
                endpoint_spec=docker_types.EndpointSpec(mode="dnsrr", ports=[
                    {"Protocol": "tcp", "TargetPort": C.CONTAINER_GRPC_PORT,
                     "PublishMode": "host"},
                    {"Protocol": "tcp", "TargetPort": C.CONTAINER_REST_PORT,
                     "PublishMode": "host"}]),
                restart_policy=docker_types.RestartPolicy(condition="any", delay=1_000_000_000),
                update_config=docker_types.UpdateConfig(
                    parallelism=1, order="start-first", failure_action="rollback",
                    monitor=10_000_000_000),
                rollback_config=docker_types.RollbackConfig(parallelism=1, order="start-first"),
                resources=docker_types.Resources(mem_limit=int(config.memory_limit_mb) << 20),
                healthcheck=self._healthcheck(config),
                stop_grace_period=30_000_000_000)
        except docker_errors.APIError as e:
            self._remove_service(name)
            raise LifecycleError(f"docker could not create the service {name}: {_short(e)}") \
                from e
        grpc_port = config.grpc_port or pick_free()
        rest_port = config.rest_port or pick_free()
        while rest_port == grpc_port:
            rest_port = pick_free()
        state = ServerState(
            backend=self.name, handle=name, name=name, image=config.image,
            repository=str(Path(config.repository).absolute()), models=tuple(config.models),
            addresses=Addresses(HOST, grpc_port, rest_port), state_dir=str(state_dir),
            model_config_path=str(model_config_host_path or ""),
            base_paths=self.base_paths(config), config_poll_seconds=config.config_poll_seconds,
            started_at=time.time(), log_path=str(state_dir / BALANCER_LOG),
            replicas=config.replicas, endpoint_mode=self.endpoint_mode())
        state.balancer_pid = _start_balancer(state)
        return state

    # ---- the fleet ----

    def replicas(self, state: ServerState) -> List[Replica]:
        """The service's running tasks (with their host ports), in slot order."""
        service = self._service(state)
        if service is None:
            return []
        found = []
        for task in service.tasks(filters={"desired-state": "running"}):
            status = task.get("Status", {})
            ports = task_host_ports(self.client, task)
            addresses = Addresses(HOST, *ports) if ports else None
            found.append(Replica(
                name=f"{state.name}.{task.get('Slot', '?')}", task_id=task["ID"][:12],
                node=task.get("NodeID", "")[:12], state=status.get("State", ""),
                health=self._health(status.get("ContainerStatus", {}).get("ContainerID")),
                addresses=addresses))
        return sorted(found, key=lambda r: r.name)

    def scale(self, state: ServerState, replicas: int) -> None:
        service = self._service(state)
        if service is None:
            raise LifecycleError(f"the service {state.name} is gone")
        service.scale(replicas)

    def endpoint_mode(self) -> str:
        """How clients reach the replicas, and why."""
        if Path("/proc/net/ip_vs").exists():
            return ("haproxy in front of the replicas' host ports (the routing mesh would "
                    "work on this kernel; HAProxy adds retries on another replica)")
        return ("haproxy in front of the replicas' host ports: this kernel has no IPVS "
                "(/proc/net/ip_vs is absent), so the routing mesh's published ports answer "
                "nothing")

    # ---- Backend ----

    def is_running(self, state: ServerState) -> bool:
        return self._service(state) is not None

    def logs(self, state: ServerState, tail: Optional[int] = None) -> str:
        service = self._service(state)
        if service is None:
            return ""
        chunks = service.logs(stdout=True, stderr=True, timestamps=False,
                              tail=tail if tail is not None else "all")
        return b"".join(chunks).decode(errors="replace")

    def stop(self, state: ServerState, timeout: float = 30.0) -> None:
        _stop_balancer(state.balancer_pid)
        self._remove_service(state.name)
        self._wait_gone(state.name, timeout)
        self.remove_orphans(Path(state.state_dir))

    def remove_orphans(self, state_dir: Path) -> int:
        found = self.client.services.list(filters={"label": [
            f"{C.LABEL_MANAGED}=true", f"{C.LABEL_STATE_DIR}={Path(state_dir).absolute()}"]})
        for service in found:
            try:
                service.remove()
            except docker_errors.NotFound:
                pass
        return len(found) + super().remove_orphans(state_dir)

    # ---- helpers ----

    def _ensure_swarm(self) -> None:
        info = self.client.info().get("Swarm", {})
        if info.get("LocalNodeState") == "active":
            if not info.get("ControlAvailable"):
                raise EnvironmentProblem("this Docker Engine is a swarm worker, not a manager",
                                         next_step="run `up --backend swarm` on a manager node")
            return
        log.info("this Docker Engine is in no swarm: initialising a single-node swarm "
                 "(docker swarm init --advertise-addr 127.0.0.1)")
        try:
            self.client.swarm.init(advertise_addr="127.0.0.1")
        except docker_errors.APIError as e:
            raise EnvironmentProblem(f"docker swarm init failed: {_short(e)}",
                                     next_step="`docker swarm init` by hand, or join a swarm") \
                from e

    def _healthcheck(self, config: UpConfig) -> Optional[docker_types.Healthcheck]:
        if not config.image.startswith(STANDIN_REPOSITORY):
            return None
        return docker_types.Healthcheck(
            test=["CMD", "python", "-c", HEALTHCHECK_SCRIPT, *config.models],
            interval=10_000_000_000, timeout=10_000_000_000, retries=3,
            start_period=60_000_000_000)

    def _health(self, container_id: Optional[str]) -> str:
        if not container_id:
            return ""
        try:
            c = self.client.containers.get(container_id)
        except docker_errors.NotFound:
            return ""
        return (c.attrs.get("State", {}).get("Health") or {}).get("Status", "")

    def _service(self, state: ServerState):
        try:
            service = self.client.services.get(state.handle)
        except docker_errors.NotFound:
            return None
        return service if service.attrs["Spec"].get("Labels", {}).get(C.LABEL_MANAGED) == \
            "true" else None

    def _remove_service(self, name: str) -> None:
        try:
            self.client.services.get(name).remove()
        except docker_errors.NotFound:
            pass

    def _wait_gone(self, name: str, timeout: float) -> None:
        """Until the service's containers are gone (their host ports free again)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.client.containers.list(all=True, sparse=True, filters={
                    "label": f"com.docker.swarm.service.name={name}"}):
                return
            time.sleep(0.3)


def task_host_ports(client, task: dict) -> Optional[Tuple[int, int]]:
    """(gRPC, REST) host ports of a running task, as 127.0.0.1 reaches them: the IPv4
    bindings of its container. The task's PortStatus lists an IPv4 and an IPv6 port per
    container port without saying which is which, and the two drift apart once any
    container publishes on one address family only."""
    status = task.get("Status", {})
    container_id = (status.get("ContainerStatus") or {}).get("ContainerID")
    if status.get("State") != "running" or not container_id:
        return None
    try:
        container = client.containers.get(container_id)
    except docker_errors.DockerException:
        return None
    bindings = container.attrs.get("NetworkSettings", {}).get("Ports") or {}

    def ipv4(port: int) -> Optional[int]:
        for binding in bindings.get(f"{port}/tcp") or []:
            if binding.get("HostIp") in ("0.0.0.0", ""):
                return int(binding["HostPort"])
        return None

    grpc, rest = ipv4(C.CONTAINER_GRPC_PORT), ipv4(C.CONTAINER_REST_PORT)
    return (grpc, rest) if grpc and rest else None


def _start_balancer(state: ServerState) -> int:
    """The HAProxy watcher (serving/lifecycle/balancer.py) in its own session."""
    import serving
    root = Path(serving.__file__).resolve().parents[1]
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(root), env.get("PYTHONPATH", "")) if p)
    with open(state.log_path, "ab") as log_file:
        proc = subprocess.Popen(
            [sys.executable, "-m", "serving.lifecycle.balancer", "--state-dir",
             state.state_dir, "--service", state.name, "--rest-port",
             str(state.addresses.rest_port), "--grpc-port", str(state.addresses.grpc_port),
             "--model", state.models[0]],
            stdin=subprocess.DEVNULL, stdout=log_file, stderr=subprocess.STDOUT, env=env,
            start_new_session=True)
    return proc.pid


def _stop_balancer(pid: int) -> None:
    """SIGTERM the watcher's process group (it and its haproxy), then SIGKILL."""
    if not pid:
        return
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(pid, sig)
        except (ProcessLookupError, PermissionError):
            return
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            try:
                os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                pass
            if not Path(f"/proc/{pid}").exists() or \
                    Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()[0] == "Z":
                return
            time.sleep(0.1)
