"""Shared fixtures. Tests marked `e2e` run the real thing (a TFX pipeline, a server process)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def write_fake_saved_model(path: Path, payload: bytes = b"graph", variables_size: int = 16) -> Path:
    """The files a server looks for, with no TensorFlow: enough for repository tests."""
    (path / "variables").mkdir(parents=True, exist_ok=True)
    (path / "variables" / "variables.data-00000-of-00001").write_bytes(b"\0" * variables_size)
    (path / "variables" / "variables.index").write_bytes(b"index")
    (path / "saved_model.pb").write_bytes(payload)
    return path


@pytest.fixture
def make_fake_saved_model():
    return write_fake_saved_model


def run_cli(*args: str, cwd: Path = ROOT, timeout: float = 600) -> subprocess.CompletedProcess:
    """Run `python -m <args>` the way a user or cron would, capturing its output."""
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    return subprocess.run([sys.executable, "-m", *args], cwd=cwd, env=env, text=True,
                          capture_output=True, timeout=timeout)
