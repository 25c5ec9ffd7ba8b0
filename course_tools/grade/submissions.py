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

Every file under a submissions directory is a submission (hidden files and directories,
``__MACOSX`` and ``__pycache__`` excepted): a ``.py``, a PDF, an empty file, a directory named
``x.ipynb`` each get a row that says why they could not be graded (``problem_with``).

Names that are not valid UTF-8 are shown with ``display``: every byte that does not decode
is written ``\\xNN`` and every backslash ``\\\\``, so the text is valid UTF-8 and the original
bytes can be recovered from it (``undisplay``).
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

from course_utils import CHAPTER_GLOB

SEPARATOR = "__"
_NUMBER = re.compile(r"^(\d{2}[a-z]?)(?:[_\W]|$)")
_SKIPPED_DIRS = {"__MACOSX", "__pycache__"}
_ESCAPE = re.compile(r"\\(\\|x[0-9a-f]{2})")


def display(name) -> str:
    """``name`` (a str or a path, possibly holding bytes that are not UTF-8, which Python
    keeps as surrogate escapes) as valid UTF-8 text, losslessly: each undecodable byte is
    written ``\\xNN`` (two lowercase hex digits) and each backslash ``\\\\``; everything else
    is itself.  ``undisplay`` gives the bytes back."""
    raw = os.fsencode(name) if not isinstance(name, bytes) else name
    return raw.replace(b"\\", b"\\\\").decode("utf-8", "backslashreplace")


def undisplay(text: str) -> bytes:
    """The bytes that ``display`` wrote as ``text``."""
    return _ESCAPE.sub(lambda m: "\\" if m.group(1) == "\\" else chr(0xDC00 + int(m.group(1)[1:], 16)),
                       text).encode("utf-8", "surrogateescape")


@dataclass(frozen=True)
class Submission:
    path: Path
    student: str
    chapter: str | None  # e.g. "01_toy_models"; None when it cannot be told
    problem: str = ""  # why the chapter is unknown


def find(paths) -> list[Path]:
    """Every submission named by ``paths``: files as given; directories searched recursively
    for every file (not only ``*.ipynb``: a ``.py`` or a PDF gets a row saying it is not a
    notebook) and every directory named ``*.ipynb``, skipping hidden files and directories
    (``.ipynb_checkpoints``), ``__MACOSX`` and ``__pycache__``; each once, in order."""
    found: list[Path] = []
    for path in map(Path, paths):
        if not path.is_dir():
            found.append(path)
            continue
        for candidate in sorted(path.rglob("*")):
            relative = candidate.relative_to(path).parts
            if any(part.startswith(".") or part in _SKIPPED_DIRS for part in relative):
                continue
            if candidate.is_file() or candidate.suffix == ".ipynb":
                found.append(candidate)
    return list(dict.fromkeys(found))


def is_notebook_file(path: Path) -> bool:
    """Named like a notebook (``*.ipynb``) and a file: a candidate in a conflict."""
    return Path(path).suffix.lower() == ".ipynb" and not Path(path).is_dir()


def problem_with(path: Path, content: bytes | None) -> str | None:
    """Why the file at ``path`` (whose bytes are ``content``; None if unreadable) cannot be a
    notebook, or None if it may be one (the worker reads it with nbformat)."""
    path = Path(path)
    if path.is_dir():
        return "a directory, not a notebook file: submit the .ipynb file itself"
    if content is None:
        return "cannot read the file"
    suffix = path.suffix.lower()
    if suffix != ".ipynb":
        kind = f"a {display(suffix)} file" if suffix else "a file without an extension"
        hint = " (the course's .py files are not graded)" if suffix == ".py" else ""
        return f"not a notebook: {kind}{hint}; submit the .ipynb (File > Download > Notebook)"
    if not content.strip():
        return "not a readable notebook (the file is empty)"
    try:
        data = json.loads(content.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as error:
        text = str(error).strip().splitlines()[0][:200] if str(error).strip() else ""
        return f"not a readable notebook (not JSON: {type(error).__name__}: {text})"
    if not isinstance(data, dict) or not ("cells" in data or "worksheets" in data):
        return "not a readable notebook (JSON, but it has no cells)"
    return None


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
    student = display(student.strip()) or "(unnamed)"
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
                      f"cannot tell the chapter from the file name '{display(path.name)}': name it "
                      f"<student>{SEPARATOR}NN_name.ipynb or <student>/NN_name.ipynb with NN_name one of "
                      f"{', '.join(chapters) or '(no chapters found)'}, or pass --chapter")


def exercises_in_notebook(cells, registered, imports: bool = True) -> list[str]:
    """The registered exercise names that the notebook's code cells define, in order; with
    ``imports`` false, only those it defines itself (not a name it imports)."""
    from .execute import bound_names

    names: list[str] = []
    for cell in cells:
        if cell.get("cell_type") != "code":
            continue
        source = cell.get("source", "")
        source = "".join(source) if isinstance(source, list) else str(source)
        for name in sorted(bound_names(source, imports)):
            if name in registered and name not in names:
                names.append(name)
    return names


def chapter_exercises(chapters_dir: Path, chapter: str, registered) -> list[str] | None:
    """The exercises of ``chapter`` (from its learner notebook), or None if it is not there.
    A name the notebook imports is not one of its exercises (chapter 02 imports chapter 01's
    ``ToyModel`` and ``generate_batch`` to use them, not to have them graded)."""
    import nbformat

    path = Path(chapters_dir) / f"{chapter}.ipynb"
    try:
        nb = nbformat.read(str(path), as_version=4)
    except Exception:  # noqa: BLE001 - missing or unreadable: the caller falls back
        return None
    return exercises_in_notebook(nb.cells, registered, imports=False)
