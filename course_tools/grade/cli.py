"""``python -m course_tools.grade SUBMISSION... --out grades.csv``: grade a batch.

Runs one worker process per submission (``--jobs`` at a time), each grading its
submission in its own kernel and sandbox (see ``worker.py``), and writes the CSV and the
JSON report.  A submission that breaks anything, the worker grading it included, gets
"error" rows that say why; the batch always finishes and always writes both files.

Both files are rewritten (atomically) after every submission, so an interrupted or killed
batch leaves complete rows for every submission finished so far.  Re-running the same
command resumes: a submission whose file content (SHA-256) and grading settings (the
options that affect its grade) match a finished submission of the previous JSON report is
not graded again, its rows are kept (``--restart`` regrades everything).  Several
submissions of one student for one chapter are a conflict: ``--on-conflict`` says which
counts, and the CSV's ``conflict`` column says so on each of their rows.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import deque
from pathlib import Path

from . import config as config_module
from . import isolation, report, submissions
from .limits import describe_exit, kill_and_reap, kill_session

DEFAULT_CHECK_TIME_LIMIT = 20.0
ON_CONFLICT = ("newest", "oldest", "first", "last", "all", "skip")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m course_tools.grade",
        description="Grade submitted chapter notebooks: run each in its own kernel, check every "
                    "exercise from the grader's side, write a CSV (and a JSON report).",
        epilog="Student and chapter come from the file name: submissions/<student>/01_toy_models.ipynb "
               "or <student>__01_toy_models.ipynb.  See docs/grading.md.")
    parser.add_argument("submissions", nargs="+", type=Path,
                        help="notebooks, or directories to search (every file gets a row: one that is not a "
                             "notebook gets an error row saying so)")
    parser.add_argument("--out", type=Path, default=Path("grades.csv"), help="the CSV to write (default grades.csv)")
    parser.add_argument("--json", type=Path, help="the JSON report (default: --out with .json)")
    parser.add_argument("--jobs", type=int, default=1, help="submissions graded in parallel (default 1)")
    parser.add_argument("--cell-timeout", type=float, help=f"seconds per cell (default {config_module.DEFAULTS['cell_timeout']:g})")
    parser.add_argument("--timeout", type=float, help=f"seconds per notebook (default {config_module.DEFAULTS['timeout']:g})")
    parser.add_argument("--memory-mb", type=float, help="memory limit of each kernel and sandbox, in MB "
                        f"(default {config_module.DEFAULTS['memory_mb']:g})")
    parser.add_argument("--hidden-seeds", help="extra cases for every exercise, e.g. 1001,1002")
    parser.add_argument("--config", type=Path, help="JSON or TOML file: hidden seeds, points, limits per exercise")
    parser.add_argument("--exercises-only", action="store_true", default=None,
                        help="run only the set-up cells, the exercise cells and the imports/definitions of "
                             "the others (skips the training runs)")
    parser.add_argument("--check-time-limit", type=float,
                        help="seconds for each exercise's check (default: the exercise's own, 20 s)")
    parser.add_argument("--chapter", help="grade every submission as this chapter (e.g. 01_toy_models)")
    parser.add_argument("--chapters-dir", type=Path, help="where the chapters' learner notebooks are "
                        "(default: the course's chapters/)")
    parser.add_argument("--on-conflict", choices=ON_CONFLICT, default="newest",
                        help="which submission counts when a student has several for one chapter: the newest "
                             "or oldest file (modification time; a tie goes to the later or earlier file in name "
                             "order), the first or last in name order, all of them (each graded and counted), or "
                             "none (skip: none is graded). The others get one 'skipped' row; every row of the "
                             "student's submissions for that chapter says so in the 'conflict' column "
                             "(default: newest)")
    parser.add_argument("--restart", action="store_true",
                        help="grade every submission again; by default a re-run keeps the rows of submissions "
                             "the previous report (--json) graded from the same file content with the same "
                             "settings, and grades the rest")
    parser.add_argument("--no-sandbox", action="store_true",
                        help="run learner code without the bubblewrap sandbox (only for submissions you trust; "
                             "every report then says that its grades were produced without isolation)")
    parser.add_argument("--keep-temp", action="store_true", help="keep the temporary directory (debugging)")
    parser.add_argument("--quiet", action="store_true", help="print only the summary")
    return parser


def _config(args, known, result_checks=()) -> config_module.GradingConfig:
    """The config file's settings with the command line's on top.  ``known``: the exercise
    names; ``result_checks``: the result check ids (a config may set their points and time
    limits; ``--check-time-limit`` is for the exercises' checks only)."""
    config = (config_module.load(args.config, set(known) | set(result_checks)) if args.config
              else config_module.GradingConfig())
    if args.hidden_seeds is not None:
        config.hidden_seeds = config_module.parse_seeds(args.hidden_seeds)
    for option in ("cell_timeout", "timeout", "memory_mb"):
        value = getattr(args, option)
        if value is not None:
            if value <= 0:
                raise config_module.ConfigError(f"--{option.replace('_', '-')} must be positive")
            setattr(config, option, value)
    if args.exercises_only:
        config.exercises_only = True
    if args.check_time_limit is not None:
        for name in known:
            settings = config.exercises.setdefault(name, config_module.ExerciseConfig())
            if settings.time_limit is None:
                settings.time_limit = args.check_time_limit
    return config


def _worker_deadline(config, exercises: list[str] | None, results: list[tuple[str, float]] = ()) -> float:
    """Seconds after which a worker is stopped: the notebook's budget plus every check's
    (``results``: each result check's id and its registered time limit)."""
    per_exercise = [(config.time_limit(name) or DEFAULT_CHECK_TIME_LIMIT) + 45 for name in (exercises or [])]
    per_result = [(config.time_limit(name) or limit) + 45 for name, limit in results]
    return config.timeout + sum(per_exercise or [300]) + sum(per_result) + 180


class _Job:
    def __init__(self, number: int, submission: submissions.Submission, exercises, root: Path, results=()):
        self.number, self.submission, self.exercises = number, submission, exercises
        self.results = list(results)  # (result check id, points, time limit): graded after the exercises
        self.dir = root / f"job-{number:03d}"
        self.result_path = self.dir / "result.json"
        self.sessions = self.dir / "sessions"
        self.process: subprocess.Popen | None = None
        self.started = 0.0
        self.log = None
        self.known = True  # False: the chapter's notebook is missing; the worker finds the exercises
        self.content: bytes | None = None  # the file's bytes (None: a directory or unreadable)
        self.problem: str | None = None  # why it is not a notebook, found before any worker starts
        self.key: dict = {}  # what decides its grade: file content and settings (for resuming)
        self.conflict = ""  # the CSV's conflict column
        self.counted = True  # False: another submission of this student and chapter counts
        self.skip_reason = ""
        self.sandboxed = True  # False: --no-sandbox

    def base(self) -> dict:
        s = self.submission
        base = {"student": s.student, "chapter": s.chapter, "submission": submissions.display(s.path),
                "file": submissions.display(s.path)}
        if base["file"] != str(s.path):  # not valid UTF-8 (or has backslashes): the exact bytes, in hex
            base["file_bytes_hex"] = os.fsencode(s.path).hex()
        return base | self.key

    def error(self, reason: str, seconds: float = 0.0) -> dict:
        result = self.base() | {"status": "error", "error": reason, "notes": [reason], "cells": [],
                                "seconds": {"total": round(seconds, 2)}}
        result["exercises"] = [
            {"exercise": name, "outcome": "error", "points": 0.0, "max_points": points, "message": reason}
            for name, points in [*(self.exercises or []), *((name, points) for name, points, _ in self.results)]]
        return result

    def deadline(self, config) -> float:
        return _worker_deadline(config, [e for e, _ in self.exercises], [(r, limit) for r, _, limit in self.results])


def _start(job: _Job, config, mplconfig: Path, chapters_known: bool, sandbox: dict | None = None) -> dict | None:
    """Start the worker of ``job``; returns an error result instead when it cannot start."""
    job.dir.mkdir(parents=True)
    source = job.submission.path
    # A plain name for the copy (the original's may not be valid UTF-8).
    copy = job.dir / "input" / ("submission" + (".ipynb" if source.suffix.lower() == ".ipynb" else ""))
    copy.parent.mkdir()
    if job.content is None:
        return job.error("cannot read the file")
    copy.write_bytes(job.content)  # the original was only ever read, once, when the batch began
    spec = {
        **job.base(), "copy": str(copy), "workdir": str(job.dir / "work"),
        "exercises": [name for name, _ in job.exercises] if chapters_known else None,
        "config": config.to_json(), "threads": 1, "mplconfig": str(mplconfig),
        "result": str(job.result_path), "sessions": str(job.sessions), "isolation": sandbox,
    }
    (job.dir / "job.json").write_text(json.dumps(spec, indent=1))
    cwd = job.dir / "worker"
    cwd.mkdir()
    job.log = open(job.dir / "worker.log", "wb")  # noqa: SIM115 - closed in _finish
    env = {k: v for k, v in os.environ.items() if k != "SUPERPOSITION_CHECK_LOG"}
    job.process = subprocess.Popen([sys.executable, "-m", "course_tools.grade.worker", str(job.dir / "job.json")],
                                   cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=job.log,
                                   stderr=subprocess.STDOUT, start_new_session=True)
    job.started = time.monotonic()
    return None


def _stop(job: _Job) -> None:
    """Kill the worker and every session it started (kernels, sandboxes)."""
    if job.process is not None:
        kill_and_reap(job.process)
    if job.sessions.exists():
        for line in job.sessions.read_text().split():
            if line.isdigit():
                kill_session(int(line))


def _finish(job: _Job, reason: str | None = None) -> dict:
    """The result of a finished (or stopped) worker."""
    seconds = time.monotonic() - job.started
    _stop(job)  # leftovers, if the worker could not clean up
    if job.log is not None:
        job.log.close()
    if reason is None:
        try:
            result = json.loads(job.result_path.read_text())
        except (OSError, ValueError):
            code = describe_exit(job.process.returncode) if job.process else "not started"
            tail = (job.dir / "worker.log").read_text(errors="replace")[-500:].strip() if (job.dir / "worker.log").exists() else ""
            return job.error(f"the grader's worker for this submission failed ({code})"
                             + (f": {tail.splitlines()[-1]}" if tail else ""), seconds)
        if result.get("status") == "crashed":
            return job.error(f"the grader failed on this submission ({result.get('error')}); "
                             "please report it", seconds) | {"traceback": result.get("traceback", "")}
        return result
    return job.error(reason, seconds)


def _read(path: Path) -> bytes | None:
    try:
        return None if path.is_dir() else path.read_bytes()
    except OSError:
        return None


NO_SANDBOX_NOTE = ("graded WITHOUT isolation (--no-sandbox): the notebook and the learner's functions ran as "
                   "the grader's user, with its file system and network")


def _warm_matplotlib(mplconfig: Path) -> None:
    """Build matplotlib's font cache in ``mplconfig`` (the sandboxes see it read-only)."""
    env = dict(os.environ, MPLCONFIGDIR=str(mplconfig), MPLBACKEND="Agg")
    try:
        subprocess.run([sys.executable, "-c", "import matplotlib.font_manager"], env=env, timeout=120,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired):
        pass  # matplotlib then uses a temporary cache in each sandbox


def _settings_hash(config, job: _Job, chapters_dir: Path) -> str:
    """A hash of everything besides the file that decides a submission's grade: the limits,
    seeds, points and time limits, its chapter and exercises, the course's version."""
    from course_utils import __version__ as course_version

    settings = {"config": config.to_json(), "chapter": job.submission.chapter, "exercises": job.exercises,
                "results": job.results, "known": job.known, "course": course_version,
                "chapters_dir": str(Path(chapters_dir).resolve()), "sandbox": job.sandboxed}
    return hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _resolve_conflicts(jobs: list[_Job], policy: str) -> None:
    """Mark, for each student and chapter with several notebooks, which counts (``policy``,
    see --on-conflict) and fill in every one's ``conflict`` text."""
    groups: dict[tuple, list[_Job]] = {}
    for job in jobs:
        # Only files named *.ipynb compete: a .py or a PDF next to the notebook is not a rival.
        if job.submission.chapter is not None and submissions.is_notebook_file(job.submission.path):
            groups.setdefault((job.submission.student, job.submission.chapter), []).append(job)
    for group in groups.values():
        if len(group) < 2:
            continue

        def mtime(job: _Job) -> int:
            try:
                return job.submission.path.stat().st_mtime_ns
            except OSError:
                return 0

        chosen = {"newest": [max(group, key=lambda j: (mtime(j), j.number))],
                  "oldest": [min(group, key=lambda j: (mtime(j), j.number))],
                  "first": [group[0]], "last": [group[-1]], "all": group, "skip": []}[policy]
        names = [submissions.display(job.submission.path) for job in group]
        for job, name in zip(group, names):
            others = ", ".join(other for other in names if other != name)
            job.counted = job in chosen
            if policy == "all":
                job.conflict = f"{len(group)} submissions for this chapter, all counted (--on-conflict all); also {others}"
            elif job.counted:
                job.conflict = f"counts ({policy} of {len(group)}, --on-conflict {policy}); not counted: {others}"
            elif policy == "skip":
                job.conflict = f"none counted of {len(group)} (--on-conflict skip): {', '.join(names)}"
                job.skip_reason = (f"not graded: this student has {len(group)} submissions for this chapter and "
                                   f"--on-conflict skip grades none of them ({', '.join(names)})")
            else:
                counted = submissions.display(chosen[0].submission.path)
                job.conflict = f"not counted ({policy} of {len(group)}, --on-conflict {policy}); counts: {counted}"
                job.skip_reason = (f"not graded: this student has {len(group)} submissions for this chapter and "
                                   f"the {policy} counts (--on-conflict {policy}): {counted}")


def _previous(json_path: Path, log) -> dict[tuple, dict]:
    """The finished submissions of the previous report at ``json_path``, by (file, sha256,
    settings)."""
    try:
        data = json.loads(Path(json_path).read_text(encoding="utf-8"))
        kept = {}
        for result in data.get("submissions", []):
            if result.get("resumable") and result.get("sha256") and result.get("settings"):
                kept[(result.get("file"), result["sha256"], result["settings"])] = result
        return kept
    except FileNotFoundError:
        return {}
    except (OSError, ValueError, AttributeError, TypeError) as error:
        log(f"could not read the previous report {json_path} ({error}); grading everything", flush=True)
        return {}


def grade_batch(args, config, log=print, save=None) -> tuple[list[dict], dict]:
    """Grade every submission named by ``args``; returns (results, grader info).  ``save``,
    if given, is called as ``save(results so far, grader info)`` after every submission."""
    from course_utils import checks
    from ..build import CHAPTERS_DIR

    chapters_dir = args.chapters_dir or CHAPTERS_DIR
    chapters = submissions.known_chapters(chapters_dir)
    paths = submissions.find(args.submissions)
    exercises_of: dict[str, list[str] | None] = {}
    jobs: list[_Job] = []
    root = Path(tempfile.mkdtemp(prefix="superposition-grade-"))
    mplconfig = root / "mplconfig"
    mplconfig.mkdir()
    json_path = getattr(args, "json", None) or Path(args.out).with_suffix(".json")
    bwrap = getattr(args, "bwrap", None)
    sandbox = None
    if bwrap:
        _warm_matplotlib(mplconfig)  # read-only in the sandboxes: its font cache is built once, here
        hide = [*map(str, args.submissions), str(args.out), str(json_path), str(Path(args.out).parent),
                str(Path(json_path).parent), str(root)]
        if getattr(args, "config", None):
            hide.append(str(args.config))
        sandbox = isolation.Isolation(bwrap, hide=[os.path.abspath(p) for p in hide], show=[str(mplconfig)]).to_json()
    previous = {} if getattr(args, "restart", False) else _previous(json_path, log)
    for number, path in enumerate(paths, 1):
        submission = submissions.identify(path, chapters, args.chapter)
        names = None
        if submission.chapter is not None:
            if submission.chapter not in exercises_of:
                exercises_of[submission.chapter] = submissions.chapter_exercises(
                    chapters_dir, submission.chapter, checks.EXERCISES)
            names = exercises_of[submission.chapter]
        with_points = [(name, config.points(name, checks.EXERCISES[name].exercise.points)) for name in names or []]
        results = [(check.id, config.points(check.id, check.points), check.time_limit)
                   for check in checks.result_checks_for(names or [])]
        job = _Job(number, submission, with_points, root, results)
        job.sandboxed = sandbox is not None
        job.known = names is not None
        job.content = _read(path)
        job.problem = submissions.problem_with(path, job.content)
        if job.content is not None:
            job.key = {"sha256": hashlib.sha256(job.content).hexdigest(),
                       "settings": _settings_hash(config, job, chapters_dir)}
        jobs.append(job)
    _resolve_conflicts(jobs, getattr(args, "on_conflict", "newest"))

    results: dict[int, dict] = {}
    interrupted = False
    pending = deque(jobs)
    running: list[_Job] = []
    n = len(jobs)
    started = time.monotonic()
    reused = 0

    def done(job: _Job, result: dict, resumable: bool = True, resumed: bool = False) -> None:
        result.pop("resumed", None)
        if resumed:
            result["resumed"] = True
        result.update(job.base())
        if not job.sandboxed and NO_SANDBOX_NOTE not in result.setdefault("notes", []):
            result["notes"].insert(0, NO_SANDBOX_NOTE)
        result["conflict"] = job.conflict
        result["resumable"] = resumable and result.get("status") != "crashed" and bool(job.key)
        results[job.number] = result
        if not args.quiet:
            log(f"[{len(results):>{len(str(n))}}/{n}] {report.line(result)}", flush=True)
        if save is not None:
            save([results[j.number] for j in jobs if j.number in results], info(complete=False))

    def info(complete: bool) -> dict:
        return {"command": "python -m course_tools.grade " + " ".join(getattr(args, "argv", sys.argv[1:])),
                "complete": complete, "graded": len(results) - reused, "resumed": reused,
                "submissions": n, "jobs": args.jobs, "on_conflict": getattr(args, "on_conflict", "newest"),
                "sandbox": getattr(args, "bwrap_version", None) or "none: graded without isolation (--no-sandbox)"}

    try:
        while pending or running:
            while pending and len(running) < max(1, args.jobs):
                job = pending.popleft()
                if not job.counted:
                    done(job, job.base() | {"status": "skipped", "error": job.skip_reason, "exercises": [],
                                            "notes": [job.skip_reason]})
                    continue
                old = previous.get((job.base()["file"], job.key.get("sha256"), job.key.get("settings")))
                if old is not None:
                    reused += 1
                    done(job, dict(old), resumed=True)
                    continue
                if job.problem is not None:
                    done(job, job.error(job.problem))
                    continue
                if job.submission.chapter is None:
                    done(job, job.error(job.submission.problem))
                    continue
                problem = _start(job, config, mplconfig, job.known, sandbox)
                if problem is not None:
                    done(job, problem)
                    continue
                running.append(job)
            for job in list(running):
                if job.process.poll() is not None:
                    running.remove(job)
                    done(job, _finish(job))
                elif time.monotonic() - job.started > job.deadline(config):
                    running.remove(job)
                    done(job, _finish(job, f"grading this submission took longer than "
                                           f"{job.deadline(config):.0f} s; it was stopped"))
            time.sleep(0.1)
    except KeyboardInterrupt:
        interrupted = True
        for number in (signal.SIGINT, signal.SIGTERM):  # a second Ctrl-C must not lose the rows
            signal.signal(number, signal.SIG_IGN)
        for job in running:
            done(job, _finish(job, "grading was interrupted (Ctrl-C, or the batch was stopped); "
                                   "run the same command again to grade it"), resumable=False)
        running = []
        for job in pending:
            done(job, job.error("grading was interrupted (Ctrl-C, or the batch was stopped) before this "
                                "submission; run the same command again to grade it"), resumable=False)
    finally:
        for job in running:
            _stop(job)
        if not args.keep_temp:
            shutil.rmtree(root, ignore_errors=True)

    wall = time.monotonic() - started
    import torch

    seeds = {}
    for name in sorted({name for job in jobs for name, _ in job.exercises}):
        all_seeds, hidden = config.seeds(name, checks.EXERCISES[name].exercise.seeds)
        seeds[name] = {"default": len(all_seeds) - hidden, "hidden": hidden,
                       "points": config.points(name, checks.EXERCISES[name].exercise.points)}
    result_checks = {}
    for name in sorted({name for job in jobs for name, _, _ in job.results}):
        check = checks.RESULT_CHECKS[name]
        result_checks[name] = {"title": check.title, "uses": list(check.uses),
                               "points": config.points(name, check.points),
                               "time_limit_s": config.time_limit(name) or check.time_limit}
    grader = info(complete=True) | {
        "similar_definitions": report.similar(results[job.number] for job in jobs if job.number in results),
        "finished": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "wall_s": round(wall, 2),
        "limits": {"cell_timeout_s": config.cell_timeout, "timeout_s": config.timeout,
                   "memory_mb": config.memory_mb, "exercises_only": config.exercises_only},
        "exercises": seeds, "result_checks": result_checks, "chapters_dir": str(chapters_dir),
        "python": platform.python_version(), "torch": torch.__version__,
        "temp_dir": str(root) if args.keep_temp else None,
        "interrupted": interrupted,
    }
    return [results[job.number] for job in jobs], grader


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    if args.jobs < 1:
        parser.error("--jobs must be at least 1")
    from course_utils import checks

    try:
        config = _config(args, set(checks.EXERCISES), set(checks.RESULT_CHECKS))
    except config_module.ConfigError as error:
        parser.error(str(error))
    missing = [submissions.display(p) for p in args.submissions if not p.exists()]
    if missing:
        parser.error(f"no such file or directory: {', '.join(missing)}")
    if not submissions.find(args.submissions):
        parser.error("no notebooks (*.ipynb) or other files found in "
                     + ", ".join(map(submissions.display, args.submissions)))
    json_path = args.json or args.out.with_suffix(".json")
    args.bwrap = args.bwrap_version = None
    if args.no_sandbox:
        print("warning: --no-sandbox: learner code runs WITHOUT isolation, as your user, with your files and "
              "network; every report says so", file=sys.stderr)
    else:
        args.bwrap, why = isolation.find_bwrap()
        if args.bwrap is None:
            print(f"error: {why}. The grader runs every submission in a bubblewrap sandbox (no network, a "
                  "read-only file system, nothing of yours or other students' visible). Install it (Debian/"
                  "Ubuntu: sudo apt-get install bubblewrap; Fedora: sudo dnf install bubblewrap), or pass "
                  "--no-sandbox to grade without isolation (only submissions you trust).", file=sys.stderr)
            return 2
        args.bwrap_version = isolation.version(args.bwrap)

    def save(results, grader) -> None:  # after every submission: complete files, atomically
        report.write_json(json_path, results, grader)
        report.write_csv(args.out, results)

    def stop(signum, frame):  # SIGTERM (kill, a scheduler) is handled like Ctrl-C
        raise KeyboardInterrupt

    previous = {number: signal.getsignal(number) for number in (signal.SIGINT, signal.SIGTERM)}
    signal.signal(signal.SIGTERM, stop)
    try:
        results, grader = grade_batch(args, config, save=save)
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)
    save(results, grader)
    totals = report.summary(results)
    outcomes = ", ".join(f"{count} {outcome}" for outcome, count in sorted(totals["outcomes"].items()))
    kept = f", {grader['resumed']} kept from the previous run" if grader["resumed"] else ""
    print(f"graded {totals['submissions']} submission(s) in {grader['wall_s']:.1f} s with {args.jobs} job(s){kept}: "
          f"{totals['rows']} rows ({outcomes})")
    if grader.get("similar_definitions"):
        print(f"note: {len(grader['similar_definitions'])} definition(s) are the same in several students' "
              f"notebooks (comments and layout aside): see similar_definitions in {json_path}")
    print(f"wrote {args.out} and {json_path}")
    return 130 if grader["interrupted"] else 0
