"""Root conftest: how `make test` runs each chapter's models once, on two workers.

- After nbval runs the last cell of a solutions notebook, the reproduction tests read that
  notebook's results from its still-running kernel (tests/notebook_results.py).
- Under pytest-xdist (`-n 2 --dist loadgroup`), the scheduler below keeps together what must run
  in one process, in collection order: a solutions notebook's cells and its chapter's
  reproduction tests (`tests/test_chNN_reproduction.py`, after the notebook, since `make test`
  names the notebooks first); and each other test module, so its module-scoped fixtures are
  built once.  The learner notebooks of `tests/test_course_chapters.py` spread over both workers.
  (xdist's own loadgroup reads `xdist_group` marks by renaming node ids, which pytest 9.2's
  node ids no longer allow; this scheduler does not depend on it.)
"""

from __future__ import annotations

import copy
import re
import sys
from pathlib import Path

import pytest

# Modules whose tests share no expensive fixture and are each long: one work unit per test.
SPREAD_PER_TEST = ("tests/test_course_chapters.py",)


def _is_nbval_cell(item) -> bool:
    return type(item).__name__ == "IPyNbCell" and getattr(item.parent, "kernel", None) is not None


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_teardown(item, nextitem):
    """Before nbval stops the kernel of a notebook whose last cell just ran, hand the kernel to
    the reproduction tests that asked for its results."""
    if not _is_nbval_cell(item) or (nextitem is not None and nextitem.parent is item.parent):
        return
    results = sys.modules.get("notebook_results")
    path = Path(item.parent.path)
    if results is not None and path.parent.name == "solutions" and item.parent.kernel.is_alive():
        results.after_last_cell(path.stem, item.parent.kernel)


# nbval waits 5 s for each output message after a cell's reply; a cell that draws a figure on a
# machine whose two cores are busy with the other worker can take longer (seen at load 6).
NBVAL_OUTPUT_TIMEOUT_S = 60


# The longest work units, started first so that the two workers finish together (each learner
# notebook takes 50-140 s, the fresh Binder environment about 3 minutes; docs/benchmarks.md).
RUN_FIRST = ("tests/test_course_binder.py", "tests/test_course_chapters.py")


def pytest_collection_modifyitems(config, items):
    for item in items:
        if type(item).__name__ == "IPyNbCell":
            item.output_timeout = NBVAL_OUTPUT_TIMEOUT_S
    # a stable sort: everything else keeps its order (each notebook before its reproduction tests)
    items.sort(key=lambda item: item.nodeid.split("::", 1)[0] not in RUN_FIRST)


def work_unit(nodeid: str, root: Path) -> str:
    """The name of the group of tests that must run in one worker process, in order."""
    notebook = re.match(r"solutions/([^/:]+)(?:\.ipynb::|::ipynb::)", nodeid)  # pytest 9.2 shows the latter
    if notebook:
        return notebook.group(1)
    path = nodeid.split("::", 1)[0]
    chapter = re.fullmatch(r"tests/test_ch(\w+?)_reproduction\.py", path)
    if chapter:
        matches = sorted((root / "solutions").glob(f"{chapter.group(1)}_*.ipynb"))
        if matches:
            return matches[0].stem
    if "@" in nodeid.rsplit("::", 1)[-1]:  # an xdist_group mark, where pytest lets xdist add it
        return nodeid.rsplit("@", 1)[1]
    if path in SPREAD_PER_TEST:
        return nodeid
    return path


@pytest.hookimpl(optionalhook=True)  # known to pluggy only where xdist is loaded
def pytest_xdist_make_scheduler(config, log):
    """`--dist loadgroup`: xdist's scope scheduler with the work units of ``work_unit``."""
    if config.getvalue("dist") != "loadgroup":
        return None
    from xdist.scheduler import LoadScopeScheduling

    # Hand out the work units in collection order (RUN_FIRST first), not largest-count first:
    # xdist would otherwise start with the modules of many quick tests and leave the long
    # single-test units (the learner notebooks) for the end.
    config.option.loadscopereorder = False

    root = Path(config.rootpath)

    class ChapterScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return work_unit(nodeid, root)

    return ChapterScheduling(config, log)


# Cells whose numbers depend on floating-point rounding, so on the CPU (a TopK SAE's training and
# a hundred sequential edits amplify the last bit of a sum into a different latent or edit;
# docs/notebooks.md): tag `nbval-approx-TOL` compares their text exactly but every number in it
# within TOL (absolute).  The stored and the fresh output must have the same words, the same
# count of numbers, and each pair of numbers within TOL, or the comparison is nbval's own.
APPROX_TAG = re.compile(r"nbval-approx-(\d+(?:\.\d+)?)$")
NUMBER = re.compile(r"[-+]?\d+(?:\.\d+)?(?:e[-+]?\d+)?")


def approx_tolerance(cell) -> float | None:
    """The tolerance of a cell tagged `nbval-approx-TOL`, else None."""
    for tag in cell.get("metadata", {}).get("tags", ()):
        match = APPROX_TAG.match(tag)
        if match:
            return float(match.group(1))
    return None


def approx_equal(reference: str, fresh: str, tolerance: float) -> bool:
    """Whether ``fresh`` is ``reference`` with each number moved by at most ``tolerance`` (the
    padding around a number may change with its width or sign: whitespace is not compared)."""
    def words(text: str) -> list[str]:
        return [re.sub(r"\s+", "", part) for part in NUMBER.split(text)]

    if words(reference) != words(fresh):
        return False
    pairs = zip(NUMBER.findall(reference), NUMBER.findall(fresh))
    return all(abs(float(a) - float(b)) <= tolerance + 1e-12 for a, b in pairs)


def _stream_texts(outputs) -> dict[str, str]:
    texts: dict[str, str] = {}
    for output in outputs:
        if output.get("output_type") == "stream":
            texts[output["name"]] = texts.get(output["name"], "") + output["text"]
    return texts


def _approximated(test: list, ref: list, tolerance: float, sanitize) -> list:
    """``test`` (nbval's fresh outputs) with each stream that is ``ref``'s within ``tolerance``
    replaced by ``ref``'s text (one output per stream name, as nbval merges them anyway)."""
    stored, fresh = _stream_texts(ref), _stream_texts(test)
    close = {name for name, text in fresh.items()
             if name in stored and approx_equal(sanitize(stored[name]), sanitize(text), tolerance)}
    result, seen = [], set()
    for output in test:
        name = output.get("name") if output.get("output_type") == "stream" else None
        if name in close:
            if name in seen:
                continue
            seen.add(name)
            output = copy.deepcopy(output)
            output["text"] = stored[name]
        result.append(output)
    return result


def _install_approx_comparison():
    try:
        from nbval.plugin import IPyNbCell
    except ImportError:  # nbval not installed: nothing to compare
        return
    if getattr(IPyNbCell.compare_outputs, "approx", False):
        return
    original = IPyNbCell.compare_outputs

    def compare_outputs(self, test, ref, skip_compare=None):
        tolerance = approx_tolerance(self.cell)
        if tolerance is not None:
            test = _approximated(test, ref, tolerance, self.sanitize)
        return original(self, test, ref, skip_compare)

    compare_outputs.approx = True
    IPyNbCell.compare_outputs = compare_outputs


_install_approx_comparison()
