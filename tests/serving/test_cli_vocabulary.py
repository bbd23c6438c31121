"""One command-line vocabulary for `python -m serving` and `python -m pipelines`: the same
spellings for the same things, no abbreviations, renamed flags refused with their new
name, project-wide defaults that environment variables override, exact usage errors."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from pipelines.__main__ import parse_args as pipelines_args
from serving import cli, defaults
from serving.__main__ import build_parser, main
from serving.lifecycle import state as state_store
from serving.lifecycle.config import Addresses
from serving.lifecycle.errors import EXIT_CODES, EXIT_NOT_RUNNING, EXIT_USAGE

ROOT = Path(__file__).resolve().parents[2]


def serving_args(*argv: str):
    return build_parser().parse_args(list(argv))


def usage_error(capsys, *argv: str) -> str:
    with pytest.raises(SystemExit) as exit_info:
        main(list(argv))
    assert exit_info.value.code == EXIT_USAGE
    return capsys.readouterr().err


@pytest.fixture
def no_toolkit_environment(monkeypatch):
    for d in defaults.ALL:
        monkeypatch.delenv(d.variable, raising=False)


def test_both_command_sets_spell_the_same_things_the_same_way(tmp_path):
    served = serving_args("up", "--model", "mnist", "--repository", str(tmp_path / "repo"),
                          "--state-dir", str(tmp_path / "state"), "--timeout", "7", "--json")
    run = pipelines_args(["run", "--model", "mnist", "--repository", str(tmp_path / "repo"),
                          "--state-dir", str(tmp_path / "state"), "--timeout", "7"])
    assert served.model == run.model == ["mnist"]
    assert served.repository == run.repository == tmp_path / "repo"
    assert served.state_dir == run.state_dir == tmp_path / "state"
    assert served.timeout == run.timeout == 7.0
    assert served.json is pipelines_args(["history", "mnist", "--json"]).json is True
    waited = serving_args("wait", "--model", "mnist", "--timeout", "7",
                          "--state-dir", str(tmp_path / "state"))
    retrained = pipelines_args(["retrain", "--model", "mnist", "--data", str(tmp_path),
                                "--timeout", "7", "--state-dir", str(tmp_path / "state")])
    assert (waited.model, waited.timeout, waited.state_dir) == \
        (retrained.name, retrained.timeout, retrained.state_dir)
    assert serving_args("status", "--json").json is True


def test_up_takes_model_repeated_or_comma_separated():
    assert serving_args("up", "--model", "a,b", "--model", "c").model == ["a", "b", "c"]


def test_up_s_repository_defaults_to_the_project_s(no_toolkit_environment, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    args = serving_args("up", "--model", "mnist")
    assert args.repository == ROOT / "model_repository"
    assert args.state_dir == ROOT / ".cache" / "serving"


@pytest.mark.parametrize("argv,flag", [
    (["up", "--repo", "x", "--model", "mnist"], "--repo"),
    (["up", "--model", "mnist", "--time", "3"], "--time"),
    (["status", "--js"], "--js"),
    (["status", "--state", "x"], "--state"),
])
def test_abbreviations_are_refused(capsys, argv, flag):
    assert f"error: unrecognized arguments: {flag}" in usage_error(capsys, *argv)


@pytest.mark.parametrize("old,new", [("--models", "--model"), ("--wait-seconds", "--timeout")])
def test_old_spellings_are_refused_with_the_new_one(capsys, tmp_path, old, new):
    err = usage_error(capsys, "up", "--model", "a", old, "1", "--state-dir", str(tmp_path / "s"))
    assert f"python -m serving up: error: {old} is now {new}" in err
    assert not (tmp_path / "s").exists()
    help_text = build_parser()._subparsers._group_actions[0].choices["up"].format_help()
    assert old not in help_text.replace("--model NAME", "")


@pytest.mark.parametrize("argv,message", [
    (["up", "--model", "a", "--grpc-port", "65536"],
     "up: error: argument --grpc-port: a port is 0 (ephemeral) to 65535, got 65536"),
    (["up", "--model", "a", "--rest-port", "-1"],
     "up: error: argument --rest-port: a port is 0 (ephemeral) to 65535, got -1"),
    (["up", "--model", "a", "--timeout", "-1"],
     "up: error: argument --timeout: expected 0 or more seconds, got '-1'"),
    (["up", "--model", "a", "--file-system-poll-seconds", "nan"],
     "up: error: argument --file-system-poll-seconds: expected 0 or more seconds, got 'nan'"),
    (["up", "--model", "a", "--repository", "{tmp}/file"],
     "up: error: argument --repository: {tmp}/file is not a directory"),
    (["up", "--model", "a,,b"], "up: error: argument --model: expected NAME or NAME,NAME,..., got 'a,,b'"),
    (["up", "--model", "a", "--state-dir", "{tmp}/file"],
     "up: error: argument --state-dir: {tmp}/file is not a directory"),
    (["wait", "--model", "a", "--timeout", "-0.5"],
     "wait: error: argument --timeout: expected 0 or more seconds, got '-0.5'"),
    (["rollback", "--model", "a", "--to", "one"],
     "rollback: error: argument --to: expected a whole number, got 'one'"),
    (["rollback", "--model", "a", "--to", "0"], "rollback: error: argument --to: must be at "
                                                "least 1, got 0"),
    (["promote", "--model", "a"], "promote: error: the following arguments are required: "
                                  "--version"),
    (["promote", "--model", "a", "--version", "0"],
     "promote: error: argument --version: must be at least 1, got 0"),
    (["versions", "--model", "a", "--repository", "{tmp}/file"],
     "versions: error: argument --repository: {tmp}/file is not a directory"),
    (["down", "--timeout", "-3"], "down: error: argument --timeout: expected 0 or more seconds"),
    (["logs", "--tail", "-1"], "logs: error: argument --tail: must be 0 or more, got -1"),
    (["predict", "--model", "a", "--instances", "{{}}"],
     "predict: error: argument --instances: expected a JSON list, got dict"),
    (["status", "--", "--port=1"], "status: error: extra server flags after `--` are for `up` only"),
])
def test_usage_errors_exit_2_and_write_nothing(capsys, tmp_path, argv, message):
    (tmp_path / "file").write_text("")
    argv = [a.format(tmp=tmp_path) for a in argv]
    if "--state-dir" not in argv:
        argv += ["--state-dir", str(tmp_path / "s")] if "--" not in argv else []
    err = usage_error(capsys, *argv)
    assert f"python -m serving {message.format(tmp=tmp_path)}" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]


def _stopped_server(state_dir: Path) -> None:
    """A server `up` recorded in state_dir that is no longer running."""
    child = subprocess.Popen([sys.executable, "-c", ""])
    child.wait()  # its pid names no process now
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens there once closed
    state_store.save(state_store.ServerState(
        backend="process", handle=str(child.pid), name="gone", image="", repository=str(state_dir),
        models=("mnist",), addresses=Addresses("127.0.0.1", port, port),
        state_dir=str(state_dir)))


def test_status_json_without_a_server_prints_json_and_exits_4(capsys, tmp_path):
    assert main(["status", "--json", "--state-dir", str(tmp_path)]) == EXIT_NOT_RUNNING
    out = json.loads(capsys.readouterr().out)
    assert out["running"] is False and out["recorded"] is False
    assert out["state_dir"] == str(tmp_path) and "no server recorded" in out["error"]


def test_the_state_dir_comes_from_the_environment_and_the_flag_wins(capsys, monkeypatch,
                                                                    tmp_path):
    recorded, empty = tmp_path / "recorded", tmp_path / "empty"
    _stopped_server(recorded)
    monkeypatch.setenv("TOOLKIT_STATE_DIR", str(recorded))
    assert main(["status", "--json"]) == EXIT_NOT_RUNNING
    out = json.loads(capsys.readouterr().out)
    assert (out["recorded"], out["running"], out["state_dir"]) == (True, False, str(recorded))
    assert main(["status", "--json", "--state-dir", str(empty)]) == EXIT_NOT_RUNNING
    assert json.loads(capsys.readouterr().out)["recorded"] is False
    monkeypatch.setenv("TOOLKIT_STATE_DIR", str(empty))
    assert main(["status"]) == EXIT_NOT_RUNNING
    assert f"no server recorded in {empty}" in capsys.readouterr().err
    assert pipelines_args(["run", "mnist"]).state_dir == empty  # pipelines read the same one


def _parsers():
    root = build_parser()
    yield root
    yield from root._subparsers._group_actions[0].choices.values()


def test_every_command_s_help_has_a_description_defaults_and_the_exit_codes():
    table = cli.exit_codes_help(EXIT_CODES)
    for parser in _parsers():
        assert parser.description, parser.prog
        text = parser.format_help()
        for code, _ in EXIT_CODES:
            assert f"\n  {code:<3} " in text, (parser.prog, code)
        assert table.splitlines()[0] in text
        for action in parser._actions:
            if action.option_strings and action.dest != "help" and action.help != "==SUPPRESS==":
                assert "default" in action.help or action.required or action.nargs == 0 \
                    or action.default not in (None, []), (parser.prog, action.option_strings)
    up_help = " ".join(build_parser()._subparsers._group_actions[0].choices["up"]
                       .format_help().split())
    assert "env TOOLKIT_REPOSITORY" in up_help and "env TOOLKIT_STATE_DIR" in up_help
