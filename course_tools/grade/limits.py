"""Process limits for the grader: memory watching, killing a process and everything it started.

Every untrusted process the grader starts (a learner's kernel, the sandbox that calls a
learner's functions) is started in a session of its own (``start_new_session=True``), so
its session id is its pid.  Whatever it spawns stays in that session unless it calls
``setsid`` itself, so "the process and everything it started" is "every process in the
session", and, under bubblewrap, every process in the PID namespace of the sandbox one of
them is in (a ``setsid`` does not leave that).  On Linux both the memory watch and the kill read ``/proc``; elsewhere they use
psutil when it is installed (and the memory limit is off when it is not).

The memory limit is on resident memory (RSS), watched every 0.1 s, not on address space:
``RLIMIT_AS`` would count the gigabytes of virtual memory that torch, OpenMP and glibc
reserve without touching, and would fail differently on every machine.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

POLL_S = 0.1
SESSION_LOG: Path | None = None  # where a worker lists the sessions it starts (the batch cleans up)
_PROC = Path("/proc")
_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def _proc_sessions() -> dict[int, tuple[int, int, int]]:
    """pid -> (session id, resident bytes, start time) for every process in /proc (Linux)."""
    table = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as handle:
                stat = handle.read()
        except OSError:  # the process ended while we looked
            continue
        # The command name (field 2) is in parentheses and may contain spaces.
        fields = stat[stat.rindex(b")") + 2:].split()
        # fields[0] is field 3 (state): the session is field 6, start time 22, rss (pages) 24.
        table[int(name)] = (int(fields[3]), int(fields[21]) * _PAGE, int(fields[19]))
    return table


_NAMESPACES: dict[tuple[int, int], str | None] = {}  # (pid, start time) -> its PID namespace


def _pid_namespace(pid: int, start: int) -> str | None:
    key = (pid, start)  # with the start time, a reused pid is a new key
    if key not in _NAMESPACES:
        if len(_NAMESPACES) > 100_000:
            _NAMESPACES.clear()
        try:
            _NAMESPACES[key] = os.readlink(f"/proc/{pid}/ns/pid")
        except OSError:
            _NAMESPACES[key] = None
    return _NAMESPACES[key]


def _members(table: dict[int, tuple[int, int, int]], sid: int) -> list[int]:
    """The pids in session ``sid``, and every process in a PID namespace of their own that
    one of them is in: a learner's process under bubblewrap that called ``setsid`` left the
    session, not its sandbox's namespace."""
    members = {pid for pid, (session, _, _) in table.items() if session == sid}
    own = _pid_namespace(os.getpid(), table.get(os.getpid(), (0, 0, 0))[2])
    spaces = {_pid_namespace(pid, table[pid][2]) for pid in members} - {own, None}
    if spaces:
        members |= {pid for pid, (_, _, start) in table.items() if _pid_namespace(pid, start) in spaces}
    return sorted(members)


def session_members(sid: int) -> list[int]:
    """The pids in session ``sid`` (and in its sandboxes' PID namespaces, see ``_members``)."""
    if _PROC.is_dir():
        return _members(_proc_sessions(), sid)
    try:
        import psutil
    except ImportError:
        return [sid]
    members = []
    for proc in psutil.process_iter():
        try:
            if os.getsid(proc.pid) == sid:
                members.append(proc.pid)
        except (OSError, psutil.Error):
            continue
    return members


def session_rss(sid: int) -> int | None:
    """Resident memory of every process in session ``sid`` and in its sandboxes' PID
    namespaces, in bytes (None: cannot measure)."""
    if _PROC.is_dir():
        table = _proc_sessions()
        return sum(table[pid][1] for pid in _members(table, sid))
    try:
        import psutil
    except ImportError:
        return None
    total = 0
    for pid in session_members(sid):
        try:
            total += psutil.Process(pid).memory_info().rss
        except psutil.Error:
            continue
    return total


def kill_session(sid: int) -> None:
    """SIGKILL every process in session ``sid`` (its leader included); never raises."""
    for _ in range(3):  # a second pass catches children forked while we were killing
        members = session_members(sid)
        if not members:
            return
        for pid in members:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        time.sleep(0.05)


def kill_and_reap(process, timeout: float = 5.0) -> None:
    """Kill the session led by ``process`` (a ``subprocess.Popen``) and wait for it to exit."""
    import subprocess

    kill_session(process.pid)
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        pass


def register_session(sid: int) -> None:
    """Note a session this process started in ``SESSION_LOG``, so that whoever kills this
    process can kill that session too."""
    if SESSION_LOG is not None:
        try:
            SESSION_LOG.parent.mkdir(parents=True, exist_ok=True)
            with open(SESSION_LOG, "a") as log:
                log.write(f"{sid}\n")
        except OSError:
            pass


def describe_exit(returncode: int | None) -> str:
    """``exit code 1`` or ``killed by signal 9 (SIGKILL)``."""
    if returncode is None:
        return "still running"
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = "unknown signal"
        return f"killed by signal {-returncode} ({name})"
    return f"exit code {returncode}"


class MemoryWatch:
    """Kill session ``sid`` when its resident memory exceeds ``limit_bytes``.

    A daemon thread polls every ``POLL_S`` seconds.  ``exceeded`` tells afterwards whether
    it fired; ``peak`` is the largest RSS seen (bytes).  ``stop()`` ends the thread.
    """

    def __init__(self, sid: int, limit_bytes: int | None):
        self.sid, self.limit = sid, limit_bytes
        self.exceeded = False
        self.peak = 0
        self.supported = session_rss(sid) is not None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"memory-watch-{sid}", daemon=True)
        if self.supported:
            self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(POLL_S):
            rss = session_rss(self.sid) or 0
            self.peak = max(self.peak, rss)
            if self.limit and rss > self.limit:
                self.exceeded = True
                kill_session(self.sid)
                return

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=1)
