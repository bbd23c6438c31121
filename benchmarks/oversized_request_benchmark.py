"""Peak memory of the model server while it refuses oversized requests.

The request of issue 11: a ~20-byte gRPC PredictRequest whose tensor_shape is
[134217728] with a single float_val, which TensorFlow broadcasts to 512 MiB (and the
server used to decode, run and answer, peaking at 9.9 GB). Starts
`python -m serving.model_server` on half_plus_two, measures its resident memory once idle
and warmed up, resets the kernel's peak (VmHWM, via /proc/PID/clear_refs), sends the
request `--requests` times, and reports the peak over idle and the time per refusal.

Usage: python benchmarks/oversized_request_benchmark.py [--elements 134217728]
Linux only (reads /proc; resetting the peak needs the server to be our child or root).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def memory_kib(pid: int) -> dict:
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            fields[key] = int(value.split()[0])
    return fields


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--elements", type=int, default=134217728,
                   help="tensor_shape of the request (one float_val, broadcast)")
    p.add_argument("--requests", type=int, default=20)
    p.add_argument("--server-flags", default="", help="extra model server flags")
    args = p.parse_args(argv)

    sys.path[:0] = [str(ROOT), str(ROOT / "tests")]  # the test support: SavedModels, free ports
    import grpc
    from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

    import saved_models
    from toolkit_testing import free_port

    work = Path(tempfile.mkdtemp(prefix="oversized-bench-"))
    proc = None
    try:
        saved_models.export_half_plus_two(work / "half_plus_two" / "1")
        port = free_port()
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
        proc = subprocess.Popen(
            [sys.executable, "-m", "serving.model_server", f"--port={port}",
             "--host=127.0.0.1", "--model_name=half_plus_two",
             f"--model_base_path={work / 'half_plus_two'}", *args.server_flags.split()],
            cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        channel = grpc.insecure_channel(f"127.0.0.1:{port}")
        grpc.channel_ready_future(channel).result(timeout=120)
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)

        good = predict_pb2.PredictRequest()
        good.model_spec.name = "half_plus_two"
        good.inputs["x"].dtype = 1  # DT_FLOAT
        good.inputs["x"].tensor_shape.dim.add(size=1)
        good.inputs["x"].float_val.append(1.0)
        for _ in range(200):  # warm: every code path a request takes has run
            stub.Predict(good, timeout=30)
        time.sleep(1.0)
        idle = memory_kib(proc.pid)["VmRSS"]
        Path(f"/proc/{proc.pid}/clear_refs").write_text("5")  # VmHWM := VmRSS

        huge = predict_pb2.PredictRequest()
        huge.CopyFrom(good)
        huge.inputs["x"].tensor_shape.dim[0].size = args.elements
        codes, seconds = [], []
        for _ in range(args.requests):
            t0 = time.monotonic()
            try:
                stub.Predict(huge, timeout=60)
                codes.append("OK")
            except grpc.RpcError as e:
                codes.append(e.code().name)
            seconds.append(time.monotonic() - t0)
        after = memory_kib(proc.pid)
        assert stub.Predict(good, timeout=30).outputs["y"].float_val[0] == 2.5
        print(f"request: {len(huge.SerializeToString())} bytes, shape [{args.elements}], "
              f"1 float_val; answers: {sorted(set(codes))}")
        print(f"idle RSS {idle / 1024:.1f} MiB; peak RSS while refusing {args.requests} "
              f"requests {after['VmHWM'] / 1024:.1f} MiB (+{(after['VmHWM'] - idle) / 1024:.1f}"
              f" MiB); RSS after {after['VmRSS'] / 1024:.1f} MiB")
        print(f"time per request: median {sorted(seconds)[len(seconds) // 2] * 1e3:.1f} ms, "
              f"max {max(seconds) * 1e3:.1f} ms")
        channel.close()
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(30)
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
