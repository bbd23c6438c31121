"""One unattended retraining run, start to finish: what `python -m pipelines retrain` does.

1. Take the model's run lock (a second run exits at once, naming the first).
2. Find the newest span with TFX's span resolution; if it is no newer than the last run
   that finished with it, do nothing (NOTHING_NEW).
3. Run the retraining pipeline (`pipelines/models/retraining_pipeline.py`): data gates, the span window,
   a warm-started Trainer, the Evaluator's gates, InfraValidator when Docker is there, the
   Pusher with the lineage record.
4. Deploy the pushed candidate (`pipelines/operations/post_push.py`): with a server up, as the
   canary, smoke-checked, then promoted or rejected; held or --no-promote: a candidate.
5. Record the outcome in ML Metadata (pipelines/runs/record.py, as every run does); a span
   the data gates rejected and a model that was rejected (or failed infra validation) are
   marked ABANDONED there, so they are never trained on, compared against or warm-started
   from again.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import List, Optional, Tuple

from components import spans
from pipelines import outcomes
from pipelines.models import registry
from pipelines.models import retraining_pipeline
from pipelines.operations import post_push
from pipelines.runs import history, interrupts, local as local_runner, metadata, provenance
from pipelines.runs.record import Recorder
from pipelines.config import RetrainConfig
from pipelines.outcomes import Outcome
from serving import rollouts
from serving.repository import ModelRepository

GATE_OUTCOMES = {"AnomaliesGate": outcomes.ANOMALIES, "DriftGate": outcomes.DRIFT}
# What a span the data gates stopped leaves behind: abandoned, never trained on again.
SPAN_OUTPUTS = {retraining_pipeline.EXAMPLE_GEN_ID: "examples",
                retraining_pipeline.STATISTICS_GEN_ID: "statistics"}
NEXT_STEP = {
    outcomes.ANOMALIES: "fix the span's data (or remove it) and run again; the span will "
                        "not be trained on as it is",
    outcomes.DRIFT: "check the new span; if the shift is real and wanted, run again with "
                    "--accept-drift",
}


@dataclasses.dataclass
class Report:
    """What the command prints at the end, and its exit code."""

    outcome: Outcome
    message: str = ""


def retrain(name: str, config: RetrainConfig, out, log) -> Report:
    """Run one retraining of pipeline `name`; `out` is the console, `log(line)` prints to it.
    Then apply the repository's retention policy (serving/retention.py), whatever the
    outcome: a failure there is logged and does not change the run's outcome."""
    report = _retrain(name, config, out, log)
    _apply_retention(registry.get(name, config.run.model_dir).name, config, log)
    return report


def _apply_retention(model: str, config: RetrainConfig, log) -> None:
    """The repository's and the pipeline root's retention (`python -m pipelines gc`)."""
    from pipelines.operations import retention as root_retention
    from serving import retention

    repository = ModelRepository(config.run.repository)
    try:
        decisions = retention.plan_with_server(repository, model, config.serving_state_dir,
                                               config.keep_versions, config.keep_rejected_days)
        removed = retention.apply(repository, decisions)
        protected = root_retention.protected_model_uris(repository, model)
        artifacts = []
        for pipeline in config.run.pipelines_of(model):
            path = config.run.metadata_path(pipeline)
            artifacts += root_retention.apply(path, root_retention.plan(
                path, config.keep_runs, config.keep_days, protected))
    except (OSError, metadata.StoreError) as e:
        log(f"  retention: not applied ({e}); `python -m pipelines gc {model}` shows the plan")
        return
    if removed:
        log(f"  retention: removed {', '.join(f'{d.where} {d.version}' for d in removed)} "
            f"(keeping the newest {config.keep_versions} and every version with a role)")
    if artifacts:
        log(f"  retention: removed {len(artifacts)} artifact(s) of old runs, "
            f"{sum(d.bytes for d in artifacts) / 2**20:.1f} MiB (marked DELETED in ML Metadata)")


def _retrain(name: str, config: RetrainConfig, out, log) -> Report:
    module = registry.get(name, config.run.model_dir)  # the model (pipelines/models/contract.py)
    model = module.name
    pipeline_name = config.pipeline_name(model)
    run = config.run
    metadata_path = run.metadata_path(pipeline_name)
    repository = ModelRepository(run.repository)
    repository.check_writable(model)  # before any data or training
    _record_killed(run, model, log)
    newest = spans.newest_span(run.data_dir)
    stale = _nothing_new(newest, history.last_finished_with(metadata_path, newest.span),
                         config.accept_drift)
    if stale:
        return Report(outcomes.NOTHING_NEW, stale)
    log(f"   newest span: {newest.span} in {Path(run.data_dir).absolute()}; window: "
        f"{config.window} span(s)")

    parts = module.retrain_parts(module.profile(run.profile),
                                 config.trainer_module or module.trainer_module)
    for span in _spans_to_backfill(config, newest.span, metadata_path, pipeline_name):
        _ingest(span, parts, config, pipeline_name, model, repository, out, log)

    infra_image, infra_note = _infra_validation(config)
    lineage = provenance.lineage_fields(pipeline_name, run, module, trainer_module=config.trainer_module,
                                        infra_validation=infra_note)
    pipeline = retraining_pipeline.create_pipeline(
        parts=parts, model_name=model, pipeline_name=pipeline_name,
        pipeline_root=str(run.pipeline_dir(pipeline_name)),
        data_root=str(Path(run.data_dir).absolute()),
        serving_model_dir=str(run.model_destination(model)),
        metadata_path=str(metadata_path), beam_pipeline_args=list(run.beam_args),
        enable_cache=run.enable_cache, window=config.window,
        accept_drift=config.accept_drift, infra_image=infra_image, lineage=lineage)
    recorder = _recorder(pipeline_name, metadata_path,
                         {"span": newest.span, "span_fingerprint": newest.fingerprint})
    try:
        result = recorder.run(pipeline, model_name=model, repository=repository, out=out,
                              log=log)
    except local_runner.PipelineFailed as e:  # recorded; SIGTERM/SIGINT (recorded) goes on
        step = NEXT_STEP.get(e.outcome)
        return Report(e.outcome, f"error: {name}: {e}"
                      + (f"\nerror: {name}: {e.not_recorded}" if e.not_recorded else "")
                      + (f"\nNext step: {step}" if step else ""))

    if infra_note:
        result.infra_validation = infra_note
    log(local_runner.format_summary(result, module.gates(run)))
    if not result.pushed:
        if result.blessed and result.infra_validation == "FAILED":
            recorder.abandon_model(result, "failed infra validation")
        return Report(outcomes.NOT_BLESSED, recorder.end(outcomes.NOT_BLESSED, result))
    if result.push_cached and result.version == rollouts.load(
            repository.model_dir(model), model).stable:
        return Report(outcomes.UNCHANGED, recorder.end(outcomes.UNCHANGED, result, ""))

    with interrupts.finish_first():  # a pushed version is promoted or rejected, whatever comes
        return _verify(module, config, result, newest, repository, recorder, log)


def _recorder(pipeline_name: str, metadata_path: Path, facts) -> Recorder:
    """How a retraining run is recorded: a span the data gates stopped ends the run with
    the gate's outcome, and is abandoned."""
    return Recorder(pipeline_name, metadata_path, facts, GATE_OUTCOMES, SPAN_OUTPUTS)


def _verify(module, config: RetrainConfig, result: local_runner.RunResult,
            newest: spans.NewestSpan, repository: ModelRepository, recorder: Recorder,
            log) -> Report:
    """Deploy the pushed candidate (canary, smoke check, promote or reject), record the run."""
    run, model = config.run, module.name
    eval_dir = spans.span_dir(run.data_dir, newest.span) / "eval"
    deployment = post_push.deploy(
        model, result.version, repository, config.serving_state_dir, config.serving_timeout,
        module.smoke_check(eval_dir, run, config.smoke_examples), promote=config.promote,
        log=log)
    if deployment.status == post_push.REJECTED:
        recorder.abandon_model(result, deployment.reason)
        note = recorder.end(outcomes.NOT_SERVED, result, deployment.reason)
        serving = deployment.serving_version
        return Report(outcomes.NOT_SERVED,
                      f"error: {model} version {result.version} was rejected "
                      f"({deployment.reason}); stable stays "
                      f"{f'version {serving}' if serving else 'unset'}"
                      + (f"\n{note}" if note else ""))
    outcome = {post_push.HELD: outcomes.HELD,
               post_push.CANDIDATE: outcomes.CANDIDATE}.get(deployment.status, outcomes.PUSHED)
    if deployment.status == post_push.PROMOTED and deployment.smoke is not None:
        log(f"  serving: smoke check {deployment.smoke.describe()}")
    note = recorder.end(outcome, result, deployment.reason)
    if deployment.status == post_push.HELD:
        return Report(outcome, f"{model}: version {result.version} is a candidate, not "
                               f"promoted: {model} is {deployment.reason}\nNext step: "
                               f"{deployment.next_step}" + (f"\n{note}" if note else ""))
    return Report(outcome, note)


def _spans_to_backfill(config: RetrainConfig, newest: int, metadata_path: Path,
                       pipeline_name: str) -> List[int]:
    """Older spans the window should hold that no finished run has ingested yet (a first
    run finds several spans waiting), oldest first. A span whose run was killed (or failed)
    after ExampleGen but before the data gates judged it is ingested again: ExampleGen's
    cached output goes through the gates this time, instead of entering the window unjudged."""
    wanted = [s for s in spans.existing_spans(config.run.data_dir) if s < newest]
    wanted = wanted[max(0, len(wanted) - (config.window - 1)):] if config.window > 1 else []
    if not wanted or not metadata_path.exists():
        return wanted
    judged = history.judged_spans(metadata_path)
    return [s for s in wanted if s not in judged]


def _ingest(span: int, parts: retraining_pipeline.ModelParts, config: RetrainConfig,
            pipeline_name: str, model: str, repository: ModelRepository, out, log) -> None:
    """Run the data gates on one older span; a span they stop is left out of the window."""
    run = config.run
    metadata_path = run.metadata_path(pipeline_name)
    log(f"   span {span}: not ingested yet, and within the window: ingesting it first")
    pipeline = retraining_pipeline.create_ingest_pipeline(
        parts=parts, pipeline_name=pipeline_name,
        pipeline_root=str(run.pipeline_dir(pipeline_name)),
        data_root=str(Path(run.data_dir).absolute()), metadata_path=str(metadata_path),
        beam_pipeline_args=list(run.beam_args), enable_cache=run.enable_cache,
        accept_drift=config.accept_drift, span=span)
    recorder = _recorder(pipeline_name, metadata_path, {"span": span})
    try:
        result = recorder.run(pipeline, model_name=model, repository=repository, out=out,
                              log=log)
    except local_runner.PipelineFailed as e:  # recorded
        if e.outcome in (outcomes.ERROR, outcomes.DISK_FULL):
            raise
        log(f"   span {span}: stopped by {e.component}; it stays out of the window")
        return
    recorder.end(outcomes.INGESTED, reason="", run_id=result.run_id, strict=True)


def _record_killed(run, model: str, log) -> None:
    """Runs that died holding the model's lock (which this run holds now) show as killed in
    `history`; their spans are tried again."""
    try:
        killed = history.record_killed(run, model)
    except (history.NotRecorded, metadata.StoreError) as e:
        log(f"   warning: runs that died are not recorded as killed: {e}")
        return
    if killed:
        log(f"   recorded run {', '.join(killed)} as killed: its process died before it ended")


def _nothing_new(newest: spans.NewestSpan, previous: Optional[history.RunRecord],
                 accept_drift: bool) -> str:
    """Why there is nothing to do ("" when there is): a finished run already ingested the
    newest span, with the same files (a span whose files changed is new data). A span
    stopped by the drift gate is tried again when the operator accepts drift."""
    if previous is None or previous.span_fingerprint != newest.fingerprint:
        return ""
    if accept_drift and previous.outcome == outcomes.DRIFT.name:
        return ""
    why = f": {history.headline(previous.reason)}" if previous.reason else ""
    return (f"nothing new: span {newest.span} is the newest span, and the run of "
            f"{previous.started.replace('T', ' ')} already ended with it: "
            f"{previous.outcome}{why}")


def _infra_validation(config: RetrainConfig) -> Tuple[Optional[str], str]:
    """(image to validate in, or None; "" or why it is skipped)."""
    if config.infra_validation == "off":
        return None, "skipped: turned off (--infra-validation off)"
    from components import infra_validation

    image = config.serving_image or _running_server_image(config.serving_state_dir)
    if image:
        problem = infra_validation.serving_image_status(image)
    else:
        image, problem = infra_validation.preferred_image()
    if problem is None:
        return image, ""
    if config.infra_validation == "require":
        raise RuntimeError(f"infra validation is required but cannot run: {problem}")
    return None, f"skipped: {problem}"


def _running_server_image(state_dir: Path) -> str:
    """The image of the running docker server, or "" (none, or the process backend)."""
    from serving import lifecycle

    try:
        return lifecycle.current(state_dir).image
    except lifecycle.NotRunning:
        return ""
