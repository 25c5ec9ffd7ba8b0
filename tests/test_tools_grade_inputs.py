"""The grader's inputs and outputs hold up (issue 22, "robust inputs" and "nothing lost").

* every file in the submissions gets a row with a reason (a .py, a .txt, a PDF, a directory
  named x.ipynb, an empty file, a file that is not JSON); a notebook in the old nbformat 3 is
  converted and graded;
* names that are not valid UTF-8 are graded and written losslessly (``\\xNN``), and the CSV
  and the JSON are always valid;
* two submissions of one student for one chapter are a conflict, said in the CSV, and
  ``--on-conflict`` chooses which counts;
* the CSV and the JSON are rewritten after every submission, so a batch stopped by a signal
  leaves complete rows, and the same command run again resumes: only the rest is graded, and
  the rows end up the same as those of an uninterrupted run (``--restart``).

To stay fast, the chapter is a stand-in with one exercise (``feature_norms``), only two
submissions start a kernel, and everything else is decided before any worker starts.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_notebook

from course_tools.grade import cli, report, submissions

sys.path.insert(0, str(Path(__file__).parent / "fixtures" / "grading"))
import submission_notebooks as nbs  # noqa: E402

CHAPTER = "01_toy_models"
GUNTER = os.fsdecode(b"g\xfcnter-\xff")  # a student directory whose name is not UTF-8 (Latin-1 bytes)
HANS = os.fsdecode(b"hans__01_toy_models-\xfe.ipynb")


def chapters_dir(root: Path) -> Path:
    """A stand-in for chapters/: chapter 01 with one exercise, feature_norms (the stub)."""
    nb = new_notebook(cells=[new_code_cell(nbs.IMPORTS), new_code_cell(nbs.STUB["feature_norms"])])
    nbs.write(nb, root / "chapters" / f"{CHAPTER}.ipynb")
    return root / "chapters"


def v3_notebook() -> str:
    from nbformat import v3

    cells = [v3.new_code_cell(input=nbs.IMPORTS), v3.new_code_cell(input=nbs.RIGHT["feature_norms"])]
    return nbformat.writes(v3.new_notebook(worksheets=[v3.new_worksheet(cells=cells)]), version=3)


def make_class(subs: Path) -> dict[str, Path]:
    """Every kind of input; only fred (nbformat 3) and GUNTER (a non-UTF-8 name) run a kernel."""
    files = {
        "py": subs / "alice" / f"{CHAPTER}.py",
        "txt": subs / "alice" / "notes.txt",
        "pdf": subs / f"bob__{CHAPTER}.pdf",
        "directory": subs / "carl" / f"{CHAPTER}.ipynb",
        "empty": subs / f"dora__{CHAPTER}.ipynb",
        "not json": subs / f"emil__{CHAPTER}.ipynb",
        "v3": subs / f"fred__{CHAPTER}.ipynb",
        "non-utf8 student": subs / GUNTER / f"{CHAPTER}.ipynb",
        "non-utf8 file": subs / HANS,
        "ida": subs / "ida" / f"{CHAPTER}.ipynb",
        "ida copy": subs / "ida" / f"{CHAPTER}-Copy1.ipynb",
        "ida py": subs / "ida" / f"{CHAPTER}.py",
    }
    for path in files.values():
        path.parent.mkdir(parents=True, exist_ok=True)
    files["py"].write_text("def feature_norms(W):\n    return W.norm(dim=1)\n")
    files["txt"].write_text("my notes")
    files["pdf"].write_bytes(b"%PDF-1.4\n\xe2\xe3\xcf\xd3\n")
    files["directory"].mkdir()
    files["empty"].write_bytes(b"")
    nbs.not_json(files["not json"])
    files["v3"].write_text(v3_notebook())
    nbs.write(nbs.tiny(order=["feature_norms"]), files["non-utf8 student"])
    nbs.not_json(files["non-utf8 file"])
    nbs.not_json(files["ida"])
    nbs.not_json(files["ida copy"])
    files["ida py"].write_text("# ida's .py: not a rival of her notebooks\n")
    # ida's "-Copy1" is the older file although it sorts first by name.
    os.utime(files["ida copy"], (1_700_000_000, 1_700_000_000))
    os.utime(files["ida"], (1_800_000_000, 1_800_000_000))
    return files


def read_outputs(out: Path) -> tuple[list[dict], dict]:
    """The CSV's rows and the JSON, decoded strictly: both must be complete, valid UTF-8."""
    text = out.read_bytes().decode("utf-8")
    table = list(csv.DictReader(io.StringIO(text, newline="")))
    assert text.endswith("\r\n") and list(table[0]) == list(report.COLUMNS)
    return table, json.loads(out.with_suffix(".json").read_bytes().decode("utf-8"))


def arguments(root: Path, *options) -> list[str]:
    return [str(root / "subs"), "--out", str(root / "out" / "grades.csv"), "--chapters-dir", str(root / "chapters"),
            "--exercises-only", "--cell-timeout", "30", "--memory-mb", "1500", *options]


def run_here(root: Path, *options) -> str:
    """The command, in this process (saves starting an interpreter and importing torch);
    returns what it printed."""
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert cli.main(arguments(root, *options)) == 0
    return printed.getvalue()


def rows_by_file(table) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for row in table:
        out.setdefault(row["file"], []).append(row)
    return out


# --------------------------------------------------------------------------------------
# No kernels: names, what is found, what is not a notebook, safe writing, conflicts
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("raw", [b"alice", b"g\xfcnter", b"a\\xff", b"x\\\\y\xfe\xff", "café".encode(), b"\x80"])
def test_display_is_valid_utf8_and_lossless(raw):
    shown = submissions.display(os.fsdecode(raw))
    shown.encode("utf-8")  # valid text
    assert submissions.undisplay(shown) == raw
    if b"\\" not in raw:
        assert (shown == raw.decode()) if raw.isascii() or raw == "café".encode() else "\\x" in shown


def test_every_file_is_found_and_each_non_notebook_has_a_reason(tmp_path):
    files = make_class(tmp_path / "subs")
    (tmp_path / "subs" / ".hidden.txt").write_text("x")
    (tmp_path / "subs" / "__MACOSX").mkdir()
    (tmp_path / "subs" / "__MACOSX" / "._x.ipynb").write_text("x")
    found = submissions.find([tmp_path / "subs"])
    assert set(found) == set(files.values())

    def reason(kind):
        path = files[kind]
        return submissions.problem_with(path, None if path.is_dir() else path.read_bytes())

    assert reason("py").startswith("not a notebook: a .py file (the course's .py files are not graded)")
    assert reason("txt").startswith("not a notebook: a .txt file")
    assert reason("pdf").startswith("not a notebook: a .pdf file")
    assert reason("directory") == "a directory, not a notebook file: submit the .ipynb file itself"
    assert reason("empty") == "not a readable notebook (the file is empty)"
    assert reason("not json").startswith("not a readable notebook (not JSON: JSONDecodeError")
    assert reason("v3") is None and reason("non-utf8 student") is None  # notebooks: the worker reads them
    bad = tmp_path / "list.ipynb"
    bad.write_text("[1, 2]")
    assert submissions.problem_with(bad, bad.read_bytes()) == "not a readable notebook (JSON, but it has no cells)"


def test_the_csv_and_json_are_valid_whatever_the_strings(tmp_path):
    result = {"student": os.fsdecode(b"z\xff"), "chapter": CHAPTER, "file": os.fsdecode(b"subs/z\xff.ipynb"),
              "notes": ["\ud800 a lone surrogate printed by a notebook"],
              "exercises": [{"exercise": "feature_norms", "outcome": "failed", "points": 0, "max_points": 1,
                             "message": os.fsdecode(b"bad \xfe")}]}
    report.write_csv(tmp_path / "g.csv", [result])
    report.write_json(tmp_path / "g.json", [result], {"complete": True})
    table, data = read_outputs(tmp_path / "g.csv")
    assert table[0]["student"] == "z\\xff" and table[0]["message"] == "bad \\xfe"
    assert table[0]["file"] == "subs/z\\xff.ipynb"
    assert data["submissions"][0]["notes"][0].startswith("\\ud800")
    assert not list(tmp_path.glob(".*tmp"))  # no temporary file left behind


def test_help_documents_the_new_options():
    text = cli._parser().format_help()
    assert "--on-conflict {newest,oldest,first,last,all,skip}" in text and "(default: newest)" in text
    assert "--restart" in text


@pytest.mark.parametrize("policy, counted", [
    ("newest", ["01_toy_models.ipynb"]), ("oldest", ["01_toy_models-Copy1.ipynb"]),
    ("first", ["01_toy_models-Copy1.ipynb"]), ("last", ["01_toy_models.ipynb"]),
    ("all", ["01_toy_models-Copy1.ipynb", "01_toy_models.ipynb"]), ("skip", []),
])
def test_on_conflict_chooses_which_submission_counts_and_the_csv_says_so(tmp_path, policy, counted, capsys):
    files = make_class(tmp_path / "subs")
    ida = [files["ida copy"], files["ida"], files["ida py"]]  # no kernel: none of them is a readable notebook
    out = tmp_path / "grades.csv"
    assert cli.main([*map(str, ida), "--out", str(out), "--chapters-dir", str(chapters_dir(tmp_path)),
                     "--on-conflict", policy, "--quiet"]) == 0
    table, data = read_outputs(out)
    by_name = {Path(file).name: rows for file, rows in rows_by_file(table).items()}
    py = by_name.pop(f"{CHAPTER}.py")  # a .py is not a rival: its own error row, no conflict
    assert py[0]["outcome"] == "error" and py[0]["conflict"] == "" and "not a notebook" in py[0]["message"]
    for name, rows in by_name.items():
        assert len(rows) == 1 and rows[0]["conflict"], rows
        if name in counted:
            assert rows[0]["outcome"] == "error" and rows[0]["message"].startswith("not a readable notebook")
            assert rows[0]["max_points"] == "1"
        else:
            assert (rows[0]["outcome"], rows[0]["points"], rows[0]["max_points"]) == ("skipped", "0", "0")
            assert rows[0]["message"].startswith("not graded: this student has 2 submissions for this chapter")
    if policy in ("newest", "oldest", "first", "last"):
        winner = str(tmp_path / "subs" / "ida" / counted[0])
        loser = next(name for name in by_name if name not in counted)
        assert by_name[counted[0]][0]["conflict"].startswith(f"counts ({policy} of 2, --on-conflict {policy})")
        assert by_name[loser][0]["conflict"].endswith(f"counts: {winner}")
    assert data["grader"]["on_conflict"] == policy


# --------------------------------------------------------------------------------------
# One class, graded three times: stopped by SIGINT after the first kernel-graded
# submission, resumed by the same command, and regraded with --restart
# --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("inputs")
    files = make_class(root / "subs")
    chapters_dir(root)
    before = {path: path.read_bytes() for path in files.values() if path.is_file()}
    out = root / "out" / "grades.csv"
    fred = submissions.display(files["v3"])
    env = {**os.environ, "SUPERPOSITION_THREADS": "1", "OMP_NUM_THREADS": "1"}
    # 1. --jobs 1: the files are graded in name order; stop the batch with SIGINT as soon as
    #    fred's rows (the first notebook run in a kernel) are written.
    batch = subprocess.Popen([sys.executable, "-m", "course_tools.grade", *arguments(root, "--jobs", "1")], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                             text=True, cwd=root, env=env)
    snapshot = None
    deadline = time.monotonic() + 240
    try:
        while time.monotonic() < deadline and batch.poll() is None:
            if out.exists():
                table, data = read_outputs(out)  # whenever it is read, it is complete
                if any(row["file"] == fred for row in table):
                    snapshot = (table, data)
                    batch.send_signal(signal.SIGINT)
                    break
            time.sleep(0.05)
        stopped_output, _ = batch.communicate(timeout=120)
    finally:
        if batch.poll() is None:
            batch.kill()
    assert snapshot is not None, stopped_output
    stopped = read_outputs(out) + (batch.returncode, stopped_output)
    # 2. the same command again (here, in this process): resumes
    printed = run_here(root, "--jobs", "1")
    resumed = read_outputs(out) + (printed,)
    # 3. --restart: everything graded again, as an uninterrupted run would
    printed = run_here(root, "--jobs", "2", "--restart")
    full = read_outputs(out) + (printed,)
    return {"files": files, "before": before, "snapshot": snapshot, "stopped": stopped, "resumed": resumed,
            "full": full, "fred": fred}


def test_a_stopped_batch_leaves_complete_rows_for_what_it_finished(runs):
    table, data = runs["snapshot"]  # the files as they were while the batch was still running
    assert data["grader"]["complete"] is False
    finished = [s["file"] for s in data["submissions"]]
    assert finished[-1] == runs["fred"]
    directory = submissions.display(runs["files"]["directory"])  # nothing to hash: not kept for a re-run
    assert all(s["resumable"] == (s["file"] != directory) for s in data["submissions"])
    assert list(rows_by_file(table)) == finished  # every finished submission has its rows, in order
    assert [row["outcome"] for row in rows_by_file(table)[runs["fred"]]] == ["passed"]
    # After SIGINT the batch wrote its rows, those it could not grade saying why, and exited 130.
    table, data, code, output = runs["stopped"]
    assert code == 130, output
    assert data["grader"]["interrupted"] is True
    by_file = rows_by_file(table)
    gunter = submissions.display(runs["files"]["non-utf8 student"])
    assert "grading was interrupted" in by_file[gunter][0]["message"]
    assert not next(s for s in data["submissions"] if s["file"] == gunter)["resumable"]


def test_the_same_command_resumes_and_ends_like_an_uninterrupted_run(runs):
    resumed_table, resumed_data, stdout = runs["resumed"]
    full_table, full_data, _ = runs["full"]
    assert resumed_table == full_table  # the same rows, in the same order
    kept = {s["file"] for s in resumed_data["submissions"] if s.get("resumed")}
    snapshot_files = {s["file"] for s in runs["snapshot"][1]["submissions"]}
    directory = submissions.display(runs["files"]["directory"])  # no content to hash: it is simply redone
    assert runs["fred"] in kept and kept == snapshot_files - {directory}
    gunter = submissions.display(runs["files"]["non-utf8 student"])
    assert gunter not in kept and resumed_data["grader"]["resumed"] == len(kept)
    assert "(kept from the previous run)" in stdout and f"{len(kept)} kept from the previous run" in stdout
    assert full_data["grader"]["resumed"] == 0 and not any(s.get("resumed") for s in full_data["submissions"])
    # the originals were only read
    for path, content in runs["before"].items():
        assert path.read_bytes() == content


def test_every_input_gets_a_row_with_a_reason(runs):
    table, data, _ = runs["full"]
    files = runs["files"]
    by_file = rows_by_file(table)
    assert set(by_file) == {submissions.display(path) for path in files.values()}
    for row in table:
        assert row["outcome"] and row["message"].strip(), row

    def rows(kind):
        return by_file[submissions.display(files[kind])]

    assert [r["outcome"] for r in rows("py")] == ["error"] and "a .py file" in rows("py")[0]["message"]
    assert rows("py")[0]["exercise"] == "feature_norms"  # its chapter is known from the name
    assert rows("txt")[0]["exercise"] == "" and "not a notebook: a .txt file" in rows("txt")[0]["message"]
    assert "not a notebook: a .pdf file" in rows("pdf")[0]["message"]
    assert "a directory, not a notebook file" in rows("directory")[0]["message"]
    assert rows("empty")[0]["message"] == "not a readable notebook (the file is empty)"
    assert rows("not json")[0]["message"].startswith("not a readable notebook (not JSON")
    # nbformat 3: converted, graded, and the report says so
    assert [r["outcome"] for r in rows("v3")] == ["passed"]
    fred = next(s for s in data["submissions"] if s["file"] == runs["fred"])
    assert any("nbformat 3" in note for note in fred["notes"])


def test_names_that_are_not_utf8_are_graded_and_written_losslessly(runs):
    table, data, _ = runs["full"]
    files = runs["files"]
    gunter_rows = [row for row in table if row["student"] == "g\\xfcnter-\\xff"]
    assert [row["outcome"] for row in gunter_rows] == ["passed"]
    assert gunter_rows[0]["file"].endswith("g\\xfcnter-\\xff/01_toy_models.ipynb")
    for kind in ("non-utf8 student", "non-utf8 file"):
        entry = next(s for s in data["submissions"] if s["file"] == submissions.display(files[kind]))
        assert bytes.fromhex(entry["file_bytes_hex"]) == os.fsencode(files[kind])
        assert submissions.undisplay(entry["file"]) == os.fsencode(files[kind])
    hans = next(row for row in table if row["file"].endswith("01_toy_models-\\xfe.ipynb"))
    assert hans["student"] == "hans" and hans["outcome"] == "error"


def test_conflicts_are_in_the_csv_and_the_newest_counts_by_default(runs):
    table, _, _ = runs["full"]
    files = runs["files"]
    by_file = rows_by_file(table)
    ida, copy = by_file[submissions.display(files["ida"])], by_file[submissions.display(files["ida copy"])]
    # "-Copy1" is the older file: the other one counts.
    assert ida[0]["outcome"] == "error" and ida[0]["conflict"].startswith("counts (newest of 2")
    assert copy[0]["outcome"] == "skipped" and copy[0]["conflict"].startswith("not counted (newest of 2")
    assert all(row["conflict"] == "" for row in table if row["student"] != "ida" or row["file"].endswith(".py"))
