"""Shared fixtures. Tests marked `e2e` run the real thing (a TFX pipeline, a server process)."""

from __future__ import annotations

import pytest

from toolkit_testing import write_fake_saved_model


@pytest.fixture
def make_fake_saved_model():
    return write_fake_saved_model
