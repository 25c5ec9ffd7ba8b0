"""Chapter 04 results asserted with the notebook's settings and seeds (one thread).

Elhage et al. 2022 (privileged basis, abs(x), asymmetric superposition), Hänni, Mendel,
Vaintrob et al. 2024 (U-AND), Braun et al. 2025 and Bhagat et al. 2025 (compressed
computation and its mixing matrix).  The trained models are built once per module; about a
minute and a half in all."""

import math

import pytest
import torch

from course_utils import computation as comp
from course_utils.toy_models import evaluate_loss, importance_decay, select_best, train

DENSITIES = torch.tensor([1.0, 0.3, 0.1, 0.03, 0.01])
SWEEP_S = torch.tensor([0.0, 0.5, 0.8, 0.9, 0.97, 0.99])


@pytest.fixture(scope="module")
def privileged(single_thread):
    seeds = 2
    model = comp.NeuronModel(10, 5, n_instances=len(DENSITIES) * seeds,
                             feature_probability=DENSITIES.repeat_interleave(seeds)[:, None],
                             importance=importance_decay(10, 0.75), device="cpu",
                             generator=torch.Generator().manual_seed(0))
    train(model, steps=10_000, batch_size=256, progress=False)
    return model.W.detach()[select_best(model, evaluate_loss(model), seeds)]


@pytest.fixture(scope="module")
def abs_sweep(single_thread):
    model = comp.AbsModel(100, 40, n_instances=len(SWEEP_S), feature_probability=(1 - SWEEP_S)[:, None],
                          importance=importance_decay(100, 0.8), init_scale=0.1, device="cpu",
                          generator=torch.Generator().manual_seed(0))
    train(model, steps=5_000, batch_size=256, lr=3e-3, schedule="cosine", progress=False)
    return model


@pytest.fixture(scope="module")
def residual(single_thread):
    """L/p of the trained model and of the naive baseline, per embedding."""
    results = {}
    for embedding in ("random", "orthonormal"):
        model = comp.ResidualMLP(embedding=embedding, device="cpu", generator=torch.Generator().manual_seed(0))
        train(model, steps=2_000, batch_size=2048, lr=3e-3, schedule="cosine", weight_decay=0.01, progress=False)
        x = model.generate_batch(100_000, torch.Generator().manual_seed(2))
        with torch.no_grad():
            results[embedding] = (float(model.loss(x)) / 0.01, float(model.naive_baseline().loss(x)) / 0.01)
    return results


def test_privileged_basis_dense_features_get_monosemantic_neurons_sparse_ones_polysemantic(privileged):
    share = comp.neuron_monosemanticity(privileged)
    represented = (privileged.norm(dim=1) > 0.5).sum(dim=1)
    monosemantic = (share > 0.9).sum(dim=1)
    # dense: the 5 most important features, one neuron each
    assert (share[0] > 0.98).all() and int(represented[0]) == 5, (share[0], represented[0])
    assert set(privileged[0].abs().argmax(dim=1).tolist()) == {0, 1, 2, 3, 4}
    # sparse: (nearly) all 10 features stored, in polysemantic neurons
    assert int(represented[-1]) >= 9 and int(monosemantic[-1]) <= 1, (share[-1], represented[-1])
    assert int((share[-1] < 0.6).sum()) >= 3, share[-1]
    # more features are stored, in fewer monosemantic neurons, as density falls
    assert (represented[1:] >= represented[:-1]).all(), represented
    assert int(monosemantic[2:].sum()) < int(monosemantic[0]) * 3, monosemantic


def test_abs_with_two_neurons_per_feature_is_solved_exactly(single_thread):
    """n=3, m=6, dense: the exact solution |x| = ReLU(x) + ReLU(−x), one neuron for each sign."""
    model = comp.AbsModel(3, 6, n_instances=4, device="cpu", generator=torch.Generator().manual_seed(0))
    train(model, steps=10_000, progress=False)
    losses = model.loss(model.generate_batch(10_000, torch.Generator().manual_seed(5))).detach()
    best = int(losses.argmin())
    assert float(losses[best]) < 1e-6 and int((losses < 1e-6).sum()) >= 3, losses
    W1 = model.W1.detach()[best]  # (hidden, features)
    for feature in range(3):
        on = W1[:, feature][W1[:, feature].abs() > 0.5]
        assert on.numel() == 2 and float(on[0] * on[1]) < 0, W1  # one ReLU(x_i) and one ReLU(-x_i) neuron
    assert int((W1.abs() > 0.5).sum(dim=1).max()) == 1  # each neuron reads one feature


def test_abs_sparsity_sweep_moves_from_monosemantic_to_superposed_neurons(abs_sweep):
    """Measured: 38, 40, 38, 31, 1, 0 monosemantic neurons of 40 for S = 0 … 0.99; loss / (outputs 0)
    ≤ 0.032 up to S = 0.97, 0.31 at S = 0.99 (undertrained); loss / (no superposition) 1.6-2.8."""
    share = comp.neuron_monosemanticity(abs_sweep.W1.detach())
    monosemantic = (share > 0.9).sum(dim=1)
    assert int(monosemantic[:3].min()) >= 35 and int(monosemantic[3]) >= 25, monosemantic  # dense: one feature each
    assert int(monosemantic[4:].max()) <= 4, monosemantic  # sparse: superposed
    assert float(share[4:].mean()) < 0.75 < float(share[:4].mean()), share.mean(dim=1)
    # the superposed S = 0.97 model still computes |x|: nearly all of the zero-output loss removed
    x = abs_sweep.generate_batch(20_000, torch.Generator().manual_seed(3))
    with torch.no_grad():
        loss = abs_sweep.loss(x)
    outputs_zero = (abs_sweep.importance * abs_sweep.feature_probability / 3).mean(dim=1)
    no_superposition = comp.abs_monosemantic_loss(abs_sweep.importance, abs_sweep.feature_probability, 40)
    assert (loss[:5] / outputs_zero[:5] < 0.06).all(), loss / outputs_zero
    assert (loss[:5] / no_superposition[:5] < 4).all(), loss / no_superposition  # within a small factor


def test_trained_abs_models_show_the_asymmetric_superposition_motif(abs_sweep):
    W1, W2, b = (t.detach() for t in (abs_sweep.W1, abs_sweep.W2, abs_sweep.b))
    motifs = {round(float(S), 2): comp.asymmetric_motifs(W1[i], W2[i], b[i]) for i, S in enumerate(SWEEP_S)}
    counts = {S: len(found) for S, found in motifs.items()}
    assert counts[0.97] >= 3, counts  # where the neurons turn polysemantic
    assert counts[0.0] == counts[0.5] == counts[0.8] == 0, counts  # monosemantic models have nothing to manage
    strongest = max(motifs[0.97], key=lambda motif: motif.interference)
    assert strongest.interference > 1.0 and strongest.input_ratio > 2, strongest
    for S, found in motifs.items():
        i = int((SWEEP_S - S).abs().argmin())
        for motif in found:
            # the mechanism, recomputed from the weights: lopsided interference, then inhibited
            assert motif.input_ratio >= 1.5 and motif.output_ratio >= 1.5
            assert motif.interference >= 0.25 and motif.total <= 0 and motif.inhibitors
            assert motif.reverse_interference < motif.interference
            sign = torch.sign(W1[i, motif.neuron, motif.strong])
            pre = W2[i, motif.weak] @ torch.relu(W1[i, :, motif.strong] * sign) + b[i, motif.weak]
            assert abs(float(pre) - motif.total) < 1e-5


def test_u_and_error_laws_hold_on_the_notebooks_construction():
    m, d, p = 200, 1_000, 0.1
    W = comp.u_and_wiring(m, d, p, torch.Generator().manual_seed(0))
    pairs = torch.triu(torch.ones(m, m, dtype=torch.bool), diagonal=1)
    coverage = comp.pair_coverage(W)[pairs].float()
    assert abs(float(coverage.mean()) - d * p * p) < 0.3 and comp.uncovered_fraction(W) == 0.0
    for l in range(2, 9):
        got = comp.measure_u_and_readoffs(W, l, batch=256, generator=torch.Generator().manual_seed(l))
        law = comp.predicted_u_and_readoffs(p, l)
        exact = comp.predicted_u_and_readoffs(p, l, exact=True)
        assert abs(got["both"] - law["both"]) < 0.02 and abs(got["one"] - law["one"]) < 0.02, (l, got, law)
        assert abs(got["none"] - exact["none"]) < 0.1 * exact["none"] + 0.002, (l, got, exact)
        if l <= 4:  # first order is good while l p is small
            assert abs(got["none"] - law["none"]) < 0.15 * law["none"] + 0.002, (l, got, law)
    assert got["none"] < 0.9 * law["none"]  # at l = 8 the first-order law overestimates


def test_u_and_computes_thousands_of_ands_and_fails_when_d_p2_is_small():
    m, d = 200, 1_000
    results = {}
    for p in (0.02, 0.1):
        W = comp.u_and_wiring(m, d, p, torch.Generator().manual_seed(1))
        results[p] = (comp.uncovered_fraction(W), comp.u_and_accuracy(W, 3, batch=128, generator=torch.Generator().manual_seed(2)))
    assert math.comb(m, 2) > 19 * d  # 19,900 ANDs from 1,000 neurons
    assert results[0.1][0] < 1e-3 and results[0.1][1] > 0.99, results  # e^(−10) = 4.5e-5 of pairs uncovered
    assert abs(results[0.02][0] - math.exp(-d * 0.02 ** 2)) < 0.03 and results[0.02][1] < 0.5, results


def test_compressed_computation_beats_naive_only_through_the_mixing_matrix(residual):
    """Braun et al.'s setup (AdamW 0.01, lr 3e-3 cosine, batch 2048), 2,000 steps.  Measured:
    L/p 0.067 with a random embedding (naive baseline on it 0.168, 1/12 without mixing), 0.084
    with an orthonormal one."""
    trained, naive = residual["random"]
    assert trained < 0.075 and trained < 0.5 * naive, residual  # beats 1/12 and its own naive baseline
    trained, naive = residual["orthonormal"]
    assert abs(trained - 1 / 12) < 0.006 and abs(naive - 1 / 12) < 0.004, residual  # no advantage left
