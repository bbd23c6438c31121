"""Small real filesystems to fill up: a tmpfs mounted for one test (root or CAP_SYS_ADMIN;
skipped where mounting is not permitted, except under CI, where that fails the test)."""

from __future__ import annotations

import contextlib
import os
import subprocess
from pathlib import Path
from typing import Iterator

import pytest

KiB = 1024


@contextlib.contextmanager
def tmpfs(path: Path, size: int) -> Iterator[Path]:
    """A tmpfs of `size` bytes at `path` for the `with` block; the test is skipped, saying
    why, where mounting is not permitted."""
    path.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        why = (f"cannot mount a tmpfs to fill up (needs root or CAP_SYS_ADMIN): "
               f"{done.stderr.strip()}")
        if os.environ.get("CI"):  # CI (.ci/run) runs as root: it must not pass by skipping
            pytest.fail(why)
        pytest.skip(why)
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def resize(path: Path, size: int) -> None:
    """Grow (or shrink) a mounted tmpfs: space freed, as an operator would free it."""
    subprocess.run(["mount", "-o", f"remount,size={size}", str(path)], check=True)
