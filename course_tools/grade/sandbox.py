"""Call a learner's functions in a separate process; judge them in the grader's.

The grader never runs learner code in its own process.  A :class:`Sandbox` is a child
interpreter (``python -m course_tools.grade.sandbox``) that loads the learner's
definitions (the cloudpickles collected from their kernel) and runs them on request.
:meth:`Sandbox.learner` returns a stand-in function for the grader's process: calling it
sends the arguments to the child, runs the learner's function there, and returns its
output.  The exercise check (``checks.evaluate``) runs in the grader's process on that
stand-in, so everything that decides a grade (the reference, the comparison, the outcome)
lives where no learner code runs: a learner function that patches ``course_utils.checks``
when called patches the child's copy, which decides nothing.

The stand-in behaves like a local call, as far as a check can tell:

* the arguments go to the child by pickle; the output comes back through
  ``torch.load(weights_only=True)`` (tensors, numbers, strings, tuples, lists, dicts), so a
  crafted return value cannot run code in the grader.  Anything else comes back as an
  object of the same type name, so the check's message ("returned a numpy.ndarray") holds;
* an input the learner changed in place is changed in place in the grader too, and a
  function that returns its tensor input returns the grader's same object, so the
  checks' in-place tests work (an ``nn.Module`` argument, such as the model a training loop
  trains, gets back the child's parameters and buffers); a ``torch.Generator`` argument and the global torch, NumPy
  and ``random`` states go there and back;
* ``NotImplementedError`` means "not attempted"; any other exception, ``sys.exit()``
  included, is reported with the learner's line, as in a notebook.

A result check (``checks.ResultCheck``: what several definitions make together, e.g. a
trained model) works the same way round: :meth:`Sandbox.produce` runs the check's
``produce`` in the child on the learner's definitions, and only the plain data it returns
comes back, for the check's ``judge`` to judge in the grader's process.

Containment: the child runs in its own session, in a throwaway working directory that is
also its HOME; its resident memory is watched (``limits.MemoryWatch``) and it is killed
above the limit; a call that outlives the check's time limit kills it; ``os._exit``, a
signal or a segfault ends only the child (the call fails with the exit status).  A dead
child is replaced by a fresh one for the next exercise.  On the machine, the child runs
under bubblewrap when the batch has it (``isolation.wrap``: read-only file system, no
network, its own PID namespace; see docs/grading.md), and while it runs a learner's ``X``
the course's reference for ``X`` is withheld (``references.guarded``).  A learner class is
graded in two halves too: the exercise's probe runs the class here and sends back plain
data (:meth:`Sandbox.probe`), its judge decides in the grader.
"""

from __future__ import annotations

import io
import os
import pickle
import select
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from . import references

STARTUP_TIMEOUT_S = 120.0
DEFINE_TIMEOUT_S = 60.0
CALL_GRACE_S = 10.0  # beyond the check's own time limit, before the grader gives up on a call
MAX_MESSAGE = 512 * 2**20
_HEADER = struct.Struct(">Q")


class SandboxError(Exception):
    """The child could not be started or stopped answering (the message says why)."""


# ======================================================================================
# Grader side
# ======================================================================================


def _stand_in(qualified: str):
    """An instance of an empty class named like ``qualified`` ("numpy.ndarray")."""
    module, _, name = str(qualified).rpartition(".")
    return type(name or "object", (), {"__module__": module or "builtins"})()


def _encode_numpy_state(state):
    import torch

    name, keys, pos, has_gauss, cached = state
    return (str(name), torch.as_tensor(keys.astype("int64")), int(pos), int(has_gauss), float(cached))


def _decode_numpy_state(state):
    import numpy as np

    name, keys, pos, has_gauss, cached = state
    return (name, keys.numpy().astype(np.uint32), pos, has_gauss, cached)


def _rng_states():
    import random

    import numpy as np
    import torch

    return {"torch": torch.get_rng_state(), "numpy": _encode_numpy_state(np.random.get_state()),
            "random": random.getstate()}


def _set_rng_states(states) -> None:
    import random

    import numpy as np
    import torch

    torch.set_rng_state(states["torch"])
    np.random.set_state(_decode_numpy_state(states["numpy"]))
    state = states["random"]
    random.setstate((state[0], tuple(state[1]), state[2]))


class Sandbox:
    """A child process holding a learner's definitions (see the module docstring)."""

    def __init__(self, definitions: dict[str, dict], memory_limit_bytes: int | None,
                 env: dict[str, str], root: Path | None = None):
        self.definitions = definitions  # name -> {"blob": cloudpickle, "source_file", "source"}
        self.memory_limit = memory_limit_bytes
        self.env = env
        self.root = Path(root) if root is not None else Path(tempfile.gettempdir())
        self.process: subprocess.Popen | None = None
        self.watch = None
        self.loaded: dict[str, dict] = {}
        self.starts = 0
        self.ready = False
        self.workdir: Path | None = None

    # ------------------------------------------------------------------ life cycle

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def launch(self) -> None:
        """Start the child without waiting for it (it imports torch meanwhile)."""
        from .limits import MemoryWatch, register_session

        self.close()
        workdir = self.workdir = Path(tempfile.mkdtemp(prefix="sandbox-", dir=self.root))
        env = dict(self.env, HOME=str(workdir), TMPDIR=str(workdir))
        from . import isolation

        self.process = subprocess.Popen(
            isolation.wrap([sys.executable, "-m", "course_tools.grade.sandbox"], [workdir], workdir),
            cwd=workdir, env=env,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
            start_new_session=True)
        register_session(self.process.pid)
        self.starts += 1
        self.loaded = {}
        self.ready = False
        self.watch = MemoryWatch(self.process.pid, self.memory_limit)

    def start(self) -> None:
        """Start the child (unless launched already) and wait until it is ready."""
        if not self.alive:
            self.launch()
        if self.ready:
            return
        reply = self._receive(time.monotonic() + STARTUP_TIMEOUT_S)
        if reply.get("status") != "ready":
            self.close()
            raise SandboxError(f"the sandbox did not start: {reply.get('error', reply)}")
        self.ready = True

    def close(self) -> None:
        import shutil

        from .limits import kill_session

        if self.watch is not None:
            self.watch.stop()
        if self.process is not None:
            for stream in (self.process.stdin, self.process.stdout):
                try:
                    stream.close()
                except OSError:
                    pass
            kill_session(self.process.pid)
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass
        self.process = None
        if self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)
            self.workdir = None

    def __enter__(self) -> "Sandbox":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ------------------------------------------------------------------ protocol

    def _send(self, message: dict) -> None:
        data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
        try:
            self.process.stdin.write(_HEADER.pack(len(data)) + data)
            self.process.stdin.flush()
        except (BrokenPipeError, OSError, ValueError):
            pass  # the child is gone: _receive says how

    def _read_exactly(self, count: int, deadline: float) -> bytes | None:
        fd = self.process.stdout.fileno()
        chunks, left = [], count
        while left:
            wait = deadline - time.monotonic()
            if wait <= 0:
                raise TimeoutError
            ready, _, _ = select.select([fd], [], [], min(wait, 0.5))
            if not ready:
                continue
            chunk = os.read(fd, min(left, 1 << 20))
            if not chunk:
                return None  # end of file: the child is gone
            chunks.append(chunk)
            left -= len(chunk)
        return b"".join(chunks)

    def _receive(self, deadline: float) -> dict:
        """The child's next message (loaded with weights_only), or a dict with "status" of
        "gone" (the child ended), "timeout" or "garbled"."""
        import torch

        try:
            header = self._read_exactly(_HEADER.size, deadline)
            if header is None:
                return self._gone()
            (size,) = _HEADER.unpack(header)
            if size > MAX_MESSAGE:
                self.close()
                return {"status": "garbled", "error": f"a message of {size} bytes"}
            data = self._read_exactly(size, deadline)
            if data is None:
                return self._gone()
        except TimeoutError:
            self.close()
            return {"status": "timeout"}
        try:
            message = torch.load(io.BytesIO(data), weights_only=True)
        except Exception as error:  # noqa: BLE001 - whatever the child sent, we do not run it
            self.close()
            return {"status": "garbled", "error": type(error).__name__}
        return message if isinstance(message, dict) else {"status": "garbled", "error": "not a dict"}

    def _ask(self, message: dict, seconds: float) -> dict:
        """Send ``message`` and wait for the answer up to ``seconds`` plus the grace; when
        the wait is cut short (the check's time limit, SIGALRM; Ctrl-C), the request is
        abandoned with the child, which is stopped."""
        try:
            self._send(message)
            return self._receive(time.monotonic() + seconds + CALL_GRACE_S)
        except BaseException:
            self.close()
            raise

    def _gone(self) -> dict:
        try:
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass
        memory = self.watch is not None and self.watch.exceeded
        from . import isolation

        code = isolation.exit_status(self.process.returncode)
        self.close()
        return {"status": "gone", "memory": memory, "returncode": code}

    def _failure_text(self, reply: dict) -> str:
        from .limits import describe_exit

        status = reply.get("status")
        if status == "gone" and reply.get("memory"):
            return (f"used more than {self.memory_limit / 2**20:g} MB of memory; the grader stopped it")
        if status == "gone":
            return f"ended the process it ran in ({describe_exit(reply.get('returncode'))})"
        if status == "timeout":
            return "did not return (the grader stopped it)"
        return f"broke the grader's connection to it ({reply.get('error', status)})"

    # ------------------------------------------------------------------ operations

    def define(self, name: str) -> dict:
        """Load the learner's ``name`` in the child (starting it if needed).

        Returns ``{"status": "ok", "kind": ..., "signature": [...]}`` or ``{"status":
        "error", "error": why}``; never raises for a learner's fault.
        """
        if name in self.loaded and self.alive:
            return self.loaded[name]
        self.start()
        self._send({"op": "define", "name": name, **self.definitions[name]})
        reply = self._receive(time.monotonic() + DEFINE_TIMEOUT_S)
        if reply.get("status") == "ok":
            self.loaded[name] = reply
            return reply
        if reply.get("status") == "error":
            return {"status": "error", "error": str(reply.get("error", ""))}
        return {"status": "error", "error": "loading it " + self._failure_text(reply)}

    def learner(self, name: str, time_limit: float):
        """A function for the grader's process that runs the learner's ``name`` in the child."""
        import inspect

        import torch

        from course_utils.checks._framework import CheckFailed, NotAttempted

        info = self.loaded[name]
        sandbox = self

        def call(*args, **kwargs):
            if not sandbox.alive:
                raise CheckFailed("your function could not be run: the process it ran in had ended")
            message, generators = _encode_call(name, args, kwargs)
            reply = sandbox._ask(message, time_limit)
            status = reply.get("status")
            if status == "returned":
                _apply_changes(reply, args, kwargs, generators)
                same = reply.get("returned_input")
                if isinstance(same, str) and isinstance(_lookup(same, args, kwargs), torch.Tensor):
                    return _lookup(same, args, kwargs)  # it returned its (changed) input: the same object here
                return _decode_output(reply)
            if status == "not_implemented":
                _apply_changes(reply, args, kwargs, generators)
                raise NotAttempted(str(reply.get("text", "NotImplementedError")))
            if status == "raised":
                _apply_changes(reply, args, kwargs, generators)
                raise CheckFailed(f"your function raised {reply.get('text', 'an exception')}")
            if status == "reference":
                raise CheckFailed(f"your function {references.message(reply)}")
            raise CheckFailed(f"your function {sandbox._failure_text(reply)}")

        call.__name__ = call.__qualname__ = name
        parameters = []
        for pname, kind, has_default in info.get("signature") or []:
            try:
                parameters.append(inspect.Parameter(
                    str(pname), inspect._ParameterKind(int(kind)),
                    default=None if has_default else inspect.Parameter.empty))
            except (ValueError, TypeError):
                parameters = None
                break
        if parameters is not None and info.get("signature") is not None:
            try:
                call.__signature__ = inspect.Signature(parameters)
            except (ValueError, TypeError):
                pass
        return call

    def probe(self, name: str, seed: int, time_left: float, time_limit: float):
        """For an exercise checked in two halves (a class: ``Exercise.judge``): run its probe
        on the learner's ``name`` (loaded with :meth:`define`) for case ``seed`` in the child,
        within ``time_left`` seconds, and return what the probe saw: plain data, come back
        through ``weights_only`` loading, for the exercise's judge to judge here.  The child
        builds the case from the seed itself, as ``Exercise.evaluate`` does here.

        Raises ``CheckFailed`` when the child did not answer (it is stopped: "took longer
        than ``time_limit`` s"), ended, or garbled the answer; the grader's own time limit
        (SIGALRM) abandons the probe and stops the child."""
        from course_utils.checks._framework import CheckFailed

        if not self.alive:
            raise CheckFailed("your class could not be run: the process it ran in had ended")
        reply = self._ask({"op": "probe", "name": name, "seed": int(seed), "time_limit": float(time_left)},
                          time_left)
        status = reply.get("status")
        if status == "probed":
            return _decode_output(reply)  # CheckFailed if more data than the grader accepts
        if status == "timeout":
            raise CheckFailed(f"took longer than {time_limit:g} s; the grader stopped it")
        if status == "error":  # the child could not even start the probe
            raise CheckFailed(f"the sandbox could not run the check ({reply.get('error', '')})")
        if status == "reference":
            raise CheckFailed(f"your class {references.message(reply)}")
        raise CheckFailed(f"your class {self._failure_text(reply)}")

    def evaluate_inside(self, name: str, seeds, time_limit: float) -> tuple[str, str]:
        """For a class whose exercise has no judge (none has): run the whole check in the
        child and return its (status, message).  Weaker: the child decides."""
        from course_utils.checks import FAILED

        self._send({"op": "evaluate", "name": name, "seeds": list(seeds), "time_limit": time_limit})
        reply = self._receive(time.monotonic() + time_limit + CALL_GRACE_S)
        if reply.get("status") == "evaluated":
            return str(reply.get("outcome")), str(reply.get("message"))
        if reply.get("status") == "timeout":
            return FAILED, f"took longer than {time_limit:g} s; the grader stopped it."
        return FAILED, f"your definition {self._failure_text(reply)}."

    def produce(self, check_id: str, time_limit: float) -> dict:
        """Run result check ``check_id``'s ``produce`` in the child on the learner's
        definitions of its exercises (each loaded with :meth:`define` first), under
        ``time_limit``.  Returns one of

        * ``{"status": "produced", "data": ...}``: plain data for the check's ``judge``, which
          the caller runs here (it came back through ``weights_only`` loading);
        * ``{"status": "failed" | "not attempted", "message": ...}``: the learner's code
          raised, timed out in the child, or ``produce`` said what is wrong;
        * ``{"status": "stopped", "message": ...}``: the child did not answer in time and was
          stopped;
        * ``{"status": "died", "message": ...}``: the child ended (exit, signal, memory limit)
          or garbled the answer.
        """
        from course_utils.checks._framework import CheckFailed

        self._send({"op": "produce", "name": check_id, "time_limit": time_limit})
        reply = self._receive(time.monotonic() + time_limit + CALL_GRACE_S)
        status = reply.get("status")
        if status == "produced":
            try:
                return {"status": "produced", "data": _decode_output(reply)}
            except CheckFailed as failure:  # more data than the grader accepts
                return {"status": "failed", "message": f"{failure}."}
        if status in ("failed", "not attempted"):
            return {"status": status, "message": str(reply.get("message", ""))}
        if status == "reference":
            return {"status": "failed", "message": f"your code {references.message(reply)}."}
        if status == "timeout":
            return {"status": "stopped", "message": f"took longer than {time_limit:g} s; the grader stopped it."}
        if status == "error":  # the child could not even start the check
            return {"status": "died", "message": f"the sandbox could not run it ({reply.get('error', '')})."}
        return {"status": "died", "message": f"running your code {self._failure_text(reply)}."}


def _encode_call(name: str, args: tuple, kwargs: dict):
    import torch

    generators = {}

    def encode(key: str, value):
        if isinstance(value, torch.Generator):
            generators[key] = value
            return {"__generator__": value.get_state()}
        return value

    message = {
        "op": "call", "name": name,
        "args": [encode(f"a{i}", value) for i, value in enumerate(args)],
        "kwargs": {k: encode(f"k{k}", value) for k, value in kwargs.items()},
        "rng": _rng_states(),
    }
    return message, generators


def _lookup(key: str, args: tuple, kwargs: dict):
    if key.startswith("a") and key[1:].isdigit() and int(key[1:]) < len(args):
        return args[int(key[1:])]
    if key.startswith("k"):
        return kwargs.get(key[1:])
    return None


def _apply_changes(reply: dict, args: tuple, kwargs: dict, generators: dict) -> None:
    """Mirror in the grader what the call did to its inputs and to the random states."""
    import torch

    if isinstance(reply.get("rng"), dict):
        try:
            _set_rng_states(reply["rng"])
        except Exception:  # noqa: BLE001 - a garbled state from the child: keep ours
            pass
    for key, state in (reply.get("generators") or {}).items():
        if key in generators and isinstance(state, torch.Tensor):
            try:
                generators[key].set_state(state)
            except (RuntimeError, TypeError):
                pass
    for key, state in (reply.get("modules") or {}).items():
        module = _lookup(str(key), args, kwargs)
        if isinstance(module, torch.nn.Module) and isinstance(state, dict):
            ours = module.state_dict()
            with torch.no_grad():
                for name, new in state.items():  # only what the grader's copy has, shape for shape
                    old = ours.get(name)
                    if isinstance(old, torch.Tensor) and isinstance(new, torch.Tensor) and old.shape == new.shape:
                        old.copy_(new.to(old.dtype))
    for key, new in (reply.get("changed") or {}).items():
        old = _lookup(str(key), args, kwargs)
        if isinstance(old, torch.Tensor) and isinstance(new, torch.Tensor):
            with torch.no_grad():
                if old.shape == new.shape and old.dtype == new.dtype:
                    old.copy_(new)
                else:
                    old.set_(new.to(old.dtype) if new.dtype != old.dtype else new)


def _decode_output(reply: dict):
    import torch

    if reply.get("too_large"):
        from course_utils.checks._framework import CheckFailed

        raise CheckFailed(f"your function returned {int(reply['too_large']) / 2**20:.0f} MB of data, "
                          f"more than the grader accepts ({MAX_MESSAGE // 2**20} MB)")
    blob = reply.get("out")
    if isinstance(blob, bytes):
        try:
            return torch.load(io.BytesIO(blob), weights_only=True)
        except Exception:  # noqa: BLE001 - not plain data: stand in by type name
            pass
    return _stand_in(str(reply.get("type", "object")))


# ======================================================================================
# Child side: python -m course_tools.grade.sandbox
# ======================================================================================


def _child_main() -> None:
    # The protocol gets private copies of stdin/stdout; the learner's prints and input()
    # see /dev/null instead.
    proto_in = os.fdopen(os.dup(0), "rb", buffering=0)
    proto_out = os.fdopen(os.dup(1), "wb", buffering=0)
    null = os.open(os.devnull, os.O_RDWR)
    os.dup2(null, 0)
    os.dup2(null, 1)
    sys.stdin = open(os.devnull)  # noqa: SIM115
    sys.stdout = open(os.devnull, "w")  # noqa: SIM115

    def send(message: dict) -> None:
        import torch

        buffer = io.BytesIO()
        torch.save(message, buffer)
        data = buffer.getvalue()
        proto_out.write(_HEADER.pack(len(data)) + data)

    def receive() -> dict | None:
        header = _read(proto_in, _HEADER.size)
        if header is None:
            return None
        data = _read(proto_in, _HEADER.unpack(header)[0])
        return None if data is None else pickle.loads(data)

    try:
        import cloudpickle  # noqa: F401 - the pickles need it
        import torch  # noqa: F401

        from course_utils.checks import _framework  # noqa: F401
    except BaseException as error:  # noqa: BLE001
        send({"status": "fatal", "error": f"{type(error).__name__}: {error}"})
        return
    send({"status": "ready"})
    objects: dict[str, object] = {}
    while True:
        request = receive()
        if request is None:
            return
        try:
            reply = references.guarded(_handle, request, objects)  # X's reference withheld while X runs
        except BaseException as error:  # noqa: BLE001 - report, keep serving
            reply = {"status": "error", "error": f"{type(error).__name__}: {error}"[:300]}
        send(reply)


def _read(stream, count: int) -> bytes | None:
    chunks, left = [], count
    while left:
        chunk = stream.read(left)
        if not chunk:
            return None
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def _handle(request: dict, objects: dict) -> dict:
    op, name = request.get("op"), request.get("name")
    if op == "define":
        if isinstance(request.get("source_file"), str) and isinstance(request.get("source"), str):
            import linecache  # the cell's text, for the line quoted in messages

            lines = request["source"].splitlines(keepends=True)
            linecache.cache[request["source_file"]] = (len(request["source"]), None, lines, request["source_file"])
        try:
            obj = pickle.loads(request["blob"])
        except BaseException as error:  # noqa: BLE001 - a definition that cannot be rebuilt here
            text = str(error).splitlines()[0][:200] if str(error) else ""
            return {"status": "error", "error": f"{type(error).__name__}: {text}".rstrip(": ")}
        if isinstance(request.get("source_file"), str):
            _restore_filename(obj, request["source_file"])
        objects[name] = obj
        return {"status": "ok", "kind": _kind(obj), "signature": _signature(obj)}
    if op == "call":
        return _call(objects[name], request)
    if op == "probe":  # an exercise in two halves: its probe here, its judge in the grader
        from course_utils import checks

        exercise = checks.EXERCISES[name].exercise
        if exercise.judge is None:
            return {"status": "error", "error": f"the check of {name} is not in two halves"}
        data = exercise.probe_seed(objects[name], int(request["seed"]), float(request["time_limit"]))
        return {"status": "probed", **_encode_output(data)}
    if op == "evaluate":
        from course_utils import checks

        outcome = checks.evaluate(name, objects[name], seeds=request["seeds"],
                                  time_limit=request["time_limit"])
        return {"status": "evaluated", "outcome": outcome.status, "message": outcome.message}
    if op == "produce":
        from course_utils import checks

        check = checks.RESULT_CHECKS[name]
        status, data = check.produce_safely({use: objects[use] for use in check.uses if use in objects},
                                            time_limit=request["time_limit"])
        if status != "produced":
            return {"status": status, "message": str(data)}
        return {"status": "produced", **_encode_output(data)}
    return {"status": "error", "error": f"unknown request {op!r}"}


def _kind(obj) -> str:
    import inspect

    return "class" if inspect.isclass(obj) else "function" if inspect.isfunction(obj) else "callable"


def _signature(obj):
    import inspect

    try:
        return [(p.name, int(p.kind), p.default is not p.empty)
                for p in inspect.signature(obj).parameters.values()]
    except (TypeError, ValueError):
        return None


def _with_filename(code, filename: str):
    """``code`` (and the code objects nested in it) compiled from ``filename``."""
    consts = tuple(_with_filename(c, filename) if isinstance(c, type(code)) else c for c in code.co_consts)
    return code.replace(co_filename=filename, co_consts=consts)


def _restore_filename(obj, filename: str) -> None:
    """Give an unpickled function back its cell's file name, so that tracebacks (and the line
    a message quotes) find the cell's text in linecache.  cloudpickle ≥ 3.1 sends every code
    object as ``<dynamic-code>``; older releases keep the name, and then this changes nothing."""
    import types

    if isinstance(obj, types.FunctionType) and obj.__code__.co_filename == "<dynamic-code>":
        obj.__code__ = _with_filename(obj.__code__, filename)


def _call(fn, request: dict) -> dict:
    import torch

    from course_utils.checks._framework import _describe_raise

    generators = {}

    def decode(key: str, value):
        if isinstance(value, dict) and "__generator__" in value:
            generator = torch.Generator()
            generator.set_state(value["__generator__"])
            generators[key] = generator
            return generator
        return value

    args = [decode(f"a{i}", value) for i, value in enumerate(request["args"])]
    kwargs = {k: decode(f"k{k}", value) for k, value in request["kwargs"].items()}
    inputs = {f"a{i}": v for i, v in enumerate(args)} | {f"k{k}": v for k, v in kwargs.items()}
    before = {key: value.detach().clone() for key, value in inputs.items() if isinstance(value, torch.Tensor)}
    _set_rng_states(request["rng"])
    reply: dict = {}
    try:
        out = fn(*args, **kwargs)
        reply["status"] = "returned"
    except NotImplementedError as error:
        reply = {"status": "not_implemented", "text": _describe_raise(error, fn)}
    except BaseException as error:  # noqa: BLE001 - sys.exit(), KeyboardInterrupt too
        reply = {"status": "raised", "text": _describe_raise(error, fn)}
    reply["rng"] = _rng_states()
    reply["generators"] = {key: g.get_state() for key, g in generators.items()}
    reply["changed"] = {key: inputs[key].detach().clone() for key, old in before.items()
                        if _changed(old, inputs[key])}
    # A model passed in (a training loop's argument) comes back as its parameters and buffers.
    reply["modules"] = {key: {name: t.detach().clone() for name, t in value.state_dict().items()
                              if isinstance(t, torch.Tensor)}
                        for key, value in inputs.items() if isinstance(value, torch.nn.Module)}
    if reply["status"] == "returned":
        reply.update(_encode_output(out))
        reply["returned_input"] = next((key for key, value in inputs.items()
                                        if value is out and isinstance(value, torch.Tensor)), None)
    return reply


def _changed(old, new) -> bool:
    import torch

    if not isinstance(new, torch.Tensor) or new.shape != old.shape or new.dtype != old.dtype:
        return True
    same = (new == old) | (new.isnan() & old.isnan()) if new.is_floating_point() else new == old
    return not bool(same.all())


def _encode_output(out) -> dict:
    """{"out": bytes} when ``out`` survives weights_only loading, else {"type": its name}."""
    import torch

    kind = type(out)
    name = kind.__qualname__ if kind.__module__ == "builtins" else f"{kind.__module__}.{kind.__qualname__}"
    try:
        buffer = io.BytesIO()
        torch.save(out, buffer)
        blob = buffer.getvalue()
        if len(blob) > MAX_MESSAGE // 2:
            return {"too_large": len(blob)}
        torch.load(io.BytesIO(blob), weights_only=True)
    except BaseException:  # noqa: BLE001 - not plain data
        return {"type": name}
    return {"out": blob, "type": name}


if __name__ == "__main__":
    _child_main()
