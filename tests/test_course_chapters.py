"""The learner notebooks run top to bottom as a learner first opens them: every exercise is a
stub, every check says "not attempted", nothing else fails, memory stays within Binder's
2 GB, and where the chapter runs the learner's code it runs the course's reference instead and
says so at every result.

What runs where.  The models are trained at full size once per `make test`, by nbval in
solutions/*.ipynb (whose outputs and reproduction tests prove the science).  The learner
notebooks here prove the plumbing, which does not depend on how long a model trains, so
`make test` runs them in smoke mode: ``SUPERPOSITION_SMOKE_STEPS`` (``course_utils.training``;
the kernel inherits the environment) caps every training loop at ``SMOKE_STEPS`` steps, or at
the chapter's entry in ``SMOKE_STEPS_FOR`` where the notebook reads its results at a fixed step
(None: it runs at full size).  ``make test-full`` (``-m full``) runs the capped ones at full size
too.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from course_utils import CHAPTER_GLOB
from course_utils.training import SMOKE_STEPS_ENV
from course_tools.build import measure_notebook

ROOT = Path(__file__).resolve().parents[1]
CHAPTERS = sorted((ROOT / "chapters").glob(CHAPTER_GLOB + ".ipynb"))
MEMORY_LIMIT_MB = 2048
# Chapters whose results run the learner's code (the check returns it, else the reference):
# how many exercises hand the chapter an implementation.
LOAD_BEARING = {"00_nearly_orthogonal": 4, "01_toy_models": 9, "02_feature_geometry": 7, "03_incidental_polysemanticity": 6,
                "04_computation_in_superposition": 10, "05a_sparse_autoencoders": 14,
                "05b_sae_language_model": 4, "06_knowledge_editing": 8, "07_memorization": 3}
# The step cap of the learner runs in `make test`: the smallest with which every chapter below
# passes.  A chapter that indexes a training history at a fixed step, or needs a model trained far
# enough to show a structure, needs more (measured; what breaks with less):
SMOKE_STEPS = 20
SMOKE_STEPS_FOR: dict[str, int | None] = {
    # none at present: chapters 02-04 read their histories at the recorded step nearest the one
    # they name, and skip what needs a trained structure (a fit, a motif) when it is absent
}


def smoke_steps_for(path: Path) -> int | None:
    return SMOKE_STEPS_FOR.get(path.stem, SMOKE_STEPS)


CAPPED = [path for path in CHAPTERS if smoke_steps_for(path) is not None]


def test_there_are_chapters():
    assert CHAPTERS, "no chapters/NN_*.ipynb: run python -m course_tools.build"


def stream_text(cell) -> str:
    return "".join(o.get("text", "") for o in cell.get("outputs", []) if o.get("output_type") == "stream")


@pytest.mark.parametrize("path", CHAPTERS, ids=[p.stem for p in CHAPTERS])
def test_learner_notebook_runs_with_stubs(path, monkeypatch):
    """In smoke mode (or at full size where the chapter's entry is None)."""
    run_learner_notebook(path, monkeypatch, smoke_steps_for(path))


@pytest.mark.full
@pytest.mark.parametrize("path", CAPPED, ids=[p.stem for p in CAPPED])
def test_learner_notebook_runs_with_stubs_at_full_size(path, monkeypatch):
    run_learner_notebook(path, monkeypatch, None)


STALL_S = 60


def report_stalls(nb) -> None:
    """Print (pytest shows it with the test's output, and in the junit report) every pause of
    more than STALL_S between one cell's end and the next cell's start, from the kernel's own
    timestamps.  Twice a 600-s pause has appeared under make test's load right after a cell
    that shows a widget with an Output (chapter 02's dynamics scrubber; the build test's demo
    chapter), never when the notebook ran alone.  The cause, and the workaround measure_notebook
    now applies: course_tools.build.waits_in_slices.  This records where, if it comes back."""
    from datetime import datetime

    def when(stamp):
        return datetime.fromisoformat(stamp.replace("Z", "+00:00"))

    previous = None
    for index, cell in enumerate(nb.cells):
        timing = cell.get("metadata", {}).get("execution", {})
        if cell.cell_type != "code" or "iopub.status.busy" not in timing:
            continue
        start = when(timing["iopub.status.busy"])
        if previous is not None and (start - previous[1]).total_seconds() > STALL_S:
            print(f"STALL: {(start - previous[1]).total_seconds():.0f} s between the end of cell {previous[0]} and "
                  f"the start of cell {index} ({cell.source.splitlines()[0][:60] if cell.source else ''!r})")
        end = timing.get("iopub.status.idle") or timing.get("shell.execute_reply")
        previous = (index, when(end)) if end else None


def run_learner_notebook(path: Path, monkeypatch, smoke_steps: int | None) -> None:
    if smoke_steps is None:
        monkeypatch.delenv(SMOKE_STEPS_ENV, raising=False)
    else:
        monkeypatch.setenv(SMOKE_STEPS_ENV, str(smoke_steps))
    nb, _, peak = measure_notebook(path)
    report_stalls(nb)
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
