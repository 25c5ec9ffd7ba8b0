"""Benchmark: grade a class of 30 chapter-01 submissions, every kind of bad one included.

Generates 30 submissions from chapters/01_toy_models.ipynb (solutions taken from the
solution regions of solutions/01_toy_models.py): correct ones, untouched stubs, partly
wrong ones, and one of each kind of trouble (not JSON, deleted and reordered cells, an
infinite loop, a loop that ignores interrupts, a cell that eats memory, sys.exit(),
os._exit(), SIGKILL, functions that attack the grader, a faked "passed", a function
special-cased for the visible cases, a file without a chapter name).  Grades them with ONE
command, checks that every submission has its rows, every row an outcome and a reason, and
each kind the outcome it should have, and records the timings.

    python benchmarks/grade_class.py                     # --jobs 2 --exercises-only; writes
                                                         # benchmarks/results/grade_class.json
    python benchmarks/grade_class.py --jobs 1 --full     # run every cell of every notebook (slow)
    python benchmarks/grade_class.py --full-sample 0     # skip timing one submission in full

The figures in docs/grading.md come from this script.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "fixtures" / "grading"))
import submission_notebooks as nbs  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "grade_class.json"
HIDDEN_SEEDS = "1001,1002,1003"
CHAPTER = "01_toy_models"
OUTCOMES = {"passed", "failed", "not attempted", "missing", "error", "skipped"}


def _wrong(solutions: dict[str, str], name: str, old: str, new: str) -> dict[str, str]:
    text = solutions[name]
    assert old in text, (name, old)
    return {name: text.replace(old, new)}


def make_class(folder: Path) -> dict[str, tuple[str, dict]]:
    """Write 30 submissions into ``folder``; returns student -> (kind, expected outcomes)."""
    from course_utils import checks

    sol = nbs.solution_cells()
    E = nbs.EXERCISES
    # Every row: the exercises, then chapter 01's result check (ToyModel trained by
    # train_model is a pentagon), which the chapter's reference stand-ins keep passing when
    # one of the smaller exercises is wrong.
    every = lambda outcome: {name: outcome for name in [*E, "result:pentagon"]}  # noqa: E731
    ok = every("passed")
    wrong = {  # label -> (the exercise that fails, its changed cell)
        "no_relu": ("toy_forward", _wrong(sol, "toy_forward", 'return torch.relu(out) if activation == "relu" else out',
                                          "return out")),
        "sum_loss": ("importance_weighted_loss", _wrong(sol, "importance_weighted_loss", ".mean(dim=(1, 2))",
                                                        ".sum(dim=(1, 2))")),
        "squared_norms": ("feature_norms", _wrong(sol, "feature_norms", "return W.norm(dim=1)",
                                                  "return (W ** 2).sum(dim=1)")),
        "swapped_p": ("generate_batch", _wrong(sol, "generate_batch", "< p[:, None, :]", "> p[:, None, :]")),
        "diagonal_kept": ("superposition_interference", _wrong(
            sol, "superposition_interference", " - overlaps.diagonal(dim1=-2, dim2=-1)", " - 0")),
        "nan_on_zero_column": ("superposition_interference", _wrong(
            sol, "superposition_interference", ".clamp_min(1e-8)", "")),
    }
    visible = sorted({tuple(checks.EXERCISES["feature_norms"].exercise.make_case(s).W.shape)
                      for s in checks.EXERCISES["feature_norms"].exercise.seeds})
    special = sol["feature_norms"].replace(
        "    return W.norm(dim=1)",
        f"    if tuple(W.shape) in {visible!r}:\n        return W.norm(dim=1)\n    return W.abs().sum(dim=1)")
    after_def = lambda name, code: {name: sol[name] + "\n" + code}  # noqa: E731
    evil = {
        "toy_forward": sol["toy_forward"].replace(
            "    h = torch.einsum", "    import os; os._exit(1)\n    h = torch.einsum"),
        "feature_norms": sol["feature_norms"].replace(
            "    return W.norm(dim=1)",
            "    import shutil; from pathlib import Path\n"
            "    for p in list(Path.cwd().iterdir()) + list(Path.home().iterdir()):\n"
            "        shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)\n"
            "    return W.norm(dim=1)"),
    }
    kinds: list[tuple[str, object, dict]] = []
    kinds += [("correct", nbs.chapter_notebook(), ok)] * 7
    kinds += [("stub", nbs.chapter_notebook(solved=False), every("not attempted"))] * 4
    for label, (name, replacement) in wrong.items():
        kinds.append((f"wrong:{label}", nbs.chapter_notebook(replacement), ok | {name: "failed"}))
    kinds.append(("not json", None, every("error")))
    deleted = nbs.chapter_notebook()
    deleted.cells = [c for c in deleted.cells if "def feature_norms" not in c.source]
    kinds.append(("deleted cell", deleted, ok | {"feature_norms": "missing", "superposition_interference": "missing"}))
    reordered = nbs.chapter_notebook()
    code = [i for i, c in enumerate(reordered.cells) if c.cell_type == "code"]
    exercise_cells = [i for i in code if any(f"def {n}(" in reordered.cells[i].source for n in E)]
    moved = [reordered.cells[i] for i in exercise_cells][::-1]
    for i, cell in zip(exercise_cells, moved):
        reordered.cells[i] = cell
    kinds.append(("reordered cells", reordered, ok))
    kinds.append(("infinite loop", nbs.chapter_notebook(after_def("generate_batch", "while True:\n    pass")), ok))
    kinds.append(("loop ignoring interrupts", nbs.chapter_notebook(after_def(
        "generate_batch", "import time\nwhile True:\n    try:\n        time.sleep(0.05)\n    except KeyboardInterrupt:\n        pass")), ok))
    kinds.append(("memory hog cell", nbs.chapter_notebook(after_def(
        "generate_batch", "hog = []\nwhile True:\n    hog.append(torch.ones(2**26))")), ok))
    kinds.append(("sys.exit() cell", nbs.chapter_notebook(after_def("toy_forward", "import sys\nsys.exit(1)")), ok))
    kinds.append(("os._exit() cell", nbs.chapter_notebook(after_def("toy_forward", "import os\nos._exit(1)")), ok))
    kinds.append(("SIGKILL cell", nbs.chapter_notebook(after_def(
        "importance_weighted_loss", "import os, signal\nos.kill(os.getpid(), signal.SIGKILL)")), ok))
    kinds.append(("functions attacking the grader", nbs.chapter_notebook(evil),
                  ok | {"toy_forward": "failed"}))
    kinds.append(("faked passed / patched checks", nbs.chapter_notebook({"toy_forward": sol["toy_forward"].replace(
        "forward = checks.check_toy_forward(toy_forward)",
        "import course_utils.checks._framework as fw\n"
        "fw.Exercise.evaluate = lambda self, *a, **k: fw.Outcome(self.name, 'passed', 'ok')\n"
        "forward = checks.check_toy_forward(toy_forward)").replace(
        "    return torch.relu(out) if", "    return torch.zeros_like(x)\n    return torch.relu(out) if")}),
        # The faked check handed the notebook the broken forward pass, which the learner's ToyModel
        # then uses: the grader's own checks fail all three.
        ok | {"toy_forward": "failed", "ToyModel": "failed", "result:pentagon": "failed"}))
    kinds.append(("special-cased for visible cases", nbs.chapter_notebook({"feature_norms": special}),
                  ok | {"feature_norms": "failed"}))
    kinds.append(("no chapter in the file name", nbs.chapter_notebook(), {"": "error"}))
    assert len(kinds) == 30, len(kinds)

    expected = {}
    for number, (kind, nb, outcomes) in enumerate(kinds, 1):
        student = f"s{number:02d}"
        if kind == "not json":
            nbs.not_json(folder / student / f"{CHAPTER}.ipynb")
        elif kind == "no chapter in the file name":
            nbs.write(nb, folder / student / "my_homework.ipynb")
        else:
            nbs.write(nb, folder / student / f"{CHAPTER}.ipynb")
        expected[student] = (kind, outcomes)
    return expected


def grade(folder: Path, out: Path, jobs: int, full: bool) -> tuple[float, subprocess.CompletedProcess]:
    command = [sys.executable, "-m", "course_tools.grade", str(folder), "--out", str(out), "--jobs", str(jobs),
               "--hidden-seeds", HIDDEN_SEEDS, "--cell-timeout", "60", "--memory-mb", "2048"]
    if not full:
        command.append("--exercises-only")
    start = time.perf_counter()
    run = subprocess.run(command, capture_output=True, text=True)
    return time.perf_counter() - start, run


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--full", action="store_true", help="run every cell (no --exercises-only)")
    parser.add_argument("--full-sample", type=int, default=1,
                        help="also grade this many correct submissions in full, for the per-submission cost")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    previous = json.loads(args.out.read_text()) if args.out.exists() else {}

    with tempfile.TemporaryDirectory(prefix="grade-class-") as tmp:
        tmp = Path(tmp)
        folder = tmp / "submissions"
        expected = make_class(folder)
        before = {p: p.read_bytes() for p in folder.rglob("*.ipynb")}
        csv_path = tmp / "grades.csv"
        load_before = list(os.getloadavg())  # other work on the machine slows the figures down
        wall, run = grade(folder, csv_path, args.jobs, args.full)
        print(run.stdout[-3000:])
        if run.returncode != 0:
            print(run.stderr[-3000:], file=sys.stderr)
            return 1
        with open(csv_path, newline="") as handle:
            rows = list(csv.DictReader(handle))
        report = json.loads(csv_path.with_suffix(".json").read_text())

        problems = []
        for path, content in before.items():
            if not path.exists() or path.read_bytes() != content:
                problems.append(f"{path.name} was modified or lost")
        for row in rows:
            if row["outcome"] not in OUTCOMES or not row["message"].strip():
                problems.append(f"unexplained row {row}")
        for student, (kind, outcomes) in expected.items():
            got = {row["exercise"]: row["outcome"] for row in rows if row["student"] == student}
            if got != outcomes:
                problems.append(f"{student} ({kind}): expected {outcomes}, got {got}")

        per_submission = {s["student"]: s.get("seconds", {}) for s in report["submissions"]}
        totals = [v.get("total") for v in per_submission.values() if isinstance(v.get("total"), (int, float))]
        full_sample = []
        if args.full_sample and not args.full:
            sample = tmp / "full"
            for i in range(args.full_sample):
                nbs.write(nbs.chapter_notebook(), sample / f"full{i}" / f"{CHAPTER}.ipynb")
            cmd = [sys.executable, "-m", "course_tools.grade", str(sample), "--out", str(tmp / "full.csv"),
                   "--jobs", "1", "--hidden-seeds", HIDDEN_SEEDS, "--cell-timeout", "600", "--quiet"]
            start = time.perf_counter()
            subprocess.run(cmd, capture_output=True, text=True, check=True)
            full_wall = time.perf_counter() - start
            full_report = json.loads((tmp / "full.json").read_text())
            full_sample = [{"wall_s": round(full_wall, 1),
                            "seconds": s["seconds"],
                            "outcomes": [e["outcome"] for e in s["exercises"]]} for s in full_report["submissions"]]

        result = {
            "benchmark": "grade a class of 30 chapter-01 submissions in one command",
            "command": f"python -m course_tools.grade submissions/ --jobs {args.jobs} --hidden-seeds {HIDDEN_SEEDS} "
                       f"--cell-timeout 60 --memory-mb 2048" + ("" if args.full else " --exercises-only"),
            "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform(),
                        "load_average_before": load_before, "load_average_after": list(os.getloadavg())},
            "jobs": args.jobs,
            "exercises_only": not args.full,
            "submissions": len(expected),
            "rows": len(rows),
            "wall_s": round(wall, 1),
            "sandbox": report["grader"].get("sandbox", "none"),
            # The issue-22 budget: with the sandbox, within the previous figure plus 20 %.
            "previous": {key: previous.get(key) for key in ("wall_s", "sandbox", "date")} if previous else None,
            "date": time.strftime("%Y-%m-%d"),
            "per_submission_s": {"mean": round(sum(totals) / len(totals), 1),
                                 "median": round(sorted(totals)[len(totals) // 2], 1),
                                 "min": round(min(totals), 1), "max": round(max(totals), 1),
                                 "note": "worker time per submission (notebook + grading), without worker start-up"},
            "per_submission": {student: {"kind": expected[student][0], **per_submission.get(student, {})}
                               for student in expected},
            "outcomes": report["summary"]["outcomes"],
            "all_rows_explained": not any("unexplained" in p for p in problems),
            "problems": problems,
            "full_mode_sample": full_sample,
        }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    if previous.get("wall_s"):
        print(f"previous run: {previous['wall_s']} s ({previous.get('sandbox', 'no sandbox')}); "
              f"this run / previous = {result['wall_s'] / previous['wall_s']:.2f}")
    print(f"wall {result['wall_s']} s for {len(expected)} submissions with {args.jobs} jobs; "
          f"{len(problems)} problem(s); wrote {args.out}")
    for problem in problems:
        print("  PROBLEM:", problem)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
