"""Typed server configuration and the text-format config files tensorflow_model_server reads.

`ServerConfig` is what `__main__` builds from the flags (same names and defaults as
tensorflow_model_server) and what tests build directly. The file loaders return the
upstream protos and raise `ConfigError` with a message that names the file and the problem.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Optional, Tuple

from google.protobuf import text_format
from tensorflow_serving.config import model_server_config_pb2

from serving.model_server.protos import monitoring_config_pb2, session_bundle_config_pb2

DEFAULT_PROMETHEUS_PATH = "/monitoring/prometheus/metrics"
# The exit code of the server (and of a front-end worker) when a SIGTERM drain cut off
# in-flight requests at --drain_timeout_seconds; 0 when they all finished.
EXIT_DRAIN_INCOMPLETE = 3


class ConfigError(ValueError):
    """A configuration the server cannot start (or reload) with; the message says why."""


@dataclasses.dataclass
class BatchingOptions:
    """BatchingParameters with TF Serving's defaults filled in (batching_session.h)."""

    max_batch_size: int = 1000
    batch_timeout_micros: int = 0
    max_enqueued_batches: int = 10
    num_batch_threads: int = dataclasses.field(default_factory=lambda: os.cpu_count() or 1)
    allowed_batch_sizes: Tuple[int, ...] = ()
    pad_variable_length_inputs: bool = False

    @classmethod
    def from_proto(cls, p) -> "BatchingOptions":
        o = cls()
        for name in ("max_batch_size", "batch_timeout_micros", "max_enqueued_batches",
                     "num_batch_threads"):
            if p.HasField(name):
                setattr(o, name, int(getattr(p, name).value))
        o.allowed_batch_sizes = tuple(int(v) for v in p.allowed_batch_sizes)
        o.pad_variable_length_inputs = bool(p.pad_variable_length_inputs)
        o.validate()
        return o

    def validate(self) -> None:
        if self.max_batch_size <= 0:
            raise ConfigError("max_batch_size must be positive")
        if self.num_batch_threads <= 0:
            raise ConfigError("num_batch_threads must be positive")
        if self.batch_timeout_micros < 0 or self.max_enqueued_batches <= 0:
            raise ConfigError("batch_timeout_micros must be >= 0 and max_enqueued_batches > 0")
        sizes = list(self.allowed_batch_sizes)
        if sizes:
            if sizes != sorted(set(sizes)) or sizes[0] <= 0:
                raise ConfigError("allowed_batch_sizes entries must be positive and increasing")
            if sizes[-1] != self.max_batch_size:
                raise ConfigError(
                    f"allowed_batch_sizes: final entry must equal max_batch_size "
                    f"({sizes[-1]} != {self.max_batch_size})")


@dataclasses.dataclass
class ServerConfig:
    """Everything a ModelServer needs; fields are tensorflow_model_server's flags."""

    port: int = 8500
    grpc_socket_path: str = ""
    grpc_channel_arguments: str = ""
    rest_api_port: int = 0
    rest_api_timeout_in_ms: int = 30000
    rest_api_num_threads: int = 0
    model_name: str = "default"
    model_base_path: str = ""
    model_config_file: str = ""
    model_config_file_poll_wait_seconds: float = 0.0
    file_system_poll_wait_seconds: float = 1.0  # int in TF Serving; fractions allowed
    allow_version_labels_for_unavailable_models: bool = False
    enable_batching: bool = False
    batching_parameters_file: str = ""
    monitoring_config_file: str = ""
    enable_model_warmup: bool = True
    num_request_iterations_for_warmup: int = 1
    saved_model_tags: str = "serve"
    enable_signature_method_name_check: bool = False
    tensorflow_intra_op_parallelism: int = 0
    tensorflow_inter_op_parallelism: int = 0
    # tensorflow_model_server retries a failed load 5 times a minute apart, so a broken
    # version reports its error after 5 minutes; here it reports at once unless asked.
    max_num_load_retries: int = 0
    load_retry_interval_micros: int = 60_000_000
    # Extensions (not tensorflow_model_server flags).
    host: str = "0.0.0.0"
    rest_api_max_body_bytes: int = 64 << 20
    rest_api_read_timeout_seconds: float = 30.0
    rest_api_idle_timeout_seconds: float = 60.0
    rest_api_max_connections: int = 1000
    max_request_tensor_elements: int = 1 << 24
    drain_timeout_seconds: float = 30.0
    front_end_workers: int = 2  # worker.py; measured best on 2 cores; 0: one process

    def model_server_config(self) -> model_server_config_pb2.ModelServerConfig:
        """The models to serve: the config file, or the single --model_name/--model_base_path.

        As in tensorflow_model_server, a config file wins and --model_name/--model_base_path
        are ignored: the official image's entrypoint always passes both.
        """
        if self.model_config_file:
            return load_model_server_config(self.model_config_file)
        if not self.model_base_path:
            raise ConfigError("either --model_base_path or --model_config_file must be set")
        return single_model_config(self.model_name, self.model_base_path)

    def tags(self) -> Tuple[str, ...]:
        """--saved_model_tags: the tag-set of the MetaGraphDef to load."""
        return tuple(t.strip() for t in self.saved_model_tags.split(",") if t.strip())

    def session_config(self):
        """The ConfigProto every version's Session runs with (the parallelism flags)."""
        from tensorflow.core.protobuf import config_pb2

        return config_pb2.ConfigProto(
            intra_op_parallelism_threads=self.tensorflow_intra_op_parallelism,
            inter_op_parallelism_threads=self.tensorflow_inter_op_parallelism,
            allow_soft_placement=True)

    def load(self) -> LoadedConfig:
        """Check the flags and read every file they name, once; ConfigError says what is
        wrong. Done before the slow TensorFlow import, so bad input fails fast."""
        self.validate()
        return LoadedConfig(self.model_server_config(), self.batching(),
                            self.prometheus_path(), self.grpc_options())

    def validate(self) -> None:
        """Flag values the server cannot run with."""
        if self.max_request_tensor_elements <= 0:
            raise ConfigError("--max_request_tensor_elements must be positive")
        if self.front_end_workers < 0:
            raise ConfigError("--front_end_workers must be 0 or more")
        for name in ("rest_api_max_body_bytes", "rest_api_read_timeout_seconds",
                     "rest_api_idle_timeout_seconds", "rest_api_max_connections"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"--{name} must be positive")
        if not self.tags():
            raise ConfigError("--saved_model_tags names no tag")

    def batching(self) -> Optional[BatchingOptions]:
        if not self.enable_batching:
            return None
        if not self.batching_parameters_file:
            return BatchingOptions()
        return load_batching_parameters(self.batching_parameters_file)

    def prometheus_path(self) -> Optional[str]:
        if not self.monitoring_config_file:
            return None
        cfg = load_monitoring_config(self.monitoring_config_file)
        if not cfg.prometheus_config.enable:
            return None
        return cfg.prometheus_config.path or DEFAULT_PROMETHEUS_PATH

    def grpc_options(self):
        """--grpc_channel_arguments: comma-separated key=value, ints where they parse."""
        options = [("grpc.max_send_message_length", -1), ("grpc.max_receive_message_length", -1)]
        for item in filter(None, (s.strip() for s in self.grpc_channel_arguments.split(","))):
            if "=" not in item:
                raise ConfigError(f"--grpc_channel_arguments: expected key=value, got {item!r}")
            key, value = (s.strip() for s in item.split("=", 1))
            try:
                options.append((key, int(value)))
            except ValueError:
                options.append((key, value))
        return options


@dataclasses.dataclass(frozen=True)
class LoadedConfig:
    """The files the flags point at, each read and checked once (`ServerConfig.load`)."""

    model_config: model_server_config_pb2.ModelServerConfig
    batching: Optional[BatchingOptions]
    prometheus_path: Optional[str]
    grpc_options: list


def single_model_config(name: str, base_path: str) -> model_server_config_pb2.ModelServerConfig:
    cfg = model_server_config_pb2.ModelServerConfig()
    model = cfg.model_config_list.config.add()
    model.name = name
    model.base_path = base_path
    model.model_platform = "tensorflow"
    validate_model_server_config(cfg)
    return cfg


def read_config_file(path: str, what: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as e:
        raise ConfigError(f"cannot read {what} file {path}: {e.strerror or e}") from e


def parse_text(data: bytes, message, path: str):
    """Text-format `data` (read from `path`) into `message`; ConfigError names the file."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError(f"Error parsing text-format {message.DESCRIPTOR.full_name} in "
                          f"{path}: not UTF-8 text (byte {e.start}: {data[e.start:e.start + 1]!r})"
                          ) from e
    try:
        return text_format.Parse(text, message)
    except text_format.ParseError as e:
        raise ConfigError(
            f"Error parsing text-format {message.DESCRIPTOR.full_name} in {path}: {e}") from e


def _parse_text(path: str, message, what: str):
    return parse_text(read_config_file(path, what), message, path)


def parse_model_server_config(data: bytes, path: str
                              ) -> model_server_config_pb2.ModelServerConfig:
    """A model config file's contents, parsed and validated as TF Serving does."""
    cfg = parse_text(data, model_server_config_pb2.ModelServerConfig(), path)
    try:
        validate_model_server_config(cfg)
    except ConfigError as e:
        raise ConfigError(f"invalid model config file {path}: {e}") from e
    return cfg


def load_model_server_config(path: str) -> model_server_config_pb2.ModelServerConfig:
    return parse_model_server_config(read_config_file(path, "model config"), path)


def validate_model_server_config(cfg: model_server_config_pb2.ModelServerConfig) -> None:
    """Reject what TF Serving rejects, naming the model and the field at fault."""
    if cfg.WhichOneof("config") == "custom_model_config":
        raise ConfigError("custom_model_config is not supported; use model_config_list")
    seen = set()
    for i, model in enumerate(cfg.model_config_list.config):
        where = f"model_config_list.config[{i}]"
        if not model.name:
            raise ConfigError(f"{where}: name is empty")
        if "/" in model.name or ":" in model.name:
            raise ConfigError(f"{where}: invalid model name {model.name!r}")
        if model.name in seen:
            raise ConfigError(f"Illegal to list model {model.name} multiple times in config list")
        seen.add(model.name)
        if not model.base_path:
            raise ConfigError(f"{where} (model {model.name}): base_path is empty")
        if model.model_platform not in ("", "tensorflow"):
            raise ConfigError(
                f"model {model.name}: model_platform {model.model_platform!r} is not supported "
                f"(only 'tensorflow')")
        policy = model.model_version_policy
        if policy.WhichOneof("policy_choice") == "latest" and policy.latest.num_versions < 0:
            raise ConfigError(f"model {model.name}: latest.num_versions must be >= 0")
        if policy.WhichOneof("policy_choice") == "specific" and not policy.specific.versions:
            raise ConfigError(f"model {model.name}: specific policy lists no versions")
        for label, version in model.version_labels.items():
            if not label or version <= 0:
                raise ConfigError(f"model {model.name}: invalid version label {label!r}: {version}")


def load_batching_parameters(path: str) -> BatchingOptions:
    proto = _parse_text(path, session_bundle_config_pb2.BatchingParameters(),
                        "batching parameters")
    try:
        return BatchingOptions.from_proto(proto)
    except ConfigError as e:
        raise ConfigError(f"invalid batching parameters file {path}: {e}") from e


def load_monitoring_config(path: str):
    return _parse_text(path, monitoring_config_pb2.MonitoringConfig(), "monitoring config")
