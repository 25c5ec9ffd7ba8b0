"""Checks for chapter 02: feature dimensionality, dimensions per feature, polytope names.

Each check runs the learner's function on seeded cases and compares it with the library's
reference in ``course_utils.geometry``.  ``_*_mistakes`` compute what common wrong answers
give, so a failure can name the mistake.  The polytope check builds each case from a
constructed polytope (or a configuration that only looks like one), randomly rotated,
embedded in extra dimensions, rescaled and slightly noisy.
"""

from __future__ import annotations

import math
from typing import Callable

import torch
from torch import Tensor

from .. import geometry
from ._framework import (
    Case,
    CheckFailed,
    call_pure,
    exercise,
    expect_close,
    expect_device,
    expect_dtype,
    expect_finite,
    expect_shape,
    expect_tensor,
)
from ._helpers import _generator, _randint


def _expect_tensor_like(out, expected: Tensor, axes: str, note: str = "") -> Tensor:
    """A tensor of the reference's shape, dtype and device (finiteness is checked separately)."""
    out = expect_tensor(out)
    expect_shape(out, expected.shape, axes, note)
    expect_dtype(out, expected.dtype)
    expect_device(out, expected.device)
    return out


# --------------------------------------------------------------------------------------
# feature_dimensionality
# --------------------------------------------------------------------------------------


def _dimensionality_case(seed: int) -> Case:
    """seed % 6 picks: a random W with a zero column, one instance, hidden = 1, square W,
    an all-zero instance, or a rotated pentagon + an orthogonal feature + a zero feature."""
    gen = _generator(seed)
    kind = seed % 6
    if kind == 5:
        W = torch.randn(2, 3, 7, generator=gen)
        angles = torch.arange(5) * 2 * math.pi / 5
        plane = torch.zeros(3, 7)
        plane[0, :5], plane[1, :5], plane[2, 5] = angles.cos(), angles.sin(), 1.0
        q, _ = torch.linalg.qr(torch.randn(3, 3, generator=gen))
        W[0] = 1.1 * q @ plane[:, torch.randperm(7, generator=gen)]
        zero = int((W[0].norm(dim=0) == 0).nonzero()[0])
        label = (f"instances=2, hidden=3, features=7, instance 0 a pentagon + an orthogonal feature, "
                 f"W[0, :, {zero}] = 0")
        return Case(label, W=W)
    instances = 1 if kind == 1 else _randint(gen, 2, 4)
    hidden = 1 if kind == 2 else _randint(gen, 2, 4)
    features = hidden if kind == 3 else _randint(gen, hidden + 1, 7)
    W = torch.randn(instances, hidden, features, generator=gen)
    if kind == 4:
        W[0] = 0.0
        label = f"instances={instances}, hidden={hidden}, features={features}, W[0] = 0 (all-zero instance)"
    else:
        zero = _randint(gen, 0, features - 1)
        W[-1, :, zero] = 0.0
        last = instances - 1
        label = f"instances={instances}, hidden={hidden}, features={features}, W[{last}, :, {zero}] = 0"
    return Case(label, W=W)


def _ratio(numerator: Tensor, denominator: Tensor) -> Tensor:
    """numerator / denominator, 0 where the denominator is 0."""
    nonzero = denominator != 0
    return torch.where(nonzero, numerator / torch.where(nonzero, denominator, torch.ones_like(denominator)),
                       torch.zeros_like(denominator))


def _dimensionality_mistakes(W: Tensor) -> dict[str, Tensor]:
    unit = geometry.unit_features(W)
    overlaps = torch.einsum("ihf,ihg->ifg", unit, W)  # Ŵ_i · W_j
    squared_norms = W.square().sum(dim=1)
    denominator = overlaps.square().sum(dim=-1)
    mistakes = {
        "the sum leaves out j = i (it must include the feature itself, so that an orthogonal "
        "feature has D_i = 1)": _ratio(squared_norms, denominator - squared_norms),
        "both W_i and W_j are normalised (Ŵ_i · Ŵ_j instead of Ŵ_i · W_j)":
            _ratio(squared_norms, torch.einsum("ihf,ihg->ifg", unit, unit).square().sum(dim=-1)),
        "W_i is not normalised (W_i · W_j instead of Ŵ_i · W_j)":
            _ratio(squared_norms, torch.einsum("ihf,ihg->ifg", W, W).square().sum(dim=-1)),
        "the overlaps Ŵ_i · W_j are not squared": _ratio(squared_norms, overlaps.sum(dim=-1)),
        "the numerator is ‖W_i‖ instead of ‖W_i‖² (a square is missing)":
            _ratio(W.norm(dim=1), denominator),
        "the sum runs over i instead of j": _ratio(squared_norms, overlaps.square().sum(dim=-2)),
        "the fraction is upside down (Σ_j (Ŵ_i · W_j)² / ‖W_i‖²)":
            _ratio(denominator, squared_norms),
    }
    if W.shape[1] == W.shape[2]:
        mistakes["features are taken as rows of W instead of columns (the wrong axis)"] = (
            geometry.feature_dimensionality(W.transpose(1, 2)))
    return mistakes


def _expect_no_nan_or_inf_dimensionality(out: Tensor, W: Tensor) -> None:
    """NaN at zero columns and inf at nonzero ones each have a likely cause; name it."""
    nan, zero_column = torch.isnan(out), W.norm(dim=1) == 0
    if nan.any() and not (nan & ~zero_column).any():
        raise CheckFailed(
            f"output contains NaN at {int(nan.sum())} of {nan.numel()} entries, all of them zero "
            "columns of W: a feature with ‖W_i‖ = 0 has D_i = 0, so return 0 there instead of "
            "dividing 0 by 0 (normalise with norm.clamp_min(1e-8), or use torch.where)")
    if torch.isinf(out).any():
        raise CheckFailed(
            f"output contains inf at {int(torch.isinf(out).sum())} of {out.numel()} entries: the "
            "denominator is 0 for a nonzero feature; does your sum leave out the j = i term?")
    expect_finite(out)


def _expect_orthogonal_features_not_divided_by_zero(out: Tensor, expected: Tensor) -> None:
    """Features orthogonal to all others have D_i = 1; an output of 0 or a huge number there
    is the symptom of a denominator that is (nearly) 0, i.e. a sum without the j = i term."""
    orthogonal = (expected.double() - 1).abs() < 1e-6
    values = out.detach().double()[orthogonal]
    if ((values == 0) | (values.abs() > 1e3)).any():
        raise CheckFailed(
            "for a feature orthogonal to every other one, your output is 0 or huge, the sign of "
            "a denominator that is (nearly) 0: does your sum leave out the j = i term? An "
            "orthogonal feature has D_i = 1")


@exercise(
    "feature_dimensionality",
    reference=geometry.feature_dimensionality,
    cases=_dimensionality_case,
    seeds=range(6),
    hints=[
        "D_i = ‖W_i‖² / Σ_j (Ŵ_i · W_j)²: the squared norm of feature i, divided by the sum of "
        "the squared overlaps of its unit direction with every feature, itself included.",
        "All the overlaps at once: einsum('ihf,ihg->ifg', W_hat, W) gives (instances, i, j); "
        "square, sum over j (the last axis), and divide ‖W_i‖² = (W**2).sum(dim=1) by it.",
        "A zero column has norm 0 and a zero denominator: normalise with norm.clamp_min(1e-8), "
        "and return 0 where the denominator is 0 (torch.where) so that 0/0 never gives NaN.",
    ],
)
def check_feature_dimensionality(learner, case: Case) -> None:
    """Check your ``feature_dimensionality(W)``: D_i = ‖W_i‖² / Σ_j (Ŵ_i · W_j)², the sum
    including j = i.  W is (instances, hidden, features); return (instances, features),
    with D_i = 0 (not NaN) for a zero column, also when a whole instance is zero."""
    out = call_pure(learner, {"W": case.W})
    expected = geometry.feature_dimensionality(case.W)
    out = _expect_tensor_like(out, expected, "(instances, features)")
    _expect_no_nan_or_inf_dimensionality(out, case.W)
    _expect_orthogonal_features_not_divided_by_zero(out, expected)
    expect_close(out, expected, suspects=_dimensionality_mistakes(case.W))


# --------------------------------------------------------------------------------------
# dimensions_per_feature
# --------------------------------------------------------------------------------------


def _dimensions_case(seed: int) -> Case:
    """seed % 4 picks: general, one instance, an all-zero instance 0, hidden = 1.  hidden
    and features always differ, so that swapping m and n shows."""
    gen = _generator(seed)
    kind = seed % 4
    instances = 1 if kind == 1 else _randint(gen, 2, 4)
    hidden = 1 if kind == 3 else _randint(gen, 2, 5)
    features = _randint(gen, hidden + 1, 9)
    scale = 0.5 + torch.rand(instances, 1, 1, generator=gen)  # different norms per instance
    W = torch.randn(instances, hidden, features, generator=gen) * scale
    label = f"instances={instances}, hidden={hidden}, features={features}"
    if kind == 2:
        W[0] = 0.0
        label += ", W[0] = 0 (an all-zero instance)"
    return Case(label, W=W)


def _dimensions_mistakes(W: Tensor) -> dict[str, Tensor]:
    instances, m, n = W.shape
    frobenius_squared = W.square().sum(dim=(1, 2))
    return {
        "n / ‖W‖_F² (the number of features n instead of the hidden dimension m)": n / frobenius_squared,
        "m / ‖W‖_F (the Frobenius norm is not squared)": m / frobenius_squared.sqrt(),
        "the fraction is upside down (‖W‖_F² / m)": frobenius_squared / m,
        "‖W‖_F² is summed over all instances instead of one instance at a time":
            torch.full_like(frobenius_squared, m / float(frobenius_squared.sum())),
        "the squared weights are averaged instead of summed": m / W.square().mean(dim=(1, 2)),
    }


@exercise(
    "dimensions_per_feature",
    reference=geometry.dimensions_per_feature,
    cases=_dimensions_case,
    seeds=range(4),
    hints=[
        "D* = m / ‖W‖_F²: the hidden dimension m (W.shape[1]) divided by the squared Frobenius "
        "norm of the instance's W, which counts the represented features.",
        "Keep one value per instance: sum W**2 over the hidden and feature axes only, "
        ".sum(dim=(1, 2)), not over everything.",
        "Do not clamp the denominator: an all-zero instance represents no feature and gets "
        "m / 0 = inf, which plain tensor division gives.",
    ],
)
def check_dimensions_per_feature(learner, case: Case) -> None:
    """Check your ``dimensions_per_feature(W)``: D* = m / ‖W‖_F² per instance, where m is the
    hidden dimension.  W is (instances, hidden, features); return (instances,).  An all-zero
    instance represents no feature and gets inf (m / 0), never NaN."""
    out = call_pure(learner, {"W": case.W})
    expected = geometry.dimensions_per_feature(case.W)
    out = _expect_tensor_like(out, expected, "(instances,)",
                              note="; keep one value per instance: sum over hidden and features only")
    zero = case.W.flatten(1).eq(0).all(dim=1)  # all-zero instances
    if torch.isnan(out[zero]).any():
        raise CheckFailed("output is NaN for an all-zero instance: it represents no feature, so "
                          "D* = m / 0 = inf (the docstring's convention); is the numerator 0 too?")
    if not (torch.isinf(out[zero]) & (out[zero] > 0)).all():
        raise CheckFailed("output is finite for an all-zero instance: it represents no feature, so "
                          "D* = m / 0 = inf (the docstring's convention); do not clamp the denominator")
    expect_finite(out[~zero], note=" for instances whose W is not all zero")
    expect_close(out[~zero], expected[~zero],
                 suspects={k: v[~zero] for k, v in _dimensions_mistakes(case.W).items()})


# --------------------------------------------------------------------------------------
# recognise_polytope
# --------------------------------------------------------------------------------------


def _polygon(k: int) -> Tensor:
    angles = torch.arange(k, dtype=torch.float64) * 2 * math.pi / k
    return torch.stack([angles.cos(), angles.sin()])


def _at_angles(degrees: list[float]) -> Tensor:
    angles = torch.tensor(degrees, dtype=torch.float64) * math.pi / 180
    return torch.stack([angles.cos(), angles.sin()])


def _square_antiprism() -> Tensor:
    """Two squares at heights ±1/√3 (radius √(2/3)), one turned by 45°: a tight frame, D = 3/8."""
    r, h = math.sqrt(2 / 3), math.sqrt(1 / 3)
    angles = torch.arange(8, dtype=torch.float64) * math.pi / 4
    heights = torch.tensor([h, -h] * 4, dtype=torch.float64)
    return torch.stack([r * angles.cos(), r * angles.sin(), heights])


def _cone(k: int, d: int) -> Tensor:
    """k unit vectors in k dimensions with equal positive pairwise cosine, chosen so that every
    D_i = d/k: a polytope's size and dimensionality, but rank k instead of d."""
    c = math.sqrt((k / d - 1) / (k - 1))
    gram = (1 - c) * torch.eye(k, dtype=torch.float64) + c
    values, vectors = torch.linalg.eigh(gram)
    return (vectors * values.sqrt()) @ vectors.T


_TETRAHEDRON = torch.tensor([[1, 1, 1], [1, -1, -1], [-1, 1, -1], [-1, -1, 1]],
                            dtype=torch.float64).T / math.sqrt(3)

# (what the features are, a function building them as (d, k)); the answer is the reference's.
_POLYTOPE_KINDS: list[tuple[str, Callable[[], Tensor]]] = [
    ("one feature", lambda: torch.ones(1, 1, dtype=torch.float64)),
    ("antipodal pair", lambda: torch.tensor([[1.0, -1.0]], dtype=torch.float64)),
    ("triangle", lambda: _polygon(3)),
    ("tetrahedron", lambda: _TETRAHEDRON),
    ("pentagon", lambda: _polygon(5)),
    ("square antiprism", _square_antiprism),
    ("3 features at uneven angles in a plane", lambda: _at_angles([0, 80, 150])),
    ("a hexagon", lambda: _polygon(6)),
    ("5 features spread over 3 dimensions", lambda: torch.tensor(
        [[1, 0, 0, 0.6, -0.6], [0, 1, 0, -0.6, 0.5], [0, 0, 1, 0.5, 0.6]], dtype=torch.float64)),
    ("a square in a plane", lambda: _polygon(4)),
    ("3 features with equal positive cosines", lambda: _cone(3, 2)),
    ("4 features with equal positive cosines", lambda: _cone(4, 3)),
    ("5 features with equal positive cosines", lambda: _cone(5, 2)),
    ("5 features at uneven angles in a plane", lambda: _at_angles([0, 30, 60, 150, 250])),
    ("2 orthogonal features", lambda: torch.eye(2, dtype=torch.float64)),
    ("3 orthogonal features", lambda: torch.eye(3, dtype=torch.float64)),
]
NOISE = 1e-3


def _features(k: int) -> str:
    return "1 feature" if k == 1 else f"{k} features"


def _polytope_case(seed: int) -> Case:
    """Kind seed % 16 of ``_POLYTOPE_KINDS``, its features shuffled, placed in a hidden space
    with 0-2 extra dimensions, randomly rotated, scaled by 0.8-1.3, plus N(0, 1e-3²) noise."""
    gen = _generator(seed)
    description, build = _POLYTOPE_KINDS[seed % len(_POLYTOPE_KINDS)]
    features = build()
    d, k = features.shape
    hidden = d + _randint(gen, 0, 2)
    padded = torch.zeros(hidden, k, dtype=torch.float64)
    padded[:d] = features[:, torch.randperm(k, generator=gen)]
    q, r = torch.linalg.qr(torch.randn(hidden, hidden, generator=gen, dtype=torch.float64))
    scale = 0.8 + 0.5 * float(torch.rand((), generator=gen))
    W = scale * (q * torch.sign(torch.diagonal(r))) @ padded
    W = (W + NOISE * torch.randn(hidden, k, generator=gen, dtype=torch.float64)).float()
    label = (f"{_features(k)} in a {hidden}-D hidden space, randomly rotated, scaled by {scale:.2f}, "
             f"noise {NOISE:g}")
    return Case(label, W_component=W, description=description)


NAMES = (*geometry.POLYTOPES, geometry.OTHER)



@exercise(
    "recognise_polytope",
    reference=geometry.recognise_polytope,
    cases=_polytope_case,
    seeds=range(len(_POLYTOPE_KINDS)),
    passed="{n}/{n} configurations named correctly.",
    hints=[
        "Three things decide the name: the number of features k, the number of dimensions they "
        "span (their rank d), and their feature dimensionalities D_i, which for each polytope "
        "all equal d/k. Check all three; a size alone says little.",
        "The rank: count the singular values (torch.linalg.svdvals) above 0.2 × the largest one. "
        "An exact rank counts the tiny noise as extra dimensions.",
        "D_i: dimensionality(W_component[None])[0] (what exercise 1's check returned). Look up (k, d) in the table of "
        "polytopes and require every |D_i - d/k| <= 0.05; anything else is 'other'.",
    ],
)
def check_recognise_polytope(learner, case: Case) -> None:
    """Check your ``recognise_polytope(W_component) -> str``.

    ``W_component`` is a float tensor of shape (hidden, k): the k features of one tegum factor
    (columns), possibly rotated, rescaled, embedded in extra dimensions and slightly noisy.
    Return one of "orthogonal" (k=1, rank 1, D=1), "digon" (2, 1, 1/2), "triangle" (3, 2, 2/3),
    "tetrahedron" (4, 3, 3/4), "pentagon" (5, 2, 2/5), "square antiprism" (8, 3, 3/8), or
    "other" when the size k, the rank (singular values above 0.2 × the largest) or any D_i
    (more than 0.05 away from d/k) does not fit.
    """
    out = call_pure(learner, {"W_component": case.W_component})
    expected = geometry.recognise_polytope(case.W_component)
    if not isinstance(out, str):
        raise CheckFailed(f"your function returned a {type(out).__name__}; expected a string, one of {NAMES}")
    if out not in NAMES:
        raise CheckFailed(f"your function returned {out!r}, which is not one of the names {NAMES}")
    if out == expected:
        return
    k = case.W_component.shape[1]
    if out == geometry.OTHER:
        raise CheckFailed(
            f"your function returned 'other' for {_features(k)} that do form a polytope of the "
            "table; the name must not depend on the rotation, the overall scale, extra hidden "
            "dimensions or noise of 1e-3 (use tolerances for the rank and for D)")
    size, rank, _ = geometry.POLYTOPES[out]
    if size != k:
        raise CheckFailed(f"your function returned {out!r}, which has {_features(size)}, for {_features(k)}")
    actual_rank = geometry.effective_rank(case.W_component)
    if actual_rank != rank:
        raise CheckFailed(
            f"your function returned {out!r} for {_features(k)} that span {actual_rank} dimensions, "
            f"but a {out} spans {rank}: the rank must match too")
    raise CheckFailed(
        f"your function returned {out!r} for {_features(k)} with the right size and rank, but "
        f"their D_i are not all within 0.05 of a {out}'s: the dimensionalities must match too")
