"""Time the MNIST Trainer alone: components/mnist_trainer.py's run_fn, as the TFX Trainer calls it.

It reads the TFRecords the pipeline already wrote (`python -m pipelines run mnist` writes them
to .cache/mnist/tfrecords/... and a Transform graph under its pipeline root), builds the same
FnArgs as the Trainer component (a real DataAccessor over the same files, the Transform
output, train/eval steps from the profile), runs run_fn once per repeat, then scores the
exported model's `classification` signature (what the Evaluator measures) on every eval
example. One Markdown row per run: settings, train steps, run_fn's wall time and CPU time (user +
system, all threads: steadier than wall time when other work shares the cores), the epochs'
wall times, accuracy, load average.

    .venv/bin/python benchmarks/mnist_trainer_benchmark.py                 # the default profile
    .venv/bin/python benchmarks/mnist_trainer_benchmark.py --set epochs=4 --set batch_size=256
    .venv/bin/python benchmarks/mnist_trainer_benchmark.py --steps 100     # throughput only

`--set NAME=VALUE` overrides a hyperparameter of the Trainer's custom_config (DEFAULTS of
components/mnist_trainer.py, or the profile's schedule); `--steps N` trains N steps in one
epoch, validates on one batch and skips the accuracy (for comparing the cost of a step).
"""

from __future__ import annotations

import argparse
import ast
import glob
import logging
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Optional

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

DATA = ROOT / ".cache" / "mnist" / "tfrecords" / "train-all_eval-all"


def newest_transform_graph(pipeline_root: Path) -> Optional[Path]:
    found = sorted(glob.glob(str(pipeline_root / "mnist" / "Transform" / "transform_graph" / "*")),
                   key=os.path.getmtime)
    return Path(found[-1]) if found else None


def fn_args(data: Path, transform_graph: Path, serving_dir: str, custom_config: Dict,
            train_steps: int, eval_steps: int):
    from tfx.components.trainer import fn_args_utils
    from tfx.components.util import tfxio_utils
    from tfx.types import artifact_utils, standard_artifacts

    examples = standard_artifacts.Examples()
    examples.uri = str(data)
    examples.split_names = artifact_utils.encode_split_names(["train", "eval"])
    telemetry = ["benchmark"]
    accessor = fn_args_utils.DataAccessor(
        tf_dataset_factory=tfxio_utils.get_tf_dataset_factory_from_artifact([examples], telemetry),
        record_batch_factory=tfxio_utils.get_record_batch_factory_from_artifact([examples],
                                                                                telemetry),
        data_view_decode_fn=None)
    return fn_args_utils.FnArgs(
        working_dir=serving_dir, train_files=[str(data / "train" / "*")],
        eval_files=[str(data / "eval" / "*")], train_steps=train_steps, eval_steps=eval_steps,
        transform_output=str(transform_graph), transform_graph_path=str(transform_graph),
        data_accessor=accessor, serving_model_dir=serving_dir, custom_config=custom_config)


class EpochTimes(logging.Handler):
    """The Trainer's epoch lines (components/training_progress.py), as they are emitted."""

    def __init__(self):
        super().__init__()
        self.lines: List[str] = []

    def emit(self, record):
        if getattr(record, "progress", None) == "epoch":
            self.lines.append(record.getMessage())


def accuracy(export_dir: str, data: Path) -> float:
    """The `classification` signature on every eval example: what TFMA's accuracy is."""
    import numpy as np
    import tensorflow as tf

    model = tf.saved_model.load(export_dir)
    classify = model.signatures["classification"]
    files = sorted(glob.glob(str(data / "eval" / "*")))
    records = tf.data.TFRecordDataset(files, compression_type="GZIP").batch(1000)
    spec = {"label": tf.io.FixedLenFeature([1], tf.int64)}
    correct = total = 0
    for batch in records:
        labels = tf.io.parse_example(batch, spec)["label"].numpy().reshape(-1)
        scores = classify(inputs=batch)["scores"].numpy()
        correct += int(np.sum(scores.argmax(axis=1) == labels))
        total += len(labels)
    return correct / total


def input_only(args, transform_graph: Path, config: Dict, profile) -> int:
    """Two epochs of the Trainer's training dataset (the first one fills its cache)."""
    import math

    import tensorflow_transform as tft

    from components import mnist_trainer

    batch_size = int(config["batch_size"])
    steps = math.ceil((profile.train_limit or 60_000) / batch_size)
    args_ = fn_args(args.data, transform_graph, "/nonexistent", config, 1, 1)
    dataset = mnist_trainer._dataset(args_, args_.train_files,
                                     tft.TFTransformOutput(str(transform_graph)), batch_size, True)
    iterator = iter(dataset)
    times = []
    for _ in range(2):
        start = time.monotonic()
        for _ in range(steps):
            next(iterator)
        times.append(time.monotonic() - start)
    print(f"| {args.label or '-'} input only | batch_size={batch_size} | {steps} steps/epoch | "
          f"epoch 1 {times[0]:.1f} s, epoch 2 {times[1]:.1f} s | {os.getloadavg()[0]:.1f} |",
          flush=True)
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--data", type=Path, default=DATA,
                        help="train/ and eval/ GZIP TFRecords of tf.Example")
    parser.add_argument("--pipeline-root", type=Path, default=ROOT / "tfx_runs",
                        help="where to find the newest MNIST Transform graph")
    parser.add_argument("--transform-graph", type=Path, default=None,
                        help="a Transform graph directory (default: the newest under --pipeline-root)")
    parser.add_argument("--profile", default="default", help="pipelines/models/mnist.py profile")
    parser.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                        help="a Trainer hyperparameter (repeatable)")
    parser.add_argument("--steps", type=int, default=None,
                        help="train this many steps in one epoch and skip the accuracy")
    parser.add_argument("--repeat", type=int, default=1, help="runs of each setting")
    parser.add_argument("--intra", type=int, default=0, help="TF intra-op threads (0: TF's)")
    parser.add_argument("--inter", type=int, default=0, help="TF inter-op threads (0: TF's)")
    parser.add_argument("--input-only", action="store_true",
                        help="time two passes over the Trainer's training input, no model")
    parser.add_argument("--label", default="", help="a name for this setting in the output")
    args = parser.parse_args(argv)

    import tensorflow as tf
    if args.intra:
        tf.config.threading.set_intra_op_parallelism_threads(args.intra)
    if args.inter:
        tf.config.threading.set_inter_op_parallelism_threads(args.inter)

    from components import mnist_trainer
    from pipelines.models import mnist

    transform_graph = args.transform_graph or newest_transform_graph(args.pipeline_root)
    if transform_graph is None:
        parser.error(f"no MNIST Transform graph under {args.pipeline_root}; run "
                     f"`python -m pipelines run mnist` first or pass --transform-graph")
    overrides = {}
    for item in args.set:
        name, _, value = item.partition("=")
        try:
            overrides[name] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            overrides[name] = value
    profile = mnist.PROFILES[args.profile]
    schedule = {k: overrides.pop(k) for k in list(overrides) if k in mnist.SCHEDULE}
    import dataclasses
    profile = dataclasses.replace(profile, **schedule)
    config = mnist.trainer_config(profile, **overrides)
    train_steps, eval_steps = profile.train_steps(), profile.eval_steps()
    if args.steps:  # the cost of a training step: one epoch, one validation batch
        config["epochs"] = 1
        train_steps, eval_steps = args.steps, 1

    if args.input_only:
        return input_only(args, transform_graph, config, profile)
    handler = EpochTimes()
    logging.getLogger("tfx_toolkit.progress").addHandler(handler)
    logging.getLogger("tfx_toolkit.progress").setLevel(logging.INFO)
    settings = ", ".join(f"{k}={v}" for k, v in sorted(config.items()))
    print("| label | settings | threads | train steps | wall | CPU | epochs' wall | accuracy | load |")
    for run in range(args.repeat):
        handler.lines.clear()
        with tempfile.TemporaryDirectory() as tmp:
            serving_dir = os.path.join(tmp, "serving")
            start, cpu = time.monotonic(), time.process_time()
            mnist_trainer.run_fn(fn_args(args.data, transform_graph, serving_dir, config,
                                         train_steps, eval_steps))
            seconds, cpu = time.monotonic() - start, time.process_time() - cpu
            score = "-" if args.steps else f"{accuracy(serving_dir, args.data):.4f}"
        epochs = "; ".join(line.rsplit("(", 1)[-1].rstrip(")") for line in handler.lines)
        load = os.getloadavg()[0]
        print(f"| {args.label or '-'} | {settings} | intra={args.intra} inter={args.inter} | "
              f"{train_steps} | {seconds:.1f} s | {cpu:.1f} s | {epochs} | {score} | {load:.1f} |",
              flush=True)
        if handler.lines:
            print("   last epoch:", handler.lines[-1], flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
