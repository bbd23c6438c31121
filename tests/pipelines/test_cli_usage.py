"""`python -m pipelines` usage errors are fast and exact: exit 2, a message naming the
argument, before TensorFlow or TFX is imported and before anything is written."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pipelines import outcomes
from pipelines.__main__ import build_parser, main, parse_args
from serving import defaults
from toolkit_testing import HEAVY, usage_error

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def work(tmp_path):
    """Where a run would write, passed explicitly; a data directory, a file, a module file."""
    (tmp_path / "spans").mkdir()
    (tmp_path / "a_file").write_text("")
    (tmp_path / "trainer.py").write_text("")
    return tmp_path


def paths(work: Path):
    return ["--pipeline-root", str(work / "runs"), "--repository", str(work / "repo"),
            "--cache-dir", str(work / "cache"), "--state-dir", str(work / "state")]


def assert_nothing_written(work: Path):
    assert sorted(p.name for p in work.iterdir()) == ["a_file", "spans", "trainer.py"]


@pytest.mark.parametrize("argv,message", [
    (["run", "half_plus_two", "--data-dir", "{work}/missing"],
     "argument --data-dir: {work}/missing does not exist"),
    (["retrain", "mnist", "--data", "{work}/missing"],
     "argument --data: {work}/missing does not exist"),
    (["retrain", "mnist", "--data", "{work}/a_file"],
     "argument --data: {work}/a_file is not a directory"),
    (["schedule", "mnist", "--data", "{work}/missing", "--every", "6h"],
     "argument --data: {work}/missing does not exist"),
    (["schedule", "mnist", "--data", "{work}/spans", "--every", "often"],
     "argument --every: expected an interval like 90s, 15m, 6h or 1d, got 'often'"),
    (["schedule", "mnist", "--data", "{work}/spans", "--every", "0h"],
     "argument --every: expected an interval"),
    (["retrain", "mnist", "--data", "{work}/spans", "--window", "0"],
     "argument --window: must be at least 1, got 0"),
    (["schedule", "mnist", "--data", "{work}/spans", "--every", "1h", "--max-runs", "0"],
     "argument --max-runs: must be at least 1, got 0"),
    (["retrain", "mnist", "--data", "{work}/spans", "--smoke-examples", "-1"],
     "argument --smoke-examples: must be 0 or more, got -1"),
    (["retrain", "mnist", "--data", "{work}/spans", "--trainer-module", "{work}/missing.py"],
     "argument --trainer-module: {work}/missing.py does not exist"),
    (["retrain", "mnist", "--data", "{work}/spans", "--trainer-module", "{work}/spans"],
     "argument --trainer-module: {work}/spans is not a file"),
    (["make-spans", "half_plus_two", "--out", "{work}/out", "--spans", "0"],
     "argument --spans: must be at least 1, got 0"),
    (["make-spans", "half_plus_two", "--out", "{work}/out", "--start", "0"],
     "argument --start: must be at least 1, got 0"),
    (["make-spans", "half_plus_two", "--out", "{work}/a_file"],
     "argument --out: {work}/a_file is not a directory"),
    (["run", "half_plus_two", "--timeout", "-1"],
     "argument --timeout: expected 0 or more seconds, got '-1'"),
    (["retrain", "mnist", "--data", "{work}/spans", "--timeout", "soon"],
     "argument --timeout: expected a number of seconds, got 'soon'"),
    (["run", "half_plus_two", "--repository", "{work}/a_file"],
     "argument --repository: {work}/a_file is not a directory"),
    (["run", "half_plus_two", "--pipeline-root", "{work}/a_file"],
     "argument --pipeline-root: {work}/a_file is not a directory"),
    (["retrain", "mnist", "--data", "{work}/spans", "--state-dir", "{work}/a_file"],
     "argument --state-dir: {work}/a_file is not a directory"),
    (["run", "half_plus_two", "--cache-dir", "{work}/a_file"],
     "argument --cache-dir: {work}/a_file is not a directory"),
    (["run", "resnet"], "invalid choice: 'resnet' (choose from half_plus_two, mnist; "
                        "`python -m pipelines list` lists them)"),
    (["run"], "which pipeline? give NAME or --model NAME"),
    (["retrain", "--data", "{work}/spans"], "which pipeline? give NAME or --model NAME"),
    (["run", "mnist", "--model", "half_plus_two"],
     "NAME says mnist but --model says half_plus_two: give the pipelines one way"),
    (["retrain", "mnist", "--model", "half_plus_two", "--data", "{work}/spans"],
     "NAME says mnist but --model says half_plus_two"),
    (["history", "mnist", "--", "--runner=DirectRunner"],
     "arguments after `--` go to Beam; only run, retrain, schedule, compile take them"),
])
def test_usage_errors_exit_2_before_anything_heavy_or_written(work, capsys, argv, message):
    argv = [a.format(work=work) for a in argv]
    command = argv[0]
    if command in ("run", "retrain", "schedule") and "--" not in argv:
        argv += paths(work)
    err = usage_error(argv, capsys)
    assert f"python -m pipelines {command}: error: {message.format(work=work)}" in err
    assert_nothing_written(work)


def test_compile_refuses_an_output_in_a_missing_directory_and_a_uri_repository(work, capsys):
    common = ["compile", "half_plus_two", "--pipeline-root", "gs://b/tfx",
              "--data-root", "gs://b/data"]
    err = usage_error([*common, "--output", f"{work}/missing/spec.json",
                       "--repository", "/models"], capsys)
    assert f"argument --output: {work}/missing does not exist" in err
    err = usage_error([*common, "--output", f"{work}/spec.json",
                       "--repository", "gs://b/models"], capsys)
    assert "argument --repository: 'gs://b/models'" in err and "absolute filesystem path" in err
    assert_nothing_written(work)


@pytest.mark.parametrize("argv,flag", [
    (["run", "mnist", "--profil", "fast"], "--profil"),
    (["run", "mnist", "--state", "s"], "--state"),
    (["retrain", "mnist", "--data", ".", "--win", "2"], "--win"),
    (["history", "mnist", "--js"], "--js"),
])
def test_abbreviations_are_refused(argv, flag, capsys):
    err = usage_error(argv, capsys)
    assert f"error: unrecognized arguments: {flag}" in err


@pytest.mark.parametrize("command", ["run", "retrain", "schedule"])
@pytest.mark.parametrize("old,new", [("--serving-state-dir", "--state-dir"),
                                     ("--serving-timeout", "--timeout")])
def test_old_spellings_are_refused_with_the_new_one(work, capsys, command, old, new):
    argv = [command, "mnist", old, "1"]
    if command != "run":
        argv += ["--data", str(work / "spans"), "--every", "1h"][:4 if command == "schedule" else 2]
    err = usage_error(argv, capsys)
    assert f"python -m pipelines {command}: error: {old} is now {new}" in err
    # hidden from --help: only the new spelling is shown
    with pytest.raises(SystemExit):
        parse_args([command, "--help"])
    text = capsys.readouterr().out
    assert new in text and old not in text


def test_name_and_model_are_the_same_thing():
    assert parse_args(["run", "--model", "half_plus_two", "--model", "mnist"]).names == \
        ["half_plus_two", "mnist"]
    assert parse_args(["run", "--model", "half_plus_two,mnist"]).names == ["half_plus_two", "mnist"]
    assert parse_args(["run", "half_plus_two", "mnist"]).names == ["half_plus_two", "mnist"]
    assert parse_args(["run", "mnist", "--model", "mnist"]).names == ["mnist"]
    for command in (["history"], ["compile", "--output", "x.json", "--pipeline-root", "gs://b",
                                  "--data-root", "gs://d", "--repository", "/m"]):
        by_name = parse_args([command[0], "mnist", *command[1:]])
        by_flag = parse_args([command[0], "--model", "mnist", *command[1:]])
        assert by_name.name == by_flag.name == "mnist"


def test_retrain_and_schedule_take_the_model_flag(work):
    args = parse_args(["schedule", "--model", "mnist", "--data", str(work / "spans"),
                       "--every", "90s", "--max-runs", "2", "--timeout", "7",
                       "--state-dir", str(work / "state")])
    assert (args.name, args.every, args.max_runs, args.timeout, args.state_dir) == \
        ("mnist", 90.0, 2, 7.0, work / "state")


def test_defaults_are_the_project_s_from_any_directory(monkeypatch, tmp_path):
    for d in defaults.ALL:
        monkeypatch.delenv(d.variable, raising=False)
    monkeypatch.chdir(tmp_path)
    args = parse_args(["run", "mnist"])
    assert args.repository == ROOT / "model_repository"
    assert args.pipeline_root == ROOT / "tfx_runs"
    assert args.cache_dir == ROOT / ".cache"
    assert args.state_dir == ROOT / ".cache" / "serving"
    from pipelines.config import RunConfig

    config = RunConfig()  # the code's defaults are the command line's
    assert (config.repository, config.pipeline_root, config.cache_dir) == \
        (args.repository, args.pipeline_root, args.cache_dir)


def test_environment_variables_set_the_defaults_and_flags_win(monkeypatch, tmp_path):
    monkeypatch.setenv("TOOLKIT_REPOSITORY", str(tmp_path / "repo"))
    monkeypatch.setenv("TOOLKIT_PIPELINE_ROOT", str(tmp_path / "runs"))
    monkeypatch.setenv("TOOLKIT_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("TOOLKIT_STATE_DIR", str(tmp_path / "state"))
    args = parse_args(["retrain", "mnist", "--data", str(tmp_path)])
    assert (args.repository, args.pipeline_root, args.cache_dir, args.state_dir) == \
        (tmp_path / "repo", tmp_path / "runs", tmp_path / "cache", tmp_path / "state")
    assert parse_args(["run", "mnist", "--repository", "mine"]).repository == Path("mine")
    monkeypatch.setenv("TOOLKIT_PIPELINE_ROOT", str(tmp_path))  # a file: the default is checked too
    (tmp_path / "f").write_text("")
    monkeypatch.setenv("TOOLKIT_REPOSITORY", str(tmp_path / "f"))
    with pytest.raises(SystemExit) as exit_info:
        parse_args(["run", "mnist"])
    assert exit_info.value.code == 2


def _parsers():
    root = build_parser()
    yield root
    for action in root._actions:
        if hasattr(action, "choices") and isinstance(action.choices, dict):
            yield from action.choices.values()


def test_every_command_s_help_has_a_description_defaults_and_its_exit_codes():
    for parser in _parsers():
        assert parser.description, parser.prog
        text = parser.format_help()
        assert "exit codes" in text, parser.prog
        for action in parser._actions:
            if action.option_strings and action.help != "==SUPPRESS==" and \
                    action.dest != "help":
                assert "default" in action.help or action.required or action.nargs == 0 \
                    or action.default not in (None, []), (parser.prog, action.option_strings)
        command = parser.prog.split()[-1]
        for outcome in outcomes.BY_COMMAND.get(command, ()):
            assert f"{outcome.exit_code:<3} {outcome.name}:" in text, (parser.prog, outcome)


def test_run_s_exit_codes_say_a_rejected_canary_leaves_stable_alone(capsys):
    with pytest.raises(SystemExit):
        parse_args(["run", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "rolled back" not in text and "not served" not in text
    assert "4 rejected: pushed, but the canary did not load or did not answer a sample " \
           "prediction: withdrawn as .rejected-N; stable never changed" in text
    assert "0 candidate: --no-promote" in text
    assert "9 held: pushed as a candidate, not promoted: an operator holds the model" in text


def test_list_prints_json(capsys):
    assert main(["list", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == ["half_plus_two", "mnist"]


@pytest.mark.parametrize("argv,error", [
    (["pipelines", "retrain", "mnist", "--data", "{tmp}/missing", "--pipeline-root",
      "{tmp}/runs"], "argument --data: {tmp}/missing does not exist"),
    (["pipelines", "run", "half_plus_two", "--data-dir", "{tmp}/missing", "--pipeline-root",
      "{tmp}/runs"], "argument --data-dir: {tmp}/missing does not exist"),
    (["pipelines", "schedule", "mnist", "--data", "{tmp}", "--every", "often",
      "--pipeline-root", "{tmp}/runs"], "argument --every"),
    (["serving", "up", "--model", "mnist", "--grpc-port", "70000", "--repository",
      "{tmp}/repo"], "argument --grpc-port"),
], ids=["retrain-data", "run-data-dir", "schedule-every", "up-port"])
def test_a_usage_error_is_fast_and_imports_no_tensorflow(tmp_path, argv, error):
    """The whole command as cron runs it, in a fresh process (usage_error's in-process
    import check can only see what this process had not imported yet)."""
    argv = [arg.format(tmp=tmp_path) for arg in argv]
    started = time.monotonic()
    result = subprocess.run([sys.executable, "-X", "importtime", "-m", *argv], cwd=tmp_path,
                            capture_output=True, text=True, timeout=60,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    elapsed = time.monotonic() - started
    assert result.returncode == 2, result.stderr
    assert error.format(tmp=tmp_path) in result.stderr
    imported = {line.split("|")[-1].strip().split(".")[0]
                for line in result.stderr.splitlines() if line.startswith("import time:")}
    assert "argparse" in imported and not imported & set(HEAVY)
    assert elapsed < 20, elapsed  # about 0.2-1 s; loose: the other test worker shares the cores
    assert sorted(p.name for p in tmp_path.iterdir()) == []
