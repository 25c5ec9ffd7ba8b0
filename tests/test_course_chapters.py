"""The learner notebooks run top to bottom as a learner first opens them: every exercise is a
stub, every check says "not attempted", nothing else fails, memory stays within Binder's
2 GB, and where the chapter runs the learner's code it runs the course's reference instead and
says so at every result.  (The solutions notebooks are checked cell by cell by nbval in `make test`.)"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from course_utils import CHAPTER_GLOB
from course_tools.build import measure_notebook

ROOT = Path(__file__).resolve().parents[1]
CHAPTERS = sorted((ROOT / "chapters").glob(CHAPTER_GLOB + ".ipynb"))
MEMORY_LIMIT_MB = 2048
# Chapters whose results run the learner's code (the check returns it, else the reference):
# how many exercises hand the chapter an implementation.
LOAD_BEARING = {"01_toy_models": 9, "02_feature_geometry": 7, "03_incidental_polysemanticity": 6,
                "04_computation_in_superposition": 10, "05a_sparse_autoencoders": 14,
                "05b_sae_language_model": 4, "06_knowledge_editing": 8}


def test_there_are_chapters():
    assert CHAPTERS, "no chapters/NN_*.ipynb: run python -m course_tools.build"


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
    # Load-bearing exercises: each check that hands the chapter an implementation says it is the
    # course's, and every result made with one says so.
    handed = [line for line in lines if line.startswith("  → ")]
    made_with = [line for line in lines if line.startswith("[made with]")]
    assert all(line.startswith("  → using the course's ") for line in handed), handed
    assert all("the course's reference" in line and "your " not in line for line in made_with), made_with
    if path.stem in LOAD_BEARING:
        assert len(handed) >= LOAD_BEARING[path.stem] and len(made_with) >= 5, (handed, made_with)
