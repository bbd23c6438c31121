"""Config objects and files: flags' typed config, the text-format files, the status table."""

from __future__ import annotations

import grpc
import pytest

from serving.model_server.config import (ConfigError, ServerConfig, load_batching_parameters,
                                         load_model_server_config)
from serving.model_server.errors import STATUS_TABLE, Code, ServingError


def test_single_model_flags_build_a_model_config():
    cfg = ServerConfig(model_name="hp2", model_base_path="/models/hp2").model_server_config()
    (model,) = cfg.model_config_list.config
    assert (model.name, model.base_path, model.model_platform) == \
        ("hp2", "/models/hp2", "tensorflow")


def test_model_config_file_with_policies_and_labels(tmp_path):
    (tmp_path / "m.config").write_text("""
        model_config_list {
          config { name: "a" base_path: "/a" model_platform: "tensorflow"
                   model_version_policy { specific { versions: 1 versions: 2 } }
                   version_labels { key: "stable" value: 1 } }
          config { name: "b" base_path: "/b" model_version_policy { latest { num_versions: 2 } } }
        }""")
    cfg = load_model_server_config(str(tmp_path / "m.config"))
    a, b = cfg.model_config_list.config
    assert list(a.model_version_policy.specific.versions) == [1, 2]
    assert dict(a.version_labels) == {"stable": 1}
    assert b.model_version_policy.latest.num_versions == 2


def test_config_file_wins_over_model_base_path(tmp_path):
    """The official image passes --model_name/--model_base_path even with a config file."""
    (tmp_path / "m.config").write_text(
        'model_config_list { config { name: "a" base_path: "/a" model_platform: "tensorflow" } }')
    cfg = ServerConfig(model_config_file=str(tmp_path / "m.config"), model_name="x",
                       model_base_path="/models/x").model_server_config()
    assert [c.name for c in cfg.model_config_list.config] == ["a"]
    with pytest.raises(ConfigError, match="must be set"):
        ServerConfig().model_server_config()


def test_batching_parameters_file_semantics(tmp_path):
    (tmp_path / "b.config").write_text(
        "max_batch_size { value: 32 } batch_timeout_micros { value: 500 } "
        "num_batch_threads { value: 3 } max_enqueued_batches { value: 7 } "
        "allowed_batch_sizes: 8 allowed_batch_sizes: 32 pad_variable_length_inputs: true")
    o = load_batching_parameters(str(tmp_path / "b.config"))
    assert (o.max_batch_size, o.batch_timeout_micros, o.num_batch_threads,
            o.max_enqueued_batches, o.allowed_batch_sizes, o.pad_variable_length_inputs) == \
        (32, 500, 3, 7, (8, 32), True)
    (tmp_path / "d.config").write_text("")
    d = load_batching_parameters(str(tmp_path / "d.config"))
    assert (d.max_batch_size, d.batch_timeout_micros, d.max_enqueued_batches) == (1000, 0, 10)


def test_monitoring_config(tmp_path):
    (tmp_path / "m.config").write_text("prometheus_config { enable: true path: '/metrics' }")
    assert ServerConfig(monitoring_config_file=str(tmp_path / "m.config")).prometheus_path() \
        == "/metrics"
    (tmp_path / "off.config").write_text("prometheus_config { enable: false }")
    assert ServerConfig(monitoring_config_file=str(tmp_path / "off.config")) \
        .prometheus_path() is None


def test_grpc_channel_arguments():
    opts = ServerConfig(grpc_channel_arguments="grpc.max_connection_age_ms=2000,"
                        "grpc.lb_policy_name=grpclb").grpc_options()
    assert ("grpc.max_connection_age_ms", 2000) in opts
    assert ("grpc.lb_policy_name", "grpclb") in opts
    with pytest.raises(ConfigError, match="key=value"):
        ServerConfig(grpc_channel_arguments="nonsense").grpc_options()


def test_status_table_covers_every_code_like_tf_serving():
    assert set(STATUS_TABLE) == set(Code)
    e = ServingError(Code.NOT_FOUND, "x")
    assert (e.http_status, e.grpc_status) == (404, grpc.StatusCode.NOT_FOUND)
    assert ServingError(Code.FAILED_PRECONDITION, "x").http_status == 400
    assert ServingError(Code.INVALID_ARGUMENT, "x").grpc_status == \
        grpc.StatusCode.INVALID_ARGUMENT
