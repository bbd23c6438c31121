"""What `status` shows, for people (text) and scripts (`--json`)."""

from __future__ import annotations

import dataclasses
from typing import Dict, List, Optional

from serving.lifecycle.health import ModelStatus
from serving.lifecycle.state import ServerState
from serving.lineage import Lineage


@dataclasses.dataclass
class ModelReport:
    model: str
    expected_version: Optional[int]
    pinned: bool
    status: ModelStatus
    # The lineage record of each version the server reports, where it has one.
    lineage: Dict[int, Lineage] = dataclasses.field(default_factory=dict)
    # The model's directory in the repository (where its first version is awaited).
    base_path: str = ""
    # Versions served or expected that were trained with a non-default profile.
    warnings: List[str] = dataclasses.field(default_factory=list)

    @property
    def healthy(self) -> bool:
        """Healthy = the expected version is AVAILABLE (an open port is not enough)."""
        return self.expected_version is not None and \
            self.status.is_available(self.expected_version)

    @property
    def waiting(self) -> bool:
        """No version published yet, none served: the server waits for the first one, as
        TF Serving does. Not a failure."""
        return self.expected_version is None and not self.status.available()

    def to_json(self) -> dict:
        return {"model": self.model, "expected_version": self.expected_version,
                "pinned": self.pinned, "healthy": self.healthy, "waiting": self.waiting,
                "base_path": self.base_path, "warnings": list(self.warnings),
                "serving": self.status.available(), "error": self.status.error,
                "versions": [{**v, "lineage": self.lineage[v["version"]].to_json()
                              if v["version"] in self.lineage else None}
                             for v in self.status.to_json()["versions"]]}


@dataclasses.dataclass
class ServerReport:
    state: ServerState
    running: bool
    models: List[ModelReport]

    @property
    def healthy(self) -> bool:
        """Running, and every model healthy or waiting for its first version."""
        return self.running and all(m.healthy or m.waiting for m in self.models)

    def to_json(self) -> dict:
        s = self.state
        return {"backend": s.backend, "running": self.running, "healthy": self.healthy,
                "handle": s.handle, "name": s.name, "image": s.image,
                "repository": s.repository, "addresses": s.addresses.to_json(),
                "models": [m.to_json() for m in self.models]}

    def to_text(self) -> str:
        s = self.state
        lines = [f"backend {s.backend} ({'running' if self.running else 'NOT running'})"
                 f"{' image ' + s.image if s.image else ''}  {s.name}",
                 f"REST {s.addresses.rest_url}  gRPC {s.addresses.grpc_target}",
                 f"repository {s.repository}"]
        for m in self.models:
            if m.waiting:
                lines.append(f"{m.model}: waiting for a first version in {m.base_path}")
                continue
            flag = "healthy" if m.healthy else "UNHEALTHY"
            pin = " (pinned by rollback)" if m.pinned else ""
            lines.append(f"{m.model}: {flag}, expects version {m.expected_version}{pin}, "
                         f"serving {m.status.available() or 'nothing'}")
            lines += [f"  WARNING: {w}" for w in m.warnings]
            if m.status.error:
                lines.append(f"  error: {m.status.error}")
            for v in m.status.versions:
                err = f"  {v.error_code}: {v.error_message}" if v.error_message else ""
                lines.append(f"  version {v.version}: {v.state}{err}")
                if v.version in m.lineage and v.state == "AVAILABLE":
                    lines.append(f"    from {m.lineage[v.version].describe()}")
        return "\n".join(lines)
