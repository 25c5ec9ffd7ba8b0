"""Learning dynamics of the toy model: how feature geometry changes over training.

The toy-models paper (Elhage et al. 2022, "Superposition and learning dynamics") saw feature
dimensionalities D_i move between the same discrete levels the trained models settle on
(1, 1/2, 2/5, ...) in sudden jumps, each at a drop in the loss: the model adds a feature to
its configuration (two digons become a pentagon) rather than sliding smoothly.  Chen et al.
2023 ("Dynamical versus Bayesian phase transitions in a toy model of superposition") found
the same plateaus at k-gon critical points for m = 2.

``train(model, snapshot_every=k)`` (either path) keeps W and b over training; the functions here turn those
snapshots into curves:

    D_history      (snapshots, instances, features)   feature dimensionality at each snapshot
    loss_history   (snapshots, instances)              loss on one fixed large batch
    transitions    the snapshot intervals where the configuration changes
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from . import geometry
from .toy_models import ToyModel, TrainResult


def dimensionality_history(result: TrainResult) -> Tensor:
    """D_i at every snapshot of ``result``: (snapshots, instances, features)."""
    return torch.stack([geometry.feature_dimensionality(W) for W in result.W_history()])


@torch.no_grad()
def loss_history(model: ToyModel, result: TrainResult, batch_size: int = 20_000, seed: int = 12345) -> Tensor:
    """The loss of every snapshot on one fixed batch: (snapshots, instances).

    A training loss is measured on a fresh batch each step and is too noisy to show small
    steps; the same large batch for every snapshot removes that noise, so a drop in this
    curve is a real change of the model.  ``model`` supplies the data distribution
    (feature_probability, importance, activation); its own weights are left untouched.
    """
    W_all, b_all = result.W_history(), result.b_history()
    if W_all.shape[1:] != model.W.shape:
        raise ValueError(f"snapshots have shape {tuple(W_all.shape[1:])} but the model's W is {tuple(model.W.shape)}")
    gen = torch.Generator(device=model.W.device).manual_seed(seed)
    x = model.generate_batch(batch_size, gen).cpu()
    importance = model.importance.cpu()[:, None, :]
    # Two preallocated buffers for every snapshot: allocating fresh (instances, batch, ·)
    # tensors per snapshot fragments the heap and grew a kernel by ~1 GB over 200 snapshots.
    h = x.new_empty(x.shape[0], x.shape[1], W_all.shape[2])
    z = torch.empty_like(x)
    losses = []
    for W, b in zip(W_all, b_all):
        torch.bmm(x, W.transpose(1, 2), out=h)  # (instances, batch, hidden)
        torch.baddbmm(b[:, None, :], h, W, out=z)  # (instances, batch, features)
        if model.activation == "relu":
            z.relu_()
        losses.append(z.sub_(x).square_().mul_(importance).mean(dim=(1, 2)))
    return torch.stack(losses)


def represented_history(result: TrainResult, threshold: float = 0.5) -> Tensor:
    """How many features have ||W_i|| > threshold at each snapshot: (snapshots, instances)."""
    return (result.W_history().norm(dim=2) > threshold).sum(dim=-1)


@dataclass
class Transition:
    """One change of configuration between two consecutive snapshots of one instance."""

    instance: int
    snapshot: int  # the change happens between snapshot-1 and snapshot
    step: int
    largest_D_change: float  # max_i |ΔD_i| over the interval
    loss_change: float  # relative change of the fixed-batch loss over the interval (negative = drop)


def transitions(
    D: Tensor, loss: Tensor, steps: list[int], min_jump: float = 0.05, skip: int = 1
) -> list[Transition]:
    """The snapshot intervals where some D_i jumps by more than ``min_jump``.

    D: (snapshots, instances, features) from ``dimensionality_history``; loss: (snapshots,
    instances) from ``loss_history``; steps: the snapshot steps.  The first ``skip`` intervals
    (the fast initial fall from random initialisation) are left out.  Each transition records
    the relative loss change over the same interval, so you can check whether geometry jumps
    and loss drops happen together.
    """
    if D.shape[:2] != loss.shape or len(steps) != D.shape[0]:
        raise ValueError(f"D {tuple(D.shape)}, loss {tuple(loss.shape)} and {len(steps)} steps do not match")
    dD = (D[1:] - D[:-1]).abs().amax(dim=-1)  # (snapshots-1, instances)
    dL = (loss[1:] - loss[:-1]) / loss[:-1]
    found = []
    for s, i in torch.nonzero(dD > min_jump).tolist():
        if s < skip:
            continue
        found.append(Transition(i, s + 1, steps[s + 1], float(dD[s, i]), float(dL[s, i])))
    return found
