"""OS-level isolation of the processes that run learner code, with bubblewrap (``bwrap``).

Every process the grader starts to run a learner's code (the notebook's kernel, the
sandbox that calls the learner's functions) is started as ``bwrap <options> -- python ...``
when isolation is on.  What a learner's code then sees and can do:

* **file system**: read-only, and only what Python and the course need: the system's
  ``/usr``, ``/etc``, ``/lib*``, ``/bin``, ``/sbin``, ``/sys``, the interpreter's prefixes and
  every directory on the grader's ``sys.path`` (the installed course package among them).
  Nothing else of the machine exists in it: not the instructor's home, not the submissions,
  not the grader's temporary directory with the other jobs, not the output files, not the
  configuration with the hidden seeds.  Those of them that lie *inside* a shown directory
  (say, submissions kept in the course's checkout) are covered: a directory by an empty
  tmpfs, a file by ``/dev/null``;
* **writable**: only its own scratch directory (its working directory and HOME) and a
  private ``/tmp``; the kernel's also holds its connection file and sockets;
* **no network** (a namespace of its own; the kernel talks to the grader over Unix sockets
  in its scratch directory, not TCP), its own PID, IPC, UTS and cgroup namespaces, so it
  cannot see or signal the grader's processes or other submissions';
* **lifetime**: ``--die-with-parent``: it is killed when the grader's worker ends; and when
  the grader kills it, the PID namespace goes with it, so nothing it started survives.

Not enforced (docs/grading.md says so): CPU time beyond the grader's time limits, and disk
space in the scratch directory and ``/tmp`` (RAM-backed, under the memory watch only as far
as ``/proc`` shows it).  A process that left the kernel's session with ``setsid`` stays in
the sandbox's PID namespace, where ``limits`` counts its memory and kills it.

``ACTIVE`` is set once per worker process (``activate``), from the job the batch wrote;
:func:`wrap` is what ``Kernel.start`` and ``Sandbox.launch`` call.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

SYSTEM = ("/usr", "/etc", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/sys")
DEVICES = ("/dev/nvidia*", "/dev/dri")  # a GPU, when there is one


@dataclass
class Isolation:
    """How learner processes are isolated: ``hide`` lists paths a learner must never see
    (covered where they fall inside a shown directory); ``show`` extra read-only paths."""

    bwrap: str
    hide: list[str] = field(default_factory=list)
    show: list[str] = field(default_factory=list)

    def to_json(self) -> dict:
        return {"bwrap": self.bwrap, "hide": self.hide, "show": self.show}

    @classmethod
    def from_json(cls, data: dict | None) -> "Isolation | None":
        if not data:
            return None
        return cls(str(data["bwrap"]), [str(p) for p in data.get("hide", [])], [str(p) for p in data.get("show", [])])

    def command(self, argv: list[str], writable: list[Path], cwd: Path) -> list[str]:
        """``argv`` under bwrap, with ``writable`` (created beforehand) as the only
        writable directories besides a private /tmp, working directory ``cwd``."""
        shown = _shown(self.show)
        links = [path for path in SYSTEM if os.path.islink(path)]  # /bin -> usr/bin (merged /usr)
        # No --new-session: the kernel stays in bwrap's session, where the memory watch and
        # the kill look (stdin is never a terminal, so TIOCSTI has nothing to inject into).
        options = [self.bwrap, "--unshare-all", "--die-with-parent",
                   "--dev", "/dev", "--proc", "/proc", "--tmpfs", "/tmp"]
        for path in shown:
            options += ["--ro-bind", path, path]
        for path in links:
            options += ["--symlink", os.readlink(path), path]
        for pattern in DEVICES:
            for path in sorted(glob.glob(pattern)):
                options += ["--dev-bind", path, path]
        for path in self.hide:  # after the binds that would show them, before the scratch
            real = os.path.realpath(path)
            if not any(_inside(real, s) for s in shown):
                continue
            if os.path.isdir(real):
                if any(_inside(s, real) for s in shown):
                    continue  # it holds Python or the course (a silly --out): its files are not hidden
                options += ["--tmpfs", real]
            elif os.path.exists(real):
                options += ["--ro-bind", "/dev/null", real]
        for path in writable:
            real = os.path.realpath(path)
            options += ["--bind", real, real]
        options += ["--chdir", os.path.realpath(cwd), "--"]
        return options + list(argv)


def _inside(path: str, parent: str) -> bool:
    return path == parent or path.startswith(parent.rstrip("/") + "/")


def _shown(extra: list[str]) -> list[str]:
    """The read-only directories: the system, Python's prefixes and sys.path, ``extra``;
    existing, real paths, without one that is inside another."""
    paths = [*SYSTEM, sys.prefix, sys.base_prefix, sys.exec_prefix, os.path.dirname(sys.executable),
             *(sysconfig.get_paths().values()), *extra]
    packages = [os.path.dirname(os.path.dirname(os.path.abspath(__file__))),  # course_tools
                os.path.dirname(os.path.abspath(_course_utils_file()))]
    # Not the directory the grader runs from (python -m puts it first), nor a temporary one.
    skip = {os.path.realpath(p) for p in (os.getcwd(), tempfile.gettempdir(), "/tmp", "/")}
    for entry in sys.path:
        if not entry or not os.path.isabs(entry) or os.path.realpath(entry) in skip:
            continue
        # A checkout on sys.path (PYTHONPATH, a .pth file) shows its packages, not the rest of
        # it, where an instructor may keep submissions and grades.
        if any(os.path.realpath(os.path.dirname(p)) == os.path.realpath(entry) for p in packages):
            continue
        paths.append(entry)
    paths += packages
    real = sorted({os.path.realpath(p) for p in paths if p and os.path.exists(p)})
    # /tmp is the sandbox's own; a sys.path entry under it (pytest's tmp dirs) is shown on top.
    kept: list[str] = []
    for path in real:
        if path == "/" or any(_inside(path, k) for k in kept):
            continue
        kept.append(path)
    return kept


def _course_utils_file() -> str:
    import course_utils

    return course_utils.__file__


ACTIVE: Isolation | None = None


def activate(isolation: Isolation | None) -> None:
    global ACTIVE
    ACTIVE = isolation


def wrap(argv: list[str], writable: list[Path], cwd: Path) -> list[str]:
    """``argv`` as the active isolation runs it (unchanged when isolation is off)."""
    if ACTIVE is None:
        return list(argv)
    return ACTIVE.command(argv, writable, cwd)


def exit_status(returncode: int | None) -> int | None:
    """The learner process's own status from bwrap's: bwrap exits with 128 + N when what it
    ran was killed by signal N (Popen's -N when bwrap itself was killed)."""
    if ACTIVE is not None and returncode is not None and 128 < returncode < 160:
        return -(returncode - 128)
    return returncode


def find_bwrap() -> tuple[str | None, str]:
    """(path to a working bwrap, "") or (None, why not)."""
    path = os.environ.get("SUPERPOSITION_BWRAP") or shutil.which("bwrap")
    if not path:
        return None, "bubblewrap (the `bwrap` command) is not installed"
    try:
        run = subprocess.run([path, "--unshare-all", "--die-with-parent", "--ro-bind", "/", "/", "--dev", "/dev",
                              "--proc", "/proc", "--", sys.executable, "-c", "pass"],
                             capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as error:
        return None, f"`{path}` could not be run ({error})"
    if run.returncode != 0:
        why = (run.stderr.strip().splitlines() or [f"exit code {run.returncode}"])[-1]
        return None, f"`{path}` cannot make a sandbox on this machine ({why})"
    return path, ""


def version(path: str) -> str:
    try:
        return subprocess.run([path, "--version"], capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        return "bubblewrap"
