"""`python -m serving`: start, check, roll back and stop the model server over the repository.

Flags are parsed here and only here; they become an UpConfig (or plain arguments) for
serving.lifecycle. Exit codes are listed in EXIT_CODES and in --help.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

EXIT_CODES = """exit codes:
  0  done (status: every model healthy)
  1  the operation failed: version failed to load, timeout, rollback not verified,
     the server exited (up removes it), status: a model is not healthy
  2  bad command line
  3  environment not ready: port taken, Docker daemon not answering, image missing,
     repository missing (the message says the next step)
  4  no server recorded for this --state-dir (status: the recorded one stopped)"""


def _parser() -> argparse.ArgumentParser:
    from serving.lifecycle.config import DEFAULT_IMAGE, DEFAULT_STATE_DIR, STANDIN_IMAGE

    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--state-dir", type=Path, default=DEFAULT_STATE_DIR,
                        help="where `up` records its server, so later commands find it "
                             "(default %(default)s)")
    common.add_argument("-q", "--quiet", action="store_true", help="log warnings only")

    p = argparse.ArgumentParser(
        prog="python -m serving", epilog=EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Serve the model repository with TF Serving (docker) or the embedded "
                    "server (process), and prove each pushed version is served.")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    up = sub.add_parser("up", parents=[common], epilog=EXIT_CODES,
                        formatter_class=argparse.RawDescriptionHelpFormatter,
                        help="start serving models from the repository",
                        description="Start serving. Extra tensorflow_model_server flags go "
                                    "after `--` and are appended to the server's command.")
    up.add_argument("--repository", type=Path, required=True, help="the model repository")
    up.add_argument("--models", required=True,
                    help="comma-separated model names; several share one server through "
                         "a generated models.config")
    up.add_argument("--backend", choices=("docker", "process", "auto"), default="auto",
                    help="auto: docker when the daemon answers and the image is present, "
                         "else process (default %(default)s)")
    up.add_argument("--image", default=DEFAULT_IMAGE,
                    help=f"docker image (default %(default)s; the stand-in built by "
                         f"`make serving-image` is {STANDIN_IMAGE})")
    up.add_argument("--grpc-port", type=int, default=8500, help="0: ephemeral (default 8500)")
    up.add_argument("--rest-port", type=int, default=8501, help="0: ephemeral (default 8501)")
    up.add_argument("--file-system-poll-seconds", type=float, default=1.0,
                    help="how often the server looks for new versions (default 1)")
    up.add_argument("--config-poll-seconds", type=float, default=5.0,
                    help="how often the server re-reads the generated models.config "
                         "(default 5)")
    up.add_argument("--wait-seconds", type=float, default=300.0,
                    help="wait this long for each model's latest version to be AVAILABLE; "
                         "0: return at once (default 300)")
    up.add_argument("--docker-url", default=None,
                    help="Docker daemon URL (default: the SDK's, from DOCKER_HOST or the socket)")
    up.add_argument("--json", action="store_true", help="print the recorded state as JSON")

    st = sub.add_parser("status", parents=[common], epilog=EXIT_CODES,
                        formatter_class=argparse.RawDescriptionHelpFormatter,
                        help="versions, states and addresses; exit 1 when unhealthy")
    st.add_argument("--json", action="store_true", help="machine-readable output")

    wt = sub.add_parser("wait", parents=[common], epilog=EXIT_CODES,
                        formatter_class=argparse.RawDescriptionHelpFormatter,
                        help="block until a version is AVAILABLE")
    wt.add_argument("--model", required=True)
    wt.add_argument("--version", type=int, default=None,
                    help="default: the latest version in the repository")
    wt.add_argument("--timeout", type=float, default=300.0, help="seconds (default 300)")

    lg = sub.add_parser("logs", parents=[common], help="the server's log")
    lg.add_argument("--tail", type=int, default=None, help="last N lines only")

    dn = sub.add_parser("down", parents=[common],
                        help="stop and remove the server `up` started (never anything else)")
    dn.add_argument("--timeout", type=float, default=30.0,
                    help="seconds to drain before killing (default 30)")

    rb = sub.add_parser("rollback", parents=[common], epilog=EXIT_CODES,
                        formatter_class=argparse.RawDescriptionHelpFormatter,
                        help="serve version N of a model, with no restart, and verify it")
    rb.add_argument("--model", required=True)
    rb.add_argument("--to", required=True, help="a version number, or `latest` to unpin")
    rb.add_argument("--timeout", type=float, default=120.0, help="seconds (default 120)")

    pr = sub.add_parser("predict", parents=[common], help="one sample REST prediction")
    pr.add_argument("--model", required=True)
    pr.add_argument("--instances", default=None,
                    help="JSON list; default: one instance of zeros shaped like the "
                         "model's serving_default inputs")
    pr.add_argument("--version", type=int, default=None)
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

    if args.command == "up":
        models = tuple(m.strip() for m in args.models.split(",") if m.strip())
        config = UpConfig(repository=args.repository, models=models, state_dir=args.state_dir,
                          backend=args.backend, image=args.image, grpc_port=args.grpc_port,
                          rest_port=args.rest_port, extra_args=extra,
                          config_poll_seconds=args.config_poll_seconds,
                          file_system_poll_seconds=args.file_system_poll_seconds,
                          wait_seconds=args.wait_seconds, docker_url=args.docker_url)
        state = lifecycle.up(config)
        if args.json:
            print(json.dumps(state.to_json(), indent=2))
        else:
            print(f"serving {','.join(state.models)} with the {state.backend} backend"
                  f"{' (' + state.image + ')' if state.image else ''}\n"
                  f"REST {state.addresses.rest_url}\ngRPC {state.addresses.grpc_target}")
        return 0
    if args.command == "status":
        report = lifecycle.status(args.state_dir)
        print(json.dumps(report.to_json(), indent=2) if args.json else report.to_text())
        if not report.running:
            return 4
        return 0 if report.healthy else 1
    if args.command == "wait":
        st = lifecycle.wait_for_version(args.model, args.version, args.timeout, args.state_dir)
        print(f"{args.model}: AVAILABLE {st.available()}")
        return 0
    if args.command == "logs":
        sys.stdout.write(lifecycle.logs(args.state_dir, args.tail))
        return 0
    if args.command == "down":
        was_running = lifecycle.down(args.state_dir, args.timeout)
        print("stopped and removed" if was_running else "nothing was running")
        return 0
    if args.command == "rollback":
        to = None if args.to == "latest" else _int(args.to, "--to")
        st = lifecycle.rollback(args.model, to, args.state_dir, args.timeout)
        print(f"{args.model}: serving {st.available()}")
        return 0
    if args.command == "predict":
        instances = json.loads(args.instances) if args.instances else None
        print(json.dumps(lifecycle.sample_prediction(args.model, instances, args.state_dir,
                                                     args.version)))
        return 0
    raise AssertionError(args.command)


def _int(text: str, flag: str) -> int:
    try:
        return int(text)
    except ValueError:
        print(f"python -m serving: error: {flag} takes a version number or `latest`, "
              f"got {text!r}", file=sys.stderr)
        raise SystemExit(2) from None


def main(argv: Optional[Sequence[str]] = None) -> int:
    from serving.lifecycle.errors import LifecycleError

    argv, extra = split_extra(sys.argv[1:] if argv is None else argv)
    args = _parser().parse_args(argv)
    if extra and args.command != "up":
        _parser().error("extra server flags after `--` are for `up` only")
    _configure_logging(args.quiet)
    try:
        return _run(args, extra)
    except LifecycleError as e:
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code
    except ValueError as e:  # a config the dataclass rejects
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
