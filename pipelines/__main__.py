"""`python -m pipelines`: run, retrain and schedule the pipelines; spans, history, compile;
new model projects.

Flags are parsed here and only here; they become a RunConfig / RetrainConfig that the
pipeline code reads. Exit codes are the table in pipelines/outcomes.py (also in --help).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import posixpath
import signal
import sys
import time
import traceback
import warnings
from typing import List, Optional

from components.spans import SPAN_KINDS
from pipelines.models.scaffold import TEMPLATES
from pipelines import outcomes
from pipelines.runs import interrupts
from pipelines.runs.interrupts import RunAbandoned
from pipelines.models.registry import MODEL_DIR_VARIABLE
from serving import cli, defaults

RETRAIN_HELP = """Retrain on new data: DIR holds span-1/, span-2/, ... each with train/ and eval/
(TFRecords of tf.Example for mnist, CSV for half_plus_two, a model project's as its model.py
says). The newest span is ingested;
the model trains on the newest --window spans, warm-started from the latest blessed
model; it is pushed only after the data gates (schema, drift against the previous span),
the Evaluator's gates and, when Docker and a serving image are there, TFX's
InfraValidator; with a server up (`python -m serving up`), the new version is checked
through it and rolled back when it does not serve well. Arguments after `--` go to Beam."""
SCHEDULE_ONLY = {"--every": 1, "--max-runs": 1, "--on-stop": 1}
PROFILES = ("default", "fast")
# Commands that take a pipeline as NAME or --model NAME.
NAMED_COMMANDS = ("run", "retrain", "schedule", "make-spans", "history", "compile", "gc")
# Commands that pass arguments after `--` to Beam.
BEAM_COMMANDS = ("run", "retrain", "schedule", "compile")


def build_parser() -> argparse.ArgumentParser:
    """The parser of `python -m pipelines` and all its commands (what --help shows)."""
    from pipelines.models.registry import PIPELINES

    names = ", ".join(sorted(PIPELINES)) + ", or the model of --model-dir"
    paths = cli.options_group()
    cli.add_repository(paths)
    cli.add_pipeline_root(paths)
    data = cli.options_group()
    cli.add_cache_dir(data)
    data.add_argument("--profile", default="default", choices=PROFILES,
                      help="sizes: 'fast' is a small, quick configuration for tests")
    execution = cli.options_group()
    execution.add_argument("--no-cache", dest="enable_cache", action="store_false",
                           help="re-run every component instead of reusing cached results")
    cli.add_state_dir(execution, "where `python -m serving up` records the running server; "
                                 "when one is up, each pushed version is checked through it")
    cli.add_timeout(execution, 300.0, "how long to wait for a pushed version to load as the "
                                      "canary, and to be promoted, on the running server")
    execution.add_argument("--no-promote", dest="promote", action="store_false",
                           help="publish the pushed version as a candidate only (registered, "
                                "not loaded); `python -m serving promote` serves it later")
    execution.add_argument("-v", "--verbose", action="store_true", help="show TFX's own log")
    cli.refuse_renamed(execution, "--serving-state-dir", "--state-dir")
    cli.refuse_renamed(execution, "--serving-timeout", "--timeout")
    model_dir = cli.options_group()
    model_dir.add_argument("--model-dir", type=cli.existing_dir, default=None, metavar="DIR",
                           help="a model project (`python -m pipelines new` writes one): its "
                                "model is known besides the built-in ones, and in their place "
                                f"under the same name (default: ${MODEL_DIR_VARIABLE})")

    parser = cli.Parser(
        prog="python -m pipelines", description=__doc__.split("\n\n")[0],
        epilog=outcomes.exit_codes_help(outcomes.ALL, "exit codes (each COMMAND's --help lists "
                                                      "its own; these are retrain's):")
        + "\n\n" + cli.environment_help(defaults.ALL)
        + f"\n  {MODEL_DIR_VARIABLE:<22} a model project, as --model-dir (default: none)")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    lst = commands.add_parser(
        "list", parents=[model_dir], help="list the pipelines", epilog=_epilog("list"),
        description="The pipelines `run`, `retrain` and the other commands know, one a line.")
    cli.add_json(lst, "print them as a JSON list")

    new = commands.add_parser(
        "new", help="write a model project of your own, from a template",
        epilog=_epilog("new"),
        description="Write a self-contained model project to --out, as `tfx template copy` "
                    "does: model.py (the model's parts: pipelines/models/contract.py), its "
                    "Trainer module, a sample data generator, the schema, the drift "
                    "thresholds and a README. As written it passes every gate. Every "
                    "command takes it with --model-dir DIR (or $TOOLKIT_MODEL_DIR).")
    new.add_argument("name", metavar="NAME", type=_new_model_name,
                     help="the model's name: lower case letters, digits and _")
    new.add_argument("--template", required=True, choices=list(TEMPLATES),
                     help="regression (CSV features -> a number) or image-classification "
                          "(TFRecords of small images -> a class)")
    new.add_argument("--out", required=True, type=_new_project_dir, metavar="DIR",
                     help="the project's directory (made; it must not exist, or be empty)")

    run = commands.add_parser(
        "run", parents=[paths, data, execution, model_dir], help="run one or more pipelines",
        usage="python -m pipelines run NAME [NAME ...] [options] [-- BEAM_ARGS ...]",
        description="Train, evaluate and push. The pipelines are NAME ... or --model NAME "
                    "(repeatable), not both. Arguments after `--` go to Beam, e.g. "
                    "`-- --runner=FlinkRunner --flink_master=host:8081`.",
        epilog=_epilog("run"))
    run.add_argument("names", nargs="*", metavar="NAME", help=f"pipeline to run: {names}")
    cli.add_model(run, many=True, required=False,
                  text="pipeline to run, as NAME does; repeat it or separate names with "
                       "commas (no default: give NAME or --model)")
    run.add_argument("--data-dir", type=cli.existing_dir, default=None, metavar="DIR",
                     help="use your own input data instead of the pipeline's data source "
                          "(half_plus_two: x,y CSV files; mnist: mnist.npz or the CSV pair, "
                          "or train/ and eval/ directories of tf.Example TFRecords; a model "
                          "project: what its prepare_data checks); "
                          "default: the pipeline's own data")

    retrain = commands.add_parser(
        "retrain", parents=[paths, data, execution, model_dir], help="retrain on the newest span of new data",
        usage="python -m pipelines retrain NAME --data DIR [options] [-- BEAM_ARGS ...]",
        description=RETRAIN_HELP, epilog=_epilog("retrain"))
    _retrain_arguments(retrain, names)

    schedule = commands.add_parser(
        "schedule", parents=[paths, data, execution, model_dir],
        help="retrain every interval, one run at a time, until SIGTERM",
        usage="python -m pipelines schedule NAME --data DIR --every 6h [retrain options]",
        description="A long-running loop for machines without cron: runs `retrain` with the "
                    "same options every interval (from the start of the previous run); a "
                    "failed run does not stop it. SIGTERM/SIGINT stop it, abandoning the "
                    "current run cleanly (or letting it finish: --on-stop finish). Exits 0 "
                    "once stopped.",
        epilog=_epilog("schedule"))
    _retrain_arguments(schedule, names)
    schedule.add_argument("--every", required=True, type=_interval, metavar="INTERVAL",
                          help="interval between runs: 90s, 15m, 6h, 1d")
    schedule.add_argument("--max-runs", type=cli.positive_int, default=None, metavar="N",
                          help="stop after this many runs (default: never)")
    schedule.add_argument("--on-stop", choices=["abandon", "finish"], default="abandon",
                          help="on SIGTERM: abandon the current run cleanly, or let it finish")

    spans = commands.add_parser(
        "make-spans", parents=[data, model_dir], help="write a data set as spans, to try retraining",
        epilog=_epilog("make-spans"),
        description="Write spans span-N/{train,eval}/ of the pipeline's own data (MNIST from "
                    "the verified loader; generated rows for half_plus_two; a model "
                    "project's from its write_spans), numbered after "
                    "the spans already in --out. --kind corrupted / label-shift write a span "
                    "that the schema gate / the drift gate stop.")
    _name_arguments(spans, names)
    spans.add_argument("--out", type=cli.dir_path, required=True, metavar="DIR",
                       help="the spans directory (made when missing)")
    spans.add_argument("--spans", type=cli.positive_int, default=1, metavar="N",
                       help="how many spans")
    spans.add_argument("--start", type=cli.positive_int, default=None, metavar="N",
                       help="number of the first span (default: after the last one in --out)")
    spans.add_argument("--kind", default="clean", choices=SPAN_KINDS,
                       help="clean, corrupted (schema anomalies) or label-shift "
                            "(a drifted distribution)")
    spans.add_argument("--data-dir", type=cli.existing_dir, default=None, metavar="DIR",
                       help="mnist: your own mnist.npz or CSV pair, as for `run` "
                            "(default: the verified download)")

    hist = commands.add_parser(
        "history", parents=[paths, model_dir], help="past runs of a model, from ML Metadata",
        epilog=_epilog("history"),
        description="Every run of the model's pipelines (`run`, `retrain`, notebook experiments) under the "
                    "pipeline root: start time, spans, metrics, blessed, pushed version, outcome.")
    _name_arguments(hist, names)
    cli.add_json(hist)

    gc = commands.add_parser(
        "gc", parents=[paths, model_dir], help="show (or remove) the versions retention lets go",
        epilog=_epilog("gc"),
        description="Apply the repository's retention policy to a model: never the stable, "
                    "previous or canary version, a version the running server has loaded, a "
                    "candidate newer than stable, or the newest --keep-versions; a rejected "
                    "version after --keep-rejected-days. In the pipeline root, the artifacts "
                    "only runs outside the newest --keep-runs and older than --keep-days used "
                    "(never the Model behind a version in the repository), marked DELETED in "
                    "ML Metadata first, so TFX's cache and resolvers never hand them out; then "
                    "the rows of those runs whose outputs are all gone are deleted from ML "
                    "Metadata (a run behind a version in the repository keeps them; `history` "
                    "lists the runs kept). Dry run by default: prints what would go and why. "
                    "`retrain` applies the same policy after each run. Version numbers are "
                    "never reused.")
    _name_arguments(gc, names)
    _retention_arguments(gc)
    cli.add_state_dir(gc, "where `python -m serving up` records the running server (its "
                          "loaded versions are kept)")
    gc.add_argument("--apply", action="store_true", help="remove what the policy lets go")
    cli.add_json(gc)

    comp = commands.add_parser(
        "compile", parents=[model_dir], help="write the pipeline for another orchestrator",
        epilog=_epilog("compile"),
        description="Compile the pipeline (as `run` builds it) for Kubeflow Pipelines v2 / "
                    "Vertex AI Pipelines with TFX's KubeflowV2DagRunner. Paths are the "
                    "orchestrator's (e.g. gs://...); nothing is read or downloaded here. "
                    "Arguments after `--` go to Beam in the workers.")
    _name_arguments(comp, names)
    comp.add_argument("--target", choices=["kubeflow-v2"], default="kubeflow-v2",
                      help="the orchestrator: kubeflow-v2 is Kubeflow Pipelines v2 and Vertex "
                           "AI Pipelines (a PipelineJob JSON)")
    comp.add_argument("--output", type=cli.output_file, required=True, metavar="FILE",
                      help="the pipeline spec to write, JSON (a .yaml name: YAML); its "
                           "directory must exist")
    comp.add_argument("--image", default=None,
                      help="container image every component runs in (default: "
                           "tfx-serving-toolkit/pipeline:latest, built from pipelines/image/)")
    comp.add_argument("--pipeline-root", required=True, metavar="URI",
                      help="artifacts root the workers write, e.g. gs://bucket/tfx")
    comp.add_argument("--data-root", required=True, metavar="URI",
                      help="the input data the workers read, e.g. gs://bucket/mnist "
                           "(train/ and eval/ TFRecords for mnist, x,y CSVs for half_plus_two)")
    comp.add_argument("--repository", required=True, type=_worker_path, metavar="DIR",
                      help="the model repository as an absolute path inside the workers "
                           "(a mounted volume): publishing renames directories")
    comp.add_argument("--profile", default="default", choices=PROFILES,
                      help="sizes, as for `run`")
    return parser


def _epilog(command: str) -> str:
    return outcomes.exit_codes_help(outcomes.BY_COMMAND[command])


def _name_arguments(parser: argparse.ArgumentParser, names: str) -> None:
    """NAME, or --model NAME: the same thing, spelled either way."""
    parser.add_argument("name", nargs="?", metavar="NAME", help=f"the pipeline: {names}")
    cli.add_model(parser, many=False, required=False,
                  text="the pipeline, as NAME does (no default: give NAME or --model)")


def _retrain_arguments(parser: argparse.ArgumentParser, names: str) -> None:
    _name_arguments(parser, names)
    parser.add_argument("--data", type=cli.existing_dir, required=True, metavar="DIR",
                        help="directory of spans: span-1/, span-2/, ... with train/ and eval/")
    parser.add_argument("--window", type=cli.positive_int, default=3, metavar="K",
                        help="train on the newest K spans")
    parser.add_argument("--accept-drift", action="store_true",
                        help="let a span through that the drift gate would stop")
    parser.add_argument("--infra-validation", choices=["auto", "require", "off"], default="auto",
                        help="TFX InfraValidator before the push: auto runs it when a Docker "
                             "Engine and the serving image are there")
    parser.add_argument("--serving-image", default=None, metavar="IMAGE",
                        help="image InfraValidator loads the model in (default: the running "
                             "server's, else tensorflow/serving:2.16.1 when present, else "
                             "the stand-in from `make serving-image`)")
    parser.add_argument("--trainer-module", type=cli.existing_file, default=None, metavar="FILE",
                        help="another Trainer module file (TFX's module_file) to train with "
                             "(default: the model's own)")
    parser.add_argument("--smoke-examples", type=cli.non_negative_int, default=200, metavar="N",
                        help="eval examples sent through the running server after a push")
    _retention_arguments(parser)


def _retention_arguments(parser: argparse.ArgumentParser) -> None:
    from serving import retention

    parser.add_argument("--keep-versions", type=cli.positive_int,
                        default=retention.DEFAULT_KEEP_VERSIONS, metavar="N",
                        help="keep the newest N versions (published and candidates), besides "
                             "those with a role")
    parser.add_argument("--keep-rejected-days", type=cli.seconds,
                        default=retention.DEFAULT_KEEP_REJECTED_DAYS, metavar="DAYS",
                        help="keep a rejected version this long for the post-mortem")
    parser.add_argument("--keep-runs", type=cli.positive_int, default=10, metavar="N",
                        help="pipeline root: keep the artifacts of the newest N runs of each "
                             "pipeline (at least the retraining window)")
    parser.add_argument("--keep-days", type=cli.seconds, default=30.0, metavar="DAYS",
                        help="pipeline root: keep the artifacts of runs younger than this")


def _interval(text: str) -> float:
    from pipelines.operations.schedule import parse_interval

    try:
        return parse_interval(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _new_model_name(text: str) -> str:
    from pipelines.models.contract import MODEL_NAME_PATTERN
    from pipelines.models.registry import PIPELINES

    if not MODEL_NAME_PATTERN.match(text):
        raise argparse.ArgumentTypeError(
            f"{text!r}: a model name is lower case letters, digits and _, starting with a letter")
    if text in PIPELINES:
        raise argparse.ArgumentTypeError(f"{text!r} is a built-in model; choose another name")
    return text


def _new_project_dir(text: str):
    from pipelines.models.scaffold import ProjectError, check_out_dir

    try:
        check_out_dir(cli.dir_path(text))
    except ProjectError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    return cli.dir_path(text)


def _worker_path(text: str) -> str:
    """compile --repository: an absolute filesystem path in the workers (not a URI)."""
    if not posixpath.isabs(text):
        raise argparse.ArgumentTypeError(
            f"{text!r}: the Pusher publishes by renaming directories, so give an absolute "
            f"filesystem path inside the workers (a mounted volume), not a relative path or URI")
    return text


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    """argv -> the checked namespace; a bad command line exits 2 (argparse's SystemExit)
    before anything heavy is imported or anything is written."""
    argv = list(sys.argv[1:] if argv is None else argv)
    beam_args: List[str] = []
    if "--" in argv:
        split = argv.index("--")
        argv, beam_args = argv[:split], argv[split + 1:]
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command in NAMED_COMMANDS + ("list",):
        args.known_models = _known_models(cli.subparser(parser, args.command), args)
    if args.command in NAMED_COMMANDS:
        _resolve_names(cli.subparser(parser, args.command), args)
    if beam_args and args.command not in BEAM_COMMANDS:
        cli.subparser(parser, args.command).error(
            f"arguments after `--` go to Beam; only {', '.join(BEAM_COMMANDS)} take them")
    args.beam_args = tuple(beam_args)
    args.raw_argv = argv + (["--", *beam_args] if beam_args else [])
    return args


def _resolve_names(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """NAME and --model NAME are the same thing: one of them (or both, naming the same
    pipelines), each a known pipeline. Sets args.names (run) or args.name."""
    PIPELINES = args.known_models
    many = args.command == "run"
    positional = list(args.names) if many else ([args.name] if args.name else [])
    flagged = list(args.model or []) if many else ([args.model] if args.model else [])
    if not positional and not flagged:
        parser.error("which pipeline? give NAME or --model NAME "
                     "(`python -m pipelines list` lists them)")
    if positional and flagged and positional != flagged:
        parser.error(f"NAME says {', '.join(positional)} but --model says {', '.join(flagged)}: "
                     f"give the pipeline{'s' if many else ''} one way")
    chosen = positional or flagged
    if not many and len(chosen) > 1:
        parser.error("one pipeline at a time")
    for name in chosen:
        if name not in PIPELINES:
            parser.error(f"invalid choice: {name!r} (choose from {', '.join(sorted(PIPELINES))}; "
                         f"`python -m pipelines list` lists them)")
    if many:
        args.names = chosen
    else:
        args.name = chosen[0]


def _known_models(parser: argparse.ArgumentParser, args: argparse.Namespace):
    """The models this command line knows: the built-in ones and --model-dir's (else
    $TOOLKIT_MODEL_DIR's), whose name is read without importing it. Sets args.model_dir
    (absolute, or None)."""
    from pipelines.models import registry
    from pipelines.models.contract import ModelContractError

    where = "argument --model-dir"
    if args.model_dir is None:
        args.model_dir = registry.model_dir_from_environment()
        where = f"${MODEL_DIR_VARIABLE}"
        if args.model_dir is not None and not args.model_dir.is_dir():
            parser.error(f"{where}: {args.model_dir} is not a directory")
    if args.model_dir is not None:
        args.model_dir = args.model_dir.absolute()
    try:
        return registry.names(args.model_dir)
    except ModelContractError as e:
        parser.error(f"{where}: {e}")


def _run_config(args, data_dir):
    from pipelines.config import RunConfig

    return RunConfig(pipeline_root=args.pipeline_root, repository=args.repository,
                     data_dir=data_dir, cache_dir=args.cache_dir, beam_args=args.beam_args,
                     enable_cache=args.enable_cache, profile=args.profile,
                     model_dir=args.model_dir)


def run(args: argparse.Namespace) -> int:
    from pipelines.models import registry
    from pipelines.runs import history, local as local_runner, lock as run_lock, provenance
    from pipelines.runs.record import Recorder, failure_outcome
    from pipelines.models.contract import ModelContractError
    from pipelines.runs.console import LogError
    from pipelines.runs.metadata import StoreError
    from serving import disk
    from serving.repository import ModelRepository, RepositoryError

    expected_errors = (ModelContractError, RepositoryError, local_runner.PipelineFailed,
                       run_lock.Locked, history.NotRecorded, StoreError, LogError,
                       disk.DiskFull)
    config = _run_config(args, args.data_dir)
    codes = []
    for name in args.names:
        data_errors = ()  # the model's own: known once it is loaded
        try:
            with _run_console(name, name, config, "run", args.verbose) as console:
                # Imports TensorFlow: its noise goes to the log.
                model = registry.get(name, config.model_dir)
                data_errors = model.data_errors
                repository = ModelRepository(config.repository)
                repository.check_writable(model.name)  # before any data or training
                lineage = provenance.lineage_fields(name, config, model)
                pipeline = model.build(config, lambda line: print(line, file=console),
                                       lineage)
                recorder = Recorder(name, config.metadata_path(name))
                result = recorder.run(pipeline, model_name=model.name, repository=repository,
                                      out=console, log=lambda line: print(line, file=console))
                not_recorded = "" if result.pushed else \
                    recorder.end(outcomes.NOT_BLESSED, result)
        except RunAbandoned:
            print(f"{name}: run abandoned (nothing was pushed; the repository is unchanged)",
                  flush=True)
            return outcomes.ABANDONED.exit_code
        except Exception as e:  # every failure is reported, then the next pipeline runs
            expected = isinstance(e, expected_errors + data_errors)
            full = None if expected else \
                disk.as_disk_full(e, config.pipeline_dir(name))
            print(f"error: {name}: {full or e}", file=sys.stderr)
            if getattr(e, "not_recorded", ""):
                print(f"error: {name}: {e.not_recorded}", file=sys.stderr)
            if not expected and full is None:
                traceback.print_exc()
            print(f"{name}: NOT pushed (run failed; the repository is unchanged)", flush=True)
            codes.append(failure_outcome(e).exit_code)
            continue
        print(local_runner.format_summary(result, model.gates(config)), flush=True)
        if not_recorded:
            print(f"{name}: {not_recorded}", file=sys.stderr, flush=True)
        if not result.pushed:
            codes.append(outcomes.NOT_BLESSED.exit_code)
            continue
        outcome, reason = deploy_push(model.name, result.version, args, repository)
        if outcome == outcomes.RUN_NOT_SERVED:
            recorder.abandon_model(result, reason)  # never a baseline or warm start
        not_recorded = recorder.end(outcome, result, reason)
        if not_recorded:
            print(f"{name}: {not_recorded}", file=sys.stderr, flush=True)
        codes.append(outcome.exit_code)
    return outcomes.worst(codes)


def deploy_push(model: str, version: int, args: argparse.Namespace, repository):
    """Deploy the pushed candidate the one way every run does (pipelines/operations/post_push.py); the
    canary's check is one sample prediction, as `run` has no eval span at hand. Returns the
    run's outcome and its reason."""
    from pipelines.operations import post_push

    deployment = post_push.deploy(model, version, repository, args.state_dir, args.timeout,
                                  promote=args.promote)
    if deployment.status == post_push.REJECTED:
        print(f"error: {model} version {version} was rejected ({deployment.reason}); stable "
              f"stays {deployment.serving_version}", file=sys.stderr)
        return outcomes.RUN_NOT_SERVED, deployment.reason
    if deployment.status == post_push.HELD:
        print(f"{model}: version {version} is a candidate, not promoted: {model} is "
              f"{deployment.reason}\nNext step: {deployment.next_step}", flush=True)
        return outcomes.HELD, deployment.reason
    if deployment.status == post_push.CANDIDATE:
        return outcomes.CANDIDATE, deployment.reason
    return outcomes.PUSHED, ""


def retrain(args: argparse.Namespace) -> int:
    from components.spans import SpanError
    from pipelines.runs import local as local_runner, lock as run_lock
    from pipelines.config import RetrainConfig
    from pipelines.models.contract import ModelContractError
    from pipelines.runs.record import failure_outcome
    from serving import disk
    from serving.repository import RepositoryError

    try:
        config = RetrainConfig(
            run=_run_config(args, args.data), window=args.window,
            accept_drift=args.accept_drift, infra_validation=args.infra_validation,
            serving_image=args.serving_image,
            trainer_module=str(args.trainer_module.absolute()) if args.trainer_module else None,
            serving_state_dir=args.state_dir, serving_timeout=args.timeout,
            smoke_examples=args.smoke_examples, promote=args.promote,
            keep_versions=args.keep_versions, keep_rejected_days=args.keep_rejected_days,
            keep_runs=args.keep_runs, keep_days=args.keep_days)
    except ValueError as e:
        print(f"python -m pipelines retrain: error: {e}", file=sys.stderr)
        return outcomes.USAGE.exit_code
    name = args.name
    try:
        with _run_console(name, config.pipeline_name(name), config.run, "retrain",
                          args.verbose) as console:
            from pipelines.operations import retrain as retraining_run  # TensorFlow: its noise to the log

            report = retraining_run.retrain(
                name, config, console, lambda line: print(line, file=console, flush=True))
    except run_lock.Locked as e:
        print(f"error: {name}: {e}", file=sys.stderr)
        return outcomes.LOCKED.exit_code
    except RunAbandoned:
        print(f"{name}: run abandoned (nothing was pushed; the repository is unchanged)",
              flush=True)
        return outcomes.ABANDONED.exit_code
    except (SpanError, ModelContractError, RepositoryError, local_runner.PipelineFailed,
            RuntimeError, OSError) as e:
        # OSError: a full disk or an unusable file outside any component (the log, the lock)
        full = disk.as_disk_full(e, config.run.pipeline_dir(config.pipeline_name(name))) \
            if isinstance(e, OSError) else None
        print(f"error: {name}: {full or e}", file=sys.stderr)
        print(f"{name}: NOT pushed (run failed; the repository is unchanged)", flush=True)
        return failure_outcome(e).exit_code
    if report.message:  # an error's message to stderr; held (exit 9) is not an error
        failed = report.outcome.exit_code not in (outcomes.PUSHED.exit_code,
                                                  outcomes.HELD.exit_code)
        print(report.message, file=sys.stderr if failed else sys.stdout, flush=True)
    if interrupts.pending():
        print(f"{name}: {interrupts.pending()} arrived after the push; the run finished its "
              f"post-push check first", flush=True)
    print(f"{name}: {report.outcome.name} (exit {report.outcome.exit_code})", flush=True)
    return report.outcome.exit_code


def schedule(args: argparse.Namespace) -> int:
    from pipelines.operations.schedule import Scheduler, retrain_command

    argv = args.raw_argv[args.raw_argv.index("schedule") + 1:]
    scheduler = Scheduler(retrain_command(argv, SCHEDULE_ONLY), args.every, args.max_runs,
                          finish_on_stop=args.on_stop == "finish",
                          log=lambda line: print(line, flush=True))
    signal.signal(signal.SIGTERM, scheduler.stop)
    signal.signal(signal.SIGINT, scheduler.stop)
    return scheduler.run()


def make_spans(args: argparse.Namespace) -> int:
    from components import spans
    from pipelines.models import registry
    from pipelines.config import RunConfig

    start = args.start
    if start is None:
        start = max(spans.existing_spans(args.out), default=0) + 1
    numbers = list(range(start, start + args.spans))
    config = RunConfig(cache_dir=args.cache_dir, profile=args.profile, data_dir=args.data_dir,
                       model_dir=args.model_dir)
    try:
        written = registry.get(args.name, args.model_dir).write_spans(config, args.out, numbers,
                                                                      args.kind)
    except Exception as e:  # bad --out, data that cannot be loaded, an existing span
        print(f"error: {args.name}: {e}", file=sys.stderr)
        return outcomes.ERROR.exit_code
    for path in written:
        print(f"{path} ({args.kind})")
    return 0


def show_history(args: argparse.Namespace) -> int:
    from pipelines.runs import history
    from pipelines.config import RunConfig
    from pipelines.runs.metadata import StoreError

    config = RunConfig(pipeline_root=args.pipeline_root, repository=args.repository)
    try:
        records = history.runs(config, args.name)
    except StoreError as e:  # locked, or left half-made by a full disk
        print(f"error: {args.name}: {e}", file=sys.stderr)
        return outcomes.FAILED.exit_code
    if args.json:
        print(json.dumps([r.to_json() for r in records], indent=2))
    elif not records:
        print(f"no runs of {args.name} under {config.pipeline_root.absolute()}")
    else:
        print(history.format_table(records, args.repository, args.name))
    return 0


def collect_garbage(args: argparse.Namespace) -> int:
    from pipelines.operations import retention as root_retention
    from pipelines.config import RunConfig
    from pipelines.runs.metadata import StoreError
    from serving import retention
    from serving.repository import ModelRepository

    repo = ModelRepository(args.repository)
    decisions = retention.plan_with_server(repo, args.name, args.state_dir, args.keep_versions,
                                           args.keep_rejected_days)
    removed = retention.apply(repo, decisions) if args.apply else []
    config = RunConfig(pipeline_root=args.pipeline_root, repository=args.repository)
    protected = root_retention.protected_model_uris(repo, args.name)
    artifacts = {}
    try:
        for pipeline in config.pipelines_of(args.name):
            path = config.metadata_path(pipeline)
            plan = root_retention.plan(path, args.keep_runs, args.keep_days, protected)
            gone = root_retention.apply(path, plan) if args.apply else []
            pruned = gone.pruned if args.apply else root_retention.prune_rows(
                path, [r.context_id for r in plan.runs if not r.keep], apply=False,
                assume_deleted=[d.artifact_id for d in plan if not d.keep])
            artifacts[pipeline] = (plan, gone, pruned or root_retention.PruneResult())
    except StoreError as e:  # locked by a run, or left half-made by a full disk
        print(f"error: {args.name}: {e}", file=sys.stderr)
        return outcomes.FAILED.exit_code
    if args.json:
        print(json.dumps({
            "model": args.name, "repository": str(repo.root), "applied": args.apply,
            "removed": [d.version for d in removed],
            "decisions": [d.to_json() for d in decisions],
            "artifacts": {p: {"removed": [d.artifact_id for d in gone],
                              "decisions": [d.to_json() for d in plan],
                              "runs": [r.to_json() for r in plan.runs],
                              "pruned": pruned.to_json()}
                          for p, (plan, gone, pruned) in artifacts.items()}}, indent=2))
        return 0
    print(f"{args.name} in {repo.root}:" + ("" if decisions else " no versions"))
    if decisions:
        print(retention.describe(decisions, args.apply))
    gone = [d for d in decisions if not d.keep]
    print(f"removed {len(removed)} version(s)" if args.apply else
          f"dry run: {len(gone)} version(s) would go; --apply removes them")
    for pipeline, (plan, done, pruned) in artifacts.items():
        doomed = [d for d in plan if not d.keep]
        size = sum(d.bytes for d in doomed) / 2**20
        print(f"{pipeline} artifacts under {config.pipeline_dir(pipeline)}: {len(plan)} live, "
              f"{len(doomed)} ({size:.1f} MiB) " + ("removed" if args.apply else "would go"))
        for d in doomed:
            print(f"  {'remove' if args.apply else 'would remove'} {d.type_name} {d.uri}: "
                  f"{d.why}")
        if plan.runs:
            print(f"{pipeline} runs in ML Metadata: {len(plan.runs)}, "
                  f"{pruned.describe(args.apply)}")
        for r in plan.runs:  # those that go, and the old ones that stay (and why)
            if r.run_id in pruned.runs:
                print(f"  {'delete' if args.apply else 'would delete'} the rows of run "
                      f"{r.run_id}: {r.why}")
            elif not r.why.startswith(("one of the newest", "younger than")):
                print(f"  keep run {r.run_id}: {r.why}")
    return 0


def compile_pipeline(args: argparse.Namespace) -> int:
    from pipelines.runs import kubeflow

    try:
        path = kubeflow.compile_pipeline(
            args.name, output=args.output, pipeline_root=args.pipeline_root,
            data_root=args.data_root, repository=args.repository, profile=args.profile,
            beam_args=args.beam_args, image=args.image or kubeflow.DEFAULT_IMAGE,
            model_dir=args.model_dir)
    except ValueError as e:
        print(f"python -m pipelines compile: error: {e}", file=sys.stderr)
        return outcomes.USAGE.exit_code
    print(f"wrote {path}")
    return 0


@contextlib.contextmanager
def _run_console(model: str, pipeline_name: str, config, command: str, verbose: bool):
    """The model's run lock, then the console of one run: its header, and everything but
    the progress lines sent to the run's log file (unless --verbose)."""
    from pipelines.runs import lock as run_lock
    from pipelines.runs.console import output_to_log

    pipeline_dir = config.pipeline_dir(pipeline_name)
    print(f"== {model}{'' if command == 'run' else ' ' + command}: pipeline root "
          f"{pipeline_dir}, repository {config.repository.absolute()}", flush=True)
    log_path = pipeline_dir / "logs" / time.strftime(f"{command}-%Y%m%d-%H%M%S.log")
    if not verbose:
        print(f"   log: {log_path}", flush=True)
    with run_lock.hold(config.pipeline_root, model, print):
        with contextlib.nullcontext(sys.stdout) if verbose else output_to_log(log_path) as out:
            yield out


def new_project(args: argparse.Namespace) -> int:
    from pipelines.models import scaffold

    try:
        files = scaffold.create(args.name, args.template, args.out)
    except (scaffold.ProjectError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return outcomes.FAILED.exit_code
    out = args.out.absolute()
    print(f"wrote model project {args.name} ({args.template}) to {out}:")
    for path in files:
        print(f"  {path.name}")
    print(f"Next: python -m pipelines run {args.name} --model-dir {out} (or set "
          f"{MODEL_DIR_VARIABLE}={out}); {out / 'README.md'} walks through the rest")
    return 0


COMMANDS = {"run": run, "retrain": retrain, "schedule": schedule, "make-spans": make_spans,
            "history": show_history, "compile": compile_pipeline, "gc": collect_garbage,
            "new": new_project}


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    if args.command == "list":
        known = sorted(args.known_models)
        print(json.dumps(known) if args.json else "\n".join(known))
        return 0
    if not getattr(args, "verbose", False):
        # Before TensorFlow is imported. A run's output goes to its log file; the other
        # commands print straight to the console, where even TF's start-up "errors"
        # (missing CUDA plugins) are noise.
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL",
                              "2" if args.command in ("run", "retrain") else "3")
        warnings.filterwarnings("ignore")
    if args.command in ("run", "retrain"):
        interrupts.install()
    return COMMANDS[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
