"""The Swarm fleet (issue 19) for benchmarks/README.md: one `up --backend swarm` fleet of
half_plus_two behind its HAProxy endpoint, measured at 1, 2 and 3 replicas.

Per replica count: `wrk` (`--clients` connections, `--seconds` s, REST predict of 3
instances through the endpoint) -> requests/s, p50 and p99 latency, failed requests
(non-2xx and socket errors); memory of each replica (`docker stats --no-stream`). At 2
replicas: `promote` of a candidate and `rollback`, each from the call until every replica
answers the new `labels/stable` (the command verifies each replica before it returns);
and `docker kill` of one replica's container until Swarm's replacement serves the stable
version on its own port, and until HAProxy routes to it, with wrk running through it
(its failed requests are counted too).

Usage: .venv/bin/python benchmarks/fleet_benchmark.py [--clients 32] [--seconds 15]
       [--replicas 1,2,3] [--rollouts 3] [--image IMAGE] [--json]
Needs a swarm manager (`docker swarm init --advertise-addr 127.0.0.1`), haproxy and wrk.
Exit codes: 0 measured; 1 a measurement failed; 2 bad usage.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from serving import lifecycle, rollouts  # noqa: E402
from serving.lifecycle import balancer, health, rollout  # noqa: E402
from serving.lifecycle.api import _backend_for  # noqa: E402
from serving.lifecycle.config import STANDIN_IMAGE, UpConfig  # noqa: E402

from lifecycle_benchmark import (BODY_LUA, parse_wrk, push, start_wrk,  # noqa: E402
                                 summary)

MODEL = "half_plus_two"


def _replicas(state) -> list:
    return [r for r in _backend_for(state).replicas(state)
            if r.state == "running" and r.addresses is not None]


def _routed_ports(state) -> list:
    text = (Path(state.state_dir) / balancer.CONFIG_FILE).read_text()
    rest = text.split("backend rest_replicas", 1)[1].split("frontend", 1)[0]
    return sorted(int(p) for p in re.findall(r"127\.0\.0\.1:(\d+) check", rest))


def _wait_fleet(state, count: int, timeout: float = 300.0, gone: str = "") -> tuple:
    """(seconds until `count` replicas serve stable, seconds until HAProxy lists them)."""
    stable = rollouts.load(Path(state.repository) / MODEL, MODEL).stable
    start = time.monotonic()
    serving_at = None
    while time.monotonic() - start < timeout:
        found = [r for r in _replicas(state) if r.task_id != gone]
        if len(found) == count and len(_replicas(state)) == count and all(
                health.get_model_status(r.addresses.rest_url, MODEL).is_available(stable)
                for r in found):
            serving_at = serving_at or time.monotonic()
            if _routed_ports(state) == sorted(r.addresses.rest_port for r in found):
                return serving_at - start, time.monotonic() - start
        time.sleep(0.1)
    raise RuntimeError(f"{count} replicas did not serve v{stable} within {timeout:.0f} s")


def _memory_mib(state) -> list:
    """Each replica container's memory use (docker stats --no-stream), MiB."""
    out = subprocess.run(["docker", "stats", "--no-stream", "--format",
                          "{{.Name}} {{.MemUsage}}"], capture_output=True, text=True,
                         check=True).stdout
    found = []
    for line in out.splitlines():
        name, usage = line.split(" ", 1)
        if name.startswith(state.name + "."):
            value, unit = re.match(r"([\d.]+)\s*(\w+)", usage).groups()
            found.append(round(float(value) * {"KiB": 1 / 1024, "MiB": 1, "GiB": 1024}
                               .get(unit, 1), 1))
    return sorted(found)


def measure(args, templates: dict) -> dict:
    work = Path(tempfile.mkdtemp(prefix="fleet_bench_"))
    repo, state_dir = work / "repository", work / "state"
    repo.mkdir()
    push(repo, templates[1])
    script = work / "predict.lua"
    script.write_text(BODY_LUA)
    counts = [int(n) for n in args.replicas.split(",")]
    results = {"replicas": [], "image": args.image}
    wrk = None
    t = time.monotonic()
    state = lifecycle.up(UpConfig(
        repository=repo, models=(MODEL,), state_dir=state_dir, backend="swarm",
        replicas=counts[0], image=args.image, grpc_port=0, rest_port=0,
        file_system_poll_seconds=1.0, config_poll_seconds=1.0, wait_seconds=300))
    results["up_s"] = round(time.monotonic() - t, 1)
    try:
        for n in counts:
            t = time.monotonic()
            if n != len(_replicas(state)):
                lifecycle.scale(n, state_dir, timeout=300)
            _wait_fleet(state, n)
            scaled = time.monotonic() - t
            time.sleep(2)  # the HAProxy reload and a first health check
            load = parse_wrk(start_wrk(state.addresses.rest_url, args.clients, args.seconds,
                                       script).communicate(timeout=args.seconds + 60)[0])
            row = {"replicas": n, "scale_s": round(scaled, 1), **load,
                   "memory_mib": _memory_mib(state)}
            results["replicas"].append(row)
            print(json.dumps(row), flush=True)

        if len(_replicas(state)) != 2:
            lifecycle.scale(2, state_dir, timeout=300)
        _wait_fleet(state, 2)
        promotes, rollbacks = [], []
        for i in range(args.rollouts):
            version = push(repo, templates[2 if i % 2 == 0 else 1], candidate=True)
            t = time.monotonic()
            rollout.promote(MODEL, version, repo, state_dir, timeout=120)
            promotes.append(time.monotonic() - t)
            t = time.monotonic()
            rollout.rollback(MODEL, repo, state_dir=state_dir, timeout=120)
            rollbacks.append(time.monotonic() - t)
        results["promote_verified_on_2"] = summary(promotes)
        results["rollback_verified_on_2"] = summary(rollbacks)
        print(json.dumps({"promote": results["promote_verified_on_2"],
                          "rollback": results["rollback_verified_on_2"]}), flush=True)

        wrk = start_wrk(state.addresses.rest_url, args.clients, 600, script)
        time.sleep(3)
        victim = _replicas(state)[0]
        task = next(x for x in _backend_for(state)._service(state).tasks()
                    if x["ID"].startswith(victim.task_id))
        t = time.monotonic()
        subprocess.run(["docker", "kill", task["Status"]["ContainerStatus"]["ContainerID"]],
                       check=True, capture_output=True)
        serving_s, routed_s = _wait_fleet(state, 2, gone=victim.task_id)
        time.sleep(3)
        wrk.send_signal(signal.SIGINT)
        during = parse_wrk(wrk.communicate(timeout=30)[0])
        wrk = None
        results["kill"] = {"replacement_serving_s": round(serving_s, 1),
                           "replacement_routed_s": round(routed_s, 1),
                           "requests_during": during["requests"],
                           "failed_during": during["failed"],
                           "seconds_from_kill": round(time.monotonic() - t, 1)}
        print(json.dumps(results["kill"]), flush=True)
    finally:
        if wrk is not None:
            wrk.kill()
        lifecycle.down(state_dir, timeout=60)
        shutil.rmtree(work, ignore_errors=True)
    return results


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--clients", type=int, default=32, help="wrk connections")
    p.add_argument("--seconds", type=int, default=15, help="wrk duration per replica count")
    p.add_argument("--replicas", default="1,2,3", help="replica counts, in order")
    p.add_argument("--rollouts", type=int, default=3, help="promote + rollback pairs")
    p.add_argument("--image", default=STANDIN_IMAGE)
    p.add_argument("--json", action="store_true", help="print the results as one JSON object")
    args = p.parse_args(argv)
    for tool in ("wrk", "haproxy"):
        if shutil.which(tool) is None:
            print(f"{tool} is not installed (apt-get install {tool})", file=sys.stderr)
            return 2
    from components.half_plus_two_trainer import export

    with tempfile.TemporaryDirectory(prefix="fleet_templates_") as tmp:
        templates = {1: Path(tmp) / "v1", 2: Path(tmp) / "v2"}
        export(0.5, 2.0, str(templates[1]))
        export(0.5, 3.0, str(templates[2]))
        try:
            results = measure(args, templates)
        except Exception as e:  # noqa: BLE001 - reported, exit 1
            print(f"measurement failed: {type(e).__name__}: {e}", file=sys.stderr)
            return 1
    print(json.dumps(results, indent=None if args.json else 2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
