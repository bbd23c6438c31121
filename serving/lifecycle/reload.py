"""Apply a new ModelServerConfig to a running server with no restart: TF Serving's
ModelService.HandleReloadConfigRequest over gRPC (works for MODEL_NAME servers too)."""

from __future__ import annotations

import grpc
from tensorflow_serving.config import model_server_config_pb2

from serving.lifecycle.errors import LifecycleError, VersionFailed


def reload_config(grpc_target: str, config: model_server_config_pb2.ModelServerConfig,
                  timeout: float) -> None:
    # Imported here: these modules import TensorFlow (seconds), which only rollback needs.
    from tensorflow_serving.apis import model_management_pb2, model_service_pb2_grpc

    request = model_management_pb2.ReloadConfigRequest(config=config)
    with grpc.insecure_channel(grpc_target) as channel:
        stub = model_service_pb2_grpc.ModelServiceStub(channel)
        try:
            response = stub.HandleReloadConfigRequest(request, timeout=timeout)
        except grpc.RpcError as e:
            if e.code() == grpc.StatusCode.UNKNOWN and "did not become available" in \
                    (e.details() or ""):  # TF Serving: a model it adds failed to load
                raise VersionFailed(f"the server could not load a model of the new config: "
                                    f"{e.details()}") from e
            raise LifecycleError(f"the server refused the new config: {e.code().name}: "
                                 f"{e.details()}") from e
    if response.status.error_code != 0:
        raise LifecycleError(f"the server refused the new config: "
                             f"{response.status.error_message}")
