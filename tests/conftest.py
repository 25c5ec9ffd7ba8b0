"""Shared fixtures and the ``gpu`` marker's skip rule."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

FIXTURES = Path(__file__).parent / "fixtures"
DEMO_SOURCE = FIXTURES / "01_demo.py"


def pytest_collection_modifyitems(config, items):
    """Skip tests marked ``gpu`` when CUDA is not available."""
    gpu_items = [item for item in items if item.get_closest_marker("gpu")]
    if not gpu_items:
        return
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in gpu_items:
        item.add_marker(skip)


def make_course_tree(root: Path, source: Path = DEMO_SOURCE) -> tuple[Path, Path, Path]:
    """A ``solutions/`` + ``chapters/`` tree under ``root`` holding a copy of ``source``.

    The copy's first code cell is rewritten to the current ``COLAB_FIRST_CELL``, so the
    fixtures keep working when that constant changes.  Returns (source, solutions, chapters).
    """
    from course_tools.build import sync_first_cell

    solutions, chapters = root / "solutions", root / "chapters"
    solutions.mkdir(parents=True)
    chapters.mkdir()
    copy = solutions / source.name
    shutil.copy(source, copy)
    sync_first_cell(copy)
    return copy, solutions, chapters


@pytest.fixture(scope="session")
def built_demo(tmp_path_factory) -> Path:
    """A course tree with the demo chapter built and executed once per session (read-only)."""
    from course_tools.build import build_chapter

    root = tmp_path_factory.mktemp("built_demo")
    source, solutions, chapters = make_course_tree(root)
    build_chapter(source, solutions_dir=solutions, chapters_dir=chapters)
    return root


@pytest.fixture
def demo_tree(built_demo, tmp_path) -> tuple[Path, Path, Path]:
    """A private copy of ``built_demo`` that a test may modify: (source, solutions, chapters)."""
    root = tmp_path / "course"
    shutil.copytree(built_demo, root)
    return root / "solutions" / DEMO_SOURCE.name, root / "solutions", root / "chapters"


@pytest.fixture
def fresh_demo(tmp_path) -> tuple[Path, Path, Path]:
    """An unbuilt course tree holding the demo chapter source: (source, solutions, chapters)."""
    return make_course_tree(tmp_path / "course")


def _on_one_thread():
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def one_thread():
    """Train on one CPU thread, as the chapters do (their printed numbers assume it)."""
    yield from _on_one_thread()


@pytest.fixture(scope="module")
def single_thread():
    """``one_thread`` for a whole module, for module-scoped fixtures that train."""
    yield from _on_one_thread()
