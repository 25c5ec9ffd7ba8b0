"""The fast path of ``scaling.train_scaling_models`` (``fast=True``): the same training as the
paper's loop, on sparse batches with hand-derived gradients.

A batch of the paper's power-law data has about one active feature per row, so it is kept as
its active entries (rows, features, values) and never as a dense (batch, features) tensor:
h = W x and the x-side of ∂L/∂W are sums over the active entries, and each step is three
dense products per model plus the foreach Adam.  ``tests/test_ch02_scaling.py`` checks the
gradients against autograd and this trainer against ``scaling.train_scaling_model``.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from ..scaling import lr_multiplier, sample_batch
from ..training import TrainingLoop
from .adam import Adam


class SparseBatches:
    """The distribution of ``scaling.sample_batch``, as the active entries only:
    (rows, features, values) of about batch_size · Σ p_i entries, drawn with NumPy."""

    def __init__(self, feature_probability: Tensor, batch_size: int, seed: int):
        self.p = feature_probability.float()
        self.two_over_p = 2.0 / self.p
        self.rng = np.random.default_rng(seed)
        self.buffer = np.empty((batch_size, self.p.shape[0]), dtype=np.float32)
        self.u = torch.from_numpy(self.buffer)

    def __call__(self) -> tuple[Tensor, Tensor, Tensor]:
        self.rng.random(dtype=np.float32, out=self.buffer)
        rows, features = (self.u < self.p).nonzero(as_tuple=True)
        return rows, features, self.u[rows, features] * self.two_over_p[features]


class TorchBatches:
    """``scaling.sample_batch`` from a torch generator seeded with ``seed`` (the stream of
    ``scaling.train_scaling_model``), as its active entries (rows, features, values)."""

    def __init__(self, feature_probability: Tensor, batch_size: int, seed: int):
        self.p, self.batch_size = feature_probability, batch_size
        self.generator = torch.Generator().manual_seed(seed)

    def __call__(self) -> tuple[Tensor, Tensor, Tensor]:
        x = sample_batch(self.p, self.batch_size, self.generator)
        rows, features = x.nonzero(as_tuple=True)
        return rows, features, x[rows, features]


def loss_and_grads(W: Tensor, b: Tensor, rows: Tensor, features: Tensor, values: Tensor,
                   batch_size: int, with_loss: bool = False) -> tuple[Tensor | None, Tensor, Tensor]:
    """Loss (if asked) and gradients of the summed per-instance MSE (``scaling.scaling_loss``)
    for a sparse batch given by its active entries x[rows, features] = values.

    W: (instances, hidden, features); b: (instances, features).  With h = W x,
    z = Wᵀ h + b, g = (ReLU(z) − x) · 1[z > 0] and s = 2 / (batch · features):
        ∂L/∂W = s (h gᵀ + W g xᵀ)  summed over the batch,   ∂L/∂b = s Σ_batch g.
    h = W x and (W g) xᵀ only touch the active entries.  Returns (loss (instances,) or None,
    ∂L/∂W, ∂L/∂b).
    """
    n_instances, n_hidden, n_features = W.shape
    h = W.new_zeros(n_instances, n_hidden, batch_size)
    h.index_add_(2, rows, W[:, :, features] * values)  # (instances, hidden, batch)
    g = torch.baddbmm(b[:, None, :], h.transpose(1, 2), W).relu_()  # ReLU(z), (instances, batch, features)
    out = g[:, rows, features]
    error = out - values  # x' − x at the active entries
    g[:, rows, features] = torch.where(out > 0, error, torch.zeros(()))
    loss = None
    if with_loss:  # g is x' − x except where an active entry's output is clipped to zero
        squares = g.square().sum(dim=(1, 2)) - g[:, rows, features].square().sum(1) + error.square().sum(1)
        loss = squares / (batch_size * n_features)
    s = 2.0 / (batch_size * n_features)
    grad_W = torch.bmm(h, g)  # (instances, hidden, features)
    grad_h = torch.bmm(g, W.transpose(1, 2))  # (instances, batch, hidden)
    grad_W.index_add_(2, features, grad_h[:, rows, :].transpose(1, 2) * values)
    return loss, grad_W.mul_(s), g.sum(dim=1).mul_(s)


def train_sparse(params: list[tuple[Tensor, Tensor]], feature_probability: Tensor, weight_decay: Tensor,
                 decay, steps: int, batch_size: int, lr: float, warmup: float, seed: int, log_every: int,
                 progress: bool, sampler: str = "numpy") -> tuple[Tensor, list[int]]:
    """Train every (W, b) in ``params`` in place, as ``scaling.train_scaling_model`` does
    (Adam, the signed decay on W before each step at the step's lr, the warm-up-and-cosine
    schedule), all on the same batches.

    ``sampler="numpy"`` draws the batches with ``SparseBatches``; ``"torch"`` draws the plain
    loop's stream (``TorchBatches``), so the two can be compared step by step.  Returns the
    loss every ``log_every`` steps, (records, γ, m), and the logged steps.
    """
    if sampler not in ("numpy", "torch"):
        raise ValueError(f"sampler must be 'numpy' or 'torch', got {sampler!r}")
    optimizer = Adam([t for pair in params for t in pair])
    batches = (SparseBatches if sampler == "numpy" else TorchBatches)(feature_probability, batch_size, seed)
    loop = TrainingLoop(steps, "scaling sweep", progress, log_every=log_every)
    for step in loop:
        log = loop.logging(step)
        current_lr = lr * lr_multiplier(step, steps, warmup)
        rows, features, values = batches()
        losses, grads = [], []
        for W, b in params:
            loss, grad_W, grad_b = loss_and_grads(W, b, rows, features, values, batch_size, log)
            decay(W, weight_decay, current_lr)
            losses.append(loss)
            grads += [grad_W, grad_b]
        optimizer.step(grads, current_lr)
        if log:
            loop.log(step, torch.stack(losses, dim=1))
    return torch.stack(loop.history["loss"]), loop.steps_logged
