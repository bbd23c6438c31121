"""`python -m pipelines history` against a synthetic ML Metadata store of many runs.

A schedule every 6 hours makes about 1,460 runs a year. This writes `--runs` runs (default
5,000) of `mnist_retrain` into a fresh store, each with its outcome, spans, metrics and
pushed version recorded the way `retrain` records them, then times the whole command
(`python -m pipelines history mnist`, text and `--json`, fresh processes, imports
included) and the in-process read (`history.runs`) and the retrain's own lookup
(`history.last_finished_with`).

Usage: .venv/bin/python benchmarks/history_benchmark.py [--runs 5000] [--repeats 3]
Exit codes: 0 measured; 2 bad usage.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipelines import outcomes  # noqa: E402
from pipelines.runs import history, metadata  # noqa: E402
from pipelines.config import RunConfig  # noqa: E402


def fill(pipeline_root: Path, runs: int) -> float:
    """`runs` recorded runs of mnist_retrain; returns the seconds it took."""
    path = RunConfig(pipeline_root=pipeline_root).metadata_path("mnist_retrain")
    path.parent.mkdir(parents=True, exist_ok=True)
    store = metadata.open_store(path, readonly=False, create=True)
    started = time.monotonic()
    for i in range(runs):
        run_id = f"2026-01-01T00:00:00.{i:06d}"
        context = metadata.create_run(store, run_id)
        blessed = i % 10 != 0
        metadata.record(store, context, **{
            metadata.OUTCOME: (outcomes.PUSHED if blessed else outcomes.NOT_BLESSED).name,
            metadata.REASON: "", metadata.PUSHED_VERSION: i + 1 if blessed else None,
            history.SPAN: i + 3, history.SPAN_FINGERPRINT: f"{i:040x}",
            history.SUMMARY: json.dumps({"spans": [i + 1, i + 2, i + 3],
                                         "metrics": {"sparse_categorical_accuracy": 0.99},
                                         "blessed": blessed, "warm_start_version": i or None,
                                         "infra_validation": "passed"}, sort_keys=True)})
    return time.monotonic() - started


def time_command(args, repeats: int) -> list:
    times = []
    for _ in range(repeats):
        t0 = time.monotonic()
        subprocess.run([sys.executable, "-m", "pipelines", *args], cwd=ROOT, check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        times.append(round(time.monotonic() - t0, 2))
    return times


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0], allow_abbrev=False)
    p.add_argument("--runs", type=int, default=5000)
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="history_bench_") as tmp:
        root = Path(tmp) / "runs"
        fill_s = fill(root, args.runs)
        config = RunConfig(pipeline_root=root)
        reads = []
        for _ in range(args.repeats):
            t0 = time.monotonic()
            records = history.runs(config, "mnist")
            reads.append(round(time.monotonic() - t0, 3))
        lookups = []
        for _ in range(args.repeats):
            t0 = time.monotonic()
            history.last_finished_with(config.metadata_path("mnist_retrain"), args.runs)
            lookups.append(round(time.monotonic() - t0, 3))
        common = ["history", "mnist", "--pipeline-root", str(root)]
        result = {"runs": len(records), "fill_s": round(fill_s, 1),
                  "history_runs_in_process_s": reads,
                  "last_finished_with_s": lookups,
                  "command_text_s": time_command(common, args.repeats),
                  "command_json_s": time_command(common + ["--json"], args.repeats)}
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
