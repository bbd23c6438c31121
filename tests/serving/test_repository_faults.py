"""A model repository whose disk fills up during a publish: a real (tmpfs) filesystem of a
few hundred KiB, a model larger than the space left. Nothing half-written becomes visible,
the error names the disk and the path, and the next publish once there is space succeeds
with no cleanup."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tfx.types import standard_artifacts

from components.repository_pusher import Executor
from serving import disk
from serving.repository import ModelRepository, RepositoryDiskFull, RepositoryError
from small_disks import KiB, resize, tmpfs
from toolkit_testing import publish_fake, write_fake_saved_model

MODEL = "half_plus_two"


@pytest.fixture
def small_disk(tmp_path):
    """A 256 KiB tmpfs, unmounted at the end of the test."""
    with tmpfs(tmp_path / "disk", 256 * KiB) as mount:
        yield mount


def visible_versions(model_dir: Path):
    """What a model server polling the base path would see: integer-named directories."""
    return sorted(p.name for p in model_dir.iterdir() if p.name.isdigit()) \
        if model_dir.is_dir() else []


def leftovers(model_dir: Path):
    return sorted(p.name for p in model_dir.iterdir() if p.name.startswith(".staging-"))


def test_full_disk_during_publish_leaves_nothing_and_names_the_disk(small_disk):
    repository = ModelRepository(small_disk / "repo")
    assert publish_fake(repository, MODEL, variables_size=16 * KiB) == 1
    with pytest.raises(RepositoryDiskFull) as raised:
        publish_fake(repository, MODEL, payload=b"v2", variables_size=1024 * KiB)
    message = str(raised.value)
    assert message.startswith(f"disk full publishing {MODEL} into {repository.root}")
    assert f"no space left on {small_disk} (tmpfs, " in message and "free of 256.0 KiB" in message
    assert f"{repository.root / MODEL}/.staging-" in message  # the path it was writing
    assert "nothing was published" in message
    assert isinstance(raised.value, RepositoryError)  # callers that handle one handle both
    assert raised.value.filesystem.mount_point == small_disk

    model_dir = repository.model_dir(MODEL)
    assert visible_versions(model_dir) == ["1"] and repository.versions(MODEL) == [1]
    assert leftovers(model_dir) == []  # the staging copy and its lock file are gone
    assert (model_dir / "1" / "saved_model.pb").read_bytes() == b"graph"

    # space freed (the filesystem grown): the next publish needs no cleanup
    resize(small_disk, 4096 * KiB)
    assert publish_fake(repository, MODEL, payload=b"v2", variables_size=1024 * KiB) == 2
    assert visible_versions(model_dir) == ["1", "2"] and leftovers(model_dir) == []


def _push(tmp_path: Path, model_dir: Path, destination: Path):
    model = standard_artifacts.Model()
    model.uri = str(model_dir)
    blessing = standard_artifacts.ModelBlessing()
    blessing.uri = str(tmp_path / "blessing")
    blessing.set_int_custom_property("blessed", 1)
    pushed = standard_artifacts.PushedModel()
    pushed.uri = str(tmp_path / "pushed")
    Executor().Do({"model": [model], "model_blessing": [blessing]}, {"pushed_model": [pushed]},
                  {"push_destination": json.dumps(
                      {"filesystem": {"base_directory": str(destination)}}),
                   "custom_config": "null"})
    return pushed


def test_the_pushers_copy_runs_out_of_space_through_tensorflows_file_system(tmp_path,
                                                                            small_disk):
    """The Pusher copies with tf.io.gfile, whose full disk is a ResourceExhaustedError."""
    model_dir = tmp_path / "model"
    write_fake_saved_model(model_dir / "Format-Serving", variables_size=512 * KiB)
    destination = small_disk / "repo" / MODEL
    with pytest.raises(RepositoryDiskFull) as raised:
        _push(tmp_path, model_dir, destination)
    assert f"no space left on {small_disk} (tmpfs" in str(raised.value)
    assert "variables" in str(raised.value)  # the file it was writing
    assert disk.find_full_disk(raised.value) is not None
    assert visible_versions(destination) == [] and leftovers(destination) == []

    resize(small_disk, 4096 * KiB)
    pushed = _push(tmp_path, model_dir, destination)
    assert pushed.get_string_custom_property("pushed_version") == "1"
    # the Pusher publishes a candidate; nothing half-written is anywhere
    assert visible_versions(destination / ".candidates") == ["1"]
    assert leftovers(destination) == [] and visible_versions(destination) == []


def test_a_full_disk_is_found_in_whatever_error_says_it(tmp_path):
    import errno

    import tensorflow as tf

    assert disk.find_full_disk(OSError(errno.ENOSPC, "No space left on device", "/a/b")) == "/a/b"
    tf_error = tf.errors.ResourceExhaustedError(None, None, "/x/y/z.data; No space left on device")
    assert disk.find_full_disk(tf_error) == "/x/y/z.data"
    try:
        try:
            raise tf_error
        except Exception as e:
            raise RuntimeError("component Trainer failed") from e
    except RuntimeError as wrapped:
        assert disk.find_full_disk(wrapped) == "/x/y/z.data"
    assert disk.find_full_disk(RuntimeError("database or disk is full")) == ""
    assert disk.find_full_disk(OSError(errno.EACCES, "Permission denied", "/a")) is None
    assert disk.find_full_disk(ValueError("bad data")) is None
    full = disk.as_disk_full(RuntimeError("database or disk is full"), tmp_path)
    assert full.path == tmp_path and str(tmp_path) in str(full)
