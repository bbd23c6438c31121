"""The model's part of the post-push check: what its smoke batch measured through the server.

Each model module builds a SmokeCheck from its eval data (`ModelPipeline.smoke_check`);
pipelines/operations/post_push.py asks it of the canary (`<model>-canary`, label `canary`)
and promotes or rejects the version by its result.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Dict


@dataclasses.dataclass
class SmokeResult:
    """What the smoke batch measured through the server, and whether it met the gate."""

    passed: bool
    metrics: Dict[str, float]
    gate: str
    examples: int

    def describe(self) -> str:
        values = ", ".join(f"{k} {v:.4g}" for k, v in self.metrics.items())
        return f"{values} on {self.examples} eval examples (gate: {self.gate})"


# (rest_url, model entry, label) -> SmokeResult; each model module builds one from its
# eval data. It is asked of `<model>-canary`, label `canary`.
SmokeCheck = Callable[[str, str, str], SmokeResult]
