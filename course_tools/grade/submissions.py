"""Which files are submissions, whose they are, which chapter, which exercises it has.

Naming convention (docs/grading.md):

    submissions/<student>/01_toy_models.ipynb      the student is the parent directory
    submissions/<student>__01_toy_models.ipynb     or the part of the name before "__"

The chapter is the course chapter (``chapters/NN_name.ipynb``) whose name the file's name
starts with, after the ``<student>__`` part: ``01_toy_models-Copy1.ipynb`` is chapter
``01_toy_models``; failing that, the chapter with the same two-digit number.  The
exercises a chapter is graded on are the registered exercises
(``course_utils.checks.EXERCISES``) that the chapter's own learner notebook defines, so a
submission that deleted a cell still gets a row for the exercise it lost.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from course_utils import CHAPTER_GLOB

SEPARATOR = "__"
_NUMBER = re.compile(r"^(\d{2}[a-z]?)(?:[_\W]|$)")


@dataclass(frozen=True)
class Submission:
    path: Path
    student: str
    chapter: str | None  # e.g. "01_toy_models"; None when it cannot be told
    problem: str = ""  # why the chapter is unknown


def find(paths) -> list[Path]:
    """Every ``.ipynb`` named by ``paths``: files as given, directories searched recursively
    (skipping ``.ipynb_checkpoints`` and hidden directories), each file once, in order."""
    found: list[Path] = []
    for path in map(Path, paths):
        if path.is_dir():
            for candidate in sorted(path.rglob("*.ipynb")):
                relative = candidate.relative_to(path).parts
                if any(part.startswith(".") for part in relative):
                    continue
                found.append(candidate)
        else:
            found.append(path)
    return list(dict.fromkeys(found))


def known_chapters(chapters_dir: Path) -> list[str]:
    """The chapter names (``NN_name``) of ``chapters_dir/NN_*.ipynb``."""
    return sorted(p.stem for p in Path(chapters_dir).glob(CHAPTER_GLOB + ".ipynb"))


def identify(path: Path, chapters: list[str], chapter: str | None = None) -> Submission:
    """Student and chapter of one submission file (``chapter`` forces the chapter)."""
    path = Path(path)
    stem = path.stem
    if SEPARATOR in stem:
        student, rest = stem.split(SEPARATOR, 1)
    else:
        student, rest = path.resolve().parent.name, stem
    student = student.strip() or "(unnamed)"
    if chapter is not None:
        return Submission(path, student, chapter)
    matches = [name for name in chapters if rest == name or rest.startswith(name)]
    if matches:
        return Submission(path, student, max(matches, key=len))
    number = _NUMBER.match(rest)
    by_number = [name for name in chapters if number and name.split("_", 1)[0] == number.group(1)]
    if len(by_number) == 1:
        return Submission(path, student, by_number[0])
    return Submission(path, student, None,
                      f"cannot tell the chapter from the file name {path.name!r}: name it "
                      f"<student>{SEPARATOR}NN_name.ipynb or <student>/NN_name.ipynb with NN_name one of "
                      f"{', '.join(chapters) or '(no chapters found)'}, or pass --chapter")


def exercises_in_notebook(cells, registered) -> list[str]:
    """The registered exercise names that the notebook's code cells define, in order."""
    from .execute import bound_names

    names: list[str] = []
    for cell in cells:
        if cell.get("cell_type") != "code":
            continue
        source = cell.get("source", "")
        source = "".join(source) if isinstance(source, list) else str(source)
        for name in sorted(bound_names(source)):
            if name in registered and name not in names:
                names.append(name)
    return names


def chapter_exercises(chapters_dir: Path, chapter: str, registered) -> list[str] | None:
    """The exercises of ``chapter`` (from its learner notebook), or None if it is not there."""
    import nbformat

    path = Path(chapters_dir) / f"{chapter}.ipynb"
    try:
        nb = nbformat.read(str(path), as_version=4)
    except Exception:  # noqa: BLE001 - missing or unreadable: the caller falls back
        return None
    return exercises_in_notebook(nb.cells, registered)
