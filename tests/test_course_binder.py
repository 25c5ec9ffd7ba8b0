"""The Binder environment (binder/) works: a fresh virtual environment built from
binder/requirements.txt runs a chapter, binder/start sets the thread variables, and the
configuration opens JupyterLab on chapters/.  On its way, the same environment proves the
learner's install: with the course's runtime requirements alone (no ``tools`` extra), every
module of ``course_utils`` imports and none of the tools' packages (jupytext, jupyterlab,
cloudpickle, nbformat, nbclient) is there.

The build mirrors what repo2docker does on mybinder.org (``pip install -r
binder/requirements.txt`` from the repository root, then ``binder/start`` wraps the server),
with one difference: the CPU-only package index line is left out (it is not reachable from
every test machine) and the CPU torch wheel is installed explicitly first, pinned to the
``+cpu`` build this machine runs, so that no step can fall back to a multi-GB CUDA build.
pip's own download cache makes the second run faster.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import pytest

from course_utils import CHAPTER_GLOB
from course_utils.training import SMOKE_STEPS_ENV

ROOT = Path(__file__).resolve().parents[1]
BINDER = ROOT / "binder"
REQUIREMENTS = BINDER / "requirements.txt"
START = BINDER / "start"
# The chapter Binder runs here: the learner notebook that runs fastest (about 55 s, against 155 s
# for chapter 01), since tests/test_course_chapters.py already runs every learner notebook and
# this test is about the environment, not the chapter.
CHAPTER = ROOT / "chapters" / "05b_sae_language_model.ipynb"
# ... and in smoke mode, as tests/test_course_chapters.py runs it: every training loop stops
# after 20 steps (the kernel inherits the environment of nbconvert).
SMOKE_STEPS = "20"
CONSTRAINTS = ROOT / "requirements" / "constraints.txt"
CPU_INDEX = "https://download.pytorch.org/whl/cpu"
THREAD_VARIABLES = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "SUPERPOSITION_THREADS": "1"}
INDEX_OPTIONS = ("--index-url", "--extra-index-url", "-i ", "--find-links", "-f ")

# The packages of the `tools` extra that a learner's install must not need.
TOOLS_ONLY = ("jupytext", "jupyterlab", "cloudpickle", "nbformat", "nbclient")
# Every module and subpackage of this checkout's course_utils (device, toy_models, ..., checks,
# widgets, colab, training, _fast): each must import in the learner's install.
COURSE_UTILS = ROOT / "course_utils"
LEARNER_MODULES = {"course_utils"} | {f"course_utils.{path.stem}" for path in COURSE_UTILS.glob("*.py")
                                      if path.stem != "__init__"} \
    | {f"course_utils.{path.parent.name}" for path in COURSE_UTILS.glob("*/__init__.py")}

# Run in the learner's install: which tools' packages are importable, and every module of
# course_utils (each package's submodules too, ``checks`` and ``_fast`` included), imported.
LEARNER_PROBE = """\
import importlib, importlib.util, json, pkgutil
import course_utils
found = [name for name in {tools!r} if importlib.util.find_spec(name) is not None]
modules = ["course_utils"] + [m.name for m in pkgutil.walk_packages(course_utils.__path__, "course_utils.")]
for name in modules:
    importlib.import_module(name)
print("PROBE", json.dumps({{"tools": found, "modules": modules, "file": course_utils.__file__}}))
"""

PROBE_CELL = """\
import json, os, sys, torch
print("PROBE", json.dumps({"prefix": sys.prefix, "omp": os.environ.get("OMP_NUM_THREADS"),
                           "threads": torch.get_num_threads(), "cuda": torch.version.cuda}))
"""


def requirement_lines(text: str | None = None) -> list[str]:
    """binder/requirements.txt without comments, blank lines and package-index options; a
    constraints file (``-c``, relative to binder/ as pip reads it) as an absolute path."""
    text = REQUIREMENTS.read_text() if text is None else text
    lines = [line.split(" #")[0].strip() for line in text.splitlines()]
    lines = [line for line in lines if line and not line.startswith("#") and not line.startswith(INDEX_OPTIONS)]
    return [f"-c {(BINDER / line[2:].strip()).resolve()}" if line.startswith("-c ") else line for line in lines]


def torch_requirement() -> list[str]:
    """pip arguments for the CPU build of this machine's torch (a ``+cpu`` version, which no
    CUDA build on PyPI can satisfy)."""
    import torch

    version = torch.__version__
    if version.endswith("+cpu"):
        return [f"torch=={version}"]  # here: the local wheel that pip's find-links provides
    return [f"torch=={version.split('+')[0]}+cpu", "--extra-index-url", CPU_INDEX]


# ---------------------------------------------------------------------------------------
# Cheap checks of the configuration


def test_requirement_lines_drop_comments_and_the_index():
    text = "# comment\n--extra-index-url https://x/cpu\ntorch>=2.1  # CPU\n\n-e .\n"
    assert requirement_lines(text) == ["torch>=2.1", "-e ."]
    lines = requirement_lines()
    assert "-e .[tools]" in lines, "Binder installs the course and its tools (doctor, workspace) from the repository"
    assert f"-c {ROOT / 'requirements' / 'constraints.txt'}" in lines, "Binder installs the pinned versions"
    assert any(line.startswith("ipywidgets>=8") for line in lines)
    assert any(line.startswith("jupyterlab_widgets>=3") for line in lines)


def test_binder_uses_cpu_torch_and_the_supported_python():
    text = REQUIREMENTS.read_text()
    assert f"--extra-index-url {CPU_INDEX}" in text, "Binder has no GPU: the CPU wheel keeps the image small"
    runtime = (BINDER / "runtime.txt").read_text().strip()
    assert re.fullmatch(r"python-3\.(1[0-9])", runtime), runtime
    pyproject = (ROOT / "pyproject.toml").read_text()
    minimum = re.search(r'requires-python = ">=3\.(\d+)"', pyproject)
    assert minimum and int(runtime.split(".")[1]) >= int(minimum.group(1))


def test_binder_opens_jupyterlab_on_the_chapters():
    readme = (ROOT / "README.md").read_text()
    badge = re.search(r"https://mybinder\.org/v2/gh/[^)\s]+", readme)
    assert badge, "README has no Binder badge"
    assert badge.group(0).endswith("?urlpath=lab/tree/chapters")
    assert sorted((ROOT / "chapters").glob(CHAPTER_GLOB + ".ipynb")), "the badge opens chapters/"


def test_binder_start_sets_the_thread_variables_and_runs_the_command():
    assert os.access(START, os.X_OK), "repo2docker runs binder/start as a program: it must be executable"
    env = {k: v for k, v in os.environ.items() if k not in THREAD_VARIABLES}
    shown = subprocess.run([str(START), "env"], env=env, capture_output=True, text=True, check=True).stdout
    variables = dict(line.split("=", 1) for line in shown.splitlines() if "=" in line)
    assert {k: variables.get(k) for k in THREAD_VARIABLES} == THREAD_VARIABLES
    # it hands over to the server's command (exec "$@"), exit status included
    assert subprocess.run([str(START), "sh", "-c", "exit 3"], env=env).returncode == 3


# ---------------------------------------------------------------------------------------
# The environment itself


def _run(command, log: list[str], **kwargs) -> subprocess.CompletedProcess:
    started = time.monotonic()
    result = subprocess.run(command, capture_output=True, text=True, **kwargs)
    log.append(f"{time.monotonic() - started:6.1f} s  {' '.join(map(str, command))[:160]}")
    assert result.returncode == 0, f"{command} failed ({result.returncode}):\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result


@pytest.mark.slow
@pytest.mark.skipif(sys.platform != "linux", reason="Binder images are Linux; the venv layout and CPU wheel are Linux's")
def test_a_fresh_binder_environment_runs_a_chapter(tmp_path):
    log: list[str] = []
    venv = tmp_path / "venv"
    python = venv / "bin" / "python"
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    env.update(
        PATH=f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}",
        PYTHONNOUSERSITE="1",
        # no Jupyter configuration, kernelspec or runtime file of this machine leaks in
        JUPYTER_CONFIG_DIR=str(tmp_path / "jupyter" / "config"),
        JUPYTER_DATA_DIR=str(tmp_path / "jupyter" / "data"),
        JUPYTER_RUNTIME_DIR=str(tmp_path / "jupyter" / "runtime"),
        JUPYTER_PLATFORM_DIRS="0",
    )
    _run([sys.executable, "-m", "venv", venv], log)  # not --system-site-packages
    pip = [python, "-m", "pip", "install", "--progress-bar", "off", "--disable-pip-version-check"]
    _run([*pip, *torch_requirement()], log, env=env)

    # First the learner's install: the package with its runtime requirements only.
    _run([*pip, "-e", ROOT, "-c", CONSTRAINTS], log, env=env, cwd=tmp_path)
    probe = _run([python, "-c", LEARNER_PROBE.format(tools=TOOLS_ONLY)], log, env={**env, "MPLBACKEND": "Agg"},
                 cwd=tmp_path).stdout
    learner = json.loads(probe.split("PROBE ", 1)[1].splitlines()[0])
    assert Path(learner["file"]).resolve().parents[1] == ROOT, "the venv imports this checkout's course_utils"
    assert learner["tools"] == [], f"the learner's install pulled in the tools' packages {learner['tools']}"
    assert {"course_utils.toy_models", "course_utils.sae", "course_utils.checks"} <= LEARNER_MODULES
    assert LEARNER_MODULES <= set(learner["modules"]), LEARNER_MODULES - set(learner["modules"])

    # Then Binder's: the tools and JupyterLab on top, at the pinned versions.
    requirements = tmp_path / "requirements.txt"
    requirements.write_text("\n".join(requirement_lines()) + "\n")
    _run([*pip, "-r", requirements], log, env=env, cwd=ROOT)  # `-e .[tools]` is the repository, as on Binder

    installed = _run([python, "-m", "pip", "list", "--format=json"], log, env=env).stdout
    names = {re.sub(r"[-_.]+", "-", d["name"]).lower() for d in json.loads(installed)}
    assert {"torch", "ipywidgets", "jupyterlab", "jupyterlab-widgets", "superposition-course"} <= names
    assert not {n for n in names if n.startswith("nvidia")}, "a CUDA torch was pulled in"

    doctor = _run([python, "-m", "course_tools.doctor"], log, env=env, cwd=tmp_path).stdout
    assert "[FAIL]" not in doctor, doctor
    assert "[OK] every installed package is at the version the course was tested with" in doctor, doctor

    # a learner's chapter, as Binder runs it (through binder/start), plus one probe cell
    nb = nbformat.read(CHAPTER, as_version=4)
    nb.cells.append(nbformat.v4.new_code_cell(PROBE_CELL))
    work = tmp_path / "chapters"
    work.mkdir()
    nbformat.write(nb, work / CHAPTER.name)
    _run([START, python, "-m", "jupyter", "nbconvert", "--to", "notebook", "--execute",
          "--ExecutePreprocessor.timeout=600", "--ExecutePreprocessor.kernel_name=python3",
          "--output", "executed.ipynb", work / CHAPTER.name], log, env={**env, SMOKE_STEPS_ENV: SMOKE_STEPS}, cwd=work)
    print("\n".join(log))

    executed = nbformat.read(work / "executed.ipynb", as_version=4)
    code = [c for c in executed.cells if c.cell_type == "code"]
    assert all(c.execution_count is not None for c in code), "every cell ran"
    errors = [o for c in code for o in c.outputs if o.output_type == "error"]
    assert not errors, errors
    text = "".join(o.get("text", "") for c in code for o in c.outputs if o.output_type == "stream")
    assert "Traceback" not in text
    assert "[not attempted]" in text and "[passed]" not in text, "the learner's stubs, checked"
    probe = json.loads(text.split("PROBE ", 1)[1].splitlines()[0])
    assert Path(probe["prefix"]).resolve() == venv.resolve(), "the kernel ran in the Binder venv"
    assert probe["omp"] == "1" and probe["threads"] == 1, probe
    assert probe["cuda"] is None, "CPU torch, as on Binder"
