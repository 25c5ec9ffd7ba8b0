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

Training (``train``) uses Adam with a fresh batch every step, as in the paper's notebook.
On a CPU it runs a fused step with analytic gradients, one instance chunk at a time so the
working set stays in cache, and a NumPy batch sampler (PCG64, one uniform per entry; a
geometric-gap sampler for sparse instances).  ``benchmarks/toy_models.py`` measures it;
``tests/test_toy_models.py`` proves its gradients equal autograd's.  Any other model (or
``fused=False``) trains through autograd with the same loop.
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


@dataclass(frozen=True)
class SetLayout:
    """How a batch with feature sets is drawn from one array of uniforms u.

    u is feature-major, (chunk, n_groups + n_fresh, batch).  Rows 0..G-1 hold one uniform
    per group (an ungrouped feature, a correlated set or an anticorrelated set).  Feature i
    reads its group's row ``group[i]`` and is active when lo[i] <= u < hi[i]: for an
    ungrouped feature or a correlated set [lo, hi) = [0, p); the members of an
    anticorrelated set tile [0, Σ p) with [0, p_a), [p_a, p_a + p_b), ..., so at most one of
    them is active.  An active feature's value is t = (u - lo) / (hi - lo), which is
    U[0, 1] given that it is active.  In a correlated set only the first member may use t:
    the others (``fresh_index``) need independent values, read from the extra rows G...
    So a batch costs at most one uniform per feature.
    """

    group: Tensor  # (features,) long, each feature's row of u
    fresh_index: Tensor  # (n_fresh,) long, correlated-set members after the first, ascending
    n_groups: int
    lo: Tensor  # (instances, features)
    inv_width: Tensor  # (instances, features), 1 / (hi - lo) rounded up, so u >= hi gives t >= 1

    @property
    def n_uniforms(self) -> int:
        return self.n_groups + len(self.fresh_index)


def set_layout(feature_probability: Tensor, correlated_sets=(), anticorrelated_sets=()) -> SetLayout:
    """Validate the sets against the per-feature probabilities and build their ``SetLayout``.

    ``feature_probability`` (instances, features) keeps its meaning for every feature: the
    probability that it is nonzero.  So the features of a correlated set must share one
    probability (the set's), and an anticorrelated set is nonzero with probability
    Σ_i p_i over its members, which must not exceed 1.
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
    leader = torch.arange(n)
    lo, hi = torch.zeros_like(p), p.clone()
    for members in correlated:
        idx = list(members)
        if not torch.allclose(p[:, idx], p[:, idx[:1]].expand(-1, len(idx)), rtol=0, atol=1e-6):
            raise ValueError(f"the features of correlated set {idx} must have the same feature_probability "
                             "(they are active together)")
        leader[idx] = idx[0]
        hi[:, idx] = p[:, idx[:1]]
    for members in anticorrelated:
        idx = list(members)
        cumulative = p[:, idx].cumsum(dim=1)
        if (cumulative[:, -1] > 1 + 1e-6).any():
            raise ValueError(f"anticorrelated set {idx}: its features' probabilities sum to more than 1 "
                             f"(max {cumulative[:, -1].max().item():.3g}); at most one of them can be active")
        leader[idx] = idx[0]
        hi[:, idx] = cumulative
        lo[:, idx] = torch.cat([torch.zeros_like(cumulative[:, :1]), cumulative[:, :-1]], dim=1)  # == hi of the previous
    leaders, group = torch.unique(leader, return_inverse=True)  # groups numbered 0..G-1
    fresh_index = torch.tensor(sorted(i for members in correlated for i in members[1:]), dtype=torch.long)
    # 1 / (hi - lo) in float32, rounded up: then u >= hi gives (u - lo) · inv_width >= 1 exactly.
    width = (hi - lo).double().clamp_min(1e-12)
    inv_width = (1.0 / width).float()
    inv_width = torch.where(inv_width.double() < 1.0 / width, torch.nextafter(inv_width, torch.tensor(math.inf)),
                            inv_width)
    device = feature_probability.device
    return SetLayout(group.to(device), fresh_index.to(device), len(leaders), lo.to(device), inv_width.to(device))


def features_from_uniforms(layout: SetLayout, u: Tensor, instances: slice = slice(None),
                           out: Tensor | None = None) -> Tensor:
    """x (chunk, batch, features) from feature-major uniforms u (chunk, layout.n_uniforms,
    batch) by the ``SetLayout`` rule; ``instances`` picks the chunk's rows of the layout.
    Written into ``out`` when given.  (Feature-major keeps every per-feature broadcast
    contiguous over the batch, which is what makes this fast on a CPU.)
    """
    t = torch.index_select(u, 1, layout.group)  # each feature's activity uniform
    t.sub_(layout.lo[instances, :, None]).mul_(layout.inv_width[instances, :, None])
    # Keep t where 0 <= t < 1, else 0: -threshold(-t, -1, 0) zeroes t >= 1, then relu t < 0.
    F.threshold_(t.neg_(), -1.0, 0.0)
    t.neg_().relu_()
    if len(layout.fresh_index):  # correlated sets: v · [set active], v independent
        rows = t.index_select(1, layout.fresh_index).sign_().mul_(u[:, layout.n_groups:, :])
        t.index_copy_(1, layout.fresh_index, rows)
    x = t.transpose(1, 2)
    return out.copy_(x) if out is not None else x.contiguous()


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
    this is exactly ``generate_batch`` (the same random stream).
    """
    if not correlated_sets and not anticorrelated_sets:
        return generate_batch(feature_probability, batch_size, generator)
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
    draws the same distribution with fewer random numbers (the fast path)."""
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
            bound in); ``train`` then draws every batch with it, on the fused step too (one
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
        set_layout(p, self.correlated_sets, self.anticorrelated_sets)  # validates the sets against p
        # Xavier-normal per instance: std = sqrt(2 / (fan_in + fan_out)).
        std = math.sqrt(2.0 / (n_hidden + n_features))
        W = torch.randn(n_instances, n_hidden, n_features, generator=generator) * std
        self.W = nn.Parameter(W.to(device))
        self.b = nn.Parameter(torch.zeros(n_instances, n_features, device=device))
        self.register_buffer("feature_probability", p.to(device))
        self.register_buffer("importance", imp.to(device))

    def forward(self, x: Tensor) -> Tensor:
        """x: (instances, batch, features) -> x': (instances, batch, features)."""
        return toy_forward(self.W, self.b, x, self.activation)

    def loss(self, x: Tensor) -> Tensor:
        """Per-instance importance-weighted loss on a batch, shape (instances,)."""
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
# Fast batch sampling on the CPU
# --------------------------------------------------------------------------------------


class NumpySampler:
    """Fills ``out`` (batch, features) with one instance's sparse features, fast, on the CPU.

    Same distribution as ``generate_batch``, fewer random numbers: a single uniform u per
    entry decides both activity (u < p) and value (u / p is U[0, 1] given u < p).  When every
    feature of an instance has the same small p, the active positions are drawn directly as
    geometric gaps, so the cost scales with the number of active entries, not the batch.
    With correlated or anticorrelated sets it draws ``generate_correlated_batch``'s
    distribution instead (``features_from_uniforms``, at most one uniform per feature).
    """

    SPARSE_BELOW = 0.25  # geometric-gap sampler below this probability ...
    SPARSE_MIN_SIZE = 65_536  # ... for instances with at least this many entries per batch

    def __init__(self, feature_probability: Tensor, seed: int, correlated_sets=(), anticorrelated_sets=()):
        self.rng = np.random.default_rng(seed)
        p = feature_probability.detach().to("cpu", torch.float32)
        self.p = p
        self.layout = (set_layout(p, correlated_sets, anticorrelated_sets)
                       if correlated_sets or anticorrelated_sets else None)
        self.neg_inv_p = -1.0 / p.clamp_min(1e-12)  # (instances, features)
        uniform = (p == p[:, :1]).all(dim=1)
        self.scalar_p = [float(p[i, 0]) if bool(uniform[i]) else None for i in range(p.shape[0])]

    def fill(self, instances: slice, out: Tensor) -> Tensor:
        """Fill ``out`` (chunk, batch, features) with a fresh batch for ``instances``."""
        if self.layout is not None:
            return self._fill_sets(instances, out)
        per_instance = out[0].numel()
        if per_instance >= self.SPARSE_MIN_SIZE:
            for k, i in enumerate(range(instances.start, instances.stop)):
                p = self.scalar_p[i]
                if p is not None and p < self.SPARSE_BELOW:
                    self._fill_sparse(p, out[k])
                else:
                    self._fill_dense(out[k], self.neg_inv_p[i])
            return out
        return self._fill_dense(out, self.neg_inv_p[instances, None, :])

    def _fill_dense(self, out: Tensor, neg_inv_p: Tensor) -> Tensor:
        self.rng.random(dtype=np.float32, out=out.numpy())
        # x = u/p if u < p else 0, computed as -threshold(-u/p, -1, 0): two fused passes.
        out.mul_(neg_inv_p)
        F.threshold_(out, -1.0, 0.0)
        return out.neg_()

    def _fill_sets(self, instances: slice, out: Tensor) -> Tensor:
        chunk, batch, _ = out.shape
        u = torch.from_numpy(self.rng.random((chunk, self.layout.n_uniforms, batch), dtype=np.float32))
        return features_from_uniforms(self.layout, u, instances, out=out)

    def _fill_sparse(self, p: float, out: Tensor) -> Tensor:
        out.zero_()
        if p <= 0.0:
            return out
        size = out.numel()
        log_q = math.log1p(-p)
        draws = int(size * p * 1.2 + 64)
        while True:
            gaps = np.floor(np.log(self.rng.random(draws)) / log_q).astype(np.int64) + 1
            positions = np.cumsum(gaps) - 1
            if positions[-1] >= size:
                break
            draws *= 2
        positions = positions[positions < size]
        values = self.rng.random(len(positions), dtype=np.float32)
        out.view(-1)[torch.from_numpy(positions)] = torch.from_numpy(values)
        return out


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


def _has_toy_model_parts(model) -> bool:
    """Whether the fused step can train ``model`` as the toy model x' = act(WᵀWx + b): a learner's
    own ToyModel class (chapter 01), given explicitly with ``fused=True``."""
    parts = ("W", "b", "importance", "feature_probability", "activation", "n_hidden", "n_features", "n_instances")
    return all(hasattr(model, name) for name in parts) and getattr(model, "activation", None) in ACTIVATIONS


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


def fused_loss_and_grads(
    model: ToyModel,
    x: Tensor,
    instances: slice,
    grad_W: Tensor | None = None,
    grad_b: Tensor | None = None,
    with_loss: bool = True,
    workspace: dict | None = None,
) -> tuple[Tensor | None, Tensor, Tensor]:
    """Loss and analytic gradients of the summed per-instance loss for a chunk of instances.

    x: (chunk, batch, features) drawn for ``instances``.  Returns (loss (chunk,) or None,
    dL/dW (chunk, hidden, features), dL/db (chunk, features)), written into ``grad_W`` and
    ``grad_b`` when given.  With h = W x, z = Wᵀ h + b, out = act(z) and
    g = 2 I (out - x) act'(z) / (batch · features):
        dL/dW = h gᵀ + W g xᵀ summed over the batch (W is used twice), dL/db = Σ_batch g.
    ``workspace`` (a dict the caller keeps between steps) holds the intermediates, so a
    training loop allocates nothing per step.
    """
    ws = {} if workspace is None else workspace
    chunk, batch, n = x.shape
    key = (chunk, batch)
    if ws.get("key") != key:
        hidden = model.n_hidden
        ws.update(key=key, h=x.new_empty(chunk, batch, hidden), grad_h=x.new_empty(chunk, batch, hidden),
                  z=x.new_empty(chunk, batch, n), g=x.new_empty(chunk, batch, n))
    W = model.W.detach()[instances]
    b = model.b.detach()[instances]
    importance = model.importance[instances, None, :]
    h = torch.bmm(x, W.transpose(1, 2), out=ws["h"])  # (chunk, batch, hidden)
    z = torch.baddbmm(b[:, None, :], h, W, out=ws["z"])  # (chunk, batch, features)
    relu = model.activation == "relu"
    out = z.relu_() if relu else z
    g = torch.sub(out, x, out=ws["g"])  # (chunk, batch, features)
    loss = (importance * g.square()).mean(dim=(1, 2)) if with_loss else None
    if relu:  # act'(z) = 0 where out == 0
        torch.ops.aten.threshold_backward.grad_input(g, out, 0.0, grad_input=g)
    # The per-feature factor s = 2 I / (batch · features) multiplies g's columns; it is
    # folded into the small (hidden, features) matrices instead of a pass over the batch.
    s = importance * (2.0 / (batch * n))  # (chunk, 1, features)
    grad_W = torch.bmm(h.transpose(1, 2), g, out=grad_W).mul_(s)
    grad_h = torch.bmm(g, (W * s).transpose(1, 2), out=ws["grad_h"])  # (chunk, batch, hidden)
    grad_W.baddbmm_(grad_h.transpose(1, 2), x)
    grad_b = torch.sum(g, dim=1, out=grad_b).mul_(s[:, 0, :])
    return loss, grad_W, grad_b


def _chunk_size(model: ToyModel, batch_size: int) -> int:
    """Instances per fused chunk: keep one chunk's (batch, features) tensors near 1 MB on CPU."""
    if model.W.device.type != "cpu":
        return model.n_instances
    per_instance = batch_size * model.n_features * 4
    return max(1, min(model.n_instances, (1 << 20) // max(per_instance, 1)))


class _Adam:
    """Adam (Kingma & Ba) over a few tensors with foreach ops: the same update as
    ``torch.optim.Adam`` with default betas, at a fraction of its per-step overhead."""

    def __init__(self, params: list[Tensor], betas=(0.9, 0.999), eps: float = 1e-8):
        self.params = params
        self.beta1, self.beta2, self.eps = betas[0], betas[1], eps
        self.m = [torch.zeros_like(p) for p in params]
        self.v = [torch.zeros_like(p) for p in params]
        self.t = 0

    @torch.no_grad()
    def step(self, grads: list[Tensor], lr: float) -> None:
        self.t += 1
        torch._foreach_lerp_(self.m, grads, 1 - self.beta1)
        torch._foreach_mul_(self.v, self.beta2)
        torch._foreach_addcmul_(self.v, grads, grads, 1 - self.beta2)
        denom = torch._foreach_sqrt(self.v)
        torch._foreach_div_(denom, math.sqrt(1 - self.beta2**self.t))
        torch._foreach_add_(denom, self.eps)
        torch._foreach_addcdiv_(self.params, self.m, denom, -lr / (1 - self.beta1**self.t))


def train(
    model: nn.Module,
    steps: int = 10_000,
    batch_size: int = 1024,
    lr: float = 1e-3,
    schedule: str = "constant",
    seed: int = 0,
    log_every: int | None = None,
    progress: bool = True,
    fused: bool | None = None,
    description: str = "training",
    snapshot_every: int | None = None,
    weight_decay: float = 0.0,
    sampler: str = "auto",
) -> TrainResult:
    """Train every instance of ``model`` with Adam on fresh batches; returns the loss history.

    ``model`` needs ``loss(x) -> (instances,)`` and ``generate_batch(batch_size, generator)``
    (``ToyModel`` has both).  ``fused=None`` picks the fast analytic-gradient step for a
    ``ToyModel`` and autograd for anything else; ``fused=False`` forces autograd; ``fused=True``
    also takes a model that is a toy model in all but class (chapter 01's learner-written
    ``ToyModel``: W, b, importance, feature_probability, activation and the sizes), and trains
    its W and b with the toy model's maths, not the model's own forward.  The loss
    is recorded every ``log_every`` steps (default: 100 records); the progress bar (tqdm)
    shows the mean loss over instances.  ``seed`` fixes the data stream.
    ``snapshot_every=k`` also keeps CPU copies of W and b before step 0, every k steps and
    after the last step (``result.snapshot_steps``, ``result.W_history()``,
    ``result.b_history()``), for learning dynamics.
    ``weight_decay > 0`` trains with AdamW (decoupled weight decay) instead of Adam; it needs
    the autograd step.
    ``sampler="auto"`` draws the fused step's batches with NumPy on the CPU (fast) and with
    torch elsewhere, unless the model has a ``batch_fn``, which then draws them; ``sampler="torch"`` always draws them from torch's generator seeded with
    ``seed``, the stream ``train_model`` uses, so that the two can be compared step by step.
    """
    import time

    from tqdm.auto import tqdm

    if int(steps) != steps or steps < 1 or int(batch_size) != batch_size or batch_size < 1:
        raise ValueError(f"steps and batch_size must be positive integers, got {steps!r}, {batch_size!r}")
    batch_fn = getattr(model, "batch_fn", None)
    if fused is None:  # subclasses (e.g. computation.NeuronModel) change the forward pass
        fused = type(model) is ToyModel
    if fused and type(model) is not ToyModel and not _has_toy_model_parts(model):
        raise TypeError("the fused step needs a ToyModel (or a model with its parts: W, b, importance, "
                        f"feature_probability, activation and sizes); pass fused=False for other models")
    if weight_decay < 0:
        raise ValueError(f"weight_decay must be >= 0, got {weight_decay!r}")
    if fused and weight_decay:
        raise ValueError("the fused step is plain Adam; pass fused=False to train with weight decay")
    log_every = log_every or max(1, steps // 100)
    if snapshot_every is not None and (int(snapshot_every) != snapshot_every or snapshot_every < 1):
        raise ValueError(f"snapshot_every must be a positive integer or None, got {snapshot_every!r}")
    multiplier = lr_schedule(schedule)
    params = [p for p in model.parameters() if p.requires_grad]
    device = params[0].device
    torch_gen = torch.Generator(device=device).manual_seed(seed)
    if fused:
        optimizer = _Adam([model.W.data, model.b.data])
        grads = [torch.empty_like(model.W), torch.empty_like(model.b)]
        chunk = _chunk_size(model, batch_size)
        sets = (getattr(model, "correlated_sets", ()), getattr(model, "anticorrelated_sets", ()))
        if sampler not in ("auto", "torch"):
            raise ValueError(f"sampler must be 'auto' or 'torch', got {sampler!r}")
        numpy_sampler = device.type == "cpu" and sampler == "auto" and batch_fn is None
        sampler = NumpySampler(model.feature_probability, seed, *sets) if numpy_sampler else None
        layout = set_layout(model.feature_probability, *sets) if any(sets) and sampler is None else None
        x_buffer = torch.empty(chunk, batch_size, model.n_features) if sampler else None
        workspace: dict = {}
    else:
        optimizer = (torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay) if weight_decay
                     else torch.optim.Adam(params, lr=lr))
    result = TrainResult()
    bar = tqdm(total=steps, desc=description, disable=not progress, mininterval=0.5)
    start = time.perf_counter()

    def snapshot(step: int) -> None:
        result.snapshot_steps.append(step)
        result.snapshots.append(model.W.detach().cpu().clone())
        result.bias_snapshots.append(model.b.detach().cpu().clone())

    for step in range(steps):
        if snapshot_every and step % snapshot_every == 0:
            snapshot(step)
        step_lr = lr * multiplier(step, steps)
        log_now = step % log_every == 0 or step == steps - 1
        if fused:
            losses = []
            for first in range(0, model.n_instances, chunk):
                sl = slice(first, min(first + chunk, model.n_instances))
                if batch_fn is not None:  # the model's own sampler (chapter 02: the learner's)
                    x = batch_fn(model.feature_probability[sl], batch_size, torch_gen)
                elif sampler is not None:
                    x = sampler.fill(sl, x_buffer[: sl.stop - sl.start])
                elif layout is not None:
                    u = torch.rand((sl.stop - sl.start, layout.n_uniforms, batch_size), device=device,
                                   generator=torch_gen)
                    x = features_from_uniforms(layout, u, sl)
                else:
                    x = generate_batch(model.feature_probability[sl], batch_size, torch_gen)
                loss, _, _ = fused_loss_and_grads(
                    model, x, sl, grads[0][sl], grads[1][sl], log_now, workspace
                )
                losses.append(loss)
            optimizer.step(grads, step_lr)
            loss = torch.cat(losses) if log_now else None
        else:
            for group in optimizer.param_groups:
                group["lr"] = step_lr
            optimizer.zero_grad(set_to_none=True)
            loss = model.loss(model.generate_batch(batch_size, torch_gen))
            loss.sum().backward()
            optimizer.step()
        if log_now:
            loss_cpu = loss.detach().float().cpu()
            if not torch.isfinite(loss_cpu).all():
                bar.close()
                raise FloatingPointError(
                    f"the loss became NaN or infinite at step {step} (instances "
                    f"{torch.nonzero(~torch.isfinite(loss_cpu)).flatten().tolist()}); lower the learning rate"
                )
            result.steps.append(step)
            result.losses.append(loss_cpu)
            bar.set_postfix(loss=f"{loss_cpu.mean().item():.4g}", refresh=False)
        bar.update(1)
    bar.close()
    if snapshot_every:
        snapshot(steps)
    result.seconds = time.perf_counter() - start
    return result


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
    (steps, instances).  Chapter 01's learners write this loop; ``train`` is the fast version
    (fused analytic gradients on the CPU), tested equal to it.
    """
    from tqdm.auto import tqdm

    multiplier = lr_schedule(schedule)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    generator = torch.Generator(device=model.W.device).manual_seed(seed)
    losses = torch.zeros(steps, model.n_instances, device=model.W.device)
    for step in tqdm(range(steps), desc=description, disable=not progress, mininterval=0.5):
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
    result = train(model, steps=steps, lr=lr, seed=seed, progress=progress, description="phase diagram")
    losses = evaluate_loss(model, batch_size=20_000)
    best = select_best(model, losses, seeds)
    R, D = len(r), len(s)
    return PhaseDiagram(r, s, model.W.detach()[best].reshape(R, D, 1, 2),
                        model.b.detach()[best].reshape(R, D, 2), losses[best].reshape(R, D), result.seconds)
