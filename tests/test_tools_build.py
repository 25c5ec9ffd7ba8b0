"""The authoring pipeline: solution stripping, building, and the drift check."""

from __future__ import annotations

import json
import time

import nbformat
import pytest

from course_tools import build
from course_tools.build import BuildError, build_chapter, check, strip_solutions
from course_utils.colab import COLAB_FIRST_CELL


def _code(text: str) -> str:
    """Strip a one-cell percent source and return the learner text."""
    return strip_solutions(text, "chapter.py")


# --------------------------------------------------------------------------------------
# strip_solutions
# --------------------------------------------------------------------------------------


def test_region_in_a_method_is_stubbed_at_the_marker_indentation_and_named():
    source = """# %%
class Model:
    def forward(self, x):
        if x is not None:
            ### BEGIN SOLUTION
            y = x * 2
            return y
            ### END SOLUTION
        return None
"""
    assert _code(source) == """# %%
class Model:
    def forward(self, x):
        if x is not None:
            # YOUR CODE HERE
            raise NotImplementedError("exercise: Model.forward")
        return None
"""


def test_multiple_regions_across_cells_each_get_their_own_stub():
    source = """# %%
def f(x):
    ### BEGIN SOLUTION
    return x + 1
    ### END SOLUTION


def g(x):
    y = x
    ### BEGIN SOLUTION
    y = y * 3
    ### END SOLUTION
    return y

# %%
### BEGIN SOLUTION
threshold = 0.5
### END SOLUTION
print(threshold)
"""
    learner = _code(source)
    assert learner.count("# YOUR CODE HERE") == 3
    assert '    raise NotImplementedError("exercise: f")\n' in learner
    assert '    raise NotImplementedError("exercise: g")\n    return y\n' in learner
    # A top-level region is named after the first name it assigns, at column 0.
    assert '# YOUR CODE HERE\nraise NotImplementedError("exercise: threshold")\nprint(threshold)\n' in learner
    assert "x + 1" not in learner and "y * 3" not in learner and "0.5" not in learner
    compile(learner, "learner.py", "exec")  # still valid Python


def test_stubbed_function_raises_not_implemented_with_its_name():
    learner = _code("# %%\ndef area(r):\n    ### BEGIN SOLUTION\n    return 3.14 * r * r\n    ### END SOLUTION\n")
    namespace: dict = {}
    exec(compile(learner, "learner.py", "exec"), namespace)
    with pytest.raises(NotImplementedError, match="exercise: area"):
        namespace["area"](1.0)


def test_hidden_lines_are_removed_without_a_stub():
    source = """# %%
result = 2 + 2
    ### BEGIN HIDDEN
assert result == 4, "grader-only check"
    ### END HIDDEN
print(result)
"""
    assert _code(source) == "# %%\nresult = 2 + 2\nprint(result)\n"


def test_solution_only_cells_are_removed_and_other_cells_kept_line_for_line():
    source = """# %% [markdown]
# Intro

# %% tags=["solution-only"]
print("author's sanity check")

# %% tags=["nbval-ignore-output"]
print("kept")
"""
    assert _code(source) == '# %% [markdown]\n# Intro\n\n# %% tags=["nbval-ignore-output"]\nprint("kept")\n'


def test_markdown_regions_become_an_answer_prompt():
    source = "# %% [markdown]\n# Why?\n#\n# ### BEGIN SOLUTION\n# Because of superposition.\n# ### END SOLUTION\n"
    assert _code(source) == "# %% [markdown]\n# Why?\n#\n# YOUR ANSWER HERE\n"


def test_jupytext_pairing_is_dropped_from_the_learner_header():
    source = "# ---\n# jupyter:\n#   jupytext:\n#     formats: ipynb,py:percent\n# ---\n\n# %%\nx = 1\n"
    learner = _code(source)
    assert "formats" not in learner
    assert learner.endswith("# ---\n\n# %%\nx = 1\n")


@pytest.mark.parametrize(
    "source, line, words",
    [
        ("# %%\nx = 1\n### BEGIN SOLUTION\ny = 2\n", 3, "not closed"),
        ("# %%\nx = 1\n### END SOLUTION\n", 3, "without a matching"),
        ("# %%\n### BEGIN SOLUTION\n### BEGIN HIDDEN\n### END HIDDEN\n### END SOLUTION\n", 3, "nested"),
        ("# %%\n### BEGIN SOLUTION\n### BEGIN SOLUTION\n### END SOLUTION\n", 3, "nested"),
        ("# %%\n### BEGIN HIDDEN\nx = 1\n### END SOLUTION\n", 4, "closes the '### BEGIN HIDDEN'"),
        # a region may not run across a cell boundary
        ("# %%\n### BEGIN SOLUTION\nx = 1\n\n# %%\n### END SOLUTION\n", 2, "not closed"),
        # markers in a solution-only cell are still checked
        ('# %% tags=["solution-only"]\n### BEGIN SOLUTION\n', 2, "not closed"),
    ],
)
def test_bad_markers_name_the_file_and_line(source, line, words):
    with pytest.raises(BuildError, match=f"^chapter.py:{line}: .*{words}"):
        _code(source)


# --------------------------------------------------------------------------------------
# Building a chapter (the demo fixture, built and executed once per session)
# --------------------------------------------------------------------------------------


def _read(path):
    return nbformat.read(str(path), as_version=4)


def test_build_writes_an_executed_solutions_notebook(built_demo):
    nb = _read(built_demo / "solutions" / "01_demo.ipynb")
    code = [cell for cell in nb.cells if cell.cell_type == "code"]
    assert code[0].source == COLAB_FIRST_CELL
    assert [cell.execution_count for cell in code] == [1, 2, 3, 4, 5, 6, 7]
    assert code[2].outputs[0].text == "[0, 2, 4]\n"  # the solution ran
    assert "### BEGIN SOLUTION" in code[1].source  # the solutions notebook keeps the markers
    assert code[6].outputs[0].output_type == "error"  # allowed: tagged raises-exception
    # widgets keep their text/plain only: no random model ids, no widget state
    ((bar,), (output_widget,)) = ([o.data for o in code[i].outputs] for i in (3, 4))
    assert list(bar) == ["text/plain"] and bar["text/plain"].startswith("training:   0%|")
    assert list(output_widget) == ["text/plain"] and output_widget["text/plain"] == "Output()"
    assert set(nb.metadata) == {"kernelspec", "language_info"}
    assert nb.metadata.kernelspec.name == "python3" and "version" not in nb.metadata.language_info
    assert all("execution" not in cell.metadata for cell in nb.cells)


def test_build_writes_learner_notebook_and_script_without_solutions_or_outputs(built_demo):
    chapters = built_demo / "chapters"
    nb = _read(chapters / "01_demo.ipynb")
    text = "\n".join(cell.source for cell in nb.cells)
    assert 'raise NotImplementedError("exercise: double")' in text
    assert "return 2 * x" not in text and "only the author" not in text and "HIDDEN" not in text
    assert all(not cell.get("outputs") and cell.get("execution_count") is None
               for cell in nb.cells if cell.cell_type == "code")
    assert nb.metadata.kernelspec.name == "python3" and "jupytext" not in nb.metadata
    script = (chapters / "01_demo.py").read_text()
    assert "# YOUR CODE HERE" in script and "formats:" not in script


def test_cell_ids_are_deterministic_and_rebuilding_changes_nothing(demo_tree):
    source, solutions, chapters = demo_tree
    before = (chapters / "01_demo.ipynb").read_text()
    # Without execution the solutions notebook would lose its outputs, so build elsewhere.
    assert build_chapter(source, execute=False, solutions_dir=solutions.parent / "scratch",
                         chapters_dir=chapters) == [solutions.parent / "scratch" / "01_demo.ipynb"]
    assert (chapters / "01_demo.ipynb").read_text() == before
    ids = [cell["id"] for cell in json.loads(before)["cells"]]
    assert len(set(ids)) == len(ids)


def test_build_refuses_to_write_a_notebook_whose_cell_raises(fresh_demo):
    source, solutions, chapters = fresh_demo
    source.write_text(source.read_text() + '\n# %%\nimport math\nmath.sqrt(-1)\n')
    with pytest.raises(BuildError) as error:
        build_chapter(source, solutions_dir=solutions, chapters_dir=chapters)
    message = str(error.value)
    line = source.read_text().splitlines().index("import math")  # 0-based: the "# %%" line
    assert message.startswith(f"{source}:{line}: cell 8 (starting 'import math')")
    assert "ValueError: math domain error" in message and "raises-exception" in message
    assert not (solutions / "01_demo.ipynb").exists() and not list(chapters.iterdir())


def test_build_refuses_a_source_whose_first_cell_is_not_the_colab_cell(fresh_demo):
    source, solutions, chapters = fresh_demo
    source.write_text(source.read_text().replace("device = prepare()", "device = prepare()  # edited"))
    with pytest.raises(BuildError, match="COLAB_FIRST_CELL.*--sync-first-cell"):
        build_chapter(source, execute=False, solutions_dir=solutions, chapters_dir=chapters)
    assert build.sync_first_cell(source) is True
    assert build.first_code_cell(source.read_text()) == COLAB_FIRST_CELL
    assert build.sync_first_cell(source) is False


# --------------------------------------------------------------------------------------
# --check
# --------------------------------------------------------------------------------------


def _check(solutions, chapters):
    return check(solutions_dir=solutions, chapters_dir=chapters)


def test_check_passes_on_a_fresh_build_and_is_fast(demo_tree):
    _, solutions, chapters = demo_tree
    start = time.perf_counter()
    assert _check(solutions, chapters) == []
    assert time.perf_counter() - start < 10


def test_check_fails_when_a_generated_cell_differs(demo_tree):
    _, solutions, chapters = demo_tree
    path = chapters / "01_demo.ipynb"
    nb = _read(path)
    nb.cells[2].source = nb.cells[2].source.replace("# YOUR CODE HERE", "return 2 * x")
    nbformat.write(nb, str(path))
    (problem,) = _check(solutions, chapters)
    assert problem.startswith(f"{path}: cell 2 differs") and "source line 6" in problem


def test_check_fails_when_the_learner_script_was_edited(demo_tree):
    _, solutions, chapters = demo_tree
    path = chapters / "01_demo.py"
    path.write_text(path.read_text().replace("print(double", "print(2 * double"))
    (problem,) = _check(solutions, chapters)
    assert problem.startswith(f"{path}: cell 3 differs")


def test_check_fails_when_the_source_changed_since_the_build(demo_tree):
    source, solutions, chapters = demo_tree
    source.write_text(source.read_text() + "\n# %%\nprint('new cell')\n")
    problems = _check(solutions, chapters)
    assert problems == [  # all three generated files are stale
        f"{solutions / '01_demo.ipynb'}: has 8 cells, {source} produces 9",
        f"{chapters / '01_demo.ipynb'}: has 7 cells, {source} produces 8",
        f"{chapters / '01_demo.py'}: has 7 cells, {source} produces 8",
    ]


@pytest.mark.parametrize("missing", ["solutions/01_demo.ipynb", "chapters/01_demo.ipynb", "chapters/01_demo.py"])
def test_check_fails_when_a_generated_file_is_missing(demo_tree, missing):
    _, solutions, chapters = demo_tree
    path = solutions.parent / missing
    path.unlink()
    assert _check(solutions, chapters) == [f"{path}: missing"]


def test_check_fails_when_a_learner_notebook_has_outputs(demo_tree):
    _, solutions, chapters = demo_tree
    path = chapters / "01_demo.ipynb"
    nb = _read(path)
    nb.cells[3].outputs = [nbformat.v4.new_output("stream", name="stdout", text="[0, 2, 4]\n")]
    nbformat.write(nb, str(path))
    (problem,) = _check(solutions, chapters)
    assert problem.startswith(f"{path}: cell 3 has outputs")


def test_check_fails_when_the_solutions_notebook_was_never_executed(demo_tree):
    source, solutions, chapters = demo_tree
    build_chapter(source, execute=False, solutions_dir=solutions, chapters_dir=chapters)
    (problem,) = _check(solutions, chapters)
    assert problem.startswith(f"{solutions / '01_demo.ipynb'}: not executed")


def test_check_fails_when_the_first_cell_is_not_the_colab_cell(demo_tree):
    source, solutions, chapters = demo_tree
    source.write_text(source.read_text().replace("from course_utils.colab import prepare\n", ""))
    (problem,) = _check(solutions, chapters)
    assert problem.startswith(str(source)) and "COLAB_FIRST_CELL" in problem


def test_check_reports_generated_files_without_a_source(demo_tree):
    _, solutions, chapters = demo_tree
    (chapters / "02_orphan.ipynb").write_text((chapters / "01_demo.ipynb").read_text())
    (problem,) = _check(solutions, chapters)
    assert "02_orphan.ipynb: generated file without a source" in problem


def test_check_fails_when_there_are_no_sources(tmp_path):
    assert "no chapter sources" in check(solutions_dir=tmp_path, chapters_dir=tmp_path)[0]


def test_main_check_exit_codes_and_report(demo_tree, capsys):
    _, solutions, chapters = demo_tree
    dirs = ["--solutions-dir", str(solutions), "--chapters-dir", str(chapters)]
    assert build.main(["--check", *dirs]) == 0
    (chapters / "01_demo.py").unlink()
    assert build.main(["--check", *dirs]) == 1
    out = capsys.readouterr().out
    assert f"[DRIFT] {chapters / '01_demo.py'}: missing" in out


def test_main_no_execute_builds_everything_then_check_flags_the_unexecuted_notebook(fresh_demo, capsys):
    source, solutions, chapters = fresh_demo
    dirs = ["--solutions-dir", str(solutions), "--chapters-dir", str(chapters)]
    assert build.main(["--no-execute", *dirs]) == 0
    assert sorted(p.name for p in chapters.iterdir()) == ["01_demo.ipynb", "01_demo.py"]
    assert build.main(["--check", *dirs]) == 1
    assert "not executed" in capsys.readouterr().out
