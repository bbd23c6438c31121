"""Shared fixtures. Tests marked `e2e` run the real thing (a TFX pipeline, a server process)."""

from __future__ import annotations

import pytest

from toolkit_testing import write_fake_saved_model


def pytest_addoption(parser):
    parser.addoption("--require-docker", action="store_true",
                     help="fail docker tests when no daemon or image is available, instead of "
                          "skipping them (CI sets this: it installs and starts Docker)")


@pytest.fixture
def make_fake_saved_model():
    return write_fake_saved_model
