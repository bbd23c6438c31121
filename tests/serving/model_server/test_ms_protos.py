"""The TF Serving config protos: generated from the vendored .proto files, current, and
with upstream's names and field numbers, so text and binary forms match TF Serving's."""

from __future__ import annotations

from google.protobuf import text_format

from serving.model_server.protos import build, monitoring_config_pb2, session_bundle_config_pb2


def test_generated_modules_match_the_vendored_proto_files(tmp_path):
    """`make protos` writes the same bytes as are committed: nobody edited a *_pb2.py by
    hand, and no .proto changed without regenerating."""
    assert build.generate(tmp_path) == 0
    for proto in build.proto_files():
        module = proto.with_name(proto.stem + "_pb2.py")
        regenerated = tmp_path / module.relative_to(build.ROOT)
        assert regenerated.read_bytes() == module.read_bytes(), f"{module}: run `make protos`"


def test_batching_parameters_have_upstream_names_and_numbers():
    fields = {f.name: (f.number, f.message_type.full_name if f.message_type else f.type)
              for f in session_bundle_config_pb2.BatchingParameters.DESCRIPTOR.fields}
    assert session_bundle_config_pb2.BatchingParameters.DESCRIPTOR.full_name == \
        "tensorflow.serving.BatchingParameters"
    assert fields == {
        "max_batch_size": (1, "google.protobuf.Int64Value"),
        "batch_timeout_micros": (2, "google.protobuf.Int64Value"),
        "max_enqueued_batches": (3, "google.protobuf.Int64Value"),
        "num_batch_threads": (4, "google.protobuf.Int64Value"),
        "thread_pool_name": (5, "google.protobuf.StringValue"),
        "allowed_batch_sizes": (6, 3),  # TYPE_INT64, repeated
        "pad_variable_length_inputs": (7, 8),  # TYPE_BOOL
        "enable_large_batch_splitting": (8, "google.protobuf.BoolValue"),
        "max_execution_batch_size": (9, "google.protobuf.Int64Value"),
    }


def test_text_and_binary_forms_round_trip():
    text = ("max_batch_size { value: 32 } batch_timeout_micros { value: 1000 } "
            "enable_large_batch_splitting { value: true } max_execution_batch_size { value: 8 } "
            "allowed_batch_sizes: 8 allowed_batch_sizes: 32 pad_variable_length_inputs: true")
    params = text_format.Parse(text, session_bundle_config_pb2.BatchingParameters())
    again = session_bundle_config_pb2.BatchingParameters.FromString(params.SerializeToString())
    assert again == params and again.max_execution_batch_size.value == 8
    # field 8 on the wire is enable_large_batch_splitting (tag 8, length-delimited: 0x42)
    wire = session_bundle_config_pb2.BatchingParameters(
        enable_large_batch_splitting={"value": True}).SerializeToString()
    assert wire == b"\x42\x02\x08\x01"
    monitoring = text_format.Parse('prometheus_config { enable: true path: "/m" }',
                                   monitoring_config_pb2.MonitoringConfig())
    assert monitoring.SerializeToString() == b"\x0a\x06\x08\x01\x12\x02/m"
    assert monitoring_config_pb2.MonitoringConfig.DESCRIPTOR.full_name == \
        "tensorflow.serving.MonitoringConfig"
