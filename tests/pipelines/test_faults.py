"""Faults an unattended run meets: its ML Metadata store held locked by another process,
a run log that cannot be written, log rotation, clock jumps, and full disks (the pipeline
root during training, the repository during the push). Real stores, processes and
filesystems; the e2e ones run the real half_plus_two pipeline."""

from __future__ import annotations

import gzip
import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pipelines import outcomes
from pipelines.runs import console, history, lock as run_lock, metadata
from pipelines.config import RunConfig
from small_disks import KiB, resize, tmpfs
from toolkit_testing import record_finished_run, run_main, version_dirs

MODEL = "half_plus_two"
HOLD = """
import sqlite3, sys, time
connection = sqlite3.connect(sys.argv[1], isolation_level=None)
connection.execute(sys.argv[2])
connection.execute("SELECT count(*) FROM Context").fetchall()
print("held", flush=True)
if float(sys.argv[3]) > 0:
    time.sleep(float(sys.argv[3]))  # the other process's long transaction
    connection.execute("COMMIT")
else:
    sys.stdin.readline()  # until the test ends
"""


def hold_store(path: Path, begin: str = "BEGIN EXCLUSIVE", seconds: float = 0.0):
    """Another process holding a transaction open on the store (for `seconds`, else until
    it is stopped); returns once the lock is held."""
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(path), begin, str(seconds)],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    return holder


def stop(holder: subprocess.Popen) -> None:
    holder.kill()
    holder.wait()


@pytest.fixture
def store(tmp_path):
    """The run pipeline's ML Metadata store under `tmp_path/runs`, holding one finished run."""
    root = tmp_path / "runs"
    record_finished_run(root, MODEL, "run-1", outcomes.PUSHED)
    return RunConfig(pipeline_root=root).metadata_path(MODEL)


def test_a_store_locked_for_a_while_is_waited_for(store):
    holder = hold_store(store, seconds=1.5)  # a write lock a writer must wait out
    try:
        started = time.monotonic()
        metadata.create_run(metadata.open_store(store, readonly=False, wait=30), "run-2")
        waited = time.monotonic() - started
    finally:
        stop(holder)
    assert waited > 0.5  # it waited for the other transaction instead of failing
    assert [c.name for c in metadata.run_contexts(metadata.open_store(store))] == ["run-1", "run-2"]


def test_a_reader_does_not_stop_a_read_but_a_writer_waits_for_it(store):
    holder = hold_store(store, begin="BEGIN")  # a long read transaction
    try:
        assert len(metadata.run_contexts(metadata.open_store(store, wait=1))) == 1
        with pytest.raises(metadata.StoreLocked):
            metadata.open_store(store, readonly=False, wait=1)
    finally:
        stop(holder)


def test_a_store_locked_longer_than_the_wait_fails_naming_it(store, monkeypatch, tmp_path):
    monkeypatch.setattr(metadata, "STORE_WAIT_SECONDS", 1.0)
    holder = hold_store(store)
    try:
        with pytest.raises(metadata.StoreLocked) as raised:
            metadata.open_store(store)
        with pytest.raises(history.NotRecorded) as not_recorded:
            history.record_run(store, "run-1", outcomes.ERROR, "x")
        listed = run_main("pipelines", "history", MODEL, "--pipeline-root", str(tmp_path / "runs"))
    finally:
        stop(holder)
    message = str(raised.value)
    assert f"the ML Metadata store {store} is locked by another process (waited 1s" in message
    assert f"fuser -v {store}" in message and "then run again" in message
    assert f"could not be recorded in the ML Metadata store {store}" in str(not_recorded.value)
    assert "locked by another process" in str(not_recorded.value)
    assert listed.returncode == outcomes.FAILED.exit_code
    assert "is locked by another process" in listed.stderr and "Traceback" not in listed.stderr
    again = run_main("pipelines", "history", MODEL, "--pipeline-root", str(tmp_path / "runs"))
    assert again.returncode == 0 and "pushed" in again.stdout  # free again: it lists


def write_logs(log_dir: Path, count: int, size: int = 10, random: bool = False) -> list:
    """`count` run logs, oldest first, a minute apart (by modification time); `random`
    contents do not compress."""
    log_dir.mkdir(parents=True, exist_ok=True)
    now = time.time()
    paths = []
    for i in range(count):
        path = log_dir / f"run-2026010{i % 10}-{i:06d}.log"
        path.write_bytes(os.urandom(size) if random else b"x" * size)
        os.utime(path, (now - (count - i) * 60,) * 2)
        paths.append(path)
    return paths


def test_logs_rotate_by_count_and_size(tmp_path):
    logs = write_logs(tmp_path / "logs", 60)
    (tmp_path / "logs" / "notes.txt").write_text("the operator's")
    (tmp_path / "logs" / "old.log").mkdir()  # not a log file: left alone
    removed = console.rotate_logs(tmp_path / "logs")
    assert sorted(removed) == sorted(logs[:11])  # the newest KEEP_LOGS - 1 stay, gzipped
    assert sorted((tmp_path / "logs").glob("run-*")) == sorted(gzipped(p) for p in logs[11:])
    assert (tmp_path / "logs" / "notes.txt").exists() and (tmp_path / "logs" / "old.log").is_dir()
    assert console.KEEP_LOGS == 50

    big = write_logs(tmp_path / "big", 10, size=1000, random=True)
    console.rotate_logs(tmp_path / "big", max_bytes=3 * 1100)  # the newest three fit
    assert sorted((tmp_path / "big").iterdir()) == sorted(gzipped(p) for p in big[-3:])


def gzipped(log: Path) -> Path:
    return log.with_name(log.name + ".gz")


def test_rotated_logs_are_gzipped_whole_and_keep_their_time(tmp_path):
    first, second = write_logs(tmp_path / "logs", 2, size=300_000)
    second.write_bytes(b"INFO:absl:a TFX run log line\n" * 10_000)
    mtime = second.stat().st_mtime
    (tmp_path / "logs" / ".run-cut-short.log.gz.partial").write_bytes(b"\x1f\x8b half")
    assert console.rotate_logs(tmp_path / "logs") == []
    assert sorted(p.name for p in (tmp_path / "logs").iterdir()) == sorted(
        [gzipped(first).name, gzipped(second).name])  # the partial one is gone
    assert gzip.decompress(gzipped(second).read_bytes()) == b"INFO:absl:a TFX run log line\n" * 10_000
    assert gzipped(second).stat().st_size < 10_000 and gzipped(second).stat().st_mtime == mtime
    third = tmp_path / "logs" / "retrain-20260102-000000.log"
    third.write_text("the newest: compressed by the next run")
    console.rotate_logs(tmp_path / "logs", keep=2)
    assert sorted(p.name for p in (tmp_path / "logs").iterdir()) == sorted(
        [gzipped(second).name, gzipped(third).name])


def test_a_log_in_the_future_does_not_push_out_the_newest(tmp_path):
    logs = write_logs(tmp_path / "logs", 55)
    future = logs[0]
    os.utime(future, (time.time() + 365 * 86400,) * 2)  # written while the clock was wrong
    console.rotate_logs(tmp_path / "logs")
    kept = set((tmp_path / "logs").iterdir())
    assert len(kept) == console.KEEP_LOGS - 1
    assert gzipped(logs[-1]) in kept and gzipped(logs[-48]) in kept


def _run(tmp_path, *extra):
    return run_main("pipelines", "run", MODEL, "--profile", "fast",
                    "--pipeline-root", str(tmp_path / "runs"),
                    "--repository", str(tmp_path / "repo"), *extra)


def test_a_run_whose_store_stays_locked_fails_cleanly(tmp_path, store, monkeypatch):
    monkeypatch.setattr(metadata, "STORE_WAIT_SECONDS", 1.0)
    logs = write_logs(store.parent / "logs", 60)
    holder = hold_store(store)
    try:
        result = _run(tmp_path)
    finally:
        stop(holder)
    assert result.returncode == outcomes.ERROR.exit_code, result.stdout + result.stderr
    assert f"the ML Metadata store {store} is locked by another process" in result.stderr
    assert "Traceback" not in result.stderr
    assert "NOT pushed" in result.stdout
    with run_lock.hold(tmp_path / "runs", MODEL):  # the run lock was released
        pass
    # the logs were rotated before this run's log was opened: 49 old ones and its own
    remaining = set((store.parent / "logs").iterdir())
    assert len(remaining) == console.KEEP_LOGS and {gzipped(p) for p in logs[-49:]} <= remaining


@pytest.mark.parametrize("garbage", ["file", "log is a directory"])
def test_a_run_log_that_cannot_be_written_is_a_clear_error(tmp_path, garbage):
    log_dir = tmp_path / "runs" / MODEL / "logs"
    if garbage == "file":
        log_dir.parent.mkdir(parents=True)
        log_dir.write_bytes(b"\x00\xff garbage")
    else:
        log_dir.mkdir(parents=True)
        for stamp in range(3):  # whatever second the run starts in, its log is a directory
            now = time.localtime(time.time() + stamp)
            (log_dir / time.strftime("run-%Y%m%d-%H%M%S.log", now)).mkdir()
    result = _run(tmp_path)
    assert result.returncode == outcomes.ERROR.exit_code, result.stdout + result.stderr
    assert "cannot write the run's log" in result.stderr and "--verbose" in result.stderr
    assert str(log_dir) in result.stderr and "Traceback" not in result.stderr
    with run_lock.hold(tmp_path / "runs", MODEL):
        pass
    assert not (tmp_path / "repo" / MODEL).exists()


def test_retrain_with_an_unwritable_log_is_a_clear_error(tmp_path):
    data = tmp_path / "data" / "span-1"
    for split in ("train", "eval"):
        (data / split).mkdir(parents=True)
        (data / split / "data.csv").write_text("x,y\n1,2.5\n")
    logs = tmp_path / "runs" / f"{MODEL}_retrain" / "logs"
    logs.parent.mkdir(parents=True)
    logs.write_text("not a directory")
    result = run_main("pipelines", "retrain", MODEL, "--data", str(tmp_path / "data"),
                      "--profile", "fast", "--pipeline-root", str(tmp_path / "runs"),
                      "--repository", str(tmp_path / "repo"))
    assert result.returncode == outcomes.ERROR.exit_code, result.stdout + result.stderr
    assert "cannot write the run's log" in result.stderr and "Traceback" not in result.stderr


# Clock jumps: spans are chosen by number and runs ordered by ML Metadata's ids, never by
# a file's modification time or a run's timestamp.

def write_span(data_dir: Path, span: int, mtime: float) -> Path:
    for split in ("train", "eval"):
        path = data_dir / f"span-{span}" / split / "data.csv"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"x,y\n{span},{0.5 * span + 2}\n")
        os.utime(path, (mtime, mtime))
    return data_dir / f"span-{span}"


def test_spans_and_runs_stamped_in_the_future_do_not_skip_or_repeat_data(tmp_path):
    from components import spans
    from pipelines.operations import retrain

    year = 365 * 86400
    data = tmp_path / "data"
    write_span(data, 1, time.time() + year)  # delivered while the clock was a year ahead
    write_span(data, 2, time.time())
    newest = spans.newest_span(data)
    assert newest.span == 2  # the future span 1 is not taken for the newest

    root = tmp_path / "runs"
    pipeline = f"{MODEL}_retrain"
    store = RunConfig(pipeline_root=root).metadata_path(pipeline)
    record_finished_run(root, pipeline, "run-span-2", outcomes.PUSHED, span=2,
                        span_fingerprint=newest.fingerprint)
    _stamp_in_the_future(store, "run-span-2", year)  # the run's clock was a year ahead too
    record_finished_run(root, pipeline, "run-span-1", outcomes.INGESTED, span=1)
    previous = history.last_finished_with(store, 2)
    assert previous.run_id == "run-span-2"
    assert retrain._nothing_new(newest, previous, accept_drift=False).startswith("nothing new")
    assert spans.newest_span(data) == newest  # nothing about span 2 changed: not new data

    write_span(data, 3, time.time() - 10 * year)  # the next span, stamped in the past
    newer = spans.newest_span(data)
    assert newer.span == 3  # the next span is ingested, whatever its files' times
    assert history.last_finished_with(store, 3) is None
    assert retrain._nothing_new(newer, history.last_finished_with(store, 3), False) == ""


def _stamp_in_the_future(store: Path, run_id: str, seconds: float) -> None:
    with sqlite3.connect(store) as connection:
        connection.execute(
            "UPDATE Context SET create_time_since_epoch = create_time_since_epoch + ?, "
            "last_update_time_since_epoch = last_update_time_since_epoch + ? WHERE name = ?",
            (int(seconds * 1000), int(seconds * 1000), run_id))


def test_disk_full_is_a_documented_exit_code():
    assert outcomes.DISK_FULL.exit_code == 8 and outcomes.DISK_FULL.name == "disk full"
    assert [o for o in outcomes.ALL if o.exit_code == 8] == [outcomes.DISK_FULL]  # its own
    for command in ("run", "retrain"):
        usage = run_main("pipelines", command, "--help").stdout
        assert "8   disk full: a disk ran out of space" in " ".join(usage.split("\n"))
    assert outcomes.worst([outcomes.PUSHED.exit_code, 8]) == 8
    assert outcomes.worst([8, 1]) == 1
    assert "| 8 | disk full" in (Path(__file__).resolve().parents[2] / "README.md").read_text()


@pytest.mark.e2e
def test_full_disks_stop_the_run_cleanly_and_the_next_run_succeeds(tmp_path):
    """The pipeline root fills up during the run (a tmpfs too small for its artifacts),
    then the repository during the push; each time space is freed, the next run goes on
    without any cleanup. In this process (a run's `main`, as the CLI calls it): what is
    tested is the run's handling of ENOSPC, not a process start (20 s of imports each)."""
    with tmpfs(tmp_path / "runs", 384 * KiB) as runs, tmpfs(tmp_path / "repo", 16 * KiB) as repo:
        args = ("pipelines", "run", MODEL, "--profile", "fast", "--pipeline-root", str(runs),
                "--repository", str(repo))
        first = run_main(*args)
        assert first.returncode == outcomes.DISK_FULL.exit_code, first.stdout + first.stderr
        assert f"no space left on {runs} (tmpfs, " in first.stderr
        assert "disk full" in first.stderr and "Traceback" not in first.stderr
        assert "NOT pushed" in first.stdout
        with run_lock.hold(runs, MODEL):  # released
            pass
        # recorded as such, or (a store the full disk left half-made) said so
        listed = run_main("pipelines", "history", MODEL, "--pipeline-root", str(runs))
        assert "Traceback" not in listed.stderr
        assert "disk full" in listed.stdout or "is not in `history`" in first.stderr \
            or "could not be recorded" in first.stderr, (listed, first.stderr)

        resize(runs, 64 * 1024 * KiB)  # space freed: the repository is still too small
        second = run_main(*args)
        assert second.returncode == outcomes.DISK_FULL.exit_code, second.stdout + second.stderr
        assert f"disk full publishing {MODEL} into {repo}" in second.stderr
        assert f"no space left on {repo} (tmpfs, " in second.stderr
        assert "Traceback" not in second.stderr
        assert version_dirs(repo / MODEL) == []  # nothing half-written
        assert history.runs(RunConfig(pipeline_root=runs), MODEL)[-1].outcome == "disk full"

        resize(repo, 8 * 1024 * KiB)
        third = run_main(*args)
        assert third.returncode == outcomes.PUSHED.exit_code, third.stdout + third.stderr
        assert "pushed version 1" in third.stdout
        assert version_dirs(repo / MODEL) == ["1"]
        assert history.runs(RunConfig(pipeline_root=runs), MODEL)[-1].outcome == "pushed"


def test_a_store_locked_in_the_middle_of_a_run_is_named_in_its_error(store):
    """TFX writes through its own connection: when another process holds the store past
    ML Metadata's retries, the run's error names the store and what to do."""
    import ml_metadata as mlmd
    from ml_metadata.proto import metadata_store_pb2

    from pipelines.runs import local as local_runner

    config = metadata_store_pb2.ConnectionConfig()
    config.sqlite.filename_uri = str(store)
    holder = hold_store(store, begin="BEGIN")  # a long read transaction: no commit can land
    try:
        with pytest.raises(Exception) as raised:  # ML Metadata's own error, as TFX gets it
            metadata.create_run(mlmd.MetadataStore(config), "run-2")
    finally:
        stop(holder)
    failed = local_runner.PipelineFailed("Trainer", raised.value, None, str(store.parent), store)
    assert str(failed).startswith("component Trainer failed: ")
    assert f"the ML Metadata store {store}: it is locked by another process" in str(failed)
    assert f"fuser -v {store}" in str(failed) and failed.disk_full is None


def test_a_retrain_stopped_by_a_full_disk_is_recorded_and_its_span_tried_again(tmp_path):
    import errno

    from pipelines.operations import retrain
    from pipelines.runs import local as local_runner

    root = tmp_path / "runs"
    pipeline = f"{MODEL}_retrain"
    store = RunConfig(pipeline_root=root).metadata_path(pipeline)
    record_finished_run(root, pipeline, "run-1", outcomes.PUSHED, span=1)
    metadata.create_run(metadata.open_store(store, readonly=False), "run-2")
    full = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(root / "Trainer" / "model"))
    failed = local_runner.PipelineFailed("Trainer", full, "run-2", str(root), store)
    assert retrain._recorder(pipeline, store, {"span": 2}).failed(failed) is outcomes.DISK_FULL
    assert failed.not_recorded == ""
    [_, second] = history.runs(RunConfig(pipeline_root=root), MODEL)
    assert second.outcome == "disk full" and str(root / "Trainer" / "model") in second.reason
    assert history.last_finished_with(store, 2) is None  # span 2 is tried again, not skipped
