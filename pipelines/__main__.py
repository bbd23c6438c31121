"""`python -m pipelines`: run, retrain and schedule the pipelines; spans, history, compile.

Flags are parsed here and only here; they become a RunConfig / RetrainConfig that the
pipeline code reads. Exit codes are the table in pipelines/outcomes.py (also in --help).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import sys
import time
import traceback
import warnings
from pathlib import Path
from typing import List, Optional

from components.spans import SPAN_KINDS
from pipelines import interrupts, outcomes
from pipelines.interrupts import RunAbandoned

RUN_OUTCOMES = (outcomes.PUSHED, outcomes.ERROR, outcomes.USAGE, outcomes.NOT_BLESSED,
                outcomes.NOT_SERVED, outcomes.LOCKED)
RETRAIN_HELP = """Retrain on new data: DIR holds span-1/, span-2/, ... each with train/ and eval/
(TFRecords of tf.Example for mnist, CSV for half_plus_two). The newest span is ingested;
the model trains on the newest --window spans, warm-started from the latest blessed
model; it is pushed only after the data gates (schema, drift against the previous span),
the Evaluator's gates and, when Docker and a serving image are there, TFX's
InfraValidator; with a server up (`python -m serving up`), the new version is checked
through it and rolled back when it does not serve well. Arguments after `--` go to Beam."""
SCHEDULE_ONLY = {"--every": 1, "--max-runs": 1, "--on-stop": 1}


def _parser() -> argparse.ArgumentParser:
    from pipelines.registry import PIPELINES

    names = sorted(PIPELINES)
    paths = argparse.ArgumentParser(add_help=False)
    paths.add_argument("--repository", type=Path, default=Path("model_repository"),
                       help="model repository root; versions go to REPOSITORY/<model>/<version> "
                            "(default: %(default)s)")
    paths.add_argument("--pipeline-root", type=Path, default=Path("tfx_runs"),
                       help="artifacts and ML Metadata (SQLite) go here (default: %(default)s)")
    data = argparse.ArgumentParser(add_help=False)
    data.add_argument("--cache-dir", type=Path, default=Path(".cache"),
                      help="downloaded and converted data sets (default: %(default)s)")
    data.add_argument("--profile", default="default", choices=["default", "fast"],
                      help="sizes: 'fast' is a small, quick configuration for tests")
    execution = argparse.ArgumentParser(add_help=False)
    execution.add_argument("--no-cache", dest="enable_cache", action="store_false",
                           help="re-run every component instead of reusing cached results")
    execution.add_argument("--serving-state-dir", type=Path, default=Path(".cache/serving"),
                           help="where `python -m serving up` records the running server; "
                                "when one is up, each pushed version is checked through it "
                                "(default: %(default)s)")
    execution.add_argument("--serving-timeout", type=float, default=300.0,
                           help="seconds to wait for a pushed version to become AVAILABLE")
    execution.add_argument("-v", "--verbose", action="store_true", help="show TFX's own log")

    parser = argparse.ArgumentParser(
        prog="python -m pipelines", description=__doc__.split("\n\n")[0],
        epilog=outcomes.exit_codes_help(), formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    commands.add_parser("list", help="list the pipelines")

    run = commands.add_parser(
        "run", parents=[paths, data, execution], help="run one or more pipelines",
        usage="python -m pipelines run NAME [NAME ...] [options] [-- BEAM_ARGS ...]",
        description="Train, evaluate and push. Arguments after `--` go to Beam, e.g. "
                    "`-- --runner=FlinkRunner --flink_master=host:8081`.",
        epilog=outcomes.exit_codes_help(RUN_OUTCOMES),
        formatter_class=argparse.RawDescriptionHelpFormatter)
    run.add_argument("names", nargs="+", metavar="NAME", choices=names,
                     help=f"pipeline to run: {', '.join(names)}")
    run.add_argument("--data-dir", type=Path, default=None,
                     help="use your own input data instead of the pipeline's data source "
                          "(half_plus_two: x,y CSV files; mnist: mnist.npz or the CSV pair, "
                          "or train/ and eval/ directories of tf.Example TFRecords)")

    retrain = commands.add_parser(
        "retrain", parents=[paths, data, execution], help="retrain on the newest span of new data",
        usage="python -m pipelines retrain NAME --data DIR [options] [-- BEAM_ARGS ...]",
        description=RETRAIN_HELP, epilog=outcomes.exit_codes_help(),
        formatter_class=argparse.RawDescriptionHelpFormatter)
    _retrain_arguments(retrain, names)

    schedule = commands.add_parser(
        "schedule", parents=[paths, data, execution],
        help="retrain every interval, one run at a time, until SIGTERM",
        usage="python -m pipelines schedule NAME --data DIR --every 6h [retrain options]",
        description="A long-running loop for machines without cron: runs `retrain` with the "
                    "same options every interval (from the start of the previous run); a "
                    "failed run does not stop it. SIGTERM/SIGINT stop it, abandoning the "
                    "current run cleanly (or letting it finish: --on-stop finish). Exits 0 "
                    "once stopped.",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    _retrain_arguments(schedule, names)
    schedule.add_argument("--every", required=True,
                          help="interval between runs: 90s, 15m, 6h, 1d")
    schedule.add_argument("--max-runs", type=int, default=None,
                          help="stop after this many runs (default: never)")
    schedule.add_argument("--on-stop", choices=["abandon", "finish"], default="abandon",
                          help="on SIGTERM: abandon the current run cleanly, or let it "
                               "finish (default: %(default)s)")

    spans = commands.add_parser(
        "make-spans", parents=[data], help="write a data set as spans, to try retraining",
        description="Write spans span-N/{train,eval}/ of the pipeline's own data (MNIST from "
                    "the verified loader; generated rows for half_plus_two), numbered after "
                    "the spans already in --out. --kind corrupted / label-shift write a span "
                    "that the schema gate / the drift gate stop.")
    spans.add_argument("name", metavar="NAME", choices=names, help=", ".join(names))
    spans.add_argument("--out", type=Path, required=True, help="the spans directory")
    spans.add_argument("--spans", type=int, default=1, help="how many spans (default 1)")
    spans.add_argument("--start", type=int, default=None,
                       help="number of the first span (default: after the last one in --out)")
    spans.add_argument("--kind", default="clean", choices=SPAN_KINDS,
                       help="clean (default), corrupted (schema anomalies) or label-shift "
                            "(a drifted distribution)")
    spans.add_argument("--data-dir", type=Path, default=None,
                       help="mnist: your own mnist.npz or CSV pair (as for `run`)")

    hist = commands.add_parser(
        "history", parents=[paths], help="past runs of a model, from ML Metadata",
        description="Every run of the model's pipelines (`run`, `retrain`, notebook experiments) under the "
                    "pipeline root: start time, spans, metrics, blessed, pushed version, outcome.")
    hist.add_argument("name", metavar="NAME", choices=names, help=", ".join(names))
    hist.add_argument("--json", action="store_true", help="machine-readable output")

    comp = commands.add_parser(
        "compile", help="write the pipeline for another orchestrator",
        description="Compile the pipeline (as `run` builds it) for Kubeflow Pipelines v2 / "
                    "Vertex AI Pipelines with TFX's KubeflowV2DagRunner. Paths are the "
                    "orchestrator's (e.g. gs://...); nothing is read or downloaded here.")
    comp.add_argument("name", metavar="NAME", choices=names, help=", ".join(names))
    comp.add_argument("--target", choices=["kubeflow-v2"], default="kubeflow-v2")
    comp.add_argument("--output", type=Path, required=True, help="the pipeline spec (JSON)")
    comp.add_argument("--image", default=None,
                      help="container image every component runs in (default: "
                           "tfx-serving-toolkit/pipeline:latest, built from pipelines/image/)")
    comp.add_argument("--pipeline-root", required=True,
                      help="artifacts root the workers write, e.g. gs://bucket/tfx")
    comp.add_argument("--data-root", required=True,
                      help="the input data the workers read, e.g. gs://bucket/mnist "
                           "(train/ and eval/ TFRecords for mnist, x,y CSVs for half_plus_two)")
    comp.add_argument("--repository", required=True,
                      help="the model repository as an absolute path inside the workers "
                           "(a mounted volume): publishing renames directories")
    comp.add_argument("--profile", default="default", choices=["default", "fast"])
    return parser


def _retrain_arguments(parser: argparse.ArgumentParser, names: List[str]) -> None:
    parser.add_argument("name", metavar="NAME", choices=names, help=", ".join(names))
    parser.add_argument("--data", type=Path, required=True,
                        help="directory of spans: span-1/, span-2/, ... with train/ and eval/")
    parser.add_argument("--window", type=int, default=3,
                        help="train on the newest K spans (default: %(default)s)")
    parser.add_argument("--accept-drift", action="store_true",
                        help="let a span through that the drift gate would stop")
    parser.add_argument("--infra-validation", choices=["auto", "require", "off"], default="auto",
                        help="TFX InfraValidator before the push: auto runs it when a Docker "
                             "Engine and the serving image are there (default: %(default)s)")
    parser.add_argument("--serving-image", default=None,
                        help="image InfraValidator loads the model in (default: the running "
                             "server's, else tensorflow/serving:2.16.1 when present, else "
                             "the stand-in from `make serving-image`)")
    parser.add_argument("--trainer-module", type=Path, default=None,
                        help="another Trainer module file (TFX's module_file) to train with")
    parser.add_argument("--smoke-examples", type=int, default=200,
                        help="eval examples sent through the running server after a push "
                             "(default: %(default)s)")


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    argv = list(sys.argv[1:] if argv is None else argv)
    beam_args: List[str] = []
    if "--" in argv:
        split = argv.index("--")
        argv, beam_args = argv[:split], argv[split + 1:]
    args = _parser().parse_args(argv)
    args.beam_args = tuple(beam_args)
    args.raw_argv = argv + (["--", *beam_args] if beam_args else [])
    return args


def _run_config(args, data_dir):
    from pipelines.config import RunConfig

    return RunConfig(pipeline_root=args.pipeline_root, repository=args.repository,
                     data_dir=data_dir, cache_dir=args.cache_dir, beam_args=args.beam_args,
                     enable_cache=args.enable_cache, profile=args.profile)


def run(args: argparse.Namespace) -> int:
    from components.half_plus_two_data import DataError
    from components.mnist_data import MnistDataError
    from pipelines import history, local_runner, provenance, registry, run_lock
    from serving.repository import ModelRepository, RepositoryError

    expected_errors = (DataError, MnistDataError, RepositoryError, local_runner.PipelineFailed,
                       run_lock.Locked)
    config = _run_config(args, args.data_dir)
    commit, dirty = provenance.git_state()
    codes = []
    for name in args.names:
        try:
            with _run_console(name, name, config, "run", args.verbose) as console:
                module = registry.get(name)  # imports TensorFlow: its noise goes to the log
                repository = ModelRepository(config.repository)
                repository.check_writable(module.MODEL_NAME)  # before any data or training
                lineage = {"pipeline": name, "gates": module.gates(config),
                           "git_commit": commit, "git_dirty": dirty}
                pipeline = module.build(config, log=lambda line: print(line, file=console),
                                        lineage=lineage)
                metadata_path = config.metadata_path(name)
                try:
                    result = local_runner.run_pipeline(
                        pipeline, model_name=module.MODEL_NAME, repository=repository,
                        metadata_path=metadata_path, out=console)
                except local_runner.PipelineFailed as e:
                    history.record_run(metadata_path, e.run_id, outcomes.ERROR, str(e.cause))
                    raise
                outcome = outcomes.PUSHED if result.pushed else outcomes.NOT_BLESSED
                history.record_run(metadata_path, result.run_id, outcome,
                                   "; ".join(result.validation_failures), result)
        except RunAbandoned:
            print(f"{name}: run abandoned (nothing was pushed; the repository is unchanged)",
                  flush=True)
            return outcomes.ABANDONED.exit_code
        except Exception as e:  # every failure is reported, then the next pipeline runs
            print(f"error: {name}: {e}", file=sys.stderr)
            if not isinstance(e, expected_errors):
                traceback.print_exc()
            print(f"{name}: NOT pushed (run failed; the repository is unchanged)", flush=True)
            codes.append(outcomes.LOCKED.exit_code if isinstance(e, run_lock.Locked)
                         else outcomes.ERROR.exit_code)
            continue
        print(local_runner.format_summary(result, module.gates(config)), flush=True)
        if not result.pushed:
            codes.append(outcomes.NOT_BLESSED.exit_code)
        else:
            codes.append(check_served(module.MODEL_NAME, result.version, args))
    return outcomes.worst(codes)


def check_served(model: str, version: int, args: argparse.Namespace) -> int:
    """When a server is up, prove the pushed version is served: the serving module's job."""
    from serving import lifecycle

    try:
        served = lifecycle.verify_pushed(model, version, timeout=args.serving_timeout,
                                         state_dir=args.serving_state_dir)
    except lifecycle.LifecycleError as e:
        print(f"error: {model} version {version} was pushed but is not served: {e}",
              file=sys.stderr)
        return outcomes.NOT_SERVED.exit_code
    if served is None:
        print("  serving: no server is up (start one with `make serve`)")
        return outcomes.PUSHED.exit_code
    _, prediction = served
    sample = json.dumps(prediction)
    print(f"  serving: version {version} is AVAILABLE; sample prediction: "
          f"{sample if len(sample) <= 200 else sample[:200] + '...'}", flush=True)
    return outcomes.PUSHED.exit_code


def retrain(args: argparse.Namespace) -> int:
    from components.spans import SpanError
    from pipelines import local_runner, run_lock
    from pipelines.config import RetrainConfig
    from serving.repository import RepositoryError

    try:
        config = RetrainConfig(
            run=_run_config(args, args.data), window=args.window,
            accept_drift=args.accept_drift, infra_validation=args.infra_validation,
            serving_image=args.serving_image,
            trainer_module=str(args.trainer_module.absolute()) if args.trainer_module else None,
            serving_state_dir=args.serving_state_dir, serving_timeout=args.serving_timeout,
            smoke_examples=args.smoke_examples)
    except ValueError as e:
        print(f"python -m pipelines retrain: error: {e}", file=sys.stderr)
        return outcomes.USAGE.exit_code
    name = args.name
    try:
        with _run_console(name, config.pipeline_name(name), config.run, "retrain",
                          args.verbose) as console:
            from pipelines import retrain as retraining_run  # TensorFlow: its noise to the log

            report = retraining_run.retrain(
                name, config, console, lambda line: print(line, file=console, flush=True))
    except run_lock.Locked as e:
        print(f"error: {name}: {e}", file=sys.stderr)
        return outcomes.LOCKED.exit_code
    except RunAbandoned:
        print(f"{name}: run abandoned (nothing was pushed; the repository is unchanged)",
              flush=True)
        return outcomes.ABANDONED.exit_code
    except (SpanError, RepositoryError, local_runner.PipelineFailed, RuntimeError) as e:
        print(f"error: {name}: {e}", file=sys.stderr)
        print(f"{name}: NOT pushed (run failed; the repository is unchanged)", flush=True)
        return outcomes.ERROR.exit_code
    if report.message:
        print(report.message, file=sys.stderr if report.outcome.exit_code else sys.stdout,
              flush=True)
    if interrupts.pending():
        print(f"{name}: {interrupts.pending()} arrived after the push; the run finished its "
              f"post-push check first", flush=True)
    print(f"{name}: {report.outcome.name} (exit {report.outcome.exit_code})", flush=True)
    return report.outcome.exit_code


def schedule(args: argparse.Namespace) -> int:
    from pipelines.schedule import Scheduler, parse_interval, retrain_command

    try:
        every = parse_interval(args.every)
    except ValueError as e:
        print(f"python -m pipelines schedule: error: --every: {e}", file=sys.stderr)
        return outcomes.USAGE.exit_code
    argv = args.raw_argv[args.raw_argv.index("schedule") + 1:]
    scheduler = Scheduler(retrain_command(argv, SCHEDULE_ONLY), every, args.max_runs,
                          finish_on_stop=args.on_stop == "finish",
                          log=lambda line: print(line, flush=True))
    signal.signal(signal.SIGTERM, scheduler.stop)
    signal.signal(signal.SIGINT, scheduler.stop)
    return scheduler.run()


def make_spans(args: argparse.Namespace) -> int:
    from components import spans
    from pipelines import registry
    from pipelines.config import RunConfig

    if args.spans < 1 or (args.start is not None and args.start < 1):
        print("python -m pipelines make-spans: error: --spans and --start must be at least 1",
              file=sys.stderr)
        return outcomes.USAGE.exit_code
    start = args.start
    if start is None:
        start = max(spans.existing_spans(args.out), default=0) + 1
    numbers = list(range(start, start + args.spans))
    config = RunConfig(cache_dir=args.cache_dir, profile=args.profile, data_dir=args.data_dir)
    try:
        written = registry.get(args.name).write_spans(config, args.out, numbers, args.kind)
    except Exception as e:  # bad --out, data that cannot be loaded, an existing span
        print(f"error: {args.name}: {e}", file=sys.stderr)
        return outcomes.ERROR.exit_code
    for path in written:
        print(f"{path} ({args.kind})")
    return 0


def show_history(args: argparse.Namespace) -> int:
    from pipelines import history
    from pipelines.config import RunConfig

    config = RunConfig(pipeline_root=args.pipeline_root, repository=args.repository)
    records = history.runs(config, args.name)
    if args.json:
        print(json.dumps([r.to_json() for r in records], indent=2))
    elif not records:
        print(f"no runs of {args.name} under {config.pipeline_root.absolute()}")
    else:
        print(history.format_table(records, args.repository, args.name))
    return 0


def compile_pipeline(args: argparse.Namespace) -> int:
    from pipelines import kubeflow

    try:
        path = kubeflow.compile_pipeline(
            args.name, output=args.output, pipeline_root=args.pipeline_root,
            data_root=args.data_root, repository=args.repository, profile=args.profile,
            beam_args=args.beam_args, image=args.image or kubeflow.DEFAULT_IMAGE)
    except ValueError as e:
        print(f"python -m pipelines compile: error: {e}", file=sys.stderr)
        return outcomes.USAGE.exit_code
    print(f"wrote {path}")
    return 0


@contextlib.contextmanager
def _run_console(model: str, pipeline_name: str, config, command: str, verbose: bool):
    """The model's run lock, then the console of one run: its header, and everything but
    the progress lines sent to the run's log file (unless --verbose)."""
    from pipelines import run_lock
    from pipelines.console import output_to_log

    pipeline_dir = config.pipeline_dir(pipeline_name)
    print(f"== {model}{'' if command == 'run' else ' ' + command}: pipeline root "
          f"{pipeline_dir}, repository {config.repository.absolute()}", flush=True)
    log_path = pipeline_dir / "logs" / time.strftime(f"{command}-%Y%m%d-%H%M%S.log")
    if not verbose:
        print(f"   log: {log_path}", flush=True)
    with run_lock.hold(config.pipeline_root, model, print):
        with contextlib.nullcontext(sys.stdout) if verbose else output_to_log(log_path) as out:
            yield out


COMMANDS = {"run": run, "retrain": retrain, "schedule": schedule, "make-spans": make_spans,
            "history": show_history, "compile": compile_pipeline}


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    if args.command == "list":
        from pipelines.registry import PIPELINES
        print("\n".join(sorted(PIPELINES)))
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
