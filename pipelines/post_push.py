"""After a push: prove the running server serves the new version well, or roll it back.

When `python -m serving up` runs a server for the model, the new version must become
AVAILABLE and answer a smoke batch of the newest span's eval examples, through the
server's own REST API, at least as well as the Evaluator's gate. If it fails to load, or
answers worse, the server is rolled back to the previous version with no restart
(`serving.lifecycle.rollback`: a specific-version policy applied by ReloadConfig and
verified), the version is withdrawn from the repository (`ModelRepository.reject`, so the
server's polling never picks it up again and its number is never reused), and the pin is
lifted again so later versions are served as they are pushed.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Callable, Dict, Optional

from serving import lifecycle
from serving.repository import ModelRepository


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


# (rest_url, version) -> SmokeResult; each model module builds one from its eval data.
SmokeCheck = Callable[[str, int], SmokeResult]

SERVED, ROLLED_BACK, NO_SERVER = "served", "rolled back", "no server"


@dataclasses.dataclass
class Verification:
    status: str                       # SERVED, ROLLED_BACK or NO_SERVER
    version: int
    reason: str = ""                  # why it was rolled back
    serving_version: Optional[int] = None   # what the server serves afterwards
    smoke: Optional[SmokeResult] = None


def verify_push(model: str, version: int, smoke_check: SmokeCheck, repository: ModelRepository,
                state_dir: Path, timeout: float, log=print) -> Verification:
    """Wait for `version`, smoke-test it, and roll back when either fails."""
    state = lifecycle.running_server_for(model, state_dir)
    if state is None:
        return Verification(NO_SERVER, version)
    try:
        lifecycle.wait_for_version(model, version, timeout, state_dir)
    except lifecycle.LifecycleError as e:  # failed to load, timed out, server gone
        reason = f"version {version} did not become AVAILABLE: {e.message}"
        return _roll_back(model, version, reason, repository, state_dir, timeout, log)
    log(f"  serving: version {version} is AVAILABLE; sending the smoke batch")
    try:
        smoke = smoke_check(state.addresses.rest_url, version)
    except Exception as e:  # noqa: BLE001 - a server that cannot answer fails the check
        reason = f"version {version} did not answer the smoke batch: {type(e).__name__}: {e}"
        return _roll_back(model, version, reason, repository, state_dir, timeout, log)
    if not smoke.passed:
        reason = f"version {version} served below the gate: {smoke.describe()}"
        verification = _roll_back(model, version, reason, repository, state_dir, timeout, log)
        verification.smoke = smoke
        return verification
    return Verification(SERVED, version, serving_version=version, smoke=smoke)


def _roll_back(model: str, version: int, reason: str, repository: ModelRepository,
               state_dir: Path, timeout: float, log) -> Verification:
    previous = [v for v in repository.versions(model) if v < version]
    target = previous[-1] if previous else None
    log(f"  serving: {reason}")
    if target is not None:
        log(f"  serving: rolling back to version {target}")
        lifecycle.rollback(model, target, state_dir, timeout)  # pinned, verified
    path = repository.reject(model, version, reason)
    log(f"  serving: version {version} withdrawn to {path}")
    if target is not None:
        lifecycle.rollback(model, None, state_dir, timeout)  # unpinned: latest is `target`
    return Verification(ROLLED_BACK, version, reason=reason, serving_version=target)
