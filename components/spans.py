"""New data as spans: `DIR/span-<N>/{train,eval}/`, the layout ExampleGen's `{SPAN}` pattern reads.

A retraining run ingests the newest span with ExampleGen (TFX picks the highest `{SPAN}`
that every split has) and trains on a rolling window of spans resolved from ML Metadata.
A span must appear whole or not at all, or ExampleGen may ingest half of it: spans written
here are built under a hidden name beside the others and renamed into place, and spans
delivered by other tools should arrive the same way (copy to `.incoming-...`, then `mv`).
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Callable, List, NamedTuple

SPLITS = ("train", "eval")
SPAN_DIR_PREFIX = "span-"
_SPAN_DIR = re.compile(r"^span-(\d+)$")


class SpanError(ValueError):
    """A data directory that holds no usable span; the message says what it holds instead."""


class NewestSpan(NamedTuple):
    """The span ExampleGen would ingest now, and TFX's fingerprint of its files."""

    span: int
    fingerprint: str


def split_pattern(split: str) -> str:
    """The ExampleGen input pattern of one split, relative to the data directory."""
    return f"{SPAN_DIR_PREFIX}{{SPAN}}/{split}/*"


def input_config():
    """ExampleGen's input config: both splits of the newest span."""
    from tfx import v1 as tfx

    return tfx.proto.Input(splits=[tfx.proto.Input.Split(name=split, pattern=split_pattern(split))
                                   for split in SPLITS])


def newest_span(data_dir: Path) -> NewestSpan:
    """What ExampleGen will ingest, decided by TFX's own span resolution (not by hand)."""
    from tfx.components.example_gen import utils

    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise SpanError(f"{data_dir}: data directory does not exist")
    try:
        fingerprint, span, _ = utils.calculate_splits_fingerprint_span_and_version(
            str(data_dir.absolute()), input_config().splits)
    except ValueError as e:
        found = ", ".join(p.name for p in sorted(data_dir.iterdir())[:10]) or "nothing"
        raise SpanError(
            f"{data_dir}: no span with both {' and '.join(f'{s}/' for s in SPLITS)} files "
            f"({e}); expected {SPAN_DIR_PREFIX}1/train/..., {SPAN_DIR_PREFIX}1/eval/...; "
            f"found: {found}") from None
    return NewestSpan(span, fingerprint)


def existing_spans(data_dir: Path) -> List[int]:
    """Span numbers present under `data_dir` (for numbering new ones), ascending."""
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        return []
    return sorted(int(m.group(1)) for p in data_dir.iterdir()
                  if p.is_dir() and (m := _SPAN_DIR.match(p.name)))


# What `make-spans --kind` writes: clean data; "corrupted", which the schema gate stops;
# "label-shift", a drifted distribution the drift gate stops (each model says how).
SPAN_KINDS = ("clean", "corrupted", "label-shift")


def check_span_kind(kind: str) -> None:
    if kind not in SPAN_KINDS:
        raise ValueError(f"kind must be one of {SPAN_KINDS}, got {kind!r}")


def span_dir(data_dir: Path, span: int) -> Path:
    return Path(data_dir) / f"{SPAN_DIR_PREFIX}{span}"


def write_span(data_dir: Path, span: int, write_split: Callable[[str, Path], None]) -> Path:
    """Create `data_dir/span-<span>` atomically: `write_split(split, directory)` fills each
    split's directory in a hidden staging copy, which is then renamed into place. A span
    that exists is never replaced (ExampleGen may have fingerprinted it)."""
    data_dir = Path(data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    target = span_dir(data_dir, span)
    if target.exists():
        raise SpanError(f"{target} already exists")
    staging = Path(tempfile.mkdtemp(prefix=f".incoming-{target.name}-", dir=data_dir))
    try:
        os.chmod(staging, 0o755)
        for split in SPLITS:
            (staging / split).mkdir()
            write_split(split, staging / split)
        os.replace(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target
