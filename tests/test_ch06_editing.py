"""Chapter 06's closed-form editing library: the linear associative memory, ROME's rank-one update
(exact, rank one, least change in the C-weighted norm, C-orthogonal keys untouched), Hu et al.'s
interference identity for lifelong editing, whitened cosines, and the headline experiment's
numbers (whitened-orthogonal keys are lossless; generic keys lose earlier edits as n grows)."""

from __future__ import annotations

import math
import subprocess
import sys
import time

import pytest
import torch

from course_utils import editing

pytestmark = pytest.mark.usefixtures("one_thread")

f64 = torch.float64


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def setup(d_k=6, d_v=4, seed=0, condition=50.0):
    """W (d_v, d_k), C with a spread spectrum, k*, v*, all float64."""
    g = gen(seed)
    C = editing.random_covariance(d_k, condition, g)
    W = torch.randn(d_v, d_k, dtype=f64, generator=g)
    k = editing.sample_keys(C, 1, g)[:, 0]
    v = torch.randn(d_v, dtype=f64, generator=g)
    return W, C, k, v


# --------------------------------------------------------------------------------------
# The associative memory and the key covariance
# --------------------------------------------------------------------------------------


def test_associative_memory_is_the_least_squares_solution():
    g = gen(1)
    K, V = torch.randn(5, 40, dtype=f64, generator=g), torch.randn(3, 40, dtype=f64, generator=g)
    W = editing.associative_memory(K, V)
    torch.testing.assert_close(W, V @ K.T @ torch.linalg.inv(K @ K.T), rtol=1e-10, atol=1e-12)
    assert ((W @ K - V) @ K.T).abs().max() < 1e-10  # the normal equations
    # ridge: W = V Kᵀ (K Kᵀ + λ I)⁻¹
    W_ridge = editing.associative_memory(K, V, ridge=2.0)
    torch.testing.assert_close(W_ridge, V @ K.T @ torch.linalg.inv(K @ K.T + 2.0 * torch.eye(5, dtype=f64)))


def test_associative_memory_with_fewer_keys_than_dimensions_stores_them_exactly():
    g = gen(2)
    K, V = torch.randn(8, 3, dtype=f64, generator=g), torch.randn(4, 3, dtype=f64, generator=g)
    W = editing.associative_memory(K, V)
    assert (W @ K - V).abs().max() < 1e-12
    orthogonal = torch.randn(8, dtype=f64, generator=g)
    orthogonal -= K @ torch.linalg.lstsq(K, orthogonal).solution
    assert (W @ orthogonal).abs().max() < 1e-12  # minimum norm: the complement maps to 0
    assert editing.associative_memory(K.float(), V.float()).dtype == torch.float32


def test_key_covariance_is_the_uncentred_second_moment():
    g = gen(3)
    K = torch.randn(4, 10, dtype=f64, generator=g) + 3.0  # a large mean: centring would matter
    C = editing.key_covariance(K)
    torch.testing.assert_close(C, sum(torch.outer(k, k) for k in K.T) / 10)
    torch.testing.assert_close(editing.key_covariance(K, ridge=0.5), C + 0.5 * torch.eye(4, dtype=f64))
    assert torch.linalg.matrix_rank(editing.key_covariance(K[:, :2])) == 2
    assert torch.linalg.eigvalsh(editing.key_covariance(K[:, :2], ridge=1e-3)).min() > 0


def test_validation_errors_are_clear():
    W, C, k, v = setup()
    with pytest.raises(ValueError, match="k_star must be a 1-D tensor of size 6"):
        editing.rome_update(W, C, k[:5], v)
    with pytest.raises(ValueError, match=r"C must have shape \(6, 6\)"):
        editing.rome_update(W, C[:5, :5], k, v)
    with pytest.raises(ValueError, match="positive definite"):
        editing.rome_update(W, -C, k, v)
    with pytest.raises(ValueError, match="ridge must be a finite number >= 0"):
        editing.key_covariance(torch.randn(3, 4), ridge=-1)
    with pytest.raises(ValueError, match=r"V must have shape \(\?, 4\)"):
        editing.associative_memory(torch.randn(3, 4), torch.randn(2, 5))
    with pytest.raises(ValueError, match="at least 2 x 2"):
        editing.p_statistics(torch.ones(1, 1))
    with pytest.raises(ValueError, match="at most d_k = 4 keys"):
        editing.whitened_orthogonal_keys(torch.eye(4, dtype=f64), 5)
    with pytest.raises(ValueError, match="at most d_k = 8 keys"):
        editing.lifelong_editing_curve(d_k=8, d_v=4, n_edits=(4, 16), orthogonal=True)


# --------------------------------------------------------------------------------------
# ROME's rank-one update
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed, d_k, d_v", [(0, 6, 4), (1, 5, 5), (2, 8, 1), (3, 3, 7)])
def test_rome_edit_is_exact_and_rank_one(seed, d_k, d_v):
    W, C, k, v = setup(d_k, d_v, seed)
    W_before = W.clone()
    delta = editing.rome_update(W, C, k, v)
    assert delta.shape == (d_v, d_k) and delta.dtype == f64
    assert torch.equal(W, W_before)  # W is not modified
    assert (editing.rome_edit(W, C, k, v) @ k - v).abs().max() < 1e-10
    singular = torch.linalg.svdvals(delta)
    assert torch.linalg.matrix_rank(delta) == 1 and (singular[1:] < 1e-12 * singular[0]).all()
    # the formula, with an explicit inverse for comparison
    u = torch.linalg.inv(C) @ k
    torch.testing.assert_close(delta, torch.outer(v - W @ k, u) / (u @ k))


def test_rome_update_is_the_least_change_in_the_C_weighted_norm():
    W, C, k, v = setup(6, 4, seed=5, condition=200.0)
    delta = editing.rome_update(W, C, k, v)
    best = editing.covariance_norm(delta, C)
    sqrt_C = editing.sqrtm(C)
    torch.testing.assert_close(best, torch.linalg.matrix_norm(delta @ sqrt_C))
    # every other update with (W + ΔW') k* = v* is ΔW + B with B k* = 0, and is larger
    g = gen(6)
    project_out_k = torch.eye(6, dtype=f64) - torch.outer(k, k) / (k @ k)
    for scale in (1e-3, 0.1, 1.0):
        B = scale * torch.randn(200, 4, 6, dtype=f64, generator=g) @ project_out_k
        alternatives = delta + B
        assert ((W + alternatives) @ k - v).abs().max() < 1e-10  # feasible
        norms = torch.stack([editing.covariance_norm(a, C) for a in alternatives])
        assert (norms > best).all()
    # the minimum-Frobenius update (no C⁻¹) is feasible but costs more in the C-norm ...
    frobenius = torch.outer(v - W @ k, k) / (k @ k)
    assert ((W + frobenius) @ k - v).abs().max() < 1e-10
    assert editing.covariance_norm(frobenius, C) > 1.05 * best
    # ... and is ROME's update when C = I
    torch.testing.assert_close(editing.rome_update(W, torch.eye(6, dtype=f64), k, v), frobenius)
    # optimality (Lagrange): ΔW C = μ k*ᵀ, i.e. ΔW C vanishes on directions orthogonal to k*
    assert (delta @ C @ project_out_k).abs().max() < 1e-10


def test_keys_C_orthogonal_to_k_star_keep_their_outputs():
    W, C, k, v = setup(7, 3, seed=7)
    u = torch.linalg.solve(C, k)
    z = torch.randn(7, 20, dtype=f64, generator=gen(8))
    others = z - torch.outer(k, u @ z) / (u @ k)  # kᵀ C⁻¹ k* = 0
    assert (others.T @ u).abs().max() < 1e-12
    W_new = editing.rome_edit(W, C, k, v)
    assert (W_new @ others - W @ others).abs().max() < 1e-12
    # a generic key does move
    assert (W_new @ z - W @ z).abs().max() > 1e-3


def test_rome_update_keeps_float32_and_stays_exact_to_float32():
    W, C, k, v = setup(6, 4, seed=9)
    delta = editing.rome_update(W.float(), C.float(), k.float(), v.float())
    assert delta.dtype == torch.float32
    assert ((W.float() + delta) @ k.float() - v.float()).abs().max() < 1e-4


# --------------------------------------------------------------------------------------
# Whitening, p(i, j) and Hu et al.'s interference identity
# --------------------------------------------------------------------------------------


def test_interference_coefficients_match_the_definition():
    g = gen(10)
    C = editing.random_covariance(5, 30.0, g)
    K = editing.sample_keys(C, 7, g)
    P = editing.interference_coefficients(C, K)
    C_inv = torch.linalg.inv(C)
    for i in range(7):
        for j in range(7):
            expected = (C_inv @ K[:, i]) @ K[:, j] / ((C_inv @ K[:, i]) @ K[:, i])
            assert abs(P[i, j] - expected) < 1e-10
    torch.testing.assert_close(P.diagonal(), torch.ones(7, dtype=f64))
    assert (P - P.T).abs().max() > 1e-2  # not symmetric
    # p(i, j) = (‖k̃_j‖ / ‖k̃_i‖) · whitened cosine, with k̃ = C^{-1/2} k
    whitened = editing.whiten(C, K)
    norms = whitened.norm(dim=0)
    cosines = editing.whitened_cosines(C, K)
    torch.testing.assert_close(P, norms[None, :] / norms[:, None] * cosines)
    torch.testing.assert_close(cosines, torch.nn.functional.normalize(whitened, dim=0).T
                               @ torch.nn.functional.normalize(whitened, dim=0))


def test_whitened_cosine():
    g = gen(11)
    C = editing.random_covariance(6, 100.0, g)
    k_i, k_j = editing.sample_keys(C, 2, g).T
    value = editing.whitened_cosine(C, k_i, k_j)
    assert isinstance(value, float) and -1 <= value <= 1
    inverse_sqrt = torch.linalg.inv(editing.sqrtm(C))
    expected = torch.nn.functional.cosine_similarity(inverse_sqrt @ k_i, inverse_sqrt @ k_j, dim=0)
    assert abs(value - float(expected)) < 1e-12
    # any whitening A with AᵀA = C⁻¹ gives the same cosine, e.g. A = L⁻¹ with C = L Lᵀ
    L_inv = torch.linalg.inv(torch.linalg.cholesky(C))
    cholesky = torch.nn.functional.cosine_similarity(L_inv @ k_i, L_inv @ k_j, dim=0)
    assert abs(value - float(cholesky)) < 1e-12
    assert abs(value - editing.whitened_cosine(C, k_j, 3 * k_i)) < 1e-12  # symmetric, scale-free
    assert abs(editing.whitened_cosine(C, k_i, -2 * k_i) + 1) < 1e-12
    unwhitened = float(torch.nn.functional.cosine_similarity(k_i, k_j, dim=0))
    assert abs(value - unwhitened) > 1e-2
    torch.testing.assert_close(editing.whitened_cosines(C, torch.stack([k_i, k_j], 1))[0, 1],
                               torch.tensor(value, dtype=f64))


def test_sequential_edits_obey_the_interference_identity():
    """W_n k_j − v_j = Σ_{i>j} p(i, j) (v_i − W_{i−1} k_i), and its truncation after every edit."""
    g = gen(12)
    d_k, d_v, n = 10, 6, 25
    C = editing.random_covariance(d_k, 100.0, g)
    W0 = torch.randn(d_v, d_k, dtype=f64, generator=g)
    K = editing.sample_keys(C, n, g)
    V = torch.randn(d_v, n, dtype=f64, generator=g)
    run = editing.sequential_edits(W0, C, K, V)
    P = editing.interference_coefficients(C, K)
    assert (run["W"] @ K - V - editing.interference_term(P, run["residuals"])).abs().max() < 1e-8
    # the residuals are what each edit corrected, and each edit was exact when made
    W = W0.clone()
    for i in range(n):
        torch.testing.assert_close(run["residuals"][:, i], V[:, i] - W @ K[:, i])
        W = editing.rome_edit(W, C, K[:, i], V[:, i])
        assert (W @ K[:, i] - V[:, i]).abs().max() < 1e-10
        # after edit i the error of edit j ≤ i is the interference of edits j < l ≤ i
        partial = editing.interference_term(P[: i + 1, : i + 1], run["residuals"][:, : i + 1])
        errors = partial.norm(dim=0) / V[:, : i + 1].norm(dim=0)
        assert (run["errors"][i, : i + 1] - errors).abs().max() < 1e-8
    torch.testing.assert_close(W, run["W"])
    assert run["errors"].diagonal().max() < 1e-10
    assert torch.isnan(run["errors"][0, 1:]).all() and not run["recalled"][0, 1:].any()
    assert run["errors"][-1, 0] > 0.1  # generic keys: the first edit has drifted
    torch.testing.assert_close(run["retention"], run["recalled"].sum(1) / torch.arange(1, n + 1, dtype=f64))


@pytest.mark.parametrize("d_k, n", [(16, 16), (64, 64), (64, 32)])
def test_whitened_orthogonal_keys_make_lifelong_editing_lossless(d_k, n):
    g = gen(13)
    sigma = editing.random_covariance(d_k, 100.0, g)
    K0 = editing.sample_keys(sigma, 4 * d_k, g)
    C = editing.key_covariance(K0)
    W0 = editing.associative_memory(K0, torch.randn(8, 4 * d_k, dtype=f64, generator=g))
    K = editing.whitened_orthogonal_keys(C, n, g)
    whitened = editing.whiten(C, K)
    torch.testing.assert_close(whitened.T @ whitened, torch.eye(n, dtype=f64))
    P = editing.interference_coefficients(C, K)
    assert (P - torch.eye(n, dtype=f64)).abs().max() < 1e-10
    run = editing.sequential_edits(W0, C, K, torch.randn(8, n, dtype=f64, generator=g))
    assert torch.nan_to_num(run["errors"]).max() < 1e-8  # every earlier edit exact after every edit
    assert run["recalled"].sum() == n * (n + 1) // 2 and (run["retention"] == 1).all()


def test_p_statistics():
    P = torch.eye(3, dtype=f64)
    P[0, 1], P[0, 2], P[1, 0], P[1, 2], P[2, 0], P[2, 1] = 1, -1, 2, -2, 0, 0
    stats = editing.p_statistics(P)
    assert stats["mean"] == 0 and abs(stats["std"] - math.sqrt(10 / 6)) < 1e-12
    assert abs(stats["kurtosis"] - (34 / 6) / (10 / 6) ** 2) < 1e-12
    gaussian = torch.randn(300, 300, dtype=f64, generator=gen(14))
    stats = editing.p_statistics(gaussian)
    assert abs(stats["mean"]) < 0.01 and abs(stats["std"] - 1) < 0.01 and abs(stats["kurtosis"] - 3) < 0.05
    assert math.isnan(editing.p_statistics(torch.eye(4, dtype=f64))["kurtosis"])


def test_recalled_is_nearest_value_decoding():
    V = torch.tensor([[1.0, 0.0, -1.0], [0.0, 1.0, 0.0]])
    outputs = torch.tensor([[0.9, 0.6, 0.2], [0.1, 0.5, 0.0]])  # o_1 and o_2 are nearer v_0
    assert editing.recalled(outputs, V).tolist() == [True, False, False]
    assert editing.recalled(V, V).all()


def test_random_covariance_and_keys():
    g = gen(15)
    C = editing.random_covariance(8, 100.0, g)
    eigenvalues = torch.linalg.eigvalsh(C)
    assert abs(eigenvalues.max() - 1) < 1e-12 and abs(eigenvalues.min() - 0.01) < 1e-12
    torch.testing.assert_close(editing.sqrtm(C) @ editing.sqrtm(C), C)
    K = editing.sample_keys(C, 20000, g)
    assert (editing.key_covariance(K) - C).abs().max() < 0.03


# --------------------------------------------------------------------------------------
# The headline experiment
# --------------------------------------------------------------------------------------


def test_lifelong_editing_curve_generic_keys_degrade_past_d_k():
    start = time.perf_counter()
    curve = editing.lifelong_editing_curve(d_k=64, d_v=64, n_edits=(16, 32, 64, 128, 256), n_trials=5, seed=0)
    elapsed = time.perf_counter() - start
    assert elapsed < 2.0
    retention, mean_error = curve["retention"], curve["mean_error"]
    assert curve["n_edits"] == [16, 32, 64, 128, 256] and curve["retention_trials"].shape == (5, 5)
    assert all(a >= b for a, b in zip(retention, retention[1:]))
    assert all(a < b for a, b in zip(mean_error, mean_error[1:]))
    assert retention[0] >= 0.98 and retention[1] >= 0.95  # n ≪ d_k: nearly every edit decodes
    assert 0.7 < retention[2] < 0.9  # n = d_k
    assert retention[3] < 0.55 and retention[4] < 0.3  # n > d_k: most earlier edits lost
    assert 0.3 < mean_error[0] < 0.5 and mean_error[4] > 1.0  # but none is exact even at n = 16
    # p(i, j): zero mean, spread ≈ 1/√d_k (set by d_k, not n), Gaussian tails for Gaussian keys
    assert all(abs(m) < 0.005 for m in curve["p_mean"])
    assert all(0.12 < s < 0.16 for s in curve["p_std"])
    assert all(2.7 < k < 3.3 for k in curve["p_kurtosis"])


def test_lifelong_editing_curve_orthogonal_keys_are_lossless():
    curve = editing.lifelong_editing_curve(d_k=64, d_v=64, n_edits=(16, 32, 64), n_trials=3, seed=1,
                                           orthogonal=True)
    assert curve["retention"] == [1.0, 1.0, 1.0]
    assert max(curve["max_error"]) < 1e-8
    assert all(abs(m) < 1e-12 and s < 1e-12 for m, s in zip(curve["p_mean"], curve["p_std"]))
    assert all(math.isnan(k) for k in curve["p_kurtosis"])  # no spread: the kurtosis is undefined


def test_p_spread_shrinks_with_dimension():
    small = editing.lifelong_editing_curve(d_k=16, d_v=16, n_edits=(64,), n_trials=2, seed=2)
    large = editing.lifelong_editing_curve(d_k=128, d_v=16, n_edits=(64,), n_trials=2, seed=2)
    assert small["p_std"][0] > 2 * large["p_std"][0]
    assert small["retention"][0] < large["retention"][0]


def test_the_closed_form_stands_without_a_model():
    """editing is the linear algebra alone: importing it loads no transformer, fact set or ROME
    code (that is course_utils.rome, which builds on it)."""
    code = ("import sys, course_utils.editing; "
            "print(' '.join(sorted(m for m in sys.modules if m.startswith('course_utils.'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["course_utils.editing"]
