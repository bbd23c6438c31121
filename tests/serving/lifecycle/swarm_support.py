"""Helpers for the swarm fleet tests: skip (or fail with --require-docker) where no swarm or
no HAProxy is available, start a fleet, find a replica's container, and wait until the
HAProxy endpoint routes to exactly the replicas that run."""

from __future__ import annotations

import re
import shutil
import subprocess
import time
from pathlib import Path
from typing import Dict, List, Optional

import pytest
import requests

import lc_support
import toolkit_testing
from serving import lifecycle, rollouts
from serving.lifecycle import balancer, health
from serving.lifecycle.api import _backend_for
from serving.lifecycle.config import UpConfig
from serving.lifecycle.state import ServerState

POLL_SECONDS = 1.0


def require_swarm(config) -> None:
    """Docker with the serving image (toolkit_testing.require_docker), an active swarm
    manager (`docker swarm init`, as .ci/run does) and haproxy on PATH."""
    toolkit_testing.require_docker(config)
    import docker

    info = docker.from_env(timeout=10).info().get("Swarm", {})
    reason = ""
    if shutil.which("haproxy") is None:
        reason = "haproxy is not installed (apt-get install haproxy): the fleet's endpoint"
    elif info.get("LocalNodeState") != "active" or not info.get("ControlAvailable"):
        reason = ("this Docker Engine is no swarm manager "
                  "(`docker swarm init --advertise-addr 127.0.0.1`)")
    if reason:
        if config.getoption("require_docker"):
            pytest.fail(reason)
        pytest.skip(reason)


def up_fleet(repository: Path, state_dir: Path, replicas: int) -> ServerState:
    return lifecycle.up(UpConfig(
        repository=repository, models=(lc_support.MODEL,), state_dir=state_dir,
        backend="swarm", replicas=replicas, image=toolkit_testing.test_image(), grpc_port=0,
        rest_port=0, file_system_poll_seconds=POLL_SECONDS, config_poll_seconds=POLL_SECONDS,
        wait_seconds=180))


def down_fleet(state_dir: Path) -> None:
    """`down`, then check that no service, container or balancer is left."""
    state = lifecycle.current(state_dir)
    import docker
    try:
        lifecycle.down(state_dir, timeout=30)
    except docker.errors.NotFound as e:  # a container went while `down` listed them
        lifecycle.down(state_dir, timeout=30)  # what is left, then say what happened
        pytest.fail(f"`down` raised {e!r} (a container removed by Swarm while listed)")
    client = docker.from_env(timeout=10)
    assert [s.name for s in client.services.list(filters={"name": state.name})] == []
    assert lc_support.labelled_containers(state_dir) == []
    assert not lc_support.pid_alive(state.balancer_pid)


def replicas(state: ServerState) -> list:
    """The running replicas with their ports (SwarmBackend.replicas)."""
    return [r for r in _backend_for(state).replicas(state)
            if r.state == "running" and r.addresses is not None]


def container_of(state: ServerState, task_id: str):
    """The container of the service's task whose ID starts with `task_id`."""
    import docker
    client = docker.from_env(timeout=10)
    task = next(t for t in client.services.get(state.handle).tasks()
                if t["ID"].startswith(task_id))
    return client.containers.get(task["Status"]["ContainerStatus"]["ContainerID"])


def balancer_rest_ports(state: ServerState) -> List[int]:
    """The replica REST ports in the HAProxy config the watcher last wrote."""
    text = (Path(state.state_dir) / balancer.CONFIG_FILE).read_text()
    rest = text.split("backend rest_replicas", 1)[1].split("frontend", 1)[0]
    return sorted(int(p) for p in re.findall(r"server \S+ 127\.0\.0\.1:(\d+) check", rest))


def wait_for_fleet(state: ServerState, count: int, timeout: float = 180.0,
                   gone: Optional[str] = None) -> list:
    """Until `count` replicas run (none of them task `gone`), each serves the recorded
    stable version, and HAProxy's config lists exactly their REST ports; then one more
    balancer poll and health check so the reload is in effect. Returns the replicas."""
    repo_model = Path(state.repository) / lc_support.MODEL
    stable = rollouts.load(repo_model, lc_support.MODEL).stable

    def ready():
        found = replicas(state)
        if len(found) != count or any(r.task_id == gone for r in found):
            return None
        if not all(health.get_model_status(r.addresses.rest_url, lc_support.MODEL)
                   .is_available(stable) for r in found):
            return None
        if balancer_rest_ports(state) != sorted(r.addresses.rest_port for r in found):
            return None
        return found
    found = toolkit_testing.wait_until(ready, timeout=timeout, interval=0.25,
                                       what=f"{count} replicas serving v{stable} behind HAProxy")
    time.sleep(2 * balancer.POLL_SECONDS + 1.0)  # the reload and a first health check
    return found


def labels_of(replica, timeout: float = 15.0, tries: int = 3) -> Dict[str, int]:
    """What the replica's `stable` and `previous` labels name, asked on its own REST port
    (GET .../labels/L/metadata). A label it answers 4xx for is left out; a request that
    times out or finds no connection (a replica just started, on a loaded machine) is tried
    again, and raises after `tries`."""
    from serving.lifecycle.sample import get_metadata

    found = {}
    for label in (rollouts.STABLE, rollouts.PREVIOUS):
        for attempt in range(1, tries + 1):
            try:
                meta = get_metadata(replica.addresses.rest_url, lc_support.MODEL, label=label,
                                    timeout=timeout)
            except requests.HTTPError as e:
                if e.response is not None and 400 <= e.response.status_code < 500:
                    break  # the replica has no such label
                raise
            except (requests.Timeout, requests.ConnectionError) as e:
                if attempt == tries:
                    raise AssertionError(f"{replica.name}: labels/{label} not answered in "
                                         f"{tries} tries: {e}") from e
                time.sleep(1.0)
                continue
            found[label] = int(meta["model_spec"]["version"])
            break
    return found


def docker_cli(*args: str) -> str:
    done = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, f"docker {' '.join(args)}: {done.stderr}"
    return done.stdout


def during(failures: list, moves: Dict[str, tuple]) -> List[str]:
    """For each failed request (sent, answered, y, error): the move it overlapped, if any,
    and where its time lies from that move's start (to tell a reload from a kill)."""
    found = []
    for sent, answered, _, error in failures:
        names = [f"{name} (+{sent - t[0]:.2f} s)" for name, t in moves.items()
                 if t[0] <= answered and sent <= (t[1] if len(t) > 1 else float("inf"))]
        found.append(f"{', '.join(names) or 'between moves'}: {error[:80]}")
    return found


# ---- Docker's host-port allocators (see test_replica_ports_are_the_ones_clients_reach) ----
#
# Docker Engine 20.10 publishes a host-mode port twice, on 0.0.0.0 and on [::], from two
# allocators that each keep their own "next port". A port published on one family only
# (`-p 0.0.0.0::80`, `-p 127.0.0.1::80`) advances one allocator, and from then on a swarm
# task's IPv4 and IPv6 ports differ; the task's PortStatus lists both, unlabelled.

def _advance(family_ip: str, times: int) -> None:
    """Allocate `times` ports on one address family only."""
    import docker
    client = docker.from_env(timeout=30)
    for _ in range(times):
        c = client.containers.run(toolkit_testing.test_image(), entrypoint=["sleep", "60"],
                                  ports={"80/tcp": (family_ip, None)}, detach=True)
        c.remove(force=True)


def skew_port_allocators(by: int = 1) -> None:
    """Make the next IPv4 host port `by` ahead of the next IPv6 one (as any container
    published on 127.0.0.1 only, e.g. the docker backend's, does)."""
    _advance("0.0.0.0", by)


def container_ipv4_ports(state: ServerState, task_id: str) -> Dict[int, int]:
    """{container port: host port on 0.0.0.0}: where 127.0.0.1 reaches the replica."""
    c = container_of(state, task_id)
    found = {}
    for key, bindings in (c.attrs["NetworkSettings"]["Ports"] or {}).items():
        for b in bindings or []:
            if ":" not in b["HostIp"]:
                found[int(key.split("/")[0])] = int(b["HostPort"])
    return found


def scale(state: ServerState, count: int, timeout: float = 180.0) -> None:
    """`lifecycle.scale`, as the tests call it."""
    lifecycle.scale(count, state.state_dir, timeout=timeout)
