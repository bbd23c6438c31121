"""The command-line reference, docs/cli.md, generated from the parsers themselves.

`make docs` (or `python docs/cli_reference.py`) writes docs/cli.md: every command and
sub-command of `python -m pipelines` and `python -m serving`, each with its `--help` text.
tests/test_cli_reference.py checks that docs/cli.md equals render(), so the reference
cannot drift from --help.

The text does not depend on the machine: help is formatted at a fixed width, with the
toolkit's environment variables unset, from the project root, and the project's path
written as `<project>`.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import os
import re
import sys
from pathlib import Path
from typing import Iterator, List, Optional, Sequence, Tuple

PROJECT = Path(__file__).resolve().parent.parent
OUTPUT = PROJECT / "docs" / "cli.md"
WIDTH = 100
# (how it is invoked, the module whose build_parser() builds its parser)
COMMAND_SETS = (("python -m pipelines", "pipelines.__main__"),
                ("python -m serving", "serving.__main__"))
# Variables that change the defaults --help shows; the reference shows the defaults without them.
ENVIRONMENT = ("TOOLKIT_REPOSITORY", "TOOLKIT_PIPELINE_ROOT", "TOOLKIT_STATE_DIR",
               "TOOLKIT_CACHE_DIR")
HEADER = """# Command-line reference

Generated from the parsers by `make docs` (`python docs/cli_reference.py`); do not edit.
`tests/test_cli_reference.py` fails when this file differs from the commands' `--help`.
Defaults are shown as they are with none of the `TOOLKIT_*` environment variables set,
run from the project's root (`<project>`).
"""


def build_parser(module_name: str) -> argparse.ArgumentParser:
    """The command set's parser: its public build_parser(), else the older private _parser()."""
    module = importlib.import_module(module_name)
    build = getattr(module, "build_parser", None) or getattr(module, "_parser")
    return build()


def walk(parser: argparse.ArgumentParser, summary: str = ""
         ) -> Iterator[Tuple[argparse.ArgumentParser, str]]:
    """The parser, then every sub-command's parser (depth first, in the order they were
    added), each with its one-line help."""
    yield parser, summary
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            summaries = {a.dest: a.help or "" for a in action._choices_actions}
            seen = set()
            for name, sub in action.choices.items():
                if id(sub) in seen:  # an alias of a command already listed
                    continue
                seen.add(id(sub))
                yield from walk(sub, summaries.get(name, ""))


def slug(heading: str) -> str:
    """GitHub's anchor for a heading."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


@contextlib.contextmanager
def _fixed_environment() -> Iterator[None]:
    """A fixed terminal width, no TOOLKIT_* variables, the project root as the directory,
    and the project root itself named `<project>` before any help text is wrapped (a longer
    checkout path would wrap the lines differently)."""
    saved = {name: os.environ.get(name) for name in ("COLUMNS", "LINES", *ENVIRONMENT)}
    cwd = os.getcwd()
    defaults = _defaults_module()
    project_root = getattr(defaults, "project_root", None)
    try:
        os.environ["COLUMNS"] = str(WIDTH)  # argparse's HelpFormatter reads it
        os.environ["LINES"] = "50"
        for name in ENVIRONMENT:
            os.environ.pop(name, None)
        os.chdir(PROJECT)
        if project_root is not None:
            defaults.project_root = lambda: Path("<project>")
        yield
    finally:
        if project_root is not None:
            defaults.project_root = project_root
        os.chdir(cwd)
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _defaults_module():
    """serving.defaults (where the default paths come from), when there is one."""
    try:
        return importlib.import_module("serving.defaults")
    except ImportError:
        return None


def _machine_independent(text: str) -> str:
    text = text.replace(str(PROJECT), "<project>")
    return "\n".join(line.rstrip() for line in text.splitlines())


def render() -> str:
    """docs/cli.md's text: a table of contents, then each command's --help under its heading."""
    contents: List[str] = []
    sections: List[str] = []
    with _fixed_environment():
        for _, module_name in COMMAND_SETS:
            for parser, summary in walk(build_parser(module_name)):
                heading = parser.prog
                depth = heading.count(" ") - 2  # `python -m X` is 0, `python -m X cmd` 1
                entry = f"[`{heading}`](#{slug(heading)})"
                contents.append("  " * depth + f"- {entry}" + (f": {summary}" if summary else ""))
                help_text = _machine_independent(parser.format_help())
                sections.append(f"{'#' * (2 + min(depth, 1))} {heading}\n\n```text\n"
                                f"{help_text}\n```\n")
    return "\n".join([HEADER, "## Contents\n", *contents, "", *sections])


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python docs/cli_reference.py",
        description="Write the command-line reference (every command's --help) to a Markdown file.")
    parser.add_argument("--output", type=Path, default=OUTPUT,
                        help="where to write it (default: docs/cli.md)")
    parser.add_argument("--check", action="store_true",
                        help="write nothing; exit 1 when the file differs from the parsers")
    args = parser.parse_args(argv)
    text = render()
    if args.check:
        current = args.output.read_text() if args.output.exists() else None
        if current != text:
            print(f"{args.output} is out of date: run `make docs`", file=sys.stderr)
            return 1
        print(f"{args.output} is up to date")
        return 0
    args.output.write_text(text)
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    if str(PROJECT) not in sys.path:  # run as a script: docs/ is sys.path[0], not the project
        sys.path.insert(0, str(PROJECT))
    sys.exit(main())
