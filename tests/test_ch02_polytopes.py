"""Exact tests of chapter 02's geometry (course_utils.geometry) on constructed polytopes.

The polytopes are unit vectors in their own d dimensions.  Each is a tight frame: the k
vectors satisfy Σ_j W_j W_jᵀ = (k/d) I_d, so for every unit W_i

    Σ_j (Ŵ_i · W_j)² = W_iᵀ (Σ_j W_j W_jᵀ) W_i = k/d   and   D_i = ‖W_i‖² / (k/d) = d/k.
"""

import math

import pytest
import torch

from course_utils import geometry


# --------------------------------------------------------------------------------------
# Constructions, each (d, k): columns are features
# --------------------------------------------------------------------------------------


def polygon(k: int) -> torch.Tensor:
    """k unit vectors at 360°/k apart in 2-D."""
    angles = torch.arange(k, dtype=torch.float64) * 2 * math.pi / k
    return torch.stack([angles.cos(), angles.sin()])


def tetrahedron() -> torch.Tensor:
    """Alternate corners of the cube, normalised: pairwise cosine -1/3."""
    corners = torch.tensor([[1, 1, 1], [1, -1, -1], [-1, 1, -1], [-1, -1, 1]], dtype=torch.float64)
    return corners.T / math.sqrt(3)


def square_antiprism(height_squared: float) -> torch.Tensor:
    """Two squares of radius r at heights ±h (r² + h² = 1), the lower turned by 45°."""
    r, h = math.sqrt(1 - height_squared), math.sqrt(height_squared)
    angles = torch.arange(4, dtype=torch.float64) * math.pi / 2
    top = torch.stack([r * angles.cos(), r * angles.sin(), torch.full((4,), h, dtype=torch.float64)])
    turned = angles + math.pi / 4
    bottom = torch.stack([r * turned.cos(), r * turned.sin(), torch.full((4,), -h, dtype=torch.float64)])
    return torch.cat([top, bottom], dim=1)


# The square antiprism whose features form a tight frame.  Σ_j W_j W_jᵀ is diagonal by the
# 8-fold symmetry, diag(4r², 4r², 8h²); it is (8/3) I when 4r² = 8h², i.e. h² = 1/3, r² = 2/3.
TIGHT_ANTIPRISM_H2 = 1 / 3

# The uniform antiprism (all 16 edges equal) is NOT that one.  Square edge² = 2r²; lateral edge²
# between (r, 0, h) and (r cos45°, r sin45°, -h) = r²(2 - 2 cos45°) + 4h² = r²(2 - √2) + 4h².
# Equal when 4h² = √2 r², so h² = r²/(2√2) and, with r² + h² = 1, r² = 2√2/(2√2 + 1).
# Its frame is diag(4r², 4r², 8h²) (not a multiple of I), so Σ_j (Ŵ_i·W_j)² = 4r⁴ + 8h⁴ =
# 40/(2√2 + 1)² and D = (9 + 4√2)/40 ≈ 0.366, within 0.01 of 3/8 but not equal to it.
UNIFORM_ANTIPRISM_R2 = 2 * math.sqrt(2) / (2 * math.sqrt(2) + 1)
UNIFORM_ANTIPRISM_H2 = 1 - UNIFORM_ANTIPRISM_R2
UNIFORM_ANTIPRISM_D = (9 + 4 * math.sqrt(2)) / 40

CONSTRUCTED = {  # name -> (d, k) unit features
    "orthogonal": torch.ones(1, 1, dtype=torch.float64),
    "digon": torch.tensor([[1.0, -1.0]], dtype=torch.float64),
    "triangle": polygon(3),
    "tetrahedron": tetrahedron(),
    "pentagon": polygon(5),
    "square antiprism": square_antiprism(TIGHT_ANTIPRISM_H2),
}
EXPECTED_D = {"orthogonal": 1.0, "digon": 1 / 2, "triangle": 2 / 3, "tetrahedron": 3 / 4,
              "pentagon": 2 / 5, "square antiprism": 3 / 8}


def random_rotation(n: int, gen: torch.Generator) -> torch.Tensor:
    """A random n×n orthogonal matrix (QR of a Gaussian matrix, signs fixed)."""
    q, r = torch.linalg.qr(torch.randn(n, n, generator=gen, dtype=torch.float64))
    return q * torch.sign(torch.diagonal(r))


def embed(features: torch.Tensor, hidden: int, gen: torch.Generator, noise: float = 0.0,
          scale: float = 1.0) -> torch.Tensor:
    """Place (d, k) features in a hidden space, rotate it randomly, scale, add noise -> (hidden, k)."""
    d, k = features.shape
    padded = torch.zeros(hidden, k, dtype=torch.float64)
    padded[:d] = features
    rotated = random_rotation(hidden, gen) @ padded * scale
    return rotated + noise * torch.randn(hidden, k, generator=gen, dtype=torch.float64)


# --------------------------------------------------------------------------------------
# Feature dimensionality and dimensions per feature
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", CONSTRUCTED)
def test_dimensionality_of_each_polytope(name):
    W = CONSTRUCTED[name]
    D = geometry.feature_dimensionality(W[None])
    torch.testing.assert_close(D, torch.full((1, W.shape[1]), EXPECTED_D[name], dtype=torch.float64))
    assert EXPECTED_D[name] == pytest.approx(geometry.POLYTOPES[name][1] / geometry.POLYTOPES[name][0])
    assert geometry.POLYTOPES[name][2] == pytest.approx(EXPECTED_D[name])


@pytest.mark.parametrize("name", CONSTRUCTED)
def test_polytopes_are_tight_frames(name):
    """Σ_j W_j W_jᵀ = (k/d) I, the identity behind D = d/k."""
    W = CONSTRUCTED[name]
    d, k = W.shape
    torch.testing.assert_close(W @ W.T, (k / d) * torch.eye(d, dtype=torch.float64))
    torch.testing.assert_close(W.norm(dim=0), torch.ones(k, dtype=torch.float64))


def test_orthogonal_basis_with_any_norms_has_D_one():
    W = (torch.eye(4) * torch.tensor([1.0, 2.0, 0.3, 1.1]))[None]
    torch.testing.assert_close(geometry.feature_dimensionality(W), torch.ones(1, 4))


def test_tight_square_antiprism_height():
    W = square_antiprism(TIGHT_ANTIPRISM_H2)
    # Every vertex has the same cosines to the others: ±1/3 within a square, ≈0.138 and ≈-0.805 across.
    cosines = (W.T @ W)[0].sort().values
    across = (2 / 3) * math.cos(math.pi / 4) - 1 / 3
    expected = torch.tensor(sorted([1.0, 1 / 3, 1 / 3, -1 / 3, across, across, -2 * (1 / 3) - across,
                                    -2 * (1 / 3) - across]), dtype=torch.float64)
    torch.testing.assert_close(cosines, expected)


def test_uniform_square_antiprism_has_equal_edges_and_D_below_three_eighths():
    W = square_antiprism(UNIFORM_ANTIPRISM_H2)
    distances = torch.cdist(W.T, W.T)
    edge = math.sqrt(2 * UNIFORM_ANTIPRISM_R2)  # the square's side
    # Each vertex has 4 neighbours at the edge length (2 in its square, 2 in the other): 16 edges.
    assert int(((distances - edge).abs() < 1e-9).sum()) == 2 * 16
    D = geometry.feature_dimensionality(W[None])
    torch.testing.assert_close(D, torch.full((1, 8), UNIFORM_ANTIPRISM_D, dtype=torch.float64))
    assert 3 / 8 - D.max() > 0.008  # not a tight frame: strictly below 3/8 ...
    assert geometry.recognise_polytope(W) == "square antiprism"  # ... but within tolerance


def test_zero_columns_get_zero_dimensionality_never_nan():
    W = torch.tensor([[[1.0, 0.0, -1.0], [0.0, 0.0, 0.0]]])
    torch.testing.assert_close(geometry.feature_dimensionality(W), torch.tensor([[0.5, 0.0, 0.5]]))
    assert geometry.feature_dimensionality(torch.zeros(3, 4, 5)).eq(0).all()
    tiny = torch.tensor([[[1e-9, 0.0], [0.0, 1.0]]])  # a tiny but nonzero column is still orthogonal
    torch.testing.assert_close(geometry.feature_dimensionality(tiny), torch.ones(1, 2))


def test_dimensionality_is_batched_scale_invariant_and_keeps_dtype():
    gen = torch.Generator().manual_seed(0)
    W = torch.randn(3, 4, 6, generator=gen)
    D = geometry.feature_dimensionality(W)
    assert D.shape == (3, 6) and D.dtype == torch.float32
    assert (D > 0).all() and (D <= 1 + 1e-6).all()
    torch.testing.assert_close(geometry.feature_dimensionality(3.7 * W), D)
    for k in range(3):
        torch.testing.assert_close(geometry.feature_dimensionality(W[k:k + 1])[0], D[k])
    # Against the definition, one feature at a time.
    i, k = 2, 1
    Wi = W[k, :, i]
    denominator = sum(float((Wi / Wi.norm()) @ W[k, :, j]) ** 2 for j in range(6))
    assert float(D[k, i]) == pytest.approx(float(Wi @ Wi) / denominator, rel=1e-5)


def test_dimensions_per_feature():
    pentagon, digons = polygon(5), torch.tensor([[1.0, -1.0, 0, 0], [0, 0, 1.0, -1.0]], dtype=torch.float64)
    W = torch.stack([pentagon, torch.cat([digons, torch.zeros(2, 1, dtype=torch.float64)], 1)])
    torch.testing.assert_close(geometry.dimensions_per_feature(W),
                               torch.tensor([2 / 5, 1 / 2], dtype=torch.float64))
    assert geometry.dimensions_per_feature(torch.eye(3)[None] * 2).item() == pytest.approx(3 / 12)
    out = geometry.dimensions_per_feature(torch.randn(4, 3, 7))
    assert out.shape == (4,) and out.dtype == torch.float32


def test_dimensions_per_feature_of_an_all_zero_instance_is_inf():
    W = torch.zeros(2, 3, 4)
    W[1, 0, 0] = 1.0
    out = geometry.dimensions_per_feature(W)
    assert math.isinf(out[0]) and out[0] > 0 and not out.isnan().any()
    assert out[1] == 3.0


# --------------------------------------------------------------------------------------
# Polytope recognition
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", CONSTRUCTED)
def test_recognise_each_polytope(name):
    assert geometry.recognise_polytope(CONSTRUCTED[name]) == name
    assert geometry.recognise_polytope(CONSTRUCTED[name].float()) == name


@pytest.mark.parametrize("name", CONSTRUCTED)
@pytest.mark.parametrize("seed", range(4))
def test_recognition_is_rotation_scale_and_noise_invariant(name, seed):
    gen = torch.Generator().manual_seed(seed)
    d, k = CONSTRUCTED[name].shape
    hidden = d + seed  # embedded in 0-3 extra dimensions
    W = embed(CONSTRUCTED[name][:, torch.randperm(k, generator=gen)], hidden, gen, noise=1e-3,
              scale=[1.0, 1.1, 0.7, 3.0][seed])
    assert geometry.recognise_polytope(W) == name
    assert geometry.recognise_polytope(W.float()) == name
    assert geometry.effective_rank(W) == d


@pytest.mark.parametrize("description, W", [
    ("uneven triangle", torch.tensor([[1.0, math.cos(1.745), math.cos(4.0)],
                                      [0.0, math.sin(1.745), math.sin(4.0)]])),
    ("hexagon in 2-D", polygon(6)),
    ("square in 2-D", polygon(4)),
    ("two orthogonal features", torch.eye(2)),
    ("three orthogonal features", torch.eye(3)),
    ("5 random directions in 3-D", torch.randn(3, 5, generator=torch.Generator().manual_seed(1))),
    ("pentagon with uneven angles", torch.stack([torch.tensor([0.0, 0.5236, 1.0472, 2.618, 4.3633]).cos(),
                                                 torch.tensor([0.0, 0.5236, 1.0472, 2.618, 4.3633]).sin()])),
    ("triangle tilted out of its plane (rank 3)", torch.cat([polygon(3), torch.full((1, 3), 0.8,
                                                                                   dtype=torch.float64)])),
    ("pentagon with unequal norms", polygon(5) * torch.tensor([1.0, 1.5, 1.0, 1.5, 1.0], dtype=torch.float64)),
    ("zero feature", torch.zeros(2, 1)),
    ("no features", torch.zeros(3, 0)),
])
def test_other_configurations(description, W):
    assert geometry.recognise_polytope(W) == "other", description


def test_cones_with_the_right_dimensionality_but_the_wrong_rank_are_other():
    """k unit vectors with equal pairwise cosine c have Gram (1 - c) I + c J: full rank k when
    c > 0.  Choosing c so that D = 1/(1 + (k - 1)c²) equals a polytope's d/k gives a set with
    that polytope's size and D but rank k: rank must be part of the recognition."""
    for k, name in ((3, "triangle"), (4, "tetrahedron"), (5, "pentagon")):
        d = geometry.POLYTOPES[name][1]
        c = math.sqrt((k / d - 1) / (k - 1))
        gram = (1 - c) * torch.eye(k, dtype=torch.float64) + c
        values, vectors = torch.linalg.eigh(gram)
        W = (vectors * values.sqrt()) @ vectors.T  # W.T @ W = gram
        D = geometry.feature_dimensionality(W[None])[0]
        torch.testing.assert_close(D, torch.full((k,), d / k, dtype=torch.float64))
        assert geometry.effective_rank(W) == k
        assert geometry.recognise_polytope(W) == "other"


def test_recognition_sees_lines_not_signs():
    """D uses squared overlaps, so flipping a feature's sign changes no name (documented)."""
    assert geometry.recognise_polytope(torch.tensor([[1.0, 1.0]])) == "digon"
    flipped = polygon(3) * torch.tensor([1.0, -1.0, 1.0], dtype=torch.float64)
    assert geometry.recognise_polytope(flipped) == "triangle"


def test_recognise_needs_one_factor():
    with pytest.raises(ValueError, match="hidden, k"):
        geometry.recognise_polytope(torch.zeros(1, 2, 3))


# --------------------------------------------------------------------------------------
# The interaction graph, tegum factors, configurations
# --------------------------------------------------------------------------------------


def tegum_product(seed: int | None = None, noise: float = 0.0, scale: float = 1.0) -> tuple[torch.Tensor, list]:
    """A triangle in dims 0-1, a digon in dim 2, an orthogonal feature in dim 3 and a zero
    feature, shuffled into 7 columns of a 4-D hidden space (rotated when a seed is given).
    Returns W (1, 4, 7) and the expected factors [(name, indices)]."""
    parts = torch.zeros(4, 7, dtype=torch.float64)
    parts[0:2, 0:3] = polygon(3)
    parts[2, 3:5] = torch.tensor([1.0, -1.0], dtype=torch.float64)
    parts[3, 5] = 1.0
    order = torch.tensor([4, 0, 6, 2, 5, 1, 3])  # column c of W is part order[c]
    W = parts[:, order]
    if seed is not None:
        W = embed(W, 4, torch.Generator().manual_seed(seed), noise=noise, scale=scale)
        W[:, 2] = 0.0  # the dropped feature stays exactly zero
    where = {int(p): c for c, p in enumerate(order)}
    expected = [("triangle", sorted(where[p] for p in (0, 1, 2))), ("digon", sorted(where[p] for p in (3, 4))),
                ("orthogonal", [where[5]])]
    return W[None], sorted(expected, key=lambda item: item[1][0])


def test_interaction_graph_of_a_tegum_product():
    W, _ = tegum_product()
    graph = geometry.interaction_graph(W)
    assert graph.shape == (1, 7, 7) and graph.dtype == torch.bool
    assert torch.equal(graph, graph.transpose(1, 2)) and not graph.diagonal(dim1=1, dim2=2).any()
    assert not graph[0, 2].any() and not graph[0, :, 2].any()  # the zero feature: no edges
    assert graph[0, 1, 5] and graph[0, 1, 3] and graph[0, 0, 6]  # triangle, digon (cols 0 and 6)
    assert not graph[0, 1, 0] and not graph[0, 4].any()  # across factors / the orthogonal feature


def test_unrepresented_features_are_left_out_relative_to_the_largest_norm():
    W = torch.stack([torch.tensor([[1.0, 0.0, 0.6], [0.0, 0.45, 0.0]])])  # norms 1, 0.45, 0.6
    assert geometry.represented_features(W).tolist() == [[True, False, True]]
    assert geometry.represented_features(10 * W).tolist() == [[True, False, True]]
    assert geometry.tegum_factors(W) == [[[0, 2]]]
    assert geometry.represented_features(torch.zeros(2, 2, 3)).sum() == 0


@pytest.mark.parametrize("seed, noise, scale", [(None, 0.0, 1.0), (0, 0.0, 1.0), (1, 1e-3, 1.0),
                                               (2, 1e-3, 1.1), (3, 1e-3, 0.6)])
def test_tegum_product_is_factored_and_named(seed, noise, scale):
    W, expected = tegum_product(seed, noise, scale)
    assert geometry.tegum_factors(W) == [[indices for _, indices in expected]]
    assert geometry.describe_configuration(W) == [expected]
    assert (geometry.summarise_configuration(geometry.describe_configuration(W)[0])
            == "1 orthogonal feature + 1 digon + 1 triangle")
    D = geometry.feature_dimensionality(W)[0]
    assert D[2] == 0  # the zero feature
    for name, indices in expected:
        torch.testing.assert_close(D[indices], torch.full((len(indices),), EXPECTED_D[name],
                                                          dtype=torch.float64), atol=5e-3, rtol=0)


def test_every_polytope_stays_one_factor_up_to_a_cosine_threshold_of_0_3():
    for name, W in CONSTRUCTED.items():
        for threshold in (geometry.COSINE_THRESHOLD, 0.3):
            assert geometry.tegum_factors(W[None], threshold=threshold) == [[list(range(W.shape[1]))]], name


def test_describe_a_batch_of_instances():
    """Instance 0: two digons and a pentagon in 4-D (a tegum product); instance 1: all zero;
    instance 2: a tetrahedron plus a square antiprism, each in its own 3 of 6 dimensions."""
    gen = torch.Generator().manual_seed(7)
    first = torch.zeros(4, 9, dtype=torch.float64)
    first[0, 0:2] = torch.tensor([1.0, -1.0])
    first[1, 2:4] = torch.tensor([1.0, -1.0])
    first[2:4, 4:9] = polygon(5)
    third = torch.zeros(6, 12, dtype=torch.float64)
    third[0:3, 0:4] = tetrahedron()
    third[3:6, 4:12] = square_antiprism(TIGHT_ANTIPRISM_H2)
    W = torch.zeros(3, 6, 12, dtype=torch.float64)
    W[0, :, :9] = embed(first, 6, gen, noise=1e-3)
    W[2] = embed(third, 6, gen, noise=1e-3, scale=1.1)
    described = geometry.describe_configuration(W)
    assert described == [
        [("digon", [0, 1]), ("digon", [2, 3]), ("pentagon", [4, 5, 6, 7, 8])],
        [],
        [("tetrahedron", [0, 1, 2, 3]), ("square antiprism", list(range(4, 12)))],
    ]
    assert [geometry.summarise_configuration(d) for d in described] == [
        "2 digons + 1 pentagon", "nothing represented", "1 tetrahedron + 1 square antiprism"]
    torch.testing.assert_close(geometry.dimensions_per_feature(W)[[0, 2]],
                               torch.tensor([6 / 9, 6 / (12 * 1.21)], dtype=torch.float64), rtol=1e-2, atol=0)


def test_a_merged_factor_is_other():
    """A triangle sharing its plane with a digon is one 5-feature factor, not a pentagon."""
    W = torch.cat([polygon(3), torch.tensor([[0.0, 0.0], [1.0, -1.0]], dtype=torch.float64)], dim=1)[None]
    assert geometry.describe_configuration(W) == [[("other", [0, 1, 2, 3, 4])]]
    assert geometry.summarise_configuration(geometry.describe_configuration(W)[0]) == "1 other factor"


def test_summarise_names_an_unnamed_group_by_its_size_when_given_W():
    """A group that is no polytope of the table: "1 group of k features in d dimensions"."""
    torch.manual_seed(0)
    W = torch.zeros(4, 8)
    group = torch.randn(3, 6)
    W[:3, :6] = group / group.norm(dim=0)  # six unit features sharing three dimensions: no named polytope
    W[3, 6], W[3, 7] = 1.0, -1.0  # and a digon
    description = geometry.describe_configuration(W[None])[0]
    assert geometry.summarise_configuration(description) == "1 digon + 1 other factor"
    assert geometry.summarise_configuration(description, W) == "1 digon + 1 group of 6 features in 3 dimensions"
    named = geometry.describe_configuration(W[None], recognise=lambda component: "digon")[0]
    assert geometry.summarise_configuration(named) == "2 digons"
