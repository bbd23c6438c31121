"""A large REST body next to small requests: is it fast, and does it stall the others?

Starts `python -m serving.model_server` (REST, no batching: a 500-image request is over
any sensible `max_batch_size`, and TF Serving refuses such a request unless it may split
large batches, which this server does not do) on the MNIST model and half_plus_two; then,
while `wrk` keeps 8 connections of small half_plus_two :predict requests going, sends an
~8 MB MNIST :predict body (500 images, row format) `--requests` times, one after the
other. Reports the large request's time (client view, upload included) and the small
requests' p50/p99 latency over the same window, and the same small load alone.

Usage: python benchmarks/large_body_benchmark.py [--requests 5] [--server-flags=--front_end_workers=1]
Only 127.0.0.1 is used.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

from serving_benchmark import ROOT, drive_wrk, place_mnist_model, start_process, \
    stop_process

IMAGES = 500  # x 784 floats with 4 decimals in JSON: about 8 MB


def post(url: str, body: bytes) -> float:
    started = time.monotonic()
    request = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=120) as response:
        assert response.status == 200
        assert len(json.loads(response.read())["predictions"]) == IMAGES
    return time.monotonic() - started


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--requests", type=int, default=5, help="large requests to send")
    p.add_argument("--server-flags", default="", help="extra model server flags")
    args = p.parse_args(argv)
    sys.path[:0] = [str(ROOT), str(ROOT / "tests")]
    import numpy as np

    import saved_models
    from toolkit_testing import free_port, write_models_config

    work = Path(tempfile.mkdtemp(prefix="large-body-bench-"))
    try:
        place_mnist_model("auto", work / "repo" / "mnist" / "1")
        saved_models.export_half_plus_two(work / "repo" / "half_plus_two" / "1")
        config = write_models_config(work / "repo", ("mnist", "half_plus_two"))
        images = np.random.default_rng(0).random((IMAGES, 784), dtype=np.float32)
        big = json.dumps({"signature_name": "predict_images",
                          "instances": images.round(4).tolist()}).encode()
        small = json.dumps({"instances": [1.0]}).encode()
        gport, rport = free_port(), free_port()
        proc = start_process(["-m", "serving.model_server", f"--port={gport}",
                              f"--rest_api_port={rport}", "--host=127.0.0.1",
                              f"--model_config_file={config}",
                              *args.server_flags.split()], rport, work / "server.log")
        try:
            base = f"http://127.0.0.1:{rport}/v1/models"
            post(f"{base}/mnist:predict", big)  # warm up
            alone = drive_wrk(f"{base}/half_plus_two:predict", small, 8, 1, 5)
            times = []

            def send_big():
                time.sleep(1.0)
                for _ in range(args.requests):
                    times.append(post(f"{base}/mnist:predict", big))
            sender = threading.Thread(target=send_big)
            sender.start()
            window = 2.0 + args.requests * 1.0  # covers the large requests at < 1 s each
            during = drive_wrk(f"{base}/half_plus_two:predict", small, 8, 0, window)
            sender.join()
        finally:
            stop_process(proc)
        print(f"large body: {len(big) / 1e6:.1f} MB, {args.requests} requests, seconds each: "
              + ", ".join(f"{t:.2f}" for t in times)
              + f" (median {statistics.median(times):.2f}; target < 0.5)")
        for label, r in (("small requests alone", alone), ("small requests meanwhile", during)):
            print(f"{label}: {r['rps']:.0f} req/s, p50 {r['p50_ms']:.1f} ms, "
                  f"p99 {r['p99_ms']:.1f} ms, errors {r['errors']}")
        print("(p99 meanwhile: target < 50 ms)")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
