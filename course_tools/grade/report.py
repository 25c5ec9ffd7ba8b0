"""The grader's outputs: one CSV row per (submission, exercise), and a JSON report.

CSV columns: ``student, chapter, exercise, outcome, points, max_points, message``.

``outcome`` is one of

    passed          the check passed on every case (default and hidden): points = max_points
    failed          the check failed; ``message`` says which case and what is wrong
    not attempted   the function is still the stub (raises NotImplementedError)
    missing         the notebook never defined it; ``message`` says why (no such cell, the
                    cell raised, timed out, was not run ...)
    error           it could not be graded: the file is not a notebook, the kernel could not
                    start, the definition could not be sent to the grader ...

and ``points`` is ``max_points`` for passed, else 0.  After a chapter's exercises come its
result checks (what several exercises make together, e.g. ``result:pentagon``: the learner's
ToyModel trained by their train_model), one row each, with the same outcomes.  A submission
whose chapter cannot be told gets a single row with an empty exercise and outcome "error".  The JSON report (same
path with ``.json``) holds, per submission, the same rows plus the notes (what went wrong
while running it and what the grader did about it), a log of every cell, and timings.
"""

from __future__ import annotations

import csv
import json
from collections import Counter
from pathlib import Path

COLUMNS = ("student", "chapter", "exercise", "outcome", "points", "max_points", "message")


def _number(value) -> str:
    return f"{float(value):g}"


def rows(results: list[dict]) -> list[dict]:
    """The CSV rows of every submission's result, in order."""
    out = []
    for result in results:
        exercises = result.get("exercises") or []
        if not exercises:  # nothing to grade it on: still one row that says why
            out.append({"student": result.get("student", ""), "chapter": result.get("chapter") or "",
                        "exercise": "", "outcome": "error", "points": "0", "max_points": "0",
                        "message": result.get("error") or "no exercises to grade"})
            continue
        for row in exercises:
            out.append({"student": result.get("student", ""), "chapter": result.get("chapter") or "",
                        "exercise": row["exercise"], "outcome": row["outcome"],
                        "points": _number(row["points"]), "max_points": _number(row["max_points"]),
                        "message": row.get("message", "")})
    return out


def write_csv(path: Path, results: list[dict]) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(rows(results))


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
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    report = {"grader": grader, "summary": summary(results), "submissions": results}
    path.write_text(json.dumps(report, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")


def line(result: dict) -> str:
    """One progress line: ``alice  01_toy_models  3/5 passed, 1 failed, 1 missing  4.2 s``."""
    exercises = result.get("exercises") or []
    counts = Counter(row["outcome"] for row in exercises)
    passed = counts.pop("passed", 0)
    parts = [f"{passed}/{len(exercises)} passed"] + [f"{n} {outcome}" for outcome, n in counts.items()]
    if not exercises:
        parts = [f"error: {result.get('error', '')}"]
    seconds = (result.get("seconds") or {}).get("total")
    timing = f"  {seconds:.1f} s" if isinstance(seconds, (int, float)) else ""
    return f"{result.get('student', '?')}  {result.get('chapter') or '?'}  {', '.join(parts)}{timing}"
