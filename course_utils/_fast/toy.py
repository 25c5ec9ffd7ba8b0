"""The toy model's fast path: ``toy_models.train(model, ..., fast=True)``.

It trains the same objective as the plain loop (Adam on a fresh batch every step, the summed
per-instance importance-weighted loss of x' = act(Wᵀ W x + b)) with the same update, computed
faster on a CPU:

- ``fused_loss_and_grads``: the loss and its gradients derived by hand, no autograd graph,
  one chunk of instances at a time so that a chunk's batch stays in cache (``chunk_size``);
- ``NumpySampler``: batches from NumPy's PCG64 with one uniform per entry (a geometric-gap
  sampler for sparse instances): the distribution of ``toy_models.generate_batch``;
- ``SetLayout``: correlated and anticorrelated feature sets drawn from at most one uniform
  per feature (``toy_models.generate_correlated_batch`` draws with it too);
- ``Adam`` (``_fast.adam``): the optimiser's update with foreach ops.

``tests/test_ch01_toy_models.py`` proves the gradients equal autograd's and that both paths reach
the same model; ``benchmarks/toy_models.py`` measures the speed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..toy_models import ACTIVATIONS, ToyModel, TrainResult, check_feature_sets, generate_batch, lr_schedule
from ..training import TrainingLoop
from .adam import Adam

# --------------------------------------------------------------------------------------
# Feature sets from one array of uniforms
# --------------------------------------------------------------------------------------


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
    """The ``SetLayout`` of the sets (checked by ``toy_models.check_feature_sets``) for the
    per-feature probabilities (instances, features)."""
    correlated, anticorrelated = check_feature_sets(feature_probability, correlated_sets, anticorrelated_sets)
    p = feature_probability.detach().to("cpu", torch.float32)
    n = p.shape[1]
    leader = torch.arange(n)
    lo, hi = torch.zeros_like(p), p.clone()
    for members in correlated:
        idx = list(members)
        leader[idx] = idx[0]
        hi[:, idx] = p[:, idx[:1]]
    for members in anticorrelated:
        idx = list(members)
        cumulative = p[:, idx].cumsum(dim=1)
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


# --------------------------------------------------------------------------------------
# Batches from NumPy on the CPU
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


def batch_sampler(model: nn.Module, batch_size: int, seed: int, sampler: str = "auto",
                  generator: torch.Generator | None = None) -> Callable[[slice], Tensor]:
    """``draw(instances) -> x`` (chunk, batch_size, features), a fresh batch for a chunk of
    the model's instances.  The model's own ``batch_fn`` draws it when it has one (chapter
    02: the learner's generators); else, with ``sampler="auto"`` on a CPU, ``NumpySampler``
    seeded with ``seed``; else torch's ``generator`` (the stream ``train_model`` uses with the
    same seed, so ``sampler="torch"`` takes the plain loop's batches)."""
    if sampler not in ("auto", "torch"):
        raise ValueError(f"sampler must be 'auto' or 'torch', got {sampler!r}")
    p, device = model.feature_probability, model.W.device
    batch_fn = getattr(model, "batch_fn", None)
    sets = (getattr(model, "correlated_sets", ()), getattr(model, "anticorrelated_sets", ()))
    if batch_fn is not None:  # the model's own sampler (chapter 02: the learner's)
        return lambda sl: batch_fn(p[sl], batch_size, generator)
    if device.type == "cpu" and sampler == "auto":
        numpy_sampler = NumpySampler(p, seed, *sets)
        buffer = torch.empty(chunk_size(model, batch_size), batch_size, model.n_features)
        return lambda sl: numpy_sampler.fill(sl, buffer[: sl.stop - sl.start])
    if any(sets):
        layout = set_layout(p, *sets)
        return lambda sl: features_from_uniforms(
            layout, torch.rand((sl.stop - sl.start, layout.n_uniforms, batch_size), device=device,
                               generator=generator), sl)
    return lambda sl: generate_batch(p[sl], batch_size, generator)


# --------------------------------------------------------------------------------------
# The fused step and its loop
# --------------------------------------------------------------------------------------


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


def chunk_size(model: ToyModel, batch_size: int) -> int:
    """Instances per fused chunk: keep one chunk's (batch, features) tensors near 1 MB on CPU."""
    if model.W.device.type != "cpu":
        return model.n_instances
    per_instance = batch_size * model.n_features * 4
    return max(1, min(model.n_instances, (1 << 20) // max(per_instance, 1)))


def has_toy_model_parts(model) -> bool:
    """Whether the fast path can train ``model`` as the toy model x' = act(WᵀWx + b): a
    ``ToyModel``, or a model with its parts (chapter 01's learner-written ``ToyModel``).  A
    subclass of ``ToyModel`` changes the forward pass (e.g. ``computation.NeuronModel``), so
    its gradients are not the toy model's."""
    if isinstance(model, ToyModel):
        return type(model) is ToyModel
    parts = ("W", "b", "importance", "feature_probability", "activation", "n_hidden", "n_features", "n_instances")
    return all(hasattr(model, name) for name in parts) and getattr(model, "activation", None) in ACTIVATIONS


def train(model: nn.Module, steps: int, batch_size: int, lr: float, schedule: str = "constant", seed: int = 0,
          log_every: int | None = None, progress: bool = True, description: str = "training",
          snapshot_every: int | None = None, sampler: str = "auto") -> TrainResult:
    """``toy_models.train(..., fast=True)``: Adam on the toy model's W and b with the fused
    gradients, every step a fresh batch per chunk of instances (``batch_sampler``).  The
    arguments mean what they mean there."""
    if not has_toy_model_parts(model):
        raise TypeError("the fast path needs a ToyModel (or a model with its parts: W, b, importance, "
                        "feature_probability, activation and sizes, and the toy model's forward pass); "
                        "train other models with fast=False")
    multiplier = lr_schedule(schedule)
    generator = torch.Generator(device=model.W.device).manual_seed(seed)
    draw = batch_sampler(model, batch_size, seed, sampler, generator)
    optimizer = Adam([model.W.data, model.b.data])
    grads = [torch.empty_like(model.W), torch.empty_like(model.b)]
    chunk = chunk_size(model, batch_size)
    chunks = [slice(first, min(first + chunk, model.n_instances)) for first in range(0, model.n_instances, chunk)]
    workspace: dict = {}
    loop = TrainingLoop(steps, description, progress, log_every=log_every, snapshot_every=snapshot_every)
    for step in loop:
        if loop.snapshot_due(step):
            loop.snapshot(step, W=model.W, b=model.b)
        logging = loop.logging(step)
        losses = [fused_loss_and_grads(model, draw(sl), sl, grads[0][sl], grads[1][sl], logging, workspace)[0]
                  for sl in chunks]
        optimizer.step(grads, lr * multiplier(step, steps))
        if logging:
            loop.log(step, torch.cat(losses))
    if loop.snapshot_due(steps):
        loop.snapshot(steps, W=model.W, b=model.b)
    return TrainResult.from_loop(loop)
