"""What every training loop in the course shares: the progress bar, the NaN guard, the loss
history and the snapshots.  The loops themselves (``toy_models.train``, ``sae.train_sae``,
``lm.train_lm``, ``polysemanticity.train_autoencoders``, ``scaling.train_scaling_models``)
keep only their maths:

    loop = TrainingLoop(steps, description="SAE", progress=True)
    for step in loop:
        loss = ...                                   # forward, backward, optimiser step
        if loop.logging(step):
            loop.log(step, loss, l0=l0)              # FloatingPointError if loss is NaN or inf
    loop.steps_logged, loop.history["loss"], loop.seconds

The loss may be a float or a tensor (one value per instance of a batched model); the
history gives it back detached, on the CPU.

Smoke mode: with the environment variable ``SUPERPOSITION_SMOKE_STEPS`` set to a positive
integer, every loop stops after at most that many steps (``loop.steps``; what was asked stays
in ``loop.requested_steps``; the learning-rate schedules stay the requested run's) and its bar
says so.  The plain loops the learners write take their steps from ``smoke_cap``; the checks
run in ``full_size()``.  The test of the learner notebooks uses it: they prove the plumbing,
while the solutions notebooks train the same models at full size.
"""

from __future__ import annotations

import math
import os
import time
from contextlib import contextmanager
from typing import Iterator

import torch
from torch import Tensor

SMOKE_STEPS_ENV = "SUPERPOSITION_SMOKE_STEPS"
_full_size = 0  # how many ``full_size()`` blocks are open: inside one, smoke mode is off


def smoke_steps() -> int | None:
    """The step cap that ``SUPERPOSITION_SMOKE_STEPS`` sets, or None when it is unset (or empty)
    or inside ``full_size()``."""
    text = os.environ.get(SMOKE_STEPS_ENV, "").strip()
    if not text or _full_size:
        return None
    try:
        cap = int(text)
    except ValueError:
        cap = 0
    if cap < 1:
        raise ValueError(f"{SMOKE_STEPS_ENV} must be a positive integer (the most steps any training loop "
                         f"takes), got {text!r}; unset it to train at full size")
    return cap


def smoke_cap(steps: int, description: str = "training") -> tuple[int, str]:
    """The steps a loop asked for ``steps`` runs (fewer in smoke mode) and its progress bar's
    description (which then says so).  For the plain loops that do not use ``TrainingLoop``:
    ``run, description = smoke_cap(steps, description)``, then ``range(run)``."""
    cap = smoke_steps()
    if cap is None or steps <= cap:
        return steps, description
    return cap, f"{description} (smoke test: {cap:,} of {steps:,} steps)"


@contextmanager
def full_size():
    """Smoke mode off inside the block: the checks run a learner's loop and the reference's for
    the steps they ask, and compare them step by step."""
    global _full_size
    _full_size += 1
    try:
        yield
    finally:
        _full_size -= 1


def _as_record(value):
    """A logged value as plain Python data.  Tensors are kept as numbers, not as tensors: a
    thousand small tensors made between each step's large, short-lived ones fragment the C
    heap until it holds gigabytes (measured: chapter 02's 1,000-step scaling loop peaked at
    2.3 GB, against 0.34 GB with numbers)."""
    if isinstance(value, Tensor):
        return ("tensor", tuple(value.shape), value.dtype, value.detach().cpu().flatten().tolist())
    return ("value", value)


def _from_record(record):
    if record[0] == "tensor":
        _, shape, dtype, data = record
        return torch.tensor(data, dtype=dtype).reshape(shape)
    return record[1]


class TrainingLoop:
    """Iterate over ``range(steps)`` with a tqdm bar; log every ``log_every`` steps (default:
    ``records`` records in all, the last step always included); keep CPU snapshots every
    ``snapshot_every`` steps.  In smoke mode (``SUPERPOSITION_SMOKE_STEPS``) ``steps`` is
    capped, ``requested_steps`` keeps the number asked for."""

    def __init__(self, steps: int, description: str = "training", progress: bool = True,
                 log_every: int | None = None, records: int = 100, snapshot_every: int | None = None,
                 what: str = "the loss", advice: str = "lower the learning rate", leave: bool = True):
        for name, value in (("steps", steps), ("log_every", log_every), ("snapshot_every", snapshot_every)):
            if value is not None and (isinstance(value, bool) or int(value) != value or value < 1):
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        self.requested_steps = int(steps)
        self.steps, description = smoke_cap(self.requested_steps, description)
        self.log_every = int(log_every or max(1, self.steps // records))
        self.snapshot_every = snapshot_every
        self.description, self.progress, self.leave = description, progress, leave
        self.what, self.advice = what, advice
        self.steps_logged: list[int] = []
        self._records: dict[str, list] = {}  # logged values, tensors kept as Python numbers
        self._history: dict[str, list] | None = None
        self.snapshot_steps: list[int] = []
        self.snapshots: dict[str, list[Tensor]] = {}
        self.seconds = 0.0
        self._bar = None

    def __iter__(self) -> Iterator[int]:
        from tqdm.auto import tqdm

        self._bar = tqdm(total=self.steps, desc=self.description, disable=not self.progress,
                         leave=self.leave, mininterval=0.5)
        start = time.perf_counter()
        try:
            for step in range(self.steps):
                yield step
                self._bar.update(1)
        finally:
            self._bar.close()
            self.seconds = time.perf_counter() - start

    def logging(self, step: int) -> bool:
        """Whether ``step`` is a logged one."""
        return step % self.log_every == 0 or step == self.steps - 1

    def log(self, step: int, loss, **extra) -> None:
        """Record ``loss`` (and any ``extra`` values) at ``step``; raise ``FloatingPointError``
        when the loss is NaN or infinite."""
        value = loss.detach().float().cpu() if isinstance(loss, Tensor) else float(loss)
        finite = torch.isfinite(value) if isinstance(value, Tensor) else torch.tensor(math.isfinite(value))
        if not bool(finite.all()):
            if self._bar is not None:
                self._bar.close()
            where = ""
            if isinstance(value, Tensor) and value.numel() > 1:
                where = f" (instances {torch.nonzero(~finite.flatten()).flatten().tolist()})"
            details = ", ".join(f"{k}={float(v):.4g}" for k, v in extra.items()
                                if not isinstance(v, Tensor) or v.numel() == 1)
            raise FloatingPointError(f"{self.what} became NaN or infinite at step {step}{where}"
                                     f"{f' ({details})' if details else ''}; {self.advice}")
        self.steps_logged.append(step)
        for name, item in (("loss", value), *extra.items()):
            self._records.setdefault(name, []).append(_as_record(item))
        self._history = None
        if self._bar is not None and self.progress:
            mean = float(value.mean()) if isinstance(value, Tensor) else value
            self._bar.set_postfix(loss=f"{mean:.4g}", refresh=False)

    @property
    def history(self) -> dict[str, list]:
        """Each logged quantity's values in order: tensors (on the CPU) or numbers, as logged."""
        if self._history is None:
            self._history = {name: [_from_record(r) for r in records] for name, records in self._records.items()}
        return self._history

    def snapshot_due(self, step: int) -> bool:
        """Whether a snapshot is taken before ``step`` (``step >= steps``: after the last, so a
        caller may pass the steps it asked for when smoke mode stopped the loop earlier)."""
        return bool(self.snapshot_every) and (step % self.snapshot_every == 0 or step >= self.steps)

    def snapshot(self, step: int, **tensors: Tensor) -> None:
        """Keep CPU copies of ``tensors`` (e.g. W=..., b=...) as they are before ``step`` (at
        most ``steps``: the end of a loop that smoke mode stopped early)."""
        self.snapshot_steps.append(min(step, self.steps))
        for name, tensor in tensors.items():
            self.snapshots.setdefault(name, []).append(tensor.detach().cpu().clone())
