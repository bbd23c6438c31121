"""The training window of a retraining run: the newest K spans, resolved from ML Metadata.

A resolver strategy over the Examples artifacts ExampleGen recorded in ML Metadata (TFX
hands a strategy only LIVE artifacts: a span the data gates rejected is marked ABANDONED
and drops out). It differs from TFX's `SpanRangeStrategy` with a `rolling_range` in two
ways that matter for unattended retraining:
- the window is the newest K spans that exist, not the span numbers newest-K+1..newest,
  so a rejected span does not shrink the window;
- a span ingested more than once (its files were fixed, and ExampleGen ingested it
  again) counts once, with its newest copy.
"""

from __future__ import annotations

from typing import Dict, List, Optional

from tfx import types
from tfx.dsl.components.common import resolver

SPAN_PROPERTY = "span"


def span_of(artifact: types.Artifact) -> int:
    """The span ExampleGen recorded (an int custom property; a string in old stores)."""
    text = artifact.get_string_custom_property(SPAN_PROPERTY)
    return int(text) if text else artifact.get_int_custom_property(SPAN_PROPERTY)


def newest_spans(artifacts: List[types.Artifact], num_spans: int) -> List[types.Artifact]:
    """The newest copy of each of the `num_spans` highest spans, newest span first."""
    newest: Dict[int, types.Artifact] = {}
    for artifact in artifacts:
        span = span_of(artifact)
        if span not in newest or artifact.id > newest[span].id:
            newest[span] = artifact
    return [newest[span] for span in sorted(newest, reverse=True)[:num_spans]]


class SpanWindowStrategy(resolver.ResolverStrategy):
    """`Resolver(strategy_class=SpanWindowStrategy, config={"num_spans": K},
    examples=Channel(type=Examples, producer_component_id=example_gen.id))`."""

    def __init__(self, num_spans: int):
        if num_spans < 1:
            raise ValueError(f"the window needs at least one span, got {num_spans}")
        self._num_spans = num_spans

    def resolve_artifacts(self, store, input_dict: Dict[str, List[types.Artifact]]
                          ) -> Optional[Dict[str, List[types.Artifact]]]:
        resolved = {key: newest_spans(artifacts, self._num_spans)
                    for key, artifacts in input_dict.items()}
        return resolved if all(resolved.values()) else None
