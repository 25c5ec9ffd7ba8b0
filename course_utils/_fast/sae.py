"""The fast path of ``course_utils.sae``: each SAE's loss computed with fewer passes over the
batch, for ``train_sae(..., fast=True)``.

``fast_loss(sae, x)`` returns the same ``SAELoss`` as ``sae.loss(x)`` (equal up to float
rounding; ``tests/test_ch05a_sae.py`` checks the pieces and the gradients) by the same maths,
rearranged:

- the encoder as x W_enc + (b_enc − b_dec W_enc), one ``addmm``: the backward pass then needs
  no (batch × n_latents) product for b_dec's gradient;
- the ReLU SAE's x̂ − b_dec = f W_dec and its L1 norm Σ_i f_i = f · 1 as one product
  f [W_dec | 1], so the backward pass gets both gradients w.r.t. f from one matrix product;
- TopK, BatchTopK and AuxK decode their k (index, value) pairs per input through
  ``embedding_bag`` (cost ∝ batch·k) instead of a dense (batch, n_latents) product, when
  that is faster (``sparse_is_faster``); BatchTopK finds its batch threshold by selection
  on a subsample (``kth_largest_positive``) instead of a full top-k;
- comparisons written straight into float tensors for the JumpReLU and Gated masks, and
  the rectangle kernel as 1[|z − θ| < ε/2].
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from ..sae import SAE, BatchTopKSAE, GatedSAE, JumpReLUSAE, ReLUSAE, SAELoss, TopKSAE

# --------------------------------------------------------------------------------------
# Shared pieces
# --------------------------------------------------------------------------------------


def pre_activations(sae: SAE, x: Tensor) -> Tensor:
    """pre = (x − b_dec) W_enc + b_enc, computed as x W_enc + (b_enc − b_dec W_enc)."""
    sae.check_input(x)
    return torch.addmm(sae.b_enc - sae.b_dec @ sae.W_enc, x, sae.W_enc)


def decode(sae: SAE, f: Tensor) -> Tensor:
    """x̂ = f W_dec + b_dec, one ``addmm``."""
    return torch.addmm(sae.b_dec, f, sae.W_dec)


def sparse_is_faster(k: float, n: int, d: int) -> bool:
    """Whether decoding k nonzeros per input (out of n latents, into d dimensions) is faster
    through ``embedding_bag`` (cost ∝ batch·k) than densely (∝ batch·n·d).  Measured on a
    CPU: about 0.1 µs per (input, nonzero) pair against 0.1 ns per multiply-add."""
    return 1000 * k < n * d


def sparse_decode(indices: Tensor, values: Tensor, W: Tensor) -> Tensor:
    """Σ_j values[b, j] · W[indices[b, j]]: the decoder (without bias) applied to activations
    given as k (index, value) pairs per input.  indices, values: (batch, k); W: (n, d).
    Returns (batch, d), by the faster of two equal computations (``sparse_is_faster``)."""
    n, d = W.shape
    if sparse_is_faster(indices.shape[1], n, d):
        return F.embedding_bag(indices, W, per_sample_weights=values, mode="sum")
    dense = torch.zeros(len(indices), n, dtype=values.dtype, device=values.device).scatter(1, indices, values)
    return dense @ W


def _zero(x: Tensor) -> Tensor:
    return torch.zeros((), device=x.device)


# --------------------------------------------------------------------------------------
# ReLU + L1
# --------------------------------------------------------------------------------------


def relu_loss(sae: ReLUSAE, x: Tensor) -> SAELoss:
    """``ReLUSAE.loss``: f [W_dec | 1] gives x̂ − b_dec and Σ_i f_i in one product."""
    f = torch.relu_(pre_activations(sae, x))  # in place: one (batch, n_latents) tensor fewer
    out = f @ torch.cat([sae.W_dec, torch.ones_like(sae.W_dec[:, :1])], dim=1)
    mse = sae.mse(x, out[:, :-1] + sae.b_dec)
    sparsity = sae.l1_coefficient * out[:, -1].mean()
    return SAELoss.from_latents(mse, sparsity, _zero(x), f)


# --------------------------------------------------------------------------------------
# TopK, AuxK, BatchTopK
# --------------------------------------------------------------------------------------


def aux_loss(sae: TopKSAE, pre: Tensor, error: Tensor) -> Tensor:
    """``TopKSAE.aux_loss``, the dead latents' top ``aux_k`` decoded as (index, value) pairs."""
    dead = sae.dead_latents(sae.dead_after).nonzero().squeeze(1)
    if len(dead) == 0 or sae.aux_coefficient == 0:
        return torch.zeros((), device=pre.device)
    values, j = pre.index_select(1, dead).topk(min(sae.aux_k, len(dead)), dim=1, sorted=False)
    error_hat = sparse_decode(j, values.relu(), sae.W_dec.index_select(0, dead))
    return sae.aux_coefficient * sae.mse(error, error_hat)


def topk_loss(sae: TopKSAE, x: Tensor) -> SAELoss:
    """``TopKSAE.loss``: x̂ decoded from each input's k (index, value) pairs."""
    pre = pre_activations(sae, x)
    values, indices = pre.topk(sae.k, dim=1, sorted=False)
    values = values.relu()
    x_hat = sparse_decode(indices, values, sae.W_dec) + sae.b_dec
    mse = sae.mse(x, x_hat)
    aux = aux_loss(sae, pre, (x - x_hat).detach())
    active = indices[values.detach() > 0]
    fired = torch.zeros(sae.n_latents, dtype=torch.bool, device=x.device).index_fill_(0, active, True)
    return SAELoss(mse + aux, mse, _zero(x), aux, fired, len(x), n_active=active.numel())


def kth_largest_positive(a: Tensor, k: int) -> Tensor:
    """The k-th largest entry of a ≥ 0 (any shape), or 0 when fewer than k entries are positive;
    exact, a 0-d tensor.  The same as ``a.flatten().topk(k).values.min()`` (for ≥ k
    positives) and several times faster on a large batch: the threshold that about 2k entries
    of a strided subsample exceed picks the candidates, and the answer is selected among
    them (all positive entries are the candidates when that sample guesses wrong).
    """
    flat = a.flatten()
    if k < 1 or k > flat.numel():
        raise ValueError(f"k must lie in [1, {flat.numel()}], got {k}")
    candidates = None
    if flat.numel() > 65_536:
        sample = flat[:: flat.numel() // 16_384]
        rank = min(len(sample), 2 * k * len(sample) // flat.numel() + 1)
        guess = sample.topk(rank, sorted=False).values.min()
        if guess > 0:
            candidates = flat[flat >= guess]
            if len(candidates) < k:
                candidates = None
    if candidates is None:
        candidates = flat[flat > 0]
    if len(candidates) < k:
        return torch.zeros((), dtype=a.dtype, device=a.device)
    return candidates.kthvalue(len(candidates) - k + 1).values


def batch_topk_mask(sae: BatchTopKSAE, a: Tensor) -> Tensor:
    """For a = ReLU(pre) (batch, n_latents): bool mask of its k·batch largest entries (fewer
    when fewer are positive; zeros are never kept)."""
    keep = min(sae.k * len(a), a.numel())
    mask = (a >= kth_largest_positive(a, keep)) & (a > 0)
    if int(mask.sum()) > keep:  # ties at the threshold: an exact top-k decides
        flat = a.flatten()
        mask = torch.zeros_like(flat, dtype=torch.bool).scatter_(0, flat.topk(keep).indices, True)
        mask = mask.view_as(a) & (a > 0)
    return mask


def batchtopk_loss(sae: BatchTopKSAE, x: Tensor) -> SAELoss:
    """``BatchTopKSAE.loss`` in training: x̂ decoded from the kept (index, value) pairs, input
    b's bag holding the kept entries of row b."""
    pre = pre_activations(sae, x)
    a = torch.relu(pre)
    mask = batch_topk_mask(sae, a.detach())
    if sparse_is_faster(sae.k, sae.n_latents, sae.d_in):
        kept = mask.flatten().nonzero().squeeze(1)
        values = a.flatten().index_select(0, kept)
        rows, latents = kept // sae.n_latents, kept % sae.n_latents
        per_input = torch.bincount(rows, minlength=len(x))
        x_hat = F.embedding_bag(latents, sae.W_dec, per_input.cumsum(0) - per_input, per_sample_weights=values,
                                mode="sum") + sae.b_dec
    else:
        x_hat = decode(sae, a * mask)
        values, latents = a.detach()[mask], mask.nonzero()[:, 1]
    mse = sae.mse(x, x_hat)
    aux = aux_loss(sae, pre, (x - x_hat).detach())
    min_active = values.detach().min() if len(values) else torch.tensor(math.inf, device=x.device)
    fired = torch.zeros(sae.n_latents, dtype=torch.bool, device=x.device).index_fill_(0, latents, True)
    return SAELoss(mse + aux, mse, _zero(x), aux, fired, len(x), n_active=len(values), min_active=min_active)


# --------------------------------------------------------------------------------------
# JumpReLU and Gated
# --------------------------------------------------------------------------------------


def _greater(a: Tensor, b: Tensor | float) -> Tensor:
    """1[a > b] as a float tensor shaped like a.  (A comparison written straight into a float
    tensor is several times faster on a CPU than a bool mask converted or fed to torch.where.)"""
    return torch.gt(a.detach(), b, out=torch.empty_like(a))


def _window(z: Tensor, threshold: Tensor, bandwidth: float) -> Tensor:
    """K((z − θ)/ε) as floats, computed as 1[|z − θ| < ε/2] (fewer passes over the batch)."""
    return torch.lt((z - threshold).abs_(), bandwidth / 2, out=torch.empty_like(z))


class JumpReLUFunction(torch.autograd.Function):
    """``sae.JumpReLUFunction`` with the masks and the kernel written into float tensors."""

    @staticmethod
    def forward(ctx, z: Tensor, threshold: Tensor, bandwidth: float) -> Tensor:
        above = _greater(z, threshold)
        ctx.save_for_backward(z, threshold, above)
        ctx.bandwidth = bandwidth
        return z * above

    @staticmethod
    def backward(ctx, grad: Tensor):
        z, threshold, above = ctx.saved_tensors
        eps = ctx.bandwidth
        grad_z = grad * above
        grad_threshold = -(threshold / eps) * (_window(z, threshold, eps) * grad).sum(dim=0)
        return grad_z, grad_threshold, None


class StepFunction(torch.autograd.Function):
    """``sae.StepFunction`` with the step and the kernel written into float tensors."""

    @staticmethod
    def forward(ctx, z: Tensor, threshold: Tensor, bandwidth: float) -> Tensor:
        ctx.save_for_backward(z, threshold)
        ctx.bandwidth = bandwidth
        return _greater(z, threshold)

    @staticmethod
    def backward(ctx, grad: Tensor):
        z, threshold = ctx.saved_tensors
        eps = ctx.bandwidth
        grad_threshold = -(1.0 / eps) * (_window(z, threshold, eps) * grad).sum(dim=0)
        return None, grad_threshold, None


def jumprelu_loss(sae: JumpReLUSAE, x: Tensor) -> SAELoss:
    """``JumpReLUSAE.loss``."""
    pre = pre_activations(sae, x)
    threshold = sae.threshold
    f = JumpReLUFunction.apply(pre, threshold, sae.bandwidth)
    mse = sae.mse(x, decode(sae, f))
    sparsity = sae.l0_coefficient * StepFunction.apply(pre, threshold, sae.bandwidth).sum(dim=1).mean()
    return SAELoss.from_latents(mse, sparsity, _zero(x), f)


def gated_loss(sae: GatedSAE, x: Tensor) -> SAELoss:
    """``GatedSAE.loss``, h = (x − b_dec) W_enc as one ``addmm``."""
    sae.check_input(x)
    h = torch.addmm(-(sae.b_dec @ sae.W_enc), x, sae.W_enc)
    pi_gate, pi_mag = h + sae.b_enc, torch.addcmul(sae.b_mag, h, sae.r_mag.exp())
    f = _greater(pi_gate, 0.0) * torch.relu(pi_mag)
    mse = sae.mse(x, decode(sae, f))
    gate = torch.relu(pi_gate)
    sparsity = sae.l1_coefficient * gate.sum(dim=1).mean()
    aux = sae.mse(x, torch.addmm(sae.b_dec.detach(), gate, sae.W_dec.detach()))
    return SAELoss.from_latents(mse, sparsity, aux, f)


# --------------------------------------------------------------------------------------
# Dispatch
# --------------------------------------------------------------------------------------

FAST_LOSSES = {ReLUSAE: relu_loss, TopKSAE: topk_loss, BatchTopKSAE: batchtopk_loss, JumpReLUSAE: jumprelu_loss,
               GatedSAE: gated_loss}


def fast_loss(sae: SAE, x: Tensor) -> SAELoss:
    """The fast version of ``sae.loss(x)``.  The class that defines the SAE's ``loss`` picks it,
    so a subclass with a loss of its own is trained through that loss."""
    owner = next(cls for cls in type(sae).__mro__ if "loss" in vars(cls))
    loss = FAST_LOSSES.get(owner)
    return loss(sae, x) if loss is not None else sae.loss(x)


def reconstruct(sae: SAE, x: Tensor) -> Tensor:
    """x̂ for ``x`` (batch, d_in) as the SAE's forward computes it, through the fast encoder:
    what ``train_sae(fast=True)`` resamples dead latents by."""
    if isinstance(sae, GatedSAE):
        h = torch.addmm(-(sae.b_dec @ sae.W_enc), x, sae.W_enc)
        f = _greater(h + sae.b_enc, 0.0) * torch.relu(torch.addcmul(sae.b_mag, h, sae.r_mag.exp()))
    elif type(sae).encode is SAE.encode:
        f = sae.activation(pre_activations(sae, x))
    else:
        return sae(x)[0]
    return decode(sae, f)
