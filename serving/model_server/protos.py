"""TF Serving config messages that the tensorflow-serving-api wheel does not ship.

`BatchingParameters` (tensorflow_serving/servables/tensorflow/session_bundle_config.proto)
and `MonitoringConfig` (tensorflow_serving/config/monitoring_config.proto) are compiled
into tensorflow_model_server but not into the pip package. They are rebuilt here from
descriptors with the upstream package, message and field names, so the text-format files
users already have for tensorflow_model_server parse unchanged.
"""

from __future__ import annotations

from google.protobuf import descriptor_pb2, descriptor_pool, wrappers_pb2  # noqa: F401
from google.protobuf import message_factory

_F = descriptor_pb2.FieldDescriptorProto


def _field(name, number, type_, label=_F.LABEL_OPTIONAL, type_name=None):
    f = _F(name=name, number=number, type=type_, label=label)
    if type_name:
        f.type_name = type_name
    return f


def _build():
    pool = descriptor_pool.Default()
    try:
        pool.FindMessageTypeByName("tensorflow.serving.BatchingParameters")
    except KeyError:
        fdp = descriptor_pb2.FileDescriptorProto(
            name="serving_model_server/session_bundle_config_subset.proto",
            package="tensorflow.serving", syntax="proto3",
            dependency=["google/protobuf/wrappers.proto"])
        msg = fdp.message_type.add(name="BatchingParameters")
        i64, s, b = ".google.protobuf.Int64Value", ".google.protobuf.StringValue", \
            ".google.protobuf.BoolValue"
        msg.field.extend([
            _field("max_batch_size", 1, _F.TYPE_MESSAGE, type_name=i64),
            _field("batch_timeout_micros", 2, _F.TYPE_MESSAGE, type_name=i64),
            _field("max_enqueued_batches", 3, _F.TYPE_MESSAGE, type_name=i64),
            _field("num_batch_threads", 4, _F.TYPE_MESSAGE, type_name=i64),
            _field("thread_pool_name", 5, _F.TYPE_MESSAGE, type_name=s),
            _field("allowed_batch_sizes", 6, _F.TYPE_INT64, label=_F.LABEL_REPEATED),
            _field("pad_variable_length_inputs", 7, _F.TYPE_BOOL),
            _field("enable_large_batch_splitting", 9, _F.TYPE_MESSAGE, type_name=b),
            _field("max_execution_batch_size", 10, _F.TYPE_MESSAGE, type_name=i64),
        ])
        prom = fdp.message_type.add(name="PrometheusConfig")
        prom.field.extend([_field("enable", 1, _F.TYPE_BOOL),
                           _field("path", 2, _F.TYPE_STRING)])
        mon = fdp.message_type.add(name="MonitoringConfig")
        mon.field.extend([_field("prometheus_config", 1, _F.TYPE_MESSAGE,
                                 type_name=".tensorflow.serving.PrometheusConfig")])
        pool.Add(fdp)
    classes = {}
    for name in ("BatchingParameters", "PrometheusConfig", "MonitoringConfig"):
        desc = pool.FindMessageTypeByName(f"tensorflow.serving.{name}")
        classes[name] = message_factory.MessageFactory(pool).GetPrototype(desc)
    return classes


_CLASSES = _build()
BatchingParameters = _CLASSES["BatchingParameters"]
PrometheusConfig = _CLASSES["PrometheusConfig"]
MonitoringConfig = _CLASSES["MonitoringConfig"]
