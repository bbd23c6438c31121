"""Soak: `schedule` for many iterations, the way it runs for months, with a client querying.

Half_plus_two in the fast profile: a server (`serving up`, process backend) over a fresh
repository, then `python -m pipelines schedule half_plus_two --every 1s` with retention
(`--keep-versions`, `--keep-runs`, `--keep-days 0`); before each run a new span arrives,
every third one corrupted (schema anomalies) or label-shifted (drift), alternately. A
client thread sends REST predicts to the model the whole time (no version named).

Reported per iteration: the run's exit code, the repository's and the pipeline root's disk,
ML Metadata's size and the runs it holds, the run logs' size, the schedule process tree's
RSS (the schedule and its retrain child), the stable version; and overall: runs by outcome,
failed client requests (any answer but 200 once a first version is served; target 0), and
the versions served over time. With --json, the file is rewritten after every iteration (a
run cut short leaves its iterations so far, "finished": false).

Usage: .venv/bin/python benchmarks/soak_benchmark.py [--iterations 50] [--json FILE]
Exit codes: 0 measured; 1 the schedule or the server failed; 2 bad usage.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import re
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil
import requests

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipelines.models import half_plus_two  # noqa: E402
from pipelines.config import RunConfig  # noqa: E402
from serving import lifecycle, rollouts  # noqa: E402
from serving.lifecycle.config import UpConfig  # noqa: E402
from serving.repository import ModelRepository  # noqa: E402

MODEL = "half_plus_two"
ENDED = re.compile(r"schedule: run (\d+) ended: .* \(exit (\d+)\)")


class Client(threading.Thread):
    """REST predicts back to back; counts answers by status, and which version answered
    (y = 0.5 x + b: the models differ only slightly, so the version is read from the
    server's status instead, once a second)."""

    def __init__(self, rest_url: str):
        super().__init__(daemon=True)
        self.url = f"{rest_url}/v1/models/{MODEL}:predict"
        self.status = collections.Counter()
        self.failures = []
        self.served_once = False
        self.stop = threading.Event()

    def run(self):
        session = requests.Session()
        while not self.stop.is_set():
            try:
                r = session.post(self.url, json={"instances": [1.0]}, timeout=10)
                code = r.status_code
            except requests.RequestException as e:
                code = type(e).__name__
            if code == 200:
                self.served_once = True
            self.status[code] += 1
            if code != 200 and self.served_once:
                self.failures.append((time.time(), code))
            time.sleep(0.02)


def du(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.exists() else 0


def runs_in_metadata(runs: Path) -> int:
    """The `pipeline_run` contexts of every store under the pipeline root."""
    total = 0
    for path in runs.glob("*/metadata.sqlite"):
        try:
            connection = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)
            total += connection.execute(
                "SELECT count(*) FROM Context c JOIN Type t ON t.id = c.type_id "
                "WHERE t.name = 'pipeline_run'").fetchone()[0]
            connection.close()
        except sqlite3.Error:
            pass
    return total


def write_json(path: Path, result: dict) -> None:
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(json.dumps(result, indent=2))
    os.replace(temporary, path)


def tree_rss(pid: int) -> int:
    try:
        proc = psutil.Process(pid)
        return sum(p.memory_info().rss for p in [proc, *proc.children(recursive=True)])
    except psutil.Error:
        return 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0], allow_abbrev=False)
    p.add_argument("--iterations", type=int, default=50)
    p.add_argument("--keep-versions", type=int, default=3)
    p.add_argument("--keep-runs", type=int, default=3)
    p.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = p.parse_args(argv)

    work = Path(tempfile.mkdtemp(prefix="soak_"))
    spans_dir, repo, runs, state_dir = work / "spans", work / "repo", work / "runs", work / "state"
    config = RunConfig(pipeline_root=runs, repository=repo, profile="fast")
    half_plus_two.write_spans(config, spans_dir, [1], "clean")
    server = lifecycle.up(UpConfig(repository=repo, models=(MODEL,), state_dir=state_dir,
                                   backend="process", grpc_port=0, rest_port=0,
                                   config_poll_seconds=1))
    client = Client(server.addresses.rest_url)
    client.start()
    schedule = subprocess.Popen(
        [sys.executable, "-m", "pipelines", "schedule", MODEL, "--data", str(spans_dir),
         "--every", "1s", "--max-runs", str(args.iterations), "--profile", "fast",
         "--repository", str(repo), "--pipeline-root", str(runs), "--state-dir",
         str(state_dir), "--keep-versions", str(args.keep_versions), "--keep-runs",
         str(args.keep_runs), "--keep-days", "0", "--infra-validation", "off",
         "--timeout", "120"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    rows, peak = [], 0
    sampler_stop = threading.Event()

    def sample():
        nonlocal peak
        while not sampler_stop.is_set():
            peak = max(peak, tree_rss(schedule.pid))
            time.sleep(0.5)

    threading.Thread(target=sample, daemon=True).start()
    started = time.monotonic()
    next_span = 2
    try:
        said = ""  # the run's last console line: its outcome in words
        for line in schedule.stdout:
            match = ENDED.search(line)
            if not match:
                if line.strip() and not line.startswith("schedule:"):
                    said = line.strip()
                continue
            run, code = int(match.group(1)), int(match.group(2))
            kind = ("corrupted" if (next_span // 3) % 2 else "label-shift") \
                if next_span % 3 == 0 else "clean"
            half_plus_two.write_spans(config, spans_dir, [next_span], kind)
            next_span += 1
            record = rollouts.load(ModelRepository(repo).model_dir(MODEL), MODEL)
            rows.append({"run": run, "exit": code, "at_s": round(time.monotonic() - started),
                         "next_span_kind": kind, "repository_mb": round(du(repo) / 2**20, 2),
                         "pipeline_root_mb": round(du(runs) / 2**20, 2),
                         "metadata_mb": round(sum(f.stat().st_size for f in
                                                  runs.glob("*/metadata.sqlite")) / 2**20, 2),
                         "runs_in_metadata": runs_in_metadata(runs),
                         "logs_mb": round(sum(du(d) for d in runs.glob("*/logs")) / 2**20, 2),
                         "log_files": sum(1 for d in runs.glob("*/logs") for _ in d.iterdir()),
                         "peak_rss_mb": round(peak / 2**20), "stable": record.stable,
                         "said": said[:160]})
            print(json.dumps(rows[-1]), flush=True)
            if args.json:
                write_json(args.json, summary(rows, client, started, work, finished=False))
            peak = 0
        schedule.wait()
    finally:
        sampler_stop.set()
        client.stop.set()
        client.join(15)
        if schedule.poll() is None:
            schedule.terminate()
        lifecycle.down(state_dir)
    result = summary(rows, client, started, work, finished=True)
    print(json.dumps({k: v for k, v in result.items() if k != "rows"}, indent=2))
    if args.json:
        write_json(args.json, result)
    return 0 if schedule.returncode == 0 else 1


def summary(rows, client: Client, started: float, work: Path, finished: bool) -> dict:
    outcomes = collections.Counter(r["exit"] for r in rows)
    return {"iterations": len(rows), "finished": finished,
            "wall_s": round(time.monotonic() - started),
            "runs_by_exit_code": dict(sorted(outcomes.items())),
            "client_answers": {str(k): v for k, v in dict(client.status).items()},
            "client_failures_after_first_version": len(client.failures),
            "client_failures": [[round(t), str(c)] for t, c in client.failures[:50]],
            "stable_over_time": [r["stable"] for r in rows], "rows": rows, "work": str(work)}


if __name__ == "__main__":
    sys.exit(main())
