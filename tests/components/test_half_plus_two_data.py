"""The half_plus_two data source and the checks that name the file and the problem."""

from __future__ import annotations

import csv

import pytest

from components.half_plus_two_data import DataError, validate_csv_dir, write_examples


def test_written_examples_follow_half_plus_two_and_validate(tmp_path):
    path = write_examples(tmp_path, num_examples=50, seed=1)
    rows = list(csv.DictReader(path.open()))
    assert len(rows) == 50
    for row in rows:
        assert float(row["y"]) == pytest.approx(0.5 * float(row["x"]) + 2, abs=1e-6)
    assert validate_csv_dir(tmp_path) == [path]


@pytest.mark.parametrize("content, problem", [
    ("", "file is empty"),
    ("x,y\n", "no data rows"),
    ("x,z\n1,2.5\n", "wrong columns"),
    ("x,y\n1,2.5\nabc,3\n", "line 3: column 'x': 'abc' is not a number"),
    ("x,y\n1,2.5\n2\n", "line 3: expected 2 values"),
    ("x,y\n1,nan\n", "not finite"),
])
def test_malformed_csv_names_the_file_and_the_problem(tmp_path, content, problem):
    path = tmp_path / "bad.csv"
    path.write_text(content)
    with pytest.raises(DataError) as error:
        validate_csv_dir(tmp_path)
    assert str(path) in str(error.value)
    assert problem in str(error.value)


def test_missing_directory_and_no_csv_files(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        validate_csv_dir(tmp_path / "missing")
    with pytest.raises(DataError, match=r"no \*\.csv files"):
        validate_csv_dir(tmp_path)
