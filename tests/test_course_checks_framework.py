"""The check framework: outcomes, messages, time limit, recording, hints, registry.

A tiny exercise, "_double" (return 2·x), exercises the framework without any chapter.
"""

from __future__ import annotations

import ast
import json
import re
import signal
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from course_utils import checks
from course_utils.checks import _framework as fw
from course_utils.checks._framework import Case, call_pure, expect_close, expect_output


def _double_case(seed: int) -> Case:
    gen = torch.Generator().manual_seed(seed)
    rows = 2 + seed % 5
    return Case(f"rows={rows}", x=torch.randn(rows, rows, generator=gen))


def _check_double(learner, case: Case) -> None:
    """Check your double(x)."""
    out = call_pure(learner, {"x": case.x})
    expected = 2 * case.x
    out = expect_output(out, expected, "(rows, columns)")
    expect_close(out, expected, suspects={"x + 1 instead of 2·x": case.x + 1})


@pytest.fixture
def double():
    """Register "_double" for one test, then remove it from the registry and the results."""
    check = checks.exercise("_double", cases=_double_case, seeds=range(3), hints=["Multiply.", "By 2."],
                            time_limit=5)(_check_double)
    yield check
    checks.EXERCISES.pop("_double", None)
    fw._RESULTS.pop("_double", None)


def right(x):
    return 2 * x


def stub(x):
    raise NotImplementedError("Replace this with your code.")


def line(learner, **kwargs) -> str:
    return checks.evaluate("_double", learner, **kwargs).line


# --------------------------------------------------------------------------------------
# The three outcomes and the printed line
# --------------------------------------------------------------------------------------


def test_passed_prints_one_line_and_returns_none(double, capsys):
    assert double(right) is None
    assert capsys.readouterr().out == "[passed] _double: 3/3 cases match the reference.\n"


def test_not_attempted(double, capsys):
    double(stub)
    assert capsys.readouterr().out == (
        '[not attempted] _double: the function still raises NotImplementedError. Replace the stub '
        'with your code. (checks.hint("_double") for a hint)\n')


def test_not_implemented_after_a_passing_case_is_a_failure(double):
    def partial(x):
        if x.shape[0] > 2:
            raise NotImplementedError("only 2 rows so far")
        return 2 * x

    outcome = checks.evaluate("_double", partial)
    assert outcome.status == checks.FAILED
    assert outcome.message.startswith("case 2 (rows=3): your function raised NotImplementedError")


def test_failed_names_the_case(double):
    assert line(lambda x: 3 * x).startswith("[failed] _double: case 1 (rows=2): ")


def test_output_is_stable(double):
    wrong = lambda x: x + torch.linspace(0, 1, x.numel()).reshape(x.shape)  # noqa: E731
    assert line(wrong) == line(wrong)
    assert line(right) == line(right)


# --------------------------------------------------------------------------------------
# Learner exceptions, odd return values, time limit
# --------------------------------------------------------------------------------------


def test_exception_gives_type_message_and_learner_line(double):
    def broken(x):
        y = x * 2
        raise ValueError("boom")

    text = line(broken)
    assert "your function raised ValueError: boom" in text
    assert 'raise ValueError("boom")' in text
    assert "Traceback" not in text and "\n" not in text


def test_exception_message_has_no_memory_address(double):
    def broken(x):
        raise TypeError(f"bad object {object()!r}")

    assert "0x" not in line(broken)


def test_keyboard_interrupt_propagates(double):
    def interrupted(x):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        double(interrupted)


@pytest.mark.parametrize("returned, phrase", [
    (None, "returned None; did you forget to `return`"),
    ((1, 2), "returned a tuple of 2 items"),
    (np.zeros((2, 2)), "returned a numpy.ndarray; expected a torch.Tensor"),
    (3.0, "returned a float"),
])
def test_non_tensor_returns(double, returned, phrase):
    assert phrase in line(lambda x: returned)


def test_not_callable(double):
    assert line(42) == "[failed] _double: expected your function, got int."


def test_a_crashing_check_is_reported_not_raised(double):
    def raises_in_check(learner, case):
        raise RuntimeError("a bug in the check")

    check = checks.exercise("_double", cases=_double_case, seeds=[0], hints=[])(raises_in_check)
    assert checks.evaluate("_double", right).line == (
        "[failed] _double: case 1 (rows=2): could not check your output "
        "(RuntimeError: a bug in the check).")
    check(right)  # prints, never raises


def test_time_limit(double):
    def forever(x):
        while True:
            pass

    previous = signal.getsignal(signal.SIGALRM)
    start = time.monotonic()
    outcome = checks.evaluate("_double", forever, time_limit=1)
    assert time.monotonic() - start < 5
    assert outcome.line == ("[failed] _double: case 1 (rows=2): took longer than 1 s "
                            "(an infinite loop, or a Python loop over the batch?).")
    assert signal.getsignal(signal.SIGALRM) is previous
    assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)


def test_time_limit_cannot_be_swallowed_by_except_exception(double):
    def stubborn(x):
        while True:
            try:
                while True:
                    pass
            except Exception:
                pass

    assert "took longer than 0.5 s" in line(stubborn, time_limit=0.5)


def test_outside_the_main_thread_runs_without_a_limit(double):
    found = []
    thread = threading.Thread(target=lambda: found.append(checks.evaluate("_double", right)))
    thread.start()
    thread.join()
    assert found[0].passed


# --------------------------------------------------------------------------------------
# What is wrong: NaN, mutation, factor, sign, transpose, shape, dtype, known mistakes
# --------------------------------------------------------------------------------------


def test_nan_and_inf(double):
    def with_nan(x):
        out = 2 * x
        out[0, 0] = float("nan")
        return out

    assert "output contains NaN at 1 of 4 entries" in line(with_nan)
    assert "output contains inf at 4 of 4 entries" in line(lambda x: x / 0.0)


def test_in_place_mutation(double):
    def mutates(x):
        x.mul_(2)
        return x

    assert "changed its input `x` in place (at 4 of 4 entries)" in line(mutates)


def test_constant_factor_sign_and_transpose(double):
    # the factor and its sign are never named: either would give the answer away
    for wrong in (lambda x: 6 * x, lambda x: -2 * x, lambda x: 0.5 * x):
        message = line(wrong)
        assert "off by a constant factor" in message
        assert not re.search(r"\d", message.split("constant factor")[1]), message
        assert "sign flipped" not in message
    assert "transposed" in line(lambda x: 2 * x.T)
    assert "all zeros" in line(lambda x: torch.zeros_like(x))


def test_generic_difference_counts_entries(double):
    def off_at_one(x):
        out = 2 * x
        out[0, 0] += 1
        return out

    assert "differs from the reference at 1 of 4 entries (max abs error 1)" in line(off_at_one)


def test_float_noise_is_tolerated(double):
    assert line(lambda x: (2 * x.double()).float() * (1 + 1e-6)).startswith("[passed]")


def test_shape_dtype_device(double):
    assert "output has shape (2, 2, 1), expected (rows, columns) = (2, 2)" in line(lambda x: (2 * x)[..., None])
    assert "output is a single number (shape ())" in line(lambda x: (2 * x).sum())
    assert "dtype torch.float64, expected torch.float32" in line(lambda x: 2 * x.double())
    assert "output is on device meta" in line(lambda x: (2 * x).to("meta"))


def test_known_mistake_is_named(double):
    assert "matches a known mistake: x + 1 instead of 2·x" in line(lambda x: x + 1)


def assert_no_values(text: str, expected: torch.Tensor) -> None:
    """No tensor repr, no list of numbers, no expected entry printed to 3 significant digits."""
    assert "tensor(" not in text and not re.search(r"\[\s*-?\d", text), text
    for value in expected.flatten().tolist():
        assert f"{value:.3g}" not in text, (value, text)


def test_messages_never_print_the_expected_values(double):
    for wrong in (lambda x: x + 1, lambda x: 3 * x, lambda x: x, lambda x: 2 * x.T + 1):
        outcome = checks.evaluate("_double", wrong)
        assert outcome.status == checks.FAILED
        assert_no_values(outcome.line, 2 * _double_case(0).x)


# --------------------------------------------------------------------------------------
# Seeds, determinism, the learner's random state
# --------------------------------------------------------------------------------------


def test_seeds_replace_the_defaults(double):
    assert line(right, seeds=[0, 1, 2, 10, 11]) == "[passed] _double: 5/5 cases match the reference."


def test_hidden_seeds_catch_what_the_defaults_miss(double):
    def only_small(x):
        return 2 * x if x.shape[0] < 5 else 3 * x

    assert checks.evaluate("_double", only_small).passed  # default seeds: 2 to 4 rows
    outcome = checks.evaluate("_double", only_small, seeds=[0, 1, 2, 3])
    assert outcome.message.startswith("case 4 (rows=5): ")


def test_cases_are_seeded_and_the_global_rng_is_restored(double):
    def noisy(x):  # uses the global RNG: deterministic because each case is seeded
        return 2 * x + torch.rand(()) * 1e-3

    torch.manual_seed(123)
    np.random.seed(123)
    first = line(noisy)
    after_check = (torch.rand(3), np.random.rand(3))
    torch.manual_seed(123)
    np.random.seed(123)
    assert line(noisy) == first
    torch.manual_seed(123)
    np.random.seed(123)
    assert torch.equal(torch.rand(3), after_check[0])
    assert np.array_equal(np.random.rand(3), after_check[1])


# --------------------------------------------------------------------------------------
# Recording, evaluate, registry, hints
# --------------------------------------------------------------------------------------


def test_results_and_json_log(double, tmp_path, monkeypatch, capsys):
    log = tmp_path / "checks.jsonl"
    monkeypatch.setenv("SUPERPOSITION_CHECK_LOG", str(log))
    double(stub)
    double(right)
    recorded = checks.results()["_double"]
    assert recorded == checks.Outcome("_double", "passed", "3/3 cases match the reference.")
    lines = [json.loads(text) for text in log.read_text().splitlines()]
    assert [entry["status"] for entry in lines] == ["not attempted", "passed"]
    assert lines[1] == {"exercise": "_double", "status": "passed",
                        "message": "3/3 cases match the reference."}


def test_evaluate_prints_nothing_and_records_only_on_request(double, tmp_path, monkeypatch, capsys):
    log = tmp_path / "checks.jsonl"
    monkeypatch.setenv("SUPERPOSITION_CHECK_LOG", str(log))
    outcome = checks.evaluate("_double", right)
    assert isinstance(outcome, checks.Outcome) and outcome.passed
    assert capsys.readouterr().out == ""
    assert "_double" not in checks.results() and not log.exists()
    checks.evaluate("check__double", right, record=True)  # the check's name works too
    assert checks.results()["_double"].passed and log.exists()


def test_evaluate_unknown_name_raises_key_error():
    with pytest.raises(KeyError, match="toy_forward"):
        checks.evaluate("no_such_exercise", right)


def test_registry_holds_the_chapter_checks(double):
    for name in ("toy_forward", "generate_batch", "importance_weighted_loss", "feature_norms",
                 "superposition_interference"):
        check = checks.EXERCISES[name]
        assert check is getattr(checks, f"check_{name}")
        assert check.exercise.name == name and check.exercise.hints and check.exercise.seeds
    assert checks.EXERCISES["_double"] is double
    assert double.__name__ == "_check_double" and double.__doc__ == "Check your double(x)."


def test_hints(double, capsys):
    checks.hint("_double")
    checks.hint("_double", 2)
    checks.hint("_double", 3)
    checks.hint(double, 1)
    checks.hint("nope")
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "Hint 1/2 for _double: Multiply."
    assert out[1] == "Hint 2/2 for _double: By 2."
    assert out[2] == "There are no more hints for _double: it has 2."
    assert out[3] == out[0]
    assert out[4].startswith("There is no exercise named 'nope'. Known exercises: _double, ")
    assert "toy_forward" in out[4]


# --------------------------------------------------------------------------------------
# Load-bearing learner code: the check returns what the chapter runs
# --------------------------------------------------------------------------------------


def _reference_double(x):
    return 2 * x


@pytest.fixture
def double_with_reference():
    check = checks.exercise("_double_ref", cases=_double_case, seeds=range(3), hints=["Multiply."],
                            time_limit=5, reference=_reference_double)(_check_double)
    yield check
    checks.EXERCISES.pop("_double_ref", None)
    fw._RESULTS.pop("_double_ref", None)
    fw._REFERENCES.pop(id(_reference_double), None)


def test_a_passing_function_is_returned_and_used(double_with_reference, capsys):
    def mine(x):
        return x + x

    assert double_with_reference(mine) is mine
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("[passed] _double_ref") and out[1] == "  → the chapter now runs your _double_ref."
    assert checks.made_with(mine) == "[made with] your mine."


@pytest.mark.parametrize("learner, why", [
    (lambda x: 3 * x, "yours failed its check"),
    (lambda x: (_ for _ in ()).throw(NotImplementedError()), "yours is not attempted yet"),
])
def test_otherwise_the_reference_is_returned_and_said(double_with_reference, capsys, learner, why):
    assert double_with_reference(learner) is _reference_double
    out = capsys.readouterr().out.splitlines()
    assert out[1] == (f"  → using the course's _double_ref for the rest of the chapter: {why}; "
                      "rerun this cell once it passes.")
    assert checks.is_reference(_reference_double) and not checks.is_reference(learner)

    def loop(model):
        return model

    assert checks.made_with(_reference_double, loop) == (
        "[made with] the course's reference _double_ref (yours has not passed its check); your loop.")


def test_a_check_without_a_reference_returns_nothing(double, capsys):
    assert double(lambda x: 2 * x) is None
    assert capsys.readouterr().out.count("\n") == 1


@pytest.mark.parametrize("error", [SystemExit(3), GeneratorExit(), type("Stop", (BaseException,), {})("now")])
def test_a_base_exception_from_the_learner_is_reported_not_raised(double, error):
    def exits(x):
        raise error

    message = line(exits)
    assert message.startswith("[failed] _double: case 1") and type(error).__name__ in message
    assert "would stop the kernel's cell" in message


def test_keyboard_interrupt_still_stops_a_check(double):
    def interrupted(x):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        line(interrupted)


def test_chapter_check_modules_share_helpers_only_through_framework_and_helpers():
    """A chapter's check module imports from ``_framework`` and ``_helpers`` and the library,
    never from another chapter's check module; ``_helpers`` builds on ``_framework`` alone."""
    allowed_by_module = {"__init__": None, "_framework": set(), "_helpers": {"_framework"}}
    for path in sorted(Path(checks.__file__).parent.glob("*.py")):
        allowed = allowed_by_module.get(path.stem, {"_framework", "_helpers"})
        if allowed is None:  # the package re-exports every chapter's checks
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.level == 1:
                assert node.module in allowed, f"{path.name} imports from .{node.module}"
