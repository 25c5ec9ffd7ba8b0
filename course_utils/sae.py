"""Sparse autoencoders (SAEs) from scratch, and data with known ground-truth features to test them on.

Ground truth (Sharkey, Braun & Millidge 2022): ``SyntheticFeatures`` holds n_features random
unit directions in d dimensions; an input is x = Σ_i c_i g_i with sparse coefficients c_i ≥ 0.
A trained SAE's decoder directions are scored against the true g_i by the mean max cosine
similarity (``mmcs``).

Every SAE here has the same shapes and the same two halves (row-vector convention, x is
(batch, d_in)):

    W_enc  (d_in, n_latents)     b_enc  (n_latents,)
    W_dec  (n_latents, d_in)     b_dec  (d_in,)     row i of W_dec is latent i's direction d_i
                                                    (a column of the papers' W_dec)
    pre = (x - b_dec) W_enc + b_enc                 the pre-encoder bias b_dec is subtracted
    f   = σ(pre)                  (batch, n_latents) latent activations; σ is the architecture's
    x̂   = f W_dec + b_dec         (batch, d_in)

and every decoder row is kept at unit norm (renormalised after each step, with the gradient's
component along the row removed before it), so a latent's activation is its magnitude.

    ReLUSAE       σ = ReLU, loss ‖x − x̂‖² + λ ‖f‖₁  (Bricken et al. 2023; Sharkey et al. 2022)
    TopKSAE       σ = ReLU(TopK_k(pre)), loss ‖x − x̂‖² + α AuxK  (Gao et al. 2024)
    BatchTopKSAE  top k·batch activations over the whole batch in training, a global threshold
                  θ at inference: f = ReLU(pre) · 1[ReLU(pre) > θ]  (Bussmann et al. 2024)
    JumpReLUSAE   σ = pre · H(pre − θ_i), loss ‖x − x̂‖² + λ ‖f‖₀, straight-through gradients
                  for θ (Rajamanoharan et al. 2024, "Jumping Ahead")
    GatedSAE      f = 1[π_gate > 0] · ReLU(π_mag), loss ‖x − x̂‖² + λ ‖ReLU(π_gate)‖₁ + an auxiliary
                  reconstruction through a frozen decoder (Rajamanoharan et al. 2024, "Gated SAEs")

‖x − x̂‖² is the squared error summed over d_in and averaged over the batch (so is every
other loss term: a sum over latents, a mean over the batch).

Each SAE's ``loss`` is built on ``decode(encode(x))``, as written above.
``train_sae`` trains any of them with Adam, a progress bar, a loss history, a divergence
check and optional dead-latent resampling (``resample_dead_latents``, Bricken et al. 2023);
``train_sae(..., fast=True)`` computes the same losses with fewer passes over the batch
(``course_utils._fast.sae``: a folded encoder, sparse decodes), equal up to float rounding.
``evaluate`` reports L0, the fraction of variance explained, dead and dense latents,
shrinkage and, given the true directions, MMCS and the fraction of features recovered.
``course_utils.sae_io`` saves and loads SAEs in SAELens's on-disk format.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import partial
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .device import get_device
from .toy_models import lr_schedule
from .training import TrainingLoop, smoke_cap

DataSource = Tensor | Callable[[int, torch.Generator], Tensor]


def _positive_int(name: str, value) -> int:
    try:
        ok = not isinstance(value, bool) and int(value) == value and value >= 1
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def _nonnegative(name: str, value) -> float:
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}") from None
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
    return value


def _positive(name: str, value) -> float:
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
    return value


# --------------------------------------------------------------------------------------
# Ground truth: sparse features along random directions (Sharkey et al. 2022)
# --------------------------------------------------------------------------------------


def feature_probabilities(n_features: int, mean_active: float = 5.0, decay: float = 0.99) -> Tensor:
    """p_i ∝ decay**i, scaled so that Σ_i p_i = mean_active (the expected number active).

    Returns (n_features,) float32.  Raises ``ValueError`` when a probability would exceed 1.
    """
    n_features = _positive_int("n_features", n_features)
    mean_active = _positive("mean_active", mean_active)
    if not 0 < decay <= 1:
        raise ValueError(f"decay must lie in (0, 1], got {decay!r}")
    weights = decay ** torch.arange(n_features, dtype=torch.float64)
    p = mean_active * weights / weights.sum()
    if p.max() > 1:
        raise ValueError(f"mean_active={mean_active} with decay={decay} gives feature 0 a firing probability of "
                         f"{float(p.max()):.3g} > 1; lower mean_active or use more features")
    return p.float()


class SyntheticFeatures:
    """Sparse non-negative features along fixed random unit directions (Sharkey et al. 2022).

    An input is x = c G, with G the (n_features, d) matrix of unit directions (``directions``)
    and c (n_features,) the coefficients: feature i fires with probability p_i ∝ decay**i
    (``feature_probability``, scaled so that mean_active features fire on average) and then
    has a magnitude drawn from U[0, 1]; otherwise c_i = 0.  The paper's setting is the
    default: 512 features in 256 dimensions, decay 0.99, 5 active on average.

    Correlation (optional, ``correlation`` = ρ in [0, 1)): features are cut into consecutive
    groups of ``group_size`` (neighbours have similar probabilities) and fire through a
    Gaussian copula: feature i fires when z_i < Φ⁻¹(p_i) with z_i = √ρ·g + √(1−ρ)·ε_i, where g
    is shared by the group and ε_i is its own (all standard normal).  Each feature keeps its
    firing probability p_i; features of one group tend to fire together, and any two of them
    have latent correlation ρ.  ρ = 0 gives independent features.

    Args:
        n_features, d: the number of ground-truth features and the input dimension.
        mean_active: expected number of features firing per input, Σ p_i.
        decay: p_i ∝ decay**i.
        correlation, group_size: the copula above.
        device: defaults to ``get_device()``.
        generator: a CPU ``torch.Generator`` for the directions.
    """

    def __init__(self, n_features: int = 512, d: int = 256, mean_active: float = 5.0, decay: float = 0.99,
                 correlation: float = 0.0, group_size: int = 8, device: torch.device | str | None = None,
                 generator: torch.Generator | None = None):
        self.n_features = _positive_int("n_features", n_features)
        self.d = _positive_int("d", d)
        if not 0 <= correlation < 1:
            raise ValueError(f"correlation must lie in [0, 1), got {correlation!r}")
        self.correlation = float(correlation)
        self.group_size = _positive_int("group_size", group_size)
        self.mean_active, self.decay = float(mean_active), float(decay)
        self.device = get_device() if device is None else torch.device(device)
        directions = torch.randn(self.n_features, self.d, generator=generator)
        self.directions = (directions / directions.norm(dim=1, keepdim=True)).to(self.device)  # (n_features, d)
        self.feature_probability = feature_probabilities(self.n_features, mean_active, decay).to(self.device)

    def sample_coefficients(self, batch_size: int, generator: torch.Generator | None = None) -> Tensor:
        """c: (batch_size, n_features), c_i ~ U[0, 1] with probability p_i, else 0."""
        batch_size = _positive_int("batch_size", batch_size)
        p = self.feature_probability
        u = torch.rand(batch_size, self.n_features, device=self.device, generator=generator)
        if self.correlation == 0:
            # One uniform per entry: c = max(0, 1 − u/p) is nonzero exactly when u < p, and then
            # U[0, 1] (u/p is uniform given u < p).  In place: no masks, no torch.where.
            return u.div_(p).neg_().add_(1.0).relu_()
        n_groups = -(-self.n_features // self.group_size)
        shared = torch.randn(batch_size, n_groups, device=self.device, generator=generator)
        own = torch.randn(batch_size, self.n_features, device=self.device, generator=generator)
        z = math.sqrt(self.correlation) * shared.repeat_interleave(self.group_size, dim=1)[:, : self.n_features]
        z = z + math.sqrt(1 - self.correlation) * own
        return u * torch.lt(z, torch.special.ndtri(p), out=torch.empty_like(z))  # fires when z < Φ⁻¹(p)

    def sample(self, batch_size: int, generator: torch.Generator | None = None,
               return_coefficients: bool = False) -> Tensor | tuple[Tensor, Tensor]:
        """x = c G: (batch_size, d); with ``return_coefficients`` also c (batch_size, n_features)."""
        c = self.sample_coefficients(batch_size, generator)
        x = c @ self.directions
        return (x, c) if return_coefficients else x

    def __call__(self, batch_size: int, generator: torch.Generator | None = None) -> Tensor:
        """``sample``, so the object itself can be ``train_sae``'s data source."""
        return self.sample(batch_size, generator)

    def __repr__(self) -> str:
        corr = f", correlation={self.correlation}, group_size={self.group_size}" if self.correlation else ""
        return (f"SyntheticFeatures(n_features={self.n_features}, d={self.d}, mean_active={self.mean_active}, "
                f"decay={self.decay}{corr})")


# --------------------------------------------------------------------------------------
# The SAEs
# --------------------------------------------------------------------------------------


@dataclass
class SAELoss:
    """One batch's loss, in pieces: ``total = mse + sparsity + aux`` (scalars; ``total`` has
    the graph to call ``backward`` on).  ``sparsity`` and ``aux`` already include their
    coefficients.  ``fired`` (n_latents,) bool marks the latents nonzero on at least one input
    of the batch; ``l0``, the mean number of nonzero latents per input, is counted when first
    read (from ``latents``, the detached activations, or from ``n_active``), since a
    training loop needs it only on logged steps.  ``min_active`` (BatchTopK only) is the
    smallest kept activation, from which the inference threshold is estimated."""

    total: Tensor
    mse: Tensor
    sparsity: Tensor
    aux: Tensor
    fired: Tensor
    n_inputs: int
    latents: Tensor | None = None
    n_active: Tensor | None = None
    min_active: Tensor | None = None

    @classmethod
    def from_latents(cls, mse: Tensor, sparsity: Tensor, aux: Tensor, f: Tensor) -> SAELoss:
        """The pieces, given the batch's latent activations f (batch, n_latents), all ≥ 0."""
        f = f.detach()
        return cls(mse + sparsity + aux, mse, sparsity, aux, f.amax(dim=0) > 0, len(f), latents=f)

    @property
    def l0(self) -> Tensor:
        if self.n_active is None:
            self.n_active = torch.sign(self.latents).sum()  # f ≥ 0: sign counts the nonzeros
        return torch.as_tensor(self.n_active, dtype=torch.float32, device=self.mse.device) / self.n_inputs


class SAE(nn.Module):
    """What every SAE shares: parameters, b_dec subtraction, the decoder, the unit-norm
    decoder constraint, and a count of how long each latent has gone without firing.

    Initialisation: decoder rows random unit vectors, W_enc = W_decᵀ (Gao et al. 2024),
    b_enc = b_dec = 0.  Subclasses define ``activation(pre)`` and ``loss(x)``.
    """

    # The dimension of each parameter that indexes latents (resampling resets these slices).
    latent_dims = {"W_enc": 1, "b_enc": 0, "W_dec": 0}

    def __init__(self, d_in: int, n_latents: int, device: torch.device | str | None = None,
                 generator: torch.Generator | None = None):
        super().__init__()
        self.d_in = _positive_int("d_in", d_in)
        self.n_latents = _positive_int("n_latents", n_latents)
        device = get_device() if device is None else torch.device(device)
        W_dec = torch.randn(self.n_latents, self.d_in, generator=generator)
        W_dec = W_dec / W_dec.norm(dim=1, keepdim=True)
        self.W_enc = nn.Parameter(W_dec.T.clone(memory_format=torch.contiguous_format).to(device))  # never a view of W_dec
        self.b_enc = nn.Parameter(torch.zeros(self.n_latents, device=device))
        self.W_dec = nn.Parameter(W_dec.to(device))
        self.b_dec = nn.Parameter(torch.zeros(self.d_in, device=device))
        # Inputs seen since each latent last fired (training batches only; see update_statistics).
        self.register_buffer("samples_since_fired", torch.zeros(self.n_latents, dtype=torch.long, device=device))

    # ---- the forward pass --------------------------------------------------------------

    def check_input(self, x: Tensor) -> None:
        if not isinstance(x, Tensor) or x.dim() != 2 or x.shape[1] != self.d_in:
            shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
            raise ValueError(f"x must be a (batch, d_in={self.d_in}) tensor, got {shape}")

    def pre_activations(self, x: Tensor) -> Tensor:
        """pre = (x − b_dec) W_enc + b_enc: (batch, d_in) -> (batch, n_latents)."""
        self.check_input(x)
        return (x - self.b_dec) @ self.W_enc + self.b_enc

    def activation(self, pre: Tensor) -> Tensor:
        """σ: pre-activations (batch, n_latents) -> latent activations f (batch, n_latents)."""
        raise NotImplementedError

    def encode(self, x: Tensor) -> Tensor:
        """f = σ(pre(x)): (batch, d_in) -> (batch, n_latents)."""
        return self.activation(self.pre_activations(x))

    def decode(self, f: Tensor) -> Tensor:
        """x̂ = f W_dec + b_dec: (batch, n_latents) -> (batch, d_in)."""
        return f @ self.W_dec + self.b_dec

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """(x̂ (batch, d_in), f (batch, n_latents))."""
        f = self.encode(x)
        return self.decode(f), f

    def loss(self, x: Tensor) -> SAELoss:
        """The training loss on a batch x (batch, d_in): ‖x − decode(encode(x))‖² plus the
        architecture's sparsity and auxiliary terms."""
        raise NotImplementedError

    @staticmethod
    def mse(x: Tensor, x_hat: Tensor) -> Tensor:
        """‖x − x̂‖², summed over d_in, averaged over the batch."""
        return (x_hat - x).square().sum(dim=1).mean()

    # ---- the unit-norm decoder ----------------------------------------------------------

    @torch.no_grad()
    def project_decoder_grad_(self) -> None:
        """Remove from W_dec.grad each row's component along its (unit) decoder row, so that a
        step moves the row along the sphere (call after ``backward``, before the step)."""
        if self.W_dec.grad is not None:
            g, W = self.W_dec.grad, self.W_dec
            g.sub_((g * W).sum(dim=1, keepdim=True) * W)

    @torch.no_grad()
    def normalise_decoder_(self) -> None:
        """Rescale every decoder row to unit norm (call after each optimiser step)."""
        self.W_dec.div_(self.W_dec.norm(dim=1, keepdim=True).clamp_min(1e-12))

    # ---- dead latents -------------------------------------------------------------------

    @torch.no_grad()
    def update_statistics(self, out: SAELoss) -> None:
        """After a training step: count inputs since each latent last fired."""
        self.samples_since_fired.add_(out.n_inputs).masked_fill_(out.fired, 0)

    def dead_latents(self, after: int) -> Tensor:
        """(n_latents,) bool: latents that have not fired on the last ``after`` training inputs."""
        return self.samples_since_fired >= after

    def extra_repr(self) -> str:
        return f"d_in={self.d_in}, n_latents={self.n_latents}"


class ReLUSAE(SAE):
    """The standard SAE: f = ReLU(pre), loss ‖x − x̂‖² + λ Σ_i f_i (f ≥ 0 and ‖d_i‖ = 1, so this
    is the L1 penalty).  ``l1_coefficient`` is λ; the default 0.3 suits the course's synthetic
    data (x = Σ c_i g_i with about 5 active c_i ~ U[0, 1]); rescale it with your inputs."""

    def __init__(self, d_in: int, n_latents: int, l1_coefficient: float = 0.3, device=None, generator=None):
        super().__init__(d_in, n_latents, device, generator)
        self.l1_coefficient = _nonnegative("l1_coefficient", l1_coefficient)

    def activation(self, pre: Tensor) -> Tensor:
        return torch.relu(pre)

    def loss(self, x: Tensor) -> SAELoss:
        """‖x − x̂‖² + λ ‖f‖₁, with f = encode(x) and x̂ = decode(f)."""
        f = self.encode(x)
        x_hat = self.decode(f)
        mse = self.mse(x, x_hat)
        sparsity = self.l1_coefficient * f.abs().sum(dim=1).mean()
        return SAELoss.from_latents(mse, sparsity, torch.zeros((), device=x.device), f)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, l1_coefficient={self.l1_coefficient}"


class TopKSAE(SAE):
    """f = ReLU(TopK_k(pre)): keep each input's k largest pre-activations (Gao et al. 2024).

    No sparsity penalty; instead the AuxK loss revives dead latents: with e = x − x̂ (no
    gradient) and ê = Σ_j ReLU(pre_j) d_j over the ``aux_k`` dead latents j with the largest
    pre-activations (no bias), aux = ``aux_coefficient`` · ‖e − ê‖².  A latent is dead
    when it has not fired on the last ``dead_after`` training inputs (the paper: 10M tokens;
    the default here suits the course's small runs).  ``aux_k`` defaults to d_in // 2 (the
    paper: a power of two near d_model / 2) and ``aux_coefficient`` to 1/32 (the paper's α).
    """

    def __init__(self, d_in: int, n_latents: int, k: int, aux_k: int | None = None,
                 aux_coefficient: float = 1 / 32, dead_after: int = 20_000, device=None, generator=None):
        super().__init__(d_in, n_latents, device, generator)
        self.k = _positive_int("k", k)
        if self.k > self.n_latents:
            raise ValueError(f"k={k} is more than n_latents={n_latents}")
        self.aux_k = _positive_int("aux_k", aux_k if aux_k is not None else max(1, d_in // 2))
        self.aux_coefficient = _nonnegative("aux_coefficient", aux_coefficient)
        self.dead_after = _positive_int("dead_after", dead_after)

    def activation(self, pre: Tensor) -> Tensor:
        values, indices = pre.topk(self.k, dim=1, sorted=False)
        return torch.zeros_like(pre).scatter_(1, indices, values.relu())

    def aux_loss(self, pre: Tensor, error: Tensor) -> Tensor:
        """α ‖e − ê‖²: pre (batch, n_latents), the error e = x − x̂ (batch, d_in) without
        gradient; ê = Σ_j ReLU(pre_j) d_j over each input's top ``aux_k`` dead latents j.
        0 when no latent is dead."""
        dead = self.dead_latents(self.dead_after)
        if not dead.any() or self.aux_coefficient == 0:
            return torch.zeros((), device=pre.device)
        pre_dead = pre[:, dead]  # (batch, n_dead)
        values, j = pre_dead.topk(min(self.aux_k, pre_dead.shape[1]), dim=1)
        f_dead = torch.zeros_like(pre_dead).scatter(1, j, values.relu())
        error_hat = f_dead @ self.W_dec[dead]
        return self.aux_coefficient * self.mse(error, error_hat)

    def loss(self, x: Tensor) -> SAELoss:
        """‖x − x̂‖² + AuxK, with f = encode(x) and x̂ = decode(f)."""
        pre = self.pre_activations(x)
        f = self.activation(pre)
        x_hat = self.decode(f)
        mse = self.mse(x, x_hat)
        aux = self.aux_loss(pre, (x - x_hat).detach())
        return SAELoss.from_latents(mse, torch.zeros((), device=x.device), aux, f)

    def extra_repr(self) -> str:
        return (f"{super().extra_repr()}, k={self.k}, aux_k={self.aux_k}, aux_coefficient={self.aux_coefficient:.4g}, "
                f"dead_after={self.dead_after}")


class BatchTopKSAE(TopKSAE):
    """BatchTopK (Bussmann, Leask & Nanda 2024): in training keep the k·batch largest ReLU(pre)
    activations over the whole batch (so inputs share a budget of k per input on average); at
    inference (``eval()``) keep f = ReLU(pre) · 1[ReLU(pre) > θ] with one global threshold θ.

    θ (the buffer ``threshold``) estimates E[smallest activation kept in a training batch]: an
    exponential moving average with rate ``threshold_lr`` over the training batches (the first
    batch sets it), or ``estimate_threshold(x)`` afterwards.  AuxK as in ``TopKSAE``.
    """

    def __init__(self, d_in: int, n_latents: int, k: int, aux_k: int | None = None,
                 aux_coefficient: float = 1 / 32, dead_after: int = 20_000, threshold_lr: float = 0.01,
                 device=None, generator=None):
        super().__init__(d_in, n_latents, k, aux_k, aux_coefficient, dead_after, device, generator)
        if not 0 < threshold_lr <= 1:
            raise ValueError(f"threshold_lr must lie in (0, 1], got {threshold_lr!r}")
        self.threshold_lr = float(threshold_lr)
        self.register_buffer("threshold", torch.zeros((), device=self.W_dec.device))
        self.register_buffer("threshold_updates", torch.zeros((), dtype=torch.long, device=self.W_dec.device))

    def batch_topk(self, pre: Tensor) -> Tensor:
        """ReLU(pre) (batch, n_latents) with all but the k·batch largest entries of the whole
        batch set to 0."""
        a = torch.relu(pre)
        values, index = a.flatten().topk(min(self.k * len(a), a.numel()), sorted=False)
        return torch.zeros_like(a).flatten().scatter(0, index, values).view_as(a)

    def activation(self, pre: Tensor) -> Tensor:
        if self.training:
            return self.batch_topk(pre)
        a = torch.relu(pre)
        return a * (a > self.threshold)

    def loss(self, x: Tensor) -> SAELoss:
        """‖x − x̂‖² + AuxK, with f = encode(x) (in training: BatchTopK) and x̂ = decode(f);
        also the smallest kept activation, which ``update_statistics`` averages into θ."""
        pre = self.pre_activations(x)
        f = self.activation(pre)
        x_hat = self.decode(f)
        mse = self.mse(x, x_hat)
        aux = self.aux_loss(pre, (x - x_hat).detach())
        out = SAELoss.from_latents(mse, torch.zeros((), device=x.device), aux, f)
        kept = f.detach()[f.detach() > 0]
        out.min_active = kept.min() if len(kept) else torch.tensor(math.inf, device=x.device)
        return out

    @torch.no_grad()
    def update_statistics(self, out: SAELoss) -> None:
        super().update_statistics(out)
        if out.min_active is not None and torch.isfinite(out.min_active):
            rate = 1.0 if self.threshold_updates == 0 else self.threshold_lr
            self.threshold.lerp_(out.min_active, rate)
            self.threshold_updates += 1

    @torch.no_grad()
    def estimate_threshold(self, x: Tensor, batch_size: int = 4096) -> float:
        """Set θ to the mean, over batches of ``x``, of the smallest activation BatchTopK keeps."""
        mins = []
        for chunk in x.split(batch_size):
            f = self.batch_topk(self.pre_activations(chunk))
            if (f > 0).any():
                mins.append(f[f > 0].min())
        if not mins:
            raise ValueError("no latent fired on x; cannot estimate the threshold")
        self.threshold.copy_(torch.stack(mins).mean())
        self.threshold_updates.fill_(max(1, int(self.threshold_updates)))
        return float(self.threshold)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, threshold={float(self.threshold):.4g}"


def rectangle(u: Tensor) -> Tensor:
    """The rectangle kernel K(u) = 1 for |u| < 1/2, else 0."""
    return ((u > -0.5) & (u < 0.5)).to(u.dtype)


class JumpReLUFunction(torch.autograd.Function):
    """JumpReLU_θ(z) = z · H(z − θ) with Rajamanoharan et al.'s straight-through estimator:
    ∂/∂z = H(z − θ) (the true derivative away from the jump) and the pseudo-derivative
    ∂/∂θ = −(θ/ε) K((z − θ)/ε) with the rectangle kernel K and bandwidth ε.

    z: (batch, n_latents); θ: (n_latents,), summed over the batch in the backward pass."""

    @staticmethod
    def forward(ctx, z: Tensor, threshold: Tensor, bandwidth: float) -> Tensor:
        ctx.save_for_backward(z, threshold)
        ctx.bandwidth = bandwidth
        return z * (z > threshold)

    @staticmethod
    def backward(ctx, grad: Tensor):
        z, threshold = ctx.saved_tensors
        eps = ctx.bandwidth
        grad_z = grad * (z > threshold)
        grad_threshold = -(threshold / eps) * (rectangle((z - threshold) / eps) * grad).sum(dim=0)
        return grad_z, grad_threshold, None


class StepFunction(torch.autograd.Function):
    """H(z − θ) with the straight-through estimator of Rajamanoharan et al.: no gradient to z,
    and the pseudo-derivative ∂/∂θ = −(1/ε) K((z − θ)/ε)."""

    @staticmethod
    def forward(ctx, z: Tensor, threshold: Tensor, bandwidth: float) -> Tensor:
        ctx.save_for_backward(z, threshold)
        ctx.bandwidth = bandwidth
        return (z > threshold).to(z.dtype)

    @staticmethod
    def backward(ctx, grad: Tensor):
        z, threshold = ctx.saved_tensors
        eps = ctx.bandwidth
        grad_threshold = -(1.0 / eps) * (rectangle((z - threshold) / eps) * grad).sum(dim=0)
        return None, grad_threshold, None


class JumpReLUSAE(SAE):
    """JumpReLU SAE (Rajamanoharan et al. 2024): f_i = pre_i · H(pre_i − θ_i), a learned
    threshold per latent, θ = exp(``log_threshold``) > 0; loss ‖x − x̂‖² + λ ‖f‖₀ with
    λ = ``l0_coefficient``.  The jump and the L0 count are trained through the
    straight-through estimators ``JumpReLUFunction`` and ``StepFunction`` (bandwidth ε =
    ``bandwidth``).  The paper uses θ₀ = ε = 0.001 for language-model activations normalised
    to E‖x‖² = d_in; the defaults here (θ₀ = 0.1, ε = 0.05) suit the course's synthetic data,
    whose active pre-activations are O(1): from θ₀ = 0.001 the threshold takes thousands of
    steps to climb to the noise level.  Unlike the paper's pseudo-code there is no ReLU
    before the JumpReLU: with θ > 0 it changes nothing in the forward pass."""

    latent_dims = {**SAE.latent_dims, "log_threshold": 0}

    def __init__(self, d_in: int, n_latents: int, l0_coefficient: float = 0.05, bandwidth: float = 0.05,
                 initial_threshold: float = 0.1, device=None, generator=None):
        super().__init__(d_in, n_latents, device, generator)
        self.l0_coefficient = _nonnegative("l0_coefficient", l0_coefficient)
        self.bandwidth = _positive("bandwidth", bandwidth)
        self.initial_threshold = _positive("initial_threshold", initial_threshold)
        self.log_threshold = nn.Parameter(torch.full((self.n_latents,), math.log(self.initial_threshold),
                                                     device=self.W_dec.device))

    @property
    def threshold(self) -> Tensor:
        return self.log_threshold.exp()

    def activation(self, pre: Tensor) -> Tensor:
        return JumpReLUFunction.apply(pre, self.threshold, self.bandwidth)

    def loss(self, x: Tensor) -> SAELoss:
        """‖x − x̂‖² + λ ‖f‖₀, with f = encode(x), x̂ = decode(f) and ‖f‖₀ = Σ_i H(pre_i − θ_i)."""
        pre = self.pre_activations(x)
        f = self.activation(pre)
        mse = self.mse(x, self.decode(f))
        sparsity = self.l0_coefficient * StepFunction.apply(pre, self.threshold, self.bandwidth).sum(dim=1).mean()
        return SAELoss.from_latents(mse, sparsity, torch.zeros((), device=x.device), f)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, l0_coefficient={self.l0_coefficient}, bandwidth={self.bandwidth}"


class GatedSAE(SAE):
    """Gated SAE (Rajamanoharan et al. 2024): which latents fire and how strongly are decided by
    two paths that share the encoder directions.  With h = (x − b_dec) W_enc

        π_gate = h + b_enc                      (W_enc, b_enc are the paper's W_gate, b_gate)
        π_mag  = h · exp(r_mag) + b_mag         (W_mag = W_gate with column i scaled by exp(r_mag_i))
        f      = 1[π_gate > 0] · ReLU(π_mag)

    loss = ‖x − x̂‖² + λ ‖ReLU(π_gate)‖₁ + ‖x − x̂_frozen(ReLU(π_gate))‖², where x̂_frozen decodes
    with a frozen copy (no gradient) of W_dec and b_dec.  The gate 1[·] passes no gradient; the
    L1 term and the auxiliary reconstruction train the gate path.  ``l1_coefficient`` is λ (the
    default 0.6 suits the course's synthetic data).
    """

    latent_dims = {**SAE.latent_dims, "r_mag": 0, "b_mag": 0}

    def __init__(self, d_in: int, n_latents: int, l1_coefficient: float = 0.6, device=None, generator=None):
        super().__init__(d_in, n_latents, device, generator)
        self.l1_coefficient = _nonnegative("l1_coefficient", l1_coefficient)
        self.r_mag = nn.Parameter(torch.zeros(self.n_latents, device=self.W_dec.device))
        self.b_mag = nn.Parameter(torch.zeros(self.n_latents, device=self.W_dec.device))

    def gate_and_magnitude(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """(π_gate, π_mag), each (batch, n_latents)."""
        self.check_input(x)
        h = (x - self.b_dec) @ self.W_enc
        return h + self.b_enc, h * self.r_mag.exp() + self.b_mag

    @staticmethod
    def gated(pi_gate: Tensor, pi_mag: Tensor) -> Tensor:
        """f = 1[π_gate > 0] · ReLU(π_mag); the gate 1[·] passes no gradient."""
        return (pi_gate > 0) * torch.relu(pi_mag)

    def encode(self, x: Tensor) -> Tensor:
        return self.gated(*self.gate_and_magnitude(x))

    def activation(self, pre: Tensor) -> Tensor:
        raise TypeError("a Gated SAE has two pre-activations; use encode(x) or gate_and_magnitude(x)")

    def loss(self, x: Tensor) -> SAELoss:
        """‖x − x̂‖² + λ ‖ReLU(π_gate)‖₁ + ‖x − x̂_frozen(ReLU(π_gate))‖², with f = encode(x)
        and x̂ = decode(f)."""
        pi_gate, pi_mag = self.gate_and_magnitude(x)
        f = self.gated(pi_gate, pi_mag)
        mse = self.mse(x, self.decode(f))
        gate = torch.relu(pi_gate)
        sparsity = self.l1_coefficient * gate.sum(dim=1).mean()
        aux = self.mse(x, gate @ self.W_dec.detach() + self.b_dec.detach())
        return SAELoss.from_latents(mse, sparsity, aux, f)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, l1_coefficient={self.l1_coefficient}"


ARCHITECTURES: dict[str, type[SAE]] = {
    "relu": ReLUSAE, "topk": TopKSAE, "batchtopk": BatchTopKSAE, "jumprelu": JumpReLUSAE, "gated": GatedSAE,
}


def make_sae(architecture: str, d_in: int, n_latents: int, **kwargs) -> SAE:
    """``ARCHITECTURES[architecture](d_in, n_latents, **kwargs)``, e.g. ``make_sae("topk", 64, 512, k=8)``."""
    if architecture not in ARCHITECTURES:
        raise ValueError(f"architecture must be one of {sorted(ARCHITECTURES)}, got {architecture!r}")
    return ARCHITECTURES[architecture](d_in, n_latents, **kwargs)


# --------------------------------------------------------------------------------------
# Resampling dead latents (Bricken et al. 2023)
# --------------------------------------------------------------------------------------


@torch.no_grad()
def resample_dead_latents(sae: SAE, x: Tensor, dead: Tensor, optimizer: torch.optim.Optimizer | None = None,
                          generator: torch.Generator | None = None, encoder_scale: float = 0.2,
                          reconstruct: Callable[[Tensor], Tensor] | None = None) -> int:
    """Re-initialise the ``dead`` latents toward inputs the SAE reconstructs badly.

    x: (n, d_in) candidate inputs; dead: (n_latents,) bool.  As in Bricken et al. 2023: each
    dead latent gets an input v drawn with probability ∝ ‖v − v̂‖⁴ (the squared loss); its
    decoder row becomes (v − b_dec)/‖v − b_dec‖ (the input as the encoder sees it, with the
    pre-encoder bias removed), its encoder column that direction times ``encoder_scale`` × the
    mean norm of the living latents' encoder columns, its encoder bias 0 (and any other
    per-latent parameter its initial value).  The optimiser's state (Adam's moments) for
    those slices is zeroed, and their firing counters restart.  Returns the number resampled.
    ``reconstruct`` (x ↦ x̂, default the SAE's forward) is what the losses are measured with.
    """
    sae.check_input(x)
    dead = dead.to(device=sae.W_dec.device, dtype=torch.bool)
    if dead.shape != (sae.n_latents,):
        raise ValueError(f"dead must be a (n_latents={sae.n_latents},) bool mask, got shape {tuple(dead.shape)}")
    index = dead.nonzero().squeeze(1)
    if len(index) == 0:
        return 0
    was_training = sae.training
    sae.eval()
    if reconstruct is None:
        reconstruct = lambda chunk: sae(chunk)[0]  # noqa: E731
    losses = torch.cat([(reconstruct(chunk) - chunk).square().sum(dim=1) for chunk in x.split(8192)])
    sae.train(was_training)
    weights = losses.square().double()
    if not torch.isfinite(weights).all() or weights.sum() <= 0:
        weights = torch.ones_like(weights)
    weights = weights.cpu()
    chosen = torch.multinomial(weights, len(index), replacement=len(index) > int((weights > 0).sum()),
                               generator=generator)
    v = x[chosen.to(x.device)].to(sae.W_dec.device) - sae.b_dec
    v = v / v.norm(dim=1, keepdim=True).clamp_min(1e-12)
    alive = ~dead
    enc_norm = sae.W_enc[:, alive].norm(dim=0).mean() if alive.any() else torch.tensor(1.0, device=v.device)
    sae.W_dec[index] = v
    sae.W_enc[:, index] = (v * encoder_scale * enc_norm).T
    sae.b_enc[index] = 0.0
    if isinstance(sae, JumpReLUSAE):
        sae.log_threshold[index] = math.log(sae.initial_threshold)
    if isinstance(sae, GatedSAE):
        sae.r_mag[index] = 0.0
        sae.b_mag[index] = 0.0
    sae.samples_since_fired[index] = 0
    if optimizer is not None:
        reset_optimizer_state(sae, optimizer, index)
    return len(index)


@torch.no_grad()
def reset_optimizer_state(sae: SAE, optimizer: torch.optim.Optimizer, index: Tensor) -> None:
    """Zero every per-parameter state tensor (Adam's exp_avg, exp_avg_sq, …) in the slices of
    the latents ``index`` (the dimensions named by ``sae.latent_dims``)."""
    for name, dim in sae.latent_dims.items():
        param = getattr(sae, name)
        for value in optimizer.state.get(param, {}).values():
            if isinstance(value, Tensor) and value.shape == param.shape:
                value.index_fill_(dim, index, 0.0)


# --------------------------------------------------------------------------------------
# Training
# --------------------------------------------------------------------------------------


@dataclass
class SAETrainResult:
    """What ``train_sae`` returns: the loss pieces and L0 at each logged step."""

    steps: list[int] = field(default_factory=list)
    history: dict[str, list[float]] = field(
        default_factory=lambda: {"loss": [], "mse": [], "sparsity": [], "aux": [], "l0": []})
    resampled: list[tuple[int, int]] = field(default_factory=list)  # (step, latents resampled)
    samples: int = 0
    seconds: float = 0.0

    @property
    def final(self) -> dict[str, float]:
        """The last logged value of each history entry."""
        return {name: values[-1] for name, values in self.history.items()}


class _Batches:
    """Batches from a data source: a (n, d_in) tensor, shuffled each epoch, or a callable
    ``data(batch_size, generator) -> (batch_size, d_in)``."""

    def __init__(self, data: DataSource, d_in: int, device: torch.device, seed: int):
        self.device = device
        # A callable draws on its own device (``SyntheticFeatures.device``, also for its bound
        # ``sample``), else on the SAE's.
        owner = getattr(data, "__self__", data)
        self.generator = torch.Generator(device=getattr(owner, "device", device)).manual_seed(seed)
        if isinstance(data, Tensor):
            if data.dim() != 2 or data.shape[1] != d_in or len(data) == 0:
                raise ValueError(f"data must be a (n, d_in={d_in}) tensor with n >= 1, got shape {tuple(data.shape)}")
            self.data, self.fn = data, None
            self.cpu_generator = torch.Generator().manual_seed(seed)
            self.order, self.position = None, len(data)
        elif callable(data):
            self.data, self.fn = None, data
        else:
            raise TypeError("data must be a tensor or a callable data(batch_size, generator), "
                            f"got {type(data).__name__}")

    def next(self, batch_size: int) -> Tensor:
        if self.fn is not None:
            x = self.fn(batch_size, self.generator)
            if not isinstance(x, Tensor) or x.dim() != 2 or len(x) != batch_size:
                shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
                raise ValueError(f"data({batch_size}, generator) must return a ({batch_size}, d_in) tensor, "
                                 f"got {shape}")
            return x.to(self.device, non_blocking=True)
        parts, needed = [], batch_size
        while needed:
            if self.position == len(self.data):
                self.order = torch.randperm(len(self.data), generator=self.cpu_generator).to(self.data.device)
                self.position = 0
            take = self.order[self.position: self.position + needed]
            self.position += len(take)
            needed -= len(take)
            parts.append(self.data.index_select(0, take))
        x = parts[0] if len(parts) == 1 else torch.cat(parts)
        return x.to(self.device, non_blocking=True)

    def pool(self, size: int) -> Tensor:
        """Candidate inputs for resampling."""
        if self.fn is not None:
            return self.fn(size, self.generator).to(self.device)
        pick = torch.randperm(len(self.data), generator=self.cpu_generator)[:size].to(self.data.device)
        return self.data.index_select(0, pick).to(self.device)


def train_sae(
    sae: SAE,
    data: DataSource,
    samples: int | None = None,
    steps: int | None = None,
    batch_size: int = 4096,
    lr: float = 1e-3,
    schedule: str = "constant",
    betas: tuple[float, float] = (0.9, 0.999),
    seed: int = 0,
    resample_every: int | None = None,
    resample_inputs: int = 32_768,
    log_every: int | None = None,
    progress: bool = True,
    description: str = "SAE",
    fast: bool = False,
) -> SAETrainResult:
    """Train ``sae`` with Adam on batches from ``data``; returns the loss history.

    ``data`` is a (n, d_in) tensor (shuffled each epoch) or a callable
    ``data(batch_size, generator) -> (batch_size, d_in)`` such as a ``SyntheticFeatures``.
    Give the length as ``samples`` (inputs seen; the last batch is cut short to hit it
    exactly) or as ``steps``.  Each step: loss (``sae.loss``), backward, remove the decoder
    gradient's radial part, Adam step (learning rate × ``schedule``: constant, cosine or
    linear decay), renormalise the decoder rows, update the dead-latent counters.
    ``resample_every=n`` resamples, every n steps (not at the end), the latents that did not
    fire during those n steps (``resample_dead_latents``, candidates: ``resample_inputs``
    fresh inputs).  The loss pieces and L0 are logged every ``log_every`` steps (default:
    100 records) and checked: a NaN or infinite loss raises ``FloatingPointError``.
    ``seed`` fixes the data stream; the SAE's initialisation has its own generator.  The SAE
    is left in inference mode (``eval()``, which matters for BatchTopK).

    ``fast=True`` computes each loss by ``course_utils._fast.sae.fast_loss`` (and resamples
    through its encoder): the same losses, up to float rounding, with fewer passes over the
    batch.  The course's sweeps train this way.
    """
    if fast:
        from ._fast import sae as fast_sae

        loss_of = partial(fast_sae.fast_loss, sae)
        reconstruct = partial(fast_sae.reconstruct, sae)
    else:
        loss_of, reconstruct = sae.loss, None

    if (samples is None) == (steps is None):
        raise ValueError("give exactly one of samples= (inputs to train on) or steps=")
    batch_size = _positive_int("batch_size", batch_size)
    if samples is not None:
        samples = _positive_int("samples", samples)
        steps = -(-samples // batch_size)
    else:
        steps = _positive_int("steps", steps)
        samples = steps * batch_size
    lr = _positive("lr", lr)
    multiplier = lr_schedule(schedule)
    if resample_every is not None:
        resample_every = _positive_int("resample_every", resample_every)
    resample_inputs = _positive_int("resample_inputs", resample_inputs)
    if log_every is not None:
        log_every = _positive_int("log_every", log_every)
    device = sae.W_dec.device
    batches = _Batches(data, sae.d_in, device, seed)
    resample_generator = torch.Generator().manual_seed(seed + 1)
    optimizer = torch.optim.Adam(sae.parameters(), lr=lr, betas=betas, foreach=True)
    result = SAETrainResult(samples=samples)
    loop = TrainingLoop(steps, description, progress, log_every=log_every, what="the SAE loss",
                        advice="lower the learning rate (or check the data for NaN or inf)")
    sae.train()
    for step in loop:
        if resample_every and step and step % resample_every == 0:
            dead = sae.dead_latents(resample_every * batch_size)
            count = resample_dead_latents(sae, batches.pool(resample_inputs), dead, optimizer, resample_generator,
                                          reconstruct=reconstruct)
            result.resampled.append((step, count))
        size = min(batch_size, samples - step * batch_size)
        x = batches.next(size)
        for group in optimizer.param_groups:
            group["lr"] = lr * multiplier(step, steps)
        out = loss_of(x)
        optimizer.zero_grad(set_to_none=True)
        out.total.backward()
        sae.project_decoder_grad_()
        optimizer.step()
        sae.normalise_decoder_()
        sae.update_statistics(out)
        if loop.logging(step):
            loss, mse, sparsity, aux, l0 = torch.stack([out.total, out.mse, out.sparsity, out.aux, out.l0]
                                                       ).detach().double().cpu().tolist()
            loop.log(step, loss, mse=mse, sparsity=sparsity, aux=aux, l0=l0)
    sae.eval()
    result.steps, result.seconds = loop.steps_logged, loop.seconds
    result.history = {name: loop.history[name] for name in result.history}
    return result


# --------------------------------------------------------------------------------------
# Metrics
# --------------------------------------------------------------------------------------


def l0(latents: Tensor) -> float:
    """Mean number of nonzero latents per input; latents: (batch, n_latents)."""
    return float((latents != 0).sum(dim=1).double().mean())


def fraction_variance_explained(x: Tensor, x_hat: Tensor) -> float:
    """1 − FVU, FVU = Σ‖x − x̂‖² / Σ‖x − x̄‖² (x̄ the mean input); x, x_hat: (batch, d_in)."""
    x, x_hat = x.double(), x_hat.double()
    total = (x - x.mean(dim=0)).square().sum()
    if total == 0:
        raise ValueError("x has no variance; the fraction of variance explained is undefined")
    return float(1 - (x - x_hat).square().sum() / total)


def firing_rates(latents: Tensor) -> Tensor:
    """(n_latents,): the fraction of inputs on which each latent is nonzero."""
    return (latents != 0).double().mean(dim=0)


def dead_fraction(latents: Tensor) -> float:
    """The fraction of latents that are zero on every input of ``latents`` (batch, n_latents)."""
    return float((firing_rates(latents) == 0).double().mean())


def dense_fraction(latents: Tensor, threshold: float = 0.1) -> float:
    """The fraction of latents that fire on more than ``threshold`` of the inputs."""
    return float((firing_rates(latents) > threshold).double().mean())


def shrinkage(x: Tensor, x_hat: Tensor) -> float:
    """Relative reconstruction bias γ = Σ‖x̂‖² / Σ⟨x̂, x⟩ (Rajamanoharan et al. 2024, Gated SAEs):
    the γ minimising Σ‖x̂/γ − x‖².  1 means unbiased; x̂ = 0.8 x gives 0.8.  An L1 penalty
    shrinks activations, so a ReLU SAE has γ < 1."""
    x, x_hat = x.double(), x_hat.double()
    return float(x_hat.square().sum() / (x_hat * x).sum())


def max_cosine_similarity(true_directions: Tensor, learned_directions: Tensor) -> Tensor:
    """For each true direction (rows of (n_true, d)), its largest cosine similarity with a learned
    direction (rows of (n_learned, d), e.g. ``sae.W_dec``).  Signed: an opposite direction
    counts −1.  Returns (n_true,)."""
    if true_directions.dim() != 2 or learned_directions.dim() != 2 or \
            true_directions.shape[1] != learned_directions.shape[1]:
        raise ValueError(f"directions must be (n, d) matrices with the same d, got {tuple(true_directions.shape)} "
                         f"and {tuple(learned_directions.shape)}")
    t = F.normalize(true_directions.detach().double(), dim=1)
    s = F.normalize(learned_directions.detach().double().to(t.device), dim=1)
    return (t @ s.T).max(dim=1).values


def mmcs(true_directions: Tensor, learned_directions: Tensor) -> float:
    """Mean max cosine similarity (Sharkey et al. 2022): the mean over true features of
    ``max_cosine_similarity``.  1 when every true direction is among the learned ones."""
    return float(max_cosine_similarity(true_directions, learned_directions).mean())


def fraction_recovered(true_directions: Tensor, learned_directions: Tensor, threshold: float = 0.9) -> float:
    """The fraction of true features whose max cosine similarity exceeds ``threshold``."""
    return float((max_cosine_similarity(true_directions, learned_directions) > threshold).double().mean())


@torch.no_grad()
def evaluate(sae: SAE, x: Tensor, true_directions: Tensor | None = None, dense_threshold: float = 0.1,
             batch_size: int = 8192) -> dict[str, float]:
    """Score ``sae`` on the evaluation inputs x (n, d_in), in inference mode (``eval()``).

    Returns l0, mse (‖x − x̂‖² per input), fve (1 − FVU), dead (fraction of latents that never
    fire on x), dense (fraction firing on more than ``dense_threshold`` of x), shrinkage (γ,
    see ``shrinkage``); with ``true_directions`` (n_true, d_in) also mmcs and recovered
    (fraction of true features with max cosine > 0.9).
    """
    sae.check_input(x)
    was_training = sae.training
    sae.eval()
    n = len(x)
    sums = dict(nonzero=0.0, err=0.0, x=torch.zeros(sae.d_in, dtype=torch.float64), xx=0.0, hh=0.0, hx=0.0)
    fired = torch.zeros(sae.n_latents, dtype=torch.float64)
    for chunk in x.split(batch_size):
        chunk = chunk.to(sae.W_dec.device)
        x_hat, f = sae(chunk)
        c, h = chunk.double(), x_hat.double()
        active = f != 0
        sums["nonzero"] += float(active.sum())
        sums["err"] += float((c - h).square().sum())
        sums["x"] += c.sum(dim=0).cpu()
        sums["xx"] += float(c.square().sum())
        sums["hh"] += float(h.square().sum())
        sums["hx"] += float((h * c).sum())
        fired += active.sum(dim=0).double().cpu()
    sae.train(was_training)
    variance = sums["xx"] - float(sums["x"].square().sum()) / n
    rates = fired / n
    result = dict(l0=sums["nonzero"] / n, mse=sums["err"] / n,
                  fve=1 - sums["err"] / variance if variance > 0 else math.nan,
                  dead=float((rates == 0).double().mean()), dense=float((rates > dense_threshold).double().mean()),
                  shrinkage=sums["hh"] / sums["hx"] if sums["hx"] else math.nan)
    if true_directions is not None:
        cosines = max_cosine_similarity(true_directions, sae.W_dec)
        result.update(mmcs=float(cosines.mean()), recovered=float((cosines > 0.9).double().mean()))
    return result


# --------------------------------------------------------------------------------------
# Chapter 05a's exercises as plain functions, and the SAE the chapter's capstone builds
# --------------------------------------------------------------------------------------
# The learner writes each of these in chapter 05a; its check hands this version to the rest
# of the chapter when the learner's has not passed.  They compute what the SAE classes above
# compute, one idea at a time, on plain tensors.


def sae_encode(x: Tensor, W_enc: Tensor, b_enc: Tensor, b_dec: Tensor) -> Tensor:
    """f = ReLU((x − b_dec) W_enc + b_enc): (batch, d_in) -> (batch, n_latents)."""
    return torch.relu((x - b_dec) @ W_enc + b_enc)


def sae_decode(f: Tensor, W_dec: Tensor, b_dec: Tensor) -> Tensor:
    """x̂ = f W_dec + b_dec: (batch, n_latents) -> (batch, d_in)."""
    return f @ W_dec + b_dec


def l1_sae_loss(x: Tensor, x_hat: Tensor, f: Tensor, l1_coefficient: float) -> Tensor:
    """The batch mean of ‖x − x̂‖² (summed over d_in) + λ Σ_i |f_i| (summed over latents): a scalar."""
    return SAE.mse(x, x_hat) + l1_coefficient * f.abs().sum(dim=1).mean()


def project_decoder_grad(W_dec: Tensor, grad: Tensor) -> Tensor:
    """grad (n_latents, d_in) with each row's component along the same (unit) row of W_dec removed."""
    return grad - (grad * W_dec).sum(dim=1, keepdim=True) * W_dec


def normalise_decoder(W_dec: Tensor) -> Tensor:
    """W_dec (n_latents, d_in) with every row divided by its norm (a new tensor)."""
    return W_dec / W_dec.norm(dim=1, keepdim=True).clamp_min(1e-12)


def sae_metrics(x: Tensor, x_hat: Tensor, f: Tensor) -> dict[str, float]:
    """{"l0", "fve", "dead", "shrinkage"} of one batch: x, x_hat (batch, d_in), f (batch, n_latents)."""
    return {"l0": l0(f), "fve": fraction_variance_explained(x, x_hat), "dead": dead_fraction(f),
            "shrinkage": shrinkage(x, x_hat)}


def topk_activation(pre: Tensor, k: int) -> Tensor:
    """ReLU of each row's k largest pre-activations, 0 elsewhere: (batch, n_latents) -> same shape."""
    values, indices = pre.topk(k, dim=1)
    return torch.zeros_like(pre).scatter(1, indices, values.relu())


def batch_topk_activation(pre: Tensor, k: int) -> Tensor:
    """ReLU(pre) (batch, n_latents) with all but the k·batch largest entries of the whole batch zeroed."""
    a = torch.relu(pre)
    values, index = a.flatten().topk(min(k * len(a), a.numel()))
    return torch.zeros_like(a).flatten().scatter(0, index, values).view_as(a)


def jumprelu_grads(z: Tensor, threshold: Tensor, bandwidth: float, grad_output: Tensor) -> tuple[Tensor, Tensor]:
    """The straight-through gradients of JumpReLU_θ(z) = z · H(z − θ) (``JumpReLUFunction``):
    ∂L/∂z = grad_output · H(z − θ), (batch, n_latents), and ∂L/∂θ = −(θ/ε) Σ_batch K((z − θ)/ε)
    grad_output, (n_latents,)."""
    grad_z = grad_output * (z > threshold)
    grad_threshold = -(threshold / bandwidth) * (rectangle((z - threshold) / bandwidth) * grad_output).sum(dim=0)
    return grad_z, grad_threshold


def resample_dead(W_enc: Tensor, b_enc: Tensor, W_dec: Tensor, b_dec: Tensor, dead: Tensor, inputs: Tensor,
                  encoder_scale: float = 0.2) -> tuple[Tensor, Tensor, Tensor]:
    """New (W_enc, b_enc, W_dec) in which the m-th dead latent (``dead`` (n_latents,) bool, in index
    order) points at inputs[m] (inputs: (n_dead, d_in)) as ``resample_dead_latents`` sets it:
    decoder row d = (v − b_dec)/‖v − b_dec‖, encoder column d · encoder_scale · (mean norm of the
    alive latents' encoder columns), b_enc 0.  The arguments are not modified."""
    W_enc, b_enc, W_dec = W_enc.clone(), b_enc.clone(), W_dec.clone()
    index = dead.nonzero().squeeze(1)
    d = inputs - b_dec
    d = d / d.norm(dim=1, keepdim=True).clamp_min(1e-12)
    scale = encoder_scale * W_enc[:, ~dead].norm(dim=0).mean()
    W_dec[index] = d
    W_enc[:, index] = (d * scale).T
    b_enc[index] = 0.0
    return W_enc, b_enc, W_dec


class SparseAutoencoder(nn.Module):
    """The ReLU + L1 SAE written out in one screen (chapter 05a's capstone): the same model and
    the same initial draws as ``ReLUSAE(d_in, n_latents, l1_coefficient, device, generator)``, but
    its ``loss`` is a plain scalar tensor.  Decoder rows random unit vectors, W_enc = W_decᵀ,
    b_enc = b_dec = 0."""

    def __init__(self, d_in: int, n_latents: int, l1_coefficient: float = 0.3, device="cpu",
                 generator: torch.Generator | None = None):
        super().__init__()
        self.d_in, self.n_latents, self.l1_coefficient = d_in, n_latents, l1_coefficient
        W_dec = torch.randn(n_latents, d_in, generator=generator)
        W_dec = W_dec / W_dec.norm(dim=1, keepdim=True)
        self.W_enc = nn.Parameter(W_dec.T.clone().to(device))
        self.b_enc = nn.Parameter(torch.zeros(n_latents, device=device))
        self.W_dec = nn.Parameter(W_dec.to(device))
        self.b_dec = nn.Parameter(torch.zeros(d_in, device=device))

    def encode(self, x: Tensor) -> Tensor:
        """f = ReLU((x − b_dec) W_enc + b_enc): (batch, d_in) -> (batch, n_latents)."""
        return sae_encode(x, self.W_enc, self.b_enc, self.b_dec)

    def decode(self, f: Tensor) -> Tensor:
        """x̂ = f W_dec + b_dec: (batch, n_latents) -> (batch, d_in)."""
        return sae_decode(f, self.W_dec, self.b_dec)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """(x̂ (batch, d_in), f (batch, n_latents))."""
        f = self.encode(x)
        return self.decode(f), f

    def loss(self, x: Tensor) -> Tensor:
        """‖x − x̂‖² + λ Σ_i |f_i|, averaged over the batch x (batch, d_in): a scalar."""
        x_hat, f = self(x)
        return l1_sae_loss(x, x_hat, f, self.l1_coefficient)


@torch.no_grad()
def resample_latents(sae: nn.Module, optimizer: torch.optim.Optimizer, inputs: Tensor,
                     generator: torch.Generator, encoder_scale: float = 0.2) -> int:
    """Bricken et al.'s resampling for any SAE with W_enc, b_enc, W_dec, b_dec and
    ``forward(x) -> (x̂, f)``: the latents that fire on none of ``inputs`` (n, d_in) are dead;
    each gets an input drawn (``torch.multinomial`` on the CPU, ``generator``) with probability
    ∝ its squared loss ‖v − v̂‖⁴, and ``resample_dead`` points it there; Adam's state in the
    dead latents' slices is zeroed.  Returns the number of latents resampled."""
    x_hat, f = sae(inputs)
    dead = (f == 0).all(dim=0)
    n_dead = int(dead.sum())
    if n_dead == 0:
        return 0
    weights = (inputs - x_hat).square().sum(dim=1).square().cpu()
    chosen = torch.multinomial(weights, n_dead, generator=generator).to(inputs.device)
    W_enc, b_enc, W_dec = resample_dead(sae.W_enc, sae.b_enc, sae.W_dec, sae.b_dec, dead, inputs[chosen],
                                        encoder_scale)
    sae.W_enc.copy_(W_enc)
    sae.b_enc.copy_(b_enc)
    sae.W_dec.copy_(W_dec)
    index = dead.nonzero().squeeze(1)
    for param, dim in ((sae.W_enc, 1), (sae.b_enc, 0), (sae.W_dec, 0)):
        for state in optimizer.state.get(param, {}).values():
            if isinstance(state, Tensor) and state.shape == param.shape:
                state.index_fill_(dim, index, 0.0)
    return n_dead


def train_sparse_autoencoder(sae: nn.Module, data: Callable[[int, torch.Generator], Tensor], steps: int,
                      batch_size: int = 1024, lr: float = 1e-2, schedule: str = "constant", seed: int = 0,
                      resample_every: int | None = None,
                      resample: Callable | None = None, resample_inputs: int = 8192, description: str = "SAE",
                      progress: bool = True) -> Tensor:
    """Chapter 05a's training loop, one screen: Adam on ``sae.loss`` with fresh batches
    ``data(batch_size, generator)`` from one generator seeded with ``seed`` on the SAE's device,
    learning rate ``lr × lr_schedule(schedule)(step, steps)``.  Each step: loss, backward, ``project_decoder_grad`` on W_dec's gradient, Adam step,
    ``normalise_decoder`` on W_dec.  With ``resample_every=n`` (and ``resample``, e.g.
    ``resample_latents``), at every n-th step (not step 0), before the batch:
    ``resample(sae, optimizer, data(resample_inputs, generator), resample_generator)``, where
    ``resample_generator = torch.Generator().manual_seed(seed + 1)`` is made before the loop.
    Takes the steps ``train_sae(ReLUSAE(...), data, steps=..., batch_size=..., lr=..., schedule=...,
    seed=...)`` takes.  Returns each step's loss, (steps,); fewer steps in smoke mode
    (``training.SMOKE_STEPS_ENV``), as ``train_sae``."""
    from tqdm.auto import tqdm

    optimizer = torch.optim.Adam(sae.parameters(), lr=lr)
    multiplier = lr_schedule(schedule)
    generator = torch.Generator(device=sae.W_dec.device).manual_seed(seed)
    resample_generator = torch.Generator().manual_seed(seed + 1)
    run, description = smoke_cap(steps, description)
    losses = torch.zeros(run, device=sae.W_dec.device)
    for step in tqdm(range(run), desc=description, disable=not progress, mininterval=0.5):
        for group in optimizer.param_groups:
            group["lr"] = lr * multiplier(step, steps)
        if resample_every and step and step % resample_every == 0:
            resample(sae, optimizer, data(resample_inputs, generator), resample_generator)
        loss = sae.loss(data(batch_size, generator))
        optimizer.zero_grad()
        loss.backward()
        sae.W_dec.grad = project_decoder_grad(sae.W_dec.detach(), sae.W_dec.grad)
        optimizer.step()
        with torch.no_grad():
            sae.W_dec.copy_(normalise_decoder(sae.W_dec))
        losses[step] = loss.detach()
    return losses
