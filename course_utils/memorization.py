"""Memorization and double descent in the toy model (Henighan et al. 2023, "Superposition,
Memorization, and Double Descent", transformer-circuits.pub/2023/toy-double-descent).

Chapter 01's ReLU-output model, h = W x and x' = ReLU(Wᵀ h + b), trained on a FINITE set of
T examples instead of a fresh batch each step.  The paper's setup ("Experiment Setup"):

    n = 10,000 features, each 0 with probability S = 0.999, else U[0, 1]; then every x is
    rescaled to ‖x‖² = 1 ("this will make memorization of training examples easier")
    W Xavier-initialised, uniform importance I_i = 1
    L = (1/T) Σ_x Σ_i I_i (x_i − x'_i)²          (a sum over features, a mean over examples)
    50,000 full-batch AdamW updates, weight decay 1e-2, learning rate warmed up linearly
    to 1e-3 over the first 2,500 steps (5 %), then cosine-decayed to zero

Small T: the hidden vectors of the training examples, h_t = W x_t, form a regular T-gon while
the features W_i are a mess (the model stores data points in superposition: memorization).
Large T: the features form the familiar polygons and the data points do not (generalization).
In between both have low dimensionality and the test loss has a bump: double descent.

Tensors carry a leading ``instances`` dimension, as in ``toy_models``: a sweep over T is one
model whose instance k is trained on its own dataset of T_k examples.

    W                  (instances, m, n)       ToyModel's W, column W[k, :, i] is feature i
    b                  (instances, n)
    indices, values    (instances, T_max, k)   the training set, sparse (``SparseDataset``)
    mask               (instances, T_max)      which of the T_max slots hold a real example
    H                  (instances, T_max, m)   the hidden vectors h_t = W x_t

Per-instance T: every instance holds T_max = max_k T_k slots and a mask marks the first T_k of
them as real.  A padded slot is an all-zero example (x = 0, so h = 0) that the loss skips and
the dimensionality measures see as a zero vector (dimensionality 0, no effect on the others).
Padding keeps the sparse encoder h = W x one batched gather for every instance.  The dense
decoder x' (T × n values per instance) would pay for the padded slots too, up to a factor
(number of instances) for log-spaced Ts (measured: 41 ms against 12 ms a step for n = 200 and
T = 3..800), so the training loss (``finite_loss``) decodes instance by instance, each on
its own T_k examples; ``sparse_forward`` and ``reconstruction_loss`` are the padded,
all-instances-at-once version (evaluation, tests).

Sparsity is exploited on the way in: x has about n(1 − S) nonzero entries, so a training set is
stored as their indices and values and h = W x gathers only those columns of W (``hidden``).
The way out is dense: x' has a value for every feature, and ‖x − x'‖² = ‖x'‖² − 2⟨x, x'⟩ + ‖x‖²
needs x only at its nonzero entries (``reconstruction_loss``).
"""

from __future__ import annotations

import math
import numbers
import time
from dataclasses import dataclass, field
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from . import geometry
from .device import get_device
from .toy_models import ToyModel
from .training import TrainingLoop

# The paper's numbers (see the module docstring).
PAPER = dict(n_features=10_000, feature_probability=0.001, steps=50_000, lr=1e-3, warmup=0.05,
             weight_decay=1e-2)


# --------------------------------------------------------------------------------------
# A finite sparse dataset
# --------------------------------------------------------------------------------------


@dataclass
class SparseDataset:
    """Sparse examples of ``n_features`` features: example t of instance k has the values
    ``values[k, t]`` at the features ``indices[k, t]`` (unused slots: value 0, index 0).

    indices: (instances, T_max, k) long; values: (instances, T_max, k) float32;
    mask: (instances, T_max) bool, True for the first T[k] slots of instance k; T: (instances,).
    """

    indices: Tensor
    values: Tensor
    mask: Tensor
    n_features: int

    @property
    def T(self) -> Tensor:
        """The number of real examples of each instance, (instances,)."""
        return self.mask.sum(dim=1)

    @property
    def instances(self) -> int:
        return self.indices.shape[0]

    def to(self, device) -> "SparseDataset":
        return SparseDataset(self.indices.to(device), self.values.to(device), self.mask.to(device),
                             self.n_features)

    def dense(self) -> Tensor:
        """x as a dense tensor, (instances, T_max, n_features); padded slots are zero."""
        x = torch.zeros(*self.indices.shape[:2], self.n_features, device=self.values.device)
        return x.scatter_add_(2, self.indices, self.values)


def _sample_examples(n_features: int, T: int, feature_probability: float, generator: torch.Generator | None,
                     normalize: bool, chunk: int = 4096) -> list[tuple[Tensor, Tensor]]:
    """T examples as (indices, values) pairs: feature i is U[0, 1] with probability p, else 0;
    then x / ‖x‖ when ``normalize`` (an all-zero example stays zero).  Drawn densely in chunks of
    ``chunk`` examples, so memory stays chunk × n_features whatever T is."""
    examples = []
    for start in range(0, T, chunk):
        rows = min(chunk, T - start)
        active = torch.rand(rows, n_features, generator=generator) < feature_probability
        x = torch.rand(rows, n_features, generator=generator) * active
        if normalize:
            x = x / x.norm(dim=1, keepdim=True).clamp_min(1e-12)
        for row in x:
            idx = row.nonzero().flatten()
            examples.append((idx, row[idx]))
    return examples


def make_dataset(n_features: int, T: int | Sequence[int], feature_probability: float,
                 instances: int | None = None, generator: torch.Generator | None = None,
                 normalize: bool = True) -> SparseDataset:
    """A finite training set per instance, the paper's distribution: feature i is 0 with
    probability 1 − feature_probability, else U[0, 1], then x is rescaled to ‖x‖ = 1.

    ``T`` is one size for every instance (``instances`` of them, default 1) or a list of sizes,
    one per instance (``instances`` then defaults to its length).  Each instance draws its own
    examples, in order, from ``generator`` (a CPU generator), or from its own generator when
    ``generator`` is a list of them (then any subset of instances can be re-made alone).
    Returns a ``SparseDataset`` with T_max = max T slots per instance, the unused ones masked
    out (see the module docstring).
    """
    sizes = [int(T)] * (instances or 1) if isinstance(T, numbers.Integral) else [int(t) for t in T]
    if instances is not None and len(sizes) != instances:
        raise ValueError(f"{len(sizes)} sizes T for {instances} instances")
    if not sizes or min(sizes) < 1 or not 0 < feature_probability <= 1:
        raise ValueError(f"need T >= 1 and 0 < feature_probability <= 1, got {T!r}, {feature_probability!r}")
    generators = generator if isinstance(generator, (list, tuple)) else [generator] * len(sizes)
    per_instance = [_sample_examples(n_features, t, feature_probability, g, normalize)
                    for t, g in zip(sizes, generators)]
    T_max = max(sizes)
    k = max(1, max(len(idx) for examples in per_instance for idx, _ in examples))
    indices = torch.zeros(len(sizes), T_max, k, dtype=torch.long)
    values = torch.zeros(len(sizes), T_max, k)
    for i, examples in enumerate(per_instance):
        for t, (idx, val) in enumerate(examples):
            indices[i, t, :len(idx)], values[i, t, :len(val)] = idx, val
    mask = torch.arange(T_max)[None, :] < torch.tensor(sizes)[:, None]
    return SparseDataset(indices, values, mask, n_features)


def make_test_set(n_features: int, T_test: int, feature_probability: float, instances: int,
                  generator: torch.Generator | None = None) -> SparseDataset:
    """Fresh samples from the same distribution, ``T_test`` per instance, shared by all
    instances (drawn once, repeated along the instance dimension), so every T is scored on
    the same examples."""
    one = make_dataset(n_features, T_test, feature_probability, 1, generator)
    return SparseDataset(one.indices.expand(instances, -1, -1), one.values.expand(instances, -1, -1),
                         one.mask.expand(instances, -1), n_features)


# --------------------------------------------------------------------------------------
# The model on a sparse dataset
# --------------------------------------------------------------------------------------


def hidden(W: Tensor, data: SparseDataset) -> Tensor:
    """h_t = W x_t from the sparse examples: Σ_j values[t, j] · W[:, indices[t, j]].

    W: (instances, m, n) -> H: (instances, T_max, m).  Touches only the active columns of W.
    """
    K, T_max, k = data.indices.shape
    columns = W.transpose(1, 2).gather(1, data.indices.reshape(K, T_max * k, 1).expand(-1, -1, W.shape[1]))
    return (columns.reshape(K, T_max, k, -1) * data.values[..., None]).sum(dim=2)


def decode(W: Tensor, b: Tensor, H: Tensor) -> Tensor:
    """x' = ReLU(Wᵀ h + b): H (instances, T, m) -> (instances, T, n)."""
    return F.relu(torch.einsum("imf,itm->itf", W, H) + b[:, None, :])


def sparse_forward(W: Tensor, b: Tensor, data: SparseDataset) -> Tensor:
    """The ReLU-output model on a sparse dataset, (instances, T_max, n); equals
    ``toy_models.toy_forward(W, b, data.dense())``."""
    return decode(W, b, hidden(W, data))


def reconstruction_loss(out: Tensor, data: SparseDataset) -> Tensor:
    """The paper's loss per instance with uniform importance (the paper's I_i = 1):
    (1/T) Σ_t Σ_i (x_ti − x'_ti)² over the real examples.

    out: (instances, T_max, n) from ``sparse_forward``.  Returns (instances,).  Written as
    Σ_i x'_i² − 2 Σ_i x_i x'_i + Σ_i x_i², whose last two terms need x only at its nonzero
    entries.  (``toy_models.importance_weighted_loss`` averages over the features instead of
    summing: on a dense x it is this loss divided by n.)
    """
    per_example = (out.square().sum(-1) - 2 * (data.values * out.gather(2, data.indices)).sum(-1)
                   + data.values.square().sum(-1))
    mask = data.mask.to(out.dtype)
    return (per_example * mask).sum(dim=1) / mask.sum(dim=1)


def finite_loss(W: Tensor, b: Tensor, data: SparseDataset) -> Tensor:
    """``reconstruction_loss(sparse_forward(W, b, data), data)`` without the padded slots:
    the encoder runs batched, the dense decoder runs instance by instance on its own T_k
    examples only (padding would multiply that work by up to the number of instances).
    Returns (instances,), the loss the training loop minimises."""
    H = hidden(W, data)
    losses = []
    for k, T in enumerate(data.mask.sum(dim=1).tolist()):
        out = F.relu(H[k, :T] @ W[k] + b[k])  # (T, n)
        values, indices = data.values[k, :T], data.indices[k, :T]
        per_example = (out.square().sum(-1) - 2 * (values * out.gather(1, indices)).sum(-1)
                       + values.square().sum(-1))
        losses.append(per_example.mean())
    return torch.stack(losses)


# --------------------------------------------------------------------------------------
# Training: full batch, AdamW, warmup then cosine decay
# --------------------------------------------------------------------------------------


def warmup_cosine(step: int, steps: int, warmup: float = 0.05) -> float:
    """The paper's learning-rate multiplier: linear from 0 to 1 over the first ``warmup``
    fraction of the steps, then a cosine decay to zero at ``steps``."""
    warmup_steps = max(1, round(warmup * steps))
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    return 0.5 * (1 + math.cos(math.pi * (step - warmup_steps) / max(1, steps - warmup_steps)))


@torch.no_grad()
def evaluate(model: ToyModel, data: SparseDataset, chunk: int = 2048) -> Tensor:
    """The loss of every instance on ``data`` (e.g. the test set), in chunks of examples so
    the dense output stays chunk × n per instance.  Returns (instances,) on the CPU."""
    total = torch.zeros(model.n_instances, device=model.W.device)
    for start in range(0, data.indices.shape[1], chunk):
        part = SparseDataset(data.indices[:, start:start + chunk], data.values[:, start:start + chunk],
                             data.mask[:, start:start + chunk], data.n_features)
        weight = part.mask.sum(dim=1).to(total.dtype)
        loss = reconstruction_loss(sparse_forward(model.W, model.b, part), part)
        total += torch.nan_to_num(loss) * weight
    return (total / data.mask.sum(dim=1)).cpu()


@dataclass
class FiniteTrainResult:
    """What ``train_finite`` returns: the per-instance train and test loss at each logged step."""

    steps: list[int] = field(default_factory=list)
    train_loss: list[Tensor] = field(default_factory=list)  # each (instances,)
    test_steps: list[int] = field(default_factory=list)
    test_loss: list[Tensor] = field(default_factory=list)  # each (instances,)
    seconds: float = 0.0

    def curves(self) -> tuple[Tensor, Tensor]:
        """(logged steps, instances) train losses and (test evaluations, instances) test losses."""
        return torch.stack(self.train_loss), torch.stack(self.test_loss)


def train_finite(model: ToyModel, data: SparseDataset, test: SparseDataset | None = None,
                 steps: int = PAPER["steps"], lr: float = PAPER["lr"], weight_decay: float = PAPER["weight_decay"],
                 warmup: float = PAPER["warmup"], test_every: int | None = None, progress: bool = True,
                 description: str = "finite data") -> FiniteTrainResult:
    """Train every instance on its own fixed training set, the paper's way: every step is one
    full-batch AdamW update (weight decay ``weight_decay``) with the learning rate
    ``lr · warmup_cosine(step, steps, warmup)``.  The summed per-instance losses keep the
    instances independent.  The test loss (on ``test``) is measured ``test_every`` steps
    (default: 20 times) and after the last.  ``data`` and ``test`` move to the model's device.
    """
    data = data.to(model.W.device)
    test = test.to(model.W.device) if test is not None else None
    optimizer = torch.optim.AdamW([model.W, model.b], lr=lr, weight_decay=weight_decay)
    loop = TrainingLoop(steps, description, progress)
    test_every = test_every or max(1, steps // 20)
    result = FiniteTrainResult()
    for step in loop:
        for group in optimizer.param_groups:
            group["lr"] = lr * warmup_cosine(step, steps, warmup)
        loss = finite_loss(model.W, model.b, data)
        optimizer.zero_grad(set_to_none=True)
        loss.sum().backward()
        optimizer.step()
        if loop.logging(step):
            loop.log(step, loss)
        if test is not None and (step % test_every == 0 or step == loop.steps - 1):  # fewer in smoke mode
            result.test_steps.append(step)
            result.test_loss.append(evaluate(model, test))
    result.steps, result.train_loss, result.seconds = loop.steps_logged, loop.history["loss"], loop.seconds
    return result


# --------------------------------------------------------------------------------------
# Geometry: data-point dimensionality and polygons
# --------------------------------------------------------------------------------------


def data_point_dimensionality(H: Tensor) -> Tensor:
    """The paper's dimensionality of each training example, D^t = ‖h_t‖² / Σ_s (ĥ_t · h_s)²:
    feature dimensionality with the hidden vectors h_t in place of the features W_i.

    H: (instances, T, m) -> (instances, T).  A zero vector (a padded slot) gets 0 and adds
    nothing to the others' sums.  Reuses ``geometry.feature_dimensionality``.
    """
    return geometry.feature_dimensionality(H.transpose(1, 2))


def weighted_dimensionality(vectors: Tensor, D: Tensor) -> Tensor:
    """One number per instance: the mean of D over the vectors, weighted by ‖v‖², so vectors
    the model barely stores count little.  vectors: (instances, m, N), D: (instances, N) ->
    (instances,).  A regular k-gon of equal vectors gives m/k."""
    weight = vectors.square().sum(dim=1)
    return (weight * D).sum(dim=1) / weight.sum(dim=1).clamp_min(1e-30)


def polygon(vectors: Tensor, norm_threshold: float = 0.5) -> list[Tensor]:
    """For vectors in m = 2 (instances, 2, N): per instance, the gaps (degrees) between the
    consecutive angles of the vectors longer than ``norm_threshold`` × the longest.  k gaps
    all equal to 360/k: a regular k-gon."""
    norms = vectors.norm(dim=1)
    angles = geometry.angles_degrees(vectors)
    gaps = []
    for k in range(vectors.shape[0]):
        a = torch.sort(angles[k][norms[k] > norm_threshold * norms[k].max()]).values
        gaps.append(torch.diff(torch.cat([a, a[:1] + 360.0])) if a.numel() else a)
    return gaps


def polygon_error(gaps: Tensor) -> float:
    """How far a set of angle gaps is from a regular polygon: max_j |gap_j − 360/k| (degrees)."""
    if gaps.numel() == 0:
        return float("inf")
    return float((gaps - 360.0 / gaps.numel()).abs().max())


# --------------------------------------------------------------------------------------
# The sweep over T: one batched model
# --------------------------------------------------------------------------------------


@dataclass
class Sweep:
    """A trained sweep over training-set sizes (one instance per T and seed)."""

    T: Tensor  # (instances,)
    W: Tensor  # (instances, m, n)
    b: Tensor  # (instances, n)
    H: Tensor  # (instances, T_max, m) hidden vectors of the training examples (0 in padding)
    train_loss: Tensor  # (instances,) final
    test_loss: Tensor  # (instances,) final
    feature_D: Tensor  # (instances,) ‖W_i‖²-weighted mean feature dimensionality
    data_D: Tensor  # (instances,) ‖h_t‖²-weighted mean data-point dimensionality
    seconds: float
    result: FiniteTrainResult | None = None


def instance_generator(seed: int, T: int, repeat: int) -> torch.Generator:
    """The generator of one instance of a sweep, fixed by (seed, T, repeat): its training set
    and its initial W come from it, so an instance trains the same alone or in any sweep."""
    return torch.Generator().manual_seed(1_000_003 * seed + 7_919 * T + repeat)


def sweep_T(Ts: Sequence[int], m: int = 2, n_features: int = PAPER["n_features"],
            feature_probability: float = PAPER["feature_probability"], steps: int = PAPER["steps"],
            lr: float = PAPER["lr"], weight_decay: float = PAPER["weight_decay"], warmup: float = PAPER["warmup"],
            T_test: int = 2048, seed: int = 0, device=None, progress: bool = True) -> Sweep:
    """Train one ReLU-output model per training-set size in ``Ts`` (a list; a T repeated is
    another dataset seed), all as the instances of one batched ``ToyModel``, and measure each:
    final train and test loss, and the weighted feature and data-point dimensionalities.
    Instance k's training set and Xavier-normal initial W come from
    ``instance_generator(seed, T_k, repeat)``; the test set, shared, from ``seed``.
    """
    model, data, test = sweep_problem(Ts, m, n_features, feature_probability, T_test, seed, device)
    start = time.perf_counter()
    result = train_finite(model, data, test, steps, lr, weight_decay, warmup, progress=progress,
                          description=f"T sweep, m={m}")
    train_loss, test_loss = result.curves()
    sweep = summarise_sweep(model, data, train_loss, test_loss, time.perf_counter() - start)
    sweep.result = result
    return sweep


# --------------------------------------------------------------------------------------
# Chapter 07's notebook: the plain loop its learners write, and a sweep built from pieces
# --------------------------------------------------------------------------------------


def train_finite_model(model: ToyModel, data: SparseDataset, test: SparseDataset, steps: int, lr: float,
                       weight_decay: float, schedule=warmup_cosine, test_every: int = 100,
                       progress: bool = True, description: str = "finite data") -> tuple[Tensor, Tensor]:
    """The training loop chapter 07's learners write (its capstone): ``train_finite`` without
    the course's ``TrainingLoop``.

    Every instance trains on its own fixed training set ``data``: ``steps`` full-batch AdamW
    updates of W and b (weight decay ``weight_decay``), the learning rate at step t
    ``lr · schedule(t, steps)``, on the summed per-instance losses ``finite_loss(W, b, data)``.
    After the update of every step t with t % test_every == 0, and after the last step, the
    loss on the fresh samples ``test`` (``evaluate``).  ``data`` and ``test`` should be on the
    model's device.

    Returns (train_loss (steps, instances), the loss of each step before its update;
    test_loss (evaluations, instances)), on the CPU.  In smoke mode
    (``training.SMOKE_STEPS_ENV``) it stops early, as ``train_finite`` does; the schedule
    stays the requested run's.
    """
    from tqdm.auto import tqdm

    from .training import smoke_cap

    run, description = smoke_cap(steps, description)
    optimizer = torch.optim.AdamW([model.W, model.b], lr=lr, weight_decay=weight_decay)
    train_loss = torch.zeros(run, model.n_instances)
    test_loss = torch.zeros(len(range(0, run, test_every)) + int((run - 1) % test_every != 0), model.n_instances)
    evaluations = 0
    for step in tqdm(range(run), desc=description, disable=not progress, mininterval=0.5):
        for group in optimizer.param_groups:
            group["lr"] = lr * schedule(step, steps)
        loss = finite_loss(model.W, model.b, data)  # (instances,)
        optimizer.zero_grad()
        loss.sum().backward()
        optimizer.step()
        train_loss[step] = loss.detach().cpu()
        if step % test_every == 0 or step == run - 1:
            test_loss[evaluations] = evaluate(model, test)
            evaluations += 1
    return train_loss, test_loss


def sweep_problem(Ts: Sequence[int], m: int = 2, n_features: int = PAPER["n_features"],
                  feature_probability: float = PAPER["feature_probability"], T_test: int = 2048, seed: int = 0,
                  device=None) -> tuple[ToyModel, SparseDataset, SparseDataset]:
    """What ``sweep_T`` trains, before training: one batched ``ToyModel`` with an instance per T
    in ``Ts``, their training sets and the shared test set, on ``device``.  Instance k's
    training set and initial W come from ``instance_generator(seed, Ts[k], repeat)`` exactly
    as in ``sweep_T``, so a loop that takes ``sweep_T``'s steps gives ``sweep_T``'s models.
    Returns (model, data, test)."""
    device = get_device() if device is None else torch.device(device)
    Ts = [int(T) for T in Ts]
    generators = [instance_generator(seed, T, Ts[:k].count(T)) for k, T in enumerate(Ts)]
    data = make_dataset(n_features, Ts, feature_probability, generator=generators)
    test = make_test_set(n_features, T_test, feature_probability, len(Ts), torch.Generator().manual_seed(seed))
    model = ToyModel(n_features, m, len(Ts), feature_probability=feature_probability, device=device,
                     generator=torch.Generator().manual_seed(seed))
    std = math.sqrt(2.0 / (m + n_features))
    with torch.no_grad():
        model.W.copy_(torch.stack([torch.randn(m, n_features, generator=g) * std for g in generators]))
    return model, data.to(device), test.to(device)


def summarise_sweep(model: ToyModel, data: SparseDataset, train_loss: Tensor, test_loss: Tensor,
                    seconds: float = 0.0, dimensionality=data_point_dimensionality) -> Sweep:
    """A trained sweep's measures, as ``sweep_T`` returns them: the final train and test loss
    (the last rows of ``train_loss`` (steps, instances) and ``test_loss`` (evaluations,
    instances)), the hidden vectors of the training examples and the ‖·‖²-weighted feature
    and data-point dimensionalities, the latter by ``dimensionality`` (H (instances, T, m) ->
    (instances, T)).  Everything on the CPU."""
    W, b = model.W.detach().cpu(), model.b.detach().cpu()
    H = hidden(W, data.to("cpu"))
    feature_D = weighted_dimensionality(W, geometry.feature_dimensionality(W))
    data_D = weighted_dimensionality(H.transpose(1, 2), torch.as_tensor(dimensionality(H)))
    return Sweep(data.mask.sum(dim=1).cpu(), W, b, H, train_loss[-1].detach().cpu(), test_loss[-1].detach().cpu(),
                 feature_D, data_D, seconds)
