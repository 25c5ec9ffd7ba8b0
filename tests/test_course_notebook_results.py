"""`make test` runs each solutions notebook once: nbval executes it, and the reproduction tests
read their values from that same kernel (conftest.py, tests/notebook_results.py).  Proven on a
tiny course tree, run the way the Makefile runs the real one (two xdist workers, loadgroup)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]

TEST_FILE = '''
import pytest
from notebook_results import NotebookResults

RESULTS = NotebookResults("00_demo", answer="answer", squares="[k * k for k in range(4)]")
BROKEN = NotebookResults("00_demo", missing="no_such_name")


def test_reads_the_notebooks_values():
    assert RESULTS.get() == {"answer": 42, "squares": [0, 1, 4, 9]}


def test_a_bad_expression_fails_clearly():
    with pytest.raises(AssertionError, match="NameError: name 'no_such_name' is not defined"):
        BROKEN.get()

'''


def make_tree(root: Path) -> None:
    (root / "solutions").mkdir(parents=True)
    (root / "tests").mkdir()
    shutil.copy(ROOT / "conftest.py", root / "conftest.py")
    shutil.copy(ROOT / "tests" / "notebook_results.py", root / "tests" / "notebook_results.py")
    (root / "tests" / "test_ch00_reproduction.py").write_text(TEST_FILE)
    nb = nbformat.v4.new_notebook()
    # Each execution of the notebook appends to runs.txt: the test counts them.
    nb.cells = [nbformat.v4.new_code_cell("open('runs.txt', 'a').write('run\\n')"),
                nbformat.v4.new_code_cell("answer = 6 * 7\nprint(answer)")]
    nb.cells[1].outputs = [nbformat.v4.new_output("stream", name="stdout", text="42\n")]
    nb.cells[1].execution_count = 1
    nbformat.write(nb, root / "solutions" / "00_demo.ipynb")


def run(root: Path, *args: str) -> subprocess.CompletedProcess:
    """pytest on the tiny tree with only the plugins `make test` uses: a plugin that happens to be
    installed (CI's Python has pytest-benchmark, which warns under xdist) must not decide the
    outcome of a run made with -W error::UserWarning."""
    env = {**os.environ, "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1"}
    command = [sys.executable, "-m", "pytest", "-p", "xdist.plugin", "-p", "nbval.plugin",
               "-p", "no:cacheprovider", "-q", *args]
    return subprocess.run(command, cwd=root, env=env, capture_output=True, text=True, timeout=300)


def test_the_notebook_runs_once_and_the_tests_read_its_kernel(tmp_path):
    make_tree(tmp_path)
    result = run(tmp_path, "-n", "2", "--dist", "loadgroup", "--nbval", "--nbval-current-env",
                 "solutions/00_demo.ipynb", "tests", "-W", "error::UserWarning")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert re.search(r"\b4 passed\b", result.stdout), result.stdout[-2000:]
    assert (tmp_path / "solutions" / "runs.txt").read_text() == "run\n", "the notebook ran more than once"


def test_run_alone_the_tests_execute_the_notebook_themselves(tmp_path):
    make_tree(tmp_path)
    result = run(tmp_path, "tests")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "executing solutions/00_demo.ipynb for its results" in result.stdout  # said, as a warning
    assert (tmp_path / "solutions" / "runs.txt").read_text() == "run\n"


def test_work_units_keep_a_notebook_with_its_reproduction_tests(tmp_path):
    import importlib.util

    spec = importlib.util.spec_from_file_location("root_conftest", ROOT / "conftest.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    work_unit = module.work_unit
    (tmp_path / "solutions").mkdir()
    (tmp_path / "solutions" / "05a_sparse_autoencoders.ipynb").touch()
    unit = lambda nodeid: work_unit(nodeid, tmp_path)  # noqa: E731
    assert unit("solutions/05a_sparse_autoencoders.ipynb::Cell 0") == "05a_sparse_autoencoders"
    assert unit("solutions/05a_sparse_autoencoders::ipynb::Cell 12") == "05a_sparse_autoencoders"  # pytest 9.2
    assert unit("tests/test_ch05a_reproduction.py::test_goldilocks_zone") == "05a_sparse_autoencoders"
    assert unit("tests/test_tools_grade.py::test_one") == unit("tests/test_tools_grade.py::test_two") == "tests/test_tools_grade.py"
    assert unit("tests/test_course_chapters.py::test_run[01]") != unit("tests/test_course_chapters.py::test_run[02]")
    assert unit("tests/test_x.py::test_y@group") == "group"


def test_make_test_names_the_notebooks_before_the_tests_and_uses_two_workers():
    """Otherwise each reproduction test would run before its notebook and execute it again."""
    dry = subprocess.run(["make", "-n", "test", "PYTHON=python3"], cwd=ROOT, capture_output=True, text=True,
                         check=True).stdout.replace("\\\n", " ")
    command = next(line for line in dry.splitlines() if "--nbval" in line)
    assert re.search(r" solutions/\*\.ipynb tests$", command), command
    assert "-n 2 --dist loadgroup" in command and '-m "not full"' in command
    assert "--ignore=tests/fixtures" in command
