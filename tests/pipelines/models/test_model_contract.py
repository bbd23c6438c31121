"""The model contract (pipelines/models/contract.py) and `python -m pipelines new`: a project
is written from each template; a project missing a part, or with a part of the wrong
kind, fails at load with a message naming the part; the built-in models meet the same
contract; --model-dir and $TOOLKIT_MODEL_DIR usage errors exit 2 before TensorFlow.

Nothing here trains (tests/pipelines/models/test_model_project_e2e.py does)."""

from __future__ import annotations

import re

import pytest

from pipelines.models import contract, registry, scaffold
from pipelines.models.contract import ModelContractError
from toolkit_testing import run_main, usage_error


@pytest.fixture
def project(tmp_path):
    """A fresh regression project, `shop`, written through the public command."""
    out = tmp_path / "shop"
    result = run_main("pipelines", "new", "shop", "--template", "regression", "--out", str(out))
    assert result.returncode == 0, result.stderr
    return out


def without(project, part: str) -> None:
    """Drop one keyword argument from the project's PIPELINE = ModelPipeline(...)."""
    model = project / "model.py"
    text, count = re.subn(rf"^    {part}=.*\n", "", model.read_text(), flags=re.M)
    assert count == 1, part
    model.write_text(text)


@pytest.mark.parametrize("template", sorted(scaffold.TEMPLATES))
def test_new_writes_a_self_contained_project(tmp_path, template):
    out = tmp_path / "proj"
    result = run_main("pipelines", "new", "my_model", "--template", template, "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in out.iterdir()) == [
        "README.md", "drift.pbtxt", "model.py", "my_model_data.py", "my_model_trainer.py",
        "schema.pbtxt"]
    assert "TEMPLATE_NAME" not in "".join(p.read_text() for p in out.iterdir())
    assert registry.project_name(out) == "my_model"
    assert f"python -m pipelines run my_model --model-dir {out}" in result.stdout
    listed = run_main("pipelines", "list", "--model-dir", str(out))
    assert listed.stdout.split() == ["half_plus_two", "mnist", "my_model"]


def test_a_loaded_project_meets_the_contract_with_the_standard_wiring(project):
    model = registry.get("shop", project)
    assert (model.name, model.example_format, model.signatures) == ("shop", "csv",
                                                                    ("regression",))
    assert model.source == str(project / "model.py")
    assert model.trainer_module == str(project / "shop_trainer.py")
    assert model.transform_module is None
    assert {model.build, model.build_remote, model.retrain_parts} - {None} == {
        model.build, model.build_remote, model.retrain_parts}


@pytest.mark.parametrize("part", contract.required_parts())
def test_a_project_missing_a_part_fails_at_load_naming_it(project, part):
    without(project, part)
    with pytest.raises(ModelContractError) as error:
        registry.get("shop", project)
    message = str(error.value)
    assert f"the model does not provide `{part}`, which the contract requires" in message
    assert str(project / "model.py") in message


@pytest.mark.parametrize("replace,message", [
    ('schema_file=str(HERE / "schema.pbtxt")', "`schema_file` names {project}/missing.pbtxt, "
                                               "which is not a file"),
    ("smoke_check=smoke_check", "`smoke_check` must take (eval_dir, config, examples)"),
    ('example_format="csv"', "`example_format` must be one of csv, tfrecord (got 'parquet')"),
    ("profiles=PROFILES", "`profiles` lacks the profile(s) fast"),
    ("signatures=(REGRESS_SIGNATURE,)", "`signatures` must be a non-empty list of signature "
                                        "names (got 'regression')"),
])
def test_a_part_of_the_wrong_kind_fails_at_load_naming_it(project, replace, message):
    broken = {'schema_file=str(HERE / "schema.pbtxt")': 'schema_file="missing.pbtxt"',
              "smoke_check=smoke_check": "smoke_check=lambda eval_dir: None",
              'example_format="csv"': 'example_format="parquet"',
              "profiles=PROFILES": 'profiles={"default": PROFILES["default"]}',
              "signatures=(REGRESS_SIGNATURE,)": "signatures=REGRESS_SIGNATURE"}[replace]
    model = project / "model.py"
    model.write_text(model.read_text().replace(replace, broken))
    with pytest.raises(ModelContractError, match=re.escape(message.format(project=project))):
        registry.get("shop", project)


def test_a_name_that_is_not_the_projects_and_a_module_that_does_not_load(project):
    model = project / "model.py"
    model.write_text(model.read_text().replace("name=MODEL_NAME,", 'name="other",'))
    with pytest.raises(ModelContractError, match="PIPELINE is named 'other', but the model is "
                                                 "'shop' \\(MODEL_NAME\\)"):
        registry.get("shop", project)
    model.write_text("MODEL_NAME = 'shop'\nimport not_a_module_anywhere\n")
    with pytest.raises(ModelContractError, match="model.py: failed to load: "
                                                 "ModuleNotFoundError"):
        registry.get("shop", project)
    model.write_text("MODEL_NAME = 'shop'\nfrom pipelines.model_contract import ModelPipeline\n")
    with pytest.raises(ModelContractError, match="the toolkit's pipelines.model_contract is "
                                                 "pipelines.models.contract now"):
        registry.get("shop", project)


def test_run_reports_a_missing_part_in_one_line(project):
    without(project, "smoke_check")
    result = run_main("pipelines", "run", "shop", "--model-dir", str(project))
    assert result.returncode == 1
    assert "error: shop: " in result.stderr
    assert "the model does not provide `smoke_check`" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("name", sorted(registry.PIPELINES))
def test_the_built_in_models_meet_the_same_contract(name):
    model = registry.get(name)
    assert model.name == name
    assert set(contract.PROFILE_NAMES) <= set(model.profiles)


def test_usage_errors_of_model_projects_exit_2_before_anything_heavy(tmp_path, capsys,
                                                                     monkeypatch):
    (tmp_path / "empty").mkdir()
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "file").write_text("")
    err = usage_error(["run", "shop", "--model-dir", str(tmp_path / "empty")], capsys)
    assert (f"python -m pipelines run: error: argument --model-dir: {tmp_path / 'empty'} is "
            f"not a model project: it has no model.py") in err
    err = usage_error(["history", "shop", "--model-dir", str(tmp_path / "missing")], capsys)
    assert f"argument --model-dir: {tmp_path / 'missing'} does not exist" in err
    monkeypatch.setenv(registry.MODEL_DIR_VARIABLE, str(tmp_path / "empty"))
    err = usage_error(["make-spans", "shop", "--out", str(tmp_path / "spans")], capsys)
    assert "python -m pipelines make-spans: error: $TOOLKIT_MODEL_DIR: " in err
    monkeypatch.delenv(registry.MODEL_DIR_VARIABLE)
    err = usage_error(["retrain", "shop", "--data", str(tmp_path)], capsys)
    assert "invalid choice: 'shop' (choose from half_plus_two, mnist;" in err
    err = usage_error(["new", "mnist", "--template", "regression", "--out",
                       str(tmp_path / "p")], capsys)
    assert "argument NAME: 'mnist' is a built-in model; choose another name" in err
    err = usage_error(["new", "Shop", "--template", "regression", "--out",
                       str(tmp_path / "p")], capsys)
    assert "argument NAME: 'Shop': a model name is lower case letters" in err
    err = usage_error(["new", "shop", "--template", "regression", "--out",
                       str(tmp_path / "taken")], capsys)
    assert f"argument --out: {tmp_path / 'taken'} exists and is not an empty directory" in err
    err = usage_error(["new", "shop", "--template", "tabular", "--out", str(tmp_path / "p")],
                      capsys)
    assert "argument --template: invalid choice: 'tabular'" in err
    assert not (tmp_path / "p").exists() and not (tmp_path / "spans").exists()


@pytest.mark.parametrize("command", ["run", "retrain", "schedule", "make-spans", "history",
                                     "compile", "gc", "list"])
def test_every_command_takes_the_model_dir(tmp_path, capsys, command):
    argv = {"run": [], "retrain": ["--data", str(tmp_path)],
            "schedule": ["--data", str(tmp_path), "--every", "1h"],
            "make-spans": ["--out", str(tmp_path / "spans")], "history": [], "gc": [],
            "compile": ["--output", str(tmp_path / "p.json"), "--pipeline-root", "gs://b/r",
                        "--data-root", "gs://b/d", "--repository", "/models"], "list": []}
    name = [] if command == "list" else ["shop"]
    err = usage_error([command, *name, *argv[command], "--model-dir", str(tmp_path)], capsys)
    assert f"python -m pipelines {command}: error: argument --model-dir: {tmp_path} is not a " \
           f"model project" in err
