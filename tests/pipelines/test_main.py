"""The `python -m pipelines` command line: flags -> RunConfig -> pipeline, and its exit codes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipelines.__main__ import parse_args
from pipelines.config import RunConfig


def test_beam_arguments_after_double_dash_pass_through():
    args = parse_args(["run", "half_plus_two", "--no-cache", "--",
                       "--runner=FlinkRunner", "--flink_master=host:8081"])
    assert args.names == ["half_plus_two"]
    assert args.enable_cache is False
    assert args.beam_args == ("--runner=FlinkRunner", "--flink_master=host:8081")


def test_unknown_pipeline_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exit_info:
        parse_args(["run", "resnet"])
    assert exit_info.value.code == 2
    assert "invalid choice" in capsys.readouterr().err


def test_config_reaches_the_pipeline(tmp_path):
    from pipelines.models import half_plus_two

    config = RunConfig(pipeline_root=tmp_path / "runs", repository=tmp_path / "repo",
                       beam_args=("--direct_num_workers=2",), enable_cache=False, profile="fast")
    pipeline = half_plus_two.build(config)
    assert pipeline.beam_pipeline_args == ["--direct_num_workers=2"]
    assert pipeline.enable_cache is False
    assert Path(pipeline.pipeline_info.pipeline_root) == (tmp_path / "runs" / "half_plus_two")
    pusher = next(c for c in pipeline.components if c.id == "Pusher")
    assert str(tmp_path / "repo" / "half_plus_two") in str(pusher.exec_properties["push_destination"])


def test_no_running_server_means_the_candidate_is_promoted_unverified(tmp_path, capsys):
    from pipelines.__main__ import deploy_push
    from pipelines.outcomes import PUSHED
    from serving import rollouts
    from serving.repository import ModelRepository
    from toolkit_testing import version_dirs, write_fake_saved_model

    repository = ModelRepository(tmp_path / "repo")
    with repository.publish("half_plus_two", candidate=True) as publication:  # the Pusher's way
        write_fake_saved_model(publication.staging)
    assert version_dirs(repository.model_dir("half_plus_two")) == [".candidates/1"]
    args = parse_args(["run", "half_plus_two", "--state-dir", str(tmp_path / "none"),
                       "--repository", str(repository.root)])
    assert deploy_push("half_plus_two", 1, args, repository) == (PUSHED, "")
    assert "no server is up for half_plus_two; version 1 is stable, not verified" in \
        capsys.readouterr().out
    assert version_dirs(repository.model_dir("half_plus_two")) == ["1"]
    record = rollouts.load(repository.model_dir("half_plus_two"), "half_plus_two")
    assert (record.stable, record.stable_verified) == (1, False)


def test_retrain_help_lists_every_exit_code(capsys):
    from pipelines.outcomes import ALL

    with pytest.raises(SystemExit) as exit_info:
        parse_args(["retrain", "--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    for outcome in ALL:
        assert f"{outcome.exit_code:<3} {outcome.name}:" in text


def test_retrain_usage_errors_exit_2(tmp_path, capsys):
    from pipelines.__main__ import main

    with pytest.raises(SystemExit) as exit_info:
        main(["retrain", "mnist", "--data", str(tmp_path), "--window", "0"])
    assert exit_info.value.code == 2
    assert "argument --window: must be at least 1, got 0" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        main(["retrain", "mnist"])  # --data is required
    assert exit_info.value.code == 2


def test_schedule_refuses_a_bad_interval(tmp_path, capsys):
    from pipelines.__main__ import main

    with pytest.raises(SystemExit) as exit_info:
        main(["schedule", "mnist", "--data", str(tmp_path), "--every", "often"])
    assert exit_info.value.code == 2
    assert "argument --every: expected an interval" in capsys.readouterr().err


def test_make_spans_numbers_after_the_existing_spans(tmp_path):
    from toolkit_testing import run_main

    (tmp_path / "span-2" / "train").mkdir(parents=True)
    result = run_main("pipelines", "make-spans", "half_plus_two", "--out", str(tmp_path),
                      "--spans", "2", "--profile", "fast", "--kind", "label-shift")
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [str(tmp_path / "span-3"), "(label-shift)",
                                     str(tmp_path / "span-4"), "(label-shift)"]
    rows = (tmp_path / "span-3" / "eval" / "data.csv").read_text().splitlines()
    assert rows[0] == "x,y" and len(rows) == 101 and float(rows[1].split(",")[0]) >= 20


def test_compile_writes_a_kubeflow_v2_spec(tmp_path):
    from toolkit_testing import run_main

    output = tmp_path / "half_plus_two.json"
    result = run_main("pipelines", "compile", "half_plus_two", "--target", "kubeflow-v2",
                      "--output", str(output), "--pipeline-root", str(tmp_path / "root"),
                      "--data-root", "gs://bucket/half_plus_two", "--repository", "/models")
    assert result.returncode == 0, result.stderr
    assert json.loads(output.read_text())["displayName"] == "half-plus-two"
    refused = run_main("pipelines", "compile", "half_plus_two", "--output", str(output),
                       "--pipeline-root", str(tmp_path / "root"), "--data-root", "gs://b/d",
                       "--repository", "gs://bucket/models")
    assert refused.returncode == 2 and "absolute filesystem path" in refused.stderr


@pytest.mark.parametrize("window,expected", [(1, []), (2, [4]), (3, [3, 4]), (9, [1, 2, 3, 4])])
def test_a_first_retrain_ingests_the_older_spans_of_its_window(tmp_path, window, expected):
    from pipelines.config import RetrainConfig
    from pipelines.operations.retrain import _spans_to_backfill

    for span in (1, 2, 3, 4, 5):
        (tmp_path / "spans" / f"span-{span}").mkdir(parents=True)
    config = RetrainConfig(run=RunConfig(data_dir=tmp_path / "spans"), window=window)
    assert _spans_to_backfill(config, 5, tmp_path / "none.sqlite", "mnist_retrain") == expected
