"""One run of a pipeline, from its start to its outcome in `history`: written once for
`python -m pipelines run`, `retrain` (pipelines/operations/retrain.py) and a notebook
experiment's push (pipelines/notebook/experiment.py).

`Recorder(...).run(pipeline, ...)` runs the TFX pipeline with the local runner (its
progress to the console the caller gives) and records a run that did not finish:
- failed: its outcome (DISK_FULL for a full disk, a data gate's own outcome, else ERROR)
  is recorded before PipelineFailed goes on, with `e.outcome` set and `e.not_recorded`
  saying why `history` will not show it (the store is full or locked, or the run failed
  before ML Metadata recorded it). A span a data gate stopped is abandoned in ML Metadata:
  never trained on or compared with again;
- stopped by SIGTERM/SIGINT: recorded as ABANDONED before RunAbandoned goes on (when the
  store cannot take it, the warning goes to the run's log).
A run that finished is recorded by its caller once the outcome is known (not blessed,
unchanged, or what the deployment made of the push): `end` returns "" or the warning to
print when the store cannot take it; the run's exit code stays its outcome's either way.
`failure_outcome` is the outcome of an error that ends a command.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Dict, Mapping, Optional

from pipelines import outcomes
from pipelines.outcomes import Outcome
from pipelines.runs import history, interrupts, local, lock, metadata
from serving import disk


@dataclasses.dataclass
class Recorder:
    """How the runs of one pipeline are recorded in its ML Metadata store."""

    pipeline_name: str
    metadata_path: Path
    # Kept with the outcome: the span ingested and its fingerprint (retraining), a notebook
    # experiment's hyperparameters.
    facts: Dict[str, Any] = dataclasses.field(default_factory=dict)
    # The data gates whose failure is an outcome of its own (component id -> outcome); any
    # other failure is ERROR (DISK_FULL for a full disk).
    gates: Mapping[str, Outcome] = dataclasses.field(default_factory=dict)
    # What a span a gate stopped leaves behind (component id -> output key): abandoned in
    # ML Metadata, so it is never trained on or compared with again.
    span_outputs: Mapping[str, str] = dataclasses.field(default_factory=dict)

    def run(self, pipeline, *, model_name: str, repository, out, log) -> local.RunResult:
        """Run `pipeline` (local.run_pipeline, its progress to `out`); a failed or
        abandoned run is recorded before the exception goes on. `log(line)` prints to
        the run's console."""
        try:
            return local.run_pipeline(pipeline, model_name=model_name, repository=repository,
                                      metadata_path=self.metadata_path, out=out)
        except local.PipelineFailed as e:
            self.failed(e)
            raise
        except interrupts.RunAbandoned as e:  # SIGTERM/SIGINT: nothing was pushed
            note = self.end(outcomes.ABANDONED, reason=type(e).__name__, run_id=e.run_id)
            if note:
                log(note)
            raise

    def failed(self, e: local.PipelineFailed) -> Outcome:
        """Record a failed run (a span a data gate stopped is abandoned); sets and returns
        `e.outcome`. A store that cannot take the record is noted on `e.not_recorded`."""
        if e.disk_full is not None:
            e.outcome = outcomes.DISK_FULL
        else:
            e.outcome = self.gates.get(e.component, outcomes.ERROR)
        try:
            if e.outcome not in (outcomes.ERROR, outcomes.DISK_FULL):
                self._abandon(e.run_id, f"{e.outcome.name}: {e.cause}", self.span_outputs)
            history.record_run(self.metadata_path, e.run_id, e.outcome,
                               str(e.disk_full or e.cause), **self.facts)
        except (history.NotRecorded, metadata.StoreError) as not_recorded:
            e.not_recorded = str(not_recorded)
        if not e.run_id:
            e.not_recorded = (f"the run is not in `history`: it failed before ML Metadata "
                              f"({self.metadata_path}) recorded it")
        return e.outcome

    def end(self, outcome: Outcome, result: Optional[local.RunResult] = None,
            reason: Optional[str] = None, *, run_id: Optional[str] = None,
            strict: bool = False) -> str:
        """Record how a run ended (`result`'s run, else `run_id`), with `result`'s summary;
        the reason is by default why it was not pushed (the gates that failed). Returns ""
        or, when the store cannot take it, the warning to print; `strict`: raises
        history.NotRecorded instead."""
        if reason is None:
            reason = "; ".join(result.validation_failures) if result is not None else ""
        run_id = run_id if run_id is not None or result is None else result.run_id
        if strict:
            history.record_run(self.metadata_path, run_id, outcome, reason, result,
                               **self.facts)
            return ""
        return history.record_run_or_note(self.metadata_path, run_id, outcome, reason, result,
                                          **self.facts)

    def abandon_model(self, result: local.RunResult, reason: str) -> None:
        """The run's model must not be the next baseline or warm start (rejected by the
        canary's check, or failed infra validation)."""
        self._abandon(result.run_id, reason, {local.TRAINER: "model"})

    def _abandon(self, run_id: Optional[str], reason: str, keys: Mapping[str, str]) -> None:
        if not run_id:
            return
        store = metadata.open_store(self.metadata_path, readonly=False)
        run = store.get_context_by_type_and_name(metadata.RUN_CONTEXT_TYPE, run_id)
        if run is None:
            return
        for node_id, key in keys.items():
            node = metadata.node_run(store, run, self.pipeline_name, node_id)
            if node is not None:
                metadata.abandon(store, node.outputs.get(key, []), reason)


def failure_outcome(e: BaseException) -> Outcome:
    """The outcome of an error that ended a command: LOCKED (another run holds the model),
    DISK_FULL (a full disk, whatever error type said it), else ERROR."""
    if isinstance(e, lock.Locked):
        return outcomes.LOCKED
    return outcomes.DISK_FULL if disk.find_full_disk(e) is not None else outcomes.ERROR
