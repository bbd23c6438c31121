"""Health as TF Serving reports it: `GET /v1/models/NAME`, not an open port.

A model is healthy only when the version we expect is AVAILABLE. A version the server
tried and failed to load shows state END with the server's own error message.
"""

from __future__ import annotations

import dataclasses
from typing import List, Optional, Sequence

import requests

AVAILABLE = "AVAILABLE"
END = "END"


@dataclasses.dataclass(frozen=True)
class VersionStatus:
    version: int
    state: str
    error_code: str = "OK"
    error_message: str = ""

    @property
    def failed(self) -> bool:
        return self.state == END and self.error_code not in ("OK", "") and bool(self.error_message)


@dataclasses.dataclass(frozen=True)
class ModelStatus:
    """One model as the server sees it; `error` is set when the server could not be asked."""

    model: str
    versions: Sequence[VersionStatus] = ()
    error: str = ""

    def version(self, number: int) -> Optional[VersionStatus]:
        for v in self.versions:
            if v.version == number:
                return v
        return None

    def available(self) -> List[int]:
        return sorted(v.version for v in self.versions if v.state == AVAILABLE)

    def is_available(self, number: int) -> bool:
        v = self.version(number)
        return v is not None and v.state == AVAILABLE

    def to_json(self) -> dict:
        return {"model": self.model, "error": self.error,
                "versions": [dataclasses.asdict(v) for v in self.versions]}


def parse_model_status(model: str, body: dict) -> ModelStatus:
    versions = []
    for entry in body.get("model_version_status", []):
        status = entry.get("status", {}) or {}
        versions.append(VersionStatus(version=int(entry["version"]), state=entry.get("state", ""),
                                      error_code=status.get("error_code", "OK"),
                                      error_message=status.get("error_message", "")))
    return ModelStatus(model, tuple(sorted(versions, key=lambda v: v.version)))


def get_model_status(rest_url: str, model: str, timeout: float = 5.0,
                     session: Optional[requests.Session] = None) -> ModelStatus:
    """Never raises for a server that is down or still starting: the error is in the result."""
    http = session or requests
    try:
        r = http.get(f"{rest_url}/v1/models/{model}", timeout=timeout)
    except requests.RequestException as e:
        return ModelStatus(model, error=f"no answer from {rest_url}: {type(e).__name__}")
    try:
        body = r.json()
    except ValueError:
        return ModelStatus(model, error=f"HTTP {r.status_code}: {r.text[:200]}")
    if r.status_code != 200:
        return ModelStatus(model, error=f"HTTP {r.status_code}: {body.get('error', body)}")
    return parse_model_status(model, body)


def answers(rest_url: str, timeout: float = 2.0) -> bool:
    """True when the server answers HTTP on its REST port, whatever the answer: it listens,
    so it has loaded the models of its first config."""
    try:
        requests.get(f"{rest_url}/v1/models", timeout=timeout)
    except requests.RequestException:
        return False
    return True


def predict(rest_url: str, model: str, instances: list, version: Optional[int] = None,
            timeout: float = 30.0, session: Optional[requests.Session] = None,
            label: Optional[str] = None) -> dict:
    """REST predict; raises requests.HTTPError with the server's error text on failure."""
    return _post(rest_url, model_path(model, version, label), "predict",
                 {"instances": instances}, timeout, session, "")


def classify(rest_url: str, model: str, examples: List[dict], signature: str = "",
             version: Optional[int] = None, timeout: float = 30.0,
             session: Optional[requests.Session] = None, label: Optional[str] = None) -> dict:
    """REST classify (`{"examples": [...]}` -> `{"results": [[[label, score], ...], ...]}`)."""
    return _post(rest_url, model_path(model, version, label), "classify",
                 {"examples": examples}, timeout, session, signature)


def regress(rest_url: str, model: str, examples: List[dict], signature: str = "",
            version: Optional[int] = None, timeout: float = 30.0,
            session: Optional[requests.Session] = None, label: Optional[str] = None) -> dict:
    """REST regress (`{"examples": [...]}` -> `{"results": [value, ...]}`)."""
    return _post(rest_url, model_path(model, version, label), "regress",
                 {"examples": examples}, timeout, session, signature)


def model_path(model: str, version: Optional[int] = None, label: Optional[str] = None) -> str:
    """TF Serving's REST path of a model: `/v1/models/M[/versions/N | /labels/L]`."""
    if version is not None and label:
        raise ValueError("a request names a version or a label, not both")
    return f"/v1/models/{model}" + (f"/versions/{version}" if version is not None else
                                    f"/labels/{label}" if label else "")


def _post(rest_url: str, path: str, verb: str, body: dict, timeout: float,
          session: Optional[requests.Session], signature: str) -> dict:
    http = session or requests
    model = path.split("/")[3]
    if signature:
        body = {"signature_name": signature, **body}
    return answer_of(http.post(f"{rest_url}{path}:{verb}", json=body, timeout=timeout),
                     f"{verb} {model}")


def answer_of(r: requests.Response, what: str) -> dict:
    """The JSON of a 200 answer; else requests.HTTPError with the server's own error text
    (TF Serving's `{"error": ...}`), not only its status line."""
    if r.status_code != 200:
        raise requests.HTTPError(f"{what}: HTTP {r.status_code}: {r.text[:300]}", response=r)
    return r.json()
