"""End to end: the MNIST pipeline's fast profile through every component, on real MNIST."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from tensorflow.core.protobuf import saved_model_pb2

from toolkit_testing import CACHE, run_cli, run_main, version_dirs
from components.signatures import CLASSIFY_METHOD, PREDICT_METHOD

pytestmark = pytest.mark.e2e

EXIT_PUSHED, EXIT_ERROR = 0, 1


def run_mnist(tmp_path: Path, *extra: str, process: bool = False):
    """The CLI as a process (`process`), as a user runs it, else its main() in this process
    (TensorFlow and TFX already imported): the same arguments, exit code and output."""
    return (run_cli if process else run_main)(
        "pipelines", "run", "mnist", "--profile", "fast", "--cache-dir", str(CACHE),
        "--repository", str(tmp_path / "repo"), "--pipeline-root", str(tmp_path / "runs"),
        *extra)


@pytest.fixture(scope="module")
def fast_run(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("mnist")
    return tmp_path, run_mnist(tmp_path, process=True)


@pytest.fixture(scope="module")
def test_images():
    """The first 500 official test images, pixels 0-255, with labels."""
    from components.mnist_data import load_mnist

    arrays = load_mnist(CACHE / "mnist").arrays  # the verified cache, fetched if missing
    return arrays["x_test"][:500].reshape(-1, 784), arrays["y_test"][:500]


def _examples(images):
    return tf.constant([tf.train.Example(features=tf.train.Features(feature={
        "image": tf.train.Feature(int64_list=tf.train.Int64List(value=image.tolist()))}))
        .SerializeToString() for image in images])


def test_fast_profile_runs_every_component_and_pushes(fast_run):
    tmp_path, result = fast_run
    assert result.returncode == EXIT_PUSHED, result.stdout + result.stderr
    for component in ["ImportExampleGen", "StatisticsGen", "ImportSchemaGen", "ExampleValidator",
                      "AnomaliesGate", "Transform", "Trainer", "latest_blessed_model_resolver",
                      "Evaluator", "Pusher"]:
        assert f"] {component}" in result.stdout
    assert "mnist: pushed version 1" in result.stdout
    assert (tmp_path / "repo" / "mnist" / "1" / "saved_model.pb").is_file()


def test_pushed_model_answers_all_three_signatures_consistently(fast_run, test_images):
    tmp_path, result = fast_run
    assert result.returncode == EXIT_PUSHED
    export_dir = tmp_path / "repo" / "mnist" / "1"
    saved_model = saved_model_pb2.SavedModel()
    saved_model.ParseFromString((export_dir / "saved_model.pb").read_bytes())
    signatures = saved_model.meta_graphs[0].signature_def
    assert signatures["predict_images"].method_name == PREDICT_METHOD
    assert signatures["classification"].method_name == CLASSIFY_METHOD
    assert list(signatures["predict_images"].inputs) == ["images"]
    assert list(signatures["predict_images"].outputs) == ["scores"]

    images, labels = test_images
    loaded = tf.saved_model.load(str(export_dir))
    scaled = tf.constant(images.astype(np.float32) / 255.0)
    predict = loaded.signatures["predict_images"](images=scaled)["scores"].numpy()
    default = loaded.signatures["serving_default"](images=scaled)["scores"].numpy()
    classified = loaded.signatures["classification"](inputs=_examples(images))
    assert predict.shape == (500, 10)
    np.testing.assert_allclose(predict.sum(axis=1), 1.0, atol=1e-4)
    np.testing.assert_allclose(default, predict, atol=1e-6)
    # Raw tf.Examples through the Transform graph == pre-scaled images: one preprocessing.
    np.testing.assert_allclose(classified["scores"].numpy(), predict, atol=1e-5)
    assert classified["classes"].numpy()[0].tolist() == [str(d).encode() for d in range(10)]
    assert (predict.argmax(axis=1) == labels).mean() > 0.85


def _write_examples(path: Path, images, labels):
    path.parent.mkdir(parents=True, exist_ok=True)
    with tf.io.TFRecordWriter(str(path), options="GZIP") as writer:
        for image, label in zip(images, labels):
            writer.write(tf.train.Example(features=tf.train.Features(feature={
                "image": tf.train.Feature(int64_list=tf.train.Int64List(value=list(image))),
                "label": tf.train.Feature(int64_list=tf.train.Int64List(value=[label])),
            })).SerializeToString())


def test_corrupted_examples_stop_the_run_before_training(tmp_path, test_images):
    images, labels = test_images
    images, labels = images[:200].tolist(), labels[:200].tolist()
    images[3] = images[3][:783]   # a wrong pixel count
    labels[5] = 12                # a label out of 0-9
    _write_examples(tmp_path / "data" / "train" / "data.tfrecord.gz", images, labels)
    _write_examples(tmp_path / "data" / "eval" / "data.tfrecord.gz", images, labels)
    result = run_mnist(tmp_path, "--data-dir", str(tmp_path / "data"))
    assert result.returncode == EXIT_ERROR, result.stdout + result.stderr
    assert "component AnomaliesGate failed" in result.stderr
    assert "feature 'image'" in result.stderr and "feature 'label'" in result.stderr
    assert "] Trainer" not in result.stdout and "] Transform" not in result.stdout
    assert not (tmp_path / "repo" / "mnist").exists()


def test_truncated_data_file_fails_with_a_clear_message(tmp_path, test_images):
    images, labels = test_images
    train = tmp_path / "data" / "train" / "data.tfrecord.gz"
    _write_examples(train, images[:100].tolist(), labels[:100].tolist())
    _write_examples(tmp_path / "data" / "eval" / "data.tfrecord.gz",
                    images[:100].tolist(), labels[:100].tolist())
    train.write_bytes(train.read_bytes()[: train.stat().st_size // 2])
    result = run_mnist(tmp_path, "--data-dir", str(tmp_path / "data"))
    assert result.returncode == EXIT_ERROR
    assert f"{train}: corrupted or truncated TFRecord file" in result.stderr
    assert "] ImportExampleGen" not in result.stdout
    assert not (tmp_path / "repo" / "mnist").exists()


def test_rerun_with_nothing_changed_pushes_no_new_version(fast_run):
    """The cached model is re-evaluated against itself as baseline; it is not re-published."""
    tmp_path, first = fast_run
    assert first.returncode == EXIT_PUSHED
    result = run_mnist(tmp_path)
    assert result.returncode == EXIT_PUSHED, result.stdout + result.stderr
    assert "mnist: pushed version 1 (model unchanged: no new version)" in result.stdout
    assert version_dirs(tmp_path / "repo" / "mnist") == ["1"]


def test_worse_model_is_not_blessed_against_a_better_baseline(fast_run):
    """Same pipeline root, so the resolver finds the fast run's model as the baseline."""
    from pipelines.models import mnist
    from pipelines.runs import local as local_runner
    from pipelines.config import RunConfig
    from serving.repository import ModelRepository

    tmp_path, first = fast_run
    assert first.returncode == EXIT_PUSHED
    config = RunConfig(pipeline_root=tmp_path / "runs", repository=tmp_path / "repo",
                       cache_dir=CACHE)
    # Far less data, and an absolute gate it passes: only the no-regression gate can fail.
    worse = mnist.Profile(train_limit=300, eval_limit=1000, epochs=1, accuracy_gate=0.1)
    result = local_runner.run_pipeline(
        mnist.build(config, profile=worse), model_name="mnist",
        repository=ModelRepository(config.repository),
        metadata_path=config.metadata_path("mnist"), out=io.StringIO())
    assert result.blessed is False
    assert result.pushed is False
    assert any("change_threshold" in failure for failure in result.validation_failures)
    assert ModelRepository(config.repository).versions("mnist") == [1]
