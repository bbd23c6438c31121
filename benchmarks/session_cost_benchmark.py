"""What one Session call of a SavedModel costs, by batch size and TensorFlow's thread count.

In-process, no server: the SavedModel is loaded and run by the model server's own code
(`servable.loader.load_saved_model`, `Servable.run_direct`: a Session callable, as a batch
thread runs a batch). For each `--tensorflow_intra_op_parallelism` value
and batch size: wall time and CPU time (this process's, all its threads) per call, and CPU
per example. CPU is what the cores pay: with intra-op threads a call may finish sooner yet
cost more, and under load the cores are shared with the front ends.

  .venv/bin/python benchmarks/session_cost_benchmark.py --model model_repository/mnist/1

Each setting runs in a process of its own (TensorFlow fixes its thread pools per process).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def measure(model: str, intra: int, batches, seconds: float) -> None:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import numpy as np
    import tensorflow as tf

    sys.path.insert(0, str(ROOT))
    from serving.model_server.servable.loader import Servable, load_saved_model

    session, sigdefs = load_saved_model(
        model, ["serve"], tf.compat.v1.ConfigProto(intra_op_parallelism_threads=intra))
    servable = Servable("model", 1, model, sigdefs, session)  # no batcher: one call, one run
    sig = sigdefs["serving_default"]
    (info,) = sig.inputs.values()
    fetches = tuple(sorted(o.name for o in sig.outputs.values()))

    def call(x):
        return servable.run_direct(fetches, {info.name: x})

    dims = [d.size for d in info.tensor_shape.dim][1:]
    rng = np.random.default_rng(0)
    for batch in batches:
        x = rng.random((batch, *dims), dtype=np.float32)
        for _ in range(10):
            call(x)
        n, wall0, cpu0 = 0, time.perf_counter(), time.process_time()
        while time.perf_counter() - wall0 < seconds:
            call(x)
            n += 1
        wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
        print(f"| {intra} | {batch} | {wall / n * 1e3:.2f} | {cpu / n * 1e3:.2f} | "
              f"{cpu / n / batch * 1e6:.0f} |", flush=True)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", required=True, help="a SavedModel directory (one version)")
    p.add_argument("--intra", default="0,1",
                   help="intra-op thread counts to compare (0: TensorFlow's choice)")
    p.add_argument("--batches", default="1,2,4,8,16,32", help="batch sizes")
    p.add_argument("--seconds", type=float, default=2.0, help="seconds timed per cell")
    p.add_argument("--one", type=int, help=argparse.SUPPRESS)  # a child: one intra value
    args = p.parse_args(argv)
    batches = [int(b) for b in args.batches.split(",")]
    if args.one is not None:
        measure(args.model, args.one, batches, args.seconds)
        return 0
    print("| intra-op threads | batch | wall ms/call | CPU ms/call | CPU us/example |")
    print("|---|---|---|---|---|", flush=True)
    for intra in (int(i) for i in args.intra.split(",")):
        subprocess.run([sys.executable, __file__, "--model", args.model, "--batches",
                        args.batches, "--seconds", str(args.seconds), "--one", str(intra)],
                       check=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
