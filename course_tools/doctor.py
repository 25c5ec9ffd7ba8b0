"""``python -m course_tools.doctor``: is this machine ready for the course?

One line per check, ``[OK]``, ``[INFO]`` or ``[FAIL]``; the exit code is 1 if any line is
``[FAIL]``.  Each check is a function returning ``(status, message)``; ``run_checks()``
collects them, so tests can force a failure by monkeypatching ``_python_version`` or
``_dist_version``.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import os
import sys

OK, INFO, FAIL = "OK", "INFO", "FAIL"
MIN_PYTHON = (3, 10)
MIN_TORCH = (2, 1)
# ipywidgets major version -> the jupyterlab_widgets major version that renders it
WIDGETS_LAB_MAJOR = {8: 3, 7: 1}


def _python_version() -> tuple[int, int, int]:
    return tuple(sys.version_info[:3])


def _dist_version(name: str) -> str | None:
    """Installed version of a distribution, or None if it is not installed."""
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def _major_minor(version: str) -> tuple[int, ...]:
    parts = []
    for piece in version.split("+")[0].split(".")[:2]:
        digits = "".join(ch for ch in piece if ch.isdigit())
        parts.append(int(digits) if digits else 0)
    return tuple(parts)


def check_python() -> tuple[str, str]:
    version = _python_version()
    text = ".".join(map(str, version))
    if version[:2] < MIN_PYTHON:
        return FAIL, f"Python {text} (the course needs Python >= {'.'.join(map(str, MIN_PYTHON))})"
    return OK, f"Python {text}"


def check_torch() -> tuple[str, str]:
    try:
        import torch
    except Exception as error:  # ImportError, or a broken install raising something else
        return FAIL, f"torch is not importable ({error}); run `make setup`"
    version = torch.__version__
    if _major_minor(version) < MIN_TORCH:
        return FAIL, f"torch {version} (the course needs torch >= {'.'.join(map(str, MIN_TORCH))})"
    if torch.cuda.is_available():
        cuda = f"CUDA {torch.version.cuda}: {torch.cuda.get_device_name(0)}"
    else:
        cuda = "CUDA: not available"
    return OK, f"torch {version} ({cuda})"


def check_widgets() -> tuple[str, str]:
    widgets, lab = _dist_version("ipywidgets"), _dist_version("jupyterlab_widgets")
    if detect_environment() == "Colab":
        # Colab renders widgets with its own front end (prepare() enables its custom widget
        # manager); the course installs with --no-deps there and works with ipywidgets 7.7+.
        if widgets is None:
            return FAIL, "ipywidgets not installed; run `pip install ipywidgets`"
        if _major_minor(widgets) < (7, 7):
            return FAIL, f"ipywidgets {widgets} (the course's explorers need ipywidgets >= 7.7)"
        return INFO, f"ipywidgets {widgets} with Colab's widget front end"
    if widgets is None or lab is None:
        missing = " and ".join(n for n, v in (("ipywidgets", widgets), ("jupyterlab_widgets", lab)) if v is None)
        return FAIL, f"{missing} not installed; run `make setup`"
    widgets_major, lab_major = _major_minor(widgets)[0], _major_minor(lab)[0]
    needed = WIDGETS_LAB_MAJOR.get(widgets_major)
    if widgets_major < 8 or needed != lab_major:
        want = f"{needed}.x" if needed is not None else "a matching version"
        return FAIL, (
            f"ipywidgets {widgets} with jupyterlab_widgets {lab}: widgets will not render "
            f"(the course needs ipywidgets 8.x with jupyterlab_widgets 3.x; "
            f"ipywidgets {widgets_major}.x needs jupyterlab_widgets {want})"
        )
    return OK, f"ipywidgets {widgets} with jupyterlab_widgets {lab}"


def check_jupytext() -> tuple[str, str]:
    version = _dist_version("jupytext")
    if version is None:
        if detect_environment() == "Colab":
            return INFO, "jupytext not installed (only the course build needs it, not a running chapter)"
        return FAIL, "jupytext not installed; run `make setup`"
    return OK, f"jupytext {version}"


def _constraints_file():
    """requirements/constraints.txt of the checkout the course is installed from, if any."""
    from pathlib import Path

    spec = importlib.util.find_spec("course_utils")
    if spec is None or spec.origin is None:
        return None
    path = Path(spec.origin).resolve().parents[1] / "requirements" / "constraints.txt"
    return path if path.is_file() else None


def read_pins(text: str) -> tuple[dict[str, str], str | None]:
    """``{name: version}`` and the Python version (``"3.11"``) of a constraints file's lines
    ``name==version ; python_version == "3.11"``."""
    import re

    pins, python = {}, None
    for line in text.splitlines():
        match = re.match(r'\s*([A-Za-z0-9_.\-]+)==([^\s;]+)\s*(?:;\s*python_version\s*==\s*"([0-9.]+)")?', line)
        if match:
            pins[re.sub(r"[-_.]+", "-", match.group(1)).lower()] = match.group(2)
            python = match.group(3) or python
    return pins, python


def check_pins() -> tuple[str, str]:
    """Do the installed packages match requirements/constraints.txt, the versions the course's
    tests last passed with?  Never a failure: other versions usually work, this says which differ."""
    path = _constraints_file()
    if path is None:
        return INFO, "no requirements/constraints.txt beside the course (installed outside a checkout)"
    pins, python = read_pins(path.read_text())
    here = ".".join(map(str, _python_version()[:2]))
    if python is not None and python != here:
        return INFO, f"the course's tested versions are for Python {python}; this is Python {here}, so pip chose versions"
    differ = []
    for name, version in sorted(pins.items()):
        installed = _dist_version(name)
        if installed is not None and installed != version:
            differ.append(f"{name} {installed} (tested: {version})")
    if differ:
        shown = ", ".join(differ[:5]) + (f" and {len(differ) - 5} more" if len(differ) > 5 else "")
        return INFO, (f"{len(differ)} installed package(s) differ from the versions the course was tested with: "
                      f"{shown}; `make setup` installs the tested ones")
    return OK, "every installed package is at the version the course was tested with"


def check_jupyterlab() -> tuple[str, str]:
    version = _dist_version("jupyterlab")
    if version is None:
        if detect_environment() == "Colab":
            return INFO, "jupyterlab not installed (not needed on Colab)"
        return FAIL, "jupyterlab not installed; run `make setup`"
    if _major_minor(version)[0] < 4:
        return FAIL, f"jupyterlab {version} (the course needs jupyterlab >= 4)"
    return OK, f"jupyterlab {version}"


def check_course_utils() -> tuple[str, str]:
    try:
        package = importlib.import_module("course_utils")
        importlib.import_module("course_utils.device")
    except Exception as error:
        return FAIL, f"course_utils is not importable ({type(error).__name__}: {error}); run `make setup`"
    where = os.path.dirname(package.__file__ or "")
    return OK, f"course_utils {getattr(package, '__version__', '?')} importable ({where})"


def check_device() -> tuple[str, str]:
    """The device and CPU thread count chapters will use (honours SUPERPOSITION_DEVICE/THREADS)."""
    try:
        from course_utils.device import default_threads, get_device

        device, threads = get_device(), default_threads()
    except Exception as error:  # a bad SUPERPOSITION_DEVICE / _THREADS value, or no torch
        return FAIL, f"device selection failed: {error}"
    return INFO, f"chapters will train on {device} with {threads} CPU thread(s)"


def _colab_importable() -> bool:
    try:
        return importlib.util.find_spec("google.colab") is not None
    except (ImportError, ValueError):  # no "google" package at all
        return False


def detect_environment(environ=None, modules=None) -> str:
    """``"Colab"``, ``"Binder"`` or ``"local"``."""
    environ = os.environ if environ is None else environ
    modules = sys.modules if modules is None else modules
    if "google.colab" in modules or "COLAB_RELEASE_TAG" in environ or _colab_importable():
        return "Colab"
    binder_keys = ("BINDER_SERVICE_HOST", "BINDER_REQUEST", "BINDER_LAUNCH_HOST", "REPO_DIR")
    if any(key in environ for key in binder_keys):
        return "Binder"
    return "local"


def check_environment() -> tuple[str, str]:
    where = detect_environment()
    text = {
        "Colab": "running in Google Colab",
        "Binder": "running on Binder",
        "local": "running locally (not Colab, not Binder)",
    }[where]
    return INFO, text


CHECKS = (
    check_python,
    check_torch,
    check_widgets,
    check_jupytext,
    check_jupyterlab,
    check_pins,
    check_course_utils,
    check_device,
    check_environment,
)


def run_checks() -> list[tuple[str, str]]:
    results = []
    for check in CHECKS:
        try:
            results.append(check())
        except Exception as error:  # a check must never stop the report
            results.append((FAIL, f"{check.__name__} crashed: {type(error).__name__}: {error}"))
    return results


def main(argv: list[str] | None = None) -> int:
    results = run_checks()
    for status, message in results:
        print(f"[{status}] {message}")
    failed = sum(status == FAIL for status, _ in results)
    if failed:
        print(f"{failed} check(s) failed.")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
