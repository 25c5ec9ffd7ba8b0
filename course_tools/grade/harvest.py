"""Runs INSIDE a learner's kernel: collect the exercise definitions the notebook has made.

After every cell the grader asks the kernel, through a silent request's
``user_expressions``, for ``harvest(names)``: for each exercise name bound in the
notebook's namespace whose value changed since the last call, what it is and, for a
function or class defined in the notebook, its cloudpickle **by value** (code, defaults,
closure, and the globals it uses; modules are pickled by reference).  The answer is
base64 of JSON, so the grader only ever parses plain data from the kernel; the pickles are
opened by the sandbox (``sandbox.py``), never by the grader itself.

This code runs where the learner's code runs, so a learner can break it, but only for
their own submission: the grader treats a missing or garbled answer as "could not
collect the definitions".
"""

from __future__ import annotations

import base64
import inspect
import json

_SENT: dict[str, object] = {}  # name -> the object last reported (kept alive, so its id is not reused)
MAX_PICKLE_BYTES = 64 * 2**20
MAX_SOURCE_CHARS = 1_000_000


def _qualified(obj) -> str:
    kind = obj if isinstance(obj, type) else type(obj)
    module = getattr(kind, "__module__", "") or ""
    name = getattr(kind, "__qualname__", kind.__name__)
    return name if module in ("builtins", "") else f"{module}.{name}"


def describe(obj) -> dict:
    """What the grader needs to know about one learner definition (JSON-ready)."""
    if not callable(obj):
        return {"kind": "value", "type": _qualified(obj)}
    module = getattr(obj, "__module__", None)
    if (inspect.isfunction(obj) or inspect.isclass(obj) or inspect.isbuiltin(obj)) and module != "__main__":
        return {"kind": "imported", "module": str(module),
                "name": str(getattr(obj, "__qualname__", getattr(obj, "__name__", "?")))}
    try:
        import cloudpickle

        blob = cloudpickle.dumps(obj)
    except Exception as error:  # noqa: BLE001 - reported to the grader, never raised
        text = str(error).splitlines()[0][:200] if str(error) else ""
        return {"kind": "unpicklable", "error": f"{type(error).__name__}: {text}".rstrip(": ")}
    if len(blob) > MAX_PICKLE_BYTES:
        return {"kind": "unpicklable",
                "error": f"it takes {len(blob) / 2**20:.0f} MB to send (it holds large data); "
                         f"the limit is {MAX_PICKLE_BYTES // 2**20} MB"}
    entry = {"kind": "class" if inspect.isclass(obj) else "function",
             "pickle": base64.b64encode(blob).decode("ascii")}
    # The cell's source, so that the sandbox can quote the learner's line in a message.
    code = getattr(inspect.unwrap(obj), "__code__", None) if not inspect.isclass(obj) else None
    if code is not None:
        import linecache

        text = "".join(linecache.getlines(code.co_filename))
        if text and len(text) < MAX_SOURCE_CHARS:
            entry["source_file"], entry["source"] = code.co_filename, text
            entry["line"] = int(code.co_firstlineno)
    return entry


def harvest(namespace: dict, names, again: bool = False) -> str:
    """base64(JSON {name: description}) for each of ``names`` bound in ``namespace`` and not
    already reported with the same value (``again``: all of them, pickled anew, so that a
    function picks up globals the notebook bound after its cell)."""
    found = {}
    for name in names:
        if name not in namespace:
            continue
        obj = namespace[name]
        if not again and name in _SENT and _SENT[name] is obj:
            continue
        found[name] = describe(obj)
        _SENT[name] = obj
    return base64.b64encode(json.dumps(found).encode()).decode("ascii")


def expression(names, again: bool = False) -> str:
    """The user expression the grader sends: evaluated in the notebook's namespace."""
    return ("__import__('course_tools.grade.harvest', fromlist=['harvest'])"
            f".harvest(get_ipython().user_ns, {list(names)!r}, again={bool(again)!r})")
