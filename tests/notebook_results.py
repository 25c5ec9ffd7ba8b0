"""The solutions notebooks' own results, for the reproduction tests.

Each chapter's models are trained once per ``make test``: by nbval, which runs every cell of
``solutions/NN_*.ipynb`` and compares its printed output with the committed one. A
reproduction test does not train them again. It names the values it needs as expressions in
the notebook's namespace::

    RESULTS = NotebookResults("01_toy_models", pentagon_W="pentagon.W.detach()", ...)

and asserts the paper's claims on ``RESULTS.get()["pentagon_W"]``. When nbval runs the
notebook in the same pytest process (``make test`` puts each notebook and its reproduction
tests in one xdist group, the notebook first), the root ``conftest.py`` evaluates the
expressions in that kernel after the notebook's last cell, and ``get()`` returns them. Run on
their own (``pytest tests/test_ch01_reproduction.py``), the tests execute the notebook once
themselves, with nbclient, without comparing outputs.
"""

from __future__ import annotations

import os
import tempfile
import textwrap
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SOLUTIONS = ROOT / "solutions"
KERNEL_TIMEOUT_S = 600

_REGISTRY: dict[str, list["NotebookResults"]] = {}


class NotebookResults:
    """Values computed by ``solutions/<notebook>.ipynb``, named by expressions in its namespace."""

    def __init__(self, notebook: str, **expressions: str):
        self.notebook = notebook
        self.expressions = expressions
        self._values: dict | None = None
        self._error: str | None = None
        _REGISTRY.setdefault(notebook, []).append(self)

    # ---------------------------------------------------------------- the kernel side

    def extraction_code(self, out: Path) -> str:
        """Code run in the notebook's kernel after its last cell: saves the values to ``out``
        (or the error that evaluating them raised, under ``"__error__"``)."""
        return textwrap.dedent(f"""\
            def __notebook_results():
                import torch
                namespace = get_ipython().user_ns
                try:
                    values = {{name: eval(expression, namespace) for name, expression in {self.expressions!r}.items()}}
                except Exception as error:
                    values = {{"__error__": f"{{type(error).__name__}}: {{error}}"}}
                torch.save(values, {str(out)!r})
            __notebook_results()
            del __notebook_results""")

    def _load(self, out: Path, how: str) -> None:
        import torch

        values = torch.load(out, weights_only=False) if out.stat().st_size else {"__error__": "no results written"}
        out.unlink()
        if "__error__" in values:
            self._error = (f"reading the results of solutions/{self.notebook}.ipynb {how} failed: "
                           f"{values['__error__']}")
        else:
            self._values = values

    def get(self) -> dict:
        """The values: from nbval's run when it happened in this process, else run the notebook."""
        if self._values is None and self._error is None:
            _execute_notebook(self.notebook)
        if self._error is not None:
            raise AssertionError(self._error)
        return self._values


def _output_file(notebook: str) -> Path:
    handle, name = tempfile.mkstemp(prefix=f"{notebook}-", suffix=".pt")
    os.close(handle)
    return Path(name)


def _extract_from(kernel, results: NotebookResults) -> None:
    """Evaluate one set of expressions in nbval's kernel (which has just run the notebook)."""
    out = _output_file(results.notebook)
    msg_id = kernel.execute_cell_input(results.extraction_code(out), allow_stdin=False)
    kernel.await_reply(msg_id, timeout=KERNEL_TIMEOUT_S)
    kernel.await_idle(msg_id, KERNEL_TIMEOUT_S)
    results._load(out, "after nbval ran it")


def _execute_notebook(notebook: str) -> None:
    """Run the notebook once with nbclient, one extraction cell per NotebookResults that names it
    (no output compared: that is nbval's job in `make test`)."""
    import nbformat
    from nbclient import NotebookClient

    from course_tools.build import KERNEL_NAME, waits_in_slices

    path = SOLUTIONS / f"{notebook}.ipynb"
    warnings.warn(f"executing solutions/{notebook}.ipynb for its results (nbval did not run it in "
                  "this process); `make test` runs it once, under nbval", stacklevel=3)
    nb = nbformat.read(path, as_version=4)
    pending = [(results, _output_file(notebook)) for results in _REGISTRY[notebook]]
    nb.cells.extend(nbformat.v4.new_code_cell(results.extraction_code(out)) for results, out in pending)
    with waits_in_slices():
        NotebookClient(nb, kernel_name=KERNEL_NAME, timeout=KERNEL_TIMEOUT_S,
                       resources={"metadata": {"path": str(path.parent)}}).execute()
    for results, out in pending:
        results._load(out, "after running it")


def after_last_cell(notebook: str, kernel) -> None:
    """Called by the root conftest when nbval has run the last cell of ``solutions/<notebook>``."""
    for results in _REGISTRY.get(notebook, ()):
        _extract_from(kernel, results)
