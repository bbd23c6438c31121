"""TF Serving's example `mnist_client.py`, as its users run it, against a served `mnist` model.

Same contract as tensorflow_serving/example/mnist_client.py: gRPC Predict, model `mnist`,
signature `predict_images`, input `images` float32 [1, 784] in [0, 1], output `scores`,
`--concurrency` requests in flight, and it prints "Inference error rate: X%". The only
change: the test images come from the project's MNIST cache (the original downloads them
from a host that is unreachable here), which holds the official 10,000 test images.

    .venv/bin/python benchmarks/mnist_client.py --server=127.0.0.1:8500 --num_tests=10000
"""

from __future__ import annotations

import argparse
import sys
import threading
from pathlib import Path

import grpc
import numpy as np
import tensorflow as tf
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc


def run(server: str, images: np.ndarray, labels: np.ndarray, concurrency: int) -> float:
    """Error rate over `images`, with at most `concurrency` requests in flight."""
    stub = prediction_service_pb2_grpc.PredictionServiceStub(grpc.insecure_channel(server))
    slots = threading.Semaphore(concurrency)
    lock, done = threading.Lock(), threading.Event()
    counts = {"error": 0, "done": 0, "failed": 0}

    def finished(future, label):
        with lock:
            if future.exception():
                counts["failed"] += 1
                print(future.exception(), file=sys.stderr)
            else:
                scores = np.array(future.result().outputs["scores"].float_val)
                counts["error"] += int(np.argmax(scores) != label)
            counts["done"] += 1
            if counts["done"] == len(images):
                done.set()
        slots.release()

    for image, label in zip(images, labels):
        request = predict_pb2.PredictRequest()
        request.model_spec.name = "mnist"
        request.model_spec.signature_name = "predict_images"
        request.inputs["images"].CopyFrom(tf.make_tensor_proto(image, shape=[1, image.size]))
        slots.acquire()
        future = stub.Predict.future(request, 5.0)
        future.add_done_callback(lambda f, label=label: finished(f, label))
    done.wait()
    if counts["failed"]:
        raise RuntimeError(f"{counts['failed']} requests failed")
    return counts["error"] / len(images)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--server", default="127.0.0.1:8500", help="PredictionService host:port")
    parser.add_argument("--num_tests", type=int, default=10_000, help="number of test images")
    parser.add_argument("--concurrency", type=int, default=1, help="requests in flight")
    parser.add_argument("--mnist_npz", type=Path, default=Path(".cache/mnist/mnist.npz"),
                        help="the MNIST cache written by the pipeline's data loader")
    args = parser.parse_args()
    data = np.load(args.mnist_npz)
    images = data["x_test"][:args.num_tests].reshape(-1, 784).astype(np.float32) / 255.0
    rate = run(args.server, images, data["y_test"][:args.num_tests], args.concurrency)
    print(f"\nInference error rate: {rate * 100:.2f}%")
    return 0


if __name__ == "__main__":
    sys.exit(main())
