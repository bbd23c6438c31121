"""The `python -m pipelines` command line: flags -> RunConfig -> pipeline, and its exit codes."""

from __future__ import annotations

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
    from pipelines import half_plus_two

    config = RunConfig(pipeline_root=tmp_path / "runs", repository=tmp_path / "repo",
                       beam_args=("--direct_num_workers=2",), enable_cache=False, profile="fast")
    pipeline = half_plus_two.build(config)
    assert pipeline.beam_pipeline_args == ["--direct_num_workers=2"]
    assert pipeline.enable_cache is False
    assert Path(pipeline.pipeline_info.pipeline_root) == (tmp_path / "runs" / "half_plus_two")
    pusher = next(c for c in pipeline.components if c.id == "Pusher")
    assert str(tmp_path / "repo" / "half_plus_two") in str(pusher.exec_properties["push_destination"])


def test_no_running_server_means_nothing_to_wait_for(tmp_path, capsys):
    from pipelines.__main__ import EXIT_PUSHED, check_served

    args = parse_args(["run", "half_plus_two", "--serving-state-dir", str(tmp_path / "none")])
    assert check_served("half_plus_two", 1, args) == EXIT_PUSHED
    assert "no server is up" in capsys.readouterr().out
