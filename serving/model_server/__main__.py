"""`python -m serving.model_server`: tensorflow_model_server's command line.

Flags keep tensorflow_model_server's names, defaults and meaning (`--flag=value`,
`--flag value`, and `--bool_flag` / `--bool_flag=false`). Flags tensorflow_model_server
has but this server cannot honour are rejected by name; unknown flags exit 2.
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import logging
import signal
import sys
from typing import List, Optional

from serving.model_server.config import EXIT_DRAIN_INCOMPLETE, ConfigError, ServerConfig
from serving.model_server.logs import configure_logging

log = logging.getLogger("serving.model_server")

__version__ = "0.1.0"

# tensorflow_model_server flags whose behaviour this server does not provide.
UNSUPPORTED = ("ssl_config_file", "platform_config_file", "per_process_gpu_memory_fraction",
               "tensorflow_session_config_file", "use_tflite_model", "prefer_tflite_model",
               "xla_cpu_compilation_enabled",
               "remove_unused_fields_from_bundle_metagraph", "mixed_precision",
               "thread_pool_factory_config_file", "rest_api_enable_cors_support")
# Accepted for command-line compatibility; they tune internals this server does not have.
IGNORED = ("flush_filesystem_caches", "num_load_threads", "num_unload_threads",
           "tensorflow_session_parallelism", "enable_profiler", "grpc_max_threads",
           "skip_initialize_tpu")


# One line each, after tensorflow_model_server's own --help.
FLAG_HELP = {
    "port": "gRPC port (PredictionService, ModelService)",
    "grpc_socket_path": "also serve gRPC on this UNIX domain socket",
    "grpc_channel_arguments": "gRPC server options, comma-separated key=value",
    "rest_api_port": "HTTP/REST API port; 0 disables REST",
    "rest_api_timeout_in_ms": "bound on a REST request's wait for its batch",
    "rest_api_num_threads": "accepted; REST runs on an event loop, not a thread pool",
    "model_name": "name of the one model served from --model_base_path",
    "model_base_path": "directory of integer version subdirectories of that model",
    "model_config_file": "text ModelServerConfig: several models, version policies, labels "
                         "(wins over --model_name/--model_base_path)",
    "model_config_file_poll_wait_seconds": "re-read --model_config_file this often; 0: never",
    "file_system_poll_wait_seconds": "look for new versions this often",
    "allow_version_labels_for_unavailable_models": "labels may name versions not yet loaded",
    "enable_batching": "server-side dynamic batching of requests",
    "batching_parameters_file": "text BatchingParameters (max_batch_size, "
                                "batch_timeout_micros, num_batch_threads, ...)",
    "monitoring_config_file": "text MonitoringConfig: where Prometheus metrics are served",
    "enable_model_warmup": "replay assets.extra/tf_serving_warmup_requests before serving",
    "num_request_iterations_for_warmup": "how many times each warmup request is replayed",
    "saved_model_tags": "comma-separated tags of the MetaGraph to load",
    "enable_signature_method_name_check": "Classify/Regress/MultiInference only on "
                                          "signatures whose method_name says so",
    "tensorflow_intra_op_parallelism": "threads within one op; 0: TensorFlow's choice",
    "tensorflow_inter_op_parallelism": "ops run in parallel; 0: TensorFlow's choice",
    "max_num_load_retries": "retries of a failed load before its error shows; "
                            "tensorflow_model_server's default is 5",
    "load_retry_interval_micros": "wait between load retries",
}

# Flags of this server only, with their help.
EXTENSIONS = {
    "host": "address to bind (tensorflow_model_server binds 0.0.0.0)",
    "rest_api_max_body_bytes": "larger REST bodies (or a declared chunk that would make "
                               "one) are answered 413 without being read",
    "rest_api_read_timeout_seconds": "a REST request (headers and body) must arrive within "
                                     "this many seconds of its first byte, else it is "
                                     "answered 408 and its connection closed",
    "rest_api_idle_timeout_seconds": "a REST connection waiting this long for its next "
                                     "request (or its first) is closed",
    "rest_api_max_connections": "open REST connections served (by each front-end process); "
                                "a request on a connection beyond them is answered 503 and "
                                "the connection closed",
    "max_request_tensor_elements": "most tensor elements one request may decode, all its "
                                   "inputs together; larger requests are answered "
                                   "INVALID_ARGUMENT / 400 before anything is allocated",
    "front_end_workers": "processes that run the gRPC and REST front ends (HTTP, JSON, gRPC "
                         "framing) and pass each call to this process, which loads the "
                         "models and runs the APIs (--grpc_socket_path stays served by this "
                         "process); 0: the front ends run in this process (lowest latency "
                         "at low load). A worker costs about 65 MB and 0.5 s of start-up; "
                         "2 served the most at 32 clients on 2 cores",
    "drain_timeout_seconds": "on SIGTERM, how long in-flight requests may take to finish; "
                             "the exit code is 0 when they all did, 3 when some were cut off",
}


def _bool(text: str) -> bool:
    value = text.strip().lower()
    if value in ("true", "1", "yes"):
        return True
    if value in ("false", "0", "no"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # argparse's exit status 2, with a pointer to --help
        self.exit(2, f"{self.prog}: error: {message}\n"
                     f"(flags are tensorflow_model_server's; see --help)\n")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="model-server", allow_abbrev=False,
                description="TF-Serving-compatible model server (embedded backend).")
    d = ServerConfig()
    for field in dataclasses.fields(ServerConfig):
        name, default = field.name, getattr(d, field.name)
        if name in EXTENSIONS:
            continue
        _add(p, name, default, FLAG_HELP.get(name))
    ext = p.add_argument_group("extensions (not tensorflow_model_server flags)")
    for name, help_text in EXTENSIONS.items():
        _add(ext, name, getattr(d, name), help_text)
    for name in UNSUPPORTED + IGNORED:
        p.add_argument(f"--{name}", nargs="?", const="true", default=None,
                       help=argparse.SUPPRESS)
    p.add_argument("--version", action="store_true", help="print the version and exit")
    return p


def _add(p, name, default, help_text=None):
    help_text = f"{help_text} (default {default!r})" if help_text else f"(default {default!r})"
    if isinstance(default, bool):
        p.add_argument(f"--{name}", type=_bool, nargs="?", const=True, default=default,
                       help=help_text)
    else:
        p.add_argument(f"--{name}", type=type(default), default=default, help=help_text)


def parse_config(argv: List[str]) -> ServerConfig:
    """Flags -> ServerConfig; exits 2 on an unknown or unsupported flag."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.version:
        from importlib.metadata import version
        print(f"TensorFlow ModelServer: {__version__}-embedded\n"
              f"TensorFlow Library: {version('tensorflow')}")
        sys.exit(0)
    for name in UNSUPPORTED:
        if getattr(args, name) is not None:
            parser.error(f"flag --{name} of tensorflow_model_server is not supported by this "
                         f"server")
    values = {f.name: getattr(args, f.name) for f in dataclasses.fields(ServerConfig)}
    config = ServerConfig(**values)
    for name in IGNORED:
        if getattr(args, name) is not None:
            log.warning("Ignoring --%s: not applicable to this server", name)
    return config


def freeze_imports() -> None:
    """Take what the imports left on the heap out of the garbage collector's full passes.

    `import tensorflow` leaves about 400,000 objects the collector tracks (modules, functions,
    classes, protos), all alive until the process exits. Each full (generation 2) collection
    walked them all: under load one came every 10 to 25 s and held the GIL for about 200 ms,
    stalling every request of the model process (benchmarks/README.md, "Issue 22"). After
    gc.freeze() a full collection walks only what was made later: the models' graphs, whose
    reference cycles it still collects when a version unloads. Once per process, before any
    model loads. A choice for the whole process, so it is made here and not in ModelServer,
    which tests also start inside the test runner's process.
    """
    gc.collect()
    gc.freeze()


def main(argv: Optional[List[str]] = None) -> int:
    configure_logging()
    config = parse_config(sys.argv[1:] if argv is None else argv)
    try:  # bad flags and config files fail here, before the slow TensorFlow import
        loaded = config.load()
    except ConfigError as e:
        log.error("Failed to start server. Error: %s", e)
        return 1
    from serving.model_server.errors import ServingError
    from serving.model_server.server import ModelServer  # TensorFlow's import, the slow part

    freeze_imports()
    server = ModelServer(config, loaded)
    signal.signal(signal.SIGTERM, lambda *_: server.request_stop())
    signal.signal(signal.SIGINT, lambda *_: server.request_stop())
    try:
        if config.model_config_file:
            log.info("Loading model config file %s", config.model_config_file)
        else:
            log.info("Building single TensorFlow model file config:  model_name: %s "
                     "model_base_path: %s", config.model_name, config.model_base_path)
        server.start()
    except ServingError as e:  # start() released what it had started
        if e.code.name == "CANCELLED":
            log.info("Stopped before the models were loaded")
            return 0
        log.error("Failed to start server. Error: %s", e)
        return 1
    except ConfigError as e:
        log.error("Failed to start server. Error: %s", e)
        return 1
    while not server.wait(3600):  # returns at once for a SIGTERM during loading
        pass
    return 0 if server.shutdown() else EXIT_DRAIN_INCOMPLETE


if __name__ == "__main__":
    sys.exit(main())
