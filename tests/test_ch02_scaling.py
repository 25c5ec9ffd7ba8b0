"""course_utils.scaling: Liu, Liu & Gore 2025's scaling laws from superposition.

The paper's loop (the default path) against the fast path (``course_utils._fast.scaling``:
sparse batches, hand-derived gradients), step by step on the same batches.  The two sweeps
at the bottom are the notebook's run on the fast path (about 12 s each on one thread); the
slope windows come from seeds 0-5 (α = 0.25: strong −0.88 … −1.03, weak −0.32 … −0.54,
finite-n theory −0.42) and seeds 0-3 (α = 1: strong −0.97 … −1.24, weak −0.88 … −1.16).
"""

import math

import pytest
import torch

from course_utils import scaling
from course_utils._fast import scaling as fast_scaling
from course_utils.scaling import (
    PowerLawFit,
    evaluate_loss,
    expected_squared_overlap,
    fit_power_law,
    mean_squared_overlap,
    power_law_probability,
    random_mean_squared_overlap,
    represented_fraction,
    sample_batch,
    scaling_loss,
    scaling_sweep,
    signed_weight_decay_,
    train_scaling_models,
    weak_superposition_loss,
)

pytestmark = pytest.mark.usefixtures("one_thread")


# --------------------------------------------------------------------------------------
# Geometry
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("m", [4, 16, 64])
def test_random_unit_vectors_overlap_one_over_m(m):
    overlap = random_mean_squared_overlap(300, m, n_instances=4, generator=torch.Generator().manual_seed(m))
    assert overlap.shape == (4,)
    assert expected_squared_overlap(m) == 1 / m
    torch.testing.assert_close(overlap.mean().item(), 1 / m, rtol=0.05, atol=0)
    # 1/m, not 1/m² or 1/√m: the neighbouring dimensions are far outside the tolerance.
    assert abs(overlap.mean().item() - 1 / (2 * m)) > 0.3 / m


def test_mean_squared_overlap_exact_cases():
    eye = torch.eye(3)[None]  # three orthonormal features
    assert mean_squared_overlap(eye).item() == 0.0
    same = torch.ones(1, 2, 4) * torch.tensor([1.0, 2.0, 3.0, 4.0])  # parallel columns, any norm
    torch.testing.assert_close(mean_squared_overlap(same), torch.ones(1))
    # Two unit features at 60° and one tiny one, dropped by min_norm.
    W = torch.tensor([[[1.0, 0.5, 0.01], [0.0, math.sqrt(3) / 2, 0.0]]])
    torch.testing.assert_close(mean_squared_overlap(W, min_norm=0.5), torch.tensor([0.25]))
    assert mean_squared_overlap(W).item() > 0.25  # the tiny one, parallel to feature 0, counts
    assert torch.isnan(mean_squared_overlap(W, min_norm=2.0)).all()
    with pytest.raises(ValueError, match="instances, hidden, features"):
        mean_squared_overlap(torch.ones(3, 3))


# --------------------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------------------


def test_power_law_probability_is_normalised_zipf():
    p = power_law_probability(1000, 0.5)
    assert p.shape == (1000,) and p.dtype == torch.float32
    torch.testing.assert_close(p.sum(), torch.tensor(1.0))
    torch.testing.assert_close(p[0] / p[1], torch.tensor(2.0**1.5))
    torch.testing.assert_close(p[9] / p[99], torch.tensor(10.0**1.5))
    assert (p[1:] < p[:-1]).all()
    torch.testing.assert_close(power_law_probability(4, 0.0), torch.tensor([12, 6, 4, 3]) / 25.0)


def test_batches_have_the_paper_distribution():
    p = power_law_probability(64, 0.25)
    x = sample_batch(p, 100_000, torch.Generator().manual_seed(0))
    active = x > 0
    torch.testing.assert_close(active.float().mean(0), p, atol=4e-3, rtol=0.03)
    torch.testing.assert_close(active.sum(1).float().mean(), torch.tensor(1.0), atol=0.01, rtol=0)
    values = x[active]
    assert values.max() <= 2.0
    torch.testing.assert_close(values.mean(), torch.tensor(1.0), atol=0.01, rtol=0)  # U(0, 2)
    torch.testing.assert_close(values.square().mean(), torch.tensor(4 / 3), atol=0.02, rtol=0)
    # The sparse sampler used in training draws the same distribution.
    sampler = fast_scaling.SparseBatches(p, 50_000, seed=0)
    rows, features, vals = sampler()
    counts = torch.bincount(features, minlength=64).float() / 50_000
    torch.testing.assert_close(counts, p, atol=5e-3, rtol=0.05)
    torch.testing.assert_close(vals.mean(), torch.tensor(1.0), atol=0.02, rtol=0)
    assert len(set(zip(rows.tolist(), features.tolist()))) == len(rows)  # no entry twice


# --------------------------------------------------------------------------------------
# Model, gradients, weight decay
# --------------------------------------------------------------------------------------


def test_fused_gradients_equal_autograd():
    n, m, batch = 40, 6, 64
    g = torch.Generator().manual_seed(1)
    W, b = scaling.init_parameters(n, m, 3, g)
    b[1] -= 1.0  # many clipped outputs, including active entries the model outputs 0 for
    p = power_law_probability(n, 0.0) * 4  # about four active features per sample
    x = sample_batch(p, batch, g)
    rows, features = x.nonzero(as_tuple=True)
    loss, grad_W, grad_b = fast_scaling.loss_and_grads(W.clone(), b.clone(), rows, features, x[rows, features],
                                                       batch, with_loss=True)
    W_, b_ = W.clone().requires_grad_(), b.clone().requires_grad_()
    reference = scaling_loss(W_, b_, x)
    reference.sum().backward()
    torch.testing.assert_close(loss, reference.detach())
    torch.testing.assert_close(grad_W, W_.grad)
    torch.testing.assert_close(grad_b, b_.grad)
    clipped = (torch.relu(torch.einsum("ihf,ihg,bg->ibf", W, W, x) + b[:, None]) == 0) & (x > 0)
    assert clipped.any()  # the case the fused step treats specially is exercised


def test_signed_weight_decay():
    W = torch.randn(3, 5, 7, generator=torch.Generator().manual_seed(0))
    W[2, :, 0] = 0.0
    gamma, lr = torch.tensor([0.5, 0.0, -0.8]), 0.1
    new = signed_weight_decay_(W.clone(), gamma, lr)
    torch.testing.assert_close(new[0], W[0] * (1 - 0.05))  # plain decay
    torch.testing.assert_close(new[1], W[1])
    norms, new_norms = W[2].norm(dim=0), new[2].norm(dim=0)
    torch.testing.assert_close(new_norms[1:], norms[1:] + 0.08 * (1 - norms[1:]))  # 8% of the way to one
    cosine = (new[2, :, 1:] * W[2, :, 1:]).sum(0) / (new_norms[1:] * norms[1:])
    torch.testing.assert_close(cosine, torch.ones(6))  # directions kept
    assert (new[2, :, 0] == 0).all()
    with pytest.raises(ValueError, match="2 values for 3 instances"):
        signed_weight_decay_(W, torch.tensor([1.0, 1.0]), lr)


def test_weak_superposition_loss_is_the_loss_of_the_top_m_model():
    """Store the m most frequent features on orthonormal directions, predict the rest by
    their mean (b_i = p_i): the model's loss is the closed form."""
    n, m = 48, 6
    p = power_law_probability(n, 0.5)
    W = torch.zeros(1, m, n)
    W[0, torch.arange(m), torch.arange(m)] = 1.0
    b = torch.where(torch.arange(n) < m, torch.zeros(n), p)[None]
    measured = evaluate_loss(W, b, p, n_samples=400_000, seed=0)
    theory = weak_superposition_loss(p, m)
    torch.testing.assert_close(measured, theory, rtol=0.02, atol=0)
    brute = sum(p[i] * (4 / 3 - p[i]) for i in range(m, n)) / n
    torch.testing.assert_close(theory, brute.reshape(1), rtol=1e-5, atol=0)
    tail = weak_superposition_loss(p, [0, m, n])
    assert tail[0] > tail[1] > tail[2] == 0


# --------------------------------------------------------------------------------------
# Fits and training
# --------------------------------------------------------------------------------------


def test_fit_power_law_recovers_exact_laws():
    m = torch.tensor([8.0, 11, 16, 23, 32], dtype=torch.float64)
    fit = fit_power_law(m, 0.03 * m**-0.75)
    assert isinstance(fit, PowerLawFit)
    assert fit.slope == pytest.approx(-0.75, abs=1e-9) and fit.prefactor == pytest.approx(0.03, rel=1e-9)
    torch.testing.assert_close(fit(m), 0.03 * m**-0.75)
    assert fit_power_law([1, 10, 100], [5.0, 0.5, 0.05]).slope == pytest.approx(-1.0)


@pytest.mark.parametrize("fast", [False, True])
def test_training_lowers_the_loss_and_keeps_shapes(fast):
    params, history, logged = train_scaling_models(n_features=64, n_hidden=(4, 8), weight_decay=(-1.0, 0.1, 0.0),
                                                   steps=200, batch_size=128, progress=False, fast=fast)
    assert [tuple(W.shape) for W, _ in params] == [(3, 4, 64), (3, 8, 64)]
    assert [tuple(b.shape) for _, b in params] == [(3, 64), (3, 64)]
    assert history.shape == (len(logged), 3, 2) and logged[0] == 0 and logged[-1] == 199
    assert (history[-1] < 0.5 * history[0]).all()
    for W, _ in params:  # γ < 0 keeps every feature represented; γ = 0.1 drops most of the 64
        fractions = represented_fraction(W)
        assert fractions[0] == 1.0 and fractions[1] < 0.5, fractions


def test_lr_schedule_warms_up_then_decays_to_five_percent():
    values = [scaling.lr_multiplier(step, 1000) for step in range(1000)]
    assert values[0] == pytest.approx(0.01) and max(values) == pytest.approx(1.0)
    assert values.index(max(values)) == 99
    assert values[-1] == pytest.approx(0.05)


# --------------------------------------------------------------------------------------
# Argument checks
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("kwargs, message", [
    (dict(n_hidden=(8, 600)), "at most n_features=512"),
    (dict(n_hidden=()), "at least one hidden size"),
    (dict(n_hidden=(0,)), "n_hidden must be a positive integer"),
    (dict(weight_decay=()), "weight_decay must be a non-empty"),
    (dict(weight_decay=(float("nan"),)), "weight_decay must be a non-empty list of finite"),
    (dict(lr=0.5, weight_decay=(-2.0,)), "lr · |weight_decay| must be below 1"),
    (dict(lr=-1.0), "lr must be a positive number"),
    (dict(steps=0), "steps must be a positive integer"),
    (dict(batch_size=2.5), "batch_size must be a positive integer"),
    (dict(alpha=float("inf")), "alpha must be a finite number"),
    (dict(warmup=1.0), "warmup is a fraction"),
])
def test_sweep_arguments_are_checked(kwargs, message):
    with pytest.raises(ValueError, match=message.replace("|", r"\|").replace("·", ".")):
        train_scaling_models(progress=False, **kwargs)


def test_other_arguments_are_checked():
    with pytest.raises(ValueError, match="n_features must be a positive integer"):
        power_law_probability(0, 0.5)
    with pytest.raises(ValueError, match="alpha must be a finite number"):
        power_law_probability(10, float("nan"))
    with pytest.raises(ValueError, match=r"must lie in \(0, 1\]"):
        sample_batch(torch.tensor([0.5, 1.5]), 4)
    with pytest.raises(ValueError, match="1-D tensor"):
        sample_batch(torch.ones(2, 3) * 0.1, 4)
    with pytest.raises(ValueError, match="same length"):
        fit_power_law([1, 2, 3], [1.0, 2.0])
    with pytest.raises(ValueError, match="finite and positive"):
        fit_power_law([1, 2], [1.0, 0.0])
    with pytest.raises(ValueError, match="two distinct"):
        fit_power_law([2, 2], [1.0, 0.5])
    with pytest.raises(ValueError, match=r"integers in \[0, 4\]"):
        weak_superposition_loss(power_law_probability(4, 0.0), 5)
    with pytest.raises(ValueError, match="n_dims must be a positive integer"):
        random_mean_squared_overlap(10, 0)


# --------------------------------------------------------------------------------------
# The paper's result, at the notebook's size
# --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sweep():
    """The notebook's run, once for the module (module fixtures set up before ``one_thread``)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return scaling_sweep(progress=False, fast=True)
    finally:
        torch.set_num_threads(threads)


def test_strong_superposition_loss_scales_as_one_over_m(sweep):
    assert sweep.weight_decay == [-1.0, 0.1] and sweep.n_hidden == [8, 11, 16, 23, 32]
    strong = 0
    assert (sweep.represented[strong] > 0.99).all()  # every feature represented
    assert -1.3 < sweep.slopes[strong] < -0.7, sweep.summary()
    # ... because the represented directions overlap like random ones: ⟨(Ŵ_i·Ŵ_j)²⟩ ≈ 1/m.
    ratio = sweep.overlap[strong] * torch.tensor(sweep.n_hidden)
    assert ((ratio > 0.8) & (ratio < 1.8)).all(), ratio


def test_weak_superposition_keeps_about_m_features_and_scales_like_the_tail(sweep):
    weak, strong = 1, 0
    per_m = sweep.represented[weak] * sweep.n_features / torch.tensor(sweep.n_hidden)
    assert 0.5 < per_m.mean() < 1.6 and (per_m < 2.0).all(), per_m  # about m features stored
    assert -0.75 < sweep.slopes[weak] < -0.2, sweep.summary()
    assert abs(sweep.slopes[weak] - sweep.weak_theory_slope) < 0.2, sweep.summary()
    assert sweep.slopes[weak] - sweep.slopes[strong] > 0.25  # strong superposition scales faster
    assert sweep.weak_theory_slope == pytest.approx(-0.42, abs=0.01)


def test_at_alpha_one_both_regimes_scale_as_one_over_m():
    result = scaling_sweep(alpha=1.0, progress=False, fast=True)
    strong, weak = result.slopes
    assert -1.35 < strong < -0.7 and -1.35 < weak < -0.7, result.summary()
    assert abs(strong - weak) < 0.35, result.summary()
    assert result.weak_theory_slope == pytest.approx(-1.0, abs=0.03)


def test_the_plain_loop_and_the_fast_trainer_take_the_same_steps():
    """train_scaling_model (autograd, the chapter's exercise) against train_scaling_models'
    fast path (sparse analytic gradients) on the same batches (sampler='torch'), with a decay
    passed in."""
    calls = []

    def decay(W, gamma, lr):
        calls.append(lr)
        return scaling.signed_weight_decay_(W, gamma, lr)

    gammas = torch.tensor([-1.0, 0.3])
    W, b = scaling.init_parameters(64, 6, 2, torch.Generator().manual_seed(0))
    W.requires_grad_(), b.requires_grad_()
    plain = scaling.train_scaling_model(W, b, scaling.power_law_probability(64, 0.5), gammas, steps=80,
                                        batch_size=128, progress=False)
    params, history, _ = scaling.train_scaling_models(64, [6], gammas.tolist(), 0.5, steps=80, batch_size=128,
                                                      sampler="torch", decay=decay, log_every=1, progress=False,
                                                      fast=True)
    assert len(calls) == 80
    torch.testing.assert_close(history[:, :, 0], plain, atol=1e-7, rtol=1e-5)
    torch.testing.assert_close(params[0][0], W.detach(), atol=1e-6, rtol=1e-5)
    with pytest.raises(ValueError, match="sampler must be 'numpy' or 'torch'"):
        scaling.train_scaling_models(64, [6], [0.1], steps=2, sampler="numpi", progress=False, fast=True)
    with pytest.raises(ValueError, match="pass fast=True"):
        scaling.train_scaling_models(64, [6], [0.1], steps=2, sampler="numpy", progress=False)


def test_the_plain_sweep_is_the_paper_loop_per_width_and_agrees_with_the_fast_path():
    """The default train_scaling_models is train_scaling_model run for each m from the
    sweep's initialisation and data stream; the fast path on that stream takes the same steps."""
    gammas, steps, log_every = [-1.0, 0.1], 60, 7
    params, history, logged = train_scaling_models(48, (4, 6), gammas, 0.5, steps=steps, batch_size=96, warmup=0.2,
                                                   seed=3, log_every=log_every, progress=False)
    assert logged == list(range(0, steps, log_every)) + [steps - 1] and history.shape == (len(logged), 2, 2)
    generator = torch.Generator().manual_seed(3)
    for k, m in enumerate((4, 6)):
        W, b = scaling.init_parameters(48, m, 2, generator)
        W.requires_grad_(), b.requires_grad_()
        losses = scaling.train_scaling_model(W, b, power_law_probability(48, 0.5), torch.tensor(gammas), steps=steps,
                                             batch_size=96, seed=3, warmup=0.2, progress=False)
        torch.testing.assert_close(history[:, :, k], losses[logged], atol=1e-7, rtol=1e-5)
        torch.testing.assert_close(params[k][0], W.detach(), atol=1e-6, rtol=1e-5)
        torch.testing.assert_close(params[k][1], b.detach(), atol=1e-6, rtol=1e-5)
    assert not any(t.requires_grad for pair in params for t in pair)
    fast_params, fast_history, fast_logged = train_scaling_models(
        48, (4, 6), gammas, 0.5, steps=steps, batch_size=96, warmup=0.2, seed=3, log_every=log_every,
        progress=False, fast=True, sampler="torch")
    assert fast_logged == logged
    torch.testing.assert_close(fast_history, history, atol=1e-7, rtol=1e-5)
    for (W, b), (W_fast, b_fast) in zip(params, fast_params):
        torch.testing.assert_close(W_fast, W, atol=1e-6, rtol=1e-5)
        torch.testing.assert_close(b_fast, b, atol=1e-6, rtol=1e-5)


def test_scaling_sweep_passes_the_switch_on():
    sizes = dict(n_features=32, n_hidden=(4,), steps=20, batch_size=32)
    for fast in (False, True):
        result = scaling_sweep(eval_samples=256, progress=False, fast=fast, **sizes)
        _, history, _ = train_scaling_models(progress=False, fast=fast, **sizes)
        assert torch.equal(result.history, history), fast
    plain = scaling_sweep(eval_samples=256, progress=False, **sizes)
    assert not torch.equal(plain.history, result.history)  # another stream: the plain loop draws with torch
