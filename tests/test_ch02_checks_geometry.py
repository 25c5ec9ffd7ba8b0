"""Chapter 02's checks: the reference passes, the stub is "not attempted", and plausible
wrong implementations fail with a message that names what is wrong."""

from __future__ import annotations

import pytest
import torch

from check_helpers import (
    assert_passes,
    assert_reference_passes_and_stub_is_not_attempted,
    assert_registered,
    failure,
)

from course_utils import checks, geometry
from course_utils.checks import geometry as chapter


REFERENCES = {
    "feature_dimensionality": geometry.feature_dimensionality,
    "dimensions_per_feature": geometry.dimensions_per_feature,
    "recognise_polytope": geometry.recognise_polytope,
}


@pytest.mark.parametrize("name", REFERENCES)
def test_reference_passes_and_stub_is_not_attempted(name, capsys):
    assert_reference_passes_and_stub_is_not_attempted(name, REFERENCES[name], capsys)


@pytest.mark.parametrize("name", REFERENCES)
def test_reference_passes_hidden_seeds(name):
    assert_passes(name, REFERENCES[name], seeds=range(100, 164))


def test_registered_under_the_exercise_names():
    assert_registered(REFERENCES, min_seeds=4)


def test_default_cases_cover_the_edge_cases():
    cases = [chapter._dimensionality_case(s) for s in checks.check_feature_dimensionality.exercise.seeds]
    assert any(c.W.shape[0] == 1 for c in cases) and any(c.W.shape[1] == 1 for c in cases)
    assert any(c.W.shape[1] == c.W.shape[2] for c in cases)
    assert any((c.W.flatten(1) == 0).all(dim=1).any() for c in cases)  # an all-zero instance
    assert all((c.W.norm(dim=1) == 0).any() for c in cases)  # always a zero column
    dims = [chapter._dimensions_case(s) for s in checks.check_dimensions_per_feature.exercise.seeds]
    assert all(c.W.shape[1] != c.W.shape[2] for c in dims)
    assert any((c.W.flatten(1) == 0).all(dim=1).any() for c in dims)
    polytopes = [chapter._polytope_case(s) for s in checks.check_recognise_polytope.exercise.seeds]
    answers = [geometry.recognise_polytope(c.W_component) for c in polytopes]
    assert set(answers) == {*geometry.POLYTOPES, "other"}
    assert answers.count("other") >= 8


def test_messages_never_name_the_polytope_a_case_is():
    for seed in checks.check_recognise_polytope.exercise.seeds:
        label = chapter._polytope_case(seed).label
        assert not any(name in label for name in (*geometry.POLYTOPES, "other")), label


# --------------------------------------------------------------------------------------
# feature_dimensionality
# --------------------------------------------------------------------------------------


def _unit(W):
    return W / W.norm(dim=1, keepdim=True).clamp_min(1e-8)


def _safe_ratio(numerator, denominator):
    return torch.where(denominator > 0, numerator / denominator.clamp_min(1e-30), torch.zeros(()))


def dimensionality_clamped(W):  # right: the chapter-01 way of normalising
    overlaps = torch.einsum("ihf,ihg->ifg", _unit(W), W)
    return _safe_ratio(W.square().sum(1), overlaps.square().sum(-1))


def dimensionality_without_self(W):
    squared = torch.einsum("ihf,ihg->ifg", _unit(W), W).square()
    off_diagonal = squared.sum(-1) - squared.diagonal(dim1=-2, dim2=-1)
    return _safe_ratio(W.square().sum(1), off_diagonal)


def dimensionality_without_self_zero_columns_guarded(W):
    squared = torch.einsum("ihf,ihg->ifg", _unit(W), W).square()
    ratio = W.square().sum(1) / (squared.sum(-1) - squared.diagonal(dim1=-2, dim2=-1))
    return torch.where(W.norm(dim=1) == 0, 0.0, ratio)


def dimensionality_both_normalised(W):
    cosines = torch.einsum("ihf,ihg->ifg", _unit(W), _unit(W))
    return _safe_ratio(W.square().sum(1), cosines.square().sum(-1))


def dimensionality_not_squared(W):
    overlaps = torch.einsum("ihf,ihg->ifg", _unit(W), W)
    return _safe_ratio(W.square().sum(1), overlaps.sum(-1).abs())


def dimensionality_not_squared_signed(W):
    ratio = W.square().sum(1) / torch.einsum("ihf,ihg->ifg", _unit(W), W).sum(-1)
    return torch.where(W.norm(dim=1) == 0, 0.0, ratio)


def dimensionality_norm_not_squared(W):
    overlaps = torch.einsum("ihf,ihg->ifg", _unit(W), W)
    return _safe_ratio(W.norm(dim=1), overlaps.square().sum(-1))


def dimensionality_nan_on_zero_column(W):
    unit = W / W.norm(dim=1, keepdim=True)
    return W.square().sum(1) / torch.einsum("ihf,ihg->ifg", unit, W).square().sum(-1)


def dimensionality_wrong_axis(W):  # rows of W taken as the features
    return dimensionality_clamped(W.transpose(1, 2))


def dimensionality_sum_over_i(W):
    overlaps = torch.einsum("ihf,ihg->ifg", _unit(W), W)
    return _safe_ratio(W.square().sum(1), overlaps.square().sum(-2))


def dimensionality_keepdim(W):
    return geometry.feature_dimensionality(W)[:, None, :]


def test_feature_dimensionality_clamped_normalisation_passes():
    assert_passes("feature_dimensionality", dimensionality_clamped)
    assert_passes("feature_dimensionality", dimensionality_clamped, seeds=range(100, 130))


@pytest.mark.parametrize("wrong, phrase", [
    (dimensionality_without_self, "the sum leaves out j = i"),
    (dimensionality_both_normalised, "both W_i and W_j are normalised"),
    (dimensionality_not_squared, ""),  # |Σ Ŵ_i·W_j| differs from every named mistake's sign
    (dimensionality_norm_not_squared, "the numerator is ‖W_i‖ instead of ‖W_i‖²"),
    (dimensionality_nan_on_zero_column, "NaN"),
    (dimensionality_wrong_axis, "output has shape"),
    (dimensionality_sum_over_i, "the sum runs over i instead of j"),
    (dimensionality_keepdim, "output has shape"),
])
def test_feature_dimensionality_catches(wrong, phrase):
    assert phrase in failure("feature_dimensionality", wrong)


def test_feature_dimensionality_names_the_causes_of_nan_and_inf():
    assert "zero columns of W" in failure("feature_dimensionality", dimensionality_nan_on_zero_column)
    # On the pentagon + orthogonal case, leaving out j = i divides by 0 for the orthogonal feature.
    for wrong in (dimensionality_without_self, dimensionality_without_self_zero_columns_guarded):
        assert "leave out the j = i term" in failure("feature_dimensionality", wrong, seeds=[5])
    assert "the wrong axis" in failure("feature_dimensionality", dimensionality_wrong_axis, seeds=[3])
    assert "not squared" in failure("feature_dimensionality", dimensionality_not_squared_signed)


# --------------------------------------------------------------------------------------
# dimensions_per_feature
# --------------------------------------------------------------------------------------


def dpf_features_not_hidden(W):
    return W.shape[2] / W.square().sum(dim=(1, 2))


def dpf_norm_not_squared(W):
    return W.shape[1] / W.square().sum(dim=(1, 2)).sqrt()


def dpf_summed_over_instances(W):
    return W.shape[1] / W.square().sum()


def dpf_summed_over_instances_broadcast(W):
    return torch.full((W.shape[0],), W.shape[1] / float(W.square().sum()))


def dpf_upside_down(W):
    return W.square().sum(dim=(1, 2)) / W.shape[1]


def dpf_clamped(W):
    return W.shape[1] / W.square().sum(dim=(1, 2)).clamp_min(1e-8)


def dpf_nan_on_zero(W):
    return (W.shape[1] * W.square().sum(dim=(1, 2)).sign()) / W.square().sum(dim=(1, 2))


def dpf_linalg(W):  # right, another way
    return W.shape[1] / torch.linalg.matrix_norm(W) ** 2


@pytest.mark.parametrize("wrong, phrase", [
    (dpf_features_not_hidden, "the number of features n instead of the hidden dimension m"),
    (dpf_norm_not_squared, "the Frobenius norm is not squared"),
    (dpf_summed_over_instances, "output is a single number"),
    (dpf_summed_over_instances_broadcast, "summed over all instances"),
    (dpf_upside_down, "upside down"),
    (dpf_clamped, "do not clamp the denominator"),
    (dpf_nan_on_zero, "output is NaN for an all-zero instance"),
])
def test_dimensions_per_feature_catches(wrong, phrase):
    assert phrase in failure("dimensions_per_feature", wrong)


def test_dimensions_per_feature_other_right_answers_pass():
    assert_passes("dimensions_per_feature", dpf_linalg)


# --------------------------------------------------------------------------------------
# recognise_polytope
# --------------------------------------------------------------------------------------

SIZES = {size: name for name, (size, _, _) in geometry.POLYTOPES.items()}
BY_SIZE_AND_RANK = {(size, rank): (name, D) for name, (size, rank, D) in geometry.POLYTOPES.items()}


def _rank(W, tolerance=0.2):
    s = torch.linalg.svdvals(W.double())
    return int((s > tolerance * s[0]).sum())


def _dimensionalities(W):
    return geometry.feature_dimensionality(W.double()[None])[0]


def polytope_right(W_component):  # right: the learner's version of the hints
    k, d = W_component.shape[1], _rank(W_component)
    if (k, d) in BY_SIZE_AND_RANK:
        name, D = BY_SIZE_AND_RANK[(k, d)]
        if ((_dimensionalities(W_component) - D).abs() <= 0.05).all():
            return name
    return "other"


def polytope_by_size(W_component):
    return SIZES.get(W_component.shape[1], "other")


def polytope_ignores_rank(W_component):
    k = W_component.shape[1]
    if k in SIZES:
        name = SIZES[k]
        if ((_dimensionalities(W_component) - geometry.POLYTOPES[name][2]).abs() <= 0.05).all():
            return name
    return "other"


def polytope_ignores_dimensionality(W_component):
    return BY_SIZE_AND_RANK.get((W_component.shape[1], _rank(W_component)), ("other",))[0]


def polytope_by_dimensionality_only(W_component):
    D = _dimensionalities(W_component)
    for name, (_, _, expected) in geometry.POLYTOPES.items():
        if ((D - expected).abs() <= 0.05).all():
            return name
    return "other"


def polytope_exact_rank(W_component):  # matrix_rank counts the noise as dimensions
    k, d = W_component.shape[1], int(torch.linalg.matrix_rank(W_component))
    if (k, d) in BY_SIZE_AND_RANK:
        name, D = BY_SIZE_AND_RANK[(k, d)]
        if ((_dimensionalities(W_component) - D).abs() <= 0.05).all():
            return name
    return "other"


def polytope_hidden_size_as_rank(W_component):  # not invariant to embedding in more dimensions
    k, d = W_component.shape[1], W_component.shape[0]
    if (k, d) in BY_SIZE_AND_RANK:
        name, D = BY_SIZE_AND_RANK[(k, d)]
        if ((_dimensionalities(W_component) - D).abs() <= 0.05).all():
            return name
    return "other"


def polytope_exact_dimensionality(W_component):  # no tolerance for the noise
    k, d = W_component.shape[1], _rank(W_component)
    if (k, d) in BY_SIZE_AND_RANK:
        name, D = BY_SIZE_AND_RANK[(k, d)]
        if ((_dimensionalities(W_component) - D).abs() <= 1e-6).all():
            return name
    return "other"


def polytope_capitalised(W_component):
    return geometry.recognise_polytope(W_component).title()


def polytope_returns_index(W_component):
    name = polytope_right(W_component)
    return -1 if name == "other" else list(geometry.POLYTOPES).index(name)


def test_recognise_polytope_learner_version_passes():
    assert_passes("recognise_polytope", polytope_right)
    assert_passes("recognise_polytope", polytope_right, seeds=range(100, 164))


@pytest.mark.parametrize("wrong, phrase", [
    (polytope_by_size, "must match too"),
    (polytope_ignores_rank, "the rank must match too"),
    (polytope_ignores_dimensionality, "the dimensionalities must match too"),
    (polytope_by_dimensionality_only, "features, for"),  # a square's D is a digon's
    (polytope_exact_rank, "must not depend on the rotation"),
    (polytope_hidden_size_as_rank, "must not depend on the rotation"),
    (polytope_exact_dimensionality, "must not depend on the rotation"),
    (polytope_capitalised, "which is not one of the names"),
    (polytope_returns_index, "expected a string"),
])
def test_recognise_polytope_catches(wrong, phrase):
    assert phrase in failure("recognise_polytope", wrong)


def test_size_only_classification_is_caught_on_each_kind_of_impostor():
    impostors = [seed for seed in range(len(chapter._POLYTOPE_KINDS))
                 if geometry.recognise_polytope(chapter._polytope_case(seed).W_component) == "other"
                 and chapter._polytope_case(seed).W_component.shape[1] in SIZES]
    assert len(impostors) >= 7
    for seed in impostors:
        assert checks.evaluate("recognise_polytope", polytope_by_size, seeds=[seed]).status == checks.FAILED
    # The equal-cosine cones have a polytope's size and D but not its rank.
    cones = [seed for seed, (description, _) in enumerate(chapter._POLYTOPE_KINDS)
             if "equal positive" in description]
    for seed in cones:
        assert "the rank must match too" in failure("recognise_polytope", polytope_ignores_rank, seeds=[seed])
