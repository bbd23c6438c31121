"""An embedded, TF-Serving-compatible model server (the default backend where Docker is absent).

The layout mirrors TensorFlow Serving's, so the behaviour can be reasoned about the same way:

- `servable/` - one loaded version and running an API on it (TF Serving's
  servables/tensorflow): `loader` loads a SavedModel into a `Servable`, `signatures` and
  `tensors` apply TF Serving's rules to a request's tensors, `batching` is the batch
  scheduler, `run` runs Predict, Classify, Regress and MultiInference on a held version,
  and `warmup` replays a version's recorded requests through `run` before it serves.
- `core/` - the models' lifecycle and the one entry point per API (TF Serving's core/ and
  server_core): `source.FileSystemSource` polls base paths and emits aspired versions,
  `manager.Manager` applies the version policy and serves lookups, `server_core.ServerCore`
  owns them, the servable handles and the requests in flight, and `apis.Apis` implements
  each API once over it.
- `frontends/` - thin transports: `rest` (with `rest_json`) and `grpc_service` decode their
  wire format into the same request objects (`servable.run.PredictCall`, the
  tensorflow_serving.apis protos) and await the same `Apis` entry points.
- `workers/` - front-end worker processes: `worker` runs the front ends in a process of its
  own, `supervisor` starts and restarts them, and `link` (with `link_arrays`) carries their
  requests to the model process.
- At the top: `config`, `errors` (the one error table), `metrics`, `logs`; `server` puts the
  parts together, and `__main__` turns tensorflow_model_server's flags into a
  `ServerConfig` (the only place flags are parsed). Nothing keeps module-level state.

`LAYERS` is the import order, lowest first: a module imports only from its own layer or
lower ones, never from the rest of `serving/` (the serving image carries this package
alone). tests/test_architecture.py checks it, and that no modules import each other in a
circle.
"""

LAYERS = (
    "serving.model_server.config serving.model_server.errors serving.model_server.metrics "
    "serving.model_server.logs serving.model_server.tf_protos serving.model_server.protos",
    "serving.model_server.servable",
    "serving.model_server.core",
    "serving.model_server.frontends",
    "serving.model_server.workers",
    "serving.model_server.server serving.model_server.__main__",
)
