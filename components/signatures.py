"""SavedModel signature plumbing shared by the trainer module files.

TF2's `tf.saved_model.save` marks every signature `tensorflow/serving/predict`, but TF
Serving's Classify and Regress APIs only accept signatures whose method_name says
classify or regress. The fix TF Serving users apply is to set the method names in
saved_model.pb after export; this module does that, and nothing else.
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping

from tensorflow.core.protobuf import saved_model_pb2

PREDICT_METHOD = "tensorflow/serving/predict"
CLASSIFY_METHOD = "tensorflow/serving/classify"
REGRESS_METHOD = "tensorflow/serving/regress"


def set_method_names(export_dir: str | Path, method_names: Mapping[str, str]) -> None:
    """Rewrite the method_name of the named signatures in `export_dir/saved_model.pb`."""
    path = Path(export_dir) / "saved_model.pb"
    saved_model = saved_model_pb2.SavedModel()
    saved_model.ParseFromString(path.read_bytes())
    for meta_graph in saved_model.meta_graphs:
        for name, method in method_names.items():
            if name not in meta_graph.signature_def:
                raise KeyError(f"signature {name!r} not in {path}")
            meta_graph.signature_def[name].method_name = method
    tmp = path.with_suffix(".pb.tmp")
    tmp.write_bytes(saved_model.SerializeToString())
    tmp.replace(path)
