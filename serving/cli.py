"""The toolkit's command-line vocabulary, shared by `python -m pipelines` and `python -m serving`.

One spelling for one thing in both command sets: --model NAME, --repository DIR,
--state-dir DIR, --timeout SECONDS, --pipeline-root DIR, --cache-dir DIR, --json. Parsers
never accept abbreviations (`--profil` is an error, not `--profile`). Path and number
options are checked here, by argparse `type=` functions, so a bad command line exits 2
at once: before TensorFlow or TFX is imported and before anything is written. A renamed
flag is refused with the name that replaced it.

Imports only the standard library (and serving.defaults): both command sets import it
before they decide whether to load anything heavy.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import textwrap
from pathlib import Path
from typing import Iterable, List, Sequence, Tuple

from serving import defaults

USAGE_EXIT_CODE = 2  # argparse's, and both command sets'


class HelpFormatter(argparse.HelpFormatter):
    """Descriptions and epilogs wrapped to the terminal by paragraph (blank-line separated),
    tables (a title line, then indented rows: the exit codes) row by row with a hanging
    indent; every option's help ends with its default, unless the help text says it."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        paragraphs = []
        for paragraph in text.strip("\n").split("\n\n"):
            lines = paragraph.splitlines()
            if len(lines) > 1 and all(line.startswith("  ") for line in lines[1:]):
                paragraphs.append("\n".join(
                    [indent + lines[0]] + [self._fill_row(line, width, indent)
                                           for line in lines[1:]]))
            else:
                paragraphs.append(textwrap.fill(" ".join(line.strip() for line in lines), width,
                                                initial_indent=indent, subsequent_indent=indent,
                                                break_on_hyphens=False))
        return "\n\n".join(paragraphs)

    def _split_lines(self, text: str, width: int) -> List[str]:
        # Names such as tfx-serving-toolkit/model-server stay whole.
        return textwrap.wrap(" ".join(text.split()), width, break_on_hyphens=False)

    @staticmethod
    def _fill_row(line: str, width: int, indent: str) -> str:
        """`  KEY   text ...` wrapped with the text's continuation under the text."""
        match = re.match(r"(\s*\S+\s+)(.*)", line)
        if not match:
            return indent + line
        head, body = match.groups()
        return textwrap.fill(body, width, initial_indent=indent + head,
                             subsequent_indent=indent + " " * len(head), break_on_hyphens=False)

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if action.required and action.option_strings and "required" not in text:
            return f"{text} (required)"
        if "default" in text or action.default is argparse.SUPPRESS or not action.option_strings:
            return text
        if action.nargs == 0:  # a flag: --json, --no-cache, -v
            return f"{text} (default: off)"
        if action.default is None or action.default == []:
            return text  # such options say what happens when they are not given
        return f"{text} (default: %(default)s)"


class Parser(argparse.ArgumentParser):
    """An ArgumentParser that never takes an abbreviation for an option, and whose
    sub-parsers (add_subparsers -> add_parser) are Parsers too."""

    def __init__(self, *args, **kwargs):
        kwargs["allow_abbrev"] = False
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)

    def add_subparsers(self, **kwargs):
        kwargs.setdefault("parser_class", Parser)
        return super().add_subparsers(**kwargs)


def subparser(parser: argparse.ArgumentParser, command: str) -> argparse.ArgumentParser:
    """The parser of `command` under `parser` (for an error worded as that command's)."""
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return action.choices[command]


def options_group() -> Parser:
    """A parent parser (add_help=False) for options several commands share."""
    return Parser(add_help=False)


# ---- renamed flags ----------------------------------------------------------------------

class _Renamed(argparse.Action):
    def __init__(self, option_strings, dest, new: str = "", **kwargs):
        kwargs.update(nargs="?", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
        super().__init__(option_strings, argparse.SUPPRESS, **kwargs)
        self.new = new

    def __call__(self, parser, namespace, values, option_string=None):
        parser.error(f"{option_string} is now {self.new}")


def refuse_renamed(parser: argparse.ArgumentParser, old: str, new: str) -> None:
    """`old` (a flag this command set used to take) exits 2 with
    "PROG: error: OLD is now NEW". Hidden from --help."""
    parser.add_argument(old, action=_Renamed, new=new)


# ---- the shared options -------------------------------------------------------------------

def env_help(text: str, default: defaults.Default) -> str:
    """Help for an option whose default comes from the environment: the effective default
    (as it is now) and the variable that sets it."""
    return f"{text} (default: %(default)s; env {default.variable})"


def add_repository(parser: argparse.ArgumentParser, text: str = "the model repository; "
                   "versions are REPOSITORY/<model>/<version>") -> None:
    parser.add_argument("--repository", type=dir_path, metavar="DIR",
                        default=str(defaults.repository()),
                        help=env_help(text, defaults.REPOSITORY))


def add_pipeline_root(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--pipeline-root", type=dir_path, metavar="DIR",
                        default=str(defaults.pipeline_root()),
                        help=env_help("pipeline artifacts and ML Metadata (SQLite), one "
                                      "directory per pipeline", defaults.PIPELINE_ROOT))


def add_cache_dir(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--cache-dir", type=dir_path, metavar="DIR",
                        default=str(defaults.cache_dir()),
                        help=env_help("downloaded and converted data sets, reused across "
                                      "runs", defaults.CACHE_DIR))


def add_state_dir(parser: argparse.ArgumentParser, text: str) -> None:
    parser.add_argument("--state-dir", type=dir_path, metavar="DIR",
                        default=str(defaults.state_dir()),
                        help=env_help(text, defaults.STATE_DIR))


def add_timeout(parser: argparse.ArgumentParser, default: float, text: str) -> None:
    parser.add_argument("--timeout", type=seconds, metavar="SECONDS", default=default,
                        help=text)


def add_json(parser: argparse.ArgumentParser, text: str = "machine-readable output (JSON) "
             "on stdout") -> None:
    parser.add_argument("--json", action="store_true", help=text)


def add_model(parser: argparse.ArgumentParser, *, many: bool, required: bool,
              text: str = "") -> None:
    """--model NAME. many: repeatable, and comma-separated lists are split
    (`--model a,b --model c` -> [a, b, c])."""
    if many:
        parser.add_argument("--model", dest="model", action="extend", type=model_names,
                            metavar="NAME", required=required, default=None,
                            help=text or "a model; repeat it or separate names with commas "
                                         "for several")
    else:
        parser.add_argument("--model", dest="model", type=model_name, metavar="NAME",
                            required=required, default=None, help=text or "the model")


# ---- argparse `type=` checks --------------------------------------------------------------

def _error(message: str) -> argparse.ArgumentTypeError:
    return argparse.ArgumentTypeError(message)


def model_name(text: str) -> str:
    name = text.strip()
    if not name or "," in name or "/" in name or name.startswith("."):
        raise _error(f"expected a model name, got {text!r}")
    return name


def model_names(text: str) -> List[str]:
    names = [part.strip() for part in text.split(",")]
    if not all(names):
        raise _error(f"expected NAME or NAME,NAME,..., got {text!r}")
    return [model_name(name) for name in names]


def existing_dir(text: str) -> Path:
    """A directory that exists."""
    path = Path(text)
    if not path.exists():
        raise _error(f"{text} does not exist")
    if not path.is_dir():
        raise _error(f"{text} is not a directory")
    return path


def dir_path(text: str) -> Path:
    """A directory, or a path where none is yet (the command makes it): not a file."""
    if not text:
        raise _error("expected a directory, got an empty path")
    path = Path(text)
    if path.exists() and not path.is_dir():
        raise _error(f"{text} is not a directory")
    return path


def existing_file(text: str) -> Path:
    path = Path(text)
    if not path.exists():
        raise _error(f"{text} does not exist")
    if not path.is_file():
        raise _error(f"{text} is not a file")
    return path


def output_file(text: str) -> Path:
    """A file to write: its directory exists, and it is not a directory itself."""
    path = Path(text)
    if path.is_dir():
        raise _error(f"{text} is a directory; give a file name")
    parent = path.absolute().parent
    if not parent.is_dir():
        raise _error(f"{parent} does not exist" if not parent.exists()
                     else f"{parent} is not a directory")
    return path


def _integer(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise _error(f"expected a whole number, got {text!r}") from None


def positive_int(text: str) -> int:
    value = _integer(text)
    if value < 1:
        raise _error(f"must be at least 1, got {value}")
    return value


def non_negative_int(text: str) -> int:
    value = _integer(text)
    if value < 0:
        raise _error(f"must be 0 or more, got {value}")
    return value


def seconds(text: str) -> float:
    """A duration in seconds: 0 or more, finite."""
    try:
        value = float(text)
    except ValueError:
        raise _error(f"expected a number of seconds, got {text!r}") from None
    if not math.isfinite(value) or value < 0:
        raise _error(f"expected 0 or more seconds, got {text!r}")
    return value


def port(text: str) -> int:
    value = _integer(text)
    if not 0 <= value <= 65535:
        raise _error(f"a port is 0 (ephemeral) to 65535, got {value}")
    return value


def json_list(text: str) -> list:
    try:
        value = json.loads(text)
    except ValueError as e:
        raise _error(f"not JSON: {e}") from None
    if not isinstance(value, list):
        raise _error(f"expected a JSON list, got {type(value).__name__}")
    return value


def exit_codes_help(rows: Iterable[Tuple[int, str]]) -> str:
    """The `exit codes:` block of --help from (code, meaning) rows."""
    lines = ["exit codes:"]
    for code, meaning in rows:
        lines.append(f"  {code:<3} {meaning}")
    return "\n".join(lines)


def environment_help(variables: Sequence[defaults.Default] = defaults.ALL) -> str:
    """The `environment:` block of a command set's --help: each variable and its default."""
    lines = ["environment (a flag overrides its variable; relative paths are from the current "
             "directory):"]
    for d in variables:
        lines.append(f"  {d.variable:<22} {d.what} (default: {defaults.project_root() / d.relative})")
    return "\n".join(lines)
