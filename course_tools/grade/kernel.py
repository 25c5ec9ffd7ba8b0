"""One learner kernel: start it, run code in it under a time limit, collect definitions, kill it.

The grader starts ipykernel itself, on its own interpreter (``sys.executable -m
ipykernel_launcher``), in a session of its own, with the working directory and HOME set to
a fresh temporary directory, so that nothing the notebook does with relative paths or
``~`` touches the instructor's files.  :class:`Kernel` talks to it with a blocking
jupyter_client and never waits on it without a deadline: each request is polled every
0.1 s for its reply, for the kernel's death and for the memory watch.
"""

from __future__ import annotations

import ast
import base64
import json
import os
import queue
import secrets
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from . import harvest as _harvest
from . import isolation
from .limits import MemoryWatch, describe_exit, kill_and_reap, register_session

STARTUP_TIMEOUT_S = 60.0
INTERRUPT_GRACE_S = 3.0  # how long a timed-out cell gets to answer an interrupt
EXIT_GRACE_S = 2.0  # how long a kernel that called exit() gets to end by itself
HARVEST_TIMEOUT_S = 30.0
MAX_STREAM_CHARS = 200_000  # per request: enough to find the printed check lines


class KernelError(Exception):
    """The kernel could not be started."""


@dataclass
class Result:
    """What happened to one execute request.

    ``status``: "ok", "error" (the code raised; ``error`` says what), "timeout" (the kernel
    answered the interrupt), "hung" (timed out and ignored the interrupt: killed),
    "memory" (killed above the memory limit) or "died" (the process ended by itself).
    """

    status: str
    seconds: float
    error: str = ""
    stdout: str = ""
    reply: dict | None = None

    @property
    def kernel_lost(self) -> bool:
        return self.status in ("hung", "memory", "died")


def _asked_to_exit(reply: dict | None) -> bool:
    """Whether an execute reply carries IPython's ``ask_exit`` payload (``exit()``,
    ``quit()``) without ``keep_kernel``."""
    for payload in (reply or {}).get("payload", None) or []:
        if isinstance(payload, dict) and payload.get("source") == "ask_exit" and not payload.get("keepkernel"):
            return True
    return False


def _error_text(ename: str, evalue: str) -> str:
    evalue = (evalue or "").strip().splitlines()
    first = evalue[0] if evalue else ""
    first = first if len(first) <= 200 else first[:197] + "..."
    return f"{ename}: {first}" if first else ename


class _Text:
    """Stream text, truncated at MAX_STREAM_CHARS (a cell may print forever)."""

    def __init__(self):
        self.parts: list[str] = []
        self.size = 0

    def append(self, text: str) -> None:
        if self.size < MAX_STREAM_CHARS:
            text = text[: MAX_STREAM_CHARS - self.size]
            self.parts.append(text)
            self.size += len(text)

    @property
    def text(self) -> str:
        return "".join(self.parts)


class Kernel:
    """An ipykernel process for one submission (see the module docstring)."""

    def __init__(self, workdir: Path, memory_limit_bytes: int | None, env: dict[str, str]):
        self.workdir = Path(workdir)
        self.memory_limit = memory_limit_bytes
        self.env = env
        self.process: subprocess.Popen | None = None
        self.client = None
        self.watch: MemoryWatch | None = None
        self.peak_rss = 0

    # ------------------------------------------------------------------ life cycle

    def start(self, timeout: float = STARTUP_TIMEOUT_S) -> None:
        from jupyter_client import BlockingKernelClient
        from jupyter_client.connect import write_connection_file

        runtime = self.workdir.parent / f"{self.workdir.name}-runtime"
        runtime.mkdir(parents=True, exist_ok=True)
        name = f"kernel-{secrets.token_hex(4)}"
        if isolation.ACTIVE is not None:  # no network in the sandbox: Unix sockets in runtime/
            connection_file, _ = write_connection_file(
                str(runtime / f"{name}.json"), transport="ipc", ip=str(runtime / name),
                key=secrets.token_hex(16).encode())
        else:
            connection_file, _ = write_connection_file(
                str(runtime / f"{name}.json"), ip="127.0.0.1", key=secrets.token_hex(16).encode())
        argv = [sys.executable, "-m", "ipykernel_launcher", "-f", connection_file, "--HistoryManager.enabled=False"]
        self.process = subprocess.Popen(
            isolation.wrap(argv, [self.workdir, runtime], self.workdir),
            cwd=self.workdir, env=self.env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL, start_new_session=True)
        register_session(self.process.pid)
        self.watch = MemoryWatch(self.process.pid, self.memory_limit)
        client = BlockingKernelClient(connection_file=connection_file)
        client.load_connection_file()
        client.start_channels()
        self.client = client
        deadline = time.monotonic() + timeout
        while True:
            if self.process.poll() is not None:
                self.kill()
                raise KernelError(f"the kernel exited while starting ({describe_exit(self.returncode)})")
            try:
                client.wait_for_ready(timeout=1)
                self._warm(deadline)
                return
            except RuntimeError:
                if time.monotonic() > deadline:
                    self.kill()
                    raise KernelError(f"the kernel did not start within {timeout:g} s") from None

    def _warm(self, deadline: float) -> None:
        """Import torch before the first cell (every chapter does), under the start-up time
        limit: a cell's time limit then measures the learner's code, not the library's
        import, which takes seconds on a busy machine."""
        start = time.monotonic()
        msg_id = self.client.execute("import torch as _warm_torch\ndel _warm_torch", silent=True,
                                     store_history=False, allow_stdin=False, stop_on_error=False)
        result = self._wait(msg_id, max(deadline, start + 5.0), start)
        if result.status == "timeout":
            self.kill()
            raise KernelError("the kernel did not import torch within its start-up time limit")
        if result.status in ("died", "memory"):
            raise KernelError(f"the kernel ended while importing torch ({result.error or result.status})")

    @property
    def returncode(self) -> int | None:
        """The kernel's exit status (a signal as -N), also when it ran under bwrap."""
        return isolation.exit_status(self.process.returncode) if self.process is not None else None

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def kill(self) -> None:
        """Stop the kernel and everything it started; safe to call twice."""
        if self.watch is not None:
            self.watch.stop()
            self.peak_rss = max(self.peak_rss, self.watch.peak)
        if self.client is not None:
            try:
                self.client.stop_channels()
            except Exception:  # noqa: BLE001 - closing sockets of a dead kernel
                pass
            self.client = None
        if self.process is not None:
            kill_and_reap(self.process)

    # ------------------------------------------------------------------ requests

    def run(self, code: str, timeout: float) -> Result:
        """Execute ``code`` like a notebook cell; never waits longer than ``timeout`` plus
        the interrupt grace."""
        start = time.monotonic()
        msg_id = self.client.execute(code, silent=False, store_history=True, allow_stdin=False,
                                     stop_on_error=False)
        result = self._wait(msg_id, start + timeout, start)
        if result.status in ("ok", "error") and _asked_to_exit(result.reply):
            return self._exit_asked(result, start)
        if result.status != "timeout":
            return result
        self._interrupt()
        after = self._wait(msg_id, time.monotonic() + INTERRUPT_GRACE_S, start)
        if after.status in ("ok", "error"):
            return Result("timeout", after.seconds, after.error, after.stdout)
        if after.status == "timeout":
            self.kill()
            return Result("hung", after.seconds, stdout=after.stdout)
        return after

    def _interrupt(self) -> None:
        """What Jupyter's "interrupt" does: SIGINT to the kernel, or, when it runs in a
        sandbox with PID namespace of its own (bwrap's pid is not the kernel's), an
        ``interrupt_request`` on the control channel, which ipykernel answers with SIGINT to
        itself from a thread that a busy cell does not block."""
        if isolation.ACTIVE is None:
            try:
                os.kill(self.process.pid, signal.SIGINT)
            except OSError:
                pass
            return
        try:
            self.client.control_channel.send(self.client.session.msg("interrupt_request", content={}))
        except Exception:  # noqa: BLE001 - a kernel that is going away: the grace period decides
            pass

    def _exit_asked(self, result: Result, start: float) -> Result:
        """The cell called ``exit()``: ipykernel replies, then stops its event loop a moment
        later, so the kernel would die during whichever request comes next.  Like JupyterLab,
        which restarts a kernel that called ``exit()``, end it now: the death belongs to this
        cell, whatever the timing."""
        deadline = time.monotonic() + EXIT_GRACE_S
        while self.alive and time.monotonic() < deadline:
            time.sleep(0.05)
        code = self.returncode if not self.alive else None
        self.kill()
        how = describe_exit(code) if code is not None else "ended by the grader"
        return Result("died", time.monotonic() - start, f"the cell called exit(); {how}",
                      result.stdout, result.reply)

    def harvest(self, names, timeout: float = HARVEST_TIMEOUT_S, again: bool = False) -> dict | Result:
        """The learner's definitions of ``names`` that changed since the last harvest (all of
        them with ``again``) as ``harvest.describe`` dicts, or the failed Result."""
        start = time.monotonic()
        msg_id = self.client.execute("", silent=True, store_history=False, allow_stdin=False,
                                     stop_on_error=False,
                                     user_expressions={"harvest": _harvest.expression(names, again)})
        result = self._wait(msg_id, start + timeout, start)
        if result.status != "ok":
            if result.status == "timeout":
                self.kill()
                result.status = "hung"
            return result
        answer = (result.reply or {}).get("user_expressions", {}).get("harvest", {})
        if answer.get("status") != "ok":
            return Result("error", result.seconds,
                          _error_text(str(answer.get("ename", "error")), str(answer.get("evalue", ""))))
        try:
            text = ast.literal_eval(answer["data"]["text/plain"])
            found = json.loads(base64.b64decode(text, validate=True))
            if not isinstance(found, dict):
                raise ValueError("not a mapping")
        except Exception as error:  # noqa: BLE001 - a sabotaged harvest is reported, not raised
            return Result("error", result.seconds, f"unreadable answer ({type(error).__name__})")
        return {str(name): entry for name, entry in found.items() if isinstance(entry, dict)}

    def _wait(self, msg_id: str, deadline: float, start: float) -> Result:
        """Poll for the reply to ``msg_id`` until ``deadline``; drain iopub meanwhile."""
        stdout = _Text()
        while True:
            if self.watch is not None and self.watch.exceeded:
                self.kill()
                return Result("memory", time.monotonic() - start, stdout=stdout.text)
            if not self.alive:
                code = self.returncode
                self.kill()
                return Result("died", time.monotonic() - start, describe_exit(code), stdout.text)
            self._drain(msg_id, stdout)
            try:
                reply = self.client.get_shell_msg(timeout=0.1)
            except queue.Empty:
                if time.monotonic() > deadline:
                    return Result("timeout", time.monotonic() - start, stdout=stdout.text)
                continue
            if reply.get("parent_header", {}).get("msg_id") != msg_id:
                continue  # the late reply to an earlier, interrupted request
            content = reply.get("content", {})
            seconds = time.monotonic() - start
            self._drain(msg_id, stdout, until_idle=time.monotonic() + 1.0)
            if content.get("status") == "ok":
                return Result("ok", seconds, stdout=stdout.text, reply=content)
            error = _error_text(str(content.get("ename", "error")), str(content.get("evalue", "")))
            return Result("error", seconds, error, stdout.text, content)

    def _drain(self, msg_id: str, stdout: "_Text", until_idle: float | None = None) -> None:
        """Read the iopub messages waiting, keeping ``msg_id``'s stream text (bounded).

        With ``until_idle``, keep reading until the kernel reports idle for ``msg_id`` (the
        last message of a request) or that time passes.
        """
        for count in range(1_000_000):
            if until_idle is None and count >= 1000:
                return  # a flood of output: come back after checking the deadline
            if until_idle is not None and time.monotonic() > until_idle:
                return
            try:
                message = self.client.get_iopub_msg(timeout=0 if until_idle is None else 0.05)
            except queue.Empty:
                if until_idle is None:
                    return
                continue
            if message.get("parent_header", {}).get("msg_id") != msg_id:
                continue
            kind, content = message.get("msg_type"), message.get("content", {})
            if kind == "stream":
                stdout.append(str(content.get("text", "")))
            if until_idle is not None and kind == "status" and content.get("execution_state") == "idle":
                return
