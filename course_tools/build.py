"""Solutions → chapters: the course's authoring pipeline.

``solutions/NN_name.py`` (jupytext percent format) is the only hand-edited source of a
chapter.  From it the build writes

    solutions/NN_name.ipynb   the source as a notebook, executed, outputs kept
    chapters/NN_name.py       the learner version: solution regions replaced by stubs
    chapters/NN_name.ipynb    the learner version as a notebook, no outputs

Markers in the source (nbgrader's, so instructors may also use nbgrader):

    ### BEGIN SOLUTION / ### END SOLUTION   replaced, markers included, by
                                            ``# YOUR CODE HERE`` and
                                            ``raise NotImplementedError("exercise: <name>")``
                                            at the BEGIN marker's indentation
    ### BEGIN HIDDEN / ### END HIDDEN       removed, markers included, without a stub
    cell tag ``solution-only``              the whole cell is removed

The generated notebooks are plain (not jupytext-paired), carry a ``python3`` kernelspec, and
have deterministic cell ids and no timestamps, so rebuilding an unchanged chapter gives an
empty diff (outputs aside).

Command line::

    python -m course_tools.build                      # every solutions/NN_*.py
    python -m course_tools.build solutions/01_x.py    # one chapter
    python -m course_tools.build --no-execute         # write everything, execute nothing
    python -m course_tools.build --keep-outputs       # execute nothing; the solutions notebook
                                                      # keeps each cell's committed outputs (cells
                                                      # matched in order by type); nbval in
                                                      # `make test` then proves them right
    python -m course_tools.build --check              # fast drift check, writes nothing
    python -m course_tools.build --sync-first-cell    # rewrite each source's first code
                                                      # cell to colab.COLAB_FIRST_CELL
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import re
import sys
from dataclasses import dataclass
from pathlib import Path

import jupytext
import nbformat

from course_utils import CHAPTER_GLOB
from course_utils.colab import COLAB_FIRST_CELL

REPO_ROOT = Path(__file__).resolve().parents[1]
SOLUTIONS_DIR = REPO_ROOT / "solutions"
CHAPTERS_DIR = REPO_ROOT / "chapters"
SOURCE_GLOB = CHAPTER_GLOB + ".py"

BEGIN_SOLUTION = "### BEGIN SOLUTION"
END_SOLUTION = "### END SOLUTION"
BEGIN_HIDDEN = "### BEGIN HIDDEN"
END_HIDDEN = "### END HIDDEN"
SOLUTION_ONLY_TAG = "solution-only"
RAISES_TAG = "raises-exception"

CELL_TIMEOUT_S = 600
KERNEL_NAME = "python3"
KERNELSPEC = {"display_name": "Python 3 (ipykernel)", "language": "python", "name": KERNEL_NAME}
# No version numbers: they would change with every machine that rebuilds.
LANGUAGE_INFO = {
    "codemirror_mode": {"name": "ipython", "version": 3},
    "file_extension": ".py",
    "mimetype": "text/x-python",
    "name": "python",
    "nbconvert_exporter": "python",
    "pygments_lexer": "ipython3",
}
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
# Cell metadata that only jupytext's round trip or nbclient's timing needs.
_VOLATILE_CELL_METADATA = ("lines_to_next_cell", "lines_to_end_of_cell_marker", "execution")

_CELL_HEADER = re.compile(r"^#\s*%%(?!%)")
_MARKERS = {
    BEGIN_SOLUTION: ("BEGIN", "SOLUTION"),
    END_SOLUTION: ("END", "SOLUTION"),
    BEGIN_HIDDEN: ("BEGIN", "HIDDEN"),
    END_HIDDEN: ("END", "HIDDEN"),
}


class BuildError(Exception):
    """A chapter source cannot be built; the message names the file (and line or cell)."""


# --------------------------------------------------------------------------------------
# Splitting a percent-format source into cells, with line numbers
# --------------------------------------------------------------------------------------


@dataclass
class _Block:
    """One cell of the source text (or the preamble before the first ``# %%``)."""

    first_line: int  # 1-based line number of lines[0] in the file
    lines: list[str]  # each ending in "\n"
    cell_type: str  # "code", "markdown", "raw"; the preamble counts as code
    tags: tuple[str, ...]
    is_preamble: bool


def _header_metadata(header: str) -> tuple[str, tuple[str, ...]]:
    """Cell type and tags of a ``# %% ...`` header line, parsed by jupytext itself."""
    cells = jupytext.reads(header.rstrip("\n") + "\n", fmt="py:percent").cells
    if not cells:
        return "code", ()
    cell = cells[0]
    return cell.cell_type, tuple(cell.metadata.get("tags", ()))


def _split_cells(text: str) -> list[_Block]:
    lines = text.splitlines(keepends=True)
    if lines and not lines[-1].endswith("\n"):
        lines[-1] += "\n"
    blocks = [_Block(1, [], "code", (), True)]
    for number, line in enumerate(lines, start=1):
        if _CELL_HEADER.match(line):
            cell_type, tags = _header_metadata(line)
            blocks.append(_Block(number, [], cell_type, tags, False))
        blocks[-1].lines.append(line)
    return blocks


def _yaml_header_end(lines: list[str]) -> int:
    """Index one past jupytext's ``# ---`` YAML header at the top of ``lines`` (0 if none)."""
    if not lines or lines[0].rstrip() != "# ---":
        return 0
    for i in range(1, len(lines)):
        if lines[i].rstrip() == "# ---":
            return i + 1
    return 0


# --------------------------------------------------------------------------------------
# Stripping solutions
# --------------------------------------------------------------------------------------


def _marker_in(line: str, filename: str, number: int) -> tuple[str, str] | None:
    found = [marker for marker in _MARKERS if marker in line]
    if len(found) > 1:
        raise BuildError(f"{filename}:{number}: more than one marker on one line: {line.strip()!r}")
    return _MARKERS[found[0]] if found else None


def _mask_magics(lines: list[str]) -> str:
    """Cell text that ``ast`` can parse: IPython magics and shell lines become comments."""
    out = []
    for line in lines:
        stripped = line.lstrip()
        if stripped.startswith(("%", "!")) or _CELL_HEADER.match(line):
            line = line[: len(line) - len(stripped)] + "#" + stripped
        out.append(line)
    return "".join(out)


def _enclosing_name(block: _Block, marker_index: int) -> str | None:
    """Qualified name of the innermost def/class containing line ``marker_index`` of a block."""
    import ast

    try:
        tree = ast.parse(_mask_magics(block.lines))
    except SyntaxError:
        return None
    target = marker_index + 1  # ast line numbers are 1-based within the block
    names: list[str] = []

    def visit(node: ast.AST, prefix: list[str]) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                if child.lineno < target <= (child.end_lineno or child.lineno):
                    names[:] = prefix + [child.name]
                    visit(child, prefix + [child.name])
                    return
            visit(child, prefix)

    visit(tree, [])
    return ".".join(names) or None


_ASSIGNED = re.compile(r"^\s*([A-Za-z_][\w.]*)\s*(?::[^=]+)?=(?!=)")


def _exercise_name(block: _Block, begin: int, end: int, filename: str) -> str:
    """A short name for the stub's message: the enclosing def, else the first assignment."""
    name = _enclosing_name(block, begin)
    if name:
        return name
    for line in block.lines[begin + 1 : end]:
        match = _ASSIGNED.match(line)
        if match:
            return match.group(1)
    return f"{Path(filename).name} line {block.first_line + begin}"


def _strip_block(block: _Block, filename: str) -> list[str]:
    """The block's lines with marker regions replaced; raises BuildError on bad markers."""
    # First pass: find the regions, so the stub can name the enclosing function.
    regions: list[tuple[str, int, int]] = []  # (kind, begin index, end index)
    open_region: tuple[str, int] | None = None
    for i, line in enumerate(block.lines):
        marker = _marker_in(line, filename, block.first_line + i)
        if marker is None:
            continue
        action, kind = marker
        number = block.first_line + i
        if action == "BEGIN":
            if open_region is not None:
                opened_kind, opened_at = open_region
                raise BuildError(
                    f"{filename}:{number}: '### BEGIN {kind}' inside the '### BEGIN "
                    f"{opened_kind}' region opened at line {block.first_line + opened_at}; "
                    "marker regions cannot be nested"
                )
            open_region = (kind, i)
        else:
            if open_region is None:
                raise BuildError(f"{filename}:{number}: '### END {kind}' without a matching '### BEGIN {kind}'")
            opened_kind, opened_at = open_region
            if opened_kind != kind:
                raise BuildError(
                    f"{filename}:{number}: '### END {kind}' closes the '### BEGIN {opened_kind}' "
                    f"region opened at line {block.first_line + opened_at}"
                )
            regions.append((kind, opened_at, i))
            open_region = None
    if open_region is not None:
        opened_kind, opened_at = open_region
        last = block.first_line + len(block.lines) - 1
        raise BuildError(
            f"{filename}:{block.first_line + opened_at}: '### BEGIN {opened_kind}' is not closed "
            f"by '### END {opened_kind}' before the end of its cell (line {last})"
        )

    out: list[str] = []
    position = 0
    for kind, begin, end in regions:
        out.extend(block.lines[position:begin])
        if kind == "SOLUTION":
            begin_line = block.lines[begin]
            indent = begin_line[: len(begin_line) - len(begin_line.lstrip())]
            if block.cell_type == "code":
                name = _exercise_name(block, begin, end, filename)
                out.append(f"{indent}# YOUR CODE HERE\n")
                out.append(f'{indent}raise NotImplementedError("exercise: {name}")\n')
            else:
                out.append(f"{indent}# YOUR ANSWER HERE\n")
        position = end + 1
    out.extend(block.lines[position:])
    return out


def strip_solutions(source_text: str, filename: str = "<source>") -> str:
    """The learner version of a percent-format chapter source.

    Solution regions become a ``# YOUR CODE HERE`` / ``raise NotImplementedError(...)`` stub,
    hidden regions disappear, cells tagged ``solution-only`` disappear, and the jupytext
    header loses any ``formats:`` pairing line.  Everything else is kept line for line.
    Unbalanced or nested markers raise :class:`BuildError` naming ``filename`` and the line.
    """
    out: list[str] = []
    for block in _split_cells(source_text):
        lines = _strip_block(block, filename)  # validates markers even in dropped cells
        if SOLUTION_ONLY_TAG in block.tags:
            continue
        if block.is_preamble:
            end = _yaml_header_end(lines)
            lines = [ln for ln in lines[:end] if not re.match(r"^#\s+formats:", ln)] + lines[end:]
        out.extend(lines)
    return "".join(out)


# --------------------------------------------------------------------------------------
# The first cell
# --------------------------------------------------------------------------------------


def first_code_cell(source_text: str) -> str | None:
    """Source of the first code cell of a percent-format text (None if it has none)."""
    for cell in jupytext.reads(source_text, fmt="py:percent").cells:
        if cell.cell_type == "code":
            return cell.source
    return None


def check_first_cell(source_text: str, filename: str) -> None:
    """Raise BuildError unless the first code cell is exactly ``COLAB_FIRST_CELL``."""
    first = first_code_cell(source_text)
    if first != COLAB_FIRST_CELL:
        found = "no code cell" if first is None else f"first line {first.splitlines()[0]!r}" if first else "an empty cell"
        raise BuildError(
            f"{filename}: the first code cell must be exactly course_utils.colab.COLAB_FIRST_CELL "
            f"(found {found}); run `python -m course_tools.build --sync-first-cell {filename}` "
            "to rewrite it"
        )


def sync_first_cell(source_path: Path) -> bool:
    """Rewrite the first code cell of a source file to ``COLAB_FIRST_CELL``; True if changed.

    The only time the build writes a source: one edit to the constant, then
    ``--sync-first-cell`` and a rebuild, updates every chapter.
    """
    source_path = Path(source_path)
    text = source_path.read_text()
    blocks = _split_cells(text)
    for block in blocks:
        if block.is_preamble or block.cell_type != "code":
            continue
        body = block.lines[1:]
        trailing = 0
        while trailing < len(body) and not body[len(body) - 1 - trailing].strip():
            trailing += 1
        block.lines = [block.lines[0], *(line + "\n" for line in COLAB_FIRST_CELL.split("\n"))]
        block.lines += ["\n"] * trailing
        break
    else:
        raise BuildError(f"{source_path}: has no '# %%' code cell to hold COLAB_FIRST_CELL")
    new_text = "".join(line for block in blocks for line in block.lines)
    if new_text != text:
        source_path.write_text(new_text)
        return True
    return False


# --------------------------------------------------------------------------------------
# Notebooks
# --------------------------------------------------------------------------------------


def _cell_id(cell, seen: set[str]) -> str:
    digest = hashlib.sha1(f"{cell.cell_type}\0{cell.source}".encode()).hexdigest()[:12]
    cell_id, n = digest, 1
    while cell_id in seen:
        n += 1
        cell_id = f"{digest}-{n}"
    seen.add(cell_id)
    return cell_id


def normalise_notebook(nb):
    """Fixed kernelspec and language_info, deterministic cell ids, no volatile metadata.

    Widget state and widget model ids are dropped from executed notebooks: they are random
    on every run and no static viewer can use them without the live kernel.
    """
    nb.nbformat, nb.nbformat_minor = 4, 5
    nb.metadata.pop("jupytext", None)
    nb.metadata.pop("widgets", None)
    nb.metadata["kernelspec"] = dict(KERNELSPEC)
    nb.metadata["language_info"] = dict(LANGUAGE_INFO)
    seen: set[str] = set()
    for cell in nb.cells:
        for key in _VOLATILE_CELL_METADATA:
            cell.metadata.pop(key, None)
        cell.id = _cell_id(cell, seen)
        for output in cell.get("outputs", ()):
            data = output.get("data", {})
            # A widget's random model id, useless without the (dropped) widget state; the
            # text/plain fallback next to it is what GitHub, Colab and nbval see.
            if WIDGET_VIEW in data and "text/plain" in data:
                del data[WIDGET_VIEW]
    return nb


def notebook_from_text(text: str):
    """A percent-format text as a plain, normalised, unexecuted notebook."""
    return normalise_notebook(jupytext.reads(text, fmt="py:percent"))


def _first_line(source: str) -> str:
    lines = [line for line in source.splitlines() if line.strip()]
    return lines[0][:80] if lines else "<empty>"


def cell_line_numbers(text: str) -> list[int] | None:
    """Line number in ``text`` where each of jupytext's cells starts (None if unsure)."""
    blocks = _split_cells(text)
    cells = jupytext.reads(text, fmt="py:percent").cells
    headers = [block.first_line for block in blocks if not block.is_preamble]
    if len(cells) == len(headers):
        return headers
    if len(cells) == len(headers) + 1:
        return [blocks[0].first_line + _yaml_header_end(blocks[0].lines), *headers]
    return None


# How long nbclient waits on a kernel channel before it looks at the socket again.
POLL_SLICE_S = 1.0


@contextlib.contextmanager
def waits_in_slices():
    """While this lasts, nbclient's waits for a kernel message look at the socket every
    POLL_SLICE_S instead of once for the whole timeout.

    Why: a notebook with an Output widget otherwise pauses, now and then, for the whole cell
    timeout (600 s) after a cell, its reply already sent.  nbclient mimics an Output widget by
    sending ``comm_msg`` updates on the shell channel while it waits for the cell's
    ``execute_reply`` on that same socket; jupyter_client's ``Session.send`` writes them through
    a blocking shadow of the asyncio socket, and that raw send can consume the edge-triggered
    wake-up of a reply arriving meanwhile.  zmq.asyncio never learns of the reply, and the wait
    ends only at its timeout, whose final ``poll(0)`` then finds it (reproduced under ipykernel
    7.4.0 and 6.29.5 alike: 7 stalls in 11 runs of one notebook, none in 60 with this).  Each
    slice ends with that ``poll(0)``, so a missed wake-up costs at most POLL_SLICE_S."""
    from queue import Empty
    from time import monotonic

    from jupyter_client.channels import AsyncZMQSocketChannel

    get_msg = AsyncZMQSocketChannel.get_msg

    async def get_msg_in_slices(self, timeout=None):
        deadline = None if timeout is None else monotonic() + timeout
        while True:
            left = POLL_SLICE_S if deadline is None else min(POLL_SLICE_S, max(0.0, deadline - monotonic()))
            try:
                return await get_msg(self, timeout=left)
            except Empty:
                if deadline is not None and monotonic() >= deadline:
                    raise

    AsyncZMQSocketChannel.get_msg = get_msg_in_slices
    try:
        yield
    finally:
        AsyncZMQSocketChannel.get_msg = get_msg


def execute_notebook(
    nb, cwd: Path, filename: str, timeout: int = CELL_TIMEOUT_S, cell_lines: list[int] | None = None
):
    """Run every cell in a fresh ``python3`` kernel started in ``cwd``; outputs are kept.

    Raises BuildError naming the cell (and, given ``cell_lines``, its line in the source)
    if a cell raises (unless it is tagged ``raises-exception``) or times out.
    """
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError, CellTimeoutError, DeadKernelError

    client = NotebookClient(
        nb,
        kernel_name=KERNEL_NAME,
        timeout=timeout,
        resources={"metadata": {"path": str(cwd)}},
        record_timing=False,
        # True although the state is dropped afterwards: nbclient 0.10/0.11 crash on Output
        # widgets with store_widget_state=False (KeyError in output_widget.py).
        store_widget_state=True,
        coalesce_streams=True,  # as nbval does: merged streams, carriage returns resolved
    )
    try:
        with waits_in_slices():
            client.execute()
    except CellExecutionError as error:
        index, cell = _failed_cell(nb)
        if cell is None:
            where = f"{filename}: a cell"
        else:
            line = f":{cell_lines[index]}" if cell_lines and index < len(cell_lines) else ""
            where = f"{filename}{line}: cell {index} (starting {_first_line(cell.source)!r})"
        raise BuildError(
            f"{where} raised {error.ename}: {error.evalue}\n"
            f"(tag the cell '{RAISES_TAG}' if the error is intended)"
        ) from None
    except CellTimeoutError:
        raise BuildError(f"{filename}: a cell ran longer than {timeout} s") from None
    except DeadKernelError as error:
        raise BuildError(f"{filename}: the kernel died while executing: {error}") from None
    return nb


# The kernel's own peak: VmHWM of its address space.  Not ru_maxrss where /proc has VmHWM: Linux
# carries ru_maxrss over exec from the parent, and the kernel's parent may be a test process
# that already holds a gigabyte.
PEAK_MEMORY_CELL = """import resource, sys
try:
    _status = open("/proc/self/status").read()
    print("PEAK_MB", int(_status.split("VmHWM:")[1].split()[0]) / 1024)
except (OSError, IndexError):
    print("PEAK_MB", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / (1024 * 1024 if sys.platform == "darwin" else 1024))"""


def measure_notebook(path: Path, timeout: int = CELL_TIMEOUT_S):
    """Execute a notebook (in its own directory) as a learner would; return (executed notebook,
    wall seconds, the kernel's peak resident memory in MB).  Errors are left in the outputs."""
    import time

    import nbformat
    from nbclient import NotebookClient

    path = Path(path)
    nb = nbformat.read(path, as_version=4)
    nb.cells.append(nbformat.v4.new_code_cell(PEAK_MEMORY_CELL))
    client = NotebookClient(nb, kernel_name=KERNEL_NAME, timeout=timeout, allow_errors=True,
                            store_widget_state=True, resources={"metadata": {"path": str(path.parent)}})
    start = time.perf_counter()
    with waits_in_slices():
        client.execute()
    seconds = time.perf_counter() - start
    text = "".join(o.get("text", "") for o in nb.cells[-1].get("outputs", []))
    peak = float(text.split()[1]) if text.startswith("PEAK_MB") else float("nan")
    nb.cells.pop()
    return nb, seconds, peak


def _failed_cell(nb):
    for index, cell in enumerate(nb.cells):
        if cell.cell_type != "code" or RAISES_TAG in cell.metadata.get("tags", ()):
            continue
        if any(output.get("output_type") == "error" for output in cell.get("outputs", ())):
            return index, cell
    return None, None


def _show(path: Path) -> str:
    """``path`` relative to the working directory when it is below it (shorter messages)."""
    path = Path(path)
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def _write_if_changed(path: Path, text: str) -> bool:
    if path.exists() and path.read_text() == text:
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return True


def _notebook_text(nb) -> str:
    nbformat.validate(nb)
    return nbformat.writes(nb).rstrip("\n") + "\n"


def find_sources(solutions_dir: Path = SOLUTIONS_DIR) -> list[Path]:
    """Every chapter source ``NN_name.py`` in ``solutions_dir``, in chapter order."""
    return sorted(Path(solutions_dir).glob(SOURCE_GLOB))


def build_chapter(
    source_path: Path,
    *,
    execute: bool = True,
    solutions_dir: Path | None = None,
    chapters_dir: Path = CHAPTERS_DIR,
    timeout: int = CELL_TIMEOUT_S,
    keep_outputs: bool = False,
) -> list[Path]:
    """Write the three generated files of one chapter; return the paths that changed.

    ``keep_outputs=True`` (with ``execute=False``) copies the outputs and execution counts of
    the solutions notebook already on disk onto the new one, cell by cell in order, for a
    source edit that cannot change any output (a renamed import, an explicit default); it
    refuses when the two notebooks' cells differ in number or type.

    ``solutions_dir`` (where the executed notebook goes) defaults to the source's own
    directory, which is also the working directory of the execution.  Nothing is written
    if the source is invalid or its execution fails.
    """
    source_path = Path(source_path)
    solutions_dir = Path(solutions_dir) if solutions_dir is not None else source_path.parent
    chapters_dir = Path(chapters_dir)
    name = _show(source_path)
    text = source_path.read_text()

    check_first_cell(text, name)
    learner_text = strip_solutions(text, name)
    learner_nb = notebook_from_text(learner_text)
    solution_nb = notebook_from_text(text)
    if execute:
        execute_notebook(
            solution_nb,
            cwd=source_path.parent,
            filename=name,
            timeout=timeout,
            cell_lines=cell_line_numbers(text),
        )
        normalise_notebook(solution_nb)

    stem = source_path.stem
    if keep_outputs and not execute:
        _copy_outputs(solutions_dir / f"{stem}.ipynb", solution_nb, name)
    outputs = {
        solutions_dir / f"{stem}.ipynb": _notebook_text(solution_nb),
        chapters_dir / f"{stem}.py": learner_text,
        chapters_dir / f"{stem}.ipynb": _notebook_text(learner_nb),
    }
    return [path for path, content in outputs.items() if _write_if_changed(path, content)]


def _copy_outputs(old_path: Path, new_nb, name: str) -> None:
    if not old_path.is_file():
        raise BuildError(f"{name}: --keep-outputs needs the executed notebook {_show(old_path)}")
    old_nb = nbformat.read(old_path, as_version=4)
    if [c.cell_type for c in old_nb.cells] != [c.cell_type for c in new_nb.cells]:
        raise BuildError(f"{name}: --keep-outputs needs the same cells as {_show(old_path)} "
                         "(cells were added, removed or changed type): execute the chapter instead")
    for old, new in zip(old_nb.cells, new_nb.cells):
        if new.cell_type == "code":
            new.outputs = old.outputs
            new.execution_count = old.execution_count
    new_nb.metadata = old_nb.metadata


# --------------------------------------------------------------------------------------
# Drift check
# --------------------------------------------------------------------------------------


def _cell_signature(cell) -> tuple[str, str, tuple[str, ...]]:
    return cell.cell_type, cell.source, tuple(cell.metadata.get("tags", ()))


def _describe_difference(expected, found) -> str:
    if expected[0] != found[0]:
        return f"cell type {found[0]!r}, expected {expected[0]!r}"
    if expected[2] != found[2]:
        return f"tags {list(found[2])}, expected {list(expected[2])}"
    exp_lines, found_lines = expected[1].splitlines(), found[1].splitlines()
    for i in range(max(len(exp_lines), len(found_lines))):
        e = exp_lines[i] if i < len(exp_lines) else "<no line>"
        f = found_lines[i] if i < len(found_lines) else "<no line>"
        if e != f:
            return f"source line {i + 1} is {f[:70]!r}, expected {e[:70]!r}"
    return "source differs"


def _compare_cells(path: Path, found_nb, expected_nb, source: Path) -> list[str]:
    expected = [_cell_signature(c) for c in expected_nb.cells]
    found = [_cell_signature(c) for c in found_nb.cells]
    for index, (e, f) in enumerate(zip(expected, found)):
        if e != f:
            return [
                f"{_show(path)}: cell {index} differs from what {_show(source)} produces: "
                f"{_describe_difference(e, f)}"
            ]
    if len(expected) != len(found):
        return [f"{_show(path)}: has {len(found)} cells, {_show(source)} produces {len(expected)}"]
    return []


def _read_notebook(path: Path, problems: list[str]):
    if not path.exists():
        problems.append(f"{_show(path)}: missing")
        return None
    try:
        return nbformat.read(str(path), as_version=4)
    except Exception as error:  # a corrupt file is a problem to report, not a crash
        problems.append(f"{_show(path)}: not a readable notebook ({error})")
        return None


def check_chapter(
    source_path: Path, *, solutions_dir: Path | None = None, chapters_dir: Path = CHAPTERS_DIR
) -> list[str]:
    """Problems with one chapter's generated files (empty list: up to date). No execution."""
    source_path = Path(source_path)
    solutions_dir = Path(solutions_dir) if solutions_dir is not None else source_path.parent
    chapters_dir = Path(chapters_dir)
    name, stem = _show(source_path), source_path.stem
    text = source_path.read_text()
    problems: list[str] = []
    try:
        check_first_cell(text, name)
        learner_text = strip_solutions(text, name)
    except BuildError as error:
        return [str(error)]
    expected_solution = notebook_from_text(text)
    expected_learner = notebook_from_text(learner_text)

    solution_path = solutions_dir / f"{stem}.ipynb"
    nb = _read_notebook(solution_path, problems)
    if nb is not None:
        problems += _compare_cells(solution_path, nb, expected_solution, source_path)
        unrun = [
            i
            for i, cell in enumerate(nb.cells)
            if cell.cell_type == "code" and cell.source.strip() and cell.get("execution_count") is None
        ]
        if unrun:
            problems.append(
                f"{_show(solution_path)}: not executed (code cell {unrun[0]} has no execution_count"
                f"{f' and {len(unrun) - 1} more' if len(unrun) > 1 else ''}); "
                f"run `python -m course_tools.build {name}`"
            )

    learner_path = chapters_dir / f"{stem}.ipynb"
    nb = _read_notebook(learner_path, problems)
    if nb is not None:
        problems += _compare_cells(learner_path, nb, expected_learner, source_path)
        with_outputs = [
            i for i, cell in enumerate(nb.cells) if cell.cell_type == "code" and cell.get("outputs")
        ]
        if with_outputs:
            problems.append(
                f"{_show(learner_path)}: cell {with_outputs[0]} has outputs; learner notebooks are "
                "committed without outputs"
            )

    learner_py = chapters_dir / f"{stem}.py"
    if not learner_py.exists():
        problems.append(f"{_show(learner_py)}: missing")
    else:
        found = jupytext.reads(learner_py.read_text(), fmt="py:percent")
        problems += _compare_cells(learner_py, found, expected_learner, source_path)
    return problems


def check(
    sources: list[Path] | None = None,
    *,
    solutions_dir: Path = SOLUTIONS_DIR,
    chapters_dir: Path = CHAPTERS_DIR,
) -> list[str]:
    """Problems with the generated files (empty list: everything is up to date).

    Compares cell types, sources and tags with what each source produces (never outputs
    or timestamps); requires solutions notebooks to be executed and learner notebooks to
    have no outputs; reports generated chapter files whose source is gone.  Fast: no kernel.
    """
    solutions_dir, chapters_dir = Path(solutions_dir), Path(chapters_dir)
    all_sources = sources is None
    if sources is None:
        sources = find_sources(solutions_dir)
        if not sources:
            return [f"{_show(solutions_dir)}: no chapter sources ({SOURCE_GLOB}) found"]
    problems: list[str] = []
    for source in sources:
        problems += check_chapter(source, solutions_dir=solutions_dir, chapters_dir=chapters_dir)
    if all_sources:
        stems = {source.stem for source in sources}
        generated = [
            *solutions_dir.glob(CHAPTER_GLOB + ".ipynb"),
            *chapters_dir.glob(CHAPTER_GLOB + ".ipynb"),
            *chapters_dir.glob(CHAPTER_GLOB + ".py"),
        ]
        for path in sorted(generated):
            if path.stem not in stems:
                problems.append(
                    f"{_show(path)}: generated file without a source {_show(solutions_dir / (path.stem + '.py'))}"
                )
    return problems


# --------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m course_tools.build",
        description="Generate solutions/*.ipynb and chapters/* from solutions/NN_name.py.",
    )
    parser.add_argument("sources", nargs="*", type=Path, help="chapter sources (default: all)")
    parser.add_argument("--check", action="store_true", help="report drift, write nothing, exit 1 on any")
    parser.add_argument("--no-execute", action="store_true", help="write notebooks without executing them")
    parser.add_argument("--keep-outputs", action="store_true",
                        help="execute nothing; keep the solutions notebook's committed outputs cell by cell")
    parser.add_argument(
        "--sync-first-cell",
        action="store_true",
        help="rewrite each source's first code cell to course_utils.colab.COLAB_FIRST_CELL, then build",
    )
    parser.add_argument("--solutions-dir", type=Path, default=SOLUTIONS_DIR, help=argparse.SUPPRESS)
    parser.add_argument("--chapters-dir", type=Path, default=CHAPTERS_DIR, help=argparse.SUPPRESS)
    parser.add_argument("--timeout", type=int, default=CELL_TIMEOUT_S, help="per-cell timeout in seconds")
    args = parser.parse_args(argv)

    for source in args.sources:
        if not source.is_file():
            parser.error(f"{source}: no such file")

    if args.check:
        problems = check(
            args.sources or None, solutions_dir=args.solutions_dir, chapters_dir=args.chapters_dir
        )
        for problem in problems:
            print(f"[DRIFT] {problem}")
        if problems:
            print(f"{len(problems)} problem(s); rebuild with `python -m course_tools.build`.")
            return 1
        print("build --check: every generated file is up to date.")
        return 0

    sources = args.sources or find_sources(args.solutions_dir)
    if not sources:
        print(f"no chapter sources ({SOURCE_GLOB}) in {args.solutions_dir}", file=sys.stderr)
        return 1
    failed = 0
    for source in sources:
        try:
            if args.sync_first_cell and sync_first_cell(source):
                print(f"{_show(source)}: first cell rewritten to COLAB_FIRST_CELL")
            # Default: executed notebook next to its source, learner files in --chapters-dir.
            solutions_dir = args.solutions_dir if not args.sources else source.parent
            print(f"building {_show(source)}{' (no execution)' if args.no_execute else ''} ...", flush=True)
            written = build_chapter(
                source,
                execute=not (args.no_execute or args.keep_outputs),
                keep_outputs=args.keep_outputs,
                solutions_dir=solutions_dir,
                chapters_dir=args.chapters_dir,
                timeout=args.timeout,
            )
        except BuildError as error:
            failed += 1
            print(f"[ERROR] {error}", file=sys.stderr)
            continue
        for path in written:
            print(f"  wrote {_show(path)}")
        if not written:
            print("  unchanged")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
