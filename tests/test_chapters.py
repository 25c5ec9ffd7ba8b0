"""The learner notebooks run top to bottom as a learner first opens them: every exercise is a
stub, every check says "not attempted", nothing else fails, and memory stays within Binder's
2 GB.  (The solutions notebooks are checked cell by cell by nbval in `make test`.)"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from course_utils import CHAPTER_GLOB
from course_utils.build import measure_notebook

ROOT = Path(__file__).resolve().parents[1]
CHAPTERS = sorted((ROOT / "chapters").glob(CHAPTER_GLOB + ".ipynb"))
MEMORY_LIMIT_MB = 2048


def test_there_are_chapters():
    assert CHAPTERS, "no chapters/NN_*.ipynb: run python -m course_utils.build"


def stream_text(cell) -> str:
    return "".join(o.get("text", "") for o in cell.get("outputs", []) if o.get("output_type") == "stream")


@pytest.mark.parametrize("path", CHAPTERS, ids=[p.stem for p in CHAPTERS])
def test_learner_notebook_runs_with_stubs(path, tmp_path):
    nb, _, peak = measure_notebook(path)
    n_exercises = sum("raise NotImplementedError" in c.source for c in nb.cells if c.cell_type == "code")
    errors = [o for c in nb.cells for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors, [f"{e['ename']}: {e['evalue']}" for e in errors]
    lines = [line for cell in nb.cells if cell.cell_type == "code" for line in stream_text(cell).splitlines()]
    outcomes = [line for line in lines if re.match(r"\[(passed|failed|not attempted)\]", line)]
    assert n_exercises > 0
    assert len(outcomes) >= n_exercises
    assert all(line.startswith("[not attempted]") for line in outcomes), outcomes
    assert peak < MEMORY_LIMIT_MB, f"{path.name} peaked at {peak:.0f} MB"
