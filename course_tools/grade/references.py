"""While the sandbox runs a learner's exercise, the course's reference for it is withheld.

A function that hands its work to the library (``def toy_forward(*a): return
course_utils.toy_models.toy_forward(*a)``, a ``functools.partial`` of it, the reference under
another name, a class that subclasses or wraps the reference class) would match the
reference on every case.  So, in the sandbox only, for the length of each request that runs
a learner's ``X`` (a call, a probe of a class, a result check's ``produce``), the code of
``X``'s reference (a function, or every function a reference class defines, and whatever
``__wrapped__`` leads to) is swapped for code that records the call and raises.  The request
then answers ``{"status": "reference"}`` and the grader fails the case: "calls the course's
reference implementation".  The swap is on the function objects themselves, so every way of
reaching them (module attribute, an alias taken earlier, a partial, a bound method, a
subclass's ``super()``) hits it.  The references of *other* exercises stay available: a
learner's training loop may use the course's ``generate_batch``.

Copying the reference's source into the notebook is not caught here (plagiarism is out of
scope; the grader's report lists identical definitions across a class, see report.py).
"""

from __future__ import annotations

import inspect
import types
from contextlib import contextmanager

CALLED: list[str] = []


class ReferenceCalled(BaseException):
    """Raised by a withheld reference (a BaseException: ``except Exception`` does not hide it,
    and the call is recorded in ``CALLED`` before it is raised anyway)."""


def called(label: str):
    CALLED.append(label)
    raise ReferenceCalled(f"the course's reference {label} is not available while grading")


def _functions(obj) -> list[types.FunctionType]:
    """The Python functions behind ``obj``: itself, the functions a class defines (methods,
    static and class methods, properties), and what ``__wrapped__`` leads to."""
    found: list[types.FunctionType] = []
    if inspect.isclass(obj):
        for value in vars(obj).values():
            if isinstance(value, (staticmethod, classmethod)):
                value = value.__func__
            if isinstance(value, property):
                found += [f for f in (value.fget, value.fset, value.fdel) if isinstance(f, types.FunctionType)]
            elif isinstance(value, types.FunctionType):
                found.append(value)
    elif isinstance(obj, types.FunctionType):
        found.append(obj)
    out: list[types.FunctionType] = []
    for fn in found:
        seen = 0
        while isinstance(fn, types.FunctionType) and fn not in out and seen < 10:
            out.append(fn)
            fn, seen = getattr(fn, "__wrapped__", None), seen + 1
    return out


def _raiser(fn: types.FunctionType, label: str) -> types.CodeType:
    """Code that can stand in for ``fn.__code__`` (same number of free variables) and calls
    ``called(label)``."""
    free = [f"_free{i}" for i in range(len(fn.__code__.co_freevars))]
    source = ("def _outer():\n" + "".join(f"    {v} = None\n" for v in free)
              + "    def _withheld(*args, **kwargs):\n"
              + (f"        ({', '.join(free)},)\n" if free else "")
              + f"        __import__('course_tools.grade.references', fromlist=['called']).called({label!r})\n"
              + "    return _withheld\n")
    namespace: dict = {}
    exec(compile(source, "<withheld reference>", "exec"), namespace)  # noqa: S102 - our own template
    return namespace["_outer"]().__code__


def graded_names(request: dict) -> list[str]:
    """The exercises whose learner code the request runs."""
    from course_utils import checks

    op, name = request.get("op"), request.get("name")
    if op in ("call", "probe", "evaluate") and name in checks.EXERCISES:
        return [name]
    if op == "produce" and name in checks.RESULT_CHECKS:
        return list(checks.RESULT_CHECKS[name].uses)
    return []


@contextmanager
def withheld(names: list[str]):
    """Swap the code of ``names``' references for the recording raiser, and back."""
    from course_utils import checks

    swapped: list[tuple[types.FunctionType, types.CodeType]] = []
    try:
        for name in names:
            reference = checks.EXERCISES[name].exercise.reference
            label = f"`{name}` ({getattr(reference, '__module__', '?')}.{getattr(reference, '__qualname__', name)})"
            for fn in _functions(reference):
                if any(fn is done for done, _ in swapped):
                    continue
                original = fn.__code__
                fn.__code__ = _raiser(fn, label)
                swapped.append((fn, original))
        yield
    finally:
        for fn, original in reversed(swapped):
            fn.__code__ = original


def guarded(handle, request: dict, objects: dict) -> dict:
    """``handle(request, objects)`` with the references of the exercises it runs withheld;
    ``{"status": "reference", "names": [...]}`` if the learner's code reached one."""
    names = graded_names(request)
    if not names:
        return handle(request, objects)
    CALLED.clear()
    with withheld(names):
        reply = handle(request, objects)
    if CALLED:
        return {"status": "reference", "names": sorted(set(CALLED))}
    return reply


def message(reply: dict) -> str:
    names = [str(n) for n in reply.get("names", [])][:3] if isinstance(reply.get("names"), list) else []
    which = f" of {', '.join(names)}" if names else ""
    return (f"calls the course's reference implementation{which} instead of computing it; the grader "
            "grades your own code")
