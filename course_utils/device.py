"""Where the course's tensors live, how many CPU threads they use, and seeding.

- ``get_device()``: CUDA when present, else CPU.  Apple's MPS only when asked for
  (``get_device("mps")``), because several toy-model ops are slower or missing there.
  The environment variable ``SUPERPOSITION_DEVICE`` (``cpu``, ``cuda``, ``cuda:1``, ``mps``)
  overrides the automatic choice, so a learner can force the CPU on a GPU machine.
- ``set_seed(seed)``: seeds Python, NumPy and PyTorch (all devices) in one call.
- ``configure_threads()``: the number of CPU threads torch uses.  The course's models are
  tiny (a few thousand weights), so per-op overhead, not arithmetic, dominates; on the
  2-core course machine one thread was as fast as or faster than two on both benchmark
  workloads (see ``docs/benchmarks.md``), and it leaves the other core to Jupyter.  The
  default is therefore 1, overridable with ``SUPERPOSITION_THREADS``.
"""

from __future__ import annotations

import os
import random

import numpy as np
import torch

DEVICE_ENV = "SUPERPOSITION_DEVICE"
THREADS_ENV = "SUPERPOSITION_THREADS"
DEFAULT_CPU_THREADS = 1  # measured: benchmarks/toy_models.py, docs/benchmarks.md


def get_device(prefer: str | None = None) -> torch.device:
    """Return the device to train on.

    Order: the ``prefer`` argument, then ``$SUPERPOSITION_DEVICE``, then CUDA if available,
    else CPU.  ``"mps"`` is used only when asked for explicitly.  Asking for a device that
    is not available raises a ``RuntimeError`` that says so, instead of failing later inside
    a training loop.
    """
    choice = prefer or os.environ.get(DEVICE_ENV, "").strip() or None
    if choice is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(choice)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"device {choice!r} was requested but CUDA is not available here")
    if device.type == "mps" and not (
        getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()
    ):
        raise RuntimeError(f"device {choice!r} was requested but MPS is not available here")
    return device


def set_seed(seed: int) -> None:
    """Seed Python's ``random``, NumPy's global generator and PyTorch (CPU and CUDA)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def default_threads() -> int:
    """The CPU thread count the course uses: ``$SUPERPOSITION_THREADS`` or the measured default."""
    value = os.environ.get(THREADS_ENV, "").strip()
    if value:
        try:
            threads = int(value)
        except ValueError:
            raise ValueError(f"{THREADS_ENV} must be a positive integer, got {value!r}") from None
        if threads < 1:
            raise ValueError(f"{THREADS_ENV} must be a positive integer, got {value!r}")
        return threads
    return min(DEFAULT_CPU_THREADS, os.cpu_count() or 1)


def configure_threads(threads: int | None = None) -> int:
    """Set torch's intra-op CPU threads (default: ``default_threads()``) and return the number."""
    threads = default_threads() if threads is None else int(threads)
    torch.set_num_threads(threads)
    return threads


def describe() -> str:
    """One line naming the device and thread count, for the top of each chapter."""
    device = get_device()
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    return f"device: {device} ({name}), torch {torch.__version__}, CPU threads: {torch.get_num_threads()}"
