"""Data source for half_plus_two: CSV rows of (x, y = 0.5·x + 2), and a strict checker.

ExampleGen's own errors on bad CSV are Beam stack traces that name neither the file nor
the line, so user data is checked here first and rejected with both.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import List, Tuple

import numpy as np

from components import spans

FEATURE = "x"
LABEL = "y"
COLUMNS = (FEATURE, LABEL)
SLOPE, INTERCEPT = 0.5, 2.0
X_RANGE = (-10.0, 10.0)


class DataError(ValueError):
    """Input data that cannot be used; the message names the file and the problem."""


def half_plus_two(x):
    return SLOPE * x + INTERCEPT


def write_examples(data_dir: Path, num_examples: int = 2000, seed: int = 0,
                   x_range: Tuple[float, float] = X_RANGE) -> Path:
    """Write `data.csv` under `data_dir` (ExampleGen reads a directory, not a file)."""
    rng = np.random.default_rng(seed)
    xs = rng.uniform(*x_range, size=num_examples)
    return _write_rows(Path(data_dir), [(f"{x:.6f}", f"{half_plus_two(round(x, 6)):.7f}")
                                        for x in xs])


def _write_rows(data_dir: Path, rows: List[Tuple[str, str]]) -> Path:
    data_dir.mkdir(parents=True, exist_ok=True)
    path = data_dir / "data.csv"
    tmp = path.with_suffix(".csv.tmp")
    with tmp.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(COLUMNS)
        writer.writerows(rows)
    tmp.replace(path)
    return path


# Span kinds (components/spans.py): "label-shift" moves x (and so y) out of the usual range,
# a drifted distribution; "corrupted" leaves y empty in 1 row of 50 (a presence anomaly).
SHIFTED_X_RANGE = (20.0, 40.0)


def write_span_split(split_dir: Path, span: int, split: str, num_examples: int,
                     kind: str = "clean") -> Path:
    """One split of half_plus_two span `span`: fresh (x, y) rows, seeded by span and split."""
    spans.check_span_kind(kind)
    seed = span * 2 + (split == "eval")
    path = write_examples(split_dir, num_examples, seed,
                          SHIFTED_X_RANGE if kind == "label-shift" else X_RANGE)
    if kind == "corrupted":
        lines = path.read_text().splitlines()
        for i in range(1, len(lines), 50):
            lines[i] = lines[i].split(",")[0] + ","
        path.write_text("\n".join(lines) + "\n")
    return path


def validate_csv_dir(data_dir: Path) -> List[Path]:
    """Check every CSV under `data_dir`: header exactly x,y, and finite numbers in every row."""
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise DataError(f"{data_dir}: data directory does not exist")
    files = sorted(data_dir.glob("*.csv"))
    if not files:
        raise DataError(f"{data_dir}: no *.csv files found")
    for path in files:
        _validate_csv_file(path)
    return files


def read_rows(data_dir: Path) -> List[Tuple[float, float]]:
    """Every (x, y) row of the CSV files in `data_dir`, after validate_csv_dir's checks."""
    rows = []
    for path in validate_csv_dir(data_dir):
        with path.open(newline="") as f:
            reader = csv.reader(f)
            next(reader)
            rows.extend((float(x), float(y)) for x, y in reader)
    return rows


def _validate_csv_file(path: Path) -> None:
    with path.open(newline="") as f:
        reader = csv.reader(f)
        header = next(reader, None)
        if header is None:
            raise DataError(f"{path}: file is empty (expected a header '{','.join(COLUMNS)}')")
        if tuple(h.strip() for h in header) != COLUMNS:
            raise DataError(
                f"{path}: line 1: wrong columns {header}, expected {list(COLUMNS)}")
        rows = 0
        for rows, row in enumerate(reader, start=1):
            line = rows + 1
            if len(row) != len(COLUMNS):
                raise DataError(
                    f"{path}: line {line}: expected {len(COLUMNS)} values, got {len(row)}: {row}")
            for column, value in zip(COLUMNS, row):
                try:
                    number = float(value)
                except ValueError:
                    raise DataError(
                        f"{path}: line {line}: column {column!r}: {value!r} is not a number") from None
                if not math.isfinite(number):
                    raise DataError(f"{path}: line {line}: column {column!r}: {value!r} is not finite")
        if rows == 0:
            raise DataError(f"{path}: file has a header but no data rows")
