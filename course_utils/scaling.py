"""Superposition yields robust neural scaling (Liu, Liu & Gore 2025, arXiv 2505.10465).

The paper trains Elhage et al.'s ReLU-output toy model on features whose frequencies follow
a power law, and sweeps the hidden size m.  A *signed* weight decay γ sets how much
superposition the model uses:

    γ > 0   ordinary decay: rare features are dropped, only about m are represented
            (weak superposition); the loss is what the dropped features cost,
            L ≈ (1/n) Σ_{i>m} Var(x_i) ∝ m^-α for p_i ∝ i^-(1+α);
    γ < 0   every feature's norm is pulled towards one, so all n are represented and
            overlap (strong superposition); the loss is their interference, and the mean
            squared overlap of n ≫ m directions in m dimensions is 1/m, so L ∝ 1/m
            whatever the frequencies.

At α = 1 the two laws coincide.  Notation (the same as ``toy_models``, the paper writes
x W Wᵀ with features as rows of W):

    W    (instances, hidden, features)   column W[k, :, i] is feature i's vector
    b    (instances, features)
    x    (batch, features)               one batch, shared by every instance
    x' = ReLU(Wᵀ W x + b)                (``toy_models.toy_forward``)

Setup: the paper (its reference code, ``exp/exp-10.py``) and this module's defaults, which
are the notebook's run (about 12 s on one CPU thread with ``fast=True``):

    features n        1000                          512
    hidden m          10, 15, 25, 39, 63, 100       8, 11, 16, 23, 32  (n/m ≥ 16)
    frequencies       p_i = i^-(1+α) / Σ_j j^-(1+α), so one feature is active per sample
                      on average; α from 0 to 1     α = 0.25 (and 1 for the crossover)
    values            x_i = u_i v_i, u_i ~ Bernoulli(p_i), v_i ~ U(0, 2)
    loss              mean squared error over batch and features
    init              W ~ N(0, 1/m), b ~ N(0, 1)
    optimiser         Adam (0.9, 0.999, eps 1e-8) on W and b, decoupled signed weight
                      decay on W only, applied before each Adam step at the current lr
    schedule          10% linear warm-up, cosine decay to 5% of the peak
    peak lr           1e-2                          3e-2 (20× fewer samples seen)
    batch × steps     2048 × 20 000                 512 × 1000
    γ                 10 values from −1 to 1        −1 (strong) and +0.1 (weak)

The signed weight decay (the paper's modified AdamW), with η the current learning rate:

    γ ≥ 0:  W ← (1 − ηγ) W
    γ < 0:  W_i ← W_i − η|γ| (1 − 1/‖W_i‖) W_i     for every feature column W_i

The negative branch is a decoupled gradient step on (|γ|/2) Σ_i (‖W_i‖ − 1)²: it moves
each norm a fraction η|γ| of the way to one, instead of growing W without bound as a plain
negative decay would.

``train_scaling_models`` trains a sweep with the paper's loop (``train_scaling_model``:
autograd through ``scaling_loss``, ``torch.optim.Adam``, the signed decay) and, with
``fast=True``, with the same step on sparse batches with hand-derived gradients
(``course_utils/_fast/scaling.py``; the notebook's sweep uses it).  Every model in a sweep
sees the same batches (common random numbers), so the differences between them are not
sampling noise.  Why the notebook's run is smaller than the paper's, and what was measured
to choose it, is in ``docs/tuning.md``.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import NamedTuple, Sequence

import numpy as np
import torch
from torch import Tensor

from .geometry import feature_norms
from .toy_models import toy_forward
from .training import TrainingLoop

VALUE_MEAN = 1.0  # E[v] for v ~ U(0, 2)
VALUE_SQUARE_MEAN = 4.0 / 3.0  # E[v²]
REPRESENTED_NORM = 0.5  # feature i is represented when ‖W_i‖ > 0.5 (the paper's threshold)


# --------------------------------------------------------------------------------------
# Geometry: how much do random directions overlap?
# --------------------------------------------------------------------------------------


def random_unit_vectors(n_vectors: int, n_dims: int, n_instances: int = 1,
                        generator: torch.Generator | None = None) -> Tensor:
    """n_vectors independent uniformly random unit vectors in R^n_dims, as the columns of
    a (instances, n_dims, n_vectors) tensor (the layout of W)."""
    _check_positive_int(n_vectors=n_vectors, n_dims=n_dims, n_instances=n_instances)
    v = torch.randn(n_instances, n_dims, n_vectors, generator=generator)
    return v / v.norm(dim=1, keepdim=True)


def mean_squared_overlap(W: Tensor, min_norm: float = 0.0) -> Tensor:
    """Mean of (Ŵ_i · Ŵ_j)² over ordered pairs i ≠ j of features with ‖W_i‖ > min_norm.

    W: (instances, hidden, features) -> (instances,).  NaN for an instance with fewer
    than two such features.  For random unit vectors it is 1/m on average
    (``expected_squared_overlap``), the paper's reason for L ∝ 1/m.
    """
    if W.dim() != 3:
        raise ValueError(f"W must be (instances, hidden, features), got shape {tuple(W.shape)}")
    norms = W.norm(dim=1)  # (instances, features)
    keep = (norms > min_norm).to(W.dtype)
    unit = W / norms.clamp_min(1e-12)[:, None, :]
    squared = torch.einsum("ihf,ihg->ifg", unit, unit).square()
    pairs = keep[:, :, None] * keep[:, None, :]
    pairs = pairs - torch.diag_embed(keep)  # drop i == j
    count = pairs.sum(dim=(1, 2))
    return (squared * pairs).sum(dim=(1, 2)) / count  # 0/0 = NaN when fewer than 2


def random_mean_squared_overlap(n_vectors: int, n_dims: int, n_instances: int = 1,
                                generator: torch.Generator | None = None) -> Tensor:
    """``mean_squared_overlap`` of n_vectors random unit vectors in n_dims dimensions,
    one value per instance: (instances,)."""
    return mean_squared_overlap(random_unit_vectors(n_vectors, n_dims, n_instances, generator))


def expected_squared_overlap(n_dims: int) -> float:
    """E[(u · v)²] = 1/m for independent uniform unit vectors u, v in R^m (closed form:
    by symmetry each of the m squared coordinates of u·v's direction averages 1/m)."""
    _check_positive_int(n_dims=n_dims)
    return 1.0 / n_dims


# --------------------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------------------


def power_law_probability(n_features: int, alpha: float) -> Tensor:
    """The paper's feature frequencies p_i = i^-(1+α) / Σ_j j^-(1+α), i = 1..n.

    Normalised to sum to one, so a sample has one active feature on average whatever n
    and α.  Returns (features,), float32, decreasing for α > -1.
    """
    _check_positive_int(n_features=n_features)
    if not math.isfinite(alpha):
        raise ValueError(f"alpha must be a finite number, got {alpha!r}")
    p = torch.arange(1, n_features + 1, dtype=torch.float64) ** -(1.0 + alpha)
    return (p / p.sum()).float()


def sample_batch(feature_probability: Tensor, batch_size: int,
                 generator: torch.Generator | None = None) -> Tensor:
    """x_i = u_i v_i with u_i ~ Bernoulli(p_i) and v_i ~ U(0, 2): (batch_size, features).

    feature_probability: (features,).  One uniform per entry decides both: active when
    u < p, and then 2u/p is U(0, 2).
    """
    _check_positive_int(batch_size=batch_size)
    p = _check_probability(feature_probability)
    u = torch.rand(batch_size, p.shape[0], generator=generator)
    return torch.where(u < p, u * (2.0 / p), torch.zeros(()))


# --------------------------------------------------------------------------------------
# The model, its loss and the signed weight decay
# --------------------------------------------------------------------------------------


def init_parameters(n_features: int, n_hidden: int, n_instances: int,
                    generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
    """The paper's initialisation: W ~ N(0, 1/m) (so ‖W_i‖ ≈ 1), b ~ N(0, 1).

    Returns W (instances, hidden, features) and b (instances, features).
    """
    _check_positive_int(n_features=n_features, n_hidden=n_hidden, n_instances=n_instances)
    W = torch.randn(n_instances, n_hidden, n_features, generator=generator) / math.sqrt(n_hidden)
    b = torch.randn(n_instances, n_features, generator=generator)
    return W, b


def scaling_loss(W: Tensor, b: Tensor, x: Tensor) -> Tensor:
    """Per-instance mean squared error of x' = ReLU(Wᵀ W x + b) over batch and features.

    W: (instances, hidden, features); b: (instances, features); x: (batch, features),
    shared by all instances.  Returns (instances,).
    """
    xs = x.expand(W.shape[0], *x.shape)
    return (toy_forward(W, b, xs) - xs).square().mean(dim=(1, 2))


@torch.no_grad()
def signed_weight_decay_(W: Tensor, weight_decay: Tensor, lr: float) -> Tensor:
    """The paper's decoupled signed weight decay, in place; returns W.

    W: (instances, hidden, features); weight_decay γ: (instances,).  Per instance:
        γ ≥ 0:  W ← (1 − lr·γ) W                       (plain decoupled decay)
        γ < 0:  W_i ← W_i − lr·|γ| (1 − 1/‖W_i‖) W_i   (norms pulled towards one)
    """
    gamma = torch.as_tensor(weight_decay, dtype=W.dtype).reshape(-1, 1, 1)
    if gamma.shape[0] != W.shape[0]:
        raise ValueError(f"weight_decay has {gamma.shape[0]} values for {W.shape[0]} instances")
    factor = 1.0 - lr * gamma  # (instances, 1, 1)
    if (gamma < 0).any():
        norms = W.square().sum(dim=1, keepdim=True).sqrt_()  # (instances, 1, features)
        towards_one = 1.0 + lr * gamma * (1.0 - 1.0 / (norms + 1e-8))
        factor = torch.where(gamma < 0, towards_one, factor)
    return W.mul_(factor)


def lr_multiplier(step: int, steps: int, warmup: float = 0.1, final: float = 0.05) -> float:
    """The paper's schedule at ``step`` (0-based): linear warm-up over the first ``warmup``
    fraction of the steps, then cosine decay from 1 to ``final``."""
    t = step + 1
    warm = int(steps * warmup)
    if t < warm:
        return t / warm
    progress = (t - warm) / max(steps - warm, 1)
    return final + (1.0 - final) * 0.5 * (1.0 + math.cos(math.pi * progress))


def train_scaling_model(W: Tensor, b: Tensor, feature_probability: Tensor, weight_decay: Tensor,
                        decay=None, steps: int = 1000, batch_size: int = 512, lr: float = 3e-2, seed: int = 0,
                        progress: bool = True, description: str = "training", warmup: float = 0.1) -> Tensor:
    """The paper's training loop (chapter 02's learners write it): Adam on W and b, with the
    signed weight decay applied to W before each Adam step, at that step's learning rate
    ``lr * lr_multiplier(step, steps, warmup)``.

    W (instances, hidden, features) and b (instances, features) are leaf tensors with
    ``requires_grad``, trained in place; weight_decay γ: (instances,).  Every step draws
    ``sample_batch(feature_probability, batch_size, generator)`` from one generator seeded
    with ``seed``.  ``decay`` is the decay function (default ``signed_weight_decay_``).
    Returns the loss of every step, (steps, instances).
    """
    decay = signed_weight_decay_ if decay is None else decay
    optimizer = torch.optim.Adam([W, b], lr=lr)
    generator = torch.Generator().manual_seed(seed)
    loop = TrainingLoop(steps, description, progress, log_every=1)
    for step in loop:
        current_lr = lr * lr_multiplier(step, steps, warmup)
        for group in optimizer.param_groups:
            group["lr"] = current_lr
        x = sample_batch(feature_probability, batch_size, generator)
        loss = scaling_loss(W, b, x)  # (instances,)
        optimizer.zero_grad()
        loss.sum().backward()
        with torch.no_grad():
            decay(W, weight_decay, current_lr)  # decoupled: it acts on W, not on the gradient
        optimizer.step()
        loop.log(step, loss)
    return torch.stack(loop.history["loss"])


def train_scaling_models(
    n_features: int = 512,
    n_hidden: Sequence[int] = (8, 11, 16, 23, 32),
    weight_decay: Sequence[float] = (-1.0, 0.1),
    alpha: float = 0.25,
    steps: int = 1000,
    batch_size: int = 512,
    lr: float = 3e-2,
    warmup: float = 0.1,
    seed: int = 0,
    log_every: int | None = None,
    progress: bool = True,
    decay=None,
    fast: bool = False,
    sampler: str | None = None,
) -> tuple[list[tuple[Tensor, Tensor]], Tensor, list[int]]:
    """Train one model per (hidden size m, weight decay γ) on the paper's power-law data.

    For each m one batched model holds an instance per γ (instance k has γ =
    weight_decay[k]), initialised by ``init_parameters`` from a generator seeded with
    ``seed`` and trained by ``train_scaling_model``; every model sees the same batches, the
    stream of a generator seeded with ``seed``.  Returns
        params   [(W (γ, m, n), b (γ, n)) for each m in n_hidden]
        history  (records, γ, m): the training loss every ``log_every`` steps
        logged   the step of each record.
    ``decay`` replaces ``signed_weight_decay_`` (chapter 02 passes the learner's).

    ``fast=True`` takes the same steps on sparse batches with hand-derived gradients
    (``course_utils._fast.scaling``), many times faster; ``sampler`` chooses its batches:
    ``"numpy"`` (the default) draws the same distribution with NumPy, ``"torch"`` this
    loop's stream, so that the two paths can be compared step by step.
    """
    gamma = _check_sweep(n_features, n_hidden, weight_decay, alpha, steps, batch_size, lr, warmup)
    if sampler is not None and not fast:
        raise ValueError(f"sampler={sampler!r} chooses the fast path's batches: pass fast=True with it")
    log_every = log_every or max(1, steps // 50)
    generator = torch.Generator().manual_seed(seed)
    params = [init_parameters(n_features, m, len(gamma), generator) for m in n_hidden]
    decay = signed_weight_decay_ if decay is None else decay
    p = power_law_probability(n_features, alpha)
    if fast:
        from ._fast.scaling import train_sparse

        history, logged = train_sparse(params, p, gamma, decay, steps, batch_size, lr, warmup, seed,
                                       log_every, progress, sampler or "numpy")
        return params, history, logged
    losses = []  # (steps, γ) for each m
    for W, b in params:
        W.requires_grad_(), b.requires_grad_()
        losses.append(train_scaling_model(W, b, p, gamma, decay, steps, batch_size, lr, seed, progress,
                                          f"scaling sweep, m = {W.shape[1]}", warmup))
    ran = losses[0].shape[0]  # steps, or fewer in smoke mode (training.SMOKE_STEPS_ENV)
    logged = [step for step in range(ran) if step % log_every == 0 or step == ran - 1]
    params = [(W.detach(), b.detach()) for W, b in params]
    return params, torch.stack(losses, dim=2)[logged], logged


@torch.no_grad()
def evaluate_loss(W: Tensor, b: Tensor, feature_probability: Tensor, n_samples: int = 16_384,
                  seed: int = 12_345, chunk: int = 2048) -> Tensor:
    """Per-instance loss on ``n_samples`` fresh samples (fixed by ``seed``): (instances,)."""
    _check_positive_int(n_samples=n_samples, chunk=chunk)
    generator = torch.Generator().manual_seed(seed)
    total = torch.zeros(W.shape[0], dtype=torch.float64)
    done = 0
    while done < n_samples:
        size = min(chunk, n_samples - done)
        x = sample_batch(feature_probability, size, generator)
        total += scaling_loss(W, b, x).double() * size
        done += size
    return (total / n_samples).float()


def represented_fraction(W: Tensor, threshold: float = REPRESENTED_NORM) -> Tensor:
    """Fraction of features with ‖W_i‖ > threshold: (instances, hidden, features) -> (instances,)."""
    return (feature_norms(W) > threshold).float().mean(dim=1)


def weak_superposition_loss(feature_probability: Tensor, n_hidden: int | Sequence[int]) -> Tensor:
    """The weak-superposition prediction: the loss when the m most frequent features are
    stored exactly and every other one is predicted by its mean (its bias):

        L(m) = (1/n) Σ_{i>m} Var(x_i) = (1/n) Σ_{i>m} p_i (E[v²] − p_i E[v]²),

    with E[v²] = 4/3 and E[v] = 1 for v ~ U(0, 2).  For p_i ∝ i^-(1+α) and m ≪ n it falls
    like m^-α; at finite n the tail is cut off and it falls faster.  Returns (len(n_hidden),).
    """
    p = _check_probability(feature_probability).double()
    variance = p * (VALUE_SQUARE_MEAN - p * VALUE_MEAN**2)
    tail = variance.flip(0).cumsum(0).flip(0)  # tail[k] = Σ_{i ≥ k} (0-based)
    tail = torch.cat([tail, tail.new_zeros(1)])
    ms = [n_hidden] if isinstance(n_hidden, int) else list(n_hidden)
    for m in ms:
        if int(m) != m or not 0 <= m <= p.shape[0]:
            raise ValueError(f"n_hidden must be integers in [0, {p.shape[0]}], got {m!r}")
    return (tail[torch.tensor(ms, dtype=torch.long)] / p.shape[0]).float()


# --------------------------------------------------------------------------------------
# Power-law fits and the sweep
# --------------------------------------------------------------------------------------


class PowerLawFit(NamedTuple):
    """L ≈ prefactor · m^slope, a least-squares line through (log m, log L)."""

    slope: float
    prefactor: float

    def __call__(self, m) -> Tensor:
        return self.prefactor * torch.as_tensor(m, dtype=torch.float64) ** self.slope


def fit_power_law(m, loss) -> PowerLawFit:
    """Least-squares fit of log(loss) = slope · log(m) + log(prefactor).

    m, loss: equal-length 1-D sequences or tensors of positive numbers (at least two).
    """
    m = torch.as_tensor(m, dtype=torch.float64).flatten()
    loss = torch.as_tensor(loss, dtype=torch.float64).flatten()
    if m.shape != loss.shape or m.numel() < 2:
        raise ValueError(f"m and loss need the same length, at least 2; got {m.numel()} and {loss.numel()}")
    if not (torch.isfinite(m).all() and torch.isfinite(loss).all() and (m > 0).all() and (loss > 0).all()):
        raise ValueError("m and loss must be finite and positive to fit a power law")
    if len(set(m.tolist())) < 2:
        raise ValueError("m needs at least two distinct values")
    x, y = m.log(), loss.log()
    x_mean, y_mean = x.mean(), y.mean()
    slope = ((x - x_mean) * (y - y_mean)).sum() / (x - x_mean).square().sum()
    return PowerLawFit(float(slope), float(torch.exp(y_mean - slope * x_mean)))


@dataclass
class ScalingResult:
    """What ``scaling_sweep`` returns; rows are weight decays γ, columns hidden sizes m."""

    n_features: int
    alpha: float
    n_hidden: list[int]
    weight_decay: list[float]
    loss: Tensor  # (γ, m) evaluation loss
    represented: Tensor  # (γ, m) fraction of features with ‖W_i‖ > 0.5
    overlap: Tensor  # (γ, m) mean squared overlap of the represented features
    weak_theory: Tensor  # (m,) ``weak_superposition_loss``
    history: Tensor = field(repr=False)  # (records, γ, m) training loss
    logged_steps: list[int] = field(repr=False)
    params: list[tuple[Tensor, Tensor]] = field(repr=False)  # (W, b) per m, instances = γ
    seconds: float = 0.0

    def fit(self, k: int) -> PowerLawFit:
        """Power law through the losses of weight decay number k."""
        return fit_power_law(self.n_hidden, self.loss[k])

    @property
    def slopes(self) -> list[float]:
        """Log-log slope of loss against m for each weight decay."""
        return [self.fit(k).slope for k in range(len(self.weight_decay))]

    @property
    def weak_theory_slope(self) -> float:
        return fit_power_law(self.n_hidden, self.weak_theory).slope

    def summary(self) -> str:
        """A fixed-precision table of the sweep (stable enough to print in a notebook)."""
        lines = [f"n = {self.n_features}, alpha = {self.alpha:g}; m = {self.n_hidden}"]
        slopes = self.slopes
        for k, gamma in enumerate(self.weight_decay):
            lines.append(f"gamma = {gamma:+.2f}: slope {slopes[k]:+.2f}, represented features / m = "
                         + ", ".join(f"{f * self.n_features / m:.1f}"
                                     for f, m in zip(self.represented[k].tolist(), self.n_hidden)))
        lines.append(f"weak-superposition theory: slope {self.weak_theory_slope:+.2f}; strong: -1")
        return "\n".join(lines)


def scaling_sweep(
    n_features: int = 512,
    n_hidden: Sequence[int] = (8, 11, 16, 23, 32),
    weight_decay: Sequence[float] = (-1.0, 0.1),
    alpha: float = 0.25,
    steps: int = 1000,
    batch_size: int = 512,
    lr: float = 3e-2,
    warmup: float = 0.1,
    seed: int = 0,
    eval_samples: int = 16_384,
    progress: bool = True,
    decay=None,
    fast: bool = False,
) -> ScalingResult:
    """Train the sweep (``train_scaling_models``) and measure it: loss on fresh samples,
    fraction of represented features and their mean squared overlap, per (γ, m).

    The defaults are the notebook's run: strong (γ = −1) and weak (γ = +0.1)
    superposition at α = 0.25; pass larger values for a closer match to the paper.
    ``decay`` replaces ``signed_weight_decay_`` in training (chapter 02 passes the learner's);
    ``fast=True`` trains on the fast path (the notebook's sweep does).
    """
    start = time.perf_counter()
    params, history, logged = train_scaling_models(n_features, n_hidden, weight_decay, alpha, steps,
                                                   batch_size, lr, warmup, seed, progress=progress,
                                                   decay=decay, fast=fast)
    p = power_law_probability(n_features, alpha)
    loss = torch.stack([evaluate_loss(W, b, p, eval_samples, seed=seed + 12_345) for W, b in params], dim=1)
    represented = torch.stack([represented_fraction(W) for W, _ in params], dim=1)
    overlap = torch.stack([mean_squared_overlap(W, REPRESENTED_NORM) for W, _ in params], dim=1)
    return ScalingResult(n_features, float(alpha), list(n_hidden), [float(g) for g in weight_decay], loss,
                         represented, overlap, weak_superposition_loss(p, list(n_hidden)), history, logged,
                         [(W.detach(), b.detach()) for W, b in params], time.perf_counter() - start)


# --------------------------------------------------------------------------------------
# Argument checks
# --------------------------------------------------------------------------------------


def _check_positive_int(**values) -> None:
    for name, v in values.items():
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
            raise ValueError(f"{name} must be a positive integer, got {v!r}")


def _check_probability(p) -> Tensor:
    p = torch.as_tensor(p, dtype=torch.float32)
    if p.dim() != 1 or p.numel() == 0:
        raise ValueError(f"feature_probability must be a non-empty 1-D tensor (features,), got shape {tuple(p.shape)}")
    if not ((p > 0) & (p <= 1)).all():
        raise ValueError("feature_probability must lie in (0, 1]")
    return p


def _check_sweep(n_features, n_hidden, weight_decay, alpha, steps, batch_size, lr, warmup) -> Tensor:
    _check_positive_int(n_features=n_features, steps=steps, batch_size=batch_size)
    n_hidden = list(n_hidden)
    if not n_hidden:
        raise ValueError("n_hidden must list at least one hidden size")
    for m in n_hidden:
        _check_positive_int(n_hidden=m)
        if m > n_features:
            raise ValueError(f"every hidden size must be at most n_features={n_features}, got {m}")
    gamma = torch.as_tensor(list(weight_decay), dtype=torch.float32)
    if gamma.dim() != 1 or gamma.numel() == 0 or not torch.isfinite(gamma).all():
        raise ValueError(f"weight_decay must be a non-empty list of finite numbers, got {weight_decay!r}")
    if not math.isfinite(alpha):
        raise ValueError(f"alpha must be a finite number, got {alpha!r}")
    if not (math.isfinite(lr) and lr > 0):
        raise ValueError(f"lr must be a positive number, got {lr!r}")
    if lr * float(gamma.abs().max()) >= 1:
        raise ValueError(f"lr · |weight_decay| must be below 1 (the decay would overshoot), got "
                         f"lr={lr:g}, max |weight_decay|={float(gamma.abs().max()):g}")
    if not 0 <= warmup < 1:
        raise ValueError(f"warmup is a fraction of the steps in [0, 1), got {warmup!r}")
    return gamma
