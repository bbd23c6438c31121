"""The lineage record that travels with every published version: `<version>/lineage.json`.

It is written into the staging directory before the version is renamed into place, so a
version never exists without it, and it moves with the version directory wherever that is
copied. It says which run made the model, from which data, how it was judged, how it was
trained (profile, hyperparameters, Trainer module) and from which code; `python -m serving
status` shows it per served version (and `up` and `status` warn about a version trained
with a profile other than the default one) and `python -m pipelines history` lists the
runs it came from. TF Serving ignores the file.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Dict, List, Optional

LINEAGE_FILE = "lineage.json"
FORMAT = 1
# The profile of production training (`make pipeline`'s); any other (a fast test run, a
# notebook experiment) is shown and warned about wherever the version is served.
DEFAULT_PROFILE = "default"


@dataclasses.dataclass
class Lineage:
    """Where a published model came from. Every field is plain JSON."""

    pipeline: str = ""
    run_id: str = ""
    model_uri: str = ""                 # the Trainer's Model artifact
    spans: List[int] = dataclasses.field(default_factory=list)
    data_sha256: str = ""               # over the examples the model was trained and evaluated on
    warm_start: Optional[Dict[str, Any]] = None   # {"version": N or None, "model_uri": ...}
    metrics: Dict[str, float] = dataclasses.field(default_factory=dict)
    gates: Dict[str, str] = dataclasses.field(default_factory=dict)
    infra_validation: str = ""          # "passed", or "skipped: <why>"
    git_commit: str = ""
    git_dirty: Optional[bool] = None
    # How it was trained: the profile's name ("default", "fast", "notebook", ...), its sizes
    # and hyperparameters (examples, epochs, steps, batch size...) and the Trainer module.
    # "" where the record predates these fields or another tool published the version.
    profile: str = ""
    hyperparameters: Dict[str, Any] = dataclasses.field(default_factory=dict)
    trainer_module: str = ""
    run_started_at: str = ""            # ISO 8601, UTC
    published_at: str = ""
    # Set when a version is withdrawn after it was published (see ModelRepository.reject).
    rejected: Optional[Dict[str, str]] = None

    def to_json(self) -> Dict[str, Any]:
        return {"format": FORMAT, **dataclasses.asdict(self)}

    @classmethod
    def from_json(cls, data: Dict[str, Any]) -> "Lineage":
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})

    @property
    def non_default_profile(self) -> bool:
        return self.profile not in ("", DEFAULT_PROFILE)

    def profile_warning(self, model: str, version: int) -> Optional[str]:
        """What to tell whoever serves this version when it was trained with a profile other
        than the default one; None when it was not (or the record does not say)."""
        if not self.non_default_profile:
            return None
        sizes = ", ".join(f"{k}={v}" for k, v in sorted(self.hyperparameters.items()))
        return (f"{model} version {version} was trained with the {self.profile} profile, "
                f"not the {DEFAULT_PROFILE} one" + (f" ({sizes})" if sizes else "")
                + (f", trainer {self.trainer_module}" if self.trainer_module else ""))

    def describe(self) -> str:
        """One line for people: run, profile (when not the default), spans, warm start,
        metrics."""
        parts = [f"run {self.run_id or '?'}"]
        if self.non_default_profile:
            parts.append(f"{self.profile} profile")
        if self.spans:
            parts.append("spans " + span_ranges(self.spans))
        if self.warm_start:
            source = self.warm_start.get("version")
            parts.append(f"warm-started from version {source}" if source is not None
                         else "warm-started")
        parts += [f"{k} {v:.4g}" for k, v in sorted(self.metrics.items())]
        return ", ".join(parts)


def now() -> str:
    """A lineage timestamp: UTC, ISO 8601, to the second."""
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def write(version_dir: Path, lineage: Lineage) -> Path:
    """Write (or replace) the record atomically; readers see the old or the new file."""
    path = Path(version_dir) / LINEAGE_FILE
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{LINEAGE_FILE}.")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(lineage.to_json(), f, indent=2, sort_keys=True)
            f.write("\n")
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def read(version_dir: Path) -> Optional[Lineage]:
    """The record of a version, or None when it has none (published by another tool)."""
    try:
        return Lineage.from_json(json.loads((Path(version_dir) / LINEAGE_FILE).read_text()))
    except (OSError, ValueError, TypeError):
        return None


def span_ranges(spans: List[int]) -> str:
    """[1, 2, 3, 5] -> '1-3, 5'."""
    ranges: List[List[int]] = []
    for span in sorted(set(spans)):
        if ranges and span == ranges[-1][1] + 1:
            ranges[-1][1] = span
        else:
            ranges.append([span, span])
    return ", ".join(f"{a}-{b}" if a != b else f"{a}" for a, b in ranges)
