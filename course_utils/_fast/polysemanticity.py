"""The fast path of ``polysemanticity.train_autoencoders`` (``fast=True``): the same full-batch
steps as the paper's autograd loop, with the gradient in closed form.

The inputs are the n basis vectors, so the forward pass on the whole dataset is the Gram
matrix Z = W Wᵀ and the gradient of the loss is two small matrix products; a step is that
gradient plus the foreach Adam (or a plain gradient-descent update), with no autograd graph.
``tests/test_ch03_polysemanticity.py`` checks ``loss_and_grad`` against autograd and this trainer
against the plain one.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

from ..training import TrainingLoop
from .adam import Adam


def loss_and_grad(W: Tensor, l1: float = 0.0, noise: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """``polysemanticity.autoencoder_loss`` per instance, (instances,), and its gradient with
    respect to W, (instances, n, m), in closed form.

    ``noise`` (instances, m), if given, is added to the hidden layer for every input in the
    step (as in the authors' code): y_i = ReLU(W (Wᵀ e_i + ε)).  With Z = G + 1 uᵀ, u = W ε:
    dL/dZ = 2 (ReLU(Z) − I) ⊙ [Z > 0], dL/dW = (dZ + dZᵀ) W + (Σ_i dZ_i) εᵀ, plus λ sign(W).
    """
    n = W.shape[-2]
    Z = W @ W.transpose(-1, -2)  # (instances, n, n); Z[i, k] = output k for input e_i
    if noise is not None:
        u = torch.einsum("inm,im->in", W, noise)
        Z = Z + u[:, None, :]
    eye = torch.eye(n, dtype=W.dtype, device=W.device)
    error = Z.clamp(min=0) - eye  # ReLU(Z) − I
    loss = error.square().sum(dim=(-1, -2))
    dZ = 2 * error * (Z > 0)
    grad = (dZ + dZ.transpose(-1, -2)) @ W
    if noise is not None:
        grad = grad + dZ.sum(dim=-2)[:, :, None] * noise[:, None, :]
    if l1:
        loss = loss + l1 * W.abs().sum(dim=(-1, -2))
        grad = grad + l1 * W.sign()
    return loss, grad


@torch.no_grad()
def train_closed_form(W: Tensor, loop: TrainingLoop, record: Callable[[int, Tensor], None],
                      recorded: Callable[[int], bool], draw_noise: Callable[[], Tensor | None],
                      l1: float, optimizer: str, lr: float, weight_decay: float) -> None:
    """Train W (instances, n, m) in place for ``loop.steps`` full-batch steps, as
    ``train_autoencoders``' autograd loop does: gradient descent (``optimizer="gd"``), Adam,
    or AdamW (decoupled decay W ← (1 − lr·weight_decay) W before the Adam step, as
    ``torch.optim.AdamW``).

    ``draw_noise()`` gives each step's hidden noise (or None); ``record(step, loss)`` is called
    with the initial loss and after every update count ``recorded`` accepts (the noisy loss
    of that step's forward pass when there is noise, else the loss of the updated W).
    """
    adam = Adam([W]) if optimizer != "gd" else None
    decay = weight_decay if optimizer == "adamw" else 0.0
    for step in loop:  # step: updates done so far
        noise = draw_noise()
        loss, grad = loss_and_grad(W, l1, noise)
        if step == 0:
            record(0, loss)
        if optimizer == "gd":
            W.sub_(grad, alpha=lr)
        else:
            if decay:
                W.mul_(1 - lr * decay)
            adam.step([grad], lr)
        if recorded(step + 1):
            record(step + 1, loss_and_grad(W, l1)[0] if noise is None else loss)
