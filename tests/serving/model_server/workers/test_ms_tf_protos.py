"""tf_protos: a front-end worker's process imports TensorFlow's protos without its runtime,
and the requests it builds are byte for byte those of a process with all of TensorFlow."""

from __future__ import annotations

import json

import numpy as np

from serving.model_server.servable.tensors import to_tensor_proto
from toolkit_testing import run_cli

PROBE = '''
import json, sys
from serving.model_server.frontends import grpc_service, rest  # a worker's whole front end
from serving.model_server.servable.tensors import to_tensor_proto
from serving.model_server.workers import worker
from tensorflow_serving.apis import predict_pb2
import numpy as np
import tensorflow as tf

request = predict_pb2.PredictRequest()
request.model_spec.name = "mnist"
request.inputs["x"].CopyFrom(to_tensor_proto(np.arange(6, dtype=np.float32).reshape(2, 3)))
try:
    tf.constant(1.0)
    error = None
except AttributeError as e:
    error = str(e)
print(json.dumps({"argv": sys.argv[1:], "name": __name__, "error": error,
                  "request": request.SerializeToString().hex(),
                  "runtime": sorted(m for m in sys.modules if m.startswith("tensorflow.python"))}))
'''


def test_a_module_run_through_it_has_the_protos_and_none_of_the_runtime(tmp_path):
    (tmp_path / "probe.py").write_text(PROBE)
    done = run_cli("serving.model_server.tf_protos", "probe", "--flag", "value", cwd=tmp_path,
                   timeout=120)
    assert done.returncode == 0, done.stderr
    got = json.loads(done.stdout)
    assert got["argv"] == ["--flag", "value"] and got["name"] == "__main__"
    assert got["runtime"] == []
    assert "protos only" in got["error"] and "tf_protos" in got["error"]

    from tensorflow_serving.apis import predict_pb2  # this process: TensorFlow in full

    request = predict_pb2.PredictRequest()
    request.model_spec.name = "mnist"
    request.inputs["x"].CopyFrom(to_tensor_proto(np.arange(6, dtype=np.float32).reshape(2, 3)))
    assert bytes.fromhex(got["request"]) == request.SerializeToString()
