"""Chapter 00's science: nearly orthogonal directions, Johnson–Lindenstrauss, identifiability,
compressed sensing against the Donoho–Tanner curve, and the Bloom filter.  Every number is
asserted with its tolerance; the measured values are quoted in the comments (seeded, n = 200)."""

from __future__ import annotations

import math

import pytest
import torch

from course_utils import orthogonality as ortho

pytestmark = pytest.mark.usefixtures("one_thread")


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# --------------------------------------------------------------------------------------
# How many directions fit
# --------------------------------------------------------------------------------------


def test_coherence_is_the_largest_off_diagonal_cosine():
    V = torch.tensor([[1.0, 0.0], [0.6, 0.8], [-1.0, 0.1]])
    expected = max(0.6, 1 / math.sqrt(1.01), abs(-0.6 + 0.08) / math.sqrt(1.01))
    assert float(ortho.coherence(V)) == pytest.approx(expected, rel=1e-6)
    assert float(ortho.coherence(3 * V)) == pytest.approx(expected, rel=1e-6)  # scale-free
    batch = torch.stack([V, torch.eye(2)[[0, 1, 1]]])
    torch.testing.assert_close(ortho.coherence(batch), torch.tensor([expected, 1.0]))


@pytest.mark.parametrize("N, d", [(50, 10), (200, 50), (1000, 200)])
def test_random_coherence_matches_the_prediction(N, d):
    """The median coherence of 10 random sets is within 5 % of ``coherence_prediction`` (measured:
    0.857 vs 0.866, 0.548 vs 0.546, 0.334 vs 0.333); the leading-order sqrt(2 ln M / d) lies above
    it, by 39 %, 15 % and 8 %; every set is far above the Welch floor."""
    gen = _gen(N + d)
    mus = torch.stack([ortho.coherence(ortho.random_unit_vectors(N, d, gen)) for _ in range(10)])
    predicted = ortho.coherence_prediction(N, d)
    assert float(mus.median()) == pytest.approx(predicted, rel=0.05)
    assert predicted < ortho.coherence_concentration(N, d) < 1.45 * predicted
    assert float(mus.min()) > 2 * ortho.welch_bound(N, d)


def test_welch_bound_values():
    assert ortho.welch_bound(3, 2) == pytest.approx(0.5)  # three lines 60° apart
    assert ortho.welch_bound(4, 3) == pytest.approx(1 / 3)  # the tetrahedron: the simplex's 1/d
    assert ortho.welch_bound(6, 3) == pytest.approx(1 / math.sqrt(5))  # the icosahedron's 6 diagonals
    assert ortho.welch_bound(5, 5) == 0.0 and ortho.welch_bound(100, 10) < ortho.welch_bound(1000, 10) < math.sqrt(0.1)


@pytest.mark.parametrize("N, d", [(4, 3), (6, 3), (10, 5)])
def test_optimised_arrangements_reach_the_welch_bound(N, d):
    """Where an equiangular tight frame exists (the simplex N = d + 1; 6 lines in R³; 10 lines in
    R⁵) gradient descent reaches the Welch bound within 1 % (measured: equal to 5 digits)."""
    V, history = ortho.optimise_arrangement(N, d, steps=300, generator=_gen(0))
    welch = ortho.welch_bound(N, d)
    assert V.shape == (N, d) and torch.allclose(V.norm(dim=-1), torch.ones(N, dtype=V.dtype))
    assert welch <= float(ortho.coherence(V)) + 1e-9 <= 1.01 * welch + 1e-9
    assert float(history[-1]) == pytest.approx(float(ortho.coherence(V)))
    assert float(history[0]) > float(history[-1])


def _gaps(angles: torch.Tensor, period: float) -> torch.Tensor:
    angles = (angles % period).sort().values
    return torch.diff(torch.cat([angles, angles[:1] + period]))


def test_two_dimensions_give_the_regular_polygon():
    """Five lines (unsigned) end 36° = 180/5 apart, five points (signed) 72° = 360/5 apart,
    within 0.5°; the optimum lies above the Welch bound (cos 36° = 1.32 × Welch)."""
    V, _ = ortho.optimise_arrangement(5, 2, steps=300, generator=_gen(0))
    angles = torch.rad2deg(torch.atan2(V[:, 1], V[:, 0]))
    assert torch.allclose(_gaps(angles, 180.0), torch.full((5,), 36.0, dtype=V.dtype), atol=0.5)
    assert float(ortho.coherence(V)) == pytest.approx(math.cos(math.pi / 5), abs=1e-3)
    V, _ = ortho.optimise_arrangement(5, 2, steps=300, signed=True, generator=_gen(0))
    angles = torch.rad2deg(torch.atan2(V[:, 1], V[:, 0]))
    assert torch.allclose(_gaps(angles, 360.0), torch.full((5,), 72.0, dtype=V.dtype), atol=0.5)


# --------------------------------------------------------------------------------------
# Johnson–Lindenstrauss
# --------------------------------------------------------------------------------------


def test_jl_dimension_is_the_dasgupta_gupta_formula():
    assert ortho.jl_dimension(100, 0.5) == math.ceil(4 * math.log(100) / (0.125 - 0.125 / 3)) == 222
    assert ortho.jl_dimension(100, 0.3) == 512
    assert ortho.jl_dimension(1000, 0.3) > ortho.jl_dimension(100, 0.3)


def test_pairwise_sq_distances_in_triu_order():
    X = torch.randn(7, 5, generator=_gen(5), dtype=torch.float64)
    i, j = torch.triu_indices(7, 7, offset=1)
    torch.testing.assert_close(ortho.pairwise_sq_distances(X), (X[i] - X[j]).square().sum(-1))
    assert float(ortho.pairwise_sq_distances(torch.tensor([[0.0, 0.0], [3.0, 4.0]]))[0]) == pytest.approx(25.0)


@pytest.mark.parametrize("eps", [0.5, 0.3])
def test_jl_distortion_stays_below_eps_at_the_predicted_k(eps):
    """100 points in R^1000 projected to k = jl_dimension(100, ε): at least 9 of 10 projections
    keep every squared distance within 1 ± ε (measured: 10/10, worst 0.46 for ε = 0.5 and 0.29
    for ε = 0.3; the lemma promises success with probability ≥ 1/N only)."""
    gen = _gen(1)
    X = torch.randn(100, 1000, generator=gen)
    k = ortho.jl_dimension(100, eps)
    distortions = torch.tensor([ortho.max_distortion(X, k, gen) for _ in range(10)])
    assert (distortions < eps).sum() >= 9 and float(distortions.median()) < 0.9 * eps


def test_jl_distortion_shrinks_like_one_over_root_k():
    """The worst distortion times sqrt(k) stays within a factor 1.5 from k = 50 to 800
    (measured 5.2 to 5.7): the distortion falls as 1/sqrt(k)."""
    gen = _gen(2)
    X = torch.randn(100, 1000, generator=gen)
    scaled = [sum(ortho.max_distortion(X, k, gen) for _ in range(3)) / 3 * math.sqrt(k) for k in (50, 200, 800)]
    assert max(scaled) < 1.5 * min(scaled)


# --------------------------------------------------------------------------------------
# Identifiability
# --------------------------------------------------------------------------------------


def test_identifiable_sparsity_is_strictly_below_the_bound():
    assert ortho.identifiable_sparsity(1 / 3) == 1  # bound 2, strict
    assert ortho.identifiable_sparsity(0.1) == 5  # bound 5.5
    assert ortho.identifiable_sparsity(1 / math.sqrt(5)) == 1  # the 6 lines of R³: bound 1.62
    assert ortho.identifiable_sparsity(0.01) == 50


# --------------------------------------------------------------------------------------
# Compressed sensing
# --------------------------------------------------------------------------------------


def test_soft_threshold():
    x = torch.tensor([-3.0, -0.5, 0.0, 0.2, 2.0])
    torch.testing.assert_close(ortho.soft_threshold(x, 1.0), torch.tensor([-2.0, 0.0, 0.0, 0.0, 1.0]))


def test_ista_solves_the_lasso():
    """After enough steps the KKT conditions of min ½‖x − W f‖² + λ‖f‖₁ hold: on the support
    Wᵀ(x − W f) = λ sign f, off it |Wᵀ(x − W f)| ≤ λ (to 1e-6)."""
    gen = _gen(3)
    W = ortho.sensing_matrix(20, 40, gen)
    f = ortho.sparse_signals(3, 40, 4, gen, nonnegative=False)
    x, lam = ortho.measure(W, f), 0.1
    f_hat = ortho.ista(W, x, lam, 5000)
    correlation = (x - ortho.measure(W, f_hat)) @ W
    on = f_hat != 0
    assert torch.allclose(correlation[on], lam * f_hat[on].sign(), atol=1e-6)
    assert float(correlation[~on].abs().max()) <= lam + 1e-6


def test_debias_refits_the_true_support_exactly():
    gen = _gen(4)
    W = ortho.sensing_matrix(30, 60, gen)
    f = ortho.sparse_signals(5, 60, 6, gen)
    x = ortho.measure(W, f)
    guess = 0.7 * f + 0.001 * (f == 0) * torch.rand(5, 60, generator=gen, dtype=f.dtype)  # shrunk, plus dust
    torch.testing.assert_close(ortho.debias(W, x, guess), f)
    assert float(ortho.relative_error(ortho.one_step_decode(W, x, -0.5), f).min()) > 0.05  # raw: never within 1e-2


def test_dt_curve_and_statistical_dimension():
    """ρ_DT(0.5) = 0.3857 (Donoho–Tanner's tabulated weak threshold: 0.3848); the statistical
    dimension's infimum matches a brute-force minimum over τ, and D(0) = 0, D(n) = n."""
    assert float(ortho.dt_curve([0.5])) == pytest.approx(0.385, abs=0.003)
    curve = ortho.dt_curve([0.1, 0.25, 0.5, 0.75, 0.9])
    assert bool((curve.diff() > 0).all()) and float(curve[0]) == pytest.approx(0.189, abs=0.003)
    s, n = 30.0, 200
    tau = torch.linspace(0, 5, 50_001, dtype=torch.float64)
    Q = 0.5 * torch.special.erfc(tau / math.sqrt(2))
    phi = torch.exp(-tau ** 2 / 2) / math.sqrt(2 * math.pi)
    brute = (s * (1 + tau ** 2) + (n - s) * 2 * ((1 + tau ** 2) * Q - tau * phi)).min()
    assert float(ortho.statistical_dimension(s, n)) == pytest.approx(float(brute), rel=1e-8)
    assert float(ortho.statistical_dimension(0.0, n)) == 0.0
    assert float(ortho.statistical_dimension(float(n), n)) == pytest.approx(n)


@pytest.mark.parametrize("delta, tolerance", [(0.25, 0.05), (0.5, 0.05), (0.75, 0.1)])
def test_ista_transition_follows_the_donoho_tanner_curve(delta, tolerance):
    """n = 200, 20 trials per ρ, ISTA (λ = 0.05, 300 steps) then a refit: success > 0.95 at
    ρ = ρ_DT/2 and < 0.05 at 1.5 ρ_DT; the 50 % crossing lies within the tolerance of ρ_DT.
    Measured crossings: 0.267 (ρ_DT 0.267), 0.361 (0.386), 0.464 (0.534): finite n and a fixed
    number of ISTA steps pull it below the curve where k is large (at δ = 0.75, λ = 0.01 and
    3,000 steps give 0.499)."""
    rho_dt = float(ortho.dt_curve([delta]))
    rhos = [rho_dt - 0.15 + 0.025 * i for i in range(11)]
    rates = ortho.phase_grid("ista", 200, [delta], rhos, 20, _gen(1))[0]
    crossing = ortho.transition_point(rhos, rates.tolist())
    assert abs(crossing - rho_dt) < tolerance, (crossing, rho_dt)
    inside, outside = ortho.phase_grid("ista", 200, [delta], [rho_dt / 2, 1.5 * rho_dt], 20, _gen(2))[0]
    assert float(inside) > 0.95 and float(outside) < 0.05


def test_one_step_region_lies_inside_istas():
    """A 10 × 10 (δ, ρ) grid, 10 trials a cell, n = 200: wherever the one-step decoder (b = −0.5,
    then the same refit) succeeds more than half the time, ISTA does too, and ISTA succeeds at
    many cells where the one-step decoder does not (measured: 26 such cells, none the other way)."""
    deltas = [0.1 * i for i in range(1, 11)]
    rhos = [0.02, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.8, 0.95]
    ista = ortho.phase_grid("ista", 200, deltas, rhos, 10, _gen(0))
    one_step = ortho.phase_grid("one_step", 200, deltas, rhos, 10, _gen(0))
    assert not bool(((one_step > 0.5) & (ista <= 0.5)).any())
    assert int(((ista > 0.5) & (one_step <= 0.5)).sum()) >= 10
    assert int((one_step > 0.5).sum()) >= 10  # the one-step region is not empty


# --------------------------------------------------------------------------------------
# The Bloom filter
# --------------------------------------------------------------------------------------


def test_bloom_filter_matches_the_prediction():
    """m = 1000 bits, n = 100 items, 3 filters × 10,000 queries each: the measured false-positive
    rate is within 15 % of (1 − e^{−kn/m})^k (measured: k = 7: 0.0083 vs 0.0082; k = 3: 0.0192
    vs 0.0174; k = 12: 0.0123 vs 0.0136), and the best k, (m/n) ln 2 ≈ 7, beats k = 3 and k = 12."""
    assert ortho.bloom_best_k(1000, 100) == pytest.approx(10 * math.log(2))
    measured = {}
    for k in (3, 7, 12):
        measured[k] = sum(ortho.bloom_false_positive_rate(1000, k, 100, _gen(s), queries=10_000) for s in range(3)) / 3
        assert measured[k] == pytest.approx(ortho.bloom_prediction(1000, k, 100), rel=0.15)
    assert measured[7] < measured[3] and measured[7] < measured[12]
