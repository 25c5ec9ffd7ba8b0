"""Notebook-testing conventions: nbval really applies tests/nbval_sanitize.cfg, what it
compares (stderr yes, pixels no), what its tags do, and that a freshly built chapter passes.

The fixture notebooks in tests/fixtures/nbval/ hold outputs from one run
(``make_fixtures.py`` regenerates them); every nbval run here recomputes them.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from xml.etree import ElementTree

ROOT = Path(__file__).resolve().parents[1]
SANITIZE = ROOT / "tests" / "nbval_sanitize.cfg"
NBVAL_FIXTURES = ROOT / "tests" / "fixtures" / "nbval"


def run_nbval(*paths: Path, sanitize: bool = True, tmp_path: Path, env: dict | None = None) -> dict[str, str]:
    """Run nbval the way ``make test`` does; return {"<notebook name>::Cell N": outcome}."""
    report = tmp_path / "nbval.xml"
    command = [sys.executable, "-m", "pytest", "--nbval", "--nbval-current-env", "-p", "no:cacheprovider",
               "-q", "-o", "junit_family=xunit1", f"--junitxml={report}", *map(str, paths)]
    if sanitize:
        command[4:4] = ["--nbval-sanitize-with", str(SANITIZE)]
    # Only nbval and the project's own conftest: no plugin that happens to be installed.
    command[3:3] = ["-p", "nbval.plugin"]
    env = {**os.environ, **(env or {}), "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1"}
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert report.exists(), result.stdout + result.stderr
    outcomes = {}
    for case in ElementTree.parse(report).iter("testcase"):
        notebook = Path(case.get("file", "")).name
        kinds = {child.tag for child in case}
        outcome = "FAILED" if kinds & {"failure", "error"} else "SKIPPED" if "skipped" in kinds else "PASSED"
        outcomes[f"{notebook}::{case.get('name')}"] = outcome
    return outcomes


def test_nbval_sanitizer_tags_and_a_freshly_built_chapter(built_demo, tmp_path):
    """One nbval run over three notebooks (each nbval run costs seconds of start-up)."""
    outcomes = run_nbval(
        NBVAL_FIXTURES / "varying.ipynb", NBVAL_FIXTURES / "tags.ipynb", built_demo / "solutions" / "01_demo.ipynb",
        NBVAL_FIXTURES / "approx.ipynb", tmp_path=tmp_path, env={"APPROX_SHIFT": "0.03"},
    )
    # varying.ipynb: a timing, a plain tqdm bar (stderr), a warning naming a temporary file
    # (stderr), an object address, a random figure: all pass once sanitized.
    assert [outcomes[f"varying.ipynb::Cell {i}"] for i in range(5)] == ["PASSED"] * 5
    # tags.ipynb: random stdout tagged nbval-ignore-output passes; tagged nbval-skip is not
    # run; random stderr without a tag fails: nbval compares stderr; a print captured by an
    # ipywidgets Output widget fails untagged (nbval sees it as stdout, the stored notebook
    # does not) and passes tagged nbval-ignore-output.
    assert [outcomes[f"tags.ipynb::Cell {i}"] for i in range(5)] == ["PASSED", "SKIPPED", "FAILED", "FAILED", "PASSED"]
    # the demo chapter as built by course_tools.build (first cell, widgets, raises-exception...)
    assert [outcomes[f"01_demo.ipynb::Cell {i}"] for i in range(7)] == ["PASSED"] * 7
    # approx.ipynb, every number moved by 0.03 (APPROX_SHIFT): tagged nbval-approx-0.05 passes;
    # nbval-approx-0.01 and no tag fail; a latent id moved by 3 fails, and so do changed words.
    assert [outcomes[f"approx.ipynb::Cell {i}"] for i in range(5)] == ["PASSED", "FAILED", "FAILED", "FAILED", "FAILED"]


def test_without_the_sanitizer_varying_cells_fail_but_figure_pixels_are_not_compared(tmp_path):
    outcomes = run_nbval(NBVAL_FIXTURES / "varying.ipynb", sanitize=False, tmp_path=tmp_path)
    assert list(outcomes.values()) == ["FAILED", "FAILED", "FAILED", "FAILED", "PASSED"]
