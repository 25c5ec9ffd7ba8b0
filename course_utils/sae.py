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

``train_sae`` trains any of them with Adam, a progress bar, a loss history, a divergence
check and optional dead-latent resampling (``resample_dead_latents``, Bricken et al. 2023).
``evaluate`` reports L0, the fraction of variance explained, dead and dense latents,
shrinkage and, given the true directions, MMCS and the fraction of features recovered.
``save_sae`` and ``load_sae`` write and read SAELens's on-disk format (``cfg.json`` and
``sae_weights.safetensors``), so course SAEs open in SAELens and SAELens SAEs open here.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .device import get_device
from .toy_models import lr_schedule

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
        """The pieces of a dense architecture, whose activations f (batch, n_latents) are ≥ 0."""
        f = f.detach()
        return cls(mse + sparsity + aux, mse, sparsity, aux, f.amax(dim=0) > 0, len(f), latents=f)

    @property
    def l0(self) -> Tensor:
        if self.n_active is None:
            self.n_active = torch.sign(self.latents).sum()  # f ≥ 0: sign counts the nonzeros
        return torch.as_tensor(self.n_active, dtype=torch.float32, device=self.mse.device) / self.n_inputs


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
        """pre = (x − b_dec) W_enc + b_enc: (batch, d_in) -> (batch, n_latents).

        Computed as x W_enc + (b_enc − b_dec W_enc), the same function, so the backward pass
        needs no (batch × n_latents) product for b_dec's gradient."""
        self.check_input(x)
        return torch.addmm(self.b_enc - self.b_dec @ self.W_enc, x, self.W_enc)

    def activation(self, pre: Tensor) -> Tensor:
        """σ: pre-activations (batch, n_latents) -> latent activations f (batch, n_latents)."""
        raise NotImplementedError

    def encode(self, x: Tensor) -> Tensor:
        """f = σ(pre(x)): (batch, d_in) -> (batch, n_latents)."""
        return self.activation(self.pre_activations(x))

    def decode(self, f: Tensor) -> Tensor:
        """x̂ = f W_dec + b_dec: (batch, n_latents) -> (batch, d_in)."""
        return torch.addmm(self.b_dec, f, self.W_dec)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """(x̂ (batch, d_in), f (batch, n_latents))."""
        f = self.encode(x)
        return self.decode(f), f

    def loss(self, x: Tensor) -> SAELoss:
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
        f = torch.relu_(self.pre_activations(x))  # in place: one (batch, n_latents) tensor fewer
        # x̂ − b_dec = f W_dec and the L1 norm Σ_i f_i = f · 1 in one product, f [W_dec | 1], so
        # the backward pass gets both gradients w.r.t. f from one matmul (about 10 % faster on a
        # CPU than adding a second (batch, n_latents) gradient).
        out = f @ torch.cat([self.W_dec, torch.ones_like(self.W_dec[:, :1])], dim=1)
        mse = self.mse(x, out[:, :-1] + self.b_dec)
        sparsity = self.l1_coefficient * out[:, -1].mean()
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
        """α ‖e − ê‖², ê from the top ``aux_k`` dead latents' pre-activations; 0 if none is dead."""
        dead = self.dead_latents(self.dead_after).nonzero().squeeze(1)
        if len(dead) == 0 or self.aux_coefficient == 0:
            return torch.zeros((), device=pre.device)
        values, j = pre.index_select(1, dead).topk(min(self.aux_k, len(dead)), dim=1, sorted=False)
        error_hat = sparse_decode(j, values.relu(), self.W_dec.index_select(0, dead))
        return self.aux_coefficient * self.mse(error, error_hat)

    def loss(self, x: Tensor) -> SAELoss:
        # The same x̂ as decode(encode(x)), decoded from the k (index, value) pairs directly.
        pre = self.pre_activations(x)
        values, indices = pre.topk(self.k, dim=1, sorted=False)
        values = values.relu()
        x_hat = sparse_decode(indices, values, self.W_dec) + self.b_dec
        mse = self.mse(x, x_hat)
        aux = self.aux_loss(pre, (x - x_hat).detach())
        active = indices[values.detach() > 0]
        fired = torch.zeros(self.n_latents, dtype=torch.bool, device=x.device).index_fill_(0, active, True)
        return SAELoss(mse + aux, mse, torch.zeros((), device=x.device), aux, fired, len(x), n_active=active.numel())

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

    def batch_topk_mask(self, a: Tensor) -> Tensor:
        """For a = ReLU(pre) (batch, n_latents): bool mask of its k·batch largest entries (fewer
        when fewer are positive; zeros are never kept)."""
        keep = min(self.k * len(a), a.numel())
        mask = (a >= kth_largest_positive(a, keep)) & (a > 0)
        if int(mask.sum()) > keep:  # ties at the threshold: an exact top-k decides
            flat = a.flatten()
            mask = torch.zeros_like(flat, dtype=torch.bool).scatter_(0, flat.topk(keep).indices, True)
            mask = mask.view_as(a) & (a > 0)
        return mask

    def batch_topk(self, pre: Tensor) -> Tensor:
        """ReLU(pre) with all but the k·batch largest entries of the batch set to 0."""
        a = torch.relu(pre)
        return a * self.batch_topk_mask(a.detach())

    def activation(self, pre: Tensor) -> Tensor:
        if self.training:
            return self.batch_topk(pre)
        a = torch.relu(pre)
        return a * (a > self.threshold)

    def loss(self, x: Tensor) -> SAELoss:
        pre = self.pre_activations(x)
        a = torch.relu(pre)
        mask = self.batch_topk_mask(a.detach())
        if sparse_is_faster(self.k, self.n_latents, self.d_in):
            # The same x̂ as decode(a · mask), from the kept (index, value) pairs: input b's bag
            # holds the kept entries of row b.
            kept = mask.flatten().nonzero().squeeze(1)
            values = a.flatten().index_select(0, kept)
            rows, latents = kept // self.n_latents, kept % self.n_latents
            per_input = torch.bincount(rows, minlength=len(x))
            x_hat = F.embedding_bag(latents, self.W_dec, per_input.cumsum(0) - per_input, per_sample_weights=values,
                                    mode="sum") + self.b_dec
        else:
            x_hat = self.decode(a * mask)
            values, latents = a.detach()[mask], mask.nonzero()[:, 1]
        mse = self.mse(x, x_hat)
        aux = self.aux_loss(pre, (x - x_hat).detach())
        min_active = values.detach().min() if len(values) else torch.tensor(math.inf, device=x.device)
        fired = torch.zeros(self.n_latents, dtype=torch.bool, device=x.device).index_fill_(0, latents, True)
        return SAELoss(mse + aux, mse, torch.zeros((), device=x.device), aux, fired, len(x), n_active=len(values),
                       min_active=min_active)

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


def rectangle(u: Tensor) -> Tensor:
    """The rectangle kernel K(u) = 1 for |u| < 1/2, else 0."""
    return ((u > -0.5) & (u < 0.5)).to(u.dtype)


def _greater(a: Tensor, b: Tensor | float) -> Tensor:
    """1[a > b] as a float tensor shaped like a.  (A comparison written straight into a float
    tensor is several times faster on a CPU than a bool mask converted or fed to torch.where.)"""
    return torch.gt(a.detach(), b, out=torch.empty_like(a))


def _window(z: Tensor, threshold: Tensor, bandwidth: float) -> Tensor:
    """K((z − θ)/ε) as floats, computed as 1[|z − θ| < ε/2] (fewer passes over the batch)."""
    return torch.lt((z - threshold).abs_(), bandwidth / 2, out=torch.empty_like(z))


class JumpReLUFunction(torch.autograd.Function):
    """JumpReLU_θ(z) = z · H(z − θ) with Rajamanoharan et al.'s straight-through estimator:
    ∂/∂z = H(z − θ) (the true derivative away from the jump) and the pseudo-derivative
    ∂/∂θ = −(θ/ε) K((z − θ)/ε) with the rectangle kernel K and bandwidth ε.

    z: (batch, n_latents); θ: (n_latents,), summed over the batch in the backward pass."""

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
    """H(z − θ) with the straight-through estimator of Rajamanoharan et al.: no gradient to z,
    and the pseudo-derivative ∂/∂θ = −(1/ε) K((z − θ)/ε)."""

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
        pre = self.pre_activations(x)
        threshold = self.threshold
        f = JumpReLUFunction.apply(pre, threshold, self.bandwidth)
        mse = self.mse(x, self.decode(f))
        sparsity = self.l0_coefficient * StepFunction.apply(pre, threshold, self.bandwidth).sum(dim=1).mean()
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
        h = torch.addmm(-(self.b_dec @ self.W_enc), x, self.W_enc)
        return h + self.b_enc, torch.addcmul(self.b_mag, h, self.r_mag.exp())

    def encode(self, x: Tensor) -> Tensor:
        pi_gate, pi_mag = self.gate_and_magnitude(x)
        return _greater(pi_gate, 0.0) * torch.relu(pi_mag)

    def activation(self, pre: Tensor) -> Tensor:
        raise TypeError("a Gated SAE has two pre-activations; use encode(x) or gate_and_magnitude(x)")

    def loss(self, x: Tensor) -> SAELoss:
        pi_gate, pi_mag = self.gate_and_magnitude(x)
        f = _greater(pi_gate, 0.0) * torch.relu(pi_mag)
        mse = self.mse(x, self.decode(f))
        gate = torch.relu(pi_gate)
        sparsity = self.l1_coefficient * gate.sum(dim=1).mean()
        aux = self.mse(x, torch.addmm(self.b_dec.detach(), gate, self.W_dec.detach()))
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
                          generator: torch.Generator | None = None, encoder_scale: float = 0.2) -> int:
    """Re-initialise the ``dead`` latents toward inputs the SAE reconstructs badly.

    x: (n, d_in) candidate inputs; dead: (n_latents,) bool.  As in Bricken et al. 2023: each
    dead latent gets an input v drawn with probability ∝ ‖v − v̂‖⁴ (the squared loss); its
    decoder row becomes (v − b_dec)/‖v − b_dec‖ (the input as the encoder sees it, with the
    pre-encoder bias removed), its encoder column that direction times ``encoder_scale`` × the
    mean norm of the living latents' encoder columns, its encoder bias 0 (and any other
    per-latent parameter its initial value).  The optimiser's state (Adam's moments) for
    those slices is zeroed, and their firing counters restart.  Returns the number resampled.
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
    losses = torch.cat([(sae(chunk)[0] - chunk).square().sum(dim=1) for chunk in x.split(8192)])
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
    """
    from tqdm.auto import tqdm

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
    log_every = _positive_int("log_every", log_every or max(1, steps // 100))
    device = sae.W_dec.device
    batches = _Batches(data, sae.d_in, device, seed)
    resample_generator = torch.Generator().manual_seed(seed + 1)
    optimizer = torch.optim.Adam(sae.parameters(), lr=lr, betas=betas, foreach=True)
    result = SAETrainResult(samples=samples)
    sae.train()
    bar = tqdm(total=steps, desc=description, disable=not progress, mininterval=0.5)
    start = time.perf_counter()
    for step in range(steps):
        if resample_every and step and step % resample_every == 0:
            dead = sae.dead_latents(resample_every * batch_size)
            count = resample_dead_latents(sae, batches.pool(resample_inputs), dead, optimizer, resample_generator)
            result.resampled.append((step, count))
        size = min(batch_size, samples - step * batch_size)
        x = batches.next(size)
        for group in optimizer.param_groups:
            group["lr"] = lr * multiplier(step, steps)
        out = sae.loss(x)
        optimizer.zero_grad(set_to_none=True)
        out.total.backward()
        sae.project_decoder_grad_()
        optimizer.step()
        sae.normalise_decoder_()
        sae.update_statistics(out)
        if step % log_every == 0 or step == steps - 1:
            values = torch.stack([out.total, out.mse, out.sparsity, out.aux, out.l0]).detach().double().cpu().tolist()
            if not math.isfinite(values[0]):
                bar.close()
                raise FloatingPointError(f"the SAE loss became NaN or infinite at step {step} "
                                         f"(mse={values[1]:.4g}, sparsity={values[2]:.4g}, aux={values[3]:.4g}); "
                                         "lower the learning rate (or check the data for NaN or inf)")
            result.steps.append(step)
            for name, value in zip(result.history, values):
                result.history[name].append(value)
            bar.set_postfix(loss=f"{values[0]:.4g}", l0=f"{values[4]:.3g}", refresh=False)
        bar.update(1)
    bar.close()
    sae.eval()
    result.seconds = time.perf_counter() - start
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
# Saving and loading (SAELens's on-disk format)
# --------------------------------------------------------------------------------------
#
# An SAE is saved as a directory holding two files, the layout SAELens (Bloom et al.) reads
# with ``SAE.load_from_disk(path)``:
#
#     cfg.json                   the config: architecture, d_in, d_sae, dtype, device,
#                                apply_b_dec_to_input, normalize_activations, metadata{...}
#     sae_weights.safetensors    the tensors, named as SAELens names them
#
#     ours        SAELens architecture   tensors
#     ReLUSAE     "standard"             W_enc (d_in, d_sae), b_enc (d_sae,), W_dec (d_sae, d_in), b_dec (d_in,)
#     TopKSAE     "topk" (cfg k)         the same
#     BatchTopK   "jumprelu"             the same + threshold (d_sae,) = θ in every entry (SAELens
#                                        saves its own trained BatchTopK SAEs this way too)
#     JumpReLU    "jumprelu"             the same + threshold = exp(log_threshold)
#     GatedSAE    "gated"                W_enc (the gate's), b_gate (our b_enc), r_mag, b_mag, W_dec, b_dec
#
# SAELens computes pre = (x − b_dec·[apply_b_dec_to_input]) W_enc + b_enc, as ours does with
# apply_b_dec_to_input = true, which is what we write.  The course's own settings (our
# architecture, l1_coefficient, k, aux_k, bandwidth, …) go in cfg.json's metadata under
# "superposition_course", where SAELens keeps but ignores them, so load_sae rebuilds an equal
# object.  Top-level keys of SAELens v5 (activation_fn_str, hook_layer, context_size, …) are
# written too, so v5 can read the file; v6 ignores them.  Checked with SAELens 6.54.12 and
# 5.11.0: both load all five, with the same activations and reconstructions to 1e-6.

import json  # noqa: E402
import os  # noqa: E402
import re  # noqa: E402
import warnings  # noqa: E402
from pathlib import Path  # noqa: E402

SAE_CFG_FILENAME = "cfg.json"
SAE_WEIGHTS_FILENAME = "sae_weights.safetensors"
SAELENS_ARCHITECTURES = {"relu": "standard", "topk": "topk", "batchtopk": "jumprelu", "jumprelu": "jumprelu",
                         "gated": "gated"}
# The format version we follow: SAELens ≥ 6 reads a config with this version as its own format.
SAELENS_FORMAT_VERSION = "6.0.0"
_COURSE_KEY = "superposition_course"
_RESERVED_METADATA = {"sae_lens_version", "sae_lens_training_version", "training_architecture", _COURSE_KEY}
_DTYPES = {"float32": torch.float32, "float64": torch.float64, "float16": torch.float16, "bfloat16": torch.bfloat16}


def _architecture_name(sae: SAE) -> str:
    for name, cls in ARCHITECTURES.items():
        if type(sae) is cls:
            return name
    raise TypeError(f"save_sae saves the course's SAEs ({', '.join(c.__name__ for c in ARCHITECTURES.values())}), "
                    f"got {type(sae).__name__}")


def _settings(sae: SAE) -> dict:
    """The constructor arguments that rebuild ``sae`` (besides d_in, n_latents, device, generator)."""
    import inspect

    names = [p for p in inspect.signature(type(sae).__init__).parameters
             if p not in ("self", "d_in", "n_latents", "device", "generator")]
    return {name: getattr(sae, name) for name in names}


def _saelens_tensors(sae: SAE, architecture: str) -> dict[str, Tensor]:
    """The SAE's weights under SAELens's names (CPU, contiguous, detached copies)."""
    t = {"W_enc": sae.W_enc, "W_dec": sae.W_dec, "b_dec": sae.b_dec}
    if architecture == "gated":
        t.update(b_gate=sae.b_enc, r_mag=sae.r_mag, b_mag=sae.b_mag)
    else:
        t["b_enc"] = sae.b_enc
    if architecture == "jumprelu":
        t["threshold"] = sae.threshold
    elif architecture == "batchtopk":
        t["threshold"] = sae.threshold.expand(sae.n_latents)
    return {name: value.detach().to("cpu").contiguous().clone() for name, value in t.items()}


def _hook_layer(hook_name: str | None) -> int | None:
    """The layer number in a TransformerLens hook name ("blocks.3.hook_resid_pre" -> 3), else None."""
    match = re.search(r"(?:^|\.)(\d+)(?:\.|$)", hook_name or "")
    return int(match.group(1)) if match else None


def save_sae(sae: SAE, path: str | os.PathLike, hook_name: str | None = None, model_name: str | None = None,
             metadata: dict | None = None, overwrite: bool = False) -> Path:
    """Save ``sae`` to the directory ``path`` in SAELens's format (``cfg.json`` and
    ``sae_weights.safetensors``, see the section comment), readable by ``load_sae`` and by
    SAELens's ``SAE.load_from_disk(path)``.  Returns the directory.

    ``hook_name`` (e.g. "blocks.1.hook_resid_post") and ``model_name`` say where the inputs
    came from; with ``metadata`` (a JSON-serialisable dict) they go in the config's metadata.
    An SAE that ``load_sae`` returned keeps its file's metadata unless these override it.

    The directory is created if needed.  If it already holds an SAE (either file), this
    raises ``FileExistsError`` unless ``overwrite=True``.  Weights that are NaN or infinite
    raise ``ValueError``: such an SAE is broken, and saving it would only move the error.
    Training state (the dead-latent counters, an optimiser) is not saved.
    """
    from safetensors.torch import save_file

    architecture = _architecture_name(sae)
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise FileExistsError(f"{path} exists and is not a directory")
    existing = [name for name in (SAE_CFG_FILENAME, SAE_WEIGHTS_FILENAME) if (path / name).exists()]
    if existing and not overwrite:
        raise FileExistsError(f"{path} already holds an SAE ({', '.join(existing)}); "
                              "pass overwrite=True to replace it")
    tensors = _saelens_tensors(sae, architecture)
    dtypes = {value.dtype for value in tensors.values()}
    dtype_name = {v: k for k, v in _DTYPES.items()}.get(next(iter(dtypes)))
    if len(dtypes) != 1 or dtype_name is None:
        raise ValueError(f"the SAE's weights must share one dtype of {sorted(_DTYPES)}, got {sorted(map(str, dtypes))}")
    for name, value in tensors.items():
        if not torch.isfinite(value).all():
            raise ValueError(f"the SAE's {name} holds NaN or infinite values; not saving a broken SAE")

    meta = {k: v for k, v in getattr(sae, "saelens_metadata", {}).items() if k not in _RESERVED_METADATA}
    reserved = sorted(_RESERVED_METADATA & set(metadata or {}))
    if reserved:
        raise ValueError(f"metadata keys {reserved} are reserved (save_sae writes them)")
    meta.update(metadata or {})
    if hook_name is not None:
        meta["hook_name"] = hook_name
    if model_name is not None:
        meta["model_name"] = model_name
    meta.setdefault("hook_name", None)
    meta.setdefault("model_name", None)
    course = {"architecture": architecture, "class": type(sae).__name__, "settings": _settings(sae)}
    if architecture == "batchtopk":
        course["threshold_updates"] = int(sae.threshold_updates)
    saelens_architecture = SAELENS_ARCHITECTURES[architecture]
    cfg = {
        "architecture": saelens_architecture,
        "d_in": sae.d_in,
        "d_sae": sae.n_latents,
        "dtype": dtype_name,
        "device": "cpu",
        "apply_b_dec_to_input": True,  # ours always subtract b_dec before encoding
        "normalize_activations": "none",
        "reshape_activations": "none",
    }
    if saelens_architecture == "topk":
        cfg.update(k=sae.k, rescale_acts_by_decoder_norm=False)
    cfg["metadata"] = {
        "sae_lens_version": SAELENS_FORMAT_VERSION,  # the format's version, not a SAELens install
        "sae_lens_training_version": None,  # not trained by SAELens
        **meta,
        **({"training_architecture": "batchtopk"} if architecture == "batchtopk" else {}),
        _COURSE_KEY: course,
    }
    # SAELens v5 reads these top-level keys (and needs hook_name to be a string); v6 ignores them.
    cfg.update({
        "activation_fn_str": "topk" if saelens_architecture == "topk" else "relu",
        "activation_fn_kwargs": {"k": sae.k} if saelens_architecture == "topk" else {},
        "finetuning_scaling_factor": False,
        "model_name": meta["model_name"],
        "hook_name": meta["hook_name"] or "",
        "hook_layer": _hook_layer(meta["hook_name"]),
        "hook_head_index": meta.get("hook_head_index"),
        "context_size": meta.get("context_size"),
        "dataset_path": meta.get("dataset_path"),
        "prepend_bos": meta.get("prepend_bos", True),
        "dataset_trust_remote_code": False,
        "sae_lens_training_version": None,
    })
    try:
        text = json.dumps(cfg, indent=2, allow_nan=False)
    except (TypeError, ValueError) as error:
        raise ValueError(f"metadata must be JSON-serialisable (finite numbers, strings, lists, dicts): {error}") from None

    path.mkdir(parents=True, exist_ok=True)
    # Write each file under a temporary name, then rename: an interrupted save leaves no half file.
    weights_tmp, cfg_tmp = path / (SAE_WEIGHTS_FILENAME + ".tmp"), path / (SAE_CFG_FILENAME + ".tmp")
    save_file(tensors, str(weights_tmp))
    cfg_tmp.write_text(text + "\n", encoding="utf-8")
    os.replace(weights_tmp, path / SAE_WEIGHTS_FILENAME)
    os.replace(cfg_tmp, path / SAE_CFG_FILENAME)
    return path


def _read_cfg(cfg_path: Path) -> dict:
    if not cfg_path.is_file():
        raise FileNotFoundError(f"{cfg_path} not found: an SAE directory needs {SAE_CFG_FILENAME} and "
                                f"{SAE_WEIGHTS_FILENAME}")
    try:
        cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"{cfg_path} is not valid JSON: {error}") from None
    if not isinstance(cfg, dict):
        raise ValueError(f"{cfg_path} must hold a JSON object, got {type(cfg).__name__}")
    for key in ("d_in", "d_sae"):
        value = cfg.get(key)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{cfg_path}: {key!r} must be a positive integer, got {value!r}")
    if not isinstance(cfg.get("metadata", {}), dict):
        raise ValueError(f"{cfg_path}: 'metadata' must be a JSON object")
    return cfg


def _read_tensors(weights_path: Path) -> dict[str, Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    if not weights_path.is_file():
        raise FileNotFoundError(f"{weights_path} not found: an SAE directory needs {SAE_CFG_FILENAME} and "
                                f"{SAE_WEIGHTS_FILENAME}")
    try:
        return load_file(str(weights_path), device="cpu")
    except (SafetensorError, OSError, RuntimeError, ValueError) as error:
        raise ValueError(f"{weights_path} is corrupt or truncated (not a readable safetensors file): {error}") from None


def _saelens_architecture(cfg: dict, cfg_path: Path) -> tuple[str, int | None]:
    """(SAELens architecture, k or None), also for configs written before SAELens 6."""
    architecture = cfg.get("architecture", "standard")
    activation = cfg.get("activation_fn", cfg.get("activation_fn_str", "relu"))
    kwargs = cfg.get("activation_fn_kwargs") or {}
    k = cfg.get("k", kwargs.get("k"))
    if architecture == "standard" and activation == "topk":  # SAELens 5 wrote TopK SAEs this way
        architecture = "topk"
    if architecture not in ("standard", "topk", "jumprelu", "gated"):
        raise ValueError(f"{cfg_path}: architecture {architecture!r} is not supported; load_sae reads "
                         "'standard', 'topk', 'jumprelu' and 'gated'")
    if architecture != "topk" and activation not in ("relu", None):
        raise ValueError(f"{cfg_path}: activation function {activation!r} is not supported (only relu and topk)")
    if architecture == "topk" and (isinstance(k, bool) or not isinstance(k, int) or k < 1):
        raise ValueError(f"{cfg_path}: a 'topk' SAE needs a positive integer k, got {k!r}")
    return architecture, k


def _exact_log(threshold: Tensor) -> Tensor:
    """log θ, nudged by an ulp or two where needed so that exp(log θ) == θ exactly (as far as the
    float type allows), so a JumpReLU SAE's thresholds survive the round trip bit for bit."""
    log = threshold.log()
    for _ in range(4):
        back = log.exp()
        low, high = back < threshold, back > threshold
        if not (low.any() or high.any()):
            break
        log = torch.where(low, torch.nextafter(log, torch.full_like(log, math.inf)), log)
        log = torch.where(high, torch.nextafter(log, torch.full_like(log, -math.inf)), log)
    return log


def load_sae(path: str | os.PathLike, device: torch.device | str | None = None) -> SAE:
    """Load an SAE saved by ``save_sae``, or any SAELens SAE directory (``cfg.json`` +
    ``sae_weights.safetensors``) of architecture standard, topk, jumprelu or gated.

    ``path`` is the directory (the path of either file in it also works); ``device``
    defaults to ``get_device()``.  Returns the SAE in inference mode (``eval()``), with the
    config's metadata (hook_name, model_name, …) as the dict ``sae.saelens_metadata``.

    A file of ours comes back as an equal object (same class, settings, weights; encode and
    decode give bit-identical outputs).  A foreign SAELens SAE becomes the course class of its
    architecture (standard → ReLUSAE, topk → TopKSAE, jumprelu → JumpReLUSAE, gated →
    GatedSAE; a BatchTopK SAE, which SAELens saves as jumprelu, becomes a JumpReLUSAE with the
    same activations) with default training settings; apply_b_dec_to_input = false is folded into the
    encoder bias, and TopK's rescale_acts_by_decoder_norm and a finetuning scaling factor into
    the weights (the same function, up to float rounding).  Run-time input normalisation
    (layer_norm, constant_norm_rescale, covariance_whitening) is not supported.

    Errors name the file: ``FileNotFoundError`` for a missing directory or file,
    ``ValueError`` for invalid JSON, an unsupported architecture, a missing, unexpected or
    wrongly shaped tensor, NaN or infinite weights, and a corrupt or truncated weights file.
    """
    path = Path(path)
    if path.is_file() and path.name in (SAE_CFG_FILENAME, SAE_WEIGHTS_FILENAME):
        path = path.parent
    if not path.exists():
        raise FileNotFoundError(f"no SAE directory at {path}")
    if not path.is_dir():
        raise NotADirectoryError(f"{path} is not a directory; an SAE is saved as a directory holding "
                                 f"{SAE_CFG_FILENAME} and {SAE_WEIGHTS_FILENAME}")
    cfg_path, weights_path = path / SAE_CFG_FILENAME, path / SAE_WEIGHTS_FILENAME
    cfg = _read_cfg(cfg_path)
    saelens_architecture, k = _saelens_architecture(cfg, cfg_path)
    normalize = cfg.get("normalize_activations", "none")
    if isinstance(normalize, bool):  # SAELens before 4.x wrote a bool
        normalize = "expected_average_only_in" if normalize else "none"
    if normalize not in ("none", "expected_average_only_in", None):
        raise ValueError(f"{cfg_path}: normalize_activations={normalize!r} is not supported (load_sae reads "
                         "SAEs whose inputs are used as they are)")
    if normalize == "expected_average_only_in":
        warnings.warn(f"{cfg_path}: this SAE expects inputs scaled to an average norm of sqrt(d_in); "
                      "scale them yourself", stacklevel=2)
    dtype = _DTYPES.get(str(cfg.get("dtype", "float32")).removeprefix("torch."))
    if dtype is None:
        raise ValueError(f"{cfg_path}: dtype {cfg.get('dtype')!r} is not one of {sorted(_DTYPES)}")
    metadata = dict(cfg.get("metadata", {}))
    course = metadata.pop(_COURSE_KEY, None)
    if course is None:  # a pre-6 config keeps hook_name and friends at the top level
        for key in ("hook_name", "model_name", "hook_head_index", "context_size", "dataset_path", "neuronpedia_id"):
            if key in cfg and key not in metadata:
                metadata[key] = cfg[key] if cfg[key] != "" else None
    if course is not None:
        if not isinstance(course, dict) or course.get("architecture") not in ARCHITECTURES or \
                not isinstance(course.get("settings", {}), dict):
            raise ValueError(f"{cfg_path}: metadata[{_COURSE_KEY!r}] is malformed: {course!r}")
        architecture = course["architecture"]
        if SAELENS_ARCHITECTURES[architecture] != saelens_architecture:
            raise ValueError(f"{cfg_path}: architecture {saelens_architecture!r} does not match the course's "
                             f"{architecture!r} (which SAELens calls {SAELENS_ARCHITECTURES[architecture]!r})")
        settings = course.get("settings", {})
    else:
        architecture = {"standard": "relu", "topk": "topk", "jumprelu": "jumprelu", "gated": "gated"}[
            saelens_architecture]
        settings = {"k": k} if architecture == "topk" else {}

    d_in, d_sae = cfg["d_in"], cfg["d_sae"]
    tensors = _read_tensors(weights_path)
    if saelens_architecture == "jumprelu" and "threshold" not in tensors and "log_threshold" in tensors:
        tensors["threshold"] = tensors.pop("log_threshold").exp()  # older SAELens checkpoints
    scale = tensors.pop("finetuning_scaling_factor", None)
    if scale is None:
        scale = tensors.pop("scaling_factor", None)
    shapes = {"W_enc": (d_in, d_sae), "W_dec": (d_sae, d_in), "b_dec": (d_in,)}
    if saelens_architecture == "gated":
        shapes.update(b_gate=(d_sae,), r_mag=(d_sae,), b_mag=(d_sae,))
    else:
        shapes["b_enc"] = (d_sae,)
    if saelens_architecture == "jumprelu":
        shapes["threshold"] = (d_sae,)
    missing, unexpected = sorted(set(shapes) - set(tensors)), sorted(set(tensors) - set(shapes))
    if missing:
        raise ValueError(f"{weights_path} lacks tensor(s) {missing} that a {saelens_architecture!r} SAE needs "
                         f"(it has {sorted(tensors)})")
    if unexpected:
        raise ValueError(f"{weights_path} has tensor(s) {unexpected} that a {saelens_architecture!r} SAE "
                         f"does not use")
    if scale is not None and scale.shape != (d_sae,):
        raise ValueError(f"{weights_path}: the scaling factor has shape {tuple(scale.shape)}, expected ({d_sae},)")
    for name, shape in shapes.items():
        if tuple(tensors[name].shape) != shape:
            raise ValueError(f"{weights_path}: {name} has shape {tuple(tensors[name].shape)}, but {cfg_path.name} "
                             f"says d_in={d_in}, d_sae={d_sae}, so it should be {shape}")
        if not tensors[name].is_floating_point():
            raise ValueError(f"{weights_path}: {name} has dtype {tensors[name].dtype}, expected floating point")
        if not torch.isfinite(tensors[name]).all():
            raise ValueError(f"{weights_path}: {name} holds NaN or infinite values")
    t = {name: value.to(dtype) for name, value in tensors.items()}

    # Fold SAELens options ours lack into the weights (files of ours have none of them).
    if scale is not None and not torch.equal(scale, torch.ones_like(scale)):
        t["W_dec"] = t["W_dec"] * scale.to(dtype)[:, None]
    if saelens_architecture == "topk" and cfg.get("rescale_acts_by_decoder_norm", False):
        norms = t["W_dec"].norm(dim=1).clamp_min(1e-8)
        t["W_enc"], t["b_enc"], t["W_dec"] = t["W_enc"] * norms, t["b_enc"] * norms, t["W_dec"] / norms[:, None]
    if not cfg.get("apply_b_dec_to_input", True):
        shift = t["b_dec"] @ t["W_enc"]  # (x − b_dec) W_enc + (b + b_dec W_enc) = x W_enc + b
        if saelens_architecture == "gated":
            t["b_gate"], t["b_mag"] = t["b_gate"] + shift, t["b_mag"] + shift * t["r_mag"].exp()
        else:
            t["b_enc"] = t["b_enc"] + shift

    try:
        # A generator of its own: building the SAE must not consume the global random stream.
        sae = make_sae(architecture, d_in, d_sae, device="cpu", generator=torch.Generator().manual_seed(0),
                       **settings)
    except (TypeError, ValueError) as error:
        raise ValueError(f"{cfg_path}: cannot build a {architecture!r} SAE from its settings {settings}: "
                         f"{error}") from None
    sae = sae.to(dtype)
    with torch.no_grad():
        for name in ("W_enc", "W_dec", "b_dec"):
            getattr(sae, name).copy_(t[name])
        sae.b_enc.copy_(t["b_gate"] if architecture == "gated" else t["b_enc"])
        if architecture == "gated":
            sae.r_mag.copy_(t["r_mag"])
            sae.b_mag.copy_(t["b_mag"])
        elif architecture == "jumprelu":
            threshold = t["threshold"]
            if (threshold <= 0).any():  # SAELens's relu(pre)·1[pre > θ] equals pre·1[pre > max(θ, 0)]
                threshold = threshold.clamp_min(0.0)
            sae.log_threshold.copy_(_exact_log(threshold))
        elif architecture == "batchtopk":
            threshold = t["threshold"]
            if not torch.equal(threshold, threshold[:1].expand_as(threshold)) or threshold[0] < 0:
                raise ValueError(f"{weights_path}: a BatchTopK SAE's threshold must be one value >= 0 repeated, "
                                 f"got values from {float(threshold.min())} to {float(threshold.max())}")
            sae.threshold.copy_(threshold[0])
            updates = course.get("threshold_updates", 1) if course else 1
            sae.threshold_updates.fill_(int(updates))
    sae.saelens_metadata = {key: value for key, value in metadata.items()
                            if key not in ("sae_lens_version", "sae_lens_training_version")}
    return sae.to(get_device() if device is None else torch.device(device)).eval()
