"""A canary left by a run that died (SIGKILL mid-check or mid-promotion) is dropped by the
next push; one whose run is alive is not (no server: fast)."""

from __future__ import annotations

import signal
import subprocess
import sys

from pipelines.operations import post_push
from serving import rollouts
from serving.lifecycle import rollout
from serving.repository import ModelRepository

MODEL = "half_plus_two"


def _publish(repo: ModelRepository, candidate: bool) -> int:
    with repo.publish(MODEL, candidate=candidate) as pub:
        (pub.staging / "variables").mkdir()
        (pub.staging / "saved_model.pb").write_bytes(b"graph")
    return pub.version


def _a_promotion_cut_short(repo: ModelRepository) -> int:
    """Stable 1; candidate 2 checked as the canary and already renamed into the published
    versions by the promotion, which never wrote the record (its process was killed)."""
    _publish(repo, candidate=False)
    with rollouts.update(repo.model_dir(MODEL), MODEL) as record:
        record.make_stable(1, verified=True)
    version = _publish(repo, candidate=True)
    with rollouts.update(repo.model_dir(MODEL), MODEL) as record:
        record.canary = version
    repo.promote_candidate(MODEL, version)
    return version


def test_the_next_push_drops_a_dead_runs_canary_and_undoes_its_promotion(tmp_path):
    repo = ModelRepository(tmp_path / "repo")
    dead = _a_promotion_cut_short(repo)
    assert repo.versions(MODEL) == [1, 2]  # what the killed promotion left
    pushed = _publish(repo, candidate=True)
    lines = []
    deployment = post_push.deploy(MODEL, pushed, repo, tmp_path / "state", 1, log=lines.append)
    assert f"  serving: dropped version {dead}, the canary of a run that died before " \
           f"promoting or rejecting it; it waits as a candidate" in lines
    assert (deployment.status, deployment.serving_version) == (post_push.NO_SERVER, pushed)
    assert repo.candidates(MODEL) == [dead] and repo.versions(MODEL) == [1, pushed]
    record = rollouts.load(repo.model_dir(MODEL), MODEL)
    assert (record.stable, record.previous, record.canary) == (pushed, 1, None)
    drop = next(e for e in record.events if e["action"] == "drop canary")
    assert drop["version"] == dead and "its promotion had not finished" in drop["detail"]


def test_a_live_runs_canary_is_left_alone_until_its_process_is_killed(tmp_path):
    repo = ModelRepository(tmp_path / "repo")
    version = _a_promotion_cut_short(repo)
    lock = repo.model_dir(MODEL) / rollout.CANARY_LOCK
    holder = subprocess.Popen(
        [sys.executable, "-c", "import fcntl, os, sys, time\n"
         f"fd = os.open({str(lock)!r}, os.O_CREAT | os.O_RDWR)\n"
         "fcntl.flock(fd, fcntl.LOCK_EX)\nprint('held', flush=True)\ntime.sleep(120)"],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        assert rollout.drop_dead_canary(MODEL, repo.root, tmp_path / "state", 1) is None
        assert rollouts.load(repo.model_dir(MODEL), MODEL).canary == version
        assert repo.versions(MODEL) == [1, version]
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait(10)
    assert rollout.drop_dead_canary(MODEL, repo.root, tmp_path / "state", 1) == version
    record = rollouts.load(repo.model_dir(MODEL), MODEL)
    assert (record.stable, record.canary) == (1, None)
    assert repo.candidates(MODEL) == [version] and repo.versions(MODEL) == [1]
