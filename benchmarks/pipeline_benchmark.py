"""Time cold and cached pipeline runs end to end, as a user runs them; print a Markdown table.

Cold: an empty pipeline root, repository and data cache (MNIST is fetched and converted).
Cached: the same command again with nothing changed. Each run is a fresh
`python -m pipelines run NAME` process; peak memory is that process tree's max RSS.

    .venv/bin/python benchmarks/pipeline_benchmark.py [--pipelines half_plus_two mnist]
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def run_once(name: str, work: Path, profile: str) -> dict:
    return measure([sys.executable, "-m", "pipelines", "run", name, "--profile", profile,
                    "--pipeline-root", str(work / "runs"), "--repository", str(work / "repo"),
                    "--cache-dir", str(work / "cache")])


def measure(command) -> dict:
    """Run one `python -m pipelines ...` command: exit code, wall time, peak RSS (the
    process tree's), the summary's pipeline wall time and first eval metric, the output."""
    started = time.monotonic()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    output = process.stdout.read()
    _, status, usage = os.wait4(process.pid, 0)  # this run's own peak RSS, children included
    wall = time.monotonic() - started
    summary = re.search(r"wall time: ([\d.]+)s", output)
    metric = re.search(r"eval (\S+) = (\S+)", output)
    return {"exit": os.waitstatus_to_exitcode(status), "wall": wall, "rss_kib": usage.ru_maxrss,
            "pipeline": float(summary.group(1)) if summary else float("nan"),
            "metric": f"{metric.group(1)} {metric.group(2)}" if metric else "-",
            "output": output}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pipelines", nargs="+", default=["half_plus_two", "mnist"])
    parser.add_argument("--profile", default="default")
    args = parser.parse_args()
    print("| pipeline | run | exit | pipeline wall (summary) | whole command | peak RSS | eval |")
    print("|---|---|---|---|---|---|---|")
    for name in args.pipelines:
        with tempfile.TemporaryDirectory(prefix=f"bench-{name}-") as work:
            for label in ("cold", "cached"):
                result = run_once(name, Path(work), args.profile)
                print(f"| {name} | {label} | {result['exit']} | {result['pipeline']:.1f} s "
                      f"| {result['wall']:.1f} s | {result['rss_kib'] / 1024 ** 2:.2f} GiB "
                      f"| {result['metric']} |", flush=True)
                if result["exit"] != 0:
                    print(result["output"], file=sys.stderr)
                    return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
