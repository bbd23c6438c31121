"""Where a model server's CPU goes under load, and whether its memory grows with it.

Starts serving.model_server on MNIST (the model `make pipeline` pushed, else the
random-weight stand-in, as benchmarks/serving_benchmark.py does), with that benchmark's
batching unless --no-batching; drives it with wrk over REST or that benchmark's gRPC
clients (h2load where installed) at --clients for --duration seconds; and meanwhile
samples the model process and every front-end worker with `py-spy record` (blocking:
py-spy pauses the process for each sample, which costs some throughput, because with
--nonblocking it counts threads waiting in C as busy). Prints, per process and thread,
how busy it was (samples over the samples an always-busy thread gives) and the functions
with the most samples, self and total; writes each process's raw collapsed stacks
(flamegraph.pl's input) under --out.

With --cpu it samples nothing: it reads each thread's CPU time (utime + stime in
/proc/PID/task/TID/stat) and the machine's idle time (/proc/stat) before and after the
measured window, so the load runs at its unsampled rate, and prints per thread the cores
it used and its CPU per request (thread names from a 1-second py-spy record afterwards).

With --memory SECONDS it samples nothing either: it reads each process's resident memory
(VmRSS in /proc/PID/status) every SECONDS through the measured window and prints it, so a
long run (--duration 60 serves well over 100,000 requests at 32 clients) shows whether any
process grows with the requests it serves.

Usage: .venv/bin/python benchmarks/serving_profile.py [--api rest|grpc] [--clients 32]
       [--duration 15] [--server-flags "--front_end_workers=1"] [--out DIR]
       [--cpu | --memory SECONDS]
"""

from __future__ import annotations

import argparse
import collections
import functools
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import serving_benchmark as bench

ROOT = bench.ROOT
RATE = 200  # samples a second
TICKS = os.sysconf("SC_CLK_TCK")  # /proc's CPU times are in these
_LINE = re.compile(r"^(?P<stack>.*) (?P<count>\d+)$")
_FRAME_LINE = re.compile(r":\d+\)$")


def children(pid: int) -> list:
    """The process's direct children (the model server's front-end workers)."""
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        text = (task / "children").read_text().split()
        found.extend(int(c) for c in text)
    return found


def record(pid: int, duration: float, out: Path, idle: bool = False) -> subprocess.Popen:
    py_spy = Path(sys.executable).with_name("py-spy")
    return subprocess.Popen([str(py_spy), "record", "--pid", str(pid), "--rate", str(RATE),
                             "--duration", str(round(duration)), "--format", "raw",
                             "--threads", "--output", str(out), *(["--idle"] if idle else [])],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def thread_cpu(pid: int) -> dict:
    """{thread id: CPU seconds so far} of every thread of `pid`."""
    found = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
        except FileNotFoundError:  # the thread ended meanwhile
            continue
        found[int(task.name)] = (int(fields[11]) + int(fields[12])) / TICKS
    return found


def machine_idle() -> float:
    """Seconds all cores have been idle (/proc/stat's idle + iowait)."""
    fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()
    return (int(fields[4]) + int(fields[5])) / TICKS


def rss_mb(pid: int) -> float:
    """The process's resident memory now, in MB (VmRSS)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def memory_table(pids: dict, samples: list) -> str:
    """Each sample's time and every process's RSS; then each process's first, lowest,
    highest and last."""
    names = list(pids)
    lines = ["\nresident memory (MB), every sample of the measured window:",
             "  " + " | ".join(["  s"] + names)]
    for t, rss in samples:
        lines.append("  " + " | ".join([f"{t:3.0f}"] + [f"{rss[n]:.1f}" for n in names]))
    for n in names:
        values = [rss[n] for _, rss in samples]
        lines.append(f"  {n}: first {values[0]:.1f}, lowest {min(values):.1f}, highest "
                     f"{max(values):.1f}, last {values[-1]:.1f} MB")
    return "\n".join(lines) + "\n"


def thread_names(pid: int) -> dict:
    """{thread id: Python thread name}, from a second of py-spy samples."""
    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp) / "names.txt"
        record(pid, 1, raw, idle=True).wait()
        if not raw.is_file():
            return {}
        text = raw.read_text()
    return {int(m[1]): m[2] for m in re.finditer(r"^thread \((\d+)\): ([^;]+);", text, re.M)}


def cpu_table(pids: dict, before: dict, after: dict, seconds: float, requests: int) -> str:
    lines = []
    for name, pid in pids.items():
        names = thread_names(pid)
        lines.append(f"\n{name} (pid {pid}): cores used, CPU per request")
        used = {t: after[pid].get(t, 0.0) - before[pid].get(t, 0.0) for t in after[pid]}
        for tid, cpu in sorted(used.items(), key=lambda kv: -kv[1]):
            if cpu >= 0.01 * seconds:
                lines.append(f"  {cpu / seconds:5.2f}  {1e6 * cpu / max(requests, 1):5.0f} us"
                             f"  {names.get(tid, 'thread')} ({tid})")
        total = sum(used.values())
        lines.append(f"  {total / seconds:5.2f}  {1e6 * total / max(requests, 1):5.0f} us"
                     f"  all threads")
    return "\n".join(lines) + "\n"


def summarize(raw: Path, duration: float, top: int) -> str:
    """Per thread: busy share; then the top functions by self and total samples."""
    threads = collections.Counter()
    self_n, total_n = collections.Counter(), collections.Counter()
    samples = 0
    for line in raw.read_text().splitlines():
        m = _LINE.match(line)
        if not m:
            continue
        count = int(m["count"])
        frames = m["stack"].split(";")
        thread, frames = frames[0], [_FRAME_LINE.sub(")", f) for f in frames[1:]]
        threads[thread] += count
        samples += count
        if frames:
            self_n[frames[-1]] += count
            for frame in set(frames):
                total_n[frame] += count
    if not samples:
        return "  no samples (the process was idle)\n"
    lines = [f"  {samples} samples; busy share per thread (1.0 = one core all the time):"]
    for thread, n in threads.most_common():
        lines.append(f"    {n / (RATE * duration):5.2f}  {thread}")
    for title, counter in (("self", self_n), ("total", total_n)):
        lines.append(f"  top {top} by {title} samples (% of this process's samples):")
        for frame, n in counter.most_common(top):
            lines.append(f"    {100 * n / samples:5.1f}%  {frame}")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--api", choices=("rest", "grpc"), default="rest")
    p.add_argument("--clients", type=int, default=32)
    p.add_argument("--duration", type=float, default=15.0, help="seconds sampled")
    p.add_argument("--batching", default=bench.BATCHING,
                   help="BatchingParameters text (default: serving_benchmark.py's)")
    p.add_argument("--no-batching", action="store_true")
    p.add_argument("--server-flags", default="",
                   help="extra flags for serving.model_server, space-separated")
    p.add_argument("--mnist-model", default="auto", help="as serving_benchmark.py's")
    p.add_argument("--grpc-client", choices=("auto", "h2load", "python"), default="auto",
                   help="as serving_benchmark.py's")
    p.add_argument("--top", type=int, default=25, help="functions listed per table")
    p.add_argument("--out", help="directory for the raw stacks (default: a temporary one)")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--cpu", action="store_true",
                      help="measure each thread's CPU time from /proc instead of sampling")
    mode.add_argument("--memory", type=float, metavar="SECONDS",
                      help="read each process's resident memory every SECONDS instead of "
                           "sampling")
    args = p.parse_args(argv)

    sys.path[:0] = [str(ROOT), str(ROOT / "tests")]
    import saved_models
    from toolkit_testing import free_port, write_models_config

    bench.MODELS["mnist"] = bench.MODELS["mnist"][:3] + ([0.5] * saved_models.MNIST_PIXELS,)
    work = Path(tempfile.mkdtemp(prefix="serving-profile-"))
    out = Path(args.out) if args.out else work / "profiles"
    out.mkdir(parents=True, exist_ok=True)
    try:
        repo = work / "repo"
        bench.place_mnist_model(args.mnist_model, repo / "mnist" / "1")
        config = write_models_config(repo, ["mnist"])
        gport, rport = free_port(), free_port()
        batching_file = None
        if not args.no_batching:
            batching_file = work / "batching.config"
            batching_file.write_text(args.batching)
        server = bench.start_process(
            bench.model_server_flags(gport, rport, config, args.server_flags, batching_file),
            rport, work / "server.log")
        try:
            body, grpc_payload = bench.payloads("mnist")
            warm = 3.0
            if args.api == "rest":
                load = functools.partial(bench.drive_wrk,
                                         f"http://127.0.0.1:{rport}/v1/models/mnist:predict",
                                         body)
            else:
                load = functools.partial(bench.grpc_driver(args.grpc_client),
                                         f"127.0.0.1:{gport}", grpc_payload)
            result = {}
            driver = threading.Thread(target=lambda: result.update(
                load(args.clients, warm, args.duration + 2)))
            driver.start()
            threading.Event().wait(warm + 1.5)  # the warm-up, and the measured run's start
            pids = {"model process": server.pid}
            for i, child in enumerate(children(server.pid)):
                pids[f"front-end worker {i + 1}"] = child
            if args.cpu:
                spies = {}
                before, idle = {n: thread_cpu(p) for n, p in pids.items()}, machine_idle()
                threading.Event().wait(args.duration)
                after, idle = {n: thread_cpu(p) for n, p in pids.items()}, machine_idle() - idle
            elif args.memory:
                spies, samples, elapsed = {}, [], 0.0
                while True:
                    samples.append((elapsed, {n: rss_mb(p) for n, p in pids.items()}))
                    if elapsed >= args.duration:
                        break
                    step = min(args.memory, args.duration - elapsed)
                    threading.Event().wait(step)
                    elapsed += step
            else:
                spies = {name: (record(pid, args.duration, out / f"{pid}.txt"), pid)
                         for name, pid in pids.items()}
                for spy, _ in spies.values():
                    spy.wait()
            driver.join()
            if args.cpu:  # while the server still runs: its threads' names
                table = cpu_table(pids, {pids[n]: v for n, v in before.items()},
                                  {pids[n]: v for n, v in after.items()}, args.duration,
                                  round(result.get("rps", 0) * args.duration))
        finally:
            bench.stop_process(server)
        print(f"{args.api.upper()}, {args.clients} clients, batching "
              f"{'off' if args.no_batching else 'on'}, flags '{args.server_flags}': "
              f"{result.get('rps', 0):.0f} req/s, p50 {result.get('p50_ms', 0):.2f} ms, "
              f"p99 {result.get('p99_ms', 0):.2f} ms, errors {result.get('errors')}")
        if args.cpu:
            print(table, end="")
            print(f"\nthe machine: {idle / args.duration:.2f} cores idle")
        if args.memory:
            print(f"requests answered in the measured window: "
                  f"{round(result.get('rps', 0) * args.duration):,}")
            print(memory_table(pids, samples), end="")
        for name, (spy, pid) in spies.items():
            print(f"\n{name} (pid {pid}), {args.duration:g} s at {RATE} samples/s:")
            raw = out / f"{pid}.txt"
            if not raw.is_file():
                print(f"  py-spy wrote nothing: {spy.stderr.read().strip()[-500:]}")
                continue
            print(summarize(raw, args.duration, args.top), end="")
        print(f"\nraw stacks: {out}")
    finally:
        shutil.rmtree(work / "repo", ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
