"""Helpers shared by test modules (conftest.py only holds fixtures: with several conftest
files in the tree, `from conftest import ...` would pick whichever was imported first)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from components.infra_validation import OFFICIAL_IMAGE, STANDIN_IMAGE, serving_image_status

ROOT = Path(__file__).resolve().parents[1]


def write_fake_saved_model(path: Path, payload: bytes = b"graph", variables_size: int = 16) -> Path:
    """The files a server looks for, with no TensorFlow: enough for repository tests."""
    (path / "variables").mkdir(parents=True, exist_ok=True)
    (path / "variables" / "variables.data-00000-of-00001").write_bytes(b"\0" * variables_size)
    (path / "variables" / "variables.index").write_bytes(b"index")
    (path / "saved_model.pb").write_bytes(payload)
    return path


def run_cli(*args: str, cwd: Path = ROOT, timeout: float = 600) -> subprocess.CompletedProcess:
    """Run `python -m <args>` the way a user or cron would, capturing its output."""
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    return subprocess.run([sys.executable, "-m", *args], cwd=cwd, env=env, text=True,
                          capture_output=True, timeout=timeout)


def require_docker(config, need_image: bool = True) -> None:
    """Skip a docker test where no daemon (or image) is available, saying why; with
    `--require-docker` (as .ci/run passes) fail instead, so CI cannot pass by skipping."""
    reason = serving_image_status(test_image())
    if reason and (need_image or reason.startswith("no Docker daemon")):
        if config.getoption("require_docker"):
            pytest.fail(reason)
        pytest.skip(reason)


def test_image() -> str:
    """The official image when present, else the stand-in from `make serving-image`."""
    return STANDIN_IMAGE if serving_image_status(OFFICIAL_IMAGE) else OFFICIAL_IMAGE


test_image.__test__ = False  # not a test
