"""The grader's outputs: one CSV row per (submission, exercise), and a JSON report.

CSV columns: ``student, chapter, exercise, outcome, points, max_points, message, file, conflict``.

``outcome`` is one of

    passed          the check passed on every case (default and hidden): points = max_points
    failed          the check failed; ``message`` says which case and what is wrong
    not attempted   the function is still the stub (raises NotImplementedError)
    missing         the notebook never defined it; ``message`` says why (no such cell, the
                    cell raised, timed out, was not run ...)
    error           it could not be graded: the file is not a notebook, the kernel could not
                    start, the definition could not be sent to the grader ...
    skipped         not graded: another submission of the same student and chapter counts
                    (``--on-conflict``); one row, 0 of 0 points

``file`` is the submission's path and ``conflict`` is empty unless the student has several
submissions for the chapter: it then says which counts and names the others.  Student and
file are written with ``submissions.display`` (bytes that are not UTF-8 as ``\\xNN``), and
any other text that cannot be encoded is backslash-escaped, so both files are always valid
UTF-8.  Both are written atomically (a temporary file, then ``os.replace``), after every
submission, so an interrupted batch leaves complete files.

and ``points`` is ``max_points`` for passed, else 0.  After a chapter's exercises come its
result checks (what several exercises make together, e.g. ``result:pentagon``: the learner's
ToyModel trained by their train_model), one row each, with the same outcomes.  A submission
whose chapter cannot be told gets a single row with an empty exercise and outcome "error".  The JSON report (same
path with ``.json``) holds, per submission, the same rows plus the notes (what went wrong
while running it and what the grader did about it), a log of every cell, and timings.
"""

from __future__ import annotations

import csv
import io
import json
import os
import tempfile
from collections import Counter
from pathlib import Path

COLUMNS = ("student", "chapter", "exercise", "outcome", "points", "max_points", "message", "file", "conflict")


SIMILAR_MIN_LINES = 4  # shorter definitions are too often the same by chance


def similar(results) -> list[dict]:
    """Definitions that are the same, once comments, docstrings and layout are set aside, in
    the submissions of several students: ``[{"chapter", "exercise", "lines", "students"}]``,
    longest first.  A hint for the instructor to read, not a verdict (two students may well
    write the same five lines); the notebook stubs are never graded as definitions."""
    groups: dict[tuple, set] = {}
    lines: dict[tuple, int] = {}
    for result in results:
        for row in result.get("exercises", []):
            mark = row.get("fingerprint")
            if not mark or int(row.get("lines") or 0) < SIMILAR_MIN_LINES or row.get("outcome") == "not attempted":
                continue
            key = (result.get("chapter"), row.get("exercise"), mark)
            groups.setdefault(key, set()).add(str(result.get("student")))
            lines[key] = int(row["lines"])
    found = [{"chapter": key[0], "exercise": key[1], "lines": lines[key], "students": sorted(students)}
             for key, students in groups.items() if len(students) > 1]
    return sorted(found, key=lambda g: (-g["lines"], str(g["chapter"]), str(g["exercise"])))


def safe_text(text) -> str:
    """``text`` as str that encodes to UTF-8: surrogate escapes (undecodable bytes of a file
    name) become ``\\xNN``, other lone surrogates ``\\udXXX``."""
    text = str(text)
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        pass
    try:
        return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    except UnicodeEncodeError:
        return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _safe(value):
    """``value`` (JSON data) with every string made safe to encode."""
    if isinstance(value, str):
        return safe_text(value)
    if isinstance(value, dict):
        return {safe_text(k) if isinstance(k, str) else k: _safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_safe(v) for v in value]
    return value


def _write_atomically(path: Path, text: str) -> None:
    """Replace ``path`` by ``text`` in one step: a reader (or a crash) sees the old file or
    the new one, never half of one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(handle, "w", encoding="utf-8", newline="") as out:
            out.write(text)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def _number(value) -> str:
    return f"{float(value):g}"


def rows(results: list[dict]) -> list[dict]:
    """The CSV rows of every submission's result, in order."""
    out = []
    for result in results:
        exercises = result.get("exercises") or []
        common = {"student": result.get("student", ""), "chapter": result.get("chapter") or ""}
        extra = {"file": result.get("file") or result.get("submission") or "", "conflict": result.get("conflict") or ""}
        if not exercises:  # nothing to grade it on: still one row that says why
            outcome = "skipped" if result.get("status") == "skipped" else "error"
            out.append(common | {"exercise": "", "outcome": outcome, "points": "0", "max_points": "0",
                                 "message": result.get("error") or "no exercises to grade"} | extra)
            continue
        for row in exercises:
            out.append(common | {"exercise": row["exercise"], "outcome": row["outcome"],
                                 "points": _number(row["points"]), "max_points": _number(row["max_points"]),
                                 "message": row.get("message", "")} | extra)
    return [{key: safe_text(value) for key, value in row.items()} for row in out]


def write_csv(path: Path, results: list[dict]) -> None:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=COLUMNS)
    writer.writeheader()
    writer.writerows(rows(results))
    _write_atomically(path, buffer.getvalue())


def summary(results: list[dict]) -> dict:
    table = rows(results)
    return {
        "submissions": len(results),
        "rows": len(table),
        "outcomes": dict(Counter(row["outcome"] for row in table)),
        "points": sum(float(row["points"]) for row in table),
        "max_points": sum(float(row["max_points"]) for row in table),
    }


def write_json(path: Path, results: list[dict], grader: dict) -> None:
    report = _safe({"grader": grader, "summary": summary(results), "submissions": results})
    _write_atomically(path, json.dumps(report, indent=1, ensure_ascii=False) + "\n")


def line(result: dict) -> str:
    """One progress line: ``alice  01_toy_models  3/5 passed, 1 failed, 1 missing  4.2 s``."""
    exercises = result.get("exercises") or []
    counts = Counter(row["outcome"] for row in exercises)
    passed = counts.pop("passed", 0)
    parts = [f"{passed}/{len(exercises)} passed"] + [f"{n} {outcome}" for outcome, n in counts.items()]
    if not exercises:
        parts = [f"{'skipped' if result.get('status') == 'skipped' else 'error'}: {result.get('error', '')}"]
    seconds = (result.get("seconds") or {}).get("total")
    timing = f"  {seconds:.1f} s" if isinstance(seconds, (int, float)) else ""
    kept = "  (kept from the previous run)" if result.get("resumed") else ""
    return safe_text(f"{result.get('student', '?')}  {result.get('chapter') or '?'}  {', '.join(parts)}{timing}{kept}")
