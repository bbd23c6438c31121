"""The model repository: numbering, atomic publish, concurrent publishers, no overwrite."""

from __future__ import annotations

import multiprocessing
import shutil
import signal
import threading
from pathlib import Path

import pytest

from serving import lineage
from serving.repository import (STAGING_PREFIX, ModelRepository, RepositoryError,
                                is_complete_saved_model)

from toolkit_testing import publish_fake, start_script, write_fake_saved_model


def test_versions_start_at_one_and_grow(tmp_path):
    repository = ModelRepository(tmp_path / "repo")
    assert repository.latest_version("m") is None
    assert [publish_fake(repository, "m") for _ in range(3)] == [1, 2, 3]
    assert repository.versions("m") == [1, 2, 3]
    assert repository.latest_version("m") == 3
    assert repository.models() == ["m"]


def test_numbering_continues_after_existing_versions_and_ignores_other_entries(tmp_path):
    repository = ModelRepository(tmp_path)
    write_fake_saved_model(tmp_path / "m" / "7")
    (tmp_path / "m" / "not_a_version").mkdir()
    (tmp_path / "m" / f"{STAGING_PREFIX}crashed").mkdir()
    (tmp_path / "m" / "9").mkdir()  # an empty integer directory still takes its number
    assert repository.versions("m") == [7]
    assert publish_fake(repository, "m") == 10


def test_publish_never_overwrites_an_existing_version(tmp_path):
    repository = ModelRepository(tmp_path)
    write_fake_saved_model(tmp_path / "m" / "1", payload=b"original")
    assert publish_fake(repository, "m", payload=b"new") == 2
    assert (tmp_path / "m" / "1" / "saved_model.pb").read_bytes() == b"original"
    assert (tmp_path / "m" / "2" / "saved_model.pb").read_bytes() == b"new"


def test_failed_publish_leaves_nothing_behind(tmp_path):
    repository = ModelRepository(tmp_path)
    with pytest.raises(ZeroDivisionError):
        with repository.publish("m") as publication:
            write_fake_saved_model(publication.staging)
            1 / 0
    assert list((tmp_path / "m").iterdir()) == []
    assert repository.versions("m") == []


def test_incomplete_export_is_refused(tmp_path):
    repository = ModelRepository(tmp_path)
    with pytest.raises(RepositoryError, match="saved_model.pb"):
        with repository.publish("m") as publication:
            (publication.staging / "variables").mkdir()
    assert list((tmp_path / "m").iterdir()) == []


def test_unwritable_repository_is_reported_and_untouched(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a directory")
    repository = ModelRepository(blocker / "repo")
    with pytest.raises(RepositoryError, match="not writable"):
        repository.check_writable("m")
    assert blocker.read_text() == "not a directory"


def test_check_writable_leaves_no_trace(tmp_path):
    ModelRepository(tmp_path / "repo").check_writable("m")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("name", ["", ".hidden", "a/b"])
def test_invalid_model_names_are_rejected(tmp_path, name):
    with pytest.raises(RepositoryError):
        ModelRepository(tmp_path).model_dir(name)


def test_poller_never_sees_a_partial_version(tmp_path):
    """A reader polling like TF Serving's file system source sees only complete versions."""
    repository = ModelRepository(tmp_path)
    (tmp_path / "m").mkdir()
    stop = threading.Event()
    partial, polls = [], [0]

    def poll():
        while not stop.is_set():
            for entry in (tmp_path / "m").iterdir():
                if entry.name.isdigit() and not is_complete_saved_model(entry):
                    partial.append(entry.name)
            polls[0] += 1

    poller = threading.Thread(target=poll)
    poller.start()
    try:
        for _ in range(20):  # 4 MiB of variables each: the copy takes a measurable while
            publish_fake(repository, "m", variables_size=4 << 20)
    finally:
        stop.set()
        poller.join()
    assert repository.versions("m") == list(range(1, 21))
    assert polls[0] > 20
    assert partial == []


def _publish_in_process(root: str, barrier, results) -> None:
    barrier.wait()
    payload = str(multiprocessing.current_process().pid).encode()
    results.put(publish_fake(ModelRepository(root), "m", payload=payload))


def test_concurrent_publishers_each_get_their_own_version(tmp_path):
    context = multiprocessing.get_context("spawn")
    publishers = 6
    barrier, results = context.Barrier(publishers), context.Queue()
    processes = [context.Process(target=_publish_in_process, args=(str(tmp_path), barrier, results))
                 for _ in range(publishers)]
    for process in processes:
        process.start()
    for process in processes:
        process.join(60)
        assert process.exitcode == 0
    versions = sorted(results.get(timeout=5) for _ in range(publishers))
    assert versions == list(range(1, publishers + 1))
    payloads = {(tmp_path / "m" / str(v) / "saved_model.pb").read_bytes() for v in versions}
    assert len(payloads) == publishers  # nobody's model was overwritten by another's
    assert not [p for p in (tmp_path / "m").iterdir() if p.name.startswith(STAGING_PREFIX)]


def test_identical_content_is_recognised_only_against_the_latest_version(tmp_path):
    repository = ModelRepository(tmp_path / "repo")
    candidate = write_fake_saved_model(tmp_path / "candidate", payload=b"model-a")
    assert repository.version_with_same_content("m", candidate) is None
    publish_fake(repository, "m", payload=b"model-a")
    assert repository.version_with_same_content("m", candidate) == 1
    publish_fake(repository, "m", payload=b"model-b")
    assert repository.version_with_same_content("m", candidate) is None


def test_a_rejected_version_is_hidden_and_its_number_never_reused(tmp_path):
    repository = ModelRepository(tmp_path)
    publish_fake(repository, "m")
    publish_fake(repository, "m")
    moved = repository.reject("m", 2, "served garbage")
    assert moved == tmp_path / "m" / ".rejected-2"
    assert repository.versions("m") == [1] and repository.latest_version("m") == 1
    assert repository.rejected_versions("m") == [2]
    assert lineage.read(moved).rejected["reason"] == "served garbage"
    assert publish_fake(repository, "m") == 3
    with pytest.raises(RepositoryError):
        repository.reject("m", 2, "again")


def test_the_lineage_record_is_not_part_of_the_model(tmp_path):
    repository = ModelRepository(tmp_path / "repo")
    candidate = write_fake_saved_model(tmp_path / "candidate", payload=b"model-a")
    with repository.publish("m") as publication:
        write_fake_saved_model(publication.staging, payload=b"model-a")
        lineage.write(publication.staging, lineage.Lineage(model_uri="/runs/Trainer/model/7"))
    assert repository.version_with_same_content("m", candidate) == 1
    assert repository.version_from_model("m", "/runs/Trainer/model/7") == 1
    assert repository.version_from_model("m", "/runs/Trainer/model/8") is None
    # a later run's model with the same bytes (its Pusher published nothing): version 1 too
    same = tmp_path / "runs" / "Trainer" / "model" / "9"
    write_fake_saved_model(same / "Format-Serving", payload=b"model-a")
    assert repository.version_from_model("m", str(same)) == 1
    other = tmp_path / "runs" / "Trainer" / "model" / "10"
    write_fake_saved_model(other / "Format-Serving", payload=b"model-b")
    assert repository.version_from_model("m", str(other)) is None


_KILLED_PUBLISHER = """
import os, sys, time
from serving.repository import ModelRepository
from toolkit_testing import write_fake_saved_model
with ModelRepository(sys.argv[1]).publish("m") as publication:
    write_fake_saved_model(publication.staging)
    print(publication.staging, flush=True)
    time.sleep(600)   # killed here, mid-publish
"""


def _start_publisher(root):
    proc = start_script(_KILLED_PUBLISHER, str(root))
    staging = proc.stdout.readline().strip()
    assert staging, "the publisher did not start"
    return proc, staging


def test_staging_left_by_a_killed_publisher_is_reclaimed_but_a_live_one_is_not(tmp_path):
    killed, killed_staging = _start_publisher(tmp_path)
    live, live_staging = _start_publisher(tmp_path)
    try:
        killed.send_signal(signal.SIGKILL)
        killed.wait(10)
        assert Path(killed_staging).is_dir()  # SIGKILL: no clean-up ran
        repository = ModelRepository(tmp_path)
        assert publish_fake(repository, "m") == 1
        assert not Path(killed_staging).exists()
        assert not Path(killed_staging + ".lock").exists()
        assert Path(live_staging).is_dir()  # its publisher still holds the lock
        assert repository.reclaim_staging("m") == []
    finally:
        live.kill()
        live.wait(10)
    assert [p.name for p in repository.reclaim_staging("m")] == [Path(live_staging).name]


def test_a_lock_file_left_by_a_publisher_killed_after_removing_its_staging_is_reclaimed(tmp_path):
    """Killed between removing its staging copy and its lock file: the next publish removes
    the lock file too (a lock still held by a live publisher stays)."""
    (tmp_path / "m").mkdir()
    orphan = tmp_path / "m" / ".staging-1-0123abcd.lock"
    orphan.write_text("")
    live, live_staging = _start_publisher(tmp_path)
    try:
        shutil.rmtree(live_staging)  # as if it were cleaning up: its lock is still held
        assert publish_fake(ModelRepository(tmp_path), "m") == 1
        assert not orphan.exists()
        assert Path(live_staging + ".lock").exists()
    finally:
        live.kill()
        live.wait(10)


# ---- candidates: pushed versions waiting to be verified and promoted ----

def publish_candidate(repository: ModelRepository, model: str, payload: bytes = b"graph") -> int:
    with repository.publish(model, candidate=True) as publication:
        write_fake_saved_model(publication.staging, payload)
    assert publication.path == repository.candidate_path(model, publication.version)
    return publication.version


def test_version_numbers_are_one_sequence_over_candidates_published_and_rejected(tmp_path):
    repository = ModelRepository(tmp_path)
    assert publish_candidate(repository, "m") == 1
    assert publish_fake(repository, "m") == 2
    assert publish_candidate(repository, "m") == 3
    repository.reject("m", 3, "failed its smoke check")
    assert publish_candidate(repository, "m") == 4  # 3 is rejected, never given out again
    assert repository.promote_candidate("m", 1) == tmp_path / "m" / "1"
    assert publish_fake(repository, "m") == 5  # 4 is still a candidate
    assert repository.versions("m") == [1, 2, 5]
    assert repository.candidates("m") == [4]
    assert repository.rejected_versions("m") == [3]
    assert publish_candidate(repository, "m") == 6


def test_a_candidate_is_not_a_published_version_until_promoted(tmp_path):
    """A server polling <model>/ (TF Serving's `latest` policy) never sees a candidate: it
    is not an integer-named child of the base path."""
    repository = ModelRepository(tmp_path)
    publish_fake(repository, "m", payload=b"v1")
    version = publish_candidate(repository, "m", payload=b"v2")
    assert [p.name for p in (tmp_path / "m").iterdir() if p.name.isdigit()] == ["1"]
    assert repository.versions("m") == [1] and repository.latest_version("m") == 1
    assert repository.locate("m", version) == tmp_path / "m" / ".candidates" / "2"
    assert repository.models() == ["m"]  # .candidates is no model
    path = repository.promote_candidate("m", version)
    assert path == tmp_path / "m" / "2" and (path / "saved_model.pb").read_bytes() == b"v2"
    assert repository.versions("m") == [1, 2] and repository.candidates("m") == []
    assert repository.locate("m", version) == path
    assert repository.promote_candidate("m", version) == path  # already published: as is
    with pytest.raises(RepositoryError, match="no candidate version 7"):
        repository.promote_candidate("m", 7)


def test_a_rejected_candidate_is_withdrawn_with_its_reason(tmp_path):
    repository = ModelRepository(tmp_path)
    publish_fake(repository, "m")
    version = publish_candidate(repository, "m")
    moved = repository.reject("m", version, "did not load as the canary")
    assert moved == tmp_path / "m" / f".rejected-{version}"
    assert repository.candidates("m") == [] and repository.versions("m") == [1]
    assert repository.rejected_versions("m") == [version]
    assert repository.locate("m", version) == moved
    assert repository.lineage("m", version).rejected["reason"] == "did not load as the canary"
    with pytest.raises(RepositoryError):
        repository.promote_candidate("m", version)


def test_identical_content_is_recognised_against_the_newest_candidate_too(tmp_path):
    repository = ModelRepository(tmp_path / "repo")
    same = write_fake_saved_model(tmp_path / "same", payload=b"model-b")
    publish_fake(repository, "m", payload=b"model-a")
    assert publish_candidate(repository, "m", payload=b"model-b") == 2
    assert repository.version_with_same_content("m", same) == 2
    publish_candidate(repository, "m", payload=b"model-c")
    assert repository.version_with_same_content("m", same) is None  # only the newest counts
    older = write_fake_saved_model(tmp_path / "older", payload=b"model-a")
    assert repository.version_with_same_content("m", older) == 1  # the newest published
