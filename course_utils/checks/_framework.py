"""The exercise-check framework: run a learner's function on seeded cases, print one line.

A check is two small functions registered with ``@exercise``: one builds the inputs of a
case from an integer seed, the other runs the learner on a case and raises ``CheckFailed``
with a message saying what is wrong::

    def _forward_case(seed: int) -> Case: ...

    @exercise("toy_forward", cases=_forward_case, seeds=range(8), hints=[...])
    def check_toy_forward(learner, case: Case) -> None:
        out = call_pure(learner, {"W": case.W, "b": case.b, "x": case.x})
        expected = reference(case.W, case.b, case.x)
        expect_output(out, expected, "(instances, batch, features)")
        expect_close(out, expected, suspects={"the ReLU is missing": ...})

The decorator turns that into the public check ``check_toy_forward(learner, seeds=None,
time_limit=None)``, which runs every case, prints ONE line, records the outcome and
returns None:

    [passed] toy_forward: 8/8 cases match the reference.
    [failed] toy_forward: case 2 (instances=3, ...): output has shape (3, 5, 7), expected ...
    [not attempted] toy_forward: the function still raises NotImplementedError. ...

An exercise whose answer is a class (a model the learner builds) is checked in two halves,
so that the grader can keep the learner's code and the verdict in different processes: the
decorated function is the *probe*, which runs the learner's class and writes what it sees into
a dict, and ``judge=`` names the function that compares that dict with the reference::

    @exercise("ToyModel", cases=_model_case, seeds=range(8), hints=[...], judge=_judge_toy_model)
    def check_toy_model(learner, case: Case, seen: dict) -> None:
        model = learner(...)
        seen["W"] = probe_parameter(model, "W")        # plain data only (see ``plain``)
        seen["forward"] = plain(_method(model, "forward", x))

    def _judge_toy_model(data, case: Case) -> None:
        W = observed(data, "W")                        # never trusts data's types or shapes
        ...

In a notebook both halves run here, one after the other, with the same outcomes and
messages as a one-piece check; the grader runs the probe in its sandbox and the judge in its
own process (``Exercise.evaluate(..., probe=...)``).

Inside a check, ``learner`` is the learner's function wrapped so that NotImplementedError
means "not attempted" and any other exception becomes a failure message.  Every case runs
with torch, NumPy and ``random`` seeded from the case's seed (and the learner's own random
state put back afterwards), under a time limit.  Messages describe what is wrong (shape,
dtype, NaN, in-place mutation, a constant factor, a known mistake); they never print the
expected values.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import inspect
import json
import os
import random
import re
import signal
import threading
import time
import traceback
import warnings
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Callable, Iterable

import numpy as np
import torch
from torch import Tensor

from ..training import full_size

PASSED, FAILED, NOT_ATTEMPTED = "passed", "failed", "not attempted"
DEFAULT_TIME_LIMIT = 20.0  # seconds per check (all its cases together)
LOG_ENV = "SUPERPOSITION_CHECK_LOG"  # append one JSON line per recorded outcome to this file
RTOL, ATOL = 1e-4, 1e-5  # float32-noise-safe tolerances, applied in float64


class CheckFailed(Exception):
    """Raised inside a check with a message saying what is wrong with the learner's answer."""


class NotAttempted(Exception):
    """The learner's function raised NotImplementedError: the stub is still in place."""


class _TimedOut(BaseException):
    """Raised by the alarm; a BaseException so that a learner's ``except Exception`` cannot
    swallow it."""


@dataclass(frozen=True)
class Outcome:
    """The result of one check: ``status`` is "passed", "failed" or "not attempted"."""

    exercise: str
    status: str
    message: str

    @property
    def passed(self) -> bool:
        return self.status == PASSED

    @property
    def line(self) -> str:
        """The one line a notebook shows, e.g. ``[passed] toy_forward: 8/8 cases match ...``."""
        return f"[{self.status}] {self.exercise}: {self.message}"

    def __str__(self) -> str:
        return self.line


class Case(SimpleNamespace):
    """One seeded case: a ``label`` shown in failure messages, plus the inputs a check needs."""

    def __init__(self, label: str, **inputs):
        super().__init__(label=label, **inputs)


# --------------------------------------------------------------------------------------
# Exercises and the registry
# --------------------------------------------------------------------------------------

EXERCISES: dict[str, Callable[..., None]] = {}  # name -> public check function
_RESULTS: dict[str, Outcome] = {}  # name -> latest recorded outcome
_REFERENCES: dict[int, tuple[Callable, str]] = {}  # id(reference) -> (reference, exercise name)


@dataclass(frozen=True)
class Exercise:
    """Everything about one exercise: its check, its cases, its hints and its points."""

    name: str
    check: Callable[[Callable, Case], None]
    make_case: Callable[[int], Case]
    seeds: tuple[int, ...]
    hints: tuple[str, ...]
    points: float = 1.0
    time_limit: float = DEFAULT_TIME_LIMIT
    passed_message: str = "{n}/{n} cases match the reference."
    reference: Callable | None = None  # what the chapter runs when the learner's fails its check
    # With a judge, ``check`` is the probe ``(learner, case, seen) -> None`` and
    # ``judge(data, case) -> None`` compares what it saw (see the module docstring).
    judge: Callable[[object, Case], None] | None = None

    def evaluate(self, learner, seeds: Iterable[int] | None = None,
                 time_limit: float | None = None, probe: Callable[[int, Case], object] | None = None) -> Outcome:
        """Run the check on every seed's case and return the outcome; never prints, never
        raises (except KeyboardInterrupt and the like).

        ``probe(seed, case) -> data``, for an exercise with a judge: what the probe saw on this
        case, obtained elsewhere (the grader's sandbox runs the probe next to the learner's
        code); only the judge runs here, and ``learner`` is not used.
        """
        seeds = self.seeds if seeds is None else tuple(int(s) for s in seeds)
        limit = self.time_limit if time_limit is None else float(time_limit)
        if probe is not None and self.judge is not None:
            run = lambda seed, case: self.judge(probe(seed, case), case)  # noqa: E731
        elif not callable(learner):
            return Outcome(self.name, FAILED, f"expected your function, got {_type_name(learner)}.")
        elif self.judge is not None:
            guarded = _guard(learner)
            run = lambda seed, case: self.judge(self.observe(guarded, case), case)  # noqa: E731
        else:
            guarded = _guard(learner)
            run = lambda seed, case: self.check(guarded, case)  # noqa: E731
        k, where = 0, "before the first case"
        try:
            with _time_limit(limit), full_size():  # the checks' loops run all their steps, smoke mode or not
                for k, seed in enumerate(seeds, 1):
                    where = f"case {k}"
                    with _seeded(seed):
                        case = self.make_case(seed)
                        where = f"case {k} ({case.label})"
                        run(seed, case)
        except NotAttempted as stub:
            if k <= 1:
                return Outcome(self.name, NOT_ATTEMPTED, self.not_attempted_message)
            return Outcome(self.name, FAILED, f"{where}: your function raised {stub}.")
        except CheckFailed as failure:
            return Outcome(self.name, FAILED, f"{where}: {_sentence(str(failure))}")
        except _TimedOut:
            return Outcome(self.name, FAILED, f"{where}: took longer than {limit:g} s "
                           "(an infinite loop, or a Python loop over the batch?).")
        except Exception as error:  # a learner output the check did not foresee
            return Outcome(self.name, FAILED,
                           f"{where}: could not check your output ({_exception_text(error)}).")
        except KeyboardInterrupt:  # the learner pressed stop: stop
            raise
        except BaseException as error:  # SystemExit, GeneratorExit, ... raised by the learner's code
            return Outcome(self.name, FAILED, f"{where}: your code raised {_exception_text(error)}, "
                           "which would stop the kernel's cell; raise an Exception instead.")
        return Outcome(self.name, PASSED, self.passed_message.format(n=len(seeds)))

    def observe(self, learner, case: Case) -> dict:
        """Run the probe on ``case`` and return what it saw.  Where the learner's code fails
        (or the probe stops on what it sees), the failure is kept under ``STOPPED`` with what
        was seen before it, so that the judge reports the same first failure a one-piece
        check would."""
        seen: dict = {}
        try:
            self.check(learner, case, seen)
        except _TimedOut:
            seen[STOPPED] = ["timed out", ""]
        except KeyboardInterrupt:
            raise
        except BaseException as error:  # noqa: BLE001 - kept as data for the judge
            seen[STOPPED] = _stop_record(error)
        return seen

    def probe_seed(self, learner, seed: int, time_limit: float) -> dict:
        """The grader's sandbox side: build case ``seed`` as ``evaluate`` does (seeded) and
        return what the probe saw on it, within ``time_limit`` seconds."""
        with _seeded(seed):
            case = self.make_case(seed)
            seen: dict = {}
            try:
                with _time_limit(time_limit), full_size():
                    seen = self.observe(_guard(learner), case)
            except _TimedOut:  # the alarm fell between the probe's end and the block's
                seen[STOPPED] = ["timed out", ""]
            return seen

    @property
    def not_attempted_message(self) -> str:
        return ("the function still raises NotImplementedError. Replace the stub with your code. "
                f'(checks.hint("{self.name}") for a hint)')


def exercise(name: str, *, cases: Callable[[int], Case], seeds: Iterable[int],
             hints: Iterable[str], points: float = 1.0, time_limit: float = DEFAULT_TIME_LIMIT,
             passed: str = "{n}/{n} cases match the reference.", reference: Callable | None = None,
             judge: Callable[[object, Case], None] | None = None):
    """Register ``check(learner, case)`` as exercise ``name``; return the public check.

    The public check has the signature ``(learner, seeds=None, time_limit=None)``: it prints
    one line and records the outcome.  ``seeds`` replaces the default seeds (an instructor
    adds hidden cases with ``seeds=[*defaults, *hidden]``).  The check's docstring is kept,
    so ``help(checks.check_<name>)`` explains it to a learner.

    With a ``reference`` (the course's implementation), the check also returns what the rest
    of the chapter should run, and says so on a second line: the learner's function or class
    when it passed, the reference otherwise (``impl = checks.check_x(x)``).  Without one it
    returns None.

    With a ``judge``, the decorated function is the probe ``(learner, case, seen)`` of a check
    in two halves (see the module docstring).
    """

    def register(check: Callable[[Callable, Case], None]) -> Callable[..., None]:
        spec = Exercise(name, check, cases, tuple(int(s) for s in seeds), tuple(hints),
                        points, time_limit, passed, reference, judge)
        if reference is not None:
            _REFERENCES[id(reference)] = (reference, name)

        def run_check(learner, seeds: Iterable[int] | None = None,
                      time_limit: float | None = None):
            outcome = spec.evaluate(learner, seeds, time_limit)
            _record(outcome)
            print(outcome.line)
            if reference is None:
                return None
            chosen = learner if outcome.passed else reference
            print(f"  → {using_line(spec, outcome)}")
            return chosen

        run_check.__name__ = run_check.__qualname__ = check.__name__
        run_check.__module__, run_check.__doc__ = check.__module__, check.__doc__
        run_check.exercise = spec
        EXERCISES[name] = run_check
        return run_check

    return register


def _lookup(name) -> Exercise | None:
    """The exercise called ``name`` ("toy_forward" or "check_toy_forward"), or given its check."""
    if callable(name) and hasattr(name, "exercise"):
        return name.exercise
    key = str(name)
    key = key if key in EXERCISES else key.removeprefix("check_")
    return EXERCISES[key].exercise if key in EXERCISES else None


def _known_names() -> str:
    return ", ".join(sorted(EXERCISES, key=str.lower))


# --------------------------------------------------------------------------------------
# Whose code runs: the learner's when it passed its check, else the course's reference
# --------------------------------------------------------------------------------------


def _display_name(obj) -> str:
    return getattr(obj, "__name__", None) or type(obj).__name__


def using_line(spec: Exercise, outcome: Outcome) -> str:
    """The line under a check's outcome that says what the chapter runs from here on."""
    if outcome.passed:
        return f"the chapter now runs your {spec.name}."
    why = "yours is not attempted yet" if outcome.status == NOT_ATTEMPTED else "yours failed its check"
    return (f"using the course's {spec.name} for the rest of the chapter: {why}; "
            "rerun this cell once it passes.")


def is_reference(implementation) -> bool:
    """Whether ``implementation`` is the course's reference for one of the exercises."""
    entry = _REFERENCES.get(id(implementation))
    return entry is not None and entry[0] is implementation


def made_with(*implementations) -> str:
    """One line saying whose code produced a result: ``made with your ToyModel and
    train_loop`` or ``made with the course's reference ToyModel (...); your train_loop``.
    A result cell prints it, so that every figure says whose code it comes from."""
    yours = [_display_name(impl) for impl in implementations if not is_reference(impl)]
    course = [_REFERENCES[id(impl)][1] for impl in implementations if is_reference(impl)]
    parts = []
    if course:
        parts.append(f"the course's reference {_join(course)} (yours has not passed its check)"
                     if len(course) == 1 else
                     f"the course's reference {_join(course)} (yours have not passed their checks)")
    if yours:
        parts.append(f"your {_join(yours)}")
    return "[made with] " + "; ".join(parts) + "."


def _join(names: list[str]) -> str:
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


def evaluate(name: str, learner, seeds: Iterable[int] | None = None,
             time_limit: float | None = None, record: bool = False, probe=None) -> Outcome:
    """Grader-side: run exercise ``name``'s check on ``learner`` and return the Outcome.

    Prints nothing; records the outcome (in memory and the log file) only if ``record``.
    ``seeds=None`` uses the notebook's default seeds; a list replaces them.  ``probe``: see
    ``Exercise.evaluate``.  Raises KeyError for an unknown exercise name.
    """
    spec = _lookup(name)
    if spec is None:
        raise KeyError(f"no exercise named {name!r}; known exercises: {_known_names()}")
    outcome = spec.evaluate(learner, seeds, time_limit, probe=probe)
    if record:
        _record(outcome)
    return outcome


def hint(name, n: int = 1) -> None:
    """Print hint ``n`` (1-based) for an exercise; later hints are more specific."""
    spec = _lookup(name)
    if spec is None:
        print(f"There is no exercise named {name!r}. Known exercises: {_known_names()}.")
    elif not spec.hints:
        print(f"There are no hints for {spec.name}.")
    elif n > len(spec.hints):
        print(f"There are no more hints for {spec.name}: it has {len(spec.hints)}.")
    elif n < 1:
        print(f"Hints are numbered from 1: try checks.hint({spec.name!r}, 1).")
    else:
        print(f"Hint {n}/{len(spec.hints)} for {spec.name}: {spec.hints[n - 1]}")


def results() -> dict[str, Outcome]:
    """The latest recorded outcome of every exercise checked in this session."""
    return dict(_RESULTS)


def clear_results() -> None:
    """Forget the recorded outcomes (the log file is left alone)."""
    _RESULTS.clear()


def _record(outcome: Outcome) -> None:
    """Keep the outcome in memory; append it as a JSON line to $SUPERPOSITION_CHECK_LOG if set."""
    _RESULTS[outcome.exercise] = outcome
    path = os.environ.get(LOG_ENV)
    if not path:
        return
    try:
        with open(path, "a", encoding="utf-8") as log:
            log.write(json.dumps(dataclasses.asdict(outcome)) + "\n")
    except OSError as error:
        warnings.warn(f"could not append to the check log {path!r}: {error}", stacklevel=2)


# --------------------------------------------------------------------------------------
# Running the learner: exceptions, time limit, seeding
# --------------------------------------------------------------------------------------


def _guard(learner: Callable) -> Callable:
    """``learner`` with its exceptions turned into NotAttempted / CheckFailed messages."""

    @functools.wraps(learner)
    def call(*args, **kwargs):
        try:
            return learner(*args, **kwargs)
        except NotImplementedError as error:
            raise NotAttempted(_describe_raise(error, learner)) from None
        except (CheckFailed, NotAttempted):
            raise
        except Exception as error:
            raise CheckFailed(f"your function raised {_describe_raise(error, learner)}") from None

    return call


def _exception_text(error: BaseException) -> str:
    """``Type: first line of the message``, without memory addresses, at most ~200 chars."""
    lines = str(error).strip().splitlines()
    text = re.sub(r" at 0x[0-9a-fA-F]+", "", lines[0].strip() if lines else "").rstrip(".")
    text = text if len(text) <= 200 else text[:197] + "..."
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


def _describe_raise(error: BaseException, learner: Callable) -> str:
    """The exception, plus the line of the learner's code that raised it when we can find it."""
    code = getattr(inspect.unwrap(learner), "__code__", None)
    frames = [] if code is None else [
        frame for frame in traceback.extract_tb(error.__traceback__)
        if frame.filename == code.co_filename
    ]
    where = ""
    if frames:
        source = (frames[-1].line or "").strip()
        where = f" (line {frames[-1].lineno}: {source})" if source else f" (line {frames[-1].lineno})"
    return _exception_text(error) + where


@contextlib.contextmanager
def _time_limit(seconds: float):
    """Raise _TimedOut after ``seconds`` of wall time, with SIGALRM.

    Only in the main thread (where Jupyter runs cells) and where ``signal.setitimer``
    exists; elsewhere the body runs without a limit.  The previous SIGALRM handler is
    restored, and a timer that was already running is re-armed with what it had left.
    """
    usable = (seconds and seconds > 0 and hasattr(signal, "setitimer")
              and threading.current_thread() is threading.main_thread())
    if not usable:
        yield
        return

    def on_alarm(signum, frame):
        raise _TimedOut

    previous_handler = signal.signal(signal.SIGALRM, on_alarm)
    previous_timer = signal.setitimer(signal.ITIMER_REAL, seconds)
    start = time.monotonic()
    try:
        yield
    finally:
        try:
            signal.setitimer(signal.ITIMER_REAL, 0)
        finally:
            signal.signal(signal.SIGALRM, previous_handler)
            if previous_timer[0] > 0:
                left = max(previous_timer[0] - (time.monotonic() - start), 1e-3)
                signal.setitimer(signal.ITIMER_REAL, left, previous_timer[1])


@contextlib.contextmanager
def _seeded(seed: int):
    """Seed torch, NumPy and ``random`` with ``seed``; restore the previous states afterwards,
    so a check neither depends on nor disturbs the notebook's random streams."""
    numpy_state, python_state = np.random.get_state(), random.getstate()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        np.random.seed(seed % 2**32)
        random.seed(seed)
        try:
            yield
        finally:
            np.random.set_state(numpy_state)
            random.setstate(python_state)


def accepts_argument(fn: Callable, name: str) -> bool:
    """Whether ``fn`` can be called with keyword argument ``name``."""
    try:
        parameters = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return False
    return any((p.name == name and p.kind != p.POSITIONAL_ONLY) or p.kind == p.VAR_KEYWORD
               for p in parameters)


def call_pure(learner: Callable, inputs: dict, **kwargs):
    """Call ``learner(*inputs.values(), **kwargs)``; fail if it changed an input tensor in place.

    ``inputs`` maps argument names (used in the message) to values, passed positionally.
    """
    before = {name: value.clone() for name, value in inputs.items() if isinstance(value, Tensor)}
    out = learner(*inputs.values(), **kwargs)
    for name, original in before.items():
        now = inputs[name]
        if now.shape != original.shape:
            raise CheckFailed(f"your function changed the shape of its input `{name}` in place "
                              f"(from {tuple(original.shape)} to {tuple(now.shape)})")
        changed = ~((now == original) | (now.isnan() & original.isnan()))
        if changed.any():
            raise CheckFailed(
                f"your function changed its input `{name}` in place (at {int(changed.sum())} of "
                f"{changed.numel()} entries); compute a new tensor instead "
                "(y = x * 2, not x *= 2 or x.mul_(2))")
    return out


# --------------------------------------------------------------------------------------
# What a check expects of an output
# --------------------------------------------------------------------------------------


def expect_tensor(out) -> Tensor:
    """Fail unless ``out`` is a single torch.Tensor."""
    if isinstance(out, Tensor):
        return out
    if out is None:
        raise CheckFailed("your function returned None; did you forget to `return` the result?")
    if isinstance(out, (tuple, list)):
        raise CheckFailed(f"your function returned a {type(out).__name__} of {len(out)} items; "
                          "expected a single tensor")
    raise CheckFailed(f"your function returned a {_type_name(out)}; expected a torch.Tensor")


def expect_shape(out: Tensor, shape, axes: str, note: str = "") -> None:
    """Fail unless ``out.shape == shape``; ``axes`` names the axes, e.g. "(instances, features)"."""
    actual, shape = tuple(out.shape), tuple(shape)
    if actual == shape:
        return
    swapped = (len(actual) == len(shape) >= 2 and actual[:-2] == shape[:-2]
               and actual[-2:] == shape[-2:][::-1])
    what = "output is a single number (shape ())" if not actual else f"output has shape {actual}"
    detail = " (the last two axes look swapped)" if swapped else ""
    raise CheckFailed(f"{what}, expected {axes} = {shape}{detail}{note}")


def expect_dtype(out: Tensor, dtype: torch.dtype, why: str = "the inputs' dtype") -> None:
    if out.dtype != dtype:
        raise CheckFailed(f"output has dtype {out.dtype}, expected {dtype} ({why})")


def expect_device(out: Tensor, device: torch.device) -> None:
    if out.device != torch.device(device):
        raise CheckFailed(f"output is on device {out.device}, expected {device} (the inputs' "
                          "device); create new tensors with device=... of the inputs")


def expect_finite(out: Tensor, note: str = "") -> None:
    """Fail if ``out`` holds NaN or ±inf; ``note`` adds a likely cause to the message."""
    if not (out.is_floating_point() or out.is_complex()):
        return
    for name, bad in (("NaN", torch.isnan(out)), ("inf", torch.isinf(out))):
        if bad.any():
            raise CheckFailed(f"output contains {name} at {int(bad.sum())} of {bad.numel()} "
                              f"entries{note}")


def expect_output(out, expected: Tensor, axes: str, finite_note: str = "") -> Tensor:
    """A tensor of the reference's shape, dtype and device, with no NaN or inf."""
    out = expect_tensor(out)
    expect_shape(out, expected.shape, axes)
    expect_dtype(out, expected.dtype)
    expect_device(out, expected.device)
    expect_finite(out, finite_note)
    return out


def expect_close(actual: Tensor, expected: Tensor, *, rtol: float = RTOL, atol: float = ATOL,
                 suspects: dict[str, Tensor] | None = None) -> None:
    """Fail unless ``actual`` ≈ ``expected`` (same shape), saying how they differ.

    ``suspects`` maps a description of a known mistake to the output that mistake gives;
    a match names the mistake.  Otherwise the message diagnoses all zeros, a flipped sign,
    a constant factor, a transpose, or says at how many entries they differ.
    """
    a, e = _as_float64(actual), _as_float64(expected)
    if _close(a, e, rtol, atol).all():
        return
    for description, wrong in (suspects or {}).items():
        wrong = _as_float64(wrong)
        if wrong.shape == a.shape and _close(a, wrong, rtol, atol).all():
            raise CheckFailed(f"output differs from the reference and matches a known mistake: "
                              f"{description}")
    raise CheckFailed(_difference(a, e, rtol, atol))


def _difference(a: Tensor, e: Tensor, rtol: float, atol: float) -> str:
    """Describe how ``a`` differs from ``e`` without printing ``e``."""
    if (a == 0).all():
        return "output is all zeros"
    # Neither the factor nor its sign is named: either would let the answer be rebuilt.
    if _constant_factor(a, e, rtol, atol) is not None:
        return ("output is off by a constant factor: every entry is the same multiple of the right "
                "value (a missing or extra scale, a sum instead of a mean, or a flipped sign?)")
    if a.dim() >= 2 and a.shape[-1] == a.shape[-2] and _close(a, e.transpose(-1, -2), rtol, atol).all():
        return "output is transposed: its last two axes are swapped"
    wrong = ~_close(a, e, rtol, atol)
    return (f"output differs from the reference at {int(wrong.sum())} of {wrong.numel()} entries "
            f"(max abs error {float((a - e).abs().max()):.3g})")


def _constant_factor(a: Tensor, e: Tensor, rtol: float, atol: float) -> float | None:
    """c with a ≈ c·e (least squares), or None if no single constant explains the difference."""
    norm = float((e * e).sum())
    if norm == 0:
        return None
    c = float((a * e).sum()) / norm
    return c if _close(a, c * e, rtol, atol).all() else None


def _close(a: Tensor, e: Tensor, rtol: float = RTOL, atol: float = ATOL) -> Tensor:
    return (a - e).abs() <= atol + rtol * e.abs()


def _as_float64(t: Tensor) -> Tensor:
    return t.detach().to("cpu", torch.float64)


def _type_name(value) -> str:
    if value is None:
        return "None"
    kind = type(value)
    return kind.__name__ if kind.__module__ == "builtins" else f"{kind.__module__}.{kind.__name__}"


def _sentence(message: str) -> str:
    return message if message.endswith((".", "!", "?")) else message + "."


# --------------------------------------------------------------------------------------
# Checks in two halves: a probe runs the learner's class, a judge compares what it saw
# --------------------------------------------------------------------------------------

STOPPED = "stopped"  # seen[STOPPED] = [status, message]: where and why the probe stopped
OBJECT = "__object__"  # {OBJECT: "numpy.ndarray"}: a value that is not plain data, by its type name


def _stop_record(error: BaseException) -> list[str]:
    """What stopped a probe, as data: [status, the message a one-piece check would give]."""
    if isinstance(error, NotAttempted):
        return ["not attempted", str(error)]
    if isinstance(error, CheckFailed):
        return ["failed", str(error)]
    if isinstance(error, Exception):
        return ["failed", f"could not check your output ({_exception_text(error)})"]
    return ["failed", f"your code raised {_exception_text(error)}, which would stop the kernel's cell; "
                      "raise an Exception instead"]


def _stop_failure(stop) -> BaseException:
    """The exception that a stop record stands for (a garbled record is a failure)."""
    if isinstance(stop, (list, tuple)) and len(stop) == 2 and all(isinstance(part, str) for part in stop):
        status, message = stop
        if status == "not attempted":
            return NotAttempted(message)
        if status == "timed out":
            return _TimedOut()
        if status == "failed":
            return CheckFailed(message)
    return CheckFailed("the grader could not read what your code did")


def plain(value):
    """``value`` as plain data that the grader reads back with ``torch.load(weights_only=True)``:
    a tensor detached and copied as a torch.Tensor (dtype, device and shape kept), numbers,
    strings and None, and lists, tuples and string-keyed dicts of them.  Anything else is sent
    as ``{OBJECT: its type name}``, and the judge gets an object of that type name (so that a
    message can say "returned a numpy.ndarray")."""
    if isinstance(value, Tensor):
        return value.detach().as_subclass(Tensor).clone()
    if value is None:
        return None
    if isinstance(value, np.generic):  # kept by its type name, and as a number where it is one
        number = value.item()
        return {OBJECT: _type_name(value), **({"value": number} if type(number) in (bool, int, float) else {})}
    for kind in (bool, int, float, str):
        if isinstance(value, kind):
            return value if type(value) is kind else kind(value)
    if isinstance(value, (tuple, list)):
        return (tuple if isinstance(value, tuple) else list)(plain(item) for item in value)
    if isinstance(value, dict) and all(isinstance(key, str) for key in value):
        return {str(key): plain(item) for key, item in value.items()}
    return {OBJECT: _type_name(value)}


def probe_aside(seen: dict, key: str, observe: Callable[[], object]) -> None:
    """``seen[key] = observe()``, for what the judge reads on some paths only (a second model
    built when the first differs): a failure of the learner's code there is kept under ``key``
    alone, and the probe goes on."""
    try:
        seen[key] = observe()
    except (_TimedOut, KeyboardInterrupt):
        raise
    except BaseException as error:  # noqa: BLE001 - kept as data for the judge
        seen[key] = {STOPPED: _stop_record(error)}


def _stand_in(qualified: str, number=None):
    """An object whose type is named ``qualified`` ("numpy.float32"); a number of that value
    when ``number`` is one (a NumPy scalar compares like one)."""
    module, _, name = qualified.rpartition(".")
    base = float if type(number) is float else int if type(number) in (bool, int) else object
    kind = type(name or "object", (base,), {"__module__": module or "builtins"})
    return kind(number) if base is not object else kind()


def _readable(value, depth: int = 0):
    """``value`` as a judge reads it: dense tensors only (a sparse or quantized one is not what
    a probe sends), and each ``{OBJECT: type name}`` replaced by an object of that type name."""
    if isinstance(value, Tensor):
        if value.layout != torch.strided or value.is_quantized:
            raise CheckFailed("the grader could not read what your code did (an unusual tensor)")
        return value
    if depth > 8:
        return value
    if isinstance(value, (list, tuple)):
        return type(value)(_readable(item, depth + 1) for item in value)
    if isinstance(value, dict):
        if isinstance(value.get(OBJECT), str) and set(value) <= {OBJECT, "value"}:
            return _stand_in(value[OBJECT], value.get("value"))
        return {key: _readable(item, depth + 1) for key, item in value.items()}
    return value


def observed(data, key: str):
    """What the probe saw under ``key``, for a judge.  If the probe stopped before it (the
    learner's code raised, or the probe saw what is wrong), that failure is raised here, at
    the point of the judge's comparisons where a one-piece check would have raised it.  Data
    that is not what a probe sends fails, never crashes."""
    if not isinstance(data, dict):
        raise CheckFailed("the grader could not read what your code did")
    if key not in data:
        if STOPPED in data:
            raise _stop_failure(data[STOPPED])
        raise CheckFailed(f"the grader could not read what your code did (no `{key}`)")
    value = data[key]
    if isinstance(value, dict) and STOPPED in value:
        raise _stop_failure(value[STOPPED])
    return _readable(value)


def probe_parameter(model, name: str) -> Tensor:
    """``self.<name>`` as plain data, after what only the probe can see: that it is an
    nn.Parameter among ``model.parameters()``."""
    value = getattr(model, name, None)
    if not isinstance(value, torch.nn.Parameter):
        what = "is missing" if value is None else f"is a {type(value).__name__}, not an nn.Parameter"
        raise CheckFailed(f"`self.{name}` {what}: wrap it in nn.Parameter so the optimiser trains it")
    if not any(value is p for p in model.parameters()):
        raise CheckFailed(f"`self.{name}` is not among model.parameters(): assign it after super().__init__()")
    return plain(value)


def judge_parameter(value, name: str, shape, axes: str) -> Tensor:
    """The judge's half of a parameter check: a float32 tensor of ``shape``."""
    if not isinstance(value, Tensor):
        raise CheckFailed(f"`self.{name}` is missing: wrap it in nn.Parameter so the optimiser trains it")
    expect_shape(value, shape, axes)
    expect_dtype(value, torch.float32, why="like torch.randn")
    return value


def same_tensor(a, b) -> bool:
    """Whether ``a`` and ``b`` are equal tensors (shape, dtype, device and every entry); False
    for anything that is not a tensor."""
    return (isinstance(a, Tensor) and isinstance(b, Tensor) and a.shape == b.shape and a.dtype == b.dtype
            and a.device == b.device and torch.equal(a, b))


def same_value(value, expected) -> bool:
    """Whether an attribute the probe read off the model (plain data) equals ``expected``, as
    ``value == expected`` says for a number, a string or a one-element tensor."""
    if isinstance(value, Tensor) and value.numel() != 1:
        return False
    try:
        return bool(value == expected)
    except Exception:  # noqa: BLE001 - data no model attribute gives
        return False


# --------------------------------------------------------------------------------------
# Result checks: what several of the learner's definitions make together
# --------------------------------------------------------------------------------------

RESULT_PREFIX = "result:"  # a result check's id, its row in the grader's report: "result:pentagon"
RESULT_TIME_LIMIT = 60.0
RESULT_SEED = 0  # torch, NumPy and random are seeded with it while a result is produced


@dataclass(frozen=True)
class ResultCheck:
    """A check of what several exercises' definitions make together: a capstone's *result*
    (chapter 01: the learner's ``ToyModel``, trained by their ``train_model``, is a pentagon).

    It comes in two halves, so that the grader can keep the learner's code and the verdict
    apart:

    * ``produce(**definitions)`` gets the learner's definitions as keyword arguments named
      like the exercises in ``uses``, runs them, and returns plain data (tensors, numbers,
      strings, and dicts, lists and tuples of them).  It may raise ``CheckFailed`` to say
      what went wrong on the way.  The grader runs it in the sandbox, where the learner's
      code runs, under the check's time limit and the sandbox's memory limit.
    * ``judge(data)`` runs where no learner code runs (the grader's own process): it returns
      the message of a pass or raises ``CheckFailed`` saying what was measured.  It never
      trusts ``data``'s types or shapes.

    The grader grades a chapter's result checks after its exercises, whenever every
    exercise in ``uses`` is graded, as rows of their own (``id``, e.g. "result:pentagon").
    """

    name: str
    uses: tuple[str, ...]
    produce: Callable[..., dict]
    judge: Callable[[object], str]
    points: float = 1.0
    time_limit: float = RESULT_TIME_LIMIT
    title: str = ""  # e.g. "pentagon (result of ToyModel + train_model)"

    @property
    def id(self) -> str:
        return RESULT_PREFIX + self.name

    def produce_safely(self, definitions: dict, time_limit: float | None = None) -> tuple[str, object]:
        """Run ``produce`` on the learner's ``definitions`` (name -> object), seeded, under the
        time limit: ("produced", data), or (NOT_ATTEMPTED or FAILED, message).  Never raises
        for the learner's code (except KeyboardInterrupt)."""
        limit = self.time_limit if time_limit is None else float(time_limit)
        learner = [definitions[name] for name in self.uses if name in definitions]
        try:
            with _time_limit(limit), _seeded(RESULT_SEED):
                data = self.produce(**{name: definitions[name] for name in self.uses})
        except NotImplementedError as error:
            return NOT_ATTEMPTED, (f"your code still raises {_describe_raise_any(error, learner)}; the result "
                                   f"needs {_join([f'`{n}`' for n in self.uses])} written first.")
        except CheckFailed as failure:
            return FAILED, _sentence(str(failure))
        except _TimedOut:
            return FAILED, f"took longer than {limit:g} s; the grader stopped it."
        except KeyboardInterrupt:
            raise
        except BaseException as error:  # noqa: BLE001 - SystemExit included: a learner's fault
            return FAILED, f"your code raised {_describe_raise_any(error, learner)}."
        return "produced", data

    def judge_safely(self, data) -> Outcome:
        """``judge(data)`` as an Outcome; an exception other than CheckFailed is a failure
        to judge what came back, never a crash."""
        try:
            message = self.judge(data)
        except CheckFailed as failure:
            return Outcome(self.id, FAILED, _sentence(str(failure)))
        except Exception as error:  # noqa: BLE001 - data of an unforeseen shape
            return Outcome(self.id, FAILED, f"could not judge the result ({_exception_text(error)}).")
        return Outcome(self.id, PASSED, _sentence(str(message)))

    def evaluate(self, definitions: dict, time_limit: float | None = None) -> Outcome:
        """Produce and judge in THIS process (tests, an instructor's own trusted code); the
        grader runs ``produce`` in its sandbox instead."""
        absent = [name for name in self.uses if name not in definitions]
        if absent:
            return Outcome(self.id, "missing", f"needs your {_join([f'`{n}`' for n in absent])}.")
        status, data = self.produce_safely(definitions, time_limit)
        if status != "produced":
            return Outcome(self.id, status, str(data))
        return self.judge_safely(data)


RESULT_CHECKS: dict[str, ResultCheck] = {}  # id ("result:pentagon") -> ResultCheck


def result_check(name: str, *, uses: Iterable[str], judge: Callable[[object], str], points: float = 1.0,
                 time_limit: float = RESULT_TIME_LIMIT, title: str = ""):
    """Register ``produce`` as result check ``name`` of the exercises ``uses`` (see
    ``ResultCheck``); returns ``produce`` with the check as its ``.result_check``::

        @result_check("pentagon", uses=("ToyModel", "train_model"), judge=_judge_pentagon)
        def pentagon_result(ToyModel, train_model) -> dict: ...
    """

    def register(produce: Callable[..., dict]) -> Callable[..., dict]:
        uses_ = tuple(uses)
        spec = ResultCheck(name, uses_, produce, judge, float(points), float(time_limit),
                           title or f"{name} (result of {' + '.join(uses_)})")
        RESULT_CHECKS[spec.id] = spec
        produce.result_check = spec
        return produce

    return register


def result_checks_for(exercises: Iterable[str]) -> list[ResultCheck]:
    """The result checks whose exercises are all among ``exercises``, in registration order."""
    graded = set(exercises)
    return [check for check in RESULT_CHECKS.values() if set(check.uses) <= graded]


def evaluate_result(name: str, definitions: dict, time_limit: float | None = None) -> Outcome:
    """Result check ``name`` ("pentagon" or "result:pentagon") on ``definitions`` (exercise
    name -> the learner's function or class), produced and judged in this process."""
    key = name if str(name).startswith(RESULT_PREFIX) else RESULT_PREFIX + str(name)
    if key not in RESULT_CHECKS:
        raise KeyError(f"no result check named {name!r}; known: {', '.join(sorted(RESULT_CHECKS)) or 'none'}")
    return RESULT_CHECKS[key].evaluate(definitions, time_limit)


def _describe_raise_any(error: BaseException, learner: list) -> str:
    """``_describe_raise`` with the line of whichever of the learner's functions raised."""
    for obj in learner:
        text = _describe_raise(error, obj)
        if " (line " in text:
            return text
    return _exception_text(error)
