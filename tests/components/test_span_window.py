"""The training window: the newest K spans among the Examples artifacts TFX hands over."""

from __future__ import annotations

from tfx.types import standard_artifacts

from components.span_window import SpanWindowStrategy, newest_spans, span_of


def _examples(artifact_id: int, span: int, as_string: bool = False):
    artifact = standard_artifacts.Examples()
    artifact.id = artifact_id
    if as_string:
        artifact.set_string_custom_property("span", str(span))
    else:
        artifact.set_int_custom_property("span", span)
    return artifact


def test_the_window_is_the_newest_spans_that_exist_not_a_range_of_numbers():
    # span 3 and 4 were rejected (not LIVE, so TFX does not hand them over)
    artifacts = [_examples(1, 1), _examples(2, 2), _examples(5, 5), _examples(6, 6)]
    assert [span_of(a) for a in newest_spans(artifacts, 3)] == [6, 5, 2]
    assert [span_of(a) for a in newest_spans(artifacts, 10)] == [6, 5, 2, 1]


def test_a_span_ingested_twice_counts_once_with_its_newest_copy():
    old, fixed = _examples(3, 3), _examples(9, 3)
    window = newest_spans([old, _examples(2, 2), fixed], 2)
    assert [a.id for a in window] == [9, 2]
    assert span_of(_examples(4, 7, as_string=True)) == 7


def test_the_strategy_resolves_nothing_when_no_span_exists():
    strategy = SpanWindowStrategy(num_spans=2)
    assert strategy.resolve_artifacts(None, {"examples": []}) is None
    resolved = strategy.resolve_artifacts(None, {"examples": [_examples(1, 1)]})
    assert [a.id for a in resolved["examples"]] == [1]
