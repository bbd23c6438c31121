"""One endpoint for a Swarm fleet: HAProxy in front of the replicas' host ports.

`python -m serving.lifecycle.balancer` is started by `up --backend swarm` in its own
session. It runs HAProxy (Debian's `haproxy`, master-worker mode) as its child and, every
half second, lists the service's running tasks through the Docker API; when the set of
replica ports changes (scale, a replica replaced after a crash, a rolling update) it
rewrites the config and reloads HAProxy seamlessly (SIGUSR2 to the master: the new
workers take the listening sockets over, no connection is refused).

The config: REST on 127.0.0.1:<rest port> (HTTP, round robin, a health check of
`GET /v1/models/<model>` every 500 ms on each replica), gRPC on 127.0.0.1:<grpc port>
(HTTP/2 end to end, so calls, not connections, are balanced). A request that fails on one
replica (connection refused or reset, an empty answer, 502/503/504) is retried on another,
up to 3 times: Predict, Classify, Regress and the status calls are idempotent, so a retry
never does anything twice.
"""

from __future__ import annotations

import argparse
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

CONFIG_FILE = "haproxy.cfg"
POLL_SECONDS = 0.5


def render(rest_port: int, grpc_port: int, model: str,
           replicas: Sequence[Tuple[str, int, int]]) -> str:
    """The HAProxy config for `replicas` [(name, grpc_port, rest_port)] on this host."""
    rest_servers = "".join(f"  server {name} 127.0.0.1:{rest} check\n"
                           for name, _, rest in replicas)
    grpc_servers = "".join(f"  server {name} 127.0.0.1:{grpc} proto h2 check\n"
                           for name, grpc, _ in replicas)
    return f"""global
  maxconn 4096

defaults
  mode http
  timeout connect 1s
  timeout client 120s
  timeout server 120s
  timeout http-request 30s
  retries 3
  option redispatch 1
  retry-on conn-failure empty-response junk-response response-timeout 502 503 504
  option idle-close-on-response
  timeout check 5s
  default-server inter 500ms fall 2 rise 1

frontend rest
  bind 127.0.0.1:{rest_port}
  http-request wait-for-body time 5s
  default_backend rest_replicas

backend rest_replicas
  balance roundrobin
  option httpchk GET /v1/models/{model}
  http-check expect status 200
{rest_servers}
frontend grpc
  bind 127.0.0.1:{grpc_port} proto h2
  default_backend grpc_replicas

backend grpc_replicas
  balance roundrobin
{grpc_servers}"""


def task_ports(client, service_name: str) -> Optional[List[Tuple[str, int, int]]]:
    """(name, grpc host port, rest host port) of each running task of the service; None
    when the Docker API did not answer (keep the servers HAProxy has)."""
    from serving.lifecycle.swarm_backend import task_host_ports

    try:
        service = client.services.get(service_name)
        tasks = service.tasks(filters={"desired-state": "running"})
    except Exception:  # noqa: BLE001 - the daemon is busy, or the service is going away
        return None
    found = []
    for task in tasks:
        ports = task_host_ports(client, task)
        if ports is not None:
            found.append((f"r{task.get('Slot', 0)}-{task['ID'][:8]}", *ports))
    return sorted(found)


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m serving.lifecycle.balancer",
                                     description=__doc__.split("\n\n")[0], allow_abbrev=False)
    parser.add_argument("--state-dir", type=Path, required=True)
    parser.add_argument("--service", required=True)
    parser.add_argument("--rest-port", type=int, required=True)
    parser.add_argument("--grpc-port", type=int, required=True)
    parser.add_argument("--model", required=True, help="the model the health check asks for")
    args = parser.parse_args(argv)

    import docker

    client = docker.from_env(timeout=10)
    config_path = args.state_dir / CONFIG_FILE
    stopping = []
    signal.signal(signal.SIGTERM, lambda *_: stopping.append(True))
    signal.signal(signal.SIGINT, lambda *_: stopping.append(True))
    haproxy: Optional[subprocess.Popen] = None
    current = None
    try:
        while not stopping:
            replicas = task_ports(client, args.service)
            if replicas is None:
                time.sleep(POLL_SECONDS)
                continue
            if replicas != current or haproxy is None or haproxy.poll() is not None:
                config_path.write_text(render(args.rest_port, args.grpc_port, args.model,
                                              replicas))
                if haproxy is None or haproxy.poll() is not None:
                    haproxy = subprocess.Popen(["haproxy", "-W", "-db", "-f", str(config_path)])
                else:
                    haproxy.send_signal(signal.SIGUSR2)  # seamless reload
                print(f"balancer: {len(replicas)} replica(s): "
                      f"{', '.join(f'{n} rest {r} grpc {g}' for n, g, r in replicas)}",
                      flush=True)
                current = replicas
            time.sleep(POLL_SECONDS)
    finally:
        if haproxy is not None and haproxy.poll() is None:
            haproxy.terminate()
            try:
                haproxy.wait(10)
            except subprocess.TimeoutExpired:
                haproxy.kill()
    return 0


if __name__ == "__main__":
    sys.exit(main())
