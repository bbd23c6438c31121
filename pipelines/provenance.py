"""Which code made a model: the project's git commit and whether the tree had changes."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Optional, Tuple

PROJECT_ROOT = Path(__file__).resolve().parents[1]


def git_state(root: Path = PROJECT_ROOT) -> Tuple[str, Optional[bool]]:
    """(commit, dirty); ("", None) where the project is not a git checkout."""
    def git(*args: str) -> Optional[str]:
        try:
            proc = subprocess.run(["git", "-C", str(root), *args], capture_output=True,
                                  text=True, timeout=30)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return proc.stdout if proc.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    if commit is None:
        return "", None
    status = git("status", "--porcelain", "--untracked-files=no")
    return commit.strip(), (bool(status.strip()) if status is not None else None)
