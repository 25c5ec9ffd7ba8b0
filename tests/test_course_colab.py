"""The first cell of every chapter, in a simulated Colab and outside it.

Colab is simulated with a fake ``google.colab`` module (its ``output.enable_custom_widget_manager``
records calls) and a recording ``subprocess.run``; "not installed yet" is simulated by making
``importlib.util.find_spec("course_utils")`` return None until the fake pip has run.
"""

from __future__ import annotations

import ast
import importlib.util
import os
import subprocess
import sys
import types
from pathlib import Path

import nbformat
import pytest
import torch

from course_utils import CHAPTER_GLOB

from course_utils import colab
from course_utils.colab import COLAB_FIRST_CELL, REPO_URL, prepare

ROOT = Path(__file__).resolve().parents[1]
CHAPTERS = sorted((ROOT / "chapters").glob(CHAPTER_GLOB + ".ipynb"))
# What the Colab cell's --no-deps install leaves out, so a running chapter must not need it:
# the `tools` extra (jupyterlab, jupyterlab_widgets, jupytext, nbclient, cloudpickle, ...) and
# the test tools.  The chapters need only what Colab has preinstalled.
NOT_ON_COLAB = ("jupytext", "jupyterlab", "jupyterlab_widgets", "nbformat", "nbclient", "nbconvert", "nbval",
                "pytest", "jupyter_server", "cloudpickle")


class FakeColab:
    """A fake Colab: ``google.colab`` in sys.modules, pip calls recorded, course not installed."""

    def __init__(self, monkeypatch, installed: bool = False):
        self.pip_calls: list[list[str]] = []
        self.widget_manager_enabled = 0
        self.installed = installed
        output = types.SimpleNamespace(enable_custom_widget_manager=self._enable)
        module = types.ModuleType("google.colab")
        module.output = output
        monkeypatch.setitem(sys.modules, "google.colab", module)
        real_find_spec = importlib.util.find_spec

        def find_spec(name, *args, **kwargs):
            if name == "course_utils" and not self.installed:
                return None
            return real_find_spec(name, *args, **kwargs)

        monkeypatch.setattr(importlib.util, "find_spec", find_spec)
        monkeypatch.setattr(subprocess, "run", self._run)

    def _enable(self):
        self.widget_manager_enabled += 1

    def _run(self, args, *rest, **kwargs):
        self.pip_calls.append([str(a) for a in args])
        self.installed = True
        return subprocess.CompletedProcess(args, 0)


def run_first_cell() -> dict:
    namespace: dict = {}
    exec(compile(COLAB_FIRST_CELL, "<first cell>", "exec"), namespace)
    return namespace


@pytest.fixture(autouse=True)
def _no_overrides(monkeypatch):
    """No device override from the environment; torch's thread count restored after prepare()."""
    monkeypatch.delenv("SUPERPOSITION_DEVICE", raising=False)
    monkeypatch.delenv("COLAB_RELEASE_TAG", raising=False)
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def test_on_colab_the_first_cell_installs_the_course_once_without_dependencies(monkeypatch):
    fake = FakeColab(monkeypatch)
    namespace = run_first_cell()
    run_first_cell()  # run again (as after "Run all" twice): already installed, no second pip
    assert len(fake.pip_calls) == 1
    (args,) = fake.pip_calls
    assert args[0] == sys.executable and args[1:4] == ["-m", "pip", "install"]
    assert "--no-deps" in args, "Colab's own torch/ipywidgets/jupyter stack must be left alone"
    assert f"git+{REPO_URL}@{colab.REF}" in args
    packages = [a for a in args[4:] if not a.startswith("-")]
    assert packages == [f"git+{REPO_URL}@{colab.REF}"]
    assert not any("torch" in a for a in args), "never installs torch on Colab"
    assert fake.widget_manager_enabled == 2  # prepare() ran each time
    assert isinstance(namespace["device"], torch.device)


def test_on_colab_with_the_course_installed_the_first_cell_does_not_run_pip(monkeypatch):
    fake = FakeColab(monkeypatch, installed=True)
    run_first_cell()
    assert fake.pip_calls == [] and fake.widget_manager_enabled == 1


def test_elsewhere_the_first_cell_installs_nothing_and_leaves_widgets_alone(monkeypatch):
    calls = []
    monkeypatch.delitem(sys.modules, "google.colab", raising=False)
    monkeypatch.setattr(subprocess, "run", lambda *a, **k: calls.append(a))
    namespace = run_first_cell()
    assert calls == []
    assert namespace["device"] == torch.device("cuda" if torch.cuda.is_available() else "cpu")
    assert not colab.in_colab()


def test_prepare_enables_the_widget_manager_only_in_colab(monkeypatch):
    fake = FakeColab(monkeypatch, installed=True)
    prepare()
    assert fake.widget_manager_enabled == 1
    monkeypatch.delitem(sys.modules, "google.colab")
    prepare()
    assert fake.widget_manager_enabled == 1


def test_prepare_survives_a_colab_marker_without_the_colab_module(monkeypatch):
    monkeypatch.delitem(sys.modules, "google.colab", raising=False)
    monkeypatch.setenv("COLAB_RELEASE_TAG", "release-colab-test")
    assert colab.in_colab()
    assert prepare().type in ("cpu", "cuda")


@pytest.mark.parametrize("cuda", [True, False])
def test_prepare_uses_the_gpu_automatically_when_present(monkeypatch, cuda):
    FakeColab(monkeypatch, installed=True)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    assert prepare() == torch.device("cuda" if cuda else "cpu")
    namespace = run_first_cell()
    assert namespace["device"] == torch.device("cuda" if cuda else "cpu")


def _chapter_imports(path: Path) -> list[str]:
    """Every import statement in a chapter's code cells, as source lines."""
    nb = nbformat.read(path, as_version=4)
    statements = []
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        source = "\n".join(line for line in cell.source.splitlines() if not line.lstrip().startswith(("%", "!")))
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                statements.append(ast.unparse(node))
    return statements


BLOCKER = """
import importlib.abc, sys
BLOCKED = set({blocked!r})
class Blocker(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ImportError(f"{{name}} is not on Colab (the course is installed there with --no-deps)")
sys.meta_path.insert(0, Blocker())
for statement in {statements!r}:
    exec(statement)
import course_utils.widgets, course_utils.plots, course_utils.checks, course_utils.colab
box = course_utils.widgets.toy_model_explorer(steps=20)
print("OK", sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED))
"""


@pytest.mark.parametrize("path", CHAPTERS, ids=[p.stem for p in CHAPTERS])
def test_a_chapter_needs_nothing_that_the_no_deps_install_leaves_out(path, tmp_path):
    statements = _chapter_imports(path)
    assert any("course_utils" in s for s in statements)
    script = BLOCKER.format(blocked=NOT_ON_COLAB, statements=statements)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path,
                            env={**os.environ, "MPLBACKEND": "Agg"}, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().splitlines()[-1] == "OK []"


def test_widgets_use_only_what_ipywidgets_7_has():
    """Colab ships ipywidgets 7.7 and the --no-deps install keeps it: the explorer may only use
    widget classes and arguments that exist there (checked against ipywidgets 7.7.1's source)."""
    source = (ROOT / "course_utils" / "widgets.py").read_text()
    used = {node.attr for node in ast.walk(ast.parse(source))
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "widgets"}
    # Play and SelectionSlider (with options, value, description, continuous_update; Play's
    # min, max, step, interval) and jslink: widget_int.py, widget_selection.py and
    # widget_link.py of ipywidgets 7.7.1.
    in_ipywidgets_7 = {"FloatLogSlider", "FloatSlider", "IntSlider", "Output", "HBox", "VBox", "Dropdown",
                       "Checkbox", "Button", "Label", "HTML", "Layout", "interactive", "interact",
                       "Play", "SelectionSlider", "jslink", "IntText", "Text"}  # IntText: widget_int.py; Text: widget_string.py
    assert used <= in_ipywidgets_7, used - in_ipywidgets_7
