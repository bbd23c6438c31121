"""`python -m serving`: start, check, roll back and stop the model server over the repository.

Flags are parsed here and only here; they become an UpConfig (or plain arguments) for
serving.lifecycle. Exit codes: serving/lifecycle/errors.py's EXIT_CODES, also in --help.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

from serving import cli, defaults


ROLLOUT_NOTE = ("The rollout record lives with the repository "
                "(<repository>/<model>/.rollout.json), so every server of it and every run "
                "sees the same stable version; see docs/rollouts.md.")


def build_parser() -> argparse.ArgumentParser:
    """The parser of `python -m serving` and all its commands (what --help shows)."""
    from serving.lifecycle.config import DEFAULT_IMAGE, STANDIN_IMAGE
    from serving.lifecycle.errors import EXIT_CODES

    epilog = cli.exit_codes_help(EXIT_CODES)
    common = cli.options_group()
    cli.add_state_dir(common, "where `up` records its server, so later commands (and "
                              "`python -m pipelines run`) find it")
    common.add_argument("-q", "--quiet", action="store_true", help="log warnings only")

    p = cli.Parser(
        prog="python -m serving", epilog=epilog + "\n\n" + cli.environment_help(
            (defaults.REPOSITORY, defaults.STATE_DIR)),
        description="Serve the model repository with TF Serving (docker) or the embedded "
                    "server (process), and prove each pushed version is served.")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    up = sub.add_parser("up", parents=[common], epilog=epilog,
                        help="start serving models from the repository",
                        description="Start serving the models from the repository (made "
                                    "when missing) and wait until each model's latest version "
                                    "is AVAILABLE. A model with no version yet is reported as "
                                    "waiting and served once its first version is pushed, as "
                                    "TF Serving does. A version trained with a non-default "
                                    "profile (fast, notebook) is served with a warning. Extra "
                                    "tensorflow_model_server flags go after `--` and are "
                                    "appended to the server's command.")
    cli.add_repository(up, "the model repository to serve")
    cli.add_model(up, many=True, required=True,
                  text="a model to serve; repeat it or separate names with commas: several "
                       "share one server through a generated models.config")
    cli.refuse_renamed(up, "--models", "--model")
    up.add_argument("--backend", choices=("docker", "process", "swarm", "auto"), default="auto",
                    help="auto: docker when the daemon answers and the image is present, "
                         "else process; swarm: a Docker Swarm service of --replicas "
                         "replicas behind HAProxy (docs/fleet.md)")
    up.add_argument("--replicas", type=cli.positive_int, default=1, metavar="N",
                    help="swarm: how many replicas")
    up.add_argument("--memory-limit", type=cli.positive_int, default=2048, metavar="MB",
                    help="swarm: each replica's memory limit")
    up.add_argument("--image", default=DEFAULT_IMAGE,
                    help=f"docker image (default: %(default)s; the stand-in built by "
                         f"`make serving-image` is {STANDIN_IMAGE})")
    up.add_argument("--grpc-port", type=cli.port, default=8500, metavar="PORT",
                    help="0: an ephemeral port")
    up.add_argument("--rest-port", type=cli.port, default=8501, metavar="PORT",
                    help="0: an ephemeral port")
    up.add_argument("--file-system-poll-seconds", type=cli.seconds, default=1.0,
                    metavar="SECONDS", help="how often the server looks for new versions")
    up.add_argument("--config-poll-seconds", type=cli.seconds, default=5.0, metavar="SECONDS",
                    help="how often the server re-reads the generated models.config")
    cli.add_timeout(up, 300.0, "how long to wait for each model's latest version to be "
                               "AVAILABLE; 0: return once the server is started (once it "
                               "listens, when a model is waiting for its first version)")
    cli.refuse_renamed(up, "--wait-seconds", "--timeout")
    up.add_argument("--docker-url", default=None, metavar="URL",
                    help="Docker daemon URL (default: the SDK's, from DOCKER_HOST or the socket)")
    cli.add_json(up, "print the recorded state as JSON")

    st = sub.add_parser("status", parents=[common], epilog=epilog,
                        help="versions, states and addresses; exit 1 when unhealthy",
                        description="What the recorded server serves: per model the expected "
                                    "version, every version's state, and where it came from "
                                    "(lineage). Healthy = the expected version is AVAILABLE, "
                                    "or the model is waiting for its first version.")
    cli.add_json(st)

    wt = sub.add_parser("wait", parents=[common], epilog=epilog,
                        help="block until a version is AVAILABLE",
                        description="Block until a version of a model is AVAILABLE on the "
                                    "recorded server; fail at once when it fails to load.")
    cli.add_model(wt, many=False, required=True)
    wt.add_argument("--version", type=cli.non_negative_int, default=None, metavar="N",
                    help="default: the stable version (the rollout record's)")
    cli.add_timeout(wt, 300.0, "how long to wait for the version to be AVAILABLE")

    sc = sub.add_parser("scale", parents=[common], epilog=epilog,
                        help="run N replicas of a swarm fleet",
                        description="Scale the recorded swarm fleet to N replicas and wait "
                                    "until each one serves every model's stable version (a new "
                                    "replica reads the shared models.config, so it starts in "
                                    "the current state).")
    sc.add_argument("--replicas", type=cli.positive_int, required=True, metavar="N",
                    help="how many replicas")
    cli.add_timeout(sc, 300.0, "how long to wait for the replicas")

    mf = sub.add_parser("manifests", parents=[common], epilog=epilog,
                        help="render Kubernetes manifests of the served state",
                        description="Render a Deployment (readiness on the stable label, "
                                    "liveness, resources, rolling updates), a Service and a "
                                    "ConfigMap with the models.config rendered from the rollout "
                                    "records, one YAML file each plus a kustomization.yaml. "
                                    "Rendered and checked here, not run (no Kubernetes API "
                                    "server here): see docs/kubernetes.md.")
    mf.add_argument("--target", choices=("kubernetes",), default="kubernetes",
                    help="the platform")
    cli.add_repository(mf, "the model repository whose rollout records are rendered")
    cli.add_model(mf, many=True, required=True,
                  text="a model to serve; repeat it or separate names with commas (the "
                       "first one's stable label is the readiness probe)")
    mf.add_argument("--replicas", type=cli.positive_int, default=3, metavar="N",
                    help="the Deployment's replicas")
    mf.add_argument("--output", type=cli.dir_path, required=True, metavar="DIR",
                    help="where to write the YAML files (made when missing)")
    mf.add_argument("--image", default=DEFAULT_IMAGE, help="the serving image")
    mf.add_argument("--repository-claim", default="model-repository", metavar="NAME",
                    help="the PersistentVolumeClaim holding the repository (ReadOnlyMany)")
    mf.add_argument("--name", default="tfx-serving", metavar="NAME",
                    help="the objects' name prefix and app label")
    mf.add_argument("--memory-limit", type=cli.positive_int, default=2048, metavar="MB",
                    help="each pod's memory request and limit")
    mf.add_argument("--cpu", default="1", metavar="CPU", help="each pod's CPU request and limit")

    lg = sub.add_parser("logs", parents=[common], epilog=epilog, help="the server's log",
                        description="Print the recorded server's log (the container's, or "
                                    "the process's log file).")
    lg.add_argument("--tail", type=cli.non_negative_int, default=None, metavar="N",
                    help="the last N lines only (default: all)")

    dn = sub.add_parser("down", parents=[common], epilog=epilog,
                        help="stop and remove the server `up` started (never anything else)",
                        description="Stop the server recorded in --state-dir (and any "
                                    "container left labelled with it), remove it, and forget "
                                    "it. Nothing running is not an error.")
    cli.add_timeout(dn, 30.0, "how long to let the server drain before it is killed")

    def rollout_command(name: str, help_text: str, description: str) -> cli.Parser:
        command = sub.add_parser(name, parents=[common], epilog=epilog, help=help_text,
                                 description=description + " " + ROLLOUT_NOTE)
        command.add_argument("--repository", type=cli.dir_path, default=None, metavar="DIR",
                             help="the model repository (default: the one the server "
                                  "recorded in --state-dir serves the model from, running or "
                                  "not; with none recorded, "
                                  f"${defaults.REPOSITORY.variable} or "
                                  f"{defaults.repository()})")
        cli.add_model(command, many=False, required=True)
        return command

    pm = rollout_command("promote", "make version N stable (loaded first, then labelled)",
                         "Make version N of a model stable: a candidate is moved into the "
                         "published versions; on the running server N is loaded, then the "
                         "`stable` label moves to it, then the old versions unload; the "
                         "answer of labels/stable is checked. The old stable becomes "
                         "previous. An operator's promote works while the model is held, "
                         "and the hold stays.")
    pm.add_argument("--version", type=cli.positive_int, required=True, metavar="N",
                    help="a published or candidate version")
    cli.add_timeout(pm, 120.0, "how long to wait for N to load and the label to answer")
    cli.add_json(pm, "print the rollout record as JSON")

    rb = rollout_command("rollback", "stable goes back to previous (a label move)",
                         "Stable goes back to the previous stable version (or to --to N, a "
                         "version that was stable before): a label move on the running server, "
                         "no restart; the previous stable is kept loaded for this. Each "
                         "plain rollback goes back one more step; for a command that may be "
                         "retried, name the version: `--to N` when N is already stable "
                         "changes nothing and exits 0.")
    rb.add_argument("--to", type=cli.positive_int, default=None, metavar="N",
                    help="a version that was stable before (default: the previous stable)")
    cli.add_timeout(rb, 120.0, "how long to wait for the label to answer")
    cli.add_json(rb, "print the rollout record as JSON")

    hd = rollout_command("hold", "freeze what is served: runs publish candidates only",
                         "Freeze what is served: while held, no unattended run (run, retrain, "
                         "schedule, the notebook) changes stable or canary; each publishes a "
                         "candidate and says who held the model, when and why.")
    hd.add_argument("--reason", default="", metavar="TEXT", help="why (shown to every run)")
    cli.add_json(hd, "print the rollout record as JSON")

    rl = rollout_command("release", "lift a hold", "Lift an operator's hold: the next run "
                                                   "promotes again.")
    cli.add_json(rl, "print the rollout record as JSON")

    vs = rollout_command("versions", "the registry view: every version, its role and lineage",
                         "Every version of a model in the repository, published, candidate or "
                         "rejected, with its role (stable, canary, previous, candidate, "
                         "rejected, served before, never served), its lineage (run, spans, "
                         "metrics, gates, created), why a rejected one was rejected, and its "
                         "live state when a server is up. Needs no server.")
    cli.add_json(vs)

    pr = sub.add_parser("predict", parents=[common], epilog=epilog,
                        help="one sample REST prediction",
                        description="Send one REST predict request to the recorded server "
                                    "and print its JSON answer.")
    cli.add_model(pr, many=False, required=True)
    pr.add_argument("--instances", type=cli.json_list, default=None, metavar="JSON",
                    help="a JSON list (default: one instance of zeros shaped like the "
                         "model's serving_default inputs)")
    which = pr.add_mutually_exclusive_group()
    which.add_argument("--version", type=cli.non_negative_int, default=None, metavar="N",
                       help="default: the version the server picks (stable: the model's entry "
                            "loads stable, and previous only below it)")
    which.add_argument("--label", default=None, metavar="LABEL",
                       help="a version label: stable or previous (the canary: --model "
                            "NAME-canary --label canary); default: none, the server picks")
    return p


def split_extra(argv: Sequence[str]) -> Tuple[List[str], Tuple[str, ...]]:
    """`up ... -- --flag=value ...`: everything after the first `--` goes to the server."""
    argv = list(argv)
    if "--" in argv:
        i = argv.index("--")
        return argv[:i], tuple(argv[i + 1:])
    return argv, ()


def _configure_logging(quiet: bool) -> None:
    logging.basicConfig(level=logging.WARNING if quiet else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)


def _run(args, extra: Tuple[str, ...]) -> int:
    from serving import lifecycle
    from serving.lifecycle.config import UpConfig
    from serving.lifecycle.errors import EXIT_FAILED, EXIT_USAGE

    if args.command == "up":
        models = tuple(dict.fromkeys(args.model))  # in order, each once
        try:  # a configuration UpConfig or up() refuses is a usage error, found before a start
            config = UpConfig(repository=args.repository, models=models,
                              state_dir=args.state_dir, backend=args.backend, image=args.image,
                              grpc_port=args.grpc_port, rest_port=args.rest_port,
                              extra_args=extra, config_poll_seconds=args.config_poll_seconds,
                              file_system_poll_seconds=args.file_system_poll_seconds,
                              wait_seconds=args.timeout, docker_url=args.docker_url,
                              replicas=args.replicas, memory_limit_mb=args.memory_limit)
            state = lifecycle.up(config)
        except ValueError as e:
            print(f"python -m serving up: error: {e}", file=sys.stderr)
            return EXIT_USAGE
        if args.json:
            print(json.dumps(state.to_json(), indent=2))
        else:
            print(f"serving {','.join(state.models)} with the {state.backend} backend"
                  f"{' (' + state.image + ')' if state.image else ''}\n"
                  f"REST {state.addresses.rest_url}\ngRPC {state.addresses.grpc_target}")
        return 0
    if args.command == "status":
        try:
            report = lifecycle.status(args.state_dir)
        except lifecycle.NotRunning as e:
            if not args.json:
                raise
            print(json.dumps({"running": False, "recorded": False, "healthy": False,
                              "state_dir": str(Path(args.state_dir).absolute()),
                              "error": e.message, "next_step": e.next_step}, indent=2))
            return e.exit_code
        print(json.dumps({**report.to_json(), "recorded": True,
                          "state_dir": str(Path(args.state_dir).absolute())}, indent=2)
              if args.json else report.to_text())
        if not report.running:
            return 4
        return 0 if report.healthy else 1
    if args.command == "wait":
        st = lifecycle.wait_for_version(args.model, args.version, args.timeout, args.state_dir)
        print(f"{args.model}: AVAILABLE {st.available()}")
        return 0
    if args.command == "manifests":
        from serving.lifecycle import manifests

        models = tuple(dict.fromkeys(args.model))
        try:
            objects = manifests.render_for_repository(
                args.repository, models, replicas=args.replicas,
                repository_claim=args.repository_claim, image=args.image,
                memory_limit_mb=args.memory_limit, cpu=args.cpu, name=args.name)
        except ValueError as e:  # no stable version to render, a bad name or size
            print(f"python -m serving manifests: error: {e}", file=sys.stderr)
            return EXIT_FAILED
        for path in manifests.write(objects, args.output):
            print(path)
        return 0
    if args.command == "scale":
        state = lifecycle.scale(args.replicas, args.state_dir, args.timeout)
        print(f"{state.name}: {state.replicas} replica(s), each serving the stable versions")
        return 0
    if args.command == "logs":
        sys.stdout.write(lifecycle.logs(args.state_dir, args.tail))
        return 0
    if args.command == "down":
        was_running = lifecycle.down(args.state_dir, args.timeout)
        print("stopped and removed" if was_running else "nothing was running")
        return 0
    if args.command in ROLLOUT_COMMANDS:
        return _rollout(args)
    if args.command == "predict":
        print(json.dumps(lifecycle.sample_prediction(args.model, args.instances, args.state_dir,
                                                     args.version, args.label)))
        return 0
    raise AssertionError(args.command)


ROLLOUT_COMMANDS = ("promote", "rollback", "hold", "release", "versions")


def _rollout(args) -> int:
    from serving import lifecycle
    from serving.lifecycle import rollout

    repository = args.repository
    if repository is None:  # a server down in an incident is still the one the operator means
        repository = lifecycle.recorded_repository(args.model, args.state_dir) \
            or defaults.repository()
    if args.command == "versions":
        view = rollout.versions(args.model, repository, args.state_dir)
        print(json.dumps(view, indent=2) if args.json else rollout.versions_text(view))
        return 0
    if args.command == "promote":
        change = rollout.promote(args.model, args.version, repository, args.state_dir,
                                 args.timeout)
        record = change.record
        text = (f"{args.model}: version {record.stable} is stable"
                + (f" (labels on {change.server}: {change.verified})" if change.server
                   else " (no server is up: `up` serves it)")
                + (f"; previous {record.previous}" if record.previous else "")
                + (f"\nthe hold stays: {record.hold.describe()}" if record.hold else ""))
    elif args.command == "rollback":
        change = rollout.rollback(args.model, repository, args.to, args.state_dir, args.timeout)
        record = change.record
        text = (f"{args.model}: version {record.stable} is already stable; nothing changed"
                if not change.changed else
                f"{args.model}: rolled back to version {record.stable}"
                + (f" (labels on {change.server}: {change.verified})" if change.server
                   else " (no server is up: `up` serves it)"))
    elif args.command == "hold":
        record = rollout.hold(args.model, repository, args.reason)
        change = rollout.Change(args.model, record)
        text = f"{args.model}: {record.hold.describe()}; stable stays {record.stable}"
    else:
        record = rollout.release(args.model, repository)
        change = rollout.Change(args.model, record)
        text = f"{args.model}: released; the next run promotes again"
    print(json.dumps({**change.to_json(), "repository": str(Path(repository).absolute())},
                     indent=2) if args.json else f"{text}\nrepository: {repository}")
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    from serving.lifecycle.errors import EXIT_FAILED, LifecycleError
    from serving.repository import RepositoryError
    from serving.rollouts import RolloutError

    argv, extra = split_extra(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    if extra and args.command != "up":
        cli.subparser(parser, args.command).error(
            "extra server flags after `--` are for `up` only")
    _configure_logging(args.quiet)
    try:
        return _run(args, extra)
    except LifecycleError as e:
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code
    except (RolloutError, RepositoryError) as e:  # a damaged .rollout.json, a bad name...
        print(f"error: {e}", file=sys.stderr)
        return EXIT_FAILED
    except ValueError as e:  # an answer that is not what it should be (not JSON, ...)
        print(f"error: {e}", file=sys.stderr)
        return EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
