"""How long the REST front end takes to decode a :predict body, in-process, no server.

Times `rest_json.loads` + `JsonInputs(...).decode(signature)` (the work a front-end worker
does on its event loop for a REST :predict, orjson's parse included) and the decode alone
(`decode` on an already-parsed body), for an MNIST body of 1 image and of 32 images
(`{"instances": [[784 floats in [0, 1]]]}`, a float `images` input). With `--baseline FILE`
the same bodies are timed, interleaved round by round, with a second copy of rest_json loaded
from FILE (e.g. the committed one: `git show HEAD:serving/model_server/frontends/rest_json.py >
/tmp/rest_json_before.py`), so a before/after pair shares the machine's state.

Usage: python benchmarks/rest_json_benchmark.py [--rounds 5] [--baseline FILE]
Prints, per body and variant, the best and median time per decode over the rounds.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import statistics
import sys
import timeit
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _load(path: Path, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _bodies(images: int) -> bytes:
    import numpy as np
    pixels = np.random.default_rng(images).random((images, 784), dtype=np.float32)
    return json.dumps({"signature_name": "predict_images",
                       "instances": pixels.tolist()}).encode()


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=5, help="rounds, each timing every variant")
    p.add_argument("--baseline", type=Path, help="another rest_json.py to time alongside")
    args = p.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    from serving.model_server import tf_protos
    tf_protos.without_runtime()  # as in a front-end worker: TensorFlow's protos only
    from tensorflow.core.framework import types_pb2
    from tensorflow.core.protobuf import meta_graph_pb2

    from serving.model_server.frontends import rest_json
    from serving.model_server.servable.tensors import DEFAULT_MAX_ELEMENTS

    modules = {"current": rest_json}
    if args.baseline:
        modules = {"baseline": _load(args.baseline, "rest_json_baseline"), **modules}
    signature = meta_graph_pb2.SignatureDef()
    signature.inputs["images"].dtype = types_pb2.DT_FLOAT
    cases = {}
    for images in (1, 32):
        body = _bodies(images)
        for label, module in modules.items():
            parsed = module.loads(body)
            expected = module.JsonInputs(parsed, len(body)).decode(signature, DEFAULT_MAX_ELEMENTS)
            assert expected["images"].shape == (images, 784)

            def whole(module=module, body=body):
                inputs = module.JsonInputs(module.loads(body), len(body))
                inputs.decode(signature, DEFAULT_MAX_ELEMENTS)

            def decode(module=module, parsed=parsed, body=body):
                module.JsonInputs(parsed, len(body)).decode(signature, DEFAULT_MAX_ELEMENTS)

            cases[(images, "loads+decode", label)] = whole
            cases[(images, "decode", label)] = decode
    times = {key: [] for key in cases}
    for _ in range(args.rounds):
        for key, fn in cases.items():
            number = 2000 if key[0] == 1 else 100
            times[key].append(min(timeit.repeat(fn, number=number, repeat=3)) / number)
    print(f"{'images':>6} {'what':<13} {'module':<9} {'best us':>9} {'median us':>10}  rounds (us)")
    for (images, what, label), runs in times.items():
        print(f"{images:>6} {what:<13} {label:<9} {min(runs) * 1e6:>9.1f} "
              f"{statistics.median(runs) * 1e6:>10.1f}  "
              + " ".join(f"{t * 1e6:.1f}" for t in runs))
    return 0


if __name__ == "__main__":
    sys.exit(main())
