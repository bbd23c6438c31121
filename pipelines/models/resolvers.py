"""Resolver nodes the pipelines share: what they read back from ML Metadata."""

from __future__ import annotations

from tfx import v1 as tfx


def latest_blessed_model() -> tfx.dsl.Resolver:
    """The latest model the Evaluator blessed (LIVE: a model rolled back after its push is
    ABANDONED and skipped): the no-regression gate's baseline, and the warm start."""
    return tfx.dsl.Resolver(
        strategy_class=tfx.dsl.experimental.LatestBlessedModelStrategy,
        model=tfx.dsl.Channel(type=tfx.types.standard_artifacts.Model),
        model_blessing=tfx.dsl.Channel(type=tfx.types.standard_artifacts.ModelBlessing),
    ).with_id("latest_blessed_model_resolver")
