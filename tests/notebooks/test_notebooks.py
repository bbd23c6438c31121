"""The committed notebooks: no outputs (readable diffs), the project's kernel, parameters."""

from __future__ import annotations

import nbformat
import pytest

from toolkit_testing import NOTEBOOK_KERNEL, NOTEBOOKS, PARAMETERS_TAG

PATHS = sorted(NOTEBOOKS.glob("*.ipynb"))


def test_the_mnist_experiment_is_among_the_notebooks():
    assert NOTEBOOKS / "mnist_experiment.ipynb" in PATHS


@pytest.mark.parametrize("path", PATHS, ids=lambda p: p.name)
def test_notebooks_are_committed_without_outputs(path):
    notebook = nbformat.read(str(path), as_version=4)
    nbformat.validate(notebook)
    executed = [f"cell {i}: {cell.source.splitlines()[0] if cell.source else ''!r}"
                for i, cell in enumerate(notebook.cells) if cell.cell_type == "code"
                and (cell.outputs or cell.execution_count is not None
                     or "execution" in cell.metadata)]
    assert not executed, (f"{path.name} has outputs or execution counts (clear them: "
                          f"Edit > Clear Outputs of All Cells, then save): {executed}")


@pytest.mark.parametrize("path", PATHS, ids=lambda p: p.name)
def test_notebooks_name_the_project_kernel_and_one_parameters_cell(path):
    notebook = nbformat.read(str(path), as_version=4)
    assert notebook.metadata.kernelspec.name == NOTEBOOK_KERNEL
    tagged = [cell for cell in notebook.cells if PARAMETERS_TAG in cell.metadata.get("tags", [])]
    assert len(tagged) == 1 and tagged[0].cell_type == "code"
