"""The learner notebooks run top to bottom as a learner first opens them: every exercise is a
stub, every check says "not attempted", nothing else fails, and memory stays within Binder's
2 GB.  (The solutions notebooks are checked cell by cell by nbval in `make test`.)"""

from __future__ import annotations

import re
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
CHAPTERS = sorted((ROOT / "chapters").glob("[0-9][0-9]_*.ipynb"))
MEMORY_LIMIT_MB = 2048

PEAK_MEMORY_CELL = """
import resource, sys
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print("PEAK_MB", peak / (1024 * 1024 if sys.platform == "darwin" else 1024))
"""


def test_there_are_chapters():
    assert CHAPTERS, "no chapters/NN_*.ipynb: run python -m course_utils.build"


def stream_text(cell) -> str:
    return "".join(o.get("text", "") for o in cell.get("outputs", []) if o.get("output_type") == "stream")


@pytest.mark.parametrize("path", CHAPTERS, ids=[p.stem for p in CHAPTERS])
def test_learner_notebook_runs_with_stubs(path, tmp_path):
    from nbclient import NotebookClient

    nb = nbformat.read(path, as_version=4)
    n_exercises = sum("raise NotImplementedError" in c.source for c in nb.cells if c.cell_type == "code")
    nb.cells.append(nbformat.v4.new_code_cell(PEAK_MEMORY_CELL))
    NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}},
                   store_widget_state=True).execute()
    lines = [line for cell in nb.cells if cell.cell_type == "code" for line in stream_text(cell).splitlines()]
    outcomes = [line for line in lines if re.match(r"\[(passed|failed|not attempted)\]", line)]
    assert n_exercises > 0
    assert len(outcomes) >= n_exercises
    assert all(line.startswith("[not attempted]") for line in outcomes), outcomes
    peak = float(next(line.split()[1] for line in lines if line.startswith("PEAK_MB")))
    assert peak < MEMORY_LIMIT_MB, f"{path.name} peaked at {peak:.0f} MB"
