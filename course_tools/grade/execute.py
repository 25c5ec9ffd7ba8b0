"""Run a submitted notebook cell by cell and collect the exercise definitions it makes.

Policy (what "grades as far as possible" means here):

* Cells run in notebook order in one kernel, like "Run All", except that an error does
  not stop the run: the next cell runs anyway.
* After every cell the grader collects the definitions of the chapter's exercise names
  (``harvest.py``), so whatever happens later, the latest definition made so far is kept.
* A cell that runs past ``cell_timeout`` is interrupted (Jupyter's interrupt, SIGINT).  If
  the kernel answers, the run goes on with the next cell.  If it does not answer within
  a few seconds, or the kernel dies (``os._exit``, a signal, ``exit()``), or it goes over
  the memory limit, the kernel is killed and a fresh one is started; the cheap cells that
  ran before (the set-up cells, the exercise cells and the imports and definitions of the
  other cells) are run again in it, and of the failed cell only its imports and
  definitions (so a function whose own check crashed the kernel is still graded); then
  the run goes on with the next cell.  After ``MAX_RESTARTS`` restarts the rest of the notebook is not run.
* When the whole notebook has run for ``timeout`` seconds, the run stops; the cells not
  run are listed.
* ``exercises_only`` (the grader's ``--exercises-only``) runs only the set-up cells (every
  code cell before the first one that defines an exercise), the cells that define an
  exercise, and, of every other code cell, only its top-level ``import``, ``def`` and
  ``class`` statements: the learner's helpers and imports without the training runs.

Cells are numbered from 1 in notebook order, markdown cells included.
"""

from __future__ import annotations

import ast
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

from .kernel import Kernel, KernelError, Result

MAX_RESTARTS = 3

_MAGIC = re.compile(r"^\s*(%|!)")
_DEFINITION_NODES = (ast.Import, ast.ImportFrom, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)


def _parse(source: str) -> ast.Module | None:
    """The cell's AST with IPython magics and shell lines blanked out (None: a syntax error)."""
    lines = source.splitlines()
    if lines and lines[0].lstrip().startswith("%%"):
        return None  # a cell magic: its body need not be Python
    masked = "\n".join("" if _MAGIC.match(line) else line for line in lines)
    try:
        return ast.parse(masked)
    except (SyntaxError, ValueError):
        return None


def bound_names(source: str, imports: bool = True) -> set[str]:
    """Names a cell binds at top level (def, class, assignment, and import unless ``imports``
    is false), also inside a top-level if/try/with/for block.  On a syntax error, a regex
    finds ``def name``."""
    tree = _parse(source)
    if tree is None:
        return set(re.findall(r"^\s*(?:async\s+)?(?:def|class)\s+([A-Za-z_]\w*)", source, re.M))
    names: set[str] = set()

    def targets(node) -> None:
        if isinstance(node, ast.Name):
            names.add(node.id)
        elif isinstance(node, (ast.Tuple, ast.List)):
            for element in node.elts:
                targets(element)
        elif isinstance(node, ast.Starred):
            targets(node.value)

    def visit(body) -> None:
        for node in body:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                names.add(node.name)
            elif isinstance(node, ast.Assign):
                for target in node.targets:
                    targets(target)
            elif isinstance(node, (ast.AnnAssign, ast.AugAssign)):
                targets(node.target)
            elif isinstance(node, (ast.Import, ast.ImportFrom)) and imports:
                for alias in node.names:
                    names.add((alias.asname or alias.name).split(".")[0])
            elif isinstance(node, (ast.For, ast.AsyncFor)):
                targets(node.target)
            if isinstance(node, (ast.If, ast.For, ast.AsyncFor, ast.While, ast.With, ast.AsyncWith)):
                visit(node.body)
                visit(getattr(node, "orelse", []))
            elif isinstance(node, ast.Try):
                visit(node.body)
                for handler in node.handlers:
                    visit(handler.body)
                visit(node.orelse)
                visit(node.finalbody)

    visit(tree.body)
    return names


def _is_check_binding(node) -> bool:
    """``name = checks.check_x(...)``: a load-bearing exercise's hand-over (the chapter's later
    cells and the learner's later definitions use ``name``), so it is kept with the definitions."""
    return (isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name)
            and isinstance(node.value, ast.Call) and isinstance(node.value.func, ast.Attribute)
            and isinstance(node.value.func.value, ast.Name) and node.value.func.value.id == "checks"
            and node.value.func.attr.startswith("check_"))


def definitions_only(source: str) -> str:
    """The cell's top-level import, def and class statements (with their decorators), in
    order, and its ``name = checks.check_x(...)`` hand-overs bound to the course's reference
    without running the check (it may be what crashed the kernel, and it runs the learner's
    code); "" when it has none or does not parse."""
    tree = _parse(source)
    if tree is None:
        return ""
    lines = source.splitlines()
    parts = []
    for node in tree.body:
        if _is_check_binding(node):
            parts.append(f"{node.targets[0].id} = checks.{node.value.func.attr}.exercise.reference")
        elif isinstance(node, _DEFINITION_NODES):
            first = min([node.lineno] + [d.lineno for d in getattr(node, "decorator_list", [])])
            parts.append("\n".join(lines[first - 1: node.end_lineno]))
    return "\n".join(parts)


def first_line(source: str, width: int = 50) -> str:
    """The first non-blank, non-comment line of a cell, shortened: how notes name a cell."""
    for line in source.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            return line if len(line) <= width else line[: width - 3] + "..."
    return "(empty)"


@dataclass
class Step:
    """One code cell of the submission and what to run of it."""

    cell: int  # 1-based position in the notebook
    source: str
    mode: str  # "cell" (all of it), "definitions" (imports/defs/classes only), "skip"
    role: str  # "setup", "exercise", "other"
    defines: tuple[str, ...] = ()  # exercise names it binds

    @property
    def code(self) -> str:
        return self.source if self.mode == "cell" else definitions_only(self.source) if self.mode == "definitions" else ""

    @property
    def label(self) -> str:
        return f"cell {self.cell} (`{first_line(self.source)}`)"


def plan(cells, exercises: list[str], exercises_only: bool) -> list[Step]:
    """The steps for a notebook's cells (nbformat cells); markdown and raw cells are left out."""
    wanted = set(exercises)
    steps = []
    for index, cell in enumerate(cells, 1):
        if cell.get("cell_type") != "code":
            continue
        source = cell.get("source", "")
        source = "".join(source) if isinstance(source, list) else str(source)
        defines = tuple(sorted(bound_names(source) & wanted))
        steps.append(Step(index, source, "cell", "exercise" if defines else "other", defines))
    first_exercise = next((i for i, step in enumerate(steps) if step.defines), 0)  # none: no set-up either
    for step in steps[:first_exercise]:
        step.role = "setup"
    if exercises_only:
        for step in steps:
            if step.role == "other":
                step.mode = "definitions" if definitions_only(step.source) else "skip"
    return steps


@dataclass
class CellLog:
    cell: int
    status: str  # ok, error, timeout, hung, memory, died, skipped, not run
    seconds: float = 0.0
    error: str = ""
    mode: str = "cell"

    def as_dict(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if v not in ("", None)}


@dataclass
class Execution:
    """What running a submission produced."""

    definitions: dict[str, dict] = field(default_factory=dict)  # name -> harvest.describe dict
    defined_in: dict[str, int] = field(default_factory=dict)  # name -> cell after which it was seen
    cells: list[CellLog] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    printed: str = ""  # the notebook's stream output (bounded), to compare with the grades
    seconds: float = 0.0
    kernel_starts: int = 0
    peak_rss: int = 0
    fatal: str = ""  # set when no kernel could be started at all


@dataclass
class Limits:
    cell_timeout: float
    timeout: float
    memory_bytes: int | None


def _explain(step: Step, result: Result, limits: Limits, memory_mb: float | None) -> str:
    if result.status == "timeout":
        return (f"{step.label} timed out after {limits.cell_timeout:g} s; it was interrupted and the "
                "run went on with the next cell")
    if result.status == "hung":
        return (f"{step.label} timed out after {limits.cell_timeout:g} s and did not respond to an "
                "interrupt; the kernel was killed")
    if result.status == "memory":
        return f"{step.label} used more than {memory_mb:g} MB of memory; the kernel was killed"
    return f"the kernel died during {step.label} ({result.error})"


def run_notebook(steps: list[Step], exercises: list[str], limits: Limits, workdir: Path,
                 env: dict[str, str]) -> Execution:
    """Run ``steps`` in a kernel with the policy of the module docstring."""
    out = Execution()
    start = time.monotonic()
    kernel: Kernel | None = None
    replay: list[str] = []  # code to run again in a fresh kernel
    restarts = 0
    printed: list[str] = []
    memory_mb = limits.memory_bytes / 2**20 if limits.memory_bytes else None

    def collect(after_cell: int) -> Result | None:
        found = kernel.harvest(exercises)
        if isinstance(found, Result):
            return found
        for name, entry in found.items():
            out.definitions[name] = entry
            out.defined_in[name] = after_cell
        return None

    def lose_kernel() -> None:
        nonlocal kernel, restarts
        kernel.kill()
        out.peak_rss = max(out.peak_rss, kernel.peak_rss)
        kernel = None
        restarts += 1

    def not_run(position: int, why: str) -> None:
        rest = [s.cell for s in steps[position:] if s.mode != "skip"]
        if rest:
            out.notes.append(f"{why}; cells {_ranges(rest)} were not run; graded the definitions made before")
            out.cells.extend(CellLog(cell, "not run") for cell in rest)
        else:
            out.notes.append(why)

    def fresh_kernel(before: str) -> bool:
        """Start a kernel and re-run ``replay`` in it; False if it could not."""
        nonlocal kernel
        kernel = Kernel(workdir, limits.memory_bytes, env)
        out.kernel_starts += 1
        try:
            kernel.start()
        except KernelError as error:
            kernel = None
            out.fatal = f"the kernel could not be started: {error}"
            return False
        if replay:
            for code in replay:
                kernel.run(code, limits.cell_timeout)
                if not kernel.alive:
                    break
            out.notes.append(f"started a fresh kernel and re-ran the {len(replay)} set-up, exercise "
                             f"and definition cells {before}")
            if not kernel.alive:
                lose_kernel()
                return False
        return True

    crashed_with_definitions = None  # a cell whose definitions no kernel has re-run yet
    try:
        for position, step in enumerate(steps):
            if step.mode == "skip":
                out.cells.append(CellLog(step.cell, "skipped", mode="skip"))
                continue
            left = limits.timeout - (time.monotonic() - start)
            if left <= 0:
                not_run(position, f"the notebook time limit ({limits.timeout:g} s) was reached")
                break
            if kernel is None and restarts > MAX_RESTARTS:
                not_run(position, f"the kernel was lost {restarts} times")
                break
            if kernel is None:
                if not fresh_kernel(f"before cell {step.cell}, then went on"):
                    if out.fatal:
                        break
                    continue
                crashed_with_definitions = None
                if replay:
                    collect(step.cell - 1)
            code = step.code
            if not code.strip():
                out.cells.append(CellLog(step.cell, "ok", mode=step.mode))
                continue
            result = kernel.run(code, min(limits.cell_timeout, max(left, 1.0)))
            printed.append(result.stdout)
            out.cells.append(CellLog(step.cell, result.status, round(result.seconds, 2), result.error, step.mode))
            if result.status in ("timeout", "hung") and left < limits.cell_timeout:
                if result.kernel_lost:
                    lose_kernel()
                else:
                    collect(step.cell)
                not_run(position + 1, f"the notebook time limit ({limits.timeout:g} s) was reached "
                                      f"during {step.label}")
                break
            if result.status in ("timeout", "hung", "memory", "died"):
                out.notes.append(_explain(step, result, limits, memory_mb))
            if result.kernel_lost:
                lose_kernel()
                # The fresh kernel also re-runs this cell's imports and definitions (not the
                # rest of it), so that what it defined is graded even though it crashed.
                again = definitions_only(step.source)
                if again.strip():
                    replay.append(again)
                    crashed_with_definitions = step
                continue
            failed = collect(step.cell)
            if failed is not None:
                out.notes.append(f"could not collect the definitions after {step.label}: "
                                 f"{failed.status} {failed.error}".rstrip())
                if failed.kernel_lost or not kernel.alive:
                    lose_kernel()
                continue
            # What a fresh kernel re-runs: cheap cells whole (unless they timed out), else
            # only the imports and definitions.
            again = step.code if step.role in ("setup", "exercise") and result.status != "timeout" \
                else definitions_only(step.source)
            if again.strip():
                replay.append(again)
        # At the end, every definition once more, pickled with the notebook's final globals: a
        # function or class whose cell ran before the cells that bind the names it uses (cells
        # run out of order) works in the learner's kernel by now, and must in the grader too.
        if kernel is not None and kernel.alive and not out.fatal and out.definitions:
            final = kernel.harvest([name for name in exercises if name in out.definitions], again=True)
            if isinstance(final, dict):
                for name, entry in final.items():
                    if entry.get("kind") in ("function", "class", "callable"):
                        out.definitions[name] = entry
        # The last cells crashed the kernel after defining something: collect it.
        if (crashed_with_definitions is not None and kernel is None and not out.fatal
                and restarts <= MAX_RESTARTS and time.monotonic() - start < limits.timeout):
            if fresh_kernel(f"to collect what {crashed_with_definitions.label} defined"):
                collect(crashed_with_definitions.cell)
    finally:
        if kernel is not None:
            kernel.kill()
            out.peak_rss = max(out.peak_rss, kernel.peak_rss)
    out.seconds = time.monotonic() - start
    out.printed = "".join(printed)
    errors = [log for log in out.cells if log.status == "error"]
    if errors:
        shown = "; ".join(f"cell {log.cell}: {log.error}" for log in errors[:5])
        more = f" and {len(errors) - 5} more" if len(errors) > 5 else ""
        out.notes.append(f"{len(errors)} cell(s) raised an error ({shown}{more})")
    if any(step.mode != "cell" for step in steps):
        ran = sum(step.mode == "cell" for step in steps)
        defs = sum(step.mode == "definitions" for step in steps)
        out.notes.append(f"--exercises-only: ran {ran} of {len(steps)} code cells in full and only the "
                         f"imports and definitions of {defs} others")
    return out


def _ranges(cells: list[int]) -> str:
    """[3, 4, 5, 8] -> "3-5, 8"."""
    parts, run = [], []
    for cell in cells:
        if run and cell != run[-1] + 1:
            parts.append(run)
            run = []
        run.append(cell)
    if run:
        parts.append(run)
    return ", ".join(f"{r[0]}" if len(r) == 1 else f"{r[0]}-{r[-1]}" for r in parts)
