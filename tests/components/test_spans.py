"""The span layout: what ExampleGen's {SPAN} resolution picks, and spans written whole."""

from __future__ import annotations

import pytest

from components import spans


def _span(root, number, splits=spans.SPLITS, payload=b"rows"):
    for split in splits:
        (root / f"span-{number}" / split).mkdir(parents=True, exist_ok=True)
        (root / f"span-{number}" / split / "data.csv").write_bytes(payload)


def test_the_newest_span_is_the_highest_number_every_split_has(tmp_path):
    _span(tmp_path, 1)
    _span(tmp_path, 2)
    _span(tmp_path, 10)
    newest = spans.newest_span(tmp_path)
    assert newest.span == 10
    assert spans.existing_spans(tmp_path) == [1, 2, 10]
    (tmp_path / "span-10" / "train" / "data.csv").write_bytes(b"fixed rows")
    assert spans.newest_span(tmp_path).fingerprint != newest.fingerprint


def test_a_span_missing_a_split_is_a_clear_error(tmp_path):
    _span(tmp_path, 1, splits=("train",))
    with pytest.raises(spans.SpanError, match="no span with both train/ and eval/"):
        spans.newest_span(tmp_path)
    with pytest.raises(spans.SpanError, match="does not exist"):
        spans.newest_span(tmp_path / "missing")


def test_a_span_is_written_whole_or_not_at_all(tmp_path):
    def write(split, directory):
        (directory / "data.csv").write_text(split)
        if split == "eval":
            raise OSError("disk full")

    with pytest.raises(OSError):
        spans.write_span(tmp_path, 1, write)
    assert list(tmp_path.iterdir()) == []  # no half span, no staging left behind
    spans.write_span(tmp_path, 1, lambda split, d: (d / "data.csv").write_text(split))
    assert (tmp_path / "span-1" / "eval" / "data.csv").read_text() == "eval"
    with pytest.raises(spans.SpanError, match="already exists"):
        spans.write_span(tmp_path, 1, lambda split, d: None)
