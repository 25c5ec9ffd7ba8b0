"""The grader grades a learner's CLASS (ToyModel, AbsModel, UAnd, SparseAutoencoder) in two halves:
the exercise's probe runs the class in the sandbox and sends back plain data, and the judge
compares it with the reference in the grader's process.  So a class that tampers with the
sandbox's copy of the checks (when unpickled, or when built) changes what the sandbox reports
about it, never the verdict.

The sandbox is real (``worker.evaluate`` as the grader calls it, one sandbox per call); the
definitions are made the way notebook cells make them and sent the way the harvest sends them.
"""

from __future__ import annotations

import inspect
import io
import linecache
import os
import re

import pytest
import torch

from course_utils import checks
from course_utils import computation as comp
from course_utils import sae as sae_lib
from course_utils import toy_models as ref
from course_utils.checks import _framework
from course_tools.grade import harvest, worker
from course_tools.grade.sandbox import Sandbox
from test_ch04_computation import _PlainUAnd
from test_tools_grade import nbs

MEMORY_MB = 1000
CLASSES = ("ToyModel", "AbsModel", "UAnd", "SparseAutoencoder")
REFERENCES = {"ToyModel": ref.ToyModel, "AbsModel": comp.AbsModel, "UAnd": comp.UAnd,
              "SparseAutoencoder": sae_lib.SparseAutoencoder}

IMPORTS = """\
import torch
from torch import nn
from course_utils.computation import abs_batch
from course_utils.toy_models import generate_batch, importance_weighted_loss, per_instance, toy_forward
"""

# Right answers, written in cells as a learner writes them (their own code; the library's
# functions of the other exercises, as the chapters' learners use their own).
RIGHT = {
    "ToyModel": nbs.RIGHT["ToyModel"] + "\n",  # the grader tests' tiny notebooks hold the same
    "AbsModel": """\
class AbsModel(nn.Module):
    def __init__(self, n_features, n_hidden, n_instances=1, feature_probability=1.0, importance=1.0,
                 init_scale=1.0, device="cpu", generator=None):
        super().__init__()
        self.n_features, self.n_hidden, self.n_instances = n_features, n_hidden, n_instances
        self.register_buffer("feature_probability", per_instance(feature_probability, n_instances, n_features).to(device))
        self.register_buffer("importance", per_instance(importance, n_instances, n_features).to(device))
        std = init_scale * (2 / (n_hidden + n_features)) ** 0.5
        W1 = torch.randn(n_instances, n_hidden, n_features, generator=generator) * std
        W2 = torch.randn(n_instances, n_features, n_hidden, generator=generator) * std
        self.W1, self.W2 = nn.Parameter(W1.to(device)), nn.Parameter(W2.to(device))
        self.b = nn.Parameter(torch.zeros(n_instances, n_features, device=device))

    def forward(self, x):
        h = torch.relu(torch.einsum("ihf,ibf->ibh", self.W1, x))
        return torch.relu(torch.einsum("ifh,ibh->ibf", self.W2, h) + self.b[:, None, :])

    def loss(self, x):
        return (self.importance[:, None, :] * (self(x) - x.abs()) ** 2).mean(dim=(1, 2))

    def generate_batch(self, batch_size, generator=None):
        return abs_batch(self.feature_probability, batch_size, generator)
""",
    # the plain construction chapter 04's library tests already write as a learner would
    "UAnd": inspect.getsource(_PlainUAnd).replace("class _PlainUAnd:", "class UAnd:"),
    "SparseAutoencoder": """\
class SparseAutoencoder(nn.Module):
    def __init__(self, d_in, n_latents, l1_coefficient=0.3, device="cpu", generator=None):
        super().__init__()
        self.l1_coefficient = l1_coefficient
        W = torch.randn(n_latents, d_in, generator=generator)
        W = W / W.norm(dim=1, keepdim=True)
        self.W_dec, self.W_enc = nn.Parameter(W.to(device)), nn.Parameter(W.T.clone().to(device))
        self.b_enc = nn.Parameter(torch.zeros(n_latents, device=device))
        self.b_dec = nn.Parameter(torch.zeros(d_in, device=device))

    def encode(self, x):
        return torch.relu((x - self.b_dec) @ self.W_enc + self.b_enc)

    def decode(self, f):
        return f @ self.W_dec + self.b_dec

    def forward(self, x):
        f = self.encode(x)
        return self.decode(f), f

    def loss(self, x):
        x_hat, f = self(x)
        return (x - x_hat).square().sum(dim=1).mean() + self.l1_coefficient * f.abs().sum(dim=1).mean()
""",
}

# Wrong answers: the right class, then one mistake (a subclass of it under the same name).
MISTAKES = {
    "ToyModel": """
class ToyModel(ToyModel):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        with torch.no_grad():
            self.b.add_(0.1)
""",
    "AbsModel": """
class AbsModel(AbsModel):
    def forward(self, x):
        h = torch.relu(torch.einsum("ihf,ibf->ibh", self.W1, x))
        return torch.einsum("ifh,ibh->ibf", self.W2, h) + self.b[:, None, :]
""",
    "UAnd": """
class UAnd(UAnd):
    def readoff(self, h):
        return torch.nan_to_num(super().readoff(h), nan=0.0)
""",
    "SparseAutoencoder": """
class SparseAutoencoder(SparseAutoencoder):
    def encode(self, x):
        return torch.relu(x @ self.W_enc + self.b_enc)
""",
}
WRONG = {name: RIGHT[name] + MISTAKES[name] for name in RIGHT}

# What a cheat does in the sandbox: every way the old in-sandbox check could be made to say
# "passed" (the whole check, each check function, the judges, torch's comparisons).
TAMPER = """\
import torch
from course_utils import checks
from course_utils.checks import _framework, computation, sae, toy_models

def _passed(self, *args, **kwargs):
    return _framework.Outcome(self.name, "passed", "8/8 models built, initialised and run like the reference.")

_framework.Exercise.evaluate = _passed
checks.evaluate = _framework.evaluate = lambda name, *a, **k: _framework.Outcome(str(name), "passed", "all good.")
for _check in list(_framework.EXERCISES.values()):
    object.__setattr__(_check.exercise, "judge", lambda data, case: None)
for _module in (toy_models, computation, sae):
    for _name in dir(_module):
        if _name.startswith(("check_", "_judge_")):
            setattr(_module, _name, lambda *a, **k: None)
torch.allclose = lambda *a, **k: True
torch.equal = lambda *a, **k: True
torch.Tensor.any = lambda self, *a, **k: False
"""

CHEATS = {
    # unpickling a class attribute runs the tampering (pickle's __reduce__), before any check;
    # the model's b does not start at zero
    "reduce": RIGHT["ToyModel"] + f"""
class _Hook:
    def __reduce__(self):
        return (exec, ({TAMPER!r}, {{}}))

class ToyModel(ToyModel):
    hook = _Hook()

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        with torch.no_grad():
            self.b.add_(0.1)
""",
    # building the model runs the tampering (__new__), then the model outputs zeros
    "new": RIGHT["AbsModel"] + f"""
class AbsModel(AbsModel):
    def __new__(cls, *args, **kwargs):
        exec({TAMPER!r}, {{}})
        return super().__new__(cls)

    def forward(self, x):
        return torch.zeros_like(x)
""",
    # re-creating the class in the sandbox runs its base's __init_subclass__; this UAnd reads
    # off 0 for uncovered pairs
    "init_subclass": RIGHT["UAnd"] + f"""
class _Tampering:
    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        import os
        if os.getpid() != {os.getpid()}:  # in the sandbox only, not in this test's process
            exec({TAMPER!r}, {{}})

class UAnd(_Tampering, UAnd):
    def readoff(self, h):
        return torch.nan_to_num(super().readoff(h), nan=0.0)
""",
}


def notebook_definitions(cells: dict[str, str]) -> dict[str, dict]:
    """What the harvest sends for these cells (name -> the cell that defines it), each cell
    run in one __main__ namespace with its text in linecache, as a notebook runs it."""
    namespace = {"__name__": "__main__"}
    for number, (name, text) in enumerate([("imports", IMPORTS), *cells.items()]):
        filename = f"<class-test cell {number} {abs(hash(text))}>"
        linecache.cache[filename] = (len(text), None, text.splitlines(keepends=True), filename)
        exec(compile(text, filename, "exec"), namespace)
    return {name: harvest.describe(namespace[name]) for name in cells}


def grade(cells: dict[str, str], seeds: dict[str, list[int]] | None = None, n_default: int | None = None,
          time_limit: float | None = None) -> dict[str, dict]:
    """The grader's rows (exercise -> row) for these cells, from worker.evaluate and a real sandbox."""
    specs = []
    for name in cells:
        exercise = checks.EXERCISES[name].exercise
        chosen = list((seeds or {}).get(name, exercise.seeds))
        specs.append({"name": name, "seeds": chosen, "points": 1.0, "time_limit": time_limit, "missing_reason": "",
                      "default_seeds": len(chosen) if n_default is None else n_default})
    env = dict(os.environ, SUPERPOSITION_THREADS="1", OMP_NUM_THREADS="1")
    rows = worker.evaluate(specs, notebook_definitions(cells), MEMORY_MB * 2**20, env, None, [])
    return {row["exercise"]: row for row in rows}


def in_process(name: str, text: str, seeds=None):
    """The outcome of the check run in this process (as in a notebook) on the class in ``text``."""
    namespace = {"__name__": "__main__"}
    exec(IMPORTS + text, namespace)
    return checks.evaluate(name, namespace[name], seeds=seeds)


# --------------------------------------------------------------------------------------
# Through the grader: right, wrong, stub, cheating
# --------------------------------------------------------------------------------------


def test_right_classes_pass_and_wrong_ones_fail_with_the_notebooks_message():
    rows = grade({**RIGHT})
    for name in CLASSES:
        expected = in_process(name, RIGHT[name])
        assert expected.passed
        assert (rows[name]["outcome"], rows[name]["message"], rows[name]["points"]) == ("passed", expected.message, 1.0)
        assert "note" not in rows[name] and "graded_in_sandbox" not in rows[name]
    rows = grade({**WRONG})
    for name in CLASSES:
        expected = in_process(name, WRONG[name])
        assert expected.status == "failed", expected.line
        assert (rows[name]["outcome"], rows[name]["message"], rows[name]["points"]) == ("failed", expected.message, 0.0)
    assert "b should start at zero" in rows["ToyModel"]["message"]
    assert "the output ReLU is missing" in rows["AbsModel"]["message"]
    assert "is 0 for pairs no neuron is wired to" in rows["UAnd"]["message"]
    assert "does not subtract the pre-encoder bias" in rows["SparseAutoencoder"]["message"]


def test_stub_hidden_cases_time_limit_and_a_dying_class():
    stub = "class SparseAutoencoder:\n    def __init__(self, *args, **kwargs):\n        raise NotImplementedError\n"
    # Right on seed 1, W of std 1 (the statistics of seed 0 only): fails on the hidden case 2.
    std_one = RIGHT["ToyModel"] + ("\nclass ToyModel(ToyModel):\n    def __init__(self, *args, **kwargs):\n"
                                   "        super().__init__(*args, **kwargs)\n        with torch.no_grad():\n"
                                   "            self.W.mul_((self.n_hidden + self.n_features) ** 0.5 / 2 ** 0.5)\n")
    slow = RIGHT["UAnd"] + "\nclass UAnd(UAnd):\n    def hidden(self, x):\n        import time\n        time.sleep(60)\n"
    dies = RIGHT["AbsModel"] + "\nclass AbsModel(AbsModel):\n    def forward(self, x):\n        import os\n        os._exit(3)\n"
    rows = grade({"ToyModel": std_one, "AbsModel": dies, "UAnd": slow, "SparseAutoencoder": stub},
                 seeds={"ToyModel": [1, 0]}, n_default=1, time_limit=3)
    assert rows["SparseAutoencoder"]["outcome"] == "not attempted"
    assert rows["SparseAutoencoder"]["message"] == checks.EXERCISES["SparseAutoencoder"].exercise.not_attempted_message
    assert rows["ToyModel"]["outcome"] == "failed"
    assert rows["ToyModel"]["message"] == in_process("ToyModel", std_one, seeds=[1, 0]).message + " [hidden case]"
    assert re.fullmatch(r"case 2 \(.*\): W's initial entries do not have Xavier-normal's spread.*\. \[hidden case\]",
                        rows["ToyModel"]["message"]), rows["ToyModel"]["message"]
    assert rows["UAnd"]["outcome"] == "failed"
    assert re.fullmatch(r"case 1 \(UAnd\(m=6, d=8, p=0\.3, generator\), batch=8\): took longer than 3 s "
                        r"\(an infinite loop, or a Python loop over the batch\?\)\.", rows["UAnd"]["message"])
    assert rows["AbsModel"]["outcome"] == "failed"
    assert re.fullmatch(r"case 1 \(n_features=6, .*\): your class ended the process it ran in \(.*\)\.",
                        rows["AbsModel"]["message"]), rows["AbsModel"]["message"]


@pytest.mark.parametrize("cheat", CHEATS)
def test_a_class_that_tampers_with_the_sandbox_still_fails(cheat):
    name = re.search(r"^class (ToyModel|AbsModel|UAnd)\b", CHEATS[cheat], re.M).group(1)
    honest = in_process(name, CHEATS[cheat].replace("exec(", "(lambda *a: None)("), seeds=[0, 1])
    assert honest.status == "failed"
    definitions = notebook_definitions({name: CHEATS[cheat]})
    blobs = {name: {"blob": __import__("base64").b64decode(definitions[name]["pickle"]),
                    "source_file": definitions[name].get("source_file"), "source": definitions[name].get("source")}}
    env = dict(os.environ, SUPERPOSITION_THREADS="1", OMP_NUM_THREADS="1")
    with Sandbox(blobs, MEMORY_MB * 2**20, env) as sandbox:
        assert sandbox.define(name)["status"] == "ok"
        # The grader's way: the verdict is reached here, on what the class did in the sandbox.
        outcome = checks.EXERCISES[name].exercise.evaluate(
            None, [0, 1], 20, probe=lambda seed, case: sandbox.probe(name, seed, 10, 20))
        # The tampering worked in the sandbox (after unpickling, or once the class was built):
        # a check decided there, as classes used to be graded, says "passed".
        assert sandbox.evaluate_inside(name, [0, 1], 20) == ("passed", "all good.")
    assert (outcome.status, outcome.message) == ("failed", honest.message)
    assert torch.allclose is not None and not torch.allclose(torch.zeros(1), torch.ones(1))  # ours is untouched


# --------------------------------------------------------------------------------------
# The judges: what the probe sends is plain data; garbage fails, never crashes
# --------------------------------------------------------------------------------------


def probed(name: str, seed: int) -> tuple[dict, object]:
    """What the probe sees of the course's own class on case ``seed``, and the case."""
    exercise = checks.EXERCISES[name].exercise
    with _framework._seeded(seed):
        case = exercise.make_case(seed)
        return exercise.observe(_framework._guard(REFERENCES[name]), case), case


@pytest.mark.parametrize("name", CLASSES)
def test_what_the_probe_sends_is_plain_data_the_judge_passes(name):
    data, case = probed(name, 0)
    buffer = io.BytesIO()
    torch.save(data, buffer)
    again = torch.load(io.BytesIO(buffer.getvalue()), weights_only=True)
    assert _framework.STOPPED not in again and len(again) >= 8
    assert len(buffer.getvalue()) < 2 * 2**20  # far below the grader's 512 MB
    checks.EXERCISES[name].exercise.judge(again, case)  # passes: no exception


GARBAGE = [None, "x", 3, 2.5, [1, 2], {"a": 1}, {_framework.OBJECT: "numpy.ndarray"},
           torch.zeros(1), torch.zeros(2, 2, dtype=torch.bool), torch.full((3, 1, 2), float("nan")),
           {_framework.STOPPED: ["failed", "boom"]}, {_framework.STOPPED: 7}]


def judge_outcome(name: str, data, case) -> str:
    """"passed" or "rejected"; any exception other than CheckFailed fails the test."""
    try:
        checks.EXERCISES[name].exercise.judge(data, case)
    except _framework.CheckFailed:
        return "rejected"
    return "passed"


# What the judge reads only on some paths (a second model built when the first differs from the
# reference): garbage there changes nothing when the first model is right.
READ_ON_SOME_PATHS = {"W other", "W1 again", "coverage again"}


@pytest.mark.parametrize("name", CLASSES)
def test_every_judge_rejects_garbage_with_a_failure_never_a_crash(name):
    data, case = probed(name, 0)
    for whole in (None, "data", [data], {}, {_framework.STOPPED: ["failed", "boom"]}, {_framework.STOPPED: None}):
        assert judge_outcome(name, whole, case) == "rejected"
    tried = 0
    for key in data:
        garbage = list(GARBAGE)
        if isinstance(data[key], torch.Tensor) and data[key].is_floating_point():
            garbage.append(torch.full_like(data[key], float("nan")))
            garbage.append(data[key].flatten()[:-1] if data[key].numel() > 1 else data[key][None, None])
        for value in garbage:
            outcome = judge_outcome(name, {**data, key: value}, case)  # never an exception but CheckFailed
            assert key in READ_ON_SOME_PATHS or outcome == "rejected", (key, value)
            tried += 1
        without = judge_outcome(name, {k: v for k, v in data.items() if k != key}, case)
        assert key in READ_ON_SOME_PATHS or without == "rejected", f"without {key!r}"
    assert tried >= 8 * len(GARBAGE)


def test_a_stopped_probe_is_judged_where_the_one_piece_check_stopped():
    # The class is not an nn.Module, and its initial W has the wrong spread: a one-piece check
    # says the spread first (seed 0 checks the initialisation before the case's model), so must the judge.
    text = ("class ToyModel:\n    def __init__(self, n_features, n_hidden, n_instances=1, **kwargs):\n"
            "        self.W = torch.randn(n_instances, n_hidden, n_features) * 3\n")
    outcome = in_process("ToyModel", text)
    assert outcome.status == "failed" and "do not have Xavier-normal's spread" in outcome.message
    namespace = {"__name__": "__main__"}
    exec(IMPORTS + text, namespace)
    data, case = (lambda: None, None)
    exercise = checks.EXERCISES["ToyModel"].exercise
    with _framework._seeded(0):
        case = exercise.make_case(0)
        data = exercise.observe(_framework._guard(namespace["ToyModel"]), case)
    assert data[_framework.STOPPED][0] == "failed" and "not an nn.Module" in data[_framework.STOPPED][1]
    with pytest.raises(_framework.CheckFailed, match="do not have Xavier-normal's spread"):
        exercise.judge(data, case)
    with _framework._seeded(1):  # seed 1 has no initialisation statistics: the stop itself
        case = exercise.make_case(1)
        data = exercise.observe(_framework._guard(namespace["ToyModel"]), case)
    with pytest.raises(_framework.CheckFailed, match="made a ToyModel, not an nn.Module"):
        exercise.judge(data, case)
