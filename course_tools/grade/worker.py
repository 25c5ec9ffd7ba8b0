"""Grade ONE submission: ``python -m course_tools.grade.worker JOB.json``.

The batch command (``python -m course_tools.grade``) starts one worker per submission, in a
fresh interpreter whose working directory is an empty temporary directory; the worker runs
no learner code itself.  It

1. reads its private copy of the notebook (a file that is not a notebook is graded
   "error" on every exercise, with the reason);
2. runs the notebook in a kernel and collects the exercise definitions (``execute.py``);
3. judges each definition with the exercise's check, here, calling the learner's function
   in a sandbox process (``sandbox.py``), on the default seeds plus the hidden ones; then
   each result check of the graded exercises (``checks.ResultCheck``: the learner's
   definitions run together in the sandbox, the result judged here), one row each;
4. writes the result (rows, notes, cell log, timings) as JSON for the batch command.
"""

from __future__ import annotations

import json
import os
import re
import site
import sys
import time
import traceback
from pathlib import Path

OUTCOMES = ("passed", "failed", "not attempted", "missing", "error", "skipped")  # skipped: --on-conflict
_PRINTED = re.compile(r"^\[(passed|failed|not attempted)\] (\w+):", re.M)
_CASE = re.compile(r"^case (\d+)\b")


def untrusted_env(home: Path, job: dict) -> dict[str, str]:
    """The environment of a kernel or sandbox: the grader's, with HOME and TMPDIR in a
    throwaway directory, one set of threads per job, no check log, Agg plots."""
    # Only what Python, torch and a GPU need from the grader's environment: an instructor's
    # tokens and settings never reach learner code (which could print them into a message).
    env = {k: v for k, v in os.environ.items()
           if k in ("PATH", "LANG", "LANGUAGE", "TZ", "PYTHONPATH", "SUPERPOSITION_DEVICE")
           or k.startswith(("LC_", "CUDA_", "NVIDIA_"))}
    threads = str(job.get("threads", 1))
    env.update(HOME=str(home), TMPDIR=str(home), IPYTHONDIR=str(home / ".ipython"),
               MPLBACKEND="Agg", OMP_NUM_THREADS=threads, MKL_NUM_THREADS=threads,
               SUPERPOSITION_THREADS=threads, PYTHONDONTWRITEBYTECODE="1")
    if job.get("mplconfig"):
        env["MPLCONFIGDIR"] = job["mplconfig"]
    # A new HOME hides packages installed with `pip install --user`: keep them visible.
    user_site = site.getusersitepackages() if site.ENABLE_USER_SITE else None
    if user_site and Path(user_site).is_dir():
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [env.get("PYTHONPATH"), user_site]))
    return env


def _missing_reason(name: str, steps, execution) -> str:
    cells = [step for step in steps if name in step.defines]
    if not cells:
        return f"`{name}` is not defined: no cell of the notebook defines it"
    logs = {log.cell: log for log in execution.cells}
    reasons = []
    for step in cells:
        log = logs.get(step.cell)
        status = log.status if log else "not run"
        what = {
            "error": f"raised {log.error}" if log else "",
            "timeout": "timed out", "hung": "timed out (the kernel was killed)",
            "memory": "went over the memory limit", "died": "crashed the kernel",
            "not run": "was not run", "ok": "ran but did not leave it defined",
        }.get(status, status)
        reasons.append(f"cell {step.cell}, which defines it, {what}")
    return f"`{name}` is not defined: " + "; ".join(reasons)


def _mark_hidden(message: str, n_default: int) -> str:
    match = _CASE.match(message)
    if match and int(match.group(1)) > n_default:
        return f"{message} [hidden case]"
    return message


def evaluate(exercises: list[dict], definitions: dict, memory_bytes, env, root: Path | None,
             notes: list[str], sandbox=None, results: list[dict] | None = None) -> list[dict]:
    """Judge each exercise, then each result check; returns one row dict per exercise and
    per result check, in that order (see report.py).

    ``sandbox``: a Sandbox launched beforehand (its definitions are set here), else one is
    made.  ``results``: the result checks' specs (``result_specs``); each runs in a fresh
    sandbox of its own, started after the exercises' sandbox is closed, so that what the
    exercises' calls did there (a function that deleted the working directories it could
    reach, changed torch's global state ...) cannot change a result.
    """
    import base64

    from course_utils import checks
    from .sandbox import Sandbox, SandboxError, _stand_in

    blobs = {name: {"blob": base64.b64decode(entry["pickle"]), "source_file": entry.get("source_file"),
                    "source": entry.get("source")}
             for name, entry in definitions.items()
             if entry.get("kind") in ("function", "class", "callable") and isinstance(entry.get("pickle"), str)}
    rows = []
    if sandbox is None:
        sandbox = Sandbox(blobs, memory_bytes, env, root)
    sandbox.definitions = blobs
    with sandbox:
        for spec in exercises:
            name, seeds, n_default = spec["name"], spec["seeds"], spec["default_seeds"]
            row = {"exercise": name, "max_points": spec["points"], "points": 0.0,
                   "seeds": {"default": n_default, "hidden": len(seeds) - n_default}}
            rows.append(row)
            entry = definitions.get(name)
            time_limit = spec.get("time_limit")
            if entry is None:
                row.update(outcome="missing", message=spec["missing_reason"])
                continue
            kind = entry.get("kind")
            if kind == "value":
                outcome = checks.evaluate(name, _stand_in(entry.get("type", "object")), seeds=seeds)
                row.update(outcome=outcome.status, message=outcome.message)
                continue
            if kind == "imported":
                row.update(outcome="failed", message=(
                    f"`{name}` is {entry.get('module')}.{entry.get('name')}, imported from a module instead "
                    "of defined in the notebook; the grader grades the notebook's own definition."))
                continue
            if kind == "unpicklable" or name not in blobs:
                row.update(outcome="error", message=(
                    f"could not send your `{name}` from the notebook to the grader: "
                    f"{entry.get('error', 'unknown definition')}"))
                continue
            try:
                loaded = sandbox.define(name)
            except SandboxError as error:
                row.update(outcome="error", message=f"could not grade `{name}`: {error}")
                continue
            if loaded.get("status") != "ok":
                row.update(outcome="error", message=f"the grader could not load your `{name}`: {loaded.get('error')}")
                continue
            limit = time_limit if time_limit is not None else checks.EXERCISES[name].exercise.time_limit
            exercise = checks.EXERCISES[name].exercise
            if exercise.judge is not None:  # a class: its probe runs in the sandbox, its judge here
                began = time.monotonic()

                def probe(seed, case, name=name, limit=limit, began=began):
                    # the child's limit ends half a second before ours, so that it says so itself
                    left = max(limit - (time.monotonic() - began) - 0.5, 0.1)
                    return sandbox.probe(name, seed, left, limit)

                outcome = exercise.evaluate(None, seeds, limit, probe=probe)
                status, message = outcome.status, outcome.message
            elif loaded.get("kind") == "class":
                status, message = sandbox.evaluate_inside(name, seeds, limit)
                row["note"] = ("graded inside the sandbox: this exercise's check has no judge, so the "
                               "process that ran the learner's class also decided the outcome")
            else:
                outcome = checks.evaluate(name, sandbox.learner(name, limit), seeds=seeds, time_limit=limit)
                status, message = outcome.status, outcome.message
            row.update(outcome=status, message=_mark_hidden(message, n_default))
            if status == "passed":
                row["points"] = float(spec["points"])
        starts = sandbox.starts
        sandbox.close()
        for spec in results or []:
            began = time.monotonic()
            with Sandbox(blobs, sandbox.memory_limit, sandbox.env, sandbox.root) as fresh:
                row = _evaluate_result(spec, definitions, blobs, fresh)
            row["seconds"] = round(time.monotonic() - began, 2)
            if row["outcome"] == "passed":
                row["points"] = float(spec["points"])
            rows.append(row)
    if starts > 1:
        notes.append(f"the sandbox that runs the learner's functions was restarted {starts - 1} time(s) "
                     "(a function crashed it or was stopped)")
    return rows


def fingerprint(entry: dict) -> tuple[str, int] | None:
    """(a hash of the function's code with comments, docstrings and layout removed, its
    number of lines) for the batch's similarity report; None for a class, an import, or a
    definition whose text did not come with it."""
    import ast
    import hashlib
    import inspect
    import textwrap

    text, line = entry.get("source"), entry.get("line")
    if not isinstance(text, str) or not isinstance(line, int) or line < 1:
        return None
    try:
        block = inspect.getblock(text.splitlines(keepends=True)[line - 1:])
        tree = ast.parse(textwrap.dedent("".join(block)))
    except (SyntaxError, IndentationError, ValueError, IndexError, TypeError):
        return None
    for node in ast.walk(tree):  # a docstring is an expression statement: drop it
        body = getattr(node, "body", None)
        if isinstance(body, list) and body and isinstance(body[0], ast.Expr) \
                and isinstance(getattr(body[0], "value", None), ast.Constant) and isinstance(body[0].value.value, str):
            node.body = body[1:] or [ast.Pass()]
    dump = ast.dump(tree, annotate_fields=False, include_attributes=False)
    return hashlib.sha256(dump.encode()).hexdigest()[:16], len(block)


def result_specs(names, config, missing: dict[str, str]) -> list[dict]:
    """The specs of the result checks of the exercises ``names`` (those whose exercises are
    all graded), for ``evaluate``."""
    from course_utils import checks

    return [{"name": check.id, "title": check.title, "uses": list(check.uses),
             "points": config.points(check.id, check.points),
             "time_limit": config.time_limit(check.id) or check.time_limit,
             "missing_reasons": {use: missing[use] for use in check.uses if use in missing}}
            for check in checks.result_checks_for(names)]


def _evaluate_result(spec: dict, definitions: dict, blobs: dict, sandbox) -> dict:
    """One result check's row: its exercises' definitions loaded in the sandbox, the
    check's ``produce`` run there, its ``judge`` here."""
    from course_utils import checks
    from .sandbox import SandboxError

    check = checks.RESULT_CHECKS[spec["name"]]
    uses = list(spec["uses"])
    row = {"exercise": spec["name"], "max_points": spec["points"], "points": 0.0,
           "title": spec.get("title") or check.title, "uses": uses}
    needs = f"needs your {_join([f'`{name}`' for name in uses])}"
    absent = [name for name in uses if name not in definitions]
    if absent:
        reasons = [spec.get("missing_reasons", {}).get(name) or f"`{name}` is not defined" for name in absent]
        return row | {"outcome": "missing", "message": f"{needs}: " + "; ".join(reasons)}
    for name in uses:
        entry = definitions[name]
        if entry.get("kind") == "value":
            return row | {"outcome": "failed", "message": (
                f"{needs}: `{name}` is a {entry.get('type', 'value')}, not a function or class.")}
        if entry.get("kind") == "imported":
            return row | {"outcome": "failed", "message": (
                f"{needs}: `{name}` is {entry.get('module')}.{entry.get('name')}, imported from a module "
                "instead of defined in the notebook; the grader grades the notebook's own definitions.")}
        if name not in blobs:
            return row | {"outcome": "error", "message": (
                f"could not send your `{name}` from the notebook to the grader: "
                f"{entry.get('error', 'unknown definition')}")}
    try:
        for name in uses:
            loaded = sandbox.define(name)
            if loaded.get("status") != "ok":
                return row | {"outcome": "error",
                              "message": f"the grader could not load your `{name}`: {loaded.get('error')}"}
        reply = sandbox.produce(spec["name"], float(spec["time_limit"]))
    except (SandboxError, OSError) as error:  # OSError: its directory could not be made
        return row | {"outcome": "error", "message": f"could not grade the result: {error}"}
    status = reply["status"]
    if status == "produced":
        outcome = check.judge_safely(reply["data"])
        return row | {"outcome": outcome.status, "message": outcome.message}
    if status in ("failed", "not attempted"):
        return row | {"outcome": status, "message": reply["message"]}
    if status == "stopped":
        return row | {"outcome": "failed", "message": reply["message"]}
    return row | {"outcome": "error", "message": reply["message"]}


def _join(names: list[str]) -> str:
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


def grade(job: dict) -> dict:
    """Grade the submission described by ``job`` (written by the batch command)."""
    import nbformat

    from .execute import Limits, plan, run_notebook
    from .sandbox import Sandbox
    from .submissions import exercises_in_notebook
    from course_utils import checks
    from .config import GradingConfig

    started = time.monotonic()
    config = GradingConfig.from_json(job["config"])
    result = {"student": job["student"], "chapter": job["chapter"], "submission": job["submission"],
              "status": "graded", "notes": [], "cells": [], "exercises": []}
    names = job.get("exercises")
    work = Path(job["workdir"])
    kernel_dir = work / "kernel"
    kernel_dir.mkdir(parents=True, exist_ok=True)
    copy = kernel_dir / Path(job["copy"]).name
    copy.write_bytes(Path(job["copy"]).read_bytes())

    def specs(missing: dict[str, str]) -> list[dict]:
        out = []
        for name in names:
            exercise = checks.EXERCISES[name].exercise
            seeds, hidden = config.seeds(name, exercise.seeds)
            out.append({"name": name, "seeds": seeds, "default_seeds": len(seeds) - hidden,
                        "points": config.points(name, exercise.points),
                        "time_limit": config.time_limit(name), "missing_reason": missing.get(name, "")})
        return out

    def fail_all(reason: str) -> dict:
        result["status"] = "error"
        result["error"] = reason
        for spec in specs({}) + result_specs(names, config, {}):
            result["exercises"].append({"exercise": spec["name"], "outcome": "error", "points": 0.0,
                                        "max_points": spec["points"], "message": reason})
        result["seconds"] = {"total": round(time.monotonic() - started, 2)}
        return result

    try:
        text = copy.read_text(encoding="utf-8", errors="replace")
        version = json.loads(text).get("nbformat")
        nb = nbformat.reads(text, as_version=4)  # an older notebook (nbformat 3) is converted
        if isinstance(version, int) and version < 4:
            result["notes"].append(f"the notebook is in the old format nbformat {version}; the grader converted "
                                   "it to nbformat 4 and graded it")
        cells = list(nb.get("cells", []))
        if not all(isinstance(cell, dict) for cell in cells):
            raise ValueError("its cells are not cells")
    except Exception as error:  # noqa: BLE001 - whatever is wrong with the file, say it
        text = str(error).strip().splitlines()[0][:200] if str(error).strip() else ""
        if names is None:
            names = []
        return fail_all(f"not a readable notebook ({type(error).__name__}: {text})".replace(": )", ")"))

    if names is None:  # the chapter's own notebook was not found: grade what this one defines
        names = exercises_in_notebook(cells, checks.EXERCISES)
        result["notes"].append("the chapter's learner notebook was not found; graded the exercises this "
                               f"notebook defines: {', '.join(names) or 'none'}")

    steps = plan(cells, names, config.exercises_only)
    env = untrusted_env(kernel_dir, job)
    memory_bytes = int(config.memory_mb * 2**20) if config.memory_mb else None
    limits = Limits(config.cell_timeout, config.timeout, memory_bytes)
    # The sandbox that will call the learner's functions starts (imports torch) while the
    # notebook runs.
    sandbox = Sandbox({}, memory_bytes, untrusted_env(work, job), work)
    if any(name in step.defines for step in steps for name in names):
        sandbox.launch()
    try:
        execution = run_notebook(steps, names, limits, kernel_dir, env)
    except BaseException:
        sandbox.close()
        raise
    result["notes"].extend(execution.notes)
    result["cells"] = [log.as_dict() for log in execution.cells]
    if execution.fatal and not execution.definitions:
        sandbox.close()
        return fail_all(execution.fatal)
    if execution.fatal:
        result["notes"].append(execution.fatal + "; graded the definitions collected before")

    evaluated = time.monotonic()
    missing = {name: _missing_reason(name, steps, execution) for name in names
               if name not in execution.definitions}
    rows = evaluate(specs(missing), execution.definitions, memory_bytes, None, None, result["notes"], sandbox,
                    results=result_specs(names, config, missing))
    printed = {name: status for status, name in _PRINTED.findall(execution.printed)}
    for row in rows:
        said = printed.get(row["exercise"])
        if said:
            row["notebook_printed"] = said
            if said == "passed" and row["outcome"] != "passed":
                result["notes"].append(
                    f"the notebook printed [passed] for {row['exercise']}, but the grader's check says "
                    f"{row['outcome']}" + (" (it also ran hidden cases)" if row.get("seeds", {}).get("hidden") else ""))
        if row["exercise"] in execution.defined_in:
            row["defined_after_cell"] = execution.defined_in[row["exercise"]]
        found = fingerprint(execution.definitions.get(row["exercise"]) or {})
        if found is not None:
            row["fingerprint"], row["lines"] = found
    result["exercises"] = rows
    result["seconds"] = {"total": round(time.monotonic() - started, 2),
                         "notebook": round(execution.seconds, 2),
                         "grading": round(time.monotonic() - evaluated, 2)}
    result["kernel_starts"] = execution.kernel_starts
    result["peak_memory_mb"] = round(execution.peak_rss / 2**20)
    return result


def main(argv: list[str] | None = None) -> int:
    from . import isolation, limits

    argv = sys.argv[1:] if argv is None else argv
    job_path = Path(argv[0])
    job = json.loads(job_path.read_text())
    limits.SESSION_LOG = Path(job["sessions"]) if job.get("sessions") else None
    isolation.activate(isolation.Isolation.from_json(job.get("isolation")))
    try:
        result = grade(job)
    except BaseException as error:  # noqa: BLE001 - the batch turns this into error rows
        result = {"status": "crashed", "error": f"{type(error).__name__}: {error}",
                  "traceback": traceback.format_exc()[-4000:]}
    destination = Path(job["result"])
    destination.parent.mkdir(parents=True, exist_ok=True)  # even if a notebook deleted it
    partial = destination.with_suffix(".partial")
    partial.write_text(json.dumps(result, indent=1))
    partial.replace(destination)
    return 0


if __name__ == "__main__":
    sys.exit(main())
