"""Helpers shared by test modules (conftest.py only holds fixtures: with several conftest
files in the tree, `from conftest import ...` would pick whichever was imported first)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"
NOTEBOOK_KERNEL = "tfx-serving-toolkit"  # the venv's kernel, as `make kernel` registers it
PARAMETERS_TAG = "parameters"  # papermill's convention, which Jupyter users know


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


def execute_notebook(path: Path, parameters: Dict[str, Any], timeout: float = 900):
    """Run a notebook headlessly with nbclient in a real kernel (the one its metadata names),
    as papermill does: `parameters` are set in a cell inserted after the cell tagged
    `parameters`. Returns the executed notebook; raises CellExecutionError at the first
    cell that fails."""
    import nbformat
    from nbclient import NotebookClient

    notebook = nbformat.read(str(path), as_version=4)
    [index] = [i for i, cell in enumerate(notebook.cells)
               if PARAMETERS_TAG in cell.metadata.get("tags", [])]
    notebook.cells.insert(index + 1, nbformat.v4.new_code_cell(
        "\n".join(f"{name} = {value!r}" for name, value in parameters.items()),
        metadata={"tags": ["injected-parameters"]}))
    NotebookClient(notebook, timeout=timeout,
                   resources={"metadata": {"path": str(Path(path).parent)}}).execute()
    return notebook


def record_finished_run(pipeline_root: Path, pipeline: str, run_id: str, outcome, result=None,
                        **facts) -> None:
    """A run of `pipeline` with its outcome recorded in its ML Metadata store under
    `pipeline_root`, as the runners record theirs (`facts`: record_run's keywords)."""
    from pipelines import history, metadata
    from pipelines.config import RunConfig

    path = RunConfig(pipeline_root=pipeline_root).metadata_path(pipeline)
    path.parent.mkdir(parents=True, exist_ok=True)
    metadata.create_run(metadata.open_store(path, create=True), run_id)
    history.record_run(path, run_id, outcome, "", result, **facts)
