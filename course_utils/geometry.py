"""Measures of how features sit in a toy model's hidden space.

Chapter 01 uses the per-feature diagnostics of Elhage et al. 2022:

    ‖W_i‖                      is feature i represented? (≈1 yes, ≈0 no)
    Σ_{j≠i} (Ŵ_i · W_j)²       is it superposed? (0 = it has a dimension to itself)

and the closed form of the n=2, m=1 "toy model of the toy model" phase diagram.
W is (instances, hidden, features) throughout; a zero column has Ŵ_i = 0, never NaN.
"""

from __future__ import annotations

import torch
from torch import Tensor

_EPS = 1e-8


def feature_norms(W: Tensor) -> Tensor:
    """‖W_i‖ for every feature: (instances, hidden, features) -> (instances, features)."""
    return W.norm(dim=1)


def unit_features(W: Tensor) -> Tensor:
    """Ŵ_i = W_i / ‖W_i‖ with zero columns left at zero; same shape as W."""
    return W / W.norm(dim=1, keepdim=True).clamp_min(_EPS)


def superposition_interference(W: Tensor) -> Tensor:
    """Σ_{j≠i} (Ŵ_i · W_j)² for every feature: (instances, hidden, features) -> (instances, features).

    0 when feature i is orthogonal to every other feature; large when others share its
    direction.  Coloured on the paper's per-feature norm bars.
    """
    overlaps = torch.einsum("ihf,ihg->ifg", unit_features(W), W)  # (instances, i, j) = Ŵ_i·W_j
    squared = overlaps.square()
    return squared.sum(dim=-1) - squared.diagonal(dim1=-2, dim2=-1)


def angles_degrees(W: Tensor) -> Tensor:
    """Angle (degrees, in [0, 360)) of each feature's direction in a 2-D hidden space.

    W: (instances, 2, features) -> (instances, features).
    """
    if W.shape[1] != 2:
        raise ValueError(f"angles need a 2-D hidden space, got hidden={W.shape[1]}")
    return torch.rad2deg(torch.atan2(W[:, 1], W[:, 0])) % 360.0


def sorted_angle_gaps(W: Tensor, min_norm: float = 0.5) -> list[Tensor]:
    """Per instance, the gaps (degrees) between consecutive represented features' angles.

    A regular pentagon gives five gaps of 72; an antipodal pair gives two of 180.
    """
    gaps = []
    norms = feature_norms(W)
    angles = angles_degrees(W)
    for k in range(W.shape[0]):
        a = torch.sort(angles[k][norms[k] > min_norm]).values
        if a.numel() == 0:
            gaps.append(a)
            continue
        gaps.append(torch.diff(torch.cat([a, a[:1] + 360.0])))
    return gaps


# --------------------------------------------------------------------------------------
# The n=2, m=1 phase diagram in closed form
# --------------------------------------------------------------------------------------

PHASES = ("ignore feature 2", "antipodal pair", "ignore feature 1")


def phase_losses(relative_importance: Tensor, density: Tensor) -> Tensor:
    """Expected per-sample loss of the three candidate solutions for n=2, m=1.

    Feature 1 has importance 1, feature 2 importance r = relative_importance; each feature
    is active with probability s = density, with value U[0, 1].

    - Ignore a feature (store the other on the one dimension): the ignored feature's
      output is its best constant (the bias), costing importance · Var(x) = I (s/3 - s²/4).
    - Antipodal pair (W = [1, -1], b = 0): exact when at most one feature is on; when both
      are on (probability s²) each output is off by min(x1, x2), and E[min²] = 1/6, so the
      cost is (1 + r) s² / 6.

    Broadcasts r and s; returns (..., 3) in the order of ``PHASES``.
    """
    r, s = torch.broadcast_tensors(torch.as_tensor(relative_importance, dtype=torch.float64),
                                   torch.as_tensor(density, dtype=torch.float64))
    variance = s / 3 - s**2 / 4
    return torch.stack([r * variance, (1 + r) * s**2 / 6, variance], dim=-1)


def phase_closed_form(relative_importance: Tensor, density: Tensor) -> Tensor:
    """Index into ``PHASES`` of the cheapest solution (0, 1 or 2), broadcast over r and s."""
    return phase_losses(relative_importance, density).argmin(dim=-1)


def antipodal_boundary_density(relative_importance: Tensor) -> Tensor:
    """Density below which the antipodal pair beats ignoring the less important feature.

    Solving min(r, 1) (s/3 - s²/4) = (1 + r) s²/6 for s gives
        s* = (min(r, 1) / 3) / ((1 + r)/6 + min(r, 1)/4).
    """
    r = torch.as_tensor(relative_importance, dtype=torch.float64)
    weak = torch.minimum(r, torch.ones_like(r))
    return (weak / 3) / ((1 + r) / 6 + weak / 4)


def classify_n2_m1(W: Tensor, norm_threshold: float = 0.5) -> Tensor:
    """Phase of trained n=2, m=1 models: (instances, 1, 2) -> (instances,) index into PHASES.

    Both features represented with opposite signs -> antipodal pair (1); otherwise the one
    that is represented decides (0: feature 2 ignored, 2: feature 1 ignored).
    """
    if W.shape[1:] != (1, 2):
        raise ValueError(f"expected W of shape (instances, 1, 2), got {tuple(W.shape)}")
    w = W[:, 0, :]
    on = w.abs() > norm_threshold
    both = on[:, 0] & on[:, 1] & (w[:, 0] * w[:, 1] < 0)
    phase = torch.where(w[:, 0].abs() >= w[:, 1].abs(), 0, 2)
    return torch.where(both, torch.ones_like(phase), phase)
