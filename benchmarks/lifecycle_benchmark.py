"""Serving lifecycle timings for benchmarks/README.md.

Measures, per backend: `up` to healthy (start of the container/process until version 1 is
AVAILABLE), Pusher rename to AVAILABLE for each new version, and rollback; and the
stand-in image build (cached; `--cold` also removes the images and the wheel cache first).

Usage: .venv/bin/python benchmarks/lifecycle_benchmark.py [--backends docker,process]
       [--pushes 5] [--image IMAGE] [--build] [--cold] [--json]
Exit codes: 0 measured; 1 a measurement failed; 2 bad usage.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from serving import lifecycle  # noqa: E402
from serving.lifecycle.config import STANDIN_IMAGE, UpConfig  # noqa: E402
from serving.repository import ModelRepository  # noqa: E402

MODEL = "half_plus_two"


def _push(repo: Path, template: Path) -> tuple:
    with ModelRepository(repo).publish(MODEL) as pub:
        shutil.copytree(template, pub.staging, dirs_exist_ok=True)
    return pub.version, time.monotonic()


def _summary(values) -> dict:
    return {"n": len(values), "median_s": round(statistics.median(values), 3),
            "min_s": round(min(values), 3), "max_s": round(max(values), 3)}


def measure_backend(backend: str, image: str, templates: dict, pushes: int,
                    poll_seconds: float) -> dict:
    work = Path(tempfile.mkdtemp(prefix=f"lc_bench_{backend}_"))
    repo, state_dir = work / "repository", work / "state"
    repo.mkdir()
    _push(repo, templates[1])
    try:
        t0 = time.monotonic()
        lifecycle.up(UpConfig(repository=repo, models=(MODEL,), state_dir=state_dir,
                              backend=backend, image=image, grpc_port=0, rest_port=0,
                              file_system_poll_seconds=poll_seconds, wait_seconds=300))
        up_to_healthy = time.monotonic() - t0
        to_available = []
        for i in range(pushes):
            version, renamed_at = _push(repo, templates[2 if i % 2 == 0 else 1])
            lifecycle.wait_for_version(MODEL, version, 120, state_dir, poll_seconds=0.02)
            to_available.append(time.monotonic() - renamed_at)
        t0 = time.monotonic()
        lifecycle.rollback(MODEL, 1, state_dir, timeout=120)
        rollback_s = time.monotonic() - t0
        t0 = time.monotonic()
        lifecycle.down(state_dir, timeout=30)
        down_s = time.monotonic() - t0
    finally:
        lifecycle.down(state_dir, timeout=10)
        shutil.rmtree(work, ignore_errors=True)
    return {"backend": backend, "image": image if backend == "docker" else "",
            "file_system_poll_seconds": poll_seconds,
            "up_to_healthy_s": round(up_to_healthy, 3),
            "rename_to_available": _summary(to_available),
            "rollback_verified_s": round(rollback_s, 3), "down_s": round(down_s, 3)}


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
                                               args.poll_seconds))
            except lifecycle.LifecycleError as e:
                print(f"{backend}: {e}", file=sys.stderr)
                return 1
    print(json.dumps(results, indent=2 if not args.json else None))
    return 0


if __name__ == "__main__":
    sys.exit(main())
