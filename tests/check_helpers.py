"""Shared helpers for the tests of exercise checks (tests/test_chNN_checks*.py)."""

from __future__ import annotations

import re

import pytest

from course_utils import checks

NUMBER_LIST = r"\[\s*-?\d[\d.e+-]*\s*,\s*-?\d[\d.e+-]*\s*,"  # "[0.12, 3.4, ..." (a printed array)


def stub(*args, **kwargs):
    """What the learner notebook's exercise stub does."""
    raise NotImplementedError


def failure(name, learner, **kwargs) -> str:
    """The failure message; asserts that the check failed and printed no tensor values."""
    outcome = checks.evaluate(name, learner, **kwargs)
    assert outcome.status == checks.FAILED, outcome.line
    assert "tensor(" not in outcome.line and not re.search(NUMBER_LIST, outcome.line), outcome.line
    assert len(re.findall(r"\d\.\d{4,}", outcome.line)) == 0, outcome.line  # no long decimals
    return outcome.message


def assert_reference_passes_and_stub_is_not_attempted(name, reference, capsys: pytest.CaptureFixture) -> None:
    used_when_passed = checks.EXERCISES[name](reference)
    used_when_not_attempted = checks.EXERCISES[name](stub)
    lines = capsys.readouterr().out.splitlines()
    outcomes = [line for line in lines if line.startswith("[")]
    passed, not_attempted = outcomes
    assert passed.startswith(f"[passed] {name}: ")
    assert not_attempted.startswith(f"[not attempted] {name}: the function still raises NotImplementedError")
    spec = checks.EXERCISES[name].exercise
    if spec.reference is None:  # the check returns nothing and prints one line
        assert used_when_passed is used_when_not_attempted is None and len(lines) == 2
    else:  # it returns what the chapter runs, said on a second line
        assert used_when_passed is reference and used_when_not_attempted is spec.reference
        assert len(lines) == 4 and lines[1] == f"  → the chapter now runs your {name}."
        assert lines[3].startswith(f"  → using the course's {name} for the rest of the chapter: yours is not attempted")


def assert_passes(name, learner, seeds=None) -> None:
    """The check passes ``learner`` (on ``seeds``, else the default seeds)."""
    outcome = checks.evaluate(name, learner, seeds=seeds)
    assert outcome.passed, outcome.line


def assert_names_mistake(name, learner, mistake: str, seeds=None) -> None:
    """The check fails ``learner`` and names ``mistake``, one of its listed known mistakes."""
    message = failure(name, learner, seeds=seeds)
    assert f"matches a known mistake: {mistake}" in message, message


def default_cases(name, make_case) -> list:
    """The cases that exercise ``name`` runs by default, built by ``make_case(seed)``."""
    return [make_case(seed) for seed in checks.EXERCISES[name].exercise.seeds]


def assert_registered(names, min_seeds: int = 8) -> None:
    """Each exercise is registered under its name, exported, with >= 2 hints, >= ``min_seeds``
    seeds and a docstring that names it."""
    for name in names:
        check = getattr(checks, f"check_{name}")
        assert checks.EXERCISES[name] is check and f"check_{name}" in checks.__all__
        assert check.exercise.name == name
        assert len(check.exercise.hints) >= 2 and len(check.exercise.seeds) >= min_seeds
        assert check.__doc__ and name in check.__doc__
