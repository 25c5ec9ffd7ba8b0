"""Chapter 03 results (Lecomte et al. 2023), asserted on the models that
`solutions/03_incidental_polysemanticity.ipynb` trained (see notebook_results.py): 16 seeds of
n=32, m=64 with and without L1, trained by the learner's loop; 32 seeds per width m = 64 … 512
under AdamW and gradient descent (the fast path, shown equal to the learner's loop on a small
case); one sparsification run (n=32, m=128, λ=0.01, GD); 16 seeds each of Bernoulli and
Gaussian hidden noise (n=8, m=16, no L1); and one neuron reading four tokens under
cross-entropy and squared error (Towards Monosemanticity's argument)."""

import math

import pytest
import torch

from course_utils import polysemanticity as poly
from notebook_results import NotebookResults

WIDTHS = [64, 128, 256, 512]

RESULTS = NotebookResults(
    "03_incidental_polysemanticity",
    with_l1_W="W_l1.cpu()",
    without_l1_W="W_no_l1.cpu()",
    fast_gap="fast_gap",
    ce_activations="ce_run.activations",
    ce_loss="ce_run.loss",
    mse_activations="mse_run.activations",
    mse_loss="mse_run.loss",
    implementations="[checks.is_reference(f) for f in (loss_fn, train_fn, count_fn, predict_fn, win_rate_fn, "
                    "bound_fn)]",
    widths="widths",
    adamw_sweep="adamw_sweep",
    gd_sweep="gd_sweep",
    flow_settings="(flow.n, flow.m, flow.l1, flow.optimizer)",
    flow_time="flow.time",
    flow_surviving="flow.surviving_history.cpu()",
    flow_l1="flow.l1_history.cpu()",
    noise="{kind: {'W': run.W.cpu(), 'fourth_norm_history': run.fourth_norm_history.cpu(), "
          "'loss_history': run.loss_history.cpu()} for kind, run in noise_runs.items()}",
)
pytestmark = pytest.mark.xdist_group(RESULTS.notebook)


def test_l1_makes_the_basis_privileged_and_without_it_nothing_aligns():
    results = RESULTS.get()
    with_l1, without = results["with_l1_W"], results["without_l1_W"]
    basis, basis_without = poly.privileged_basis(with_l1), poly.privileged_basis(without)
    assert basis["one_active_weight"] >= 0.98 and basis["others_near_zero"] >= 0.99, basis
    assert basis_without["one_active_weight"] <= 0.02 and basis_without["others_near_zero"] <= 0.5, basis_without
    # both reconstruct the basis vectors
    assert float(poly.autoencoder_loss(with_l1, 0.0).max()) < 1e-2
    assert float(poly.autoencoder_loss(without, 0.0).max()) < 1e-2
    # incidental polysemanticity with twice as many neurons as features, only opposite signs
    assert float(poly.polysemantic_neurons(with_l1).float().mean()) > 2
    signs = poly.shared_neuron_signs(with_l1)
    assert signs["same_sign"] == 0 and signs["opposite_sign"] >= 30, signs


def _sweeps():
    results = RESULTS.get()
    assert results["widths"] == WIDTHS, results["widths"]
    for sweep in (results["adamw_sweep"], results["gd_sweep"]):
        assert sweep.n == 32 and sweep.widths == WIDTHS, (sweep.n, sweep.widths)
    return results["adamw_sweep"], results["gd_sweep"]


@pytest.mark.parametrize("which", ["adamw", "gd"])
def test_polysemantic_count_follows_the_birthday_prediction(which):
    adamw_sweep, gd_sweep = _sweeps()
    sweep = adamw_sweep if which == "adamw" else gd_sweep
    ratio = sweep.mean / sweep.prediction
    assert ((ratio > 0.75) & (ratio < 1.35)).all(), (which, ratio)
    assert -1.2 < sweep.slope() < -0.75, (which, sweep.slope())
    assert all(p["one_active_weight"] >= 0.99 for p in sweep.privileged), sweep.privileged
    # the count really falls with m: each doubling of m at least a quarter fewer
    assert (sweep.mean[1:] < 0.8 * sweep.mean[:-1]).all(), sweep.mean


def test_the_exact_prediction_beats_the_leading_order_at_m_equal_2n():
    """At m = 2n, n²/(4m) = 4 overestimates; the exact expectation 3.08 is closer (both sweeps)."""
    for sweep in _sweeps():
        mean = float(sweep.mean[0])
        assert abs(mean - float(sweep.prediction[0])) < abs(mean - float(sweep.leading_order[0])) + 0.5


def test_winner_take_all_gradient_descent_follows_the_initial_argmax_adam_much_less():
    adamw_sweep, gd_sweep = _sweeps()
    chance = torch.tensor([1 / m for m in WIDTHS], dtype=torch.float64)
    gd = gd_sweep.win_rates.mean(dim=1).double()
    adam = adamw_sweep.win_rates.mean(dim=1).double()
    assert (gd > 0.45).all() and (gd > 30 * chance).all(), gd
    assert (adam < 0.25).all() and (adam > 10 * chance).all(), adam  # the "8 to 25 percent" regime
    assert (gd > 2.5 * adam).all(), (gd, adam)


def test_sparsification_has_the_theory_shape_at_about_two_thirds_of_its_rate():
    results = RESULTS.get()
    assert results["flow_settings"] == (32, 128, 0.01, "gd"), results["flow_settings"]
    time = results["flow_time"]
    surviving = results["flow_surviving"].mean(dim=1)
    l1_norm = results["flow_l1"].mean(dim=1).double()
    assert float(surviving[0]) > 90 and float(surviving[-1]) < 2, (surviving[0], surviving[-1])
    assert (surviving[1:] <= surviving[:-1] + 0.5).all()  # it only shrinks
    early = time <= 50
    t, inverse = time[early], 1 / l1_norm[early]
    rate = float(((t - t.mean()) * (inverse - inverse.mean())).sum() / (t - t.mean()).square().sum())
    assert 0.5 * 0.01 < rate < 0.85 * 0.01, rate
    # 1/ℓ1 is close to linear in t over the sparsifying phase
    fit = inverse.mean() + rate * (t - t.mean())
    assert float((inverse - fit).abs().max()) < 0.06
    # the measured m' lags the prediction but is within a factor 3.5 of it until the floor
    predicted = poly.predicted_surviving(128, 0.01, time)
    lag = (surviving.double() / predicted)[time <= 75]
    assert (lag > 0.7).all() and (lag < 3.5).all(), lag


def test_bernoulli_noise_sparsifies_gaussian_noise_does_not():
    runs = RESULTS.get()["noise"]
    bernoulli = runs["bernoulli"]["fourth_norm_history"].mean(dim=1)
    gaussian = runs["gaussian"]["fourth_norm_history"].mean(dim=1)
    assert float(bernoulli[0]) < 0.3 and float(gaussian[0]) < 0.3
    assert float(bernoulli[-1]) > 0.65 and float(bernoulli[-1]) > 3 * float(bernoulli[0]), bernoulli[-1]
    assert float(gaussian[-1]) < 0.25, gaussian[-1]
    # rows keep norm ≈ 1 under both noises: the difference is concentration, not shrinkage
    for run in runs.values():
        norms = run["W"].square().sum(-1).sqrt()
        assert ((norms - 1).abs() < 0.1).all()
    assert math.isfinite(float(runs["bernoulli"]["loss_history"][-1].mean()))


def test_the_fast_path_takes_the_learners_steps():
    assert RESULTS.get()["fast_gap"] < 1e-5


def test_cross_entropy_makes_one_neuron_fire_on_two_tokens_and_squared_error_does_not_care():
    results = RESULTS.get()
    h, loss = results["ce_activations"], results["ce_loss"]
    firing = (h > 1e-3).sum(dim=-1)
    two = firing == 2
    assert int(two.sum()) >= 8, firing  # most seeds: the polysemantic neuron
    assert ((loss[two] - 0.5 * math.log(2)).abs() < 0.005).all(), loss[two]
    for k in torch.nonzero(two).flatten().tolist():
        on = h[k][h[k] > 1e-3]
        assert on.max() > 2 * on.min(), h[k]  # at different strengths: three groups, ½ ln 2
        assert math.isclose(poly.ce_lower_bound(h[k]), 0.5 * math.log(2))
    # the monosemantic seeds sit at (3/4) ln 3, above the polysemantic ln 2 and ½ ln 2
    assert ((loss[firing == 1] - 0.75 * math.log(3)).abs() < 0.005).all(), loss[firing == 1]
    mse_alive = (results["mse_activations"] > 1e-3).any(dim=-1)
    mse = results["mse_loss"]
    assert int(mse_alive.sum()) >= 12 and ((mse[mse_alive] - 0.5).abs() < 1e-3).all(), mse


def test_the_solved_chapter_ran_the_learners_code_everywhere():
    assert RESULTS.get()["implementations"] == [False] * 6
