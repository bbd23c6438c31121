"""Notebook experiments with a model's pipeline: what `notebooks/mnist_experiment.ipynb` calls.

The model is MNIST unless told (`start(..., model=NAME)`): any model of the contract
(pipelines/models/contract.py), a model project's too (`project_config(model_dir=DIR)`, or
$TOOLKIT_MODEL_DIR); what follows says `mnist` where it means the model's name.

An experiment runs the MNIST pipeline's own components (`mnist.create_components`, the same
module files as `make pipeline`) one by one in TFX's InteractiveContext, with one or more
of the Trainer's hyperparameters changed; the Evaluator compares that variant with the
repository's current version (the **stable** one of the model's rollout record,
serving/rollouts.py: what a server answers a request naming no version; the newest
published version where there is no record yet), imported with TFX's Importer; the
RepositoryPusher publishes it when blessed, with its lineage record, exactly as the
pipelines do.

A pushed variant stays a **candidate** (`<repository>/mnist/.candidates/N`): an experiment
never changes what is served on its own. `served_predictions` tries the candidate on the
running server without serving it (loaded as the canary, the `mnist-canary` entry with
label `canary`, asked through `/v1/models/mnist-canary/labels/canary:predict`, then
unloaded again: stable answered every other request meanwhile). `promote` makes it stable,
as `python -m serving promote --model mnist --version N` does (load, label, unload on the
running server: serving/lifecycle/rollout.py).

Where it is recorded: the pipeline `mnist_notebook`, with its artifacts and ML Metadata
under `<pipeline root>/mnist_notebook/` (as `run` uses `mnist/` and `retrain`
`mnist_retrain/`). InteractiveContext gives each component run a run of its own, so the
experiment records itself as one `pipeline_run` context, named by its start time as
LocalDagRunner names runs; the executions it ran are added to that run when its outcome is
recorded (`push_if_blessed`), and `python -m pipelines history mnist` lists it beside the
pipelines' runs, with the hyperparameters it tried. The version it pushes names that run in
its `lineage.json`.
"""

from __future__ import annotations

import dataclasses
import datetime
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

import numpy as np
import pandas as pd

from pipelines import outcomes
from pipelines.models import mnist, registry
from pipelines.runs import history, local as local_runner, metadata, provenance
from pipelines.runs.record import Recorder
from pipelines.config import NOTEBOOK_SUFFIX, RunConfig
from pipelines.models.contract import PROFILE_NAMES, ModelPipeline
from serving import defaults, lifecycle, rollouts
from serving.lifecycle import health, model_config, rollout
from serving.lifecycle.state import ServerState
from serving.repository import SERVING_MODEL_DIR, ModelRepository, tree_digest

MODEL = mnist.MODEL_NAME  # the notebook's model unless told
PIPELINE = f"{MODEL}{NOTEBOOK_SUFFIX}"
BASELINE_ID = "repository_model"  # the Importer of the repository's current version
CANDIDATE, BASELINE = "candidate", "baseline"  # TFMA's model names in a comparison


def project_config(profile: str = "default", repository: Optional[str] = None,
                   pipeline_root: Optional[str] = None, cache_dir: Optional[str] = None,
                   model_dir: Optional[str] = None) -> RunConfig:
    """A RunConfig whose relative paths start at the project root, as `make`'s do, wherever
    the notebook's kernel runs; a path left None is the commands' default (its TOOLKIT_*
    environment variable, else under the project). `model_dir`: a model project
    (`python -m pipelines new`) whose model `start` may name; None: $TOOLKIT_MODEL_DIR, as
    the commands' --model-dir."""
    if profile not in PROFILE_NAMES:
        raise ValueError(f"profile must be one of {sorted(PROFILE_NAMES)}, got {profile!r}")
    if model_dir is None:
        model_dir = registry.model_dir_from_environment()
    return RunConfig(pipeline_root=project_path(pipeline_root, defaults.PIPELINE_ROOT),
                     repository=project_path(repository, defaults.REPOSITORY),
                     cache_dir=project_path(cache_dir, defaults.CACHE_DIR), profile=profile,
                     model_dir=None if model_dir is None else project_path(model_dir))


def project_path(path: Optional[os.PathLike | str],
                 default: Optional[defaults.Default] = None) -> Path:
    """`path` as is when absolute, else under the project root; None: `default`'s path."""
    if path is None:
        if default is None:
            raise ValueError("a path, or the default it stands for, is needed")
        return defaults.path(default).absolute()
    return Path(provenance.PROJECT_ROOT, path).absolute()


@dataclasses.dataclass
class Comparison:
    """The Evaluator's verdict on the variant, beside the baseline's metrics."""

    blessed: bool
    failures: List[str]
    baseline_version: Optional[int]          # None: no version to compare with
    metrics: Dict[str, Dict[str, float]]     # metric -> {candidate, baseline, change}
    gates: Dict[str, str]
    # model ("candidate", "baseline") -> counts [true class, predicted class]; {} for a
    # model whose eval config has no MultiClassConfusionMatrixPlot
    confusion: Dict[str, np.ndarray]
    model: str = MODEL

    def table(self) -> pd.DataFrame:
        """One row per metric: the variant, the baseline, the change, the gate."""
        rows = {}
        for name, values in sorted(self.metrics.items()):
            row = {"variant": values.get(CANDIDATE)}
            if self.baseline_version is not None:
                row[f"version {self.baseline_version}"] = values.get(BASELINE)
                row["change"] = values.get("change")
            rows[name] = {**row, "gate": self.gates.get(name, "")}
        return pd.DataFrame.from_dict(rows, orient="index")

    def per_class_accuracy(self) -> pd.DataFrame:
        """Accuracy on each digit (the diagonal of the confusion matrix over its rows), per
        model: columns "variant" and, with a baseline, "version N"."""
        names = {CANDIDATE: "variant", BASELINE: f"version {self.baseline_version}"}
        return pd.DataFrame({names[model]: class_accuracy(matrix)
                             for model, matrix in self.confusion.items()})

    def summary(self) -> str:
        verdict = "blessed" if self.blessed else "NOT blessed: " + "; ".join(self.failures)
        if self.baseline_version is None:
            return (f"{verdict}. The repository has no {self.model} version yet: the variant was "
                    f"compared with nothing, so only the absolute gate applied.")
        return f"{verdict} (compared with version {self.baseline_version}, the stable one)."


def class_accuracy(confusion: np.ndarray) -> np.ndarray:
    """Per true class: the share of its examples predicted as that class."""
    totals = confusion.sum(axis=1)
    return np.divide(np.diag(confusion), totals, out=np.zeros(len(totals)), where=totals > 0)


def read_comparison(evaluation_uri: str, baseline_version: Optional[int],
                    gates: Dict[str, str], model: str = MODEL) -> Comparison:
    """The Evaluator's `evaluation` artifact (TFMA's files) as a Comparison."""
    import tensorflow_model_analysis as tfma  # heavy; only once an evaluation exists

    from components.evaluation_results import read_evaluation

    evaluation = read_evaluation(evaluation_uri)
    metrics: Dict[str, Dict[str, float]] = {}
    for slice_metrics in tfma.load_metrics(evaluation_uri):
        if slice_metrics.slice_key.ByteSize():  # overall slice only
            continue
        for entry in slice_metrics.metric_keys_and_values:
            if not entry.value.HasField("double_value"):
                continue
            column = "change" if entry.key.is_diff else entry.key.model_name or CANDIDATE
            metrics.setdefault(entry.key.name, {})[column] = entry.value.double_value.value
    confusion = {}
    for slice_plots in tfma.load_plots(evaluation_uri):
        if slice_plots.slice_key.ByteSize():
            continue
        for entry in slice_plots.plot_keys_and_values:
            if entry.value.HasField("multi_class_confusion_matrix_at_thresholds"):
                confusion[entry.key.model_name or CANDIDATE] = confusion_counts(
                    entry.value.multi_class_confusion_matrix_at_thresholds)
    return Comparison(blessed=bool(evaluation.blessed), failures=evaluation.failures,
                      baseline_version=baseline_version, metrics=metrics, gates=gates,
                      confusion=dict(sorted(confusion.items(), key=lambda kv: kv[0] != CANDIDATE)),
                      model=model)


def confusion_counts(plot, classes: int = 10) -> np.ndarray:
    """TFMA's MultiClassConfusionMatrixPlot (its first threshold: the top class, as
    accuracy counts it) as counts [true class, predicted class]."""
    counts = np.zeros((classes, classes))
    for entry in plot.matrices[0].entries:
        if 0 <= entry.predicted_class_id < classes:  # not "no prediction above threshold"
            counts[entry.actual_class_id, entry.predicted_class_id] += entry.num_weighted_examples
    return counts


@dataclasses.dataclass
class Served:
    """Predictions the running server made with one version: a candidate, asked as the
    canary (`entry` mnist-canary, `label` canary), or the stable one (`entry` mnist, no
    label: the request names no version)."""

    version: int
    classes: Optional[np.ndarray]  # the predicted class of each input (None: not scores)
    rest_url: str
    entry: str = MODEL
    label: Optional[str] = None
    note: str = ""                 # why a candidate's predictions came from stable instead
    model: str = MODEL
    predictions: Optional[list] = None  # the server's answer, as it gave it

    @property
    def from_canary(self) -> bool:
        return self.label == rollouts.CANARY

    def describe(self) -> str:
        if self.from_canary:
            return (f"{self.model} candidate version {self.version} (as the canary: "
                    f"{self.entry}, label {self.label}; still a candidate)")
        return f"{self.model} stable version {self.version}" + \
            (f" ({self.note})" if self.note else "")


@dataclasses.dataclass
class Experiment:
    """One notebook experiment: `start` makes it; a cell per step uses it."""

    config: RunConfig
    hyperparameters: Dict[str, Any]
    run_id: str
    context: Any                           # TFX's InteractiveContext
    components: Any  # the model's, wired: .nodes, .baseline, .evaluator, .pusher
    baseline_version: Optional[int]
    serving_state_dir: Path
    log: Callable[[str], None]
    started: float
    last_execution_id: int                 # the store's newest execution before this experiment
    result: Optional[local_runner.RunResult] = None
    model: ModelPipeline = dataclasses.field(default_factory=lambda: registry.get(MODEL))

    @property
    def name(self) -> str:
        """The model's name: its directory in the repository, the name it is served under."""
        return self.model.name

    @property
    def pipeline(self) -> str:
        return f"{self.name}{NOTEBOOK_SUFFIX}"

    @property
    def metadata_path(self) -> Path:
        return self.config.metadata_path(self.pipeline)

    def variant(self) -> pd.DataFrame:
        """What this variant changes: each hyperparameter, the pipeline's value and this one."""
        pipeline = self.model.hyperparameters(self.model.profile(self.config.profile))
        return pd.DataFrame(
            {"pipeline": [pipeline.get(name) for name in self.hyperparameters],
             "variant": list(self.hyperparameters.values())},
            index=pd.Index(list(self.hyperparameters), name="hyperparameter"))

    def evaluate(self) -> Comparison:
        """Import the repository's current version (when there is one) and run the
        Evaluator: TFMA, the pipeline's gates, the variant against that version."""
        if self.components.baseline is not None:
            self.context.run(self.components.baseline)
            self._hand_over()
        self.context.run(self.components.evaluator)
        return read_comparison(_uri(self.components.evaluator, "evaluation"),
                               self.baseline_version, self.model.gates(self.config), self.name)

    def _hand_over(self) -> None:
        """In an InteractiveContext, TFX 1.16's ImporterDriver puts the imported artifact
        in a new output channel of the Importer; the Evaluator keeps the old, unresolved
        one, and would refuse it: resolve that one too."""
        [imported] = self.components.baseline.outputs["model"].get()
        [placeholder] = self.components.evaluator.inputs["baseline_model"].get()
        placeholder.set_mlmd_artifact(imported.mlmd_artifact)

    def push_if_blessed(self) -> local_runner.RunResult:
        """Run the Pusher: a blessed variant becomes the repository's next version, as a
        candidate (atomic publish into `.candidates/N`, lineage.json; not served: `promote`
        serves it), an unblessed one is not pushed. Records the outcome in ML Metadata, for
        `history` ("candidate", "unchanged" or "not blessed"). The summary is
        `local_runner.format_summary`'s."""
        self.context.run(self.components.pusher)
        result = local_runner.RunResult(
            pipeline_name=self.pipeline, model_name=self.name, components=[],
            run_id=self.run_id,
            wall_seconds=time.monotonic() - self.started)
        local_runner.add_evaluation(result, _uri(self.components.evaluator, "evaluation"))
        local_runner.add_push(result, _artifact(self.components.pusher, "pushed_model"))
        outcome = push_outcome(result)
        store = metadata.open_store(self.metadata_path, readonly=False)
        run = store.get_context_by_type_and_name(metadata.RUN_CONTEXT_TYPE, self.run_id)
        metadata.add_to_run(store, run, [e.id for e in store.get_executions()
                                         if e.id > self.last_execution_id])
        Recorder(self.pipeline, self.metadata_path,
                 {"hyperparameters": self.hyperparameters}).end(outcome, result, strict=True)
        self.result = result
        return result

    def summary(self) -> str:
        """The run summary, as `python -m pipelines run` prints it."""
        if self.result is None:
            raise RuntimeError("nothing to summarise yet: push_if_blessed() first")
        text = local_runner.format_summary(self.result, self.model.gates(self.config))
        version = self.pushed_candidate()
        if version is not None:
            text += (f"\n  version {version} is a candidate, not served: exp.promote(), or "
                     f"`python -m serving promote --model {self.name} --version {version}`, "
                     f"makes it stable")
        return text

    def pushed_candidate(self) -> Optional[int]:
        """The version this experiment pushed while it is still a candidate, else None."""
        if self.result is None or not self.result.pushed or self.result.version is None:
            return None
        repository = ModelRepository(self.config.repository)
        return self.result.version if self.result.version in repository.candidates(self.name) \
            else None

    def serve(self, timeout: float = 300.0) -> ServerState:
        """The server recorded in the serving state dir; when none is up, start the
        embedded one (process backend, ephemeral ports) over the repository."""
        state = lifecycle.running_server_for(self.name, self.serving_state_dir)
        if state is None:
            self.log(f"no server for {self.name} in {self.serving_state_dir}: starting one "
                     f"(process backend)")
            state = lifecycle.up(lifecycle.UpConfig(
                repository=self.config.repository, models=(self.name,),
                state_dir=self.serving_state_dir, backend="process", grpc_port=0,
                rest_port=0, wait_seconds=timeout))
        check_serves(state, self.config.repository)
        return state

    def served_predictions(self, images, timeout: float = 120.0) -> Served:
        """Ask the running server (`serve`), over REST, for its predictions of `images` (the
        model's inputs, as its `instances` part turns them into serving_default's: MNIST's
        are uint8 [N, 28, 28]).

        The candidate this experiment pushed is tried without being served: loaded as the
        canary (`rollout.load_canary`), asked through `mnist-canary`, label `canary`, then
        unloaded (`rollout.drop_canary`), so it stays a candidate and stable never changed.
        While the model is held (`python -m serving hold`), or another run checks its own
        canary, the answer says so and the predictions come from stable. With nothing
        pushed (or a push that found its model already published), from stable: a request
        naming no version."""
        repository = ModelRepository(self.config.repository)
        name = self.name
        if self.pushed_candidate() is None and current_version(repository, name) is None:
            raise RuntimeError(f"nothing to serve: {self.config.repository} has no {name} "
                               f"version (the variant was not blessed)")
        state = self.serve()
        rest_url = state.addresses.rest_url
        pixels = self.model.instances(images)
        note = ""
        candidate = self.pushed_candidate()
        if candidate is not None:
            record = rollouts.load(repository.model_dir(name), name)
            if record.canary not in (None, candidate):
                note = (f"{name} version {record.canary} is being checked as the canary by "
                        f"another run; candidate {candidate} was not loaded")
            else:
                try:
                    return self._ask_canary(candidate, pixels, rest_url, timeout)
                except lifecycle.Held as e:
                    note = f"{e.message}, not loaded"
            self.log(f"{note}; the predictions come from the stable version")
        stable = rollouts.load(repository.model_dir(name), name).stable
        if stable is None:
            raise RuntimeError(f"nothing to serve: {name} has no stable version in "
                               f"{self.config.repository}")
        lifecycle.wait_for_version(name, stable, timeout, self.serving_state_dir)
        answer = health.predict(rest_url, name, pixels)
        return Served(stable, _classes(answer), rest_url, entry=name, note=note, model=name,
                      predictions=answer["predictions"])

    def _ask_canary(self, version: int, pixels: list, rest_url: str, timeout: float) -> Served:
        """Load candidate `version` as the canary, predict through it, unload it."""
        entry = model_config.canary_entry(self.name)
        rollout.load_canary(self.name, version, self.config.repository, self.serving_state_dir,
                            timeout)
        try:
            answer = health.predict(rest_url, entry, pixels, label=rollouts.CANARY)
        finally:
            rollout.drop_canary(self.name, self.config.repository, self.serving_state_dir,
                                timeout)
        return Served(version, _classes(answer), rest_url, entry=entry, label=rollouts.CANARY,
                      model=self.name, predictions=answer["predictions"])

    def promote(self, timeout: float = 120.0) -> rollout.Change:
        """Make the version this experiment pushed stable, as `python -m serving promote
        --model mnist --version N` does: the candidate moves into the repository's
        published versions and, on the server up for this repository (in the serving
        state dir), is loaded, labelled `stable`, and the old stable becomes `previous`
        (a rollback is a label move). With no server up, the next `up` serves it. An
        operator's promote: it goes through a hold. Returns the change (the record after it,
        and the labels the server answered)."""
        if self.result is None or not self.result.pushed or self.result.version is None:
            raise RuntimeError("nothing to promote: this experiment pushed no version "
                               "(push_if_blessed() first; an unblessed variant is not pushed)")
        version = self.result.version
        change = rollout.promote(self.name, version, Path(self.config.repository),
                                 self.serving_state_dir, timeout)
        self.log(f"{self.name} version {version} is stable"
                 + (f" on {change.server} (labels {change.verified})" if change.server else
                    " (no server is up for this repository: the next `up` serves it)"))
        return change


def push_outcome(result: local_runner.RunResult) -> outcomes.Outcome:
    """What `history` records for an experiment's push: its version stays a candidate."""
    if not result.pushed:
        return outcomes.NOT_BLESSED
    return outcomes.UNCHANGED if result.push_cached else outcomes.CANDIDATE


def current_version(repository: ModelRepository, model: str = MODEL) -> Optional[int]:
    """The version an experiment is compared with: the stable one of the rollout record
    (what servers answer), else, with no record (or its stable gone), the newest published
    version, as `up` would adopt it."""
    record = rollouts.load(repository.model_dir(model), model)
    if record.stable is not None and record.stable in repository.versions(model):
        return record.stable
    return repository.latest_version(model)


def start(config: RunConfig, hyperparameters: Dict[str, Any],
          serving_state_dir: os.PathLike | str = lifecycle.DEFAULT_STATE_DIR,
          log: Callable[[str], None] = print, model: str = MODEL) -> Experiment:
    """Begin an experiment with `model` (one of the built-in models, or config.model_dir's):
    check the hyperparameters, prepare the data (the model's own, e.g. the verified MNIST
    loader's TFRecords), record the run, import the repository's stable version as the
    baseline (`current_version`), and wire the pipeline's components with the variant's Trainer."""
    from tfx import v1 as tfx
    from tfx.orchestration.experimental.interactive.interactive_context import InteractiveContext

    definition = registry.get(model, config.model_dir)
    name, pipeline = definition.name, f"{definition.name}{NOTEBOOK_SUFFIX}"
    profile = definition.profile(config.profile)
    known = definition.hyperparameters(profile)
    unknown = sorted(set(hyperparameters) - set(known))
    if unknown:
        raise ValueError(f"unknown hyperparameter(s) {', '.join(unknown)}; the Trainer takes "
                         f"{', '.join(sorted(known))}")
    repository = ModelRepository(config.repository)
    repository.check_writable(name)
    examples_dir = definition.prepare_data(config, profile, log)
    pipeline_dir = config.pipeline_dir(pipeline)
    pipeline_dir.mkdir(parents=True, exist_ok=True)
    run_id = datetime.datetime.now().isoformat()
    store = metadata.open_store(config.metadata_path(pipeline), create=True)
    last_execution_id = max((e.id for e in store.get_executions()), default=0)
    metadata.create_run(store, run_id)

    baseline_version = current_version(repository, name)
    baseline = None
    if baseline_version is not None:
        baseline = tfx.dsl.Importer(
            source_uri=str(import_version(repository, baseline_version, pipeline_dir, name)),
            artifact_type=tfx.types.standard_artifacts.Model, output_key="model",
            custom_properties={"repository_version": baseline_version}).with_id(BASELINE_ID)
    lineage = provenance.lineage_fields(pipeline, config, definition, notebook=True,
                                        hyperparameters=hyperparameters, run_id=run_id)
    components = definition.create_components(
        examples_dir=str(examples_dir), serving_model_dir=str(config.model_destination(name)),
        profile=profile, baseline=baseline, lineage=lineage, hyperparameters=hyperparameters)
    context = InteractiveContext(
        pipeline_name=pipeline, pipeline_root=str(pipeline_dir),
        metadata_connection_config=tfx.orchestration.metadata.sqlite_metadata_connection_config(
            str(config.metadata_path(pipeline))),
        beam_pipeline_args=list(config.beam_args))
    log(f"experiment {run_id}: pipeline {pipeline} under {pipeline_dir}; baseline: "
        + (f"stable version {baseline_version} of {repository.model_dir(name)}"
           if baseline_version is not None else f"none ({repository.root} has no {name})"))
    return Experiment(config=config, hyperparameters=dict(hyperparameters), run_id=run_id,
                      context=context, components=components, baseline_version=baseline_version,
                      serving_state_dir=Path(serving_state_dir), log=log,
                      started=time.monotonic(), last_execution_id=last_execution_id,
                      model=definition)


def import_version(repository: ModelRepository, version: int, pipeline_dir: Path,
                   model: str = MODEL) -> Path:
    """A copy of a published version laid out as a TFX Model artifact (the SavedModel under
    Format-Serving/), for the Importer; one per distinct model, made once."""
    source = repository.version_path(model, version)
    target = pipeline_dir / BASELINE_ID / f"{version}-{tree_digest(source)[:16]}"
    if not (target / SERVING_MODEL_DIR).is_dir():
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
        try:
            shutil.copytree(source, staging / SERVING_MODEL_DIR)
            os.replace(staging, target)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return target


def check_serves(state: ServerState, repository: Path) -> None:
    """A server over another repository would never see what this experiment pushes."""
    if Path(state.repository).resolve() != Path(repository).resolve():
        raise lifecycle.LifecycleError(
            f"the server recorded in {state.state_dir} serves {state.repository}, "
            f"not {repository}",
            next_step="give the notebook the serving state dir of a server over this "
                      "repository, or one where none is up")


def history_frame(config: RunConfig, model: str = MODEL) -> pd.DataFrame:
    """`python -m pipelines history` as a DataFrame: every run of the model's pipelines
    (`run`, `retrain`, notebook experiments), oldest first, one column per metric."""
    from serving.lineage import span_ranges

    rows = []
    for r in history.runs(config, model):
        spans = r.shown_spans()
        rows.append({
            "started": pd.Timestamp(r.started), "pipeline": r.pipeline,
            "hyperparameters": ", ".join(f"{k}={v}" for k, v in sorted(r.hyperparameters.items())),
            "spans": span_ranges(spans) if spans else "",
            **r.metrics,
            "blessed": r.blessed, "version": r.pushed_version, "outcome": r.outcome,
            "reason": history.headline(r.reason) if r.reason else "", "run_id": r.run_id})
    frame = pd.DataFrame(rows)
    if "version" in frame:
        frame["version"] = frame["version"].astype("Int64")  # no version: <NA>, not NaN
    return frame


def _classes(answer: dict) -> Optional[np.ndarray]:
    """The predicted class of each instance of a REST predict answer of class scores; None
    for another answer (a regression's numbers, several outputs)."""
    predictions = np.asarray(answer["predictions"])
    return predictions.argmax(axis=1) if predictions.ndim == 2 and \
        predictions.dtype.kind == "f" else None


def _artifact(node, key: str):
    """The MLMD artifact a component run in the InteractiveContext produced."""
    return node.outputs[key].get()[0].mlmd_artifact


def _uri(node, key: str) -> str:
    return node.outputs[key].get()[0].uri
