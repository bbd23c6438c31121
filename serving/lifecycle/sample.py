"""A sample request for any served model, built from its serving_default signature, so the
pipeline runner can print one prediction without knowing each model's inputs."""

from __future__ import annotations

from typing import Any, Dict, List, Optional

import requests

from serving.lifecycle.health import answer_of, model_path

SIGNATURE = "serving_default"
_ZERO = {"DT_STRING": "", "DT_BOOL": False}


def get_metadata(rest_url: str, model: str, version: Optional[int] = None,
                 timeout: float = 10.0, label: Optional[str] = None) -> dict:
    path = model_path(model, version, label)
    return answer_of(requests.get(f"{rest_url}{path}/metadata", timeout=timeout),
                     f"metadata {model}")


def zero_instance(metadata: dict, signature: str = SIGNATURE) -> Any:
    """One instance of zeros shaped like the signature's inputs (batch dimension dropped):
    a bare value for a single input, a {name: value} dict for several."""
    sig = metadata["metadata"]["signature_def"]["signature_def"][signature]
    values: Dict[str, Any] = {}
    for name, info in sig["inputs"].items():
        dims = [int(d["size"]) for d in info.get("tensor_shape", {}).get("dim", [])][1:]
        values[name] = _zeros([max(d, 1) for d in dims], _ZERO.get(info.get("dtype"), 0.0))
    if len(values) == 1:
        return next(iter(values.values()))
    return values


def _zeros(dims: List[int], zero: Any) -> Any:
    if not dims:
        return zero
    return [_zeros(dims[1:], zero) for _ in range(dims[0])]
