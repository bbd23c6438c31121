"""Warmup (TF Serving's saved_model_warmup): before a version serves, replay the requests
recorded in its `assets.extra/tf_serving_warmup_requests`, so its first real requests do not
pay for graph and kernel setup. A version whose warmup file is unreadable or holds a request
it cannot answer fails to load, with that error.
"""

from __future__ import annotations

from pathlib import Path

from tensorflow_serving.apis import prediction_log_pb2

from serving.model_server.config import ServerConfig
from serving.model_server.errors import Code, ServingError
from serving.model_server.servable import run
from serving.model_server.servable.loader import Servable

WARMUP_FILE = Path("assets.extra") / "tf_serving_warmup_requests"
MAX_WARMUP_RECORDS = 1000


def replay(servable: Servable, config: ServerConfig) -> int:
    """Replay the version's warmup records --num_request_iterations_for_warmup times;
    returns how many records there were (0: no warmup file)."""
    import tensorflow as tf

    path = Path(servable.path) / WARMUP_FILE
    if not path.is_file():
        return 0
    records = []
    try:
        for i, raw in enumerate(tf.data.TFRecordDataset(str(path)).as_numpy_iterator()):
            if i >= MAX_WARMUP_RECORDS:
                raise ServingError(Code.INVALID_ARGUMENT,
                                   f"Number of warmup records exceeds the maximum "
                                   f"({MAX_WARMUP_RECORDS}) at {path}")
            log_entry = prediction_log_pb2.PredictionLog()
            log_entry.ParseFromString(raw)
            records.append(log_entry)
    except tf.errors.OpError as e:
        raise ServingError(Code.DATA_LOSS, f"Failed to read warmup data at {path}: "
                                           f"{e.message}") from e
    if not records:
        raise ServingError(Code.INVALID_ARGUMENT, f"No warmup data file found at {path} (empty)")
    for _ in range(max(1, config.num_request_iterations_for_warmup)):
        for entry in records:
            _replay_one(servable, entry, config.enable_signature_method_name_check,
                        config.max_request_tensor_elements)
    return len(records)


def _replay_one(servable: Servable, entry, check_method: bool, max_elements: int) -> None:
    kind = entry.WhichOneof("log_type")
    if kind == "predict_log":
        req = entry.predict_log.request
        run.run_predict(servable, run.PredictCall.from_request(req), check_method,
                        max_elements)
    elif kind == "classify_log":
        req = entry.classify_log.request
        run.run_classify(servable, req.model_spec.signature_name, req.input, check_method)
    elif kind == "regress_log":
        req = entry.regress_log.request
        run.run_regress(servable, req.model_spec.signature_name, req.input, check_method)
    elif kind == "multi_inference_log":
        run.run_multi_inference(servable, entry.multi_inference_log.request, check_method)
    else:
        raise ServingError(Code.UNIMPLEMENTED, f"Unsupported log_type for warmup: {kind}")
