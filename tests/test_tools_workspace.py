"""The learner's working copies (my_work/): never overwritten, updates reported and saved
next to them, and the course build never writes there."""

from __future__ import annotations

import hashlib
from pathlib import Path

import nbformat

from course_tools import build, workspace


def _tree(fresh_demo) -> tuple[Path, Path, Path, Path]:
    """A course tree (demo chapter, built without execution) with my_work/ beside it."""
    source, solutions, chapters = fresh_demo
    build.build_chapter(source, execute=False, solutions_dir=solutions, chapters_dir=chapters)
    return source, solutions, chapters, chapters.parent / "my_work"


def _edit_my_copy(path: Path, text: str = "# my own notes and answers") -> None:
    nb = nbformat.read(str(path), as_version=4)
    nb.cells.append(nbformat.v4.new_code_cell(text))
    nb.cells[2].source = nb.cells[2].source.replace("raise NotImplementedError", "return 2 * x  #")
    nbformat.write(nb, str(path))


def _change_upstream(source: Path, solutions: Path, chapters: Path, text: str) -> None:
    """A maintainer adds a markdown cell to the chapter's source and rebuilds."""
    source.write_text(source.read_text().rstrip("\n") + f"\n\n# %% [markdown]\n# {text}\n")
    build.build_chapter(source, execute=False, solutions_dir=solutions, chapters_dir=chapters)


def _snapshot(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def test_first_run_copies_the_chapters(fresh_demo, capsys):
    _, _, chapters, work = _tree(fresh_demo)
    assert workspace.main(["--chapters-dir", str(chapters), "--work-dir", str(work)]) == 0
    copy = work / "01_demo.ipynb"
    assert copy.read_bytes() == (chapters / "01_demo.ipynb").read_bytes()
    out = capsys.readouterr().out
    assert "copied" in out and "01_demo.ipynb (new)" in out


def test_a_learners_edits_survive_a_rebuild_and_an_update(fresh_demo, capsys):
    source, solutions, chapters, work = _tree(fresh_demo)
    workspace.update(chapters, work)
    mine = work / "01_demo.ipynb"
    _edit_my_copy(mine)
    edited = mine.read_bytes()

    # Nothing changed upstream: kept, up to date.
    [(action, path, detail)] = workspace.update(chapters, work)
    assert (action, path, detail) == ("kept", mine, "(up to date)")
    assert mine.read_bytes() == edited

    # The chapter changes and the course is rebuilt: the copy is kept, the new version saved beside it.
    _change_upstream(source, solutions, chapters, "A revised chapter")
    assert mine.read_bytes() == edited  # the build did not touch it
    [(action, path, detail)] = workspace.update(chapters, work)
    updated = work / "01_demo.updated.ipynb"
    assert action == "kept" and mine.read_bytes() == edited
    assert "01_demo.ipynb changed since your copy was made; your copy is kept" in detail
    assert str(updated.name) in detail
    assert updated.read_bytes() == (chapters / "01_demo.ipynb").read_bytes()
    assert "A revised chapter" in updated.read_text()

    # Another upstream change replaces the untouched .updated copy, never the learner's.
    _change_upstream(source, solutions, chapters, "A second revision")
    workspace.update(chapters, work)
    assert "A second revision" in updated.read_text() and mine.read_bytes() == edited

    # Once the learner edits the .updated copy, that one is kept too.
    _edit_my_copy(updated, "# I merged this by hand")
    merged = updated.read_bytes()
    _change_upstream(source, solutions, chapters, "A third revision")
    [(action, _, detail)] = workspace.update(chapters, work)
    assert updated.read_bytes() == merged and mine.read_bytes() == edited
    assert "has edits of yours, so it was not replaced" in detail

    workspace.main(["--chapters-dir", str(chapters), "--work-dir", str(work)])
    out = capsys.readouterr().out
    assert "kept" in out and "changed since your copy was made" in out and "copied" not in out


def test_a_copy_without_a_record_is_kept_and_tracked_from_now_on(fresh_demo):
    source, solutions, chapters, work = _tree(fresh_demo)
    work.mkdir()
    mine = work / "01_demo.ipynb"
    mine.write_text("my own file, not even a notebook")
    [(action, _, detail)] = workspace.update(chapters, work)
    assert action == "kept" and "no record of which version" in detail
    assert mine.read_text() == "my own file, not even a notebook"
    _change_upstream(source, solutions, chapters, "A revised chapter")
    [(action, _, detail)] = workspace.update(chapters, work)
    assert "changed since your copy was made" in detail
    assert mine.read_text() == "my own file, not even a notebook"


def test_a_deleted_copy_is_copied_again(fresh_demo):
    _, _, chapters, work = _tree(fresh_demo)
    workspace.update(chapters, work)
    (work / "01_demo.ipynb").unlink()
    [(action, _, _)] = workspace.update(chapters, work)
    assert action == "copied" and (work / "01_demo.ipynb").exists()


def test_the_build_never_writes_into_my_work(fresh_demo):
    source, solutions, chapters, work = _tree(fresh_demo)
    workspace.update(chapters, work)
    _edit_my_copy(work / "01_demo.ipynb")
    (work / "scratch.py").write_text("x = 1\n")
    before = _snapshot(work)
    source.write_text(source.read_text().rstrip("\n") + "\n\n# %% [markdown]\n# A changed chapter\n")
    assert build.main([str(source), "--no-execute", "--chapters-dir", str(chapters)]) == 0
    assert build.main(["--no-execute", "--solutions-dir", str(solutions), "--chapters-dir", str(chapters)]) == 0
    assert "A changed chapter" in (chapters / "01_demo.ipynb").read_text()
    assert _snapshot(work) == before


def test_the_default_work_dir_is_my_work_next_to_chapters_and_gitignored():
    assert workspace.WORK_DIR == workspace.CHAPTERS_DIR.parent / "my_work"
    assert workspace.CHAPTERS_DIR == build.CHAPTERS_DIR
    ignored = (build.REPO_ROOT / ".gitignore").read_text().split()
    assert "my_work/" in ignored
