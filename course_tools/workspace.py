"""The learner's own working copies: ``python -m course_tools.workspace``.

Learners work in ``my_work/`` (gitignored), never in ``chapters/``, so that pulling a new
version of the course, or rebuilding it, can never overwrite their answers.  This command

* copies each ``chapters/NN_name.ipynb`` that is not yet in ``my_work/`` there;
* never overwrites or deletes anything in ``my_work/``;
* remembers which version of a chapter each copy was made from (a fingerprint of its
  cells, in ``my_work/.course_versions.json``), and when ``chapters/`` has changed since,
  says so and saves the new version next to the learner's copy as
  ``my_work/NN_name.updated.ipynb``.  That file is the course's, not the learner's: it is
  replaced by the next update, unless the learner has edited it, in which case it is kept
  too and the message says so.

Output, one line per chapter::

    copied   my_work/01_toy_models.ipynb (new)
    kept     my_work/02_geometry.ipynb (up to date)
    kept     my_work/03_polysemanticity.ipynb: chapters/03_polysemanticity.ipynb changed since your
             copy was made; the new version is my_work/03_polysemanticity.updated.ipynb
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import os
import sys
from pathlib import Path

from course_utils import CHAPTER_GLOB

REPO_ROOT = Path(__file__).resolve().parents[1]
CHAPTERS_DIR = REPO_ROOT / "chapters"
WORK_DIR = REPO_ROOT / "my_work"
STATE_FILE = ".course_versions.json"
UPDATED_SUFFIX = ".updated.ipynb"


def fingerprint(path: Path) -> str:
    """A hash of a notebook's cells (type, source, tags): what a learner would see change.
    Outputs, ids and metadata do not count; an unreadable file hashes its bytes."""
    data = Path(path).read_bytes()
    try:
        cells = json.loads(data)["cells"]
        content = [[c.get("cell_type"), "".join(c.get("source", "")) if isinstance(c.get("source"), list)
                    else c.get("source", ""), sorted(c.get("metadata", {}).get("tags", []))] for c in cells]
        data = json.dumps(content, sort_keys=True).encode()
    except (ValueError, KeyError, TypeError, AttributeError):
        pass
    return hashlib.sha256(data).hexdigest()[:16]


def _load_state(work_dir: Path) -> dict:
    try:
        state = json.loads((work_dir / STATE_FILE).read_text())
        return state if isinstance(state, dict) else {}
    except (OSError, ValueError):
        return {}


def _save_state(work_dir: Path, state: dict) -> None:
    path = work_dir / STATE_FILE
    partial = path.with_suffix(".tmp")
    partial.write_text(json.dumps(state, indent=1, sort_keys=True) + "\n")
    os.replace(partial, path)


def _write_new(path: Path, data: bytes) -> None:
    """Create ``path`` with ``data``; fails (FileExistsError) rather than overwrite."""
    with open(path, "xb") as handle:
        handle.write(data)


def _show(path: Path) -> str:
    try:
        return str(Path(path).resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def update(chapters_dir: Path = CHAPTERS_DIR, work_dir: Path = WORK_DIR) -> list[tuple[str, Path, str]]:
    """Create or update the working copies; returns (action, path, detail) per chapter.

    ``action`` is "copied" or "kept"; nothing that exists in ``work_dir`` is ever
    overwritten, except an ``.updated.ipynb`` this function wrote and nobody edited since.
    """
    chapters_dir, work_dir = Path(chapters_dir), Path(work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    state = _load_state(work_dir)
    copies = state.setdefault("copies", {})
    now = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    report = []
    for chapter in sorted(chapters_dir.glob(CHAPTER_GLOB + ".ipynb")):
        mine = work_dir / chapter.name
        upstream = fingerprint(chapter)
        record = copies.get(chapter.name)
        if not mine.exists():
            try:
                _write_new(mine, chapter.read_bytes())
            except FileExistsError:  # created meanwhile: leave it alone
                report.append(("kept", mine, "(created while we looked)"))
                continue
            copies[chapter.name] = {"version": upstream, "copied": now}
            report.append(("copied", mine, "(new)"))
            continue
        if record is None or "version" not in record:
            # A copy we have no record of (made by hand, or the record was deleted): from
            # now on, changes are measured against the current version.
            copies[chapter.name] = {"version": upstream, "copied": None}
            report.append(("kept", mine, f"(no record of which version it came from; the current "
                                         f"version is {_show(chapter)})"))
            continue
        if record["version"] == upstream:
            report.append(("kept", mine, "(up to date)"))
            continue
        updated = work_dir / (chapter.stem + UPDATED_SUFFIX)
        detail = (f": {_show(chapter)} changed since your copy was made; your copy is kept as it is, "
                  f"and the new version is {_show(updated)}")
        written = record.get("updated")
        if not updated.exists():
            _write_new(updated, chapter.read_bytes())
            record["updated"] = fingerprint(updated)
        elif fingerprint(updated) == upstream:
            pass  # already the newest
        elif written is not None and fingerprint(updated) == written:
            updated.write_bytes(chapter.read_bytes())  # ours, untouched: replace with the newest
            record["updated"] = fingerprint(updated)
        else:
            detail = (f": {_show(chapter)} changed since your copy was made; your copy is kept as it is; "
                      f"{_show(updated)} has edits of yours, so it was not replaced either: rename it to "
                      "get the newest version there")
        report.append(("kept", mine, detail))
    _save_state(work_dir, state)
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m course_tools.workspace",
        description="Copy the chapters you do not have yet into your working directory (my_work/); "
                    "never overwrite your copies; say which chapters changed upstream.")
    parser.add_argument("--chapters-dir", type=Path, default=CHAPTERS_DIR, help=argparse.SUPPRESS)
    parser.add_argument("--work-dir", type=Path, default=WORK_DIR,
                        help="your working directory (default: my_work/ in the course)")
    args = parser.parse_args(argv)
    if not list(Path(args.chapters_dir).glob(CHAPTER_GLOB + ".ipynb")):
        print(f"no chapters (NN_*.ipynb) in {_show(args.chapters_dir)}", file=sys.stderr)
        return 1
    for action, path, detail in update(args.chapters_dir, args.work_dir):
        print(f"{action:8} {_show(path)}{'' if detail.startswith(':') else ' '}{detail}")
    print(f"work in {_show(args.work_dir)}/; your copies are never overwritten.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
