"""The toy models of Elhage et al. 2022, "Toy Models of Superposition", batched over instances.

Every tensor has a leading ``instances`` dimension, so a sweep over sparsity, importance or
seed is one model and one tensor program:

    W                  (instances, hidden, features)   column W[k, :, i] is feature i's direction
    b                  (instances, features)
    x, x'              (instances, batch, features)
    feature_probability, importance   (instances, features)

Models (the paper's notation, h = W x):

    linear       x' = Wᵀ W x + b
    ReLU output  x' = ReLU(Wᵀ W x + b)

Data: feature i is 0 with probability S = 1 - feature_probability[i], else U[0, 1].
Features may also come in sets (the paper's "Correlated and Anticorrelated Features"): the
features of a correlated set are zero or nonzero together; at most one feature of an
anticorrelated set is nonzero (``generate_correlated_batch``).
Loss: importance-weighted squared error, averaged over batch and features, summed over
instances (each instance trains independently; the sum keeps their gradients separate).

Training (``train``) is the paper's loop: Adam on a fresh batch every step, the loss through
autograd.  ``train(..., fast=True)`` trains a toy model to the same result several times
faster on a CPU with hand-derived gradients and a NumPy sampler; that code lives apart, in
``course_utils/_fast/toy.py``, and ``tests/test_ch01_toy_models.py`` proves the two paths agree.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .device import get_device
from .training import TrainingLoop, smoke_cap

ACTIVATIONS = ("relu", "linear")


# --------------------------------------------------------------------------------------
# The three exercise references: forward pass, batch generator, loss
# --------------------------------------------------------------------------------------


def toy_forward(W: Tensor, b: Tensor, x: Tensor, activation: str = "relu") -> Tensor:
    """x' = act(Wᵀ W x + b), batched over instances.

    W: (instances, hidden, features); b: (instances, features); x: (instances, batch, features).
    Returns (instances, batch, features).  ``activation`` is ``"relu"`` or ``"linear"``.
    """
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {ACTIVATIONS}, got {activation!r}")
    h = torch.einsum("ihf,ibf->ibh", W, x)
    out = torch.einsum("ihf,ibh->ibf", W, h) + b[:, None, :]
    return F.relu(out) if activation == "relu" else out


def generate_batch(
    feature_probability: Tensor, batch_size: int, generator: torch.Generator | None = None
) -> Tensor:
    """Sparse synthetic features: each entry is 0 with probability 1 - p, else U[0, 1].

    feature_probability: (instances, features).  Returns (instances, batch_size, features)
    on the same device, float32.  Entries are independent across instances, batch and
    features.
    """
    p = feature_probability
    shape = (p.shape[0], batch_size, p.shape[1])
    values = torch.rand(shape, device=p.device, generator=generator)
    active = torch.rand(shape, device=p.device, generator=generator) < p[:, None, :]
    return torch.where(active, values, torch.zeros((), device=p.device))


def importance_weighted_loss(out: Tensor, x: Tensor, importance: Tensor) -> Tensor:
    """Per-instance loss: mean over batch and features of importance · (x - x')².

    out, x: (instances, batch, features); importance: (instances, features).
    Returns (instances,).  Sum it to train all instances at once.
    """
    return (importance[:, None, :] * (x - out) ** 2).mean(dim=(1, 2))


# --------------------------------------------------------------------------------------
# Correlated and anticorrelated feature sets
# --------------------------------------------------------------------------------------

FeatureSets = tuple[tuple[int, ...], ...]


def feature_sets(sets, n_features: int, name: str = "sets") -> FeatureSets:
    """Check and normalise a list of feature sets, e.g. ``[[0, 1], [2, 3]]``.

    Each set holds at least two distinct feature indices in ``range(n_features)``.
    Returns a tuple of tuples (hashable, so a model can keep it).  ``None`` gives ``()``.
    """
    if sets is None:
        return ()
    result = []
    for members in sets:
        try:
            members = list(members)
        except TypeError:
            raise ValueError(f"{name} must be a list of lists of feature indices, got {sets!r}") from None
        for i in members:
            if isinstance(i, bool) or not isinstance(i, (int, np.integer, Tensor)) or int(i) != i:
                raise ValueError(f"{name}: feature indices must be integers, got {members!r}")
        members = tuple(int(i) for i in members)
        if len(members) < 2:
            raise ValueError(f"{name}: a set needs at least two features, got {list(members)!r}")
        if len(set(members)) != len(members):
            raise ValueError(f"{name}: a set lists a feature twice: {list(members)!r}")
        bad = [i for i in members if not 0 <= i < n_features]
        if bad:
            raise ValueError(f"{name}: feature indices {bad} are out of range for n_features={n_features}")
        result.append(members)
    return tuple(result)


def check_feature_sets(feature_probability: Tensor, correlated_sets=(), anticorrelated_sets=()
                       ) -> tuple[FeatureSets, FeatureSets]:
    """Check the sets against each other and the per-feature probabilities (instances,
    features); returns them normalised (``feature_sets``), (correlated, anticorrelated).

    ``feature_probability`` keeps its meaning for every feature: the probability that it is
    nonzero.  So sets must not overlap, the features of a correlated set must share one
    probability (the set's), and an anticorrelated set is nonzero with probability Σ_i p_i
    over its members, which must not exceed 1.
    """
    p = feature_probability.detach().to("cpu", torch.float32)
    n = p.shape[1]
    correlated = feature_sets(correlated_sets, n, "correlated_sets")
    anticorrelated = feature_sets(anticorrelated_sets, n, "anticorrelated_sets")
    seen: dict[int, str] = {}
    for kind, sets in (("correlated", correlated), ("anticorrelated", anticorrelated)):
        for members in sets:
            for i in members:
                if i in seen:
                    raise ValueError(f"feature {i} is in two sets ({seen[i]} and {kind} {list(members)}); "
                                     "sets must not overlap")
                seen[i] = f"{kind} {list(members)}"
    for members in correlated:
        idx = list(members)
        if not torch.allclose(p[:, idx], p[:, idx[:1]].expand(-1, len(idx)), rtol=0, atol=1e-6):
            raise ValueError(f"the features of correlated set {idx} must have the same feature_probability "
                             "(they are active together)")
    for members in anticorrelated:
        idx = list(members)
        total = p[:, idx].sum(dim=1)  # P(the set is active)
        if (total > 1 + 1e-6).any():
            raise ValueError(f"anticorrelated set {idx}: its features' probabilities sum to more than 1 "
                             f"(max {total.max().item():.3g}); at most one of them can be active")
    return correlated, anticorrelated


def generate_correlated_batch(
    feature_probability: Tensor,
    batch_size: int,
    correlated_sets=(),
    anticorrelated_sets=(),
    generator: torch.Generator | None = None,
) -> Tensor:
    """Sparse synthetic features with correlated and anticorrelated sets (Elhage et al. 2022).

    feature_probability: (instances, features), the probability that each feature is
    nonzero; a nonzero feature is U[0, 1].  ``correlated_sets`` and
    ``anticorrelated_sets`` are lists of feature-index lists that do not overlap:

    - correlated set: its features are zero or nonzero together (one draw decides, with
      the set's probability p), each with its own independent U[0, 1] value (the paper:
      "we simply have the same sample determine whether they're zero");
    - anticorrelated set: the set is all zero with probability 1 - Σ p_i, otherwise exactly
      one member is nonzero, member i with probability p_i / Σ p_i (the paper: "the feature
      set be entirely zero with probability S, but then only have one randomly selected
      feature in the set be uniformly sampled from [0,1]"; with equal p_i the member is
      uniform, and the paper's set-level 1 - S is k·p for a set of k);
    - every other feature is independent, as in ``generate_batch``.

    Each feature's marginal probability of being nonzero is its ``feature_probability``.
    Returns (instances, batch_size, features), float32, on the same device.  With no sets
    this is exactly ``generate_batch`` (the same random stream).  With sets it draws one
    uniform per set or lone feature (``_fast.toy.SetLayout``: member k of an anticorrelated
    set is active when that uniform falls in its slice of [0, Σ p)), so the fast path's
    NumPy sampler can draw the same distribution; ``correlated_batch`` and
    ``anticorrelated_batch`` are the same distributions written plainly.
    """
    if not correlated_sets and not anticorrelated_sets:
        return generate_batch(feature_probability, batch_size, generator)
    from ._fast.toy import features_from_uniforms, set_layout

    p = feature_probability
    layout = set_layout(p, correlated_sets, anticorrelated_sets)
    u = torch.rand((p.shape[0], layout.n_uniforms, batch_size), device=p.device, generator=generator)
    return features_from_uniforms(layout, u)


def correlated_batch(feature_probability: Tensor, batch_size: int, sets,
                     generator: torch.Generator | None = None) -> Tensor:
    """Chapter 02's exercise, written plainly: the features of each set in ``sets`` are zero
    or nonzero *together* (one draw per set and sample, with the probability of the set's
    first feature), each with its own U[0, 1] value; every other feature is independent, as
    in ``generate_batch``.  (instances, batch_size, features).  ``generate_correlated_batch``
    draws the same distribution with fewer random numbers."""
    p = feature_probability
    x = generate_batch(p, batch_size, generator)
    for members in sets:
        members = list(members)
        active = torch.rand(p.shape[0], batch_size, 1, device=p.device, generator=generator) < p[:, None, members[:1]]
        values = torch.rand(p.shape[0], batch_size, len(members), device=p.device, generator=generator)
        x[:, :, members] = values * active
    return x


def anticorrelated_batch(feature_probability: Tensor, batch_size: int, sets,
                         generator: torch.Generator | None = None) -> Tensor:
    """Chapter 02's exercise, written plainly: at most one feature of each set in ``sets``
    is nonzero.  One uniform u per set and sample picks it: member k is active when u falls
    in [p_0 + ... + p_(k-1), p_0 + ... + p_k), so it is active with its own probability p_k
    and the set with Σ p; its value is U[0, 1].  Other features are independent.
    (instances, batch_size, features)."""
    p = feature_probability
    x = generate_batch(p, batch_size, generator)
    for members in sets:
        members = list(members)
        upper = p[:, members].cumsum(dim=1)[:, None, :]  # (instances, 1, k)
        lower = upper - p[:, None, members]
        u = torch.rand(p.shape[0], batch_size, 1, device=p.device, generator=generator)
        active = (u >= lower) & (u < upper)  # (instances, batch, k): at most one True
        values = torch.rand(p.shape[0], batch_size, len(members), device=p.device, generator=generator)
        x[:, :, members] = values * active
    return x


# --------------------------------------------------------------------------------------
# The model
# --------------------------------------------------------------------------------------


def _per_instance(value, n_instances: int, n_features: int, name: str) -> Tensor:
    """Broadcast a scalar, (features,), (instances, 1) or (instances, features) value."""
    t = torch.as_tensor(value, dtype=torch.float32)
    if t.dim() == 1 and t.shape[0] == n_instances and n_instances != n_features:
        t = t[:, None]
    try:
        return torch.broadcast_to(t, (n_instances, n_features)).clone()
    except RuntimeError:
        raise ValueError(
            f"{name} has shape {tuple(t.shape)}; expected a scalar, (features,)={n_features}, "
            f"(instances, 1) or (instances, features)=({n_instances}, {n_features})"
        ) from None


def per_instance(value, n_instances: int, n_features: int, name: str = "value") -> Tensor:
    """A scalar, (features,), (instances, 1) or (instances, features) value as a float32
    tensor of shape (instances, features) (feature_probability and importance)."""
    return _per_instance(value, n_instances, n_features, name)


def importance_decay(n_features: int, decay: float) -> Tensor:
    """Importance I_i = decay**i for i = 0..n_features-1 (the paper uses 0.7 for n=20)."""
    return decay ** torch.arange(n_features, dtype=torch.float32)


class ToyModel(nn.Module):
    """The paper's toy model: x' = act(Wᵀ W x + b), with a leading instance dimension.

    Args:
        n_features: n, the number of features.
        n_hidden: m, the hidden dimension (m < n for superposition).
        n_instances: independent models trained together.
        activation: ``"relu"`` (the ReLU-output model) or ``"linear"``.
        feature_probability: 1 - S; scalar, (features,), (instances, 1) or (instances, features).
        importance: I; same shapes as feature_probability.
        device: defaults to ``get_device()``.
        generator: optional ``torch.Generator`` for the Xavier-normal initialisation of W
            (b starts at zero), so instances are reproducible without touching global state.
        correlated_sets: lists of feature indices that are active together, e.g. [[0, 1]];
            the features of a set need the same feature_probability.
        anticorrelated_sets: lists of feature indices of which at most one is active; the
            probabilities of a set's features must sum to at most 1 (the set is active with
            probability Σ p, the paper's 1 - S for the set).
            Both kinds are shared by all instances and must not overlap
            (``generate_correlated_batch`` draws the data).
        batch_fn: a function ``batch_fn(feature_probability, batch_size, generator)`` that draws
            the batches instead (chapter 02's learner-written generators, with their sets
            bound in); ``train`` then draws every batch with it, with ``fast=True`` too (one
            call per chunk of instances, from the generator seeded with ``seed``).
    """

    def __init__(
        self,
        n_features: int,
        n_hidden: int,
        n_instances: int = 1,
        activation: str = "relu",
        feature_probability=1.0,
        importance=1.0,
        device: torch.device | str | None = None,
        generator: torch.Generator | None = None,
        correlated_sets=None,
        anticorrelated_sets=None,
        batch_fn=None,
    ):
        super().__init__()
        if batch_fn is not None and not callable(batch_fn):
            raise TypeError(f"batch_fn must be a function (feature_probability, batch_size, generator), got {batch_fn!r}")
        if batch_fn is not None and (correlated_sets or anticorrelated_sets):
            raise ValueError("pass either batch_fn or correlated_sets/anticorrelated_sets, not both: "
                             "a batch_fn draws the whole batch, sets included")
        self.batch_fn = batch_fn
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {ACTIVATIONS}, got {activation!r}")
        for name, v in (("n_features", n_features), ("n_hidden", n_hidden), ("n_instances", n_instances)):
            if int(v) != v or v < 1:
                raise ValueError(f"{name} must be a positive integer, got {v!r}")
        device = get_device() if device is None else torch.device(device)
        self.n_features, self.n_hidden, self.n_instances = n_features, n_hidden, n_instances
        self.activation = activation
        p = _per_instance(feature_probability, n_instances, n_features, "feature_probability")
        if (p < 0).any() or (p > 1).any():
            raise ValueError("feature_probability must lie in [0, 1]")
        imp = _per_instance(importance, n_instances, n_features, "importance")
        self.correlated_sets = feature_sets(correlated_sets, n_features, "correlated_sets")
        self.anticorrelated_sets = feature_sets(anticorrelated_sets, n_features, "anticorrelated_sets")
        check_feature_sets(p, self.correlated_sets, self.anticorrelated_sets)
        # Xavier-normal per instance: std = sqrt(2 / (fan_in + fan_out)).
        std = math.sqrt(2.0 / (n_hidden + n_features))
        W = torch.randn(n_instances, n_hidden, n_features, generator=generator) * std
        self.W = nn.Parameter(W.to(device))
        self.b = nn.Parameter(torch.zeros(n_instances, n_features, device=device))
        self.register_buffer("feature_probability", p.to(device))
        self.register_buffer("importance", imp.to(device))

    def forward(self, x: Tensor) -> Tensor:
        """x' = act(Wᵀ W x + b): (instances, batch, features) -> (instances, batch, features)."""
        return toy_forward(self.W, self.b, x, self.activation)

    def loss(self, x: Tensor) -> Tensor:
        """Mean over batch and features of importance · (x - x')², shape (instances,)."""
        return importance_weighted_loss(self(x), x, self.importance)

    def generate_batch(self, batch_size: int, generator: torch.Generator | None = None) -> Tensor:
        """A fresh batch (instances, batch_size, features) from the model's data distribution."""
        if self.batch_fn is not None:
            return self.batch_fn(self.feature_probability, batch_size, generator)
        return generate_correlated_batch(self.feature_probability, batch_size, self.correlated_sets,
                                         self.anticorrelated_sets, generator)

    def extra_repr(self) -> str:
        sets = "".join(f", {name}={list(map(list, v))}" for name, v in
                       (("correlated_sets", self.correlated_sets), ("anticorrelated_sets", self.anticorrelated_sets)) if v)
        return (
            f"n_features={self.n_features}, n_hidden={self.n_hidden}, "
            f"n_instances={self.n_instances}, activation={self.activation!r}{sets}"
        )


# --------------------------------------------------------------------------------------
# Training
# --------------------------------------------------------------------------------------


@dataclass
class TrainResult:
    """What ``train`` returns: the per-instance loss at each logged step."""

    steps: list[int] = field(default_factory=list)
    losses: list[Tensor] = field(default_factory=list)  # each (instances,)
    seconds: float = 0.0
    snapshot_steps: list[int] = field(default_factory=list)
    snapshots: list[Tensor] = field(default_factory=list)  # each W, (instances, hidden, features)
    bias_snapshots: list[Tensor] = field(default_factory=list)  # each b, (instances, features)

    @classmethod
    def from_loop(cls, loop: TrainingLoop) -> "TrainResult":
        """The record a finished ``TrainingLoop`` kept (snapshots of W and b, if any)."""
        return cls(steps=loop.steps_logged, losses=loop.history.get("loss", []), seconds=loop.seconds,
                   snapshot_steps=loop.snapshot_steps, snapshots=loop.snapshots.get("W", []),
                   bias_snapshots=loop.snapshots.get("b", []))

    @property
    def final_loss(self) -> Tensor:
        """Per-instance loss at the last logged step, shape (instances,)."""
        return self.losses[-1]

    def loss_curve(self) -> Tensor:
        """(logged steps, instances)."""
        return torch.stack(self.losses)

    def W_history(self) -> Tensor:
        """W at each snapshot step, (snapshots, instances, hidden, features), on the CPU."""
        if not self.snapshots:
            raise ValueError("no snapshots were taken: pass snapshot_every= to train()")
        return torch.stack(self.snapshots)

    def b_history(self) -> Tensor:
        """b at each snapshot step, (snapshots, instances, features), on the CPU."""
        if not self.bias_snapshots:
            raise ValueError("no snapshots were taken: pass snapshot_every= to train()")
        return torch.stack(self.bias_snapshots)


def lr_schedule(name: str) -> Callable[[int, int], float]:
    """Learning-rate multipliers used in the course: constant, cosine, linear decay."""
    schedules = {
        "constant": lambda step, steps: 1.0,
        "cosine": lambda step, steps: 0.5 * (1 + math.cos(math.pi * step / steps)),
        "linear": lambda step, steps: 1.0 - step / steps,
    }
    if name not in schedules:
        raise ValueError(f"lr schedule must be one of {sorted(schedules)}, got {name!r}")
    return schedules[name]


def train(
    model: nn.Module,
    steps: int = 10_000,
    batch_size: int = 1024,
    lr: float = 1e-3,
    schedule: str = "constant",
    seed: int = 0,
    log_every: int | None = None,
    progress: bool = True,
    description: str = "training",
    snapshot_every: int | None = None,
    weight_decay: float = 0.0,
    fast: bool = False,
    sampler: str = "auto",
) -> TrainResult:
    """Train every instance of ``model`` with Adam on a fresh batch each step; returns the
    per-instance loss history.

    ``model`` needs ``loss(x) -> (instances,)`` and ``generate_batch(batch_size, generator)``
    (``ToyModel`` has both).  The learning rate at step t is ``lr * lr_schedule(schedule)(t,
    steps)``; the batches come from one generator seeded with ``seed``; the summed loss trains
    every instance on its own.  ``weight_decay > 0`` uses AdamW (decoupled weight decay).
    The loss is logged every ``log_every`` steps (default: 100 records) and the progress bar
    shows its mean; a NaN loss raises ``FloatingPointError``.  ``snapshot_every=k`` keeps CPU
    copies of W and b before step 0, every k steps and after the last
    (``result.W_history()``, ``result.b_history()``).

    ``fast=True`` takes the same steps with hand-derived gradients (``course_utils/_fast/toy.py``):
    for a ``ToyModel``, or a model that is one in all but class (chapter 01's learner-written
    ``ToyModel``: W, b, importance, feature_probability, activation and the sizes), which it
    trains with the toy model's maths, not the model's own forward.  Its batches come from
    the model's ``batch_fn`` when it has one, else (``sampler="auto"``) from a NumPy sampler
    on the CPU; ``sampler="torch"`` draws this loop's batches, so both take the same steps.
    """
    if int(steps) != steps or steps < 1 or int(batch_size) != batch_size or batch_size < 1:
        raise ValueError(f"steps and batch_size must be positive integers, got {steps!r}, {batch_size!r}")
    if weight_decay < 0:
        raise ValueError(f"weight_decay must be >= 0, got {weight_decay!r}")
    if fast:
        if weight_decay:
            raise ValueError("the fast path is plain Adam; pass fast=False to train with weight decay")
        from ._fast import toy

        return toy.train(model, steps, batch_size, lr, schedule, seed, log_every, progress, description,
                         snapshot_every, sampler)
    multiplier = lr_schedule(schedule)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = (torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay) if weight_decay
                 else torch.optim.Adam(params, lr=lr))
    generator = torch.Generator(device=params[0].device).manual_seed(seed)
    loop = TrainingLoop(steps, description, progress, log_every=log_every, snapshot_every=snapshot_every)
    for step in loop:
        if loop.snapshot_due(step):
            loop.snapshot(step, W=model.W, b=model.b)
        for group in optimizer.param_groups:
            group["lr"] = lr * multiplier(step, steps)
        optimizer.zero_grad(set_to_none=True)
        loss = model.loss(model.generate_batch(batch_size, generator))  # (instances,)
        loss.sum().backward()
        optimizer.step()
        if loop.logging(step):
            loop.log(step, loss)
    if loop.snapshot_due(steps):
        loop.snapshot(steps, W=model.W, b=model.b)
    return TrainResult.from_loop(loop)


def train_model(
    model: nn.Module,
    steps: int = 10_000,
    batch_size: int = 1024,
    lr: float = 1e-3,
    schedule: str = "constant",
    seed: int = 0,
    description: str = "training",
    progress: bool = True,
) -> Tensor:
    """The paper's training loop, written plainly: Adam on a fresh batch every step.

    ``model`` needs ``loss(x) -> (instances,)`` and ``generate_batch(batch_size, generator)``.
    The learning rate at step t is ``lr * lr_schedule(schedule)(t, steps)``; the batches come
    from one generator seeded with ``seed``.  Summing the per-instance losses trains every
    instance on its own loss (no parameter is shared).  Returns the loss of every step,
    (steps, instances).  Chapter 01's learners write this loop; ``train`` is the same loop
    with a progress bar, NaN guard and logged history (and ``fast=True``, tested equal to it).
    In smoke mode (``training.SMOKE_STEPS_ENV``) it stops early, as ``train`` does.
    """
    from tqdm.auto import tqdm

    multiplier = lr_schedule(schedule)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    generator = torch.Generator(device=model.W.device).manual_seed(seed)
    run, description = smoke_cap(steps, description)
    losses = torch.zeros(run, model.n_instances, device=model.W.device)
    for step in tqdm(range(run), desc=description, disable=not progress, mininterval=0.5):
        for group in optimizer.param_groups:
            group["lr"] = lr * multiplier(step, steps)
        loss = model.loss(model.generate_batch(batch_size, generator))  # (instances,)
        optimizer.zero_grad()
        loss.sum().backward()
        optimizer.step()
        losses[step] = loss.detach()
    return losses


def select_best(model: ToyModel, losses: Tensor, group_size: int) -> Tensor:
    """Indices of the lowest-loss instance in each consecutive group of ``group_size`` seeds.

    Optimisation in 2-D has local minima, so the course trains several seeds per setting
    and keeps the best one.  losses: (instances,) -> (instances // group_size,) indices.
    """
    if losses.shape[0] % group_size:
        raise ValueError("the number of instances must be a multiple of group_size")
    grouped = losses.reshape(-1, group_size)
    return grouped.argmin(dim=1) + torch.arange(grouped.shape[0]) * group_size


@torch.no_grad()
def evaluate_loss(model: ToyModel, batch_size: int = 100_000, seed: int = 12345) -> Tensor:
    """Per-instance loss on one large fresh batch, a low-noise estimate of the true loss."""
    gen = torch.Generator(device=model.W.device).manual_seed(seed)
    total = torch.zeros(model.n_instances, device=model.W.device)
    chunks = max(1, batch_size // 10_000)
    for _ in range(chunks):
        x = model.generate_batch(batch_size // chunks, gen)
        total += model.loss(x)
    return (total / chunks).cpu()


# --------------------------------------------------------------------------------------
# The n=2, m=1 phase diagram, trained
# --------------------------------------------------------------------------------------


@dataclass
class PhaseDiagram:
    """A trained n=2, m=1 phase diagram over relative importance × density."""

    relative_importance: Tensor  # (R,)
    density: Tensor  # (D,)
    W: Tensor  # (R, D, 1, 2) the best seed's weights per cell
    b: Tensor  # (R, D, 2)
    loss: Tensor  # (R, D) the best seed's evaluated loss
    seconds: float


def train_phase_diagram(
    relative_importance: Tensor,
    density: Tensor,
    seeds: int = 4,
    steps: int = 3_000,
    lr: float = 1e-3,
    seed: int = 0,
    progress: bool = True,
) -> PhaseDiagram:
    """Train the n=2, m=1 ReLU model at every (relative importance, density) cell.

    Feature 1 has importance 1, feature 2 ``relative_importance``; both have the cell's
    density.  Each cell trains ``seeds`` instances (one batched model of R·D·seeds
    instances) and keeps the lowest-loss one, since 1-D optimisation has local minima.
    """
    r = torch.as_tensor(relative_importance, dtype=torch.float32)
    s = torch.as_tensor(density, dtype=torch.float32)
    rr, ss = torch.meshgrid(r, s, indexing="ij")
    importance = torch.stack([torch.ones_like(rr), rr], dim=-1).reshape(-1, 2).repeat_interleave(seeds, 0)
    probability = ss.reshape(-1, 1).repeat_interleave(seeds, 0)
    model = ToyModel(2, 1, importance.shape[0], feature_probability=probability, importance=importance,
                     device="cpu", generator=torch.Generator().manual_seed(seed))
    result = train(model, steps=steps, lr=lr, seed=seed, progress=progress, description="phase diagram", fast=True)
    losses = evaluate_loss(model, batch_size=20_000)
    best = select_best(model, losses, seeds)
    R, D = len(r), len(s)
    return PhaseDiagram(r, s, model.W.detach()[best].reshape(R, D, 1, 2),
                        model.b.detach()[best].reshape(R, D, 2), losses[best].reshape(R, D), result.seconds)
