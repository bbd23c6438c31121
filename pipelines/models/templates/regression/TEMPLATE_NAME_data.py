"""The data of model TEMPLATE_NAME: CSV rows of features and a label.

The sample source is a generator: y = 3·x1 - 2·x2 + 1, plus a little noise. Replace
`generate_rows` with your own source (or pass `--data-dir` with train/ and eval/ CSV files
whose header is FEATURES + LABEL); keep the schema (schema.pbtxt) in step with the columns.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import List, Tuple

import numpy as np

FEATURES = ("x1", "x2")
LABEL = "y"
COLUMNS = FEATURES + (LABEL,)
WEIGHTS, BIAS, NOISE = (3.0, -2.0), 1.0, 0.05
X_RANGE = (-1.0, 1.0)
SHIFTED_X_RANGE = (3.0, 5.0)  # a span of kind "label-shift": x1 (and y) far from the usual


class DataError(ValueError):
    """Input data that cannot be used; the message names the file and the problem."""


def generate_rows(num_rows: int, seed: int, x_range=X_RANGE) -> np.ndarray:
    """[num_rows, x1, x2, y]."""
    rng = np.random.default_rng(seed)
    xs = rng.uniform(*X_RANGE, size=(num_rows, len(FEATURES)))
    xs[:, 0] = rng.uniform(*x_range, size=num_rows)
    ys = xs @ np.asarray(WEIGHTS) + BIAS + rng.normal(0, NOISE, size=num_rows)
    return np.column_stack([xs, ys])


def write_csv(directory: Path, rows: np.ndarray, corrupted: bool = False) -> Path:
    """`directory/data.csv` (ExampleGen reads directories); corrupted: every 20th label empty."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "data.csv"
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(COLUMNS)
        for i, row in enumerate(rows):
            values = [f"{v:.6f}" for v in row]
            if corrupted and i % 20 == 0:
                values[-1] = ""
            writer.writerow(values)
    return path


def write_split(directory: Path, split: str, num_rows: int, seed: int,
                kind: str = "clean") -> Path:
    """One split: clean, corrupted (the schema gate stops it) or label-shift (the drift
    gate stops it)."""
    x_range = SHIFTED_X_RANGE if kind == "label-shift" else X_RANGE
    rows = generate_rows(num_rows, seed * 2 + (split == "eval"), x_range)
    return write_csv(directory, rows, corrupted=kind == "corrupted")


def check_dir(data_dir: Path) -> None:
    """A --data-dir: train/ and eval/, each with CSV files of COLUMNS and finite numbers."""
    for split in ("train", "eval"):
        files = sorted((Path(data_dir) / split).glob("*.csv"))
        if not files:
            raise DataError(f"{data_dir}/{split}: no *.csv files (expected train/ and eval/ "
                            f"directories of CSV files with the header {','.join(COLUMNS)})")
        for path in files:
            read_csv(path)


def read_csv(path: Path) -> List[Tuple[float, ...]]:
    """The rows of one CSV file, checked: the header is COLUMNS, every value a finite number."""
    with Path(path).open(newline="") as f:
        reader = csv.reader(f)
        header = next(reader, None)
        if header is None or tuple(h.strip() for h in header) != COLUMNS:
            raise DataError(f"{path}: line 1: expected the header {','.join(COLUMNS)}, "
                            f"got {header}")
        rows = []
        for line, row in enumerate(reader, start=2):
            try:
                values = tuple(float(v) for v in row)
            except ValueError:
                raise DataError(f"{path}: line {line}: {row} holds a value that is not a "
                                f"number") from None
            if len(values) != len(COLUMNS) or not all(map(math.isfinite, values)):
                raise DataError(f"{path}: line {line}: expected {len(COLUMNS)} finite "
                                f"numbers, got {row}")
            rows.append(values)
    return rows


def read_examples(directory: Path, limit: int) -> Tuple[np.ndarray, np.ndarray]:
    """(features [n, len(FEATURES)], labels [n]) of the first `limit` rows under `directory`."""
    rows = [row for path in sorted(Path(directory).glob("*.csv")) for row in read_csv(path)]
    table = np.asarray(rows[:limit], dtype=float).reshape(-1, len(COLUMNS))
    return table[:, :-1], table[:, -1]
