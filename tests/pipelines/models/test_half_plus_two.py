"""End to end: the real half_plus_two pipeline (TFX, MLMD, TFMA), driven by its CLI: the
first run as a process, as a user runs it; the others through the CLI's main() in the test's
process (the same arguments, exit code and output, without importing TFX again).

The first run also passes Beam flags after `--`: Beam's multi-process DirectRunner with two
worker processes, and the data components' output is checked against the data it was given
(one run for both: a run of its own cost about 60 s more of CI).
"""

from __future__ import annotations

import csv
import gzip
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_data_validation as tfdv

from toolkit_testing import run_cli, run_main, version_dirs

pytestmark = pytest.mark.e2e

EXIT_PUSHED, EXIT_ERROR, EXIT_NOT_BLESSED = 0, 1, 3
MULTI_PROCESS = ("--", "--direct_running_mode=multi_processing", "--direct_num_workers=2")


def run_half_plus_two(tmp_path, *extra, process: bool = False):
    return (run_cli if process else run_main)(
        "pipelines", "run", "half_plus_two", "--profile", "fast",
        "--repository", str(tmp_path / "repo"), "--pipeline-root", str(tmp_path / "runs"),
        *extra)


@pytest.fixture(scope="module")
def first_run(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("half_plus_two")
    return tmp_path, run_half_plus_two(tmp_path, *MULTI_PROCESS, process=True)


def test_pipeline_pushes_a_model_that_serves_half_plus_two(first_run):
    tmp_path, result = first_run
    assert result.returncode == EXIT_PUSHED, result.stdout + result.stderr
    for component in ["CsvExampleGen", "StatisticsGen", "SchemaGen", "ExampleValidator",
                      "Trainer", "Evaluator", "Pusher"]:
        assert f"] {component}" in result.stdout
    assert "pushed version 1" in result.stdout
    assert "mean_squared_error" in result.stdout and "wall time" in result.stdout

    version_dir = tmp_path / "repo" / "half_plus_two" / "1"
    assert version_dirs(tmp_path / "repo" / "half_plus_two") == ["1"]
    loaded = tf.saved_model.load(str(version_dir))
    predictions = loaded.signatures["serving_default"](x=tf.constant([1.0, 2.0, 5.0]))["y"]
    np.testing.assert_allclose(predictions.numpy(), [2.5, 3.0, 4.5], atol=1e-3)
    assert loaded.w.numpy() == pytest.approx(0.5, abs=1e-2)
    assert loaded.b.numpy() == pytest.approx(2.0, abs=1e-2)


def test_second_run_is_cached_and_pushes_no_new_version(first_run):
    tmp_path, first = first_run
    assert first.returncode == EXIT_PUSHED
    result = run_half_plus_two(tmp_path, *MULTI_PROCESS)
    assert result.returncode == EXIT_PUSHED, result.stdout + result.stderr
    assert result.stdout.count(" cached") == 7
    assert "pushed version 1 (model unchanged: no new version)" in result.stdout
    assert version_dirs(tmp_path / "repo" / "half_plus_two") == ["1"]


def test_malformed_data_stops_the_run_naming_file_and_problem(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    (data / "points.csv").write_text("x,y\n1.0,2.5\n2.0,three\n")
    result = run_half_plus_two(tmp_path, "--data-dir", str(data))
    assert result.returncode == EXIT_ERROR
    assert str(data / "points.csv") in result.stderr
    assert "'three' is not a number" in result.stderr
    assert not (tmp_path / "repo").exists()


def test_model_that_misses_the_gate_is_not_pushed(tmp_path):
    data = tmp_path / "noisy"
    data.mkdir()
    rng = np.random.default_rng(0)
    xs = rng.uniform(-10, 10, 500)
    ys = 0.5 * xs + 2 + rng.normal(0, 0.5, xs.shape)  # no model can get MSE under 1e-4
    (data / "data.csv").write_text("x,y\n" + "".join(f"{x},{y}\n" for x, y in zip(xs, ys)))
    result = run_half_plus_two(tmp_path, "--data-dir", str(data))
    assert result.returncode == EXIT_NOT_BLESSED, result.stdout + result.stderr
    assert "NOT pushed" in result.stdout and "not blessed" in result.stdout
    assert version_dirs(tmp_path / "repo" / "half_plus_two") == []


def test_unwritable_repository_fails_before_training(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    result = run_main("pipelines", "run", "half_plus_two", "--profile", "fast",
                      "--repository", str(blocker / "repo"),
                      "--pipeline-root", str(tmp_path / "runs"))
    assert result.returncode == EXIT_ERROR
    assert "not writable" in result.stderr
    assert "] CsvExampleGen" not in result.stdout


# Beam flags after `--` reach the data components (the first run's two worker processes).

def _only(pattern: str, root: Path) -> Path:
    [path] = root.glob(pattern)
    return path


def _split_xs(pipeline_dir: Path, split: str) -> np.ndarray:
    files = sorted(str(p) for p in pipeline_dir.glob(f"CsvExampleGen/examples/*/Split-{split}/*.gz"))
    assert files, f"no {split} examples"
    records = tf.data.TFRecordDataset(files, compression_type="GZIP")
    return np.array([tf.train.Example.FromString(r.numpy()).features.feature["x"].float_list.value[0]
                     for r in records], dtype=np.float32)


def test_the_first_run_ran_beam_in_two_worker_processes(first_run):
    tmp_path, result = first_run
    assert result.returncode == EXIT_PUSHED, result.stdout + result.stderr
    # the first run's log (run-YYYYMMDD-HHMMSS.log): the cached re-run may have added one,
    # and then gzipped this one (run-YYYYMMDD-HHMMSS.log.gz)
    first = min((tmp_path / "runs" / "half_plus_two").glob("logs/run-*.log*"))
    log = gzip.decompress(first.read_bytes()).decode() if first.suffix == ".gz" \
        else first.read_text()
    # Beam's SDK workers ran as processes of their own and reported through the job service.
    assert "sdk_worker_main" in log and "local_job_service" in log


def test_every_input_row_became_exactly_one_example(first_run):
    tmp_path, result = first_run
    assert result.returncode == EXIT_PUSHED, result.stderr
    pipeline_dir = tmp_path / "runs" / "half_plus_two"
    with _only("data/*/data.csv", pipeline_dir).open(newline="") as f:
        expected = np.array([float(row["x"]) for row in csv.DictReader(f)], dtype=np.float32)
    written = np.concatenate([_split_xs(pipeline_dir, "train"), _split_xs(pipeline_dir, "eval")])
    np.testing.assert_array_equal(np.sort(written), np.sort(expected))


@pytest.mark.parametrize("split", ["train", "eval"])
def test_statistics_describe_the_examples_of_each_split(first_run, split):
    tmp_path, result = first_run
    assert result.returncode == EXIT_PUSHED, result.stderr
    pipeline_dir = tmp_path / "runs" / "half_plus_two"
    xs = _split_xs(pipeline_dir, split)
    stats = tfdv.load_stats_binary(str(_only(
        f"StatisticsGen/statistics/*/Split-{split}/FeatureStats.pb", pipeline_dir))).datasets[0]
    assert stats.num_examples == len(xs)
    [x] = [feature for feature in stats.features if list(feature.path.step) == ["x"]]
    assert x.num_stats.common_stats.num_non_missing == len(xs)
    assert x.num_stats.min == pytest.approx(xs.min()) and x.num_stats.max == pytest.approx(xs.max())
    assert x.num_stats.mean == pytest.approx(xs.astype(np.float64).mean(), rel=1e-6)
    assert x.num_stats.std_dev == pytest.approx(xs.astype(np.float64).std(), rel=1e-5)
