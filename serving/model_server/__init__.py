"""An embedded, TF-Serving-compatible model server (the default backend where Docker is absent).

The layout mirrors TensorFlow Serving so the behaviour can be reasoned about the same way:
`source.FileSystemSource` polls base paths and emits aspired versions, `loader.Loader`
loads one version (`warmup` replays its warmup requests), `manager.Manager` applies the
version policy and serves lookups, `server_core.ServerCore` owns them and the servable
handles, `apis.Apis` implements each API once over tensorflow_serving.apis protos, and `rest`
(with `rest_json`) and `grpc_service` are thin front ends that decode their wire format into
the same request objects and await the same entry points. Nothing here parses flags or keeps
module-level state; `__main__` turns tensorflow_model_server's flags into a `ServerConfig`.
"""
