"""``python -m course_tools.doctor``: one line per check, non-zero exit on any FAIL."""

from __future__ import annotations

import subprocess
import sys

import pytest

from course_tools import doctor

REAL_DIST_VERSION = doctor._dist_version


def _versions(**overrides):
    """A stand-in for ``_dist_version`` with some distributions replaced (None: missing)."""

    def version(name):
        return overrides[name] if name in overrides else REAL_DIST_VERSION(name)

    return version


def test_this_machine_passes_and_prints_one_line_per_check(capsys):
    assert doctor.main([]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == len(doctor.CHECKS)
    assert lines[0] == "[OK] Python {}.{}.{}".format(*sys.version_info[:3])
    assert lines[1].startswith("[OK] torch ") and "CUDA" in lines[1]
    assert lines[2].startswith("[OK] ipywidgets 8.") and "with jupyterlab_widgets 3." in lines[2]
    assert any(line.startswith("[OK] jupytext ") for line in lines)
    assert any(line.startswith("[OK] course_utils ") for line in lines)
    assert lines[-1].startswith("[INFO] running ")


def test_module_entry_point_exit_code():
    result = subprocess.run([sys.executable, "-m", "course_tools.doctor"], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "[FAIL]" not in result.stdout


def test_old_python_fails_the_run(monkeypatch, capsys):
    monkeypatch.setattr(doctor, "_python_version", lambda: (3, 9, 18))
    assert doctor.check_python() == (doctor.FAIL, "Python 3.9.18 (the course needs Python >= 3.10)")
    assert doctor.main([]) == 1
    assert "[FAIL] Python 3.9.18" in capsys.readouterr().out


@pytest.mark.parametrize(
    "widgets, lab, words",
    [
        ("8.1.2", "1.1.7", "ipywidgets 8.x needs jupyterlab_widgets 3.x"),
        ("7.7.1", "1.1.7", "the course needs ipywidgets 8.x"),
        (None, "3.0.9", "ipywidgets not installed"),
        ("8.1.2", None, "jupyterlab_widgets not installed"),
    ],
)
def test_widget_versions_must_exist_and_match(monkeypatch, widgets, lab, words):
    monkeypatch.setattr(doctor, "_dist_version", _versions(ipywidgets=widgets, jupyterlab_widgets=lab))
    status, message = doctor.check_widgets()
    assert status == doctor.FAIL and words in message
    assert doctor.main([]) == 1


def test_matching_widget_versions_pass(monkeypatch):
    monkeypatch.setattr(doctor, "_dist_version", _versions(ipywidgets="8.0.0", jupyterlab_widgets="3.0.0"))
    assert doctor.check_widgets() == (doctor.OK, "ipywidgets 8.0.0 with jupyterlab_widgets 3.0.0")


def test_missing_jupytext_fails(monkeypatch):
    monkeypatch.setattr(doctor, "_dist_version", _versions(jupytext=None))
    assert doctor.check_jupytext()[0] == doctor.FAIL
    assert doctor.main([]) == 1


def test_unimportable_torch_fails(monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)  # makes `import torch` raise ImportError
    status, message = doctor.check_torch()
    assert status == doctor.FAIL and "torch is not importable" in message


def test_bad_device_request_fails(monkeypatch):
    monkeypatch.setenv("SUPERPOSITION_THREADS", "zero")
    assert doctor.check_device()[0] == doctor.FAIL


def test_a_crashing_check_is_reported_as_a_failure(monkeypatch, capsys):
    def broken():
        raise RuntimeError("boom")

    monkeypatch.setattr(doctor, "CHECKS", (doctor.check_python, broken))
    assert doctor.main([]) == 1
    assert "[FAIL] broken crashed: RuntimeError: boom" in capsys.readouterr().out


@pytest.mark.parametrize(
    "environ, modules, expected",
    [
        ({"COLAB_RELEASE_TAG": "release-colab_20240101"}, {}, "Colab"),
        ({}, {"google.colab": object()}, "Colab"),
        ({"BINDER_SERVICE_HOST": "10.0.0.1"}, {}, "Binder"),
        ({"BINDER_REQUEST": "v2/gh/x/y/main"}, {}, "Binder"),
        ({"REPO_DIR": "/home/jovyan"}, {}, "Binder"),
        ({"HOME": "/home/me"}, {}, "local"),
    ],
)
def test_environment_detection(monkeypatch, environ, modules, expected):
    monkeypatch.setattr(doctor, "_colab_importable", lambda: False)
    assert doctor.detect_environment(environ, modules) == expected


def test_on_colab_widgets_7_and_missing_jupytext_are_info_not_fail(monkeypatch):
    """The Colab install is --no-deps: Colab's ipywidgets 7.7 and no jupytext are fine there."""
    monkeypatch.setattr(doctor, "detect_environment", lambda *a, **k: "Colab")
    monkeypatch.setattr(doctor, "_dist_version", _versions(ipywidgets="7.7.1", jupyterlab_widgets=None, jupytext=None))
    assert doctor.check_widgets()[0] == doctor.INFO
    assert doctor.check_jupytext()[0] == doctor.INFO
    monkeypatch.setattr(doctor, "_dist_version", _versions(ipywidgets="7.6.0"))
    assert doctor.check_widgets()[0] == doctor.FAIL


# ------------------------------------------------------------------ the pins


def test_read_pins_takes_each_name_version_and_the_python():
    text = ('# comment\nNumPy==2.4.6 ; python_version == "3.11"\njupyter_core==5.9.1 ; python_version == "3.11"\n'
            "torch>=2.1\n")
    assert doctor.read_pins(text) == ({"numpy": "2.4.6", "jupyter-core": "5.9.1"}, "3.11")


def test_the_repositorys_pins_are_for_a_supported_python_and_cover_the_dev_tools():
    path = doctor._constraints_file()
    assert path is not None and path.name == "constraints.txt"
    pins, python = doctor.read_pins(path.read_text())
    assert python is not None and tuple(map(int, python.split("."))) >= doctor.MIN_PYTHON
    assert {"numpy", "ipython", "ipykernel", "nbclient", "jupyterlab", "pytest", "nbval", "pytest-xdist",
            "cloudpickle", "ipywidgets"} <= set(pins)
    assert not {name for name in pins if name == "torch" or name.startswith("nvidia")}, "torch is TORCH_SPEC's"


def test_pins_report_the_packages_that_differ_and_never_fail(monkeypatch, tmp_path):
    pins = tmp_path / "constraints.txt"
    python = "{}.{}".format(*sys.version_info[:2])
    pins.write_text(f'numpy==0.0.1 ; python_version == "{python}"\nnot-installed-pkg==1.0 ; python_version == "{python}"\n')
    monkeypatch.setattr(doctor, "_constraints_file", lambda: pins)
    status, message = doctor.check_pins()
    assert status == doctor.INFO
    assert message.startswith("1 installed package(s) differ") and "numpy " in message and "(tested: 0.0.1)" in message
    pins.write_text(f'numpy=={doctor._dist_version("numpy")} ; python_version == "{python}"\n')
    assert doctor.check_pins() == (doctor.OK, "every installed package is at the version the course was tested with")
    pins.write_text('numpy==0.0.1 ; python_version == "2.7"\n')
    status, message = doctor.check_pins()
    assert status == doctor.INFO and "for Python 2.7" in message
    monkeypatch.setattr(doctor, "_constraints_file", lambda: None)
    assert doctor.check_pins()[0] == doctor.INFO
