"""After a push: the one way every run (`run`, `retrain`, `schedule`, the notebook) deploys
the version the Pusher published as a candidate (`<repository>/<model>/.candidates/N`).

1. Held (`python -m serving hold`): the version stays a candidate, is not loaded, and the
   run says who held the model, when and why, and how to promote it. No wait.
2. `--no-promote`: the version stays a candidate (registered, not deployed).
3. No server up for the model: the version is promoted at once (stable = N, as a push
   always did) and the rollout record says it was not verified through a server.
4. A server is up: N is loaded as the canary (a second model entry, `<model>-canary`,
   label `canary`; stable keeps serving every request that names no version), the smoke
   batch runs against `labels/canary`, then:
   - passed: N is promoted (loaded into the model's entry, then labelled stable; the old
     stable becomes previous);
   - failed, or N did not load: the canary is unloaded and N withdrawn as `.rejected-N`
     (its lineage says why). Stable never changed, so there is nothing to roll back.

An operator's hold placed while the canary is checked is honoured: the promote refuses,
the canary is unloaded and the version stays a candidate. A canary left by a run that died
(SIGKILL mid-check or mid-promotion) is dropped first: stable stays what the record says,
and that version waits as a candidate.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Optional

from pipelines.models.smoke import SmokeCheck, SmokeResult
from serving import lifecycle, rollouts
from serving.lifecycle import model_config, rollout
from serving.lifecycle.errors import CanaryBusy, Held
from serving.repository import ModelRepository


PROMOTED, REJECTED, HELD, CANDIDATE, NO_SERVER = \
    "promoted", "rejected", "held", "candidate", "no server"


@dataclasses.dataclass
class Deployment:
    status: str                       # one of the five above
    version: int
    reason: str = ""                  # why rejected, or who holds the model
    serving_version: Optional[int] = None   # the stable version afterwards
    smoke: Optional[SmokeResult] = None
    next_step: str = ""


def sample_smoke_check(rest_url: str, entry: str, label: str) -> SmokeResult:
    """The smoke check of a run with no eval data at hand (`python -m pipelines run`): one
    prediction of zeros shaped like the serving signature must answer."""
    from serving.lifecycle import health, sample

    metadata = sample.get_metadata(rest_url, entry, label=label)
    health.predict(rest_url, entry, [sample.zero_instance(metadata)], label=label)
    return SmokeResult(True, {}, "answers a sample prediction", 1)


def deploy(model: str, version: int, repository: ModelRepository, state_dir: Path,
           timeout: float, smoke_check: SmokeCheck = sample_smoke_check, promote: bool = True,
           log=print) -> Deployment:
    """Deploy candidate `version` of `model` as the module's docstring says."""
    try:  # first, a canary left by a run that died (killed mid-check or mid-promotion)
        dead = rollout.drop_dead_canary(model, repository.root, state_dir, timeout)
    except lifecycle.LifecycleError as e:
        log(f"  serving: could not drop the canary a run that died left: {e.message}")
    else:
        if dead is not None:
            log(f"  serving: dropped version {dead}, the canary of a run that died before "
                f"promoting or rejecting it; it waits as a candidate")
    record = rollouts.load(repository.model_dir(model), model)
    if version == record.stable:  # the Pusher found this model already stable
        return Deployment(PROMOTED, version, serving_version=version)
    if version in repository.versions(model):  # the same model as a published version
        step = _promote_step(model, version, repository)
        why = (f"the model equals version {version}, published before and not stable now "
               f"(stable is {record.stable}): an operator's rollback is not undone by a run")
        log(f"  serving: {why}; {step}")
        return Deployment(CANDIDATE, version, reason=why, serving_version=record.stable,
                          next_step=step)
    if record.held:
        return _held(model, version, repository, log)
    if not promote:
        step = _promote_step(model, version, repository)
        log(f"  serving: version {version} published as a candidate (--no-promote); {step}")
        return Deployment(CANDIDATE, version, serving_version=record.stable, next_step=step)
    if lifecycle.running_server_for(model, state_dir) is None:
        try:
            change = rollout.promote(model, version, repository.root, None, timeout,
                                     unattended=True)
        except Held:
            return _held(model, version, repository, log)
        log(f"  serving: no server is up for {model}; version {version} is stable, not "
            f"verified through a server (`make serve` serves it)")
        return Deployment(NO_SERVER, version, serving_version=change.record.stable)
    try:
        change = rollout.load_canary(model, version, repository.root, state_dir, timeout)
    except Held:
        return _held(model, version, repository, log)
    except CanaryBusy as e:  # another run's canary: this version waits as a candidate
        step = _promote_step(model, version, repository)
        log(f"  serving: {e.message}; version {version} stays a candidate; {step}")
        return Deployment(CANDIDATE, version, reason=e.message, serving_version=record.stable,
                          next_step=step)
    except lifecycle.LifecycleError as e:  # failed to load, timed out, server gone
        reason = f"version {version} did not load as the canary: {e.message}"
        return _reject(model, version, reason, repository, state_dir, timeout, log)
    log(f"  serving: version {version} is the canary on {change.server} "
        f"({model_config.canary_entry(model)}, label canary); sending the smoke batch")
    try:
        smoke = smoke_check(change.server, model_config.canary_entry(model), rollouts.CANARY)
    except Exception as e:  # noqa: BLE001 - a canary that cannot answer fails the check
        reason = f"version {version} did not answer the smoke batch: {type(e).__name__}: {e}"
        return _reject(model, version, reason, repository, state_dir, timeout, log)
    if not smoke.passed:
        reason = f"version {version} served below the gate: {smoke.describe()}"
        deployment = _reject(model, version, reason, repository, state_dir, timeout, log)
        deployment.smoke = smoke
        return deployment
    try:
        change = rollout.promote(model, version, repository.root, state_dir, timeout,
                                 unattended=True)
    except Held:  # held while the canary was checked: it stays a candidate
        rollout.drop_canary(model, repository.root, state_dir, timeout)
        return _held(model, version, repository, log)
    except lifecycle.LifecycleError as e:
        reason = f"version {version} passed the smoke batch but did not become stable: {e.message}"
        return _reject(model, version, reason, repository, state_dir, timeout, log)
    log(f"  serving: version {version} is stable (labels {change.verified})")
    return Deployment(PROMOTED, version, serving_version=version, smoke=smoke)


def _held(model: str, version: int, repository: ModelRepository, log) -> Deployment:
    step = _promote_step(model, version, repository)
    record = rollouts.load(repository.model_dir(model), model)
    why = record.hold.describe() if record.hold else "held"
    log(f"  serving: {model} is {why}; version {version} is published as a candidate, not "
        f"loaded; stable stays {record.stable}")
    return Deployment(HELD, version, reason=why, serving_version=record.stable,
                      next_step=f"{step} (the hold stays); `python -m serving release --model "
                                f"{model}` lets runs promote again")


def _reject(model: str, version: int, reason: str, repository: ModelRepository,
            state_dir: Path, timeout: float, log) -> Deployment:
    log(f"  serving: {reason}")
    path = rollout.withdraw_canary(model, version, reason, repository.root, state_dir, timeout)
    record = rollouts.load(repository.model_dir(model), model)
    log(f"  serving: version {version} withdrawn to {path}; stable stays "
        f"{record.stable if record.stable is not None else 'unset'}")
    return Deployment(REJECTED, version, reason=reason, serving_version=record.stable)


def _promote_step(model: str, version: int, repository: ModelRepository) -> str:
    return (f"`python -m serving promote --model {model} --version {version} --repository "
            f"{repository.root}` serves it")
