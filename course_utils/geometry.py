"""Measures of how features sit in a toy model's hidden space.

Chapter 01 uses the per-feature diagnostics of Elhage et al. 2022:

    ‖W_i‖                      is feature i represented? (≈1 yes, ≈0 no)
    Σ_{j≠i} (Ŵ_i · W_j)²       is it superposed? (0 = it has a dimension to itself)

and the closed form of the n=2, m=1 "toy model of the toy model" phase diagram.

Chapter 02 adds the geometry of superposition (the paper's "Feature Dimensionality"):

    D_i = ‖W_i‖² / Σ_j (Ŵ_i · W_j)²     the fraction of a dimension feature i gets (j = i included)
    D*  = m / ‖W‖_F²                    dimensions per (represented) feature

the feature-interaction graph, its connected components (the tegum factors of the
configuration) and the name of the polytope each factor forms.
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


def one_sparse_terms(W: Tensor, importance: Tensor) -> tuple[Tensor, Tensor]:
    """The paper's split of the linear model's loss on one-hot inputs (Elhage et al. 2022,
    "feature benefit vs interference"):

        feature benefit  Σ_i I_i (1 − ‖W_i‖²)²      (feature i read back at the wrong size)
        interference     Σ_i Σ_{j≠i} I_j (W_j · W_i)²   (feature i leaking into output j)

    W: (instances, hidden, features); importance: (instances, features).  Returns both,
    each (instances,).  With x = v e_i and no bias, the linear readout's squared errors are
    v² times these terms.
    """
    gram = torch.einsum("ihf,ihg->ifg", W, W)  # (instances, i, j): W_i · W_j
    norms_squared = gram.diagonal(dim1=-2, dim2=-1)
    benefit = (importance * (1 - norms_squared) ** 2).sum(-1)
    off_diagonal = gram.square() - torch.diag_embed(norms_squared.square())
    interference = (off_diagonal * importance[:, None, :]).sum(dim=(-2, -1))  # I_j weights output j
    return benefit, interference


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


# --------------------------------------------------------------------------------------
# Chapter 02: feature dimensionality, tegum factors, polytopes
# --------------------------------------------------------------------------------------

# name -> (features, rank, D): k unit vectors forming a tight frame in d dimensions have
# Σ_j (Ŵ_i·W_j)² = k/d for every i, hence D_i = d/k.  Each of these is such a frame.
POLYTOPES: dict[str, tuple[int, int, float]] = {
    "orthogonal": (1, 1, 1.0),
    "digon": (2, 1, 1 / 2),
    "triangle": (3, 2, 2 / 3),
    "tetrahedron": (4, 3, 3 / 4),
    "pentagon": (5, 2, 2 / 5),
    "square antiprism": (8, 3, 3 / 8),
}
OTHER = "other"

NORM_THRESHOLD = 0.5  # represented: ‖W_i‖ > 0.5 · the instance's largest ‖W_j‖
COSINE_THRESHOLD = 0.1  # interacting: |Ŵ_i·Ŵ_j| > 0.1 (more than ~6° away from orthogonal)
RANK_TOLERANCE = 0.2  # a singular value counts as a dimension above 0.2 · the largest one
D_TOLERANCE = 0.05  # every D_i within 0.05 of the polytope's d/k


def _exact_unit(W: Tensor) -> Tensor:
    """Ŵ_i = W_i / ‖W_i‖ (exactly unit, however small the column); zero columns stay zero."""
    norms = W.norm(dim=-2, keepdim=True)
    return W / torch.where(norms > 0, norms, torch.ones_like(norms))


def feature_dimensionality(W: Tensor) -> Tensor:
    """D_i = ‖W_i‖² / Σ_j (Ŵ_i · W_j)², the sum including j = i: (instances, hidden, features)
    -> (instances, features).

    D_i = 1 when feature i has a dimension to itself, 1/2 for each feature of an antipodal
    pair, d/k for k equal-norm features forming a tight frame in d dimensions.  It lies in
    [0, 1] and does not change when W is scaled.  A zero column gives 0, never NaN.
    """
    overlaps = torch.einsum("ihf,ihg->ifg", _exact_unit(W), W)  # (instances, i, j) = Ŵ_i·W_j
    denominator = overlaps.square().sum(dim=-1)  # ≥ ‖W_i‖², so 0 only for a zero column
    nonzero = denominator > 0
    safe = torch.where(nonzero, denominator, torch.ones_like(denominator))
    return torch.where(nonzero, W.square().sum(dim=1) / safe, torch.zeros_like(denominator))


def dimensions_per_feature(W: Tensor) -> Tensor:
    """D* = m / ‖W‖_F², the paper's "dimensions per feature": (instances, hidden, features)
    -> (instances,).

    ‖W‖_F² = Σ_i ‖W_i‖² counts the represented features (each with ‖W_i‖ ≈ 1), so D* is
    the hidden dimension m shared out among them: 1 when m features are stored
    orthogonally, 1/2 for antipodal pairs.  An all-zero instance represents nothing and gets
    ``inf`` (m / 0, the limit as W shrinks to zero), never NaN.
    """
    return W.shape[1] / W.square().sum(dim=(1, 2))


def represented_features(W: Tensor, norm_threshold: float = NORM_THRESHOLD) -> Tensor:
    """Which features are represented: ‖W_i‖ > norm_threshold · max_j ‖W_j‖ per instance.

    (instances, hidden, features) -> (instances, features) bool.  Relative to the largest
    norm, so the answer does not depend on the overall scale (trained norms sit a little
    above 1); an all-zero instance has no represented feature.
    """
    norms = feature_norms(W)
    return norms > norm_threshold * norms.amax(dim=-1, keepdim=True)


def interaction_graph(W: Tensor, threshold: float = COSINE_THRESHOLD,
                      norm_threshold: float = NORM_THRESHOLD) -> Tensor:
    """The feature-interaction graph: (instances, hidden, features) -> (instances, features,
    features) bool, True where features i ≠ j are both represented and |Ŵ_i · Ŵ_j| > threshold.

    The cosine |Ŵ_i · Ŵ_j| is symmetric (an undirected graph, so its components are well
    defined) and scale-free (the threshold is an angle: 0.1 means more than ~6° away from
    orthogonal).  The smallest nonzero |cosine| inside the polytopes of ``POLYTOPES`` is
    about 0.14 (square antiprism), and every one of them stays connected at 0.3.
    """
    unit = _exact_unit(W)
    cosine = torch.einsum("ihf,ihg->ifg", unit, unit).abs()
    on = represented_features(W, norm_threshold)
    edges = (cosine > threshold) & on[:, :, None] & on[:, None, :]
    return edges & ~torch.eye(W.shape[2], dtype=torch.bool, device=W.device)


def tegum_factors(W: Tensor, threshold: float = COSINE_THRESHOLD,
                  norm_threshold: float = NORM_THRESHOLD) -> list[list[list[int]]]:
    """The tegum factors of each instance: the connected components of ``interaction_graph``
    among the represented features.

    Returns, per instance, a list of factors, each a sorted list of feature indices, ordered
    by their first feature.  Mutually orthogonal factors make the configuration a tegum
    product; unrepresented features belong to no factor.
    """
    graph = interaction_graph(W, threshold, norm_threshold).cpu()
    on = represented_features(W, norm_threshold).cpu()
    result = []
    for k in range(W.shape[0]):
        neighbours = [row.nonzero().flatten().tolist() for row in graph[k]]
        seen: set[int] = set()
        factors = []
        for start in on[k].nonzero().flatten().tolist():
            if start in seen:
                continue
            seen.add(start)
            component, frontier = [start], [start]
            while frontier:
                for j in neighbours[frontier.pop()]:
                    if j not in seen:
                        seen.add(j)
                        component.append(j)
                        frontier.append(j)
            factors.append(sorted(component))
        result.append(factors)
    return result


def effective_rank(W_component: Tensor, rank_tolerance: float = RANK_TOLERANCE) -> int:
    """The number of dimensions a set of features spans: singular values of (hidden, k)
    above ``rank_tolerance`` times the largest (0 for an all-zero set)."""
    s = torch.linalg.svdvals(W_component.detach().to("cpu", torch.float64))
    if s.numel() == 0 or s[0] == 0:
        return 0
    return int((s > rank_tolerance * s[0]).sum())


def recognise_polytope(W_component: Tensor, tolerance: float = D_TOLERANCE,
                       rank_tolerance: float = RANK_TOLERANCE) -> str:
    """Name the polytope formed by one factor's features; W_component is (hidden, k), the
    columns of one instance's W that belong to the factor.

    A name of ``POLYTOPES`` ("orthogonal", "digon", "triangle", "tetrahedron", "pentagon",
    "square antiprism") when the k features have that polytope's size, span its number of
    dimensions (``effective_rank``) and every D_i, computed within the factor, is within
    ``tolerance`` of its d/k; else "other".  Rotation- and scale-invariant.  D sees squared
    overlaps only, so the name holds up to the sign of each feature, and for the pentagon and
    the square antiprism it means "a tight frame of that size", which the regular polygon and
    the antiprism are.
    """
    if W_component.dim() != 2:
        raise ValueError(f"expected one factor's W of shape (hidden, k), got {tuple(W_component.shape)}")
    W64 = W_component.detach().to("cpu", torch.float64)
    k = W64.shape[1]
    rank = effective_rank(W64, rank_tolerance)
    D = feature_dimensionality(W64[None])[0]
    for name, (size, dims, expected) in POLYTOPES.items():
        if k == size and rank == dims and bool(((D - expected).abs() <= tolerance).all()):
            return name
    return OTHER


def describe_configuration(W: Tensor, threshold: float = COSINE_THRESHOLD,
                           norm_threshold: float = NORM_THRESHOLD,
                           tolerance: float = D_TOLERANCE, recognise=None) -> list[list[tuple[str, list[int]]]]:
    """Every tegum factor of every instance with its polytope's name.

    (instances, hidden, features) -> per instance, a list of (name, feature indices), in
    the order of ``tegum_factors``.  ``summarise_configuration`` turns one instance's list
    into words.  ``recognise(W_component) -> name`` replaces ``recognise_polytope``
    (chapter 02 passes the learner's).
    """
    if recognise is None:
        def recognise(W_component):
            return recognise_polytope(W_component, tolerance)
    return [[(recognise(W[k][:, factor]), factor) for factor in factors]
            for k, factors in enumerate(tegum_factors(W, threshold, norm_threshold))]


_PLURAL = {"orthogonal": ("orthogonal feature", "orthogonal features"),
           OTHER: ("other factor", "other factors")}


def summarise_configuration(description: list[tuple[str, list[int]]], W: Tensor | None = None) -> str:
    """One instance's ``describe_configuration`` in words, smallest factors first, e.g.
    "1 orthogonal feature + 2 digons + 1 triangle"; "nothing represented" if empty.

    With that instance's ``W`` (hidden, features), or (1, hidden, features), a factor that is
    no named polytope is described by its size instead of "other factor", e.g.
    "1 group of 35 features in 12 dimensions"."""
    counts: dict[str, int] = {}
    others: list[str] = []
    if W is not None and W.dim() == 3:
        W = W[0]
    for name, factor in description:
        if name == OTHER and W is not None:
            rank = effective_rank(W[:, factor].detach().to("cpu", torch.float64))
            others.append(f"1 group of {len(factor)} features in {rank} dimension{'s' if rank != 1 else ''}")
            continue
        counts[name] = counts.get(name, 0) + 1
    parts = []
    for name in [*POLYTOPES, OTHER]:
        if name in counts:
            one, many = _PLURAL.get(name, (name, name + "s"))
            parts.append(f"{counts[name]} {one if counts[name] == 1 else many}")
    parts += sorted(others, key=lambda text: int(text.split()[3]))
    return " + ".join(parts) if parts else "nothing represented"


# --------------------------------------------------------------------------------------
# Chapter 02: correlated and anticorrelated features
# --------------------------------------------------------------------------------------


def feature_cosines(W: Tensor) -> Tensor:
    """cos(W_i, W_j) = Ŵ_i · Ŵ_j for every pair of features: (instances, hidden, features) ->
    (instances, features, features).

    +1: the two features point the same way (a correlated set collapsed onto its principal
    component); 0: orthogonal (a local orthogonal basis); -1: antipodal.  A zero column
    has cosine 0 with everything, itself included.
    """
    unit = _exact_unit(W)
    return torch.einsum("ihf,ihg->ifg", unit, unit)
