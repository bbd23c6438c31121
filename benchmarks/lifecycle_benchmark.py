"""Serving lifecycle and rollout timings for benchmarks/README.md.

Measures, per backend: `up` to healthy (start of the container/process until version 1 is
AVAILABLE); for each push, a candidate deployed the way every run deploys it (canary, a
sample-prediction smoke check, promote: pipelines/operations/post_push.py) from the call to the
label answering; `promote` of a candidate and `rollback` to the previous stable, each
from the call to `labels/stable` answering the new version; and `down`. While it runs,
`wrk` sends unlabelled REST predicts over 32 connections (`--clients`), and the failed
requests (non-2xx, socket errors) are counted (target 0). Also the stand-in image build
(cached; `--cold` also removes the images and the wheel cache first).

Usage: .venv/bin/python benchmarks/lifecycle_benchmark.py [--backends docker,process]
       [--pushes 5] [--clients 32] [--image IMAGE] [--build] [--cold] [--json]
Exit codes: 0 measured; 1 a measurement failed; 2 bad usage.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipelines.operations import post_push  # noqa: E402
from serving import lifecycle  # noqa: E402
from serving.lifecycle import rollout  # noqa: E402
from serving.lifecycle.config import STANDIN_IMAGE, UpConfig  # noqa: E402
from serving.repository import ModelRepository  # noqa: E402

MODEL = "half_plus_two"
BODY_LUA = 'wrk.method = "POST"\nwrk.body = \'{"instances": [1.0, 2.0, 5.0]}\'\n' \
           'wrk.headers["Content-Type"] = "application/json"\n'


def push(repo: Path, template: Path, candidate: bool = False) -> int:
    with ModelRepository(repo).publish(MODEL, candidate=candidate) as pub:
        shutil.copytree(template, pub.staging, dirs_exist_ok=True)
    return pub.version


def start_wrk(url: str, clients: int, seconds: int, script: Path) -> subprocess.Popen:
    """wrk POSTing `script`'s body to the model's predict URL; it reports on SIGINT or at the
    end of `seconds`."""
    return subprocess.Popen(["wrk", "-t", "2", "-c", str(clients), "-d", f"{seconds}s",
                             "--latency", "-s", str(script), f"{url}/v1/models/{MODEL}:predict"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _ms(value: str, unit: str) -> float:
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def parse_wrk(output: str) -> dict:
    """Requests, rate, p50, p99 and failed (non-2xx answers plus socket errors) from wrk's
    report."""
    done = int(re.search(r"(\d+) requests in", output).group(1))
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), "
                       r"timeout (\d+)", output)
    p50 = re.search(r"50%\s+([\d.]+)(us|ms|s)", output)
    p99 = re.search(r"99%\s+([\d.]+)(us|ms|s)", output)
    rps = re.search(r"Requests/sec:\s+([\d.]+)", output)
    return {"requests": done, "requests_per_s": float(rps.group(1)) if rps else None,
            "p50_ms": round(_ms(*p50.groups()), 1) if p50 else None,
            "p99_ms": round(_ms(*p99.groups()), 1) if p99 else None,
            "failed": (int(non_2xx.group(1)) if non_2xx else 0)
            + (sum(map(int, errors.groups())) if errors else 0)}


def summary(values) -> dict:
    return {"n": len(values), "median_s": round(statistics.median(values), 3),
            "min_s": round(min(values), 3), "max_s": round(max(values), 3)}


def measure_backend(backend: str, image: str, templates: dict, pushes: int,
                    poll_seconds: float, clients: int) -> dict:
    work = Path(tempfile.mkdtemp(prefix=f"lc_bench_{backend}_"))
    repo, state_dir = work / "repository", work / "state"
    repo.mkdir()
    push(repo, templates[1])
    script = work / "predict.lua"
    script.write_text(BODY_LUA)
    wrk = None
    try:
        t0 = time.monotonic()
        state = lifecycle.up(UpConfig(repository=repo, models=(MODEL,), state_dir=state_dir,
                                      backend=backend, image=image, grpc_port=0, rest_port=0,
                                      file_system_poll_seconds=poll_seconds, wait_seconds=300))
        up_to_healthy = time.monotonic() - t0
        wrk = start_wrk(state.addresses.rest_url, clients, 600, script)
        time.sleep(1.0)
        push_to_promoted, promote_s, rollback_s = [], [], []
        for i in range(pushes):
            version = push(repo, templates[2 if i % 2 == 0 else 1], candidate=True)
            t0 = time.monotonic()
            deployment = post_push.deploy(MODEL, version, ModelRepository(repo), state_dir,
                                          120, log=lambda line: None)
            if deployment.status != post_push.PROMOTED:
                raise lifecycle.LifecycleError(f"push {version}: {deployment.status} "
                                               f"{deployment.reason}")
            push_to_promoted.append(time.monotonic() - t0)
            t0 = time.monotonic()
            rollout.rollback(MODEL, repo, None, state_dir, 120)
            rollback_s.append(time.monotonic() - t0)
            t0 = time.monotonic()
            rollout.promote(MODEL, version, repo, state_dir, 120)
            promote_s.append(time.monotonic() - t0)
        time.sleep(1.0)
        wrk.send_signal(signal.SIGINT)  # wrk stops and prints its report
        load = parse_wrk(wrk.communicate(timeout=30)[0])
        wrk = None
        t0 = time.monotonic()
        lifecycle.down(state_dir, timeout=30)
        down_s = time.monotonic() - t0
    finally:
        if wrk is not None:
            wrk.kill()
        lifecycle.down(state_dir, timeout=10)
        shutil.rmtree(work, ignore_errors=True)
    return {"backend": backend, "image": image if backend == "docker" else "",
            "up_to_healthy_s": round(up_to_healthy, 3),
            "push_to_promoted": summary(push_to_promoted),
            "promote_to_label": summary(promote_s),
            "rollback_to_label": summary(rollback_s), "down_s": round(down_s, 3),
            "load_during_rollouts": {"clients": clients, **load}}


def measure_build(cold: bool) -> dict:
    if cold:
        subprocess.run("docker images --format '{{.Repository}}:{{.Tag}}' | grep "
                       "'^tfx-serving-toolkit/model-server' | xargs -r docker rmi -f",
                       shell=True, check=True, capture_output=True)
        shutil.rmtree(ROOT / ".cache" / "serving-image", ignore_errors=True)
    t0 = time.monotonic()
    subprocess.run([str(ROOT / "serving" / "image" / "build.sh")], check=True,
                   capture_output=True)
    return {"image_build_" + ("cold" if cold else "cached") + "_s":
            round(time.monotonic() - t0, 2)}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--backends", default="docker,process")
    p.add_argument("--pushes", type=int, default=5)
    p.add_argument("--clients", type=int, default=32, help="wrk connections during the rollouts")
    p.add_argument("--image", default=STANDIN_IMAGE)
    p.add_argument("--poll-seconds", type=float, default=1.0,
                   help="--file_system_poll_wait_seconds of the server (default 1)")
    p.add_argument("--build", action="store_true", help="also time `make serving-image`")
    p.add_argument("--cold", action="store_true", help="with --build: from nothing")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)

    from components.half_plus_two_trainer import export

    results = []
    if args.build:
        results.append(measure_build(args.cold))
        if args.cold:
            results.append(measure_build(False))
    with tempfile.TemporaryDirectory(prefix="lc_templates_") as tmp:
        templates = {1: Path(tmp) / "v1", 2: Path(tmp) / "v2"}
        export(0.5, 2.0, str(templates[1]))
        export(0.5, 3.0, str(templates[2]))
        for backend in args.backends.split(","):
            try:
                results.append(measure_backend(backend, args.image, templates, args.pushes,
                                               args.poll_seconds, args.clients))
            except lifecycle.LifecycleError as e:
                print(f"{backend}: {e}", file=sys.stderr)
                return 1
    print(json.dumps(results, indent=2 if not args.json else None))
    return 0


if __name__ == "__main__":
    sys.exit(main())
