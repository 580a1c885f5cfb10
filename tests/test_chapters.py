"""Chapters as users re-run them: committed clean, parameterised, and failing early on bad values."""

from __future__ import annotations

import ast
import time
from pathlib import Path

import nbformat
import papermill
import pytest

from localrank_utils.profiles import PROFILES

CHAPTERS = sorted((Path(__file__).resolve().parent.parent / "chapters").glob("*.ipynb"))


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.stem)
def test_chapter_is_committed_without_outputs_and_has_a_parameters_cell(path):
    nb = nbformat.read(path, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert not any(c.outputs or c.execution_count for c in code), f"{path.name} has stale outputs"
    tagged = [c for c in code if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1 and tagged[0] is code[0]
    assert "profile = None" in tagged[0].source


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.stem)
def test_invalid_parameter_stops_the_chapter_in_its_first_cells(path, tmp_path):
    start = time.perf_counter()
    with pytest.raises(papermill.PapermillExecutionError) as err:
        papermill.execute_notebook(str(path), str(tmp_path / "out.ipynb"), parameters={"device": "tpu"},
                                   progress_bar=False, cwd=str(path.parent), kernel_name="python3")
    assert "device='tpu' is not one of" in str(err.value)
    assert err.value.exec_count <= 3, "the bad value was caught only after work had started"
    assert time.perf_counter() - start < 60


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.stem)
def test_every_listed_parameter_is_one_the_chapter_resolves(path):
    """`papermill -p NAME VALUE` works for exactly the names in the parameters cell."""
    nb = nbformat.read(path, as_version=4)
    cell = next(c for c in nb.cells if "parameters" in c.metadata.get("tags", []))
    listed = {t.targets[0].id for t in ast.parse(cell.source).body if isinstance(t, ast.Assign)}
    chapter = path.stem
    assert listed == {"profile", *PROFILES[chapter]["book"]}
    source = "\n".join(c.source for c in nb.cells if c.cell_type == "code")
    call = source[source.index(f'resolve("{chapter}"'):]
    call = call[: call.index(")")]
    assert all(f"{name}={name}" in call for name in listed - {"profile"}), "a listed parameter is not passed on"
