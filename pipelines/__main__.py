"""`python -m pipelines run NAME`: run a pipeline locally and print what it pushed.

Exit codes (for scripts and cron):
  0  every pipeline pushed a model (or reused the version a cached run pushed)
  1  error: bad input data, unwritable repository, a component failed
  2  usage error
  3  finished, but a model was not blessed by the Evaluator, so nothing was pushed
  4  pushed, but the model server that `python -m serving up` started did not make the
     new version AVAILABLE (its error is printed)
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time
import traceback
import warnings
from pathlib import Path
from typing import List, Optional

EXIT_PUSHED, EXIT_ERROR, EXIT_USAGE, EXIT_NOT_BLESSED, EXIT_NOT_SERVED = 0, 1, 2, 3, 4


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    from pipelines.registry import PIPELINES

    parser = argparse.ArgumentParser(
        prog="python -m pipelines",
        description=__doc__.split("\n\n")[0],
        epilog=__doc__.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("list", help="list the pipelines")
    run = commands.add_parser(
        "run", help="run one or more pipelines",
        usage="python -m pipelines run NAME [NAME ...] [options] [-- BEAM_ARGS ...]",
        description="Train, evaluate and push. Arguments after `--` go to Beam, e.g. "
                    "`-- --runner=FlinkRunner --flink_master=host:8081`.")
    run.add_argument("names", nargs="+", metavar="NAME", choices=sorted(PIPELINES),
                     help=f"pipeline to run: {', '.join(sorted(PIPELINES))}")
    run.add_argument("--repository", type=Path, default=Path("model_repository"),
                     help="model repository root; versions go to REPOSITORY/<model>/<version> "
                          "(default: %(default)s)")
    run.add_argument("--pipeline-root", type=Path, default=Path("tfx_runs"),
                     help="artifacts and ML Metadata (SQLite) go here (default: %(default)s)")
    run.add_argument("--data-dir", type=Path, default=None,
                     help="use your own input data instead of the pipeline's data source "
                          "(half_plus_two: x,y CSV files; mnist: mnist.npz or the CSV pair, "
                          "or train/ and eval/ directories of tf.Example TFRecords)")
    run.add_argument("--cache-dir", type=Path, default=Path(".cache"),
                     help="downloaded and converted data sets (default: %(default)s)")
    run.add_argument("--profile", default="default", choices=["default", "fast"],
                     help="sizes: 'fast' is a small, quick configuration for tests")
    run.add_argument("--no-cache", dest="enable_cache", action="store_false",
                     help="re-run every component instead of reusing cached results")
    run.add_argument("--serving-state-dir", type=Path, default=Path(".cache/serving"),
                     help="where `python -m serving up` records the running server; when one "
                          "is up, wait for each pushed version and print a sample prediction "
                          "(default: %(default)s)")
    run.add_argument("--serving-timeout", type=float, default=300.0,
                     help="seconds to wait for a pushed version to become AVAILABLE")
    run.add_argument("-v", "--verbose", action="store_true", help="show TFX's own log")
    argv = list(sys.argv[1:] if argv is None else argv)
    beam_args: List[str] = []
    if "--" in argv:
        split = argv.index("--")
        argv, beam_args = argv[:split], argv[split + 1:]
    args = parser.parse_args(argv)
    args.beam_args = tuple(beam_args)
    return args


def run(args: argparse.Namespace) -> int:
    from components.half_plus_two_data import DataError
    from components.mnist_data import MnistDataError
    from pipelines import local_runner, registry
    from pipelines.config import RunConfig
    from serving.repository import ModelRepository, RepositoryError

    expected_errors = (DataError, MnistDataError, RepositoryError, local_runner.PipelineFailed)

    config = RunConfig(pipeline_root=args.pipeline_root, repository=args.repository,
                       data_dir=args.data_dir, cache_dir=args.cache_dir,
                       beam_args=args.beam_args,
                       enable_cache=args.enable_cache, profile=args.profile)
    codes = []
    for name in args.names:
        print(f"== {name}: pipeline root {config.pipeline_dir(name)}, "
              f"repository {config.repository.absolute()}", flush=True)
        log_path = config.pipeline_dir(name) / "logs" / time.strftime("run-%Y%m%d-%H%M%S.log")
        if not args.verbose:
            print(f"   log: {log_path}", flush=True)
        try:
            with _console(log_path, args.verbose) as console:
                module = registry.get(name)  # imports TensorFlow: its noise goes to the log
                repository = ModelRepository(config.repository)
                repository.check_writable(module.MODEL_NAME)  # before any data or training
                pipeline = module.build(config, log=lambda line: print(line, file=console))
                result = local_runner.run_pipeline(
                    pipeline, model_name=module.MODEL_NAME, repository=repository,
                    metadata_path=config.metadata_path(name), out=console)
        except Exception as e:  # every failure is reported, then exit 1
            print(f"error: {name}: {e}", file=sys.stderr)
            if not isinstance(e, expected_errors):
                traceback.print_exc()
            print(f"{name}: NOT pushed (run failed; the repository is unchanged)", flush=True)
            codes.append(EXIT_ERROR)
            continue
        print(local_runner.format_summary(result, module.gates(config)), flush=True)
        if not result.pushed:
            codes.append(EXIT_NOT_BLESSED)
        else:
            codes.append(check_served(module.MODEL_NAME, result.version, args))
    for code in (EXIT_ERROR, EXIT_NOT_SERVED, EXIT_NOT_BLESSED):
        if code in codes:
            return code
    return EXIT_PUSHED


def check_served(model: str, version: int, args: argparse.Namespace) -> int:
    """When a server is up, prove the pushed version is served: the serving module's job."""
    from serving import lifecycle

    try:
        served = lifecycle.verify_pushed(model, version, timeout=args.serving_timeout,
                                         state_dir=args.serving_state_dir)
    except lifecycle.LifecycleError as e:
        print(f"error: {model} version {version} was pushed but is not served: {e}",
              file=sys.stderr)
        return EXIT_NOT_SERVED
    if served is None:
        print("  serving: no server is up (start one with `make serve`)")
        return EXIT_PUSHED
    _, prediction = served
    sample = json.dumps(prediction)
    print(f"  serving: version {version} is AVAILABLE; sample prediction: "
          f"{sample if len(sample) <= 200 else sample[:200] + '...'}", flush=True)
    return EXIT_PUSHED


def _console(log_path: Path, verbose: bool):
    from pipelines.console import output_to_log

    return contextlib.nullcontext(sys.stdout) if verbose else output_to_log(log_path)


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    if args.command == "list":
        from pipelines.registry import PIPELINES
        print("\n".join(sorted(PIPELINES)))
        return 0
    if not args.verbose:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # before TensorFlow is imported
        warnings.filterwarnings("ignore")
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
