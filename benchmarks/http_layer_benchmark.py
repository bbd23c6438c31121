"""What the REST front end's HTTP server costs a request, with no model behind it.

A front-end worker spends about 0.3 ms of CPU on each MNIST :predict (benchmarks/README.md,
"Issue 22"). This separates the HTTP server's share: the same application, the model
server's `RestApp` (routing, the JSON body decoded into arrays against a float `images`
[N, 784] input, the answer written as JSON), answers from a stub that returns a fixed 10-score
prediction instead of calling a model, under

  uvicorn        the model server's own `RestServer`: uvicorn, httptools, uvloop, and the
                 limits of `rest.HttpProtocol` (what every worker runs)
  granian-asgi   Granian (a Rust HTTP server: hyper, tokio) running the same ASGI app, in
                 this process's uvloop event loop (`granian.server.embed`), none of the
                 limits
  granian-rsgi   Granian's own interface (RSGI): the app's `_respond` called with the
                 request's method, path, headers and body, no ASGI messages

The server is pinned to core 0 and wrk to core 1 (where there are two), one process at a
time, the variants alternating round by round; per run: requests/s, p50/p99, and the server
process's CPU (user + system, all its threads) per request.

Granian is not one of the toolkit's dependencies: the granian variants run where it can be
imported (`pip install --target /tmp/granian granian==2.8.7`, then PYTHONPATH=/tmp/granian),
and are skipped, saying so, where it cannot.

Usage: .venv/bin/python benchmarks/http_layer_benchmark.py [--rounds 3] [--duration 10]
       [--clients 32] [--variants uvicorn,granian-asgi,granian-rsgi]
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import serving_benchmark as bench

ROOT = Path(__file__).resolve().parents[1]
VARIANTS = ("uvicorn", "granian-asgi", "granian-rsgi")
TICKS = os.sysconf("SC_CLK_TCK")
_PIXELS = 784


# ---- the server (a child process of this script) --------------------------------------------

def serve(variant: str, port: int) -> None:
    """Serve `variant` on 127.0.0.1:`port` until killed."""
    if len(os.sched_getaffinity(0)) > 1:
        os.sched_setaffinity(0, {0})
    sys.path.insert(0, str(ROOT))
    from serving.model_server.tf_protos import without_runtime

    without_runtime()  # what a worker does: TensorFlow's protos, not its runtime
    import numpy as np
    from tensorflow.core.framework import types_pb2
    from tensorflow.core.protobuf import meta_graph_pb2
    from tensorflow_serving.apis import model_pb2

    from serving.model_server.config import ServerConfig
    from serving.model_server.frontends.rest import HttpLimits, RestApp, RestServer
    from serving.model_server.servable.run import PredictResult

    signature = meta_graph_pb2.SignatureDef()
    signature.inputs["images"].name = "images:0"
    signature.inputs["images"].dtype = types_pb2.DT_FLOAT
    answered = model_pb2.ModelSpec(name="mnist", signature_name="serving_default")
    answered.version.value = 1
    scores = np.full((1, 10), 0.1, np.float32)

    class NoModel:
        """The APIs as RestApp calls them: the inputs decoded as for a model, no model run."""

        executor = None

        def count_failures(self, *_):
            return contextlib.nullcontext()

        async def predict(self, call, entrypoint, timeout=None):
            inputs = call.inputs.decode(signature, 1 << 24)
            if inputs["images"].shape != (1, _PIXELS):
                raise AssertionError(f"decoded {inputs['images'].shape}")
            return PredictResult(answered, {"scores": scores})

    app = RestApp(NoModel(), HttpLimits.of(ServerConfig()))
    if variant == "uvicorn":
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", port))
        sock.listen(1024)
        RestServer(app, sock, drain_timeout=1.0).start()
        while True:
            time.sleep(3600)

    import uvloop
    from granian.constants import Interfaces
    from granian.server.embed import Server

    async def rsgi(scope, protocol):
        body = await protocol()
        headers = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in scope.headers.items()]
        asgi_scope = {"method": scope.method, "raw_path": scope.path.encode("latin-1"),
                      "headers": headers}

        async def receive():
            return {"type": "http.request", "body": body, "more_body": False}

        status, ctype, out, _ = await app._respond(asgi_scope, receive)
        protocol.response_bytes(status, [("content-type", ctype.decode())], out)

    async def main():
        interface = Interfaces.ASGI if variant == "granian-asgi" else Interfaces.RSGI
        server = Server(app if variant == "granian-asgi" else rsgi, address="127.0.0.1",
                        port=port, interface=interface, runtime_threads=1,
                        log_enabled=False)
        await server.serve()

    uvloop.run(main())


# ---- the load -------------------------------------------------------------------------------

def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def run_variant(variant: str, body: bytes, clients: int, duration: float) -> dict:
    from toolkit_testing import free_port

    port = free_port()
    server = subprocess.Popen([sys.executable, __file__, "--serve", variant, str(port)],
                              stderr=subprocess.PIPE, text=True)
    try:
        url = f"http://127.0.0.1:{port}/v1/models/mnist:predict"
        deadline = time.monotonic() + 60
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port)):
                break
            if server.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{variant} did not start: {server.stderr.read()[-2000:]}")
            time.sleep(0.2)
        core = 1 if len(os.sched_getaffinity(0)) > 1 and shutil.which("taskset") else None
        bench.drive_wrk(url, body, clients, 0, 2, core)  # warm-up, not timed
        before = cpu_seconds(server.pid)
        result = bench.drive_wrk(url, body, clients, 0, duration, core)
        result["cpu_us"] = (cpu_seconds(server.pid) - before) * 1e6 / max(result["n"], 1)
        return result
    finally:
        server.kill()
        server.wait()


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--duration", type=float, default=10.0, help="seconds measured per run")
    p.add_argument("--clients", type=int, default=32)
    p.add_argument("--variants", default=",".join(VARIANTS))
    p.add_argument("--serve", nargs=2, metavar=("VARIANT", "PORT"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.serve:
        serve(args.serve[0], int(args.serve[1]))
        return 0
    if shutil.which("wrk") is None:
        print("wrk is not installed (apt-get install wrk)", file=sys.stderr)
        return 2
    variants = [v for v in args.variants.split(",") if v]
    unknown = set(variants) - set(VARIANTS)
    if unknown:
        p.error(f"unknown variants: {', '.join(sorted(unknown))}")
    if importlib.util.find_spec("granian") is None:
        skipped = [v for v in variants if v.startswith("granian")]
        if skipped:
            print(f"skipped (granian cannot be imported): {', '.join(skipped)}")
        variants = [v for v in variants if not v.startswith("granian")]
    sys.path[:0] = [str(ROOT), str(ROOT / "tests")]  # toolkit_testing's free ports
    body = json.dumps({"instances": [[0.5] * _PIXELS]}).encode()
    for round_ in range(1, args.rounds + 1):
        for variant in variants:
            r = run_variant(variant, body, args.clients, args.duration)
            print(f"round {round_} {time.strftime('%H:%M:%S')} {variant:13s} "
                  f"{r['rps']:7.0f} req/s  p50 {r['p50_ms']:.2f} ms  p99 {r['p99_ms']:.2f} ms  "
                  f"server CPU {r['cpu_us']:.0f} us a request  errors {r['errors']}",
                  flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
