"""The first cell of every chapter, and the one library function it calls.

Every chapter source (``solutions/NN_name.py``) starts its code with ``COLAB_FIRST_CELL``,
exactly; ``python -m course_tools.build --check`` enforces it.  The cell is self-contained
because on Colab the course package is not installed yet when it runs: it installs the
package from GitHub and then calls :func:`prepare`, where all the real setup lives, so that
changing the setup is one library edit rather than one edit per chapter.  Elsewhere the cell
only calls :func:`prepare`.

On Colab the install is ``pip install --no-deps``: the package alone, none of its
dependencies.  Colab already has everything the chapters import at run time, the learner's
requirements in ``pyproject.toml`` (torch, numpy, matplotlib, ipywidgets, tqdm,
safetensors; IPython comes with ipywidgets); the ``tools`` extra (jupyterlab,
jupyterlab_widgets, jupytext, nbclient, cloudpickle, ...) serves a local JupyterLab and the
course's tools (``course_tools``), never a running chapter.  Installing the requirements
would upgrade Colab's ipywidgets 7 / notebook stack to versions its front end does not
render, and could replace its CUDA torch.  ``--no-deps`` leaves every Colab package as it is; :func:`prepare` then turns on Colab's custom widget
manager, and ``course_utils.widgets`` uses only widgets that ipywidgets 7.7 has too
(FloatLogSlider, FloatSlider, Output, HBox, VBox).

To change the cell itself: edit ``first_cell`` below, then run
``python -m course_tools.build --sync-first-cell`` (rewrites each source's first code cell)
and rebuild.
"""

from __future__ import annotations

import os
import sys

REPO_URL = "https://github.com/superposition-course/superposition"
REF = "main"


def first_cell(repo_url: str = REPO_URL, ref: str = REF) -> str:
    """The source of the setup cell that opens every chapter (no trailing newline)."""
    return "\n".join(
        [
            "# Setup: on Colab this installs the course package alone (--no-deps: Colab's own torch,",
            "# ipywidgets and matplotlib are kept); elsewhere it only configures torch's CPU threads.",
            "# `device` is the torch device the chapter trains on: the GPU when there is one.",
            "import sys, subprocess, importlib.util",
            'if "google.colab" in sys.modules and importlib.util.find_spec("course_utils") is None:',
            "    subprocess.run([sys.executable, \"-m\", \"pip\", \"install\", \"-q\", \"--no-deps\",",
            f'                    "git+{repo_url}@{ref}"], check=True)',
            "    importlib.invalidate_caches()",
            "from course_utils.colab import prepare",
            "device = prepare()",
        ]
    )


COLAB_FIRST_CELL = first_cell()


def in_colab() -> bool:
    """True inside a Google Colab runtime."""
    return "google.colab" in sys.modules or "COLAB_RELEASE_TAG" in os.environ


def prepare():
    """Set up the notebook the chapter runs in; return the torch device to train on.

    On Colab: turn on the custom widget manager (so ipywidgets 8 explorers render) and
    inline matplotlib.  Everywhere: torch's CPU thread count (``device.configure_threads``).
    Prints nothing, so the cell's output is the same on every machine.
    """
    from .device import configure_threads, get_device

    if in_colab():
        _prepare_colab()
    configure_threads()
    return get_device()


def _prepare_colab() -> None:
    try:
        from google.colab import output  # type: ignore[import-not-found]

        output.enable_custom_widget_manager()
    except (ImportError, AttributeError):  # an old Colab, or COLAB_RELEASE_TAG set elsewhere
        pass
    try:
        from IPython import get_ipython

        shell = get_ipython()
        if shell is not None:
            shell.run_line_magic("matplotlib", "inline")
    except ImportError:
        pass
