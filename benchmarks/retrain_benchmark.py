"""A warm-started retrain on one new MNIST span against a cold full run.

Each row is one real command, as a user or cron runs it (wall time and peak RSS of its
process tree); accuracy is measured afterwards on the whole official 10,000-image test set,
through the pushed model's `predict_images` signature, for both models:

1. cold: `python -m pipelines run mnist` (all 60,000 training images, 5 epochs);
2. setup (not the measured retrain): `make-spans` writes N spans of 10,000 training and
   2,000 eval images; the first `retrain` finds spans 1..N-1 waiting, ingests the older
   ones into its window first, and trains from scratch (5 epochs);
3. retrain: span N arrives; `retrain` ingests it and trains warm-started from the model
   of step 2 on the newest --window spans, for 2 epochs.

    .venv/bin/python benchmarks/retrain_benchmark.py [--spans 6] [--window 3] [--workdir DIR]

Each command's console output (its per-component times) is kept in WORKDIR/*.out.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from pathlib import Path

from pipeline_benchmark import measure

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # before TensorFlow is imported


def test_set_accuracy(model_dir: Path, cache: Path) -> float:
    import numpy as np
    import tensorflow as tf

    sys.path.insert(0, str(ROOT))
    from components.mnist_data import load_mnist

    arrays = load_mnist(cache / "mnist").arrays
    images = arrays["x_test"].reshape(-1, 784).astype(np.float32) / 255.0
    predict = tf.saved_model.load(str(model_dir)).signatures["predict_images"]
    scores = np.concatenate([predict(images=tf.constant(images[i:i + 1000]))["scores"].numpy()
                             for i in range(0, len(images), 1000)])
    return float((scores.argmax(axis=1) == arrays["y_test"]).mean())


def keep(work: Path, name: str, result: dict) -> dict:
    (work / f"{name}.out").write_text(result["output"])
    return result


def row(label: str, result: dict, accuracy: float) -> str:
    return (f"| {label} | {result['exit']} | {result['pipeline']:.1f} s | {result['wall']:.1f} s "
            f"| {result['rss_kib'] / 1024 ** 2:.2f} GiB | {result['metric']} "
            f"| {accuracy * 100:.2f}% |")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--spans", type=int, default=6)
    parser.add_argument("--window", type=int, default=3)
    parser.add_argument("--cache-dir", type=Path, default=ROOT / ".cache")
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args()
    work = args.workdir or Path(tempfile.mkdtemp(prefix="bench-retrain-"))
    python = [sys.executable, "-m", "pipelines"]
    common = ["--cache-dir", str(args.cache_dir), "--state-dir", str(work / "none")]
    print("| run | exit | pipeline wall (summary) | whole command | peak RSS | eval (its own split) "
          "| official test set |")
    print("|---|---|---|---|---|---|---|")

    work.mkdir(parents=True, exist_ok=True)
    cold = measure(python + ["run", "mnist", "--pipeline-root", str(work / "cold" / "runs"),
                             "--repository", str(work / "cold" / "repo")] + common)
    keep(work, "cold", cold)
    print(row("cold full run (60k, 5 epochs)", cold,
              test_set_accuracy(work / "cold" / "repo" / "mnist" / "1", args.cache_dir)),
          flush=True)

    spans = work / "spans"
    measure(python + ["make-spans", "mnist", "--out", str(spans), "--spans", str(args.spans),
                      "--cache-dir", str(args.cache_dir)])
    newest = spans / f"span-{args.spans}"
    held_back = work / f"held-back-span-{args.spans}"
    shutil.move(str(newest), str(held_back))
    retrain = python + ["retrain", "mnist", "--data", str(spans), "--window", str(args.window),
                        "--pipeline-root", str(work / "retrain" / "runs"),
                        "--repository", str(work / "retrain" / "repo")] + common
    setup = keep(work, "setup", measure(retrain))
    print(row(f"setup: retrain from scratch on spans 1-{args.spans - 1}", setup,
              test_set_accuracy(work / "retrain" / "repo" / "mnist" / "1", args.cache_dir)),
          flush=True)
    shutil.move(str(held_back), str(newest))
    warm = keep(work, "retrain", measure(retrain))
    print(row(f"retrain on new span {args.spans}, warm-started, window {args.window}", warm,
              test_set_accuracy(work / "retrain" / "repo" / "mnist" / "2", args.cache_dir)),
          flush=True)
    print(f"\nretrain / cold whole command: {warm['wall'] / cold['wall']:.2f}")
    for result in (cold, setup, warm):
        if result["exit"] != 0:
            print(result["output"], file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
