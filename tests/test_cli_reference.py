"""docs/cli.md is the commands' --help, current and the same on every machine."""

from __future__ import annotations

import argparse
import importlib.util
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

PROJECT = Path(__file__).resolve().parent.parent
SCRIPT = PROJECT / "docs" / "cli_reference.py"
MACHINE_SPECIFIC = {"COLUMNS": "40", "TOOLKIT_REPOSITORY": "/elsewhere/models",
                    "TOOLKIT_PIPELINE_ROOT": "/elsewhere/runs", "TOOLKIT_STATE_DIR": "/elsewhere/state",
                    "TOOLKIT_CACHE_DIR": "/elsewhere/cache"}


@pytest.fixture(scope="module")
def cli_reference():
    spec = importlib.util.spec_from_file_location("cli_reference", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_cli_md_is_current(cli_reference):
    current = (PROJECT / "docs" / "cli.md").read_text()
    assert current == cli_reference.render(), (
        "docs/cli.md differs from the commands' --help: run `make docs` and commit docs/cli.md")


def test_every_command_has_its_help(cli_reference):
    text = cli_reference.render()
    for _, module_name in cli_reference.COMMAND_SETS:
        root = cli_reference.build_parser(module_name)
        parsers = [parser for parser, _ in cli_reference.walk(root)]
        assert len(parsers) > 5  # the command set and its sub-commands
        for parser in parsers:
            assert f"\n## {parser.prog}\n" in text or f"\n### {parser.prog}\n" in text
            assert f"(#{cli_reference.slug(parser.prog)})" in text  # in the contents
    assert "python -m serving predict" in text and "python -m pipelines compile" in text
    assert str(PROJECT) not in text


def test_render_ignores_the_terminal_the_environment_and_the_directory(
        cli_reference, monkeypatch, tmp_path):
    expected = cli_reference.render()
    for name, value in MACHINE_SPECIFIC.items():
        monkeypatch.setenv(name, value)
    monkeypatch.chdir(tmp_path)
    assert cli_reference.render() == expected
    assert os.environ["COLUMNS"] == "40" and Path.cwd() == tmp_path  # both restored


def test_render_does_not_depend_on_where_the_project_is(cli_reference, monkeypatch):
    from serving import defaults

    expected = cli_reference.render()
    checkout = Path("/a/checkout/path/much/longer/than/this/one/usually/is/tfx-serving-toolkit")
    monkeypatch.setattr(defaults, "project_root", lambda: checkout)
    assert cli_reference.render() == expected
    assert defaults.project_root() == checkout  # restored


def test_the_script_writes_and_checks_the_reference(cli_reference, tmp_path):
    """In a fresh process, where the parsers are first imported with the variables set."""
    env = {**os.environ, **MACHINE_SPECIFIC}
    out = tmp_path / "cli.md"
    command = [sys.executable, str(SCRIPT), "--output", str(out)]
    assert subprocess.run([*command, "--check"], env=env, cwd=tmp_path).returncode == 1
    subprocess.run(command, env=env, cwd=tmp_path, check=True)
    assert out.read_text() == cli_reference.render()
    assert subprocess.run([*command, "--check"], env=env, cwd=tmp_path).returncode == 0


# ---- README.md and docs/*.md: the commands, links and exit codes they show ------------------

MARKDOWN = [PROJECT / "README.md", *sorted((PROJECT / "docs").glob("*.md"))]
LINK = re.compile(r"\]\(([^)\s]+)\)")
FENCE = re.compile(r"^```(\w*)\s*$")


def _blocks(path: Path):
    """(language, lines) of each fenced code block, and the lines outside them."""
    blocks, prose, current, language = [], [], None, ""
    for line in path.read_text().splitlines():
        fence = FENCE.match(line.strip())
        if fence and current is None:
            current, language = [], fence.group(1)
        elif fence and line.strip() == "```":
            blocks.append((language, current))
            current = None
        elif current is not None:
            current.append(line)
        else:
            prose.append(line)
    return blocks, prose


def _anchors(path: Path, cli_reference) -> set:
    """GitHub's anchors for the file's headings (a repeated heading gets -1, -2, ...)."""
    anchors, seen = set(), {}
    for line in _blocks(path)[1]:
        if line.startswith("#"):
            base = cli_reference.slug(line.lstrip("#").replace("`", ""))
            anchor = base if base not in seen else f"{base}-{seen[base]}"
            seen[base] = seen.get(base, 0) + 1
            anchors.add(anchor)
    return anchors


def _shell_commands(path: Path):
    """Each command line of the file's sh blocks (continuations joined, comments dropped)."""
    for language, lines in _blocks(path)[0]:
        if language not in ("sh", ""):
            continue
        text = "\n".join(lines).replace("\\\n", " ")
        for line in text.splitlines():
            try:
                words = shlex.split(line, comments=True)
            except ValueError:  # a line that is not a whole command
                continue
            if words:
                yield words


@pytest.mark.parametrize("path", MARKDOWN, ids=lambda p: p.name)
def test_links_resolve(path, cli_reference):
    for target in LINK.findall(path.read_text()):
        if target.startswith(("http://", "https://")):
            continue
        file_part, _, anchor = target.partition("#")
        linked = (path.parent / file_part).resolve() if file_part else path
        assert linked.exists(), f"{path.name}: link to a missing file: {target}"
        if anchor and linked.suffix == ".md":
            assert anchor in _anchors(linked, cli_reference), \
                f"{path.name}: no heading for the link {target}"


@pytest.mark.parametrize("path", MARKDOWN, ids=lambda p: p.name)
def test_documented_commands_use_real_options(path, cli_reference):
    """Every `python -m pipelines|serving COMMAND --option` shown takes that option."""
    parsers = {module.split(".")[0]: cli_reference.build_parser(module)
               for _, module in cli_reference.COMMAND_SETS}
    checked = 0
    for words in _shell_commands(path):
        for i, word in enumerate(words[:-1]):
            if word != "-m" or words[i + 1] not in parsers:
                continue
            root, rest = parsers[words[i + 1]], words[i + 2:]
            commands = next(a for a in root._actions if isinstance(a, argparse._SubParsersAction))
            assert rest and rest[0] in commands.choices, f"{path.name}: {' '.join(words)}"
            parser = commands.choices[rest[0]]
            for option in rest[1:]:
                if option == "--":  # what follows goes to Beam or the model server
                    break
                option = option.strip("[]").split("=")[0]
                if option.startswith("-") and option not in ("-", "..."):
                    action = parser._option_string_actions.get(option)
                    # A renamed flag is still known, hidden from --help, to refuse it by name.
                    assert action is not None and action.help != argparse.SUPPRESS, \
                        f"{path.name}: `{parser.prog}` has no {option}: {' '.join(words)}"
            checked += 1
    if path.name == "README.md":
        assert checked >= 20


def test_documented_make_targets_exist():
    makefile = (PROJECT / "Makefile").read_text()
    targets = set(re.findall(r"^([\w%-]+):", makefile, re.MULTILINE))
    for path in MARKDOWN:
        for words in _shell_commands(path):
            if words[0] == "make" and len(words) > 1 and "=" not in words[1]:
                target = words[1]
                assert target in targets or (target.startswith("pipeline-") and "pipeline-%" in targets), \
                    f"{path.name}: no make target {target!r}"


def test_readme_first_screen_goes_from_clone_to_a_prediction():
    first_screen = "\n".join((PROJECT / "README.md").read_text().splitlines()[:25])
    for step in ("make pipeline", "make serve", "python -m serving predict", "make test"):
        assert step in first_screen


def test_readme_exit_codes_table_is_both_command_sets():
    from pipelines import outcomes
    from serving.lifecycle.errors import EXIT_CODES

    text = (PROJECT / "README.md").read_text()
    section = text[text.index("\n## Exit codes\n"):]
    section = section[:section.index("\n## ", 1)]
    rows = {}
    for line in section.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) == 3 and cells[0].isdigit():
            rows[int(cells[0])] = cells[1:]
    pipelines = {o.exit_code for group in (outcomes.ALL, *outcomes.BY_COMMAND.values())
                 for o in group}
    serving = {code for code, _ in EXIT_CODES}
    assert set(rows) == pipelines | serving
    for code, (pipelines_cell, serving_cell) in rows.items():
        assert bool(pipelines_cell) == (code in pipelines), f"exit code {code}, pipelines"
        assert bool(serving_cell) == (code in serving), f"exit code {code}, serving"
