"""The grader's result checks: what several of a learner's definitions make together.

Chapter 01's ``result:pentagon``: the learner's ``ToyModel`` (5 features, 2 dimensions,
1 - S = 0.05), trained by their ``train_model`` from a fixed seed, must give a regular
pentagon in its best instance.  The learner's code runs in the grader's sandbox
(``worker.evaluate`` as the grader calls it, one sandbox per submission); the verdict is
reached in this process.  The end-to-end rows (a whole batch by the command line) are in
tests/test_tools_grade.py.
"""

from __future__ import annotations

import json
import linecache
import os
import sys
import textwrap
from pathlib import Path

import pytest

from course_utils import checks
from course_tools.grade import config as grade_config
from course_tools.grade import harvest, worker

sys.path.insert(0, str(Path(__file__).parent / "fixtures" / "grading"))
import submission_notebooks as nbs  # noqa: E402

PENTAGON = "result:pentagon"
MEMORY_MB = 1000
RIGHT = nbs.RIGHT
CHAPTER_01_CAPSTONE = ["toy_forward", "generate_batch", "importance_weighted_loss", "ToyModel", "train_model"]


def notebook_definitions(replace: dict[str, str] | None = None, leave_out=()) -> dict[str, dict]:
    """What the harvest sends for the chapter's first five exercises (``replace``: name ->
    that cell's source instead of the right one), defined the way notebook cells define
    them: in __main__, one cell each, each cell's text in linecache."""
    namespace = {"__name__": "__main__"}
    cells = [nbs.IMPORTS] + [(replace or {}).get(name, RIGHT[name]) for name in CHAPTER_01_CAPSTONE]
    for number, text in enumerate(cells):
        filename = f"<result-test cell {number} {abs(hash(text))}>"
        linecache.cache[filename] = (len(text), None, text.splitlines(keepends=True), filename)
        exec(compile(text, filename, "exec"), namespace)
    return {name: harvest.describe(namespace[name]) for name in ("ToyModel", "train_model")
            if name in namespace and name not in leave_out}


def grade_result(definitions: dict, time_limit: float | None = None, missing: dict | None = None,
                 config: grade_config.GradingConfig | None = None) -> tuple[dict, list[str]]:
    """The result row the grader writes for these definitions (no exercise rows)."""
    config = config or grade_config.GradingConfig()
    specs = worker.result_specs(["ToyModel", "train_model"], config, missing or {})
    assert [spec["name"] for spec in specs] == [PENTAGON]
    if time_limit is not None:
        specs[0]["time_limit"] = time_limit
    notes: list[str] = []
    env = dict(os.environ, SUPERPOSITION_THREADS="1", OMP_NUM_THREADS="1")
    rows = worker.evaluate([], definitions, MEMORY_MB * 2**20, env, None, notes, results=specs)
    assert len(rows) == 1
    return rows[0], notes


# --------------------------------------------------------------------------------------
# The registry and the config (no sandbox)
# --------------------------------------------------------------------------------------


def test_chapter_01_declares_the_pentagon_next_to_its_exercises():
    check = checks.RESULT_CHECKS[PENTAGON]
    assert check.uses == ("ToyModel", "train_model") and check.points == 1
    assert check.title == "pentagon (result of ToyModel + train_model)"
    assert check.produce.__module__ == "course_utils.checks.toy_models"
    # Graded whenever both of its exercises are, never otherwise.
    assert checks.result_checks_for(nbs.EXERCISES) == [check]
    assert checks.result_checks_for([name for name in nbs.EXERCISES if name != "train_model"]) == []


def test_the_config_sets_a_result_checks_points_and_time_limit(tmp_path):
    known = set(checks.EXERCISES) | set(checks.RESULT_CHECKS)
    (tmp_path / "g.json").write_text(json.dumps({"exercises": {PENTAGON: {"points": 3, "time_limit": 90}}}))
    config = grade_config.load(tmp_path / "g.json", known)
    (spec,) = worker.result_specs(nbs.EXERCISES, config, {})
    assert (spec["points"], spec["time_limit"]) == (3.0, 90.0)
    (spec,) = worker.result_specs(nbs.EXERCISES, grade_config.GradingConfig(), {})
    assert (spec["points"], spec["time_limit"]) == (1.0, checks.RESULT_CHECKS[PENTAGON].time_limit)
    (tmp_path / "bad.json").write_text(json.dumps({"exercises": {PENTAGON: {"hidden_seeds": [1]}}}))
    with pytest.raises(grade_config.ConfigError, match="a result check has no cases"):
        grade_config.load(tmp_path / "bad.json", known)
    (tmp_path / "nope.json").write_text(json.dumps({"exercises": {"result:hexagon": {"points": 1}}}))
    with pytest.raises(grade_config.ConfigError, match="no such exercise"):
        grade_config.load(tmp_path / "nope.json", known)


def test_a_missing_definition_is_missing_and_says_which(tmp_path):
    row, _ = grade_result(notebook_definitions(leave_out=["train_model"]),
                          missing={"train_model": "`train_model` is not defined: no cell of the notebook defines it"})
    assert row["outcome"] == "missing" and row["points"] == 0 and row["max_points"] == 1
    assert row["message"] == ("needs your `ToyModel` and `train_model`: `train_model` is not defined: "
                              "no cell of the notebook defines it")
    row, _ = grade_result({})
    assert row["outcome"] == "missing"
    assert "`ToyModel` is not defined; `train_model` is not defined" in row["message"]


def test_the_judge_says_what_it_measured_and_never_trusts_the_data():
    judge = checks.RESULT_CHECKS[PENTAGON].judge_safely
    assert judge("not a dict").status == "failed"
    import torch

    W = torch.randn(8, 2, 5)
    outcome = judge({"W": W, "b": torch.zeros(8, 5), "W0": W.clone()})
    assert outcome.status == "failed" and "did not change the model's W" in outcome.message
    outcome = judge({"W": torch.full((8, 2, 5), float("nan")), "b": torch.zeros(8, 5)})
    assert outcome.status == "failed" and "NaN or inf in 8 of 8 instances" in outcome.message
    outcome = judge({"W": torch.zeros(8, 5, 2), "b": torch.zeros(8, 5)})
    assert "has shape (8, 5, 2), expected (8, 2, 5)" in outcome.message
    # Five features at 72° with equal norms is a pentagon; four at 90° is not.
    angles = torch.arange(5) * 2 * torch.pi / 5 + 0.3
    pentagon = torch.stack([angles.cos(), angles.sin()])[None].repeat(8, 1, 1) * 1.1
    outcome = judge({"W": pentagon, "b": torch.full((8, 5), -0.25)})
    assert outcome.status == "passed" and "is a regular pentagon: angle gaps 72°-72°" in outcome.message
    square = pentagon.clone()
    square[:, :, :4] = torch.tensor([[1.0, 0, -1, 0], [0, 1, 0, -1]])
    square[:, :, 4] = 0.01
    outcome = judge({"W": square, "b": torch.zeros(8, 5)})
    assert outcome.status == "failed"
    assert "is not a regular pentagon: 4 of 5 features represented (‖W_i‖ > 0.5), angle gaps [90°, 90°, 90°, 90°]" \
        in outcome.message


# --------------------------------------------------------------------------------------
# Trained in the sandbox, judged here
# --------------------------------------------------------------------------------------


def test_a_correct_toy_model_and_loop_make_a_pentagon():
    row, notes = grade_result(notebook_definitions())
    assert row["outcome"] == "passed", row["message"]
    assert row["points"] == 1 and row["exercise"] == PENTAGON and row["uses"] == ["ToyModel", "train_model"]
    assert "is a regular pentagon: angle gaps" in row["message"]
    assert notes == []


WRONG_RESULTS = {
    # Adam on gradients summed over every step so far: the features never settle at 72°.
    "no zero_grad": ({"train_model": RIGHT["train_model"].replace("        optimizer.zero_grad()\n", "")},
                     "is not a regular pentagon: "),
    # (A loop that never steps, or zeroes the gradients between backward and step, leaves W
    # as it was: test_the_judge_says_what_it_measured_and_never_trusts_the_data.)
    # No ReLU: a linear model stores two directions' worth of features, never a pentagon.
    "linear model": ({"toy_forward": RIGHT["toy_forward"].replace(
        'return torch.relu(out) if activation == "relu" else out', "return out")}, "is not a regular pentagon: "),
}


@pytest.mark.parametrize("mistake", list(WRONG_RESULTS))
def test_plausible_wrong_capstones_fail_with_what_was_measured(mistake):
    replace, words = WRONG_RESULTS[mistake]
    row, _ = grade_result(notebook_definitions(replace))
    assert row["outcome"] == "failed" and row["points"] == 0
    assert words in row["message"], row["message"]
    assert "features represented (‖W_i‖ > 0.5), angle gaps [" in row["message"]


def test_a_stub_is_not_attempted():
    row, _ = grade_result(notebook_definitions({"train_model": nbs.STUB["train_model"]}))
    assert row["outcome"] == "not attempted" and row["points"] == 0
    assert "NotImplementedError: exercise: train_model" in row["message"]


def first_in_loop(code: str) -> str:
    """The right train_model with ``code`` first (before Adam, whose first use imports for
    seconds in a fresh process)."""
    start = "    multiplier = lr_schedule(schedule)"
    return RIGHT["train_model"].replace(start, textwrap.indent(code, "    ") + "\n" + start)


SYSTEM_EXIT = first_in_loop("import sys\nsys.exit(3)")
ENDLESS = first_in_loop("while True:\n    pass")
STUBBORN = first_in_loop("while True:\n    try:\n        while True:\n            pass\n    except BaseException:\n        pass")
EXITS = first_in_loop("import os\nos._exit(1)")


def test_broken_and_malicious_code_is_reported_and_the_grader_goes_on(monkeypatch):
    from course_tools.grade import sandbox

    monkeypatch.setattr(sandbox, "CALL_GRACE_S", 1.0)  # the grader waits 1 s past the limit, not 10
    row, _ = grade_result(notebook_definitions({"train_model": SYSTEM_EXIT}))
    assert row["outcome"] == "failed"
    assert row["message"] == "your code raised SystemExit: 3 (line 4: sys.exit(3))."
    row, _ = grade_result(notebook_definitions({"train_model": ENDLESS}), time_limit=3)
    assert (row["outcome"], row["message"]) == ("failed", "took longer than 3 s; the grader stopped it.")
    # A loop that swallows the time limit's exception: the grader stops the sandbox itself.
    row, notes = grade_result(notebook_definitions({"train_model": STUBBORN}), time_limit=2)
    assert (row["outcome"], row["message"]) == ("failed", "took longer than 2 s; the grader stopped it.")
    # The sandbox ends: the result could not be measured.
    row, _ = grade_result(notebook_definitions({"train_model": EXITS}))
    assert row["outcome"] == "error" and row["points"] == 0
    assert row["message"] == "running your code ended the process it ran in (exit code 1)."
