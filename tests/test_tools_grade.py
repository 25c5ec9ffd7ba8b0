"""The instructor's grader: naming, config, cell plan, the sandbox, and one batch of bad
submissions graded end to end with ``python -m course_tools.grade``.

The batch (``graded``, run once per module) holds one submission per kind of trouble; each
test below asserts the rows and reasons of one of them.  Tiny notebooks keep it fast; the
``--exercises-only`` test uses the real chapter 01 notebook.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import nbformat
import pytest

from course_utils import checks
from course_tools.grade import config as grade_config
from course_tools.grade import execute, submissions, worker

sys.path.insert(0, str(Path(__file__).parent / "fixtures" / "grading"))
import submission_notebooks as nbs  # noqa: E402

EXERCISES = nbs.EXERCISES
PENTAGON = "result:pentagon"  # chapter 01's result check, graded after the exercises (tests/test_tools_grade_results.py)
ROWS = EXERCISES + [PENTAGON]  # the rows of a chapter 01 submission
CHAPTER = "01_toy_models"
MEMORY_MB = 1000

# The batch below (``graded``) is made once: keep every test of this module on one xdist worker.
pytestmark = pytest.mark.xdist_group("grade_batch")


# --------------------------------------------------------------------------------------
# Naming, config, the cell plan (no kernels)
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("path, student, chapter", [
    ("subs/alice/01_toy_models.ipynb", "alice", CHAPTER),
    ("subs/bob__01_toy_models.ipynb", "bob", CHAPTER),
    ("subs/carol/01_toy_models-Copy1.ipynb", "carol", CHAPTER),
    ("subs/dan__01.ipynb", "dan", CHAPTER),
    ("subs/erin/homework.ipynb", "erin", None),
    ("subs/fay__05a_sparse_autoencoders.ipynb", "fay", "05a_sparse_autoencoders"),
    ("subs/gil/05b-Copy1.ipynb", "gil", "05b_sae_language_model"),
    ("subs/hal__05.ipynb", "hal", None),  # 05 alone is ambiguous between 05a and 05b
])
def test_student_and_chapter_come_from_the_file_name(path, student, chapter):
    found = submissions.identify(Path(path), [CHAPTER, "02_geometry", "05a_sparse_autoencoders", "05b_sae_language_model"])
    assert (found.student, found.chapter) == (student, chapter)
    if chapter is None:
        assert "cannot tell the chapter" in found.problem and "--chapter" in found.problem


def test_find_searches_directories_and_skips_checkpoints(tmp_path):
    for name in ["a/01_toy_models.ipynb", "a/.ipynb_checkpoints/01_toy_models-checkpoint.ipynb",
                 "b__01_toy_models.ipynb", "notes.txt"]:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("{}")
    found = submissions.find([tmp_path])
    # every file is a submission (a non-notebook gets a row saying so: tests/test_tools_grade_inputs.py)
    assert [p.relative_to(tmp_path).as_posix() for p in found] == ["a/01_toy_models.ipynb", "b__01_toy_models.ipynb",
                                                                   "notes.txt"]


def test_the_chapter_notebook_defines_the_nine_exercises_in_order():
    assert submissions.chapter_exercises(nbs.CHAPTER.parent, CHAPTER, checks.EXERCISES) == EXERCISES


@pytest.mark.parametrize("chapter", sorted(path.stem for path in (nbs.CHAPTER.parent).glob("[0-9][0-9]*_*.ipynb")))
def test_every_chapter_grades_the_exercises_its_checks_call(chapter):
    """The grader's exercises of a chapter are those whose checks the learner notebook calls,
    not a name it imports to use: chapter 02 imports chapter 01's ``ToyModel`` and
    ``generate_batch``, and the grader failed every chapter-02 submission on them ("imported
    from a module instead of defined in the notebook")."""
    nb = nbformat.read(str(nbs.CHAPTER.parent / f"{chapter}.ipynb"), as_version=4)
    code = "\n".join(cell.source for cell in nb.cells if cell.cell_type == "code")
    called = {name for name, check in checks.EXERCISES.items() if f"checks.{check.__name__}(" in code}
    graded = submissions.chapter_exercises(nbs.CHAPTER.parent, chapter, checks.EXERCISES)
    assert graded and set(graded) == called, (chapter, graded, called)


def test_exercises_only_plan_skips_the_training_cells_of_chapter_01():
    nb = nbformat.read(str(nbs.CHAPTER), as_version=4)
    steps = {step.cell: step for step in execute.plan(nb.cells, EXERCISES, exercises_only=True)}
    heavy = nbs.heavy_cell_indices(nb)
    assert heavy and all(steps[i].mode == "skip" for i in heavy if "import" not in steps[i].source)
    assert [i for i, s in steps.items() if s.role == "setup"] == [2, 3]
    assert [i for i, s in steps.items() if s.role == "exercise"] == [5, 7, 9, 11, 13, 15, 33, 40]
    assert all(s.mode == "cell" for s in steps.values() if s.role != "other")
    widget = next(s for s in steps.values() if "toy_model_explorer()" in s.source)
    assert widget.mode == "definitions" and widget.code.strip() == "from course_utils.widgets import toy_model_explorer"


def test_bound_names_and_definitions_only():
    source = "%matplotlib inline\nimport torch as t\nfrom a import b, c as d\nx, (y, *z) = 1, (2, 3)\n" \
             "if True:\n    def f():\n        inner = 1\ntry:\n    class K: pass\nexcept Exception:\n    pass\n" \
             "train(model)\n@decorator\ndef g(): pass\n"
    assert execute.bound_names(source) == {"t", "b", "d", "x", "y", "z", "f", "K", "g"}
    assert execute.definitions_only(source) == "import torch as t\nfrom a import b, c as d\n@decorator\ndef g(): pass"
    assert execute.bound_names("def broken(:\n  pass\ndef ok(): pass") == {"broken", "ok"}
    # A load-bearing exercise's hand-over is kept with the definitions (later cells use its name),
    # bound to the course's reference without running the learner's code.
    handover = "def toy_forward(): pass\nforward = checks.check_toy_forward(toy_forward)\ny = train(forward)\n" \
               "z = other.check_x(1)\n"
    assert execute.definitions_only(handover) == ("def toy_forward(): pass\n"
                                                  "forward = checks.check_toy_forward.exercise.reference")


@pytest.mark.parametrize("arguments, words", [
    (["nothere"], "no such file or directory: nothere"),
    (["{empty}"], "no notebooks (*.ipynb) or other files found"),
    (["{empty}", "--hidden-seeds", "1,a"], "hidden seeds must be integers"),
    (["{empty}", "--jobs", "0"], "--jobs must be at least 1"),
])
def test_usage_errors_say_what_is_wrong(tmp_path, capsys, arguments, words):
    from course_tools.grade import cli

    with pytest.raises(SystemExit) as exit_info:
        cli.main([a.format(empty=tmp_path) for a in arguments])
    assert exit_info.value.code == 2 and words in capsys.readouterr().err


def test_config_json_and_toml_merge_seeds_and_points(tmp_path):
    (tmp_path / "g.toml").write_text(textwrap.dedent("""
        hidden_seeds = [1001, 3]
        cell_timeout = 30
        [exercises.feature_norms]
        hidden_seeds = [2001]
        points = 2.5
        time_limit = 7
    """))
    config = grade_config.load(tmp_path / "g.toml", set(checks.EXERCISES))
    seeds, hidden = config.seeds("feature_norms", range(4))
    assert seeds == [0, 1, 2, 3, 1001, 2001] and hidden == 2  # seed 3 is a default: not repeated
    assert config.points("feature_norms", 1) == 2.5 and config.points("toy_forward", 1) == 1
    assert config.time_limit("feature_norms") == 7 and config.cell_timeout == 30
    (tmp_path / "g.json").write_text(json.dumps({"exercises": {"nope": {"points": 1}}}))
    with pytest.raises(grade_config.ConfigError, match="exercises.nope: no such exercise"):
        grade_config.load(tmp_path / "g.json", set(checks.EXERCISES))
    (tmp_path / "bad.json").write_text(json.dumps({"hidden_seed": [1]}))
    with pytest.raises(grade_config.ConfigError, match="unknown setting"):
        grade_config.load(tmp_path / "bad.json")
    assert grade_config.parse_seeds("1001, 1002 1003") == (1001, 1002, 1003)


# --------------------------------------------------------------------------------------
# The sandbox: the check runs here, the learner's function runs there
# --------------------------------------------------------------------------------------


def notebook_function(source: str):
    """What the harvest sends for a function defined the way a notebook cell defines it:
    in __main__ (so pickled by value), its cell's text in linecache."""
    import linecache

    from course_tools.grade import harvest

    text = "import torch\nfrom torch import Tensor\n" + source
    filename = f"<cell {abs(hash(text))}>"
    linecache.cache[filename] = (len(text), None, text.splitlines(keepends=True), filename)
    namespace = {"__name__": "__main__"}
    exec(compile(text, filename, "exec"), namespace)
    name = source.split("def ", 1)[1].split("(", 1)[0]
    return harvest.describe(namespace[name])


def grade_functions(definitions: dict, hidden=(), time_limit=5.0):
    config = grade_config.GradingConfig(hidden_seeds=tuple(hidden))
    specs = []
    for name in definitions:
        seeds, n_hidden = config.seeds(name, checks.EXERCISES[name].exercise.seeds)
        specs.append({"name": name, "seeds": seeds, "default_seeds": len(seeds) - n_hidden, "points": 1.0,
                      "time_limit": time_limit, "missing_reason": ""})
    env = dict(os.environ, SUPERPOSITION_THREADS="1")
    notes: list[str] = []
    rows = worker.evaluate(specs, definitions, MEMORY_MB * 2**20, env, None, notes)
    return {row["exercise"]: row for row in rows}, notes


def default_shapes(name: str) -> set[tuple[int, ...]]:
    spec = checks.EXERCISES[name].exercise
    return {tuple(spec.make_case(seed).W.shape) for seed in spec.seeds}


def test_hidden_seeds_catch_a_function_special_cased_for_the_visible_cases():
    """A learner who tuned feature_norms until the notebook's check passed, on exactly the
    shapes of its cases, passes the visible check and fails a hidden case."""
    visible = default_shapes("feature_norms")
    hidden = [1001, 1002, 1003]
    assert any(tuple(checks.EXERCISES["feature_norms"].exercise.make_case(s).W.shape) not in visible
               for s in hidden), "the hidden seeds must include a shape the default cases lack"
    special_cased = notebook_function(f"""
def feature_norms(W):
    if tuple(W.shape) in {sorted(visible)!r}:
        return W.norm(dim=1)
    return W.abs().sum(dim=1)   # the wrong formula, never seen by the visible cases
""")
    rows, _ = grade_functions({"feature_norms": special_cased})
    assert rows["feature_norms"]["outcome"] == "passed"
    rows, _ = grade_functions({"feature_norms": special_cased}, hidden=hidden)
    row = rows["feature_norms"]
    assert row["outcome"] == "failed" and row["points"] == 0
    assert row["message"].startswith("case ") and row["message"].endswith("[hidden case]")
    assert int(row["message"].split()[1]) > len(checks.EXERCISES["feature_norms"].exercise.seeds)
    assert "L1" in row["message"]  # the check still names the mistake
    assert row["seeds"] == {"default": 4, "hidden": 3}


def test_the_check_sees_in_place_changes_and_the_learners_line():
    rows, _ = grade_functions({
        "feature_norms": notebook_function("def feature_norms(W):\n    W.mul_(2)\n    return W.norm(dim=1) / 2"),
        "superposition_interference": notebook_function(
            "def superposition_interference(W):\n    return W.shape[7]"),
        "toy_forward": notebook_function("def toy_forward(W, b, x, activation='relu'):\n    import numpy\n"
                                         "    return numpy.zeros(3)"),
    })
    assert "changed its input `W` in place" in rows["feature_norms"]["message"]
    assert ("your function raised IndexError: tuple index out of range (line 4: return W.shape[7])"
            in rows["superposition_interference"]["message"])
    assert "returned a numpy.ndarray; expected a torch.Tensor" in rows["toy_forward"]["message"]


def test_fingerprints_ignore_comments_docstrings_and_layout_but_not_code():
    def entry(cell: str, line: int) -> dict:
        return {"source": cell, "line": line}

    a = "import torch\n\ndef f(W):\n    # the norms\n    n = W.norm(dim=1)\n    return n\n"
    b = 'def f(W):\n    """Norms."""\n    n = W.norm(dim = 1)   # spaces\n\n    return n\nprint(1)\n'
    c = "def f(W):\n    n = W.norm(dim=0)\n    return n\n"
    assert worker.fingerprint(entry(a, 3))[0] == worker.fingerprint(entry(b, 1))[0]
    assert worker.fingerprint(entry(a, 3))[0] != worker.fingerprint(entry(c, 1))[0]
    assert worker.fingerprint({"kind": "class"}) is None


# --------------------------------------------------------------------------------------
# One batch with every kind of bad submission, graded by the command line
# --------------------------------------------------------------------------------------

STUBBORN_LOOP = """import time
while True:
    try:
        time.sleep(0.05)
    except KeyboardInterrupt:
        pass"""

HOG = "hog = []\nwhile True:\n    hog.append(torch.ones(2**28))  # 1 GB at a time: over the limit in one step, even under load"

FAKE_PASS = """import course_utils.checks._framework as fw
from course_utils import checks
fw.Exercise.evaluate = lambda self, learner, seeds=None, time_limit=None: fw.Outcome(self.name, "passed", "ok")
def toy_forward(W, b, x, activation="relu"):
    return torch.zeros_like(x)
checks.check_toy_forward(toy_forward)
print("[passed] importance_weighted_loss: 6/6 cases match the reference.")"""

PATCH_WHEN_CALLED = """def superposition_interference(W):
    import course_utils.checks._framework as fw, course_utils.checks.toy_models as tm
    fw.expect_close = tm.expect_close = lambda *args, **kwargs: None
    fw.Exercise.evaluate = lambda self, *args, **kwargs: fw.Outcome(self.name, "passed", "ok")
    return torch.zeros(W.shape[0], W.shape[2])"""

EVIL = {  # learner functions that attack the process that calls them
    "toy_forward": "def toy_forward(W, b, x, activation='relu'):\n    import os\n    os._exit(1)",
    "generate_batch": "def generate_batch(feature_probability, batch_size, generator=None):\n    while True:\n        pass",
    "importance_weighted_loss": "def importance_weighted_loss(out, x, importance):\n"
                                "    hog = [torch.ones(2**28) for _ in range(50)]  # 50 GB, 1 GB at a time\n"
                                "    return hog",
    "feature_norms": "def feature_norms(W):\n    import ctypes\n    ctypes.string_at(0)  # segfault",
    "superposition_interference": """def superposition_interference(W):
    import os, shutil
    from pathlib import Path
    for folder in ["..", ".", os.path.expanduser("~")]:
        try:
            for path in Path(folder).iterdir():
                shutil.rmtree(path, ignore_errors=True) if path.is_dir() else path.unlink(missing_ok=True)
        except OSError:
            pass
    W_hat = W / W.norm(dim=1, keepdim=True).clamp_min(1e-8)
    overlaps = torch.einsum("ihf,ihg->ifg", W_hat, W) ** 2
    return overlaps.sum(-1) - overlaps.diagonal(dim1=-2, dim2=-1)""",
}


# The sandbox's witnesses: a notebook whose exercises are right only if its code could see
# what a submission must not (another student's notebook, the hidden seeds' config, the
# network, the other jobs), and one that tries to change what it must not, leave a process
# behind and hand its work to the course's references.  Paths are filled in per batch.
SPY_SETUP = """import os, socket
def _can(action):
    try:
        action()
        return True
    except Exception:
        return False
SAW_OTHER = _can(lambda: open({other!r}, "rb").read())
SAW_CONFIG = _can(lambda: open({config!r}).read())
SAW_NETWORK = _can(lambda: socket.create_connection(("127.0.0.1", {port}), timeout=3).close())"""

SPY = {  # right only when the secret was visible; a cheat, so the sandbox must make each fail
    "toy_forward": nbs.RIGHT["toy_forward"].replace("    out = ", "    assert SAW_OTHER\n    out = "),
    "generate_batch": nbs.RIGHT["generate_batch"].replace("    p = ", "    assert SAW_CONFIG\n    p = "),
    "importance_weighted_loss": nbs.RIGHT["importance_weighted_loss"].replace("    return", "    assert SAW_NETWORK\n    return"),
    # At call time, in the process that runs the learner's functions:
    "feature_norms": """def feature_norms(W):
    import os
    jobs = os.listdir(os.path.join(os.getcwd(), "..", "..", ".."))  # the batch's folder: one job per submission
    assert os.path.exists({other!r}) or sum(name.startswith("job-") for name in jobs) > 1
    return W.norm(dim=1)""",
}

VANDAL = """import os, subprocess, sys
for path in {targets!r}:  # the course package, the CSV, a file next to it, another student's notebook, the config
    try:
        with open(path, "a") as handle:
            handle.write("vandalised")
    except OSError:
        pass
for folder in {folders!r}:
    try:
        open(os.path.join(folder, "pwned.txt"), "w").write("x")
    except OSError:
        pass
# A daemon that leaves the kernel's session, and one that stays in it: neither may outlive grading.
code = "import os, time; os.setsid(); time.sleep(900)"
subprocess.Popen([sys.executable, "-c", code, {token!r}], start_new_session=True,
                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
subprocess.Popen([sys.executable, "-c", "import time; time.sleep(900)", {token!r}],
                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)"""

VANDAL_FUNCTION = """def superposition_interference(W):
    import subprocess, sys
    for path in {targets!r}:
        try:
            with open(path, "a") as handle:
                handle.write("vandalised")
        except OSError:
            pass
    subprocess.Popen([sys.executable, "-c", "import os, time; os.setsid(); time.sleep(900)", {token!r}],
                     start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    W_hat = W / W.norm(dim=1, keepdim=True).clamp_min(1e-8)
    overlaps = torch.einsum("ihf,ihg->ifg", W_hat, W) ** 2
    return overlaps.sum(-1) - overlaps.diagonal(dim1=-2, dim2=-1)"""

DELEGATOR = {  # each hands its work to the course's reference, in a different way
    "toy_forward": """import course_utils.toy_models as _library
def toy_forward(W, b, x, activation="relu"):
    return _library.toy_forward(W, b, x, activation)""",
    "generate_batch": """import functools
import course_utils.toy_models as _library
generate_batch = functools.partial(_library.generate_batch)""",
    "feature_norms": """from course_utils import geometry as _geometry
def _mine(W):
    return _geometry.feature_norms(W) * 1.0
_mine.__name__ = _mine.__qualname__ = "feature_norms"
feature_norms = _mine""",
    "ToyModel": """import course_utils.toy_models as _library
class ToyModel(_library.ToyModel):
    pass""",
}


def _class(root: Path, secrets: dict | None = None) -> dict[str, Path]:
    """The submissions: student -> file.  Cells are numbered from 1, the title included."""
    special = f"""def feature_norms(W):
    if tuple(W.shape) in {sorted(default_shapes('feature_norms'))!r}:
        return W.norm(dim=1)
    return W.abs().sum(dim=1)   # wrong, but never on the visible cases"""
    notebooks = {
        "good": nbs.tiny(),
        "stub": nbs.tiny(nbs.STUB),
        "partial": nbs.tiny(nbs.WRONG),
        # two exercise cells deleted, the others in reverse order
        "shuffled": nbs.tiny(order=["importance_weighted_loss", "generate_batch", "toy_forward"]),
        # 1 title, 2 (empty), 3 toy_forward above the imports, 4 imports, ...
        "misordered": nbs.tiny(imports="", extra={1: nbs.IMPORTS}),
        # 1 title, 2 imports, 3 toy, 4 endless loop, 5 gen, 6 loss, 7 memory hog, 8 norms, 9 interference
        "runaway": nbs.tiny(extra={1: "while True:\n    pass", 3: HOG}),
        # 1 title, 2 imports, 3 toy, 4 gen, 5 loop that ignores interrupts, 6 loss, 7 norms, 8 interference
        "stubborn": nbs.tiny(extra={2: STUBBORN_LOOP}),
        # 1 title, 2 imports, 3 toy, 4 sys.exit, 5 gen, 6 os._exit, 7 loss, 8 exit(), 9 norms, 10 SIGKILL, 11 interference
        "crashes": nbs.tiny(extra={1: "import sys\nsys.exit(3)", 2: "import os\nos._exit(1)", 3: "exit()",
                                   4: "import os, signal\nos.kill(os.getpid(), signal.SIGKILL)"}),
        "evil": nbs.tiny(EVIL),
        "cheater": nbs.tiny({"toy_forward": FAKE_PASS,
                             "generate_batch": "from course_utils.toy_models import generate_batch",
                             "importance_weighted_loss": "importance_weighted_loss = 3",
                             "feature_norms": special,
                             "superposition_interference": PATCH_WHEN_CALLED}),
    }
    if secrets is not None:
        notebooks["spy"] = nbs.tiny({name: source.format(**secrets) for name, source in SPY.items()},
                                    extra={0: SPY_SETUP.format(**secrets)})
        notebooks["vandal"] = nbs.tiny({"superposition_interference": VANDAL_FUNCTION.format(**secrets)},
                                       extra={1: VANDAL.format(**secrets)})
        notebooks["delegator"] = nbs.tiny(DELEGATOR)
        notebooks["empty"] = nbformat.v4.new_notebook()
    files = {student: nbs.write(nb, root / student / f"{CHAPTER}.ipynb") for student, nb in notebooks.items()}
    files["broken"] = nbs.not_json(root / f"broken__{CHAPTER}.ipynb")
    files["nameless"] = nbs.write(nbs.tiny(), root / "nameless" / "homework.ipynb")
    if secrets is not None:
        files["script"] = root / "script" / f"{CHAPTER}.py"  # not a notebook: a row that says so
        files["script"].parent.mkdir()
        files["script"].write_text("def toy_forward(W, b, x):\n    return x\n")
        # Two submissions from one student: the newer counts, the other is skipped.
        files["twice-old"] = nbs.write(nbs.tiny(nbs.WRONG), root / f"twice__{CHAPTER}.ipynb")
        files["twice-new"] = nbs.write(nbs.tiny(), root / "twice" / f"{CHAPTER}-Copy1.ipynb")
        os.utime(files["twice-old"], (1_000_000_000, 1_000_000_000))
        # A name that is not UTF-8 (graded, written safely: see test_tools_grade_inputs.py).
        files["olga"] = nbs.write(nbs.tiny(nbs.STUB), root / os.fsdecode(b"olga\xff") / f"{CHAPTER}.ipynb")
    return files


class _Listener:
    """A TCP server on 127.0.0.1 that counts the connections it gets (the network witness)."""

    def __init__(self):
        import socket
        import threading

        self.server = socket.create_server(("127.0.0.1", 0))
        self.server.settimeout(0.2)
        self.port = self.server.getsockname()[1]
        self.connections = 0
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        while not self.stopped.is_set():
            try:
                connection, _ = self.server.accept()
            except OSError:
                continue
            self.connections += 1
            connection.close()

    def stop(self):
        self.stopped.set()
        self.thread.join(timeout=5)
        self.server.close()


def processes_with(token: str) -> list[int]:
    """The pids whose command line holds ``token``."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if token.encode() in (entry / "cmdline").read_bytes():
                    found.append(int(entry.name))
            except OSError:
                pass
    return found


def tree_digest(folder: Path) -> dict[str, str]:
    import hashlib

    return {str(path.relative_to(folder)): hashlib.sha256(path.read_bytes()).hexdigest()
            for path in sorted(folder.rglob("*")) if path.is_file() and "__pycache__" not in path.parts}


PACKAGES = [Path(checks.__file__).parents[1], Path(worker.__file__).parents[1]]  # course_utils, course_tools


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    import secrets as _secrets

    root = tmp_path_factory.mktemp("grading")
    listener = _Listener()
    out_dir = root / "out"
    out_dir.mkdir()
    (out_dir / "keep.txt").write_text("the instructor's file next to the grades\n")
    token = f"superposition-vandal-{_secrets.token_hex(4)}"
    other = root / "submissions" / "good" / f"{CHAPTER}.ipynb"
    targets = [str(Path(checks.__file__).parent / "__init__.py"), str(out_dir / "grades.csv"),
               str(out_dir / "keep.txt"), str(other), str(root / "grading.json")]
    secrets = {"other": str(other), "config": str(root / "grading.json"), "port": listener.port, "token": token,
               "targets": targets, "folders": [str(out_dir), str(root / "submissions"), str(Path(checks.__file__).parent)]}
    files = _class(root / "submissions", secrets)
    packages_before = {str(folder): tree_digest(folder) for folder in PACKAGES}
    before = {path: path.read_bytes() for path in files.values()}
    # Hidden cases for feature_norms; a generous time limit for importance_weighted_loss, so
    # that the function that eats memory is stopped by the memory limit, even on a busy machine,
    # and for train_model, whose check trains eight small models; the pentagon's training
    # (a few seconds) gets 20 s instead of its 60, for the evil submission's endless loop.
    (root / "grading.json").write_text(json.dumps({"exercises": {
        "feature_norms": {"hidden_seeds": [1001, 1002, 1003]}, "importance_weighted_loss": {"time_limit": 30},
        "train_model": {"time_limit": 60}, PENTAGON: {"time_limit": 20}}}))
    out = root / "out" / "grades.csv"
    command = [sys.executable, "-m", "course_tools.grade", str(root / "submissions"), "--out", str(out),
               "--jobs", "2", "--cell-timeout", "5", "--timeout", "120", "--memory-mb", str(MEMORY_MB),
               "--check-time-limit", "4", "--config", str(root / "grading.json")]
    try:
        run = subprocess.run(command, capture_output=True, text=True, cwd=root, timeout=900)
    finally:
        listener.stop()
    assert run.returncode == 0, run.stdout + run.stderr
    left = processes_with(token)  # read before anything could clean up
    for pid in left:
        os.kill(pid, 9)
    with open(out, newline="") as handle:
        table = list(csv.DictReader(handle))
    report = json.loads(out.with_suffix(".json").read_text())
    return {"files": files, "before": before, "rows": table, "report": report, "stdout": run.stdout,
            "left_behind": left, "connections": listener.connections, "out_dir": out_dir,
            "packages_before": packages_before, "packages_after": {str(f): tree_digest(f) for f in PACKAGES},
            "config": (root / "grading.json").read_text()}


def rows_of(graded, student) -> dict[str, dict]:
    return {row["exercise"]: row for row in graded["rows"] if row["student"] == student}


def submission(graded, student) -> dict:
    return next(s for s in graded["report"]["submissions"] if s["student"] == student)


def notes(graded, student) -> str:
    return "\n".join(submission(graded, student)["notes"])


def outcomes(graded, student) -> dict[str, str]:
    return {name: row["outcome"] for name, row in rows_of(graded, student).items()}


def cells(graded, student) -> dict[int, dict]:
    return {cell["cell"]: cell for cell in submission(graded, student)["cells"]}


def test_every_submission_gets_a_row_per_exercise_with_an_outcome_and_a_reason(graded):
    table = graded["rows"]
    assert list(table[0]) == ["student", "chapter", "exercise", "outcome", "points", "max_points", "message",
                              "file", "conflict"]
    assert all(row["conflict"] == "" for row in table if row["student"] != "twice")  # one submission each
    files = len(graded["files"])
    assert files >= 20 and len(graded["report"]["submissions"]) == files
    students = {row["student"] for row in table}
    assert students == {name for name in graded["files"] if not name.startswith(("twice", "olga"))} | {
        "twice", "olga\\xff"}
    for student in students - {"nameless", "twice"}:
        assert list(rows_of(graded, student)) == ROWS, student
    for row in table:
        assert row["outcome"] in worker.OUTCOMES
        assert row["message"].strip(), row
        assert float(row["points"]) == (float(row["max_points"]) if row["outcome"] == "passed" else 0)
    # nameless: one row; twice: the counted submission's rows and one 'skipped' row for the other.
    assert graded["report"]["summary"]["rows"] == len(table) == len(ROWS) * (len(students) - 1) + 1 + 1
    assert f"graded {files} submission(s)" in graded["stdout"]


def test_the_originals_are_never_modified(graded):
    for path, content in graded["before"].items():
        assert path.read_bytes() == content


def test_a_correct_submission_passes_and_a_stub_is_not_attempted(graded):
    assert set(outcomes(graded, "good").values()) == {"passed"}
    assert all(row["points"] == "1" for row in rows_of(graded, "good").values())
    # The capstones' result: the learner's ToyModel, trained by their train_model, is a pentagon.
    assert "is a regular pentagon" in rows_of(graded, "good")[PENTAGON]["message"]
    assert set(outcomes(graded, "stub").values()) == {"not attempted"}
    assert "NotImplementedError" in rows_of(graded, "stub")["toy_forward"]["message"]


def test_wrong_answers_fail_with_the_checks_message(graded):
    rows = rows_of(graded, "partial")
    # The capstone class is graded on its own: it calls the wrong toy_forward, so it fails too,
    # while the training loop, checked on the course's model, passes.
    assert outcomes(graded, "partial") == {"toy_forward": "failed", "generate_batch": "passed",
                                           "importance_weighted_loss": "failed", "feature_norms": "failed",
                                           "superposition_interference": "passed", "ToyModel": "failed",
                                           "train_model": "passed", "phase_losses": "passed",
                                           "one_sparse_terms": "passed", PENTAGON: "failed"}
    assert "the ReLU is missing" in rows["toy_forward"]["message"]
    assert "a sum over batch and features instead of a mean" in rows["importance_weighted_loss"]["message"]
    assert "squared norms" in rows["feature_norms"]["message"]
    # Without the ReLU, the trained model is linear: no pentagon.
    assert "is not a regular pentagon" in rows[PENTAGON]["message"]


def test_a_file_that_is_not_a_notebook_is_an_error_on_every_exercise(graded):
    rows = rows_of(graded, "broken")
    assert set(outcomes(graded, "broken").values()) == {"error"}
    assert all(row["message"].startswith("not a readable notebook") for row in rows.values())


def test_a_file_without_a_chapter_gets_one_error_row(graded):
    rows = [row for row in graded["rows"] if row["student"] == "nameless"]
    assert len(rows) == 1 and rows[0]["outcome"] == "error" and rows[0]["exercise"] == ""
    assert "cannot tell the chapter" in rows[0]["message"]


def test_deleted_cells_are_missing_and_reordered_cells_are_fine(graded):
    rows = rows_of(graded, "shuffled")
    kept = ["toy_forward", "generate_batch", "importance_weighted_loss"]
    assert outcomes(graded, "shuffled") == {name: "passed" if name in kept else "missing" for name in ROWS}
    assert rows["feature_norms"]["message"] == "`feature_norms` is not defined: no cell of the notebook defines it"
    assert rows[PENTAGON]["message"] == ("needs your `ToyModel` and `train_model`: `ToyModel` is not defined: no cell "
                                         "of the notebook defines it; `train_model` is not defined: no cell of the "
                                         "notebook defines it")
    # A definition moved above the imports fails to define (its annotations need Tensor).
    rows = rows_of(graded, "misordered")
    assert rows["toy_forward"]["outcome"] == "missing"
    assert "cell 3, which defines it, raised NameError: name 'Tensor' is not defined" in rows["toy_forward"]["message"]
    # The capstone class calls toy_forward, which the notebook never defined: it fails, the rest pass.
    assert rows["ToyModel"]["outcome"] == "failed" and "NameError" in rows["ToyModel"]["message"]
    assert all(rows[name]["outcome"] == "passed" for name in EXERCISES if name not in ("toy_forward", "ToyModel"))


def test_an_endless_loop_is_interrupted_and_a_memory_hog_killed_and_grading_goes_on(graded):
    assert set(outcomes(graded, "runaway").values()) == {"passed"}
    text = notes(graded, "runaway")
    assert "cell 4 (`while True:`) timed out after 5 s; it was interrupted and the run went on" in text
    assert f"cell 7 (`hog = []`) used more than {MEMORY_MB} MB of memory; the kernel was killed" in text
    assert "started a fresh kernel and re-ran the 4 set-up, exercise and definition cells before cell 8" in text
    log = cells(graded, "runaway")
    assert [log[i]["status"] for i in range(2, 10)] == ["ok", "ok", "timeout", "ok", "ok", "memory", "ok", "ok"]


def test_a_loop_that_ignores_interrupts_gets_a_fresh_kernel(graded):
    assert set(outcomes(graded, "stubborn").values()) == {"passed"}
    text = notes(graded, "stubborn")
    assert "cell 5 (`import time`) timed out after 5 s and did not respond to an interrupt; the kernel was killed" in text
    # imports, toy_forward, generate_batch, and the `import time` of the killed cell
    assert "started a fresh kernel and re-ran the 4 set-up, exercise and definition cells before cell 6" in text
    assert submission(graded, "stubborn")["kernel_starts"] == 2


def test_exits_and_kernel_crashes_keep_earlier_definitions_and_grade_later_ones(graded):
    text = notes(graded, "crashes")
    failed = {name: row["message"] for name, row in rows_of(graded, "crashes").items() if row["outcome"] != "passed"}
    assert not failed, (failed, text)
    log = cells(graded, "crashes")
    assert log[4]["status"] == "error" and log[4]["error"] == "SystemExit: 3"  # sys.exit() is an exception
    assert log[6]["status"] == "died" and log[10]["status"] == "died"
    # exit() ends the kernel a moment after its reply: the grader ends it at once, so the death
    # is cell 8's whatever the timing (it once landed on cell 10 under load, as "exit code 0").
    assert log[8]["status"] == "died"
    assert "the kernel died during cell 8 (`exit()`) (the cell called exit(); " in text
    assert "the kernel died during cell 6 (`import os`) (exit code 1)" in text
    assert "the kernel died during cell 10 (`import os, signal`) (killed by signal 9 (SIGKILL))" in text
    assert all(log[i]["status"] == "ok" for i in (7, 9, 11))


def test_learner_functions_that_attack_the_grader_fail_alone(graded):
    rows = rows_of(graded, "evil")
    assert rows["toy_forward"]["outcome"] == "failed"
    assert "your function ended the process it ran in (exit code 1)" in rows["toy_forward"]["message"]
    assert "took longer than 4 s" in rows["generate_batch"]["message"]
    assert f"your function used more than {MEMORY_MB} MB of memory" in rows["importance_weighted_loss"]["message"]
    assert "killed by signal 11 (SIGSEGV)" in rows["feature_norms"]["message"]
    # The one that deletes every file it can reach from its working directory and HOME
    # deleted only its own sandbox: it is graded like any other, and the batch is intact.
    assert rows["superposition_interference"]["outcome"] == "passed"
    assert all(path.exists() for path in graded["files"].values())
    # The capstone class calls the evil toy_forward: it fails too, and ends its sandbox once more.
    assert rows["ToyModel"]["outcome"] == "failed"
    assert "the sandbox that runs the learner's functions was restarted 5 time(s)" in notes(graded, "evil")
    # Training the capstone for the result check draws batches with the evil generate_batch,
    # which never returns: stopped at the result check's time limit (20 s in this batch's config).
    # It runs in a fresh sandbox: superposition_interference deleted the working directory of
    # the one the exercises were graded in.
    assert rows[PENTAGON]["outcome"] == "failed"
    assert rows[PENTAGON]["message"] == "took longer than 20 s; the grader stopped it."


def test_printed_passes_patched_checks_imports_and_special_cases_do_not_pass(graded):
    rows = rows_of(graded, "cheater")
    assert {outcomes(graded, "cheater")[name] for name in nbs.TINY_ORDER[:5]} == {"failed"}
    # The notebook patched the checks and printed "passed": the grader's own check decides.
    assert "all zeros" in rows["toy_forward"]["message"]
    text = notes(graded, "cheater")
    assert "the notebook printed [passed] for toy_forward, but the grader's check says failed" in text
    assert "the notebook printed [passed] for importance_weighted_loss" in text
    assert submission(graded, "cheater")["exercises"][0]["notebook_printed"] == "passed"
    # Patching the checks from inside the function, when the grader calls it, patches the
    # sandbox's copy; the check that decides runs in the grader.
    assert "all zeros" in rows["superposition_interference"]["message"]
    assert "is course_utils.toy_models.generate_batch, imported from a module" in rows["generate_batch"]["message"]
    assert rows["importance_weighted_loss"]["message"] == "expected your function, got int."
    # Right on the visible cases only: caught by the config's hidden seeds.
    assert rows["feature_norms"]["message"].endswith("[hidden case]")
    assert "L1" in rows["feature_norms"]["message"]
    assert graded["report"]["grader"]["exercises"]["feature_norms"] == {"default": 4, "hidden": 3, "points": 1.0}
    assert graded["report"]["grader"]["result_checks"] == {PENTAGON: {
        "title": "pentagon (result of ToyModel + train_model)", "uses": ["ToyModel", "train_model"],
        "points": 1.0, "time_limit_s": 20.0}}


# --------------------------------------------------------------------------------------
# Separate runs: the notebook time limit; --exercises-only on the real chapter
# --------------------------------------------------------------------------------------


def grade(tmp_path, files: dict[str, nbformat.NotebookNode], *options) -> tuple[list[dict], dict]:
    for student, nb in files.items():
        nbs.write(nb, tmp_path / "subs" / f"{student}__{CHAPTER}.ipynb")
    out = tmp_path / "grades.csv"
    run = subprocess.run([sys.executable, "-m", "course_tools.grade", str(tmp_path / "subs"), "--out", str(out),
                          "--quiet", *options], capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout + run.stderr
    with open(out, newline="") as handle:
        return list(csv.DictReader(handle)), json.loads(out.with_suffix(".json").read_text())


def test_the_notebook_time_limit_grades_what_was_defined_before(tmp_path):
    # Cells: 1 title, 2 imports, 3 toy_forward, 4 generate_batch, 5 sleeps, 6-12 the others.
    nb = nbs.tiny(extra={2: "import time\ntime.sleep(1000)"})
    table, report = grade(tmp_path, {"slow": nb}, "--timeout", "8", "--cell-timeout", "60")
    rows = {row["exercise"]: row for row in table}
    assert [rows[name]["outcome"] for name in nbs.TINY_ORDER] == ["passed"] * 2 + ["missing"] * 7
    text = "\n".join(report["submissions"][0]["notes"])
    assert "the notebook time limit (8 s) was reached during cell 5 (`import time`)" in text
    assert "cells 6-12 were not run; graded the definitions made before" in text
    assert rows["feature_norms"]["message"] == "`feature_norms` is not defined: cell 7, which defines it, was not run"


def test_exercises_only_grades_the_real_chapter_without_its_training_runs(tmp_path):
    solved = nbs.chapter_notebook()
    wrong_cell = nbs.solution_cells()["toy_forward"].replace(
        'return torch.relu(out) if activation == "relu" else out', "return torch.relu(out)")
    wrong = nbs.chapter_notebook({"toy_forward": wrong_cell})
    table, report = grade(tmp_path, {"ann": solved, "ben": wrong}, "--exercises-only", "--jobs", "2")
    by_student = {(row["student"], row["exercise"]): row for row in table}
    assert all(by_student["ann", name]["outcome"] == "passed" for name in ROWS)
    assert by_student["ben", "toy_forward"]["outcome"] == "failed"
    assert "a ReLU is applied although activation='linear'" in by_student["ben", "toy_forward"]["message"]
    ann = next(s for s in report["submissions"] if s["student"] == "ann")
    cells = {c["cell"]: c["status"] for c in ann["cells"]}
    assert all(cells[i] == "skipped" for i in nbs.heavy_cell_indices(solved)[:-1])
    assert "--exercises-only: ran 10 of 25 code cells in full" in "\n".join(ann["notes"])
    assert ann["seconds"]["notebook"] < 30


# --------------------------------------------------------------------------------------
# The sandbox (bubblewrap): the same batch's spy, vandal and delegator
# --------------------------------------------------------------------------------------


def test_the_batch_ran_in_bubblewrap_and_says_so(graded):
    assert graded["report"]["grader"]["sandbox"].startswith("bubblewrap")
    assert all("WITHOUT isolation" not in note for s in graded["report"]["submissions"] for note in s["notes"])


def test_a_submission_sees_only_itself(graded):
    """The spy's exercises are right only if its code saw another student's notebook, the
    config with the hidden seeds, the network, or the other jobs' folders: each fails."""
    rows = rows_of(graded, "spy")
    for name in ("toy_forward", "generate_batch", "importance_weighted_loss", "feature_norms"):
        assert rows[name]["outcome"] == "failed", (name, rows[name])
        assert "AssertionError" in rows[name]["message"], rows[name]
    assert graded["connections"] == 0
    for name in ("superposition_interference", "phase_losses", "one_sparse_terms"):
        assert rows[name]["outcome"] == "passed"
    assert "1001" in graded["config"]  # the secret the spy could not read was there
    assert "1001" not in json.dumps(submission(graded, "spy"))  # and no hidden seed reaches its report


def test_a_submission_changes_nothing_outside_itself(graded):
    assert set(outcomes(graded, "vandal").values()) == {"passed"}  # its attacks failed quietly, its answers stand
    assert graded["packages_after"] == graded["packages_before"]  # a later student is graded by the same code
    assert (graded["out_dir"] / "keep.txt").read_text() == "the instructor's file next to the grades\n"
    assert "vandalised" not in (graded["out_dir"] / "grades.csv").read_text()
    assert "vandalised" not in graded["config"]
    assert sorted(path.name for path in graded["out_dir"].iterdir()) == ["grades.csv", "grades.json", "keep.txt"]
    folders = [graded["files"]["good"].parents[1], *PACKAGES]
    assert not [path for folder in folders for path in folder.rglob("pwned.txt")]
    assert graded["left_behind"] == []  # no process of the batch outlived it, setsid or not


def test_calling_the_course_reference_is_not_an_answer(graded):
    rows = rows_of(graded, "delegator")
    for name in ("toy_forward", "generate_batch", "feature_norms", "ToyModel"):
        assert rows[name]["outcome"] == "failed", (name, rows[name])
    for name in ("toy_forward", "generate_batch", "feature_norms"):
        assert f"calls the course's reference implementation of `{name}`" in rows[name]["message"]
    for name in ("importance_weighted_loss", "superposition_interference"):  # its own code: passes
        assert rows[name]["outcome"] == "passed"


def test_empty_script_and_twice_submitted(graded):
    assert set(outcomes(graded, "empty").values()) == {"missing"}
    script = rows_of(graded, "script")
    assert {row["outcome"] for row in script.values()} == {"error"}
    assert "not a notebook" in script["toy_forward"]["message"]
    twice = [row for row in graded["rows"] if row["student"] == "twice"]
    assert {row["outcome"] for row in twice} == {"passed", "skipped"}
    assert all(row["conflict"] for row in twice)
    assert set(outcomes(graded, "olga\\xff").values()) == {"not attempted"}


def test_the_report_lists_definitions_shared_by_several_students(graded):
    """A hint for the instructor, not a grade: the same code (comments and layout aside)."""
    groups = graded["report"]["grader"]["similar_definitions"]
    shared = {(g["exercise"], frozenset(g["students"])) for g in groups}
    batch = next(students for exercise, students in shared if exercise == "generate_batch")
    assert {"good", "vandal", "twice", "misordered"} <= batch  # the same right answer, copied around
    assert "spy" not in batch  # its generate_batch has one more line
    assert all(g["lines"] >= 4 and len(g["students"]) >= 2 for g in groups)
    assert not any("stub" in g["students"] for g in groups)  # stubs are not definitions to compare
    assert "definition(s) are the same in several students' notebooks" in graded["stdout"]
