"""Beam flags after `--` reach the data components: half_plus_two's fast profile on Beam's
multi-process DirectRunner (two worker processes), checked against the data it was given."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_data_validation as tfdv

from toolkit_testing import run_cli

pytestmark = pytest.mark.e2e

MULTI_PROCESS = ("--direct_running_mode=multi_processing", "--direct_num_workers=2")


@pytest.fixture(scope="module")
def multi_process_run(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("beam_multi_process")
    result = run_cli("pipelines", "run", "half_plus_two", "--profile", "fast",
                     "--repository", str(tmp_path / "repo"),
                     "--pipeline-root", str(tmp_path / "runs"), "--", *MULTI_PROCESS)
    return tmp_path / "runs" / "half_plus_two", result


def _only(pattern: str, root: Path) -> Path:
    [path] = root.glob(pattern)
    return path


def _split_xs(pipeline_dir: Path, split: str) -> np.ndarray:
    files = sorted(str(p) for p in pipeline_dir.glob(f"CsvExampleGen/examples/*/Split-{split}/*.gz"))
    assert files, f"no {split} examples"
    records = tf.data.TFRecordDataset(files, compression_type="GZIP")
    return np.array([tf.train.Example.FromString(r.numpy()).features.feature["x"].float_list.value[0]
                     for r in records], dtype=np.float32)


def test_the_run_pushes_with_two_worker_processes(multi_process_run):
    pipeline_dir, result = multi_process_run
    assert result.returncode == 0, result.stdout + result.stderr
    assert "half_plus_two: pushed version 1" in result.stdout
    log = _only("logs/run-*.log", pipeline_dir).read_text()
    # Beam's SDK workers ran as processes of their own and reported through the job service.
    assert "sdk_worker_main" in log and "local_job_service" in log


def test_every_input_row_became_exactly_one_example(multi_process_run):
    pipeline_dir, result = multi_process_run
    assert result.returncode == 0, result.stderr
    with _only("data/*/data.csv", pipeline_dir).open(newline="") as f:
        expected = np.array([float(row["x"]) for row in csv.DictReader(f)], dtype=np.float32)
    written = np.concatenate([_split_xs(pipeline_dir, "train"), _split_xs(pipeline_dir, "eval")])
    np.testing.assert_array_equal(np.sort(written), np.sort(expected))


@pytest.mark.parametrize("split", ["train", "eval"])
def test_statistics_describe_the_examples_of_each_split(multi_process_run, split):
    pipeline_dir, result = multi_process_run
    assert result.returncode == 0, result.stderr
    xs = _split_xs(pipeline_dir, split)
    stats = tfdv.load_stats_binary(str(_only(
        f"StatisticsGen/statistics/*/Split-{split}/FeatureStats.pb", pipeline_dir))).datasets[0]
    assert stats.num_examples == len(xs)
    [x] = [feature for feature in stats.features if list(feature.path.step) == ["x"]]
    assert x.num_stats.common_stats.num_non_missing == len(xs)
    assert x.num_stats.min == pytest.approx(xs.min()) and x.num_stats.max == pytest.approx(xs.max())
    assert x.num_stats.mean == pytest.approx(xs.astype(np.float64).mean(), rel=1e-6)
    assert x.num_stats.std_dev == pytest.approx(xs.astype(np.float64).std(), rel=1e-5)
