"""What `status` shows, for people (text) and scripts (`--json`)."""

from __future__ import annotations

import dataclasses
from typing import Dict, List, Optional

from serving.lifecycle.health import ModelStatus
from serving.lifecycle.state import ServerState
from serving.lineage import Lineage
from serving.rollouts import Rollout


@dataclasses.dataclass
class ModelReport:
    model: str
    expected_version: Optional[int]   # the rollout record's stable version
    status: ModelStatus
    record: Optional[Rollout] = None
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
        r = self.record
        return {"model": self.model, "expected_version": self.expected_version,
                "stable": r.stable if r else None, "previous": r.previous if r else None,
                "canary": r.canary if r else None, "labels": r.labels() if r else {},
                "hold": dataclasses.asdict(r.hold) if r and r.hold else None,
                "stable_verified": r.stable_verified if r else False, "healthy": self.healthy,
                "waiting": self.waiting,
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
    # A fleet's replicas (swarm): task, node, health, and each model's versions and labels.
    replicas: List[dict] = dataclasses.field(default_factory=list)

    @property
    def healthy(self) -> bool:
        """Running, and every model healthy or waiting for its first version."""
        return self.running and all(m.healthy or m.waiting for m in self.models)

    def to_json(self) -> dict:
        s = self.state
        return {"backend": s.backend, "running": self.running, "healthy": self.healthy,
                "handle": s.handle, "name": s.name, "image": s.image,
                "repository": s.repository, "addresses": s.addresses.to_json(),
                "endpoint_mode": s.endpoint_mode, "replicas": self.replicas,
                "models": [m.to_json() for m in self.models]}

    def to_text(self) -> str:
        s = self.state
        lines = [f"backend {s.backend} ({'running' if self.running else 'NOT running'})"
                 f"{' image ' + s.image if s.image else ''}  {s.name}",
                 f"REST {s.addresses.rest_url}  gRPC {s.addresses.grpc_target}",
                 f"repository {s.repository}"]
        if s.endpoint_mode:
            lines.append(f"endpoint: {s.endpoint_mode}")
        for r in self.replicas:
            models = "; ".join(
                f"{m}: {', '.join(f'v{v} {st}' for v, st in view['versions'].items()) or '-'}"
                f" labels {view['labels']}" for m, view in (r.get("models") or {}).items())
            ports = r["addresses"]
            lines.append(f"replica {r['name']} task {r['task']} node {r['node']}: {r['state']}"
                         f"{', ' + r['health'] if r['health'] else ''}"
                         f"{', REST ' + str(ports['rest_port']) if ports else ''}; {models}")
        for m in self.models:
            if m.waiting:
                lines.append(f"{m.model}: waiting for a first version in {m.base_path}")
                continue
            flag = "healthy" if m.healthy else "UNHEALTHY"
            r = m.record
            roles = "" if r is None else "".join(
                [f", previous {r.previous}" if r.previous is not None else "",
                 f", canary {r.canary}" if r.canary is not None else "",
                 "" if r.stable_verified else " (stable not verified through a server)",
                 f"; {r.hold.describe().upper()[:4]}{r.hold.describe()[4:]}" if r.hold else ""])
            lines.append(f"{m.model}: {flag}, stable version {m.expected_version}{roles}; "
                         f"loaded {m.status.available() or 'nothing'}")
            lines += [f"  WARNING: {w}" for w in m.warnings]
            if m.status.error:
                lines.append(f"  error: {m.status.error}")
            for v in m.status.versions:
                err = f"  {v.error_code}: {v.error_message}" if v.error_message else ""
                lines.append(f"  version {v.version}: {v.state}{err}")
                if v.version in m.lineage and v.state == "AVAILABLE":
                    lines.append(f"    from {m.lineage[v.version].describe()}")
        return "\n".join(lines)
