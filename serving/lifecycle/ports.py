"""Host ports: check one is free before starting (a clear error beats a crashed server),
or pick an ephemeral one for a backend that cannot report its own."""

from __future__ import annotations

import socket

from serving.lifecycle.errors import EnvironmentProblem

HOST = "127.0.0.1"


def ensure_free(port: int, flag: str) -> None:
    """Raise unless a server could listen on `port` now. The probe binds the way servers
    do, with SO_REUSEADDR (gRPC and the REST server set it, and so does TF Serving), so the
    TIME_WAIT connections a stopped server leaves behind do not count as "in use"; a
    socket that is listening there still does."""
    if port == 0:
        return
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((HOST, port))
        except OSError as e:
            raise port_taken(port, flag, str(e)) from e


def port_taken(port: int, flag: str, reason: str = "") -> EnvironmentProblem:
    return EnvironmentProblem(
        f"port {port} is already in use{f' ({reason})' if reason else ''}",
        next_step=f"stop what listens there (`ss -ltnp 'sport = :{port}'`), or pass "
                  f"{flag} with another port, or {flag} 0 for an ephemeral one")


def pick_free() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]
