"""Under continuous REST and gRPC load, new and broken versions switch with zero failures."""

from __future__ import annotations

import threading
import time

import grpc
import pytest
import requests
import tensorflow as tf
from tensorflow_serving.apis import (get_model_status_pb2, model_service_pb2_grpc,
                                     predict_pb2, prediction_service_pb2_grpc)

from toolkit_testing import wait_until

pytestmark = pytest.mark.e2e


class Load:
    """Client threads predicting on 'latest' until stopped; records every outcome."""

    def __init__(self, server, model, threads_per_api=2):
        self.server, self.model = server, model
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.ok = 0
        self.failures = []
        self.versions_seen = set()
        self.threads = [threading.Thread(target=self._rest, daemon=True)
                        for _ in range(threads_per_api)]
        self.threads += [threading.Thread(target=self._grpc, daemon=True)
                         for _ in range(threads_per_api)]

    def __enter__(self):
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        for t in self.threads:
            t.join(30)

    def _record(self, ok, detail=None, version=None):
        with self.lock:
            if ok:
                self.ok += 1
                if version is not None:
                    self.versions_seen.add(version)
            else:
                self.failures.append(detail)

    def _rest(self):
        session = requests.Session()
        url = f"{self.server.rest_url}/v1/models/{self.model}:predict"
        while not self.stop.is_set():
            try:
                r = session.post(url, json={"instances": [1.0]}, timeout=10)
                self._record(r.status_code == 200 and r.json()["predictions"][0] in (2.5, 3.5),
                             f"REST {r.status_code} {r.text}")
            except Exception as e:  # noqa: BLE001 - any failure counts
                self._record(False, f"REST {e!r}")
            time.sleep(0.003)  # bound the load on a shared 2-core machine

    def _grpc(self):
        with grpc.insecure_channel(self.server.grpc_target) as channel:
            stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
            req = predict_pb2.PredictRequest()
            req.model_spec.name = self.model
            req.inputs["x"].CopyFrom(tf.make_tensor_proto([1.0], dtype=tf.float32))
            while not self.stop.is_set():
                try:
                    resp = stub.Predict(req, timeout=10)
                    self._record(True, version=resp.model_spec.version.value)
                except Exception as e:  # noqa: BLE001
                    self._record(False, f"gRPC {e!r}")
                time.sleep(0.003)

    def count(self):
        with self.lock:
            return self.ok


@pytest.mark.parametrize("workers", [0, 2], ids=["in-process", "2-workers"])
@pytest.mark.parametrize("batching", [False, True], ids=["batching-off", "batching-on"])
def test_zero_failed_requests_across_new_and_broken_versions(tmp_path, start_server, publish,
                                                             batching, workers):
    """With batching on, gRPC requests wait for their batch on the event loop while the
    version they looked up unloads: they must still be answered. With front-end workers,
    a REST worker converts JSON for the version it last heard of, which may unload before
    the call arrives: it is asked again, never failed."""
    from saved_models import write_broken_version
    from serving.repository import ModelRepository

    assert publish(tmp_path, "hp2", "hp2_v1") == 1
    server = start_server(f"--model_base_path={tmp_path}/hp2", "--model_name=hp2",
                          "--file_system_poll_wait_seconds=0.2", f"--front_end_workers={workers}",
                          *(["--enable_batching"] if batching else []))
    with grpc.insecure_channel(server.grpc_target) as channel:
        status_stub = model_service_pb2_grpc.ModelServiceStub(channel)

        def status(version):
            req = get_model_status_pb2.GetModelStatusRequest()
            req.model_spec.name = "hp2"
            resp = status_stub.GetModelStatus(req, timeout=10)
            return next((s for s in resp.model_version_status if s.version == version), None)

        with Load(server, "hp2") as load:
            wait_until(lambda: load.count() > 20, 30, what="load running")
            assert publish(tmp_path, "hp2", "hp2_v2") == 2
            wait_until(lambda: 2 in load.versions_seen, 30, what="version 2 served")

            # A broken version: published atomically, fails to load, never takes 2 down.
            repo = ModelRepository(tmp_path)
            with repo.publish("hp2") as pub:
                write_broken_version(pub.staging)
            assert pub.version == 3
            s3 = wait_until(lambda: (lambda s: s if s and s.state ==
                                     get_model_status_pb2.ModelVersionStatus.END else None)(
                status(3)), 30, what="version 3 failed")
            assert s3.status.error_code != 0 and s3.status.error_message
            before = load.count()
            wait_until(lambda: load.count() > before + 20, 30, what="load after broken push")

            assert publish(tmp_path, "hp2", "hp2_v1") == 4
            wait_until(lambda: 4 in load.versions_seen, 30, what="version 4 served")
            before = load.count()
            wait_until(lambda: load.count() > before + 20, 30, what="load after version 4")

        assert load.failures == []
        assert load.versions_seen == {1, 2, 4}  # never the broken 3
        assert status(2).state == get_model_status_pb2.ModelVersionStatus.END
        assert status(4).state == get_model_status_pb2.ModelVersionStatus.AVAILABLE
    assert server.stop() == 0
