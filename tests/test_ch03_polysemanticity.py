"""course_utils.polysemanticity: Lecomte et al. 2023's incidental polysemanticity.

The tied ReLU autoencoder y = ReLU(W Wᵀ x), the fast path's closed-form gradient (against
autograd) and trainer (against the plain autograd loop), the measures on hand-built matrices
with known answers, the collision prediction (against its simulation), and short training
runs (a few hundred steps of n = 4 … 6 features).
"""

from __future__ import annotations

import math

import pytest
import torch

from course_utils import polysemanticity as poly
from course_utils._fast.polysemanticity import loss_and_grad
from course_utils.polysemanticity import (
    active_weights,
    autoencoder_loss,
    collision_sweep,
    expected_collisions,
    features_per_neuron,
    forward,
    fourth_norm,
    initial_argmax_win_rate,
    polysemantic_neurons,
    predicted_polysemantic,
    predicted_surviving,
    privileged_basis,
    shared_neuron_signs,
    simulate_polysemantic,
    sort_for_display,
    train_autoencoders,
    winning_neurons,
)

pytestmark = pytest.mark.usefixtures("one_thread")


def _random_W(instances=3, n=4, m=7, seed=0, dtype=torch.float64, scale=1.0):
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(instances, n, m, generator=generator, dtype=dtype) * scale / math.sqrt(m)


def _autograd_loss(W, l1=0.0, noise=None):
    """The loss written out directly: h = x W (+ noise), y = ReLU(h Wᵀ), summed squared errors."""
    n = W.shape[-2]
    x = torch.eye(n, dtype=W.dtype).expand(W.shape[0], n, n)
    h = x @ W
    if noise is not None:
        h = h + noise[:, None, :]
    y = torch.relu(h @ W.transpose(-1, -2))
    return (y - x).square().sum(dim=(-1, -2)) + l1 * W.abs().sum(dim=(-1, -2))


# --------------------------------------------------------------------------------------
# The model, its loss and gradient
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("l1", [0.0, 0.1])
@pytest.mark.parametrize("with_noise", [False, True])
def test_closed_form_gradient_equals_autograd(l1, with_noise):
    W = _random_W(3, 4, 7, seed=1, scale=1.5)
    noise = 0.3 * torch.randn(3, 7, generator=torch.Generator().manual_seed(2), dtype=torch.float64) \
        if with_noise else None
    loss, grad = loss_and_grad(W, l1, noise)
    W_ = W.clone().requires_grad_()
    reference = _autograd_loss(W_, l1, noise)
    reference.sum().backward()
    assert loss.shape == (3,) and grad.shape == W.shape
    torch.testing.assert_close(loss, reference.detach(), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(grad, W_.grad, rtol=1e-10, atol=1e-12)
    # The ReLU is active on some outputs and clipped on others: both branches are exercised.
    G = W @ W.transpose(-1, -2)
    assert (G < 0).any() and (G > 0).any()


def test_gradient_with_noise_differs_from_without():
    W = _random_W(2, 3, 5, seed=3)
    noise = torch.full((2, 5), 0.2, dtype=torch.float64)
    assert not torch.allclose(loss_and_grad(W, 0.0, noise)[1], loss_and_grad(W, 0.0)[1])
    zero = torch.zeros(2, 5, dtype=torch.float64)
    torch.testing.assert_close(loss_and_grad(W, 0.05, zero), loss_and_grad(W, 0.05))


@pytest.mark.parametrize("l1", [0.0, 0.01, 0.3])
def test_autoencoder_loss_equals_the_closed_form_loss(l1):
    noise = 0.2 * torch.randn(3, 8, generator=torch.Generator().manual_seed(9), dtype=torch.float64)
    for dtype in (torch.float32, torch.float64):
        W = _random_W(3, 5, 8, seed=4, dtype=dtype)
        loss = autoencoder_loss(W, l1)
        assert loss.shape == (3,) and loss.dtype == dtype
        torch.testing.assert_close(loss, loss_and_grad(W, l1)[0])
        torch.testing.assert_close(loss, _autograd_loss(W, l1))
        noisy = autoencoder_loss(W, l1, noise.to(dtype))  # the hidden-noise variant
        torch.testing.assert_close(noisy, loss_and_grad(W, l1, noise.to(dtype))[0])
        torch.testing.assert_close(noisy, _autograd_loss(W, l1, noise.to(dtype)))


def test_autoencoder_loss_known_values():
    # Orthonormal rows (W = [I 0]): perfect reconstruction, the loss is the penalty alone.
    W = torch.zeros(1, 3, 5)
    W[0, :, :3] = torch.eye(3)
    assert autoencoder_loss(W).item() == 0.0
    assert autoencoder_loss(W, 0.1).item() == pytest.approx(0.3)
    # W = 0: every output is 0, an error of 1 per feature.
    assert autoencoder_loss(torch.zeros(2, 3, 4)).tolist() == [3.0, 3.0]
    # Two features sharing one neuron with opposite signs: W Wᵀ = [[1, −1], [−1, 1]], the
    # ReLU clips the −1s, so the reconstruction is perfect; with the same sign it is not.
    opposite = torch.tensor([[[1.0, 0.0], [-1.0, 0.0]]])
    same = torch.tensor([[[1.0, 0.0], [1.0, 0.0]]])
    assert autoencoder_loss(opposite).item() == 0.0
    assert autoencoder_loss(same).item() == 2.0


def test_forward_on_the_identity_is_relu_of_the_gram_matrix():
    W = _random_W(3, 4, 6, seed=5, dtype=torch.float32)
    x = torch.eye(4).expand(3, 4, 4)
    torch.testing.assert_close(forward(W, x), torch.relu(W @ W.transpose(-1, -2)))
    batch = torch.rand(3, 7, 4, generator=torch.Generator().manual_seed(6))
    torch.testing.assert_close(forward(W, batch), torch.relu(torch.einsum("ibn,inm,ikm->ibk", batch, W, W)))


def test_init_weights_and_hidden_noise():
    W = poly.init_weights(64, 8, 50, torch.Generator().manual_seed(0))
    assert W.shape == (64, 8, 50) and W.dtype == torch.float32
    torch.testing.assert_close(W.square().sum(-1).mean(), torch.tensor(1.0), atol=0.03, rtol=0)
    again = poly.init_weights(64, 8, 50, torch.Generator().manual_seed(0))
    assert torch.equal(W, again)
    bernoulli = poly.hidden_noise("bernoulli", 0.3, 200, 50, torch.Generator().manual_seed(1))
    assert bernoulli.shape == (200, 50)
    torch.testing.assert_close(bernoulli.abs(), torch.full((200, 50), 0.3))
    assert 0.4 < (bernoulli > 0).float().mean() < 0.6
    gaussian = poly.hidden_noise("gaussian", 0.3, 200, 50, torch.Generator().manual_seed(1))
    torch.testing.assert_close(gaussian.std(), torch.tensor(0.3), atol=0.01, rtol=0)
    with pytest.raises(ValueError, match="noise must be one of"):
        poly.hidden_noise("uniform", 0.3, 2, 5)


# --------------------------------------------------------------------------------------
# Measures
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_active_weights_boundaries_are_inclusive(dtype):
    values = [0.8, 1.2, 0.79, 1.21, -0.8, -1.2, -0.79, -1.21, 1.0, -1.0, 0.0, 0.5, 2.0]
    expected = [True, True, False, False, True, True, False, False, True, True, False, False, False]
    W = torch.tensor(values, dtype=dtype).reshape(1, 1, -1)
    assert active_weights(W).shape == W.shape and active_weights(W).dtype == torch.bool
    assert active_weights(W)[0, 0].tolist() == expected
    assert active_weights(W, 0.0, 0.6)[0, 0].tolist() == [abs(v) <= 0.6 for v in values]


def _hand_built():
    """Instance 0: neuron 0 has three features (+1, −0.9, +1.1), neuron 2 two (+1, −1), the
    others none or inactive weights only.  Instance 1: nothing active (0.5 and 1.3)."""
    W = torch.zeros(2, 4, 5)
    W[0, 0, 0], W[0, 1, 0], W[0, 2, 0] = 1.0, -0.9, 1.1
    W[0, 3, 2], W[0, 1, 2] = 1.0, -1.0
    W[0, 3, 4] = 0.5  # inactive
    W[0, 2, 3] = -1.3  # inactive
    W[1, 0, 1], W[1, 1, 1], W[1, 2, 2] = 0.5, 1.3, -0.7
    return W


def test_features_per_neuron_and_polysemantic_neurons():
    W = _hand_built()
    assert features_per_neuron(W).tolist() == [[3, 0, 2, 0, 0], [0, 0, 0, 0, 0]]
    assert polysemantic_neurons(W).tolist() == [2, 0]
    one = torch.zeros(1, 3, 4)
    one[0, :, 1] = torch.tensor([0.8, -1.2, 1.0])
    assert polysemantic_neurons(one).tolist() == [1]  # one neuron, three features
    one[0, 2, 1] = 0.0
    one[0, 2, 3] = 1.0
    assert polysemantic_neurons(one).tolist() == [1]
    one[0, 1, 1] = 0.0
    assert polysemantic_neurons(one).tolist() == [0]
    # A feature with two active weights on different neurons does not make them polysemantic.
    two = torch.zeros(1, 2, 3)
    two[0, 0, :2] = 1.0
    two[0, 1, 2] = 1.0
    assert polysemantic_neurons(two).tolist() == [0]


def test_privileged_basis():
    W = torch.tensor([[[1.0, 0.01, 0.1, 0.0],  # one active weight
                       [0.0, 0.9, 0.02, 0.5],  # one active weight
                       [1.0, -1.0, 0.0, 0.0]]])  # two active weights
    result = privileged_basis(W)
    assert result["one_active_weight"] == pytest.approx(2 / 3)
    # The 8 inactive weights: 0.01, 0.1, 0.0, 0.0, 0.02, 0.5, 0.0, 0.0; six are below 0.05.
    assert result["others_near_zero"] == pytest.approx(6 / 8)
    assert privileged_basis(W, zero=0.2)["others_near_zero"] == pytest.approx(7 / 8)
    # Every weight active: no remaining weight, counted as all near zero.
    assert privileged_basis(torch.ones(1, 2, 2)) == {"one_active_weight": 0.0, "others_near_zero": 1.0}
    axis = torch.eye(3)[None].repeat(2, 1, 1)
    assert privileged_basis(axis) == {"one_active_weight": 1.0, "others_near_zero": 1.0}


def test_winning_neurons_and_initial_argmax_win_rate():
    W_init = torch.tensor([[[0.1, -0.5, 0.3], [0.2, 0.1, -0.05], [0.0, 0.4, -0.6], [0.3, 0.2, 0.1]]])
    assert winning_neurons(W_init).tolist() == [[1, 0, 2, 0]]  # by |w|: −0.5 and −0.6 win
    W = torch.tensor([[[0.0, 1.0, 0.0], [0.0, 0.0, 1.0], [0.0, 0.0, -1.0], [0.9, 0.0, 0.0]]])
    rate = initial_argmax_win_rate(W_init, W)
    assert rate.shape == (1,) and rate.dtype == torch.float32
    assert rate.tolist() == [0.75]
    both = initial_argmax_win_rate(torch.cat([W_init, W]), torch.cat([W, W]))
    assert both.tolist() == [0.75, 1.0]
    with pytest.raises(ValueError, match="same shape"):
        initial_argmax_win_rate(W_init, W[:, :3])
    with pytest.raises(ValueError, match="same shape"):
        initial_argmax_win_rate(W_init, W.transpose(-1, -2))


def test_shared_neuron_signs():
    W = torch.zeros(2, 4, 4)
    W[0, :3, 0] = torch.tensor([1.0, 0.9, -1.1])  # two positive, one negative: 1 same, 2 opposite
    W[0, 0:2, 1] = torch.tensor([1.0, -1.0])  # one opposite pair
    W[0, 3, 1] = 0.5  # inactive: ignored
    W[0, 1:4, 2] = -1.0  # three negative: 3 same
    W[1, 0:2, 3] = torch.tensor([1.2, 0.8])  # 1 same (in the other instance)
    W[1, 2, 3] = -1.3  # inactive: ignored
    assert shared_neuron_signs(W) == {"same_sign": 5, "opposite_sign": 3}
    assert shared_neuron_signs(torch.eye(3)[None]) == {"same_sign": 0, "opposite_sign": 0}


def test_fourth_norm():
    m = 9
    one_hot = torch.zeros(1, 2, m)
    one_hot[0, 0, 4] = 1.0
    one_hot[0, 1, 0] = -1.0
    torch.testing.assert_close(fourth_norm(one_hot), torch.ones(1, 2))
    spread = torch.full((2, 3, m), 1 / math.sqrt(m))
    torch.testing.assert_close(fourth_norm(spread), torch.full((2, 3), 1 / m))
    # A random unit row: about 3/m.
    rows = torch.randn(1, 4000, 100, generator=torch.Generator().manual_seed(0))
    rows = rows / rows.norm(dim=-1, keepdim=True)
    assert fourth_norm(rows).mean().item() == pytest.approx(3 / 102, rel=0.03)


# --------------------------------------------------------------------------------------
# Predictions
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("n, m", [(2, 1), (10, 10), (32, 64), (100, 7)])
def test_expected_collisions_is_the_birthday_problem(n, m):
    assert expected_collisions(n, m) == pytest.approx(n * (n - 1) / (2 * m))


@pytest.mark.parametrize("n, m", [(32, 64), (20, 20), (16, 512), (40, 10)])
def test_predicted_polysemantic_matches_its_simulation(n, m):
    counts = simulate_polysemantic(n, m, trials=20_000, seed=n + m).double()
    assert counts.shape == (20_000,)
    standard_error = counts.std().item() / math.sqrt(counts.numel())
    assert abs(predicted_polysemantic(n, m) - counts.mean().item()) < 4 * standard_error


def test_simulate_polysemantic_is_seeded_and_bounded():
    a, b = simulate_polysemantic(12, 30, trials=500, seed=3), simulate_polysemantic(12, 30, trials=500, seed=3)
    assert torch.equal(a, b)
    assert not torch.equal(a, simulate_polysemantic(12, 30, trials=500, seed=4))
    assert a.min() >= 0 and a.max() <= 6  # at most n/2 neurons get both signs
    assert (simulate_polysemantic(1, 5, trials=100) == 0).all()


def test_predicted_polysemantic_exact_small_cases():
    assert predicted_polysemantic(1, 5) == pytest.approx(0.0, abs=1e-12)
    # Two features: polysemantic iff same neuron (1/m) and opposite signs (1/2).
    for m in (1, 3, 50):
        assert predicted_polysemantic(2, m) == pytest.approx(1 / (2 * m), rel=1e-9)
    # One neuron: polysemantic unless all n signs agree.
    assert predicted_polysemantic(5, 1) == pytest.approx(1 - 2 * 0.5**5)


def test_predicted_polysemantic_tends_to_n_squared_over_4m():
    # Leading order for m ≫ n: C(n, 2)/(2m) = n(n − 1)/(4m), which is n²/(4m) for n ≫ 1.
    assert predicted_polysemantic(10, 10**4) == pytest.approx(10 * 9 / (4 * 10**4), rel=2e-3)
    assert predicted_polysemantic(100, 10**6) == pytest.approx(100**2 / (4 * 10**6), rel=0.02)
    ratios = [predicted_polysemantic(50, m) / (50 * 49 / (4 * m)) for m in (10**3, 10**4, 10**5)]
    assert ratios[0] < ratios[1] < ratios[2] < 1 and ratios[2] == pytest.approx(1, rel=1e-3)


def test_predicted_surviving():
    m, l1 = 256, 0.01
    assert predicted_surviving(m, l1, 0).item() == pytest.approx(m)
    t = torch.linspace(0, 200, 101)  # the law reaches one weight at t = (1 − 1/√m)/λ = 93.75
    surviving = predicted_surviving(m, l1, t)
    assert surviving.shape == (101,) and surviving.dtype == torch.float64
    assert (surviving[1:] <= surviving[:-1]).all()
    assert surviving[0] > surviving[10] > surviving[25] > surviving[-1]
    assert (surviving[t >= 93.75] == 1.0).all() and (surviving[t < 93] > 1.0).all()  # clamped at one
    assert predicted_surviving(m, l1, 1e6).item() == 1.0
    # Before the clamp: 1/(1/√m + λt)².
    assert predicted_surviving(m, l1, 5.0).item() == pytest.approx(1 / (1 / 16 + 0.05) ** 2)
    assert predicted_surviving(m, 0.0, [0.0, 100.0]).tolist() == pytest.approx([m, m])


@pytest.mark.parametrize("function", [expected_collisions, predicted_polysemantic, simulate_polysemantic])
def test_predictions_reject_bad_sizes(function):
    for n, m in ((0, 5), (5, 0), (2.5, 5)):
        with pytest.raises(ValueError, match="must be a positive integer"):
            function(n, m)


# --------------------------------------------------------------------------------------
# Training
# --------------------------------------------------------------------------------------


def _train(n=4, m=8, instances=3, **kwargs):
    kwargs = {"optimizer": "gd", "l1": 0.03, "steps": 60, "progress": False, "device": "cpu", **kwargs}
    return train_autoencoders(n, m, instances, **kwargs)


@pytest.mark.parametrize("kwargs, message", [
    (dict(n=5, m=4), "at least as many neurons as features"),
    (dict(n=0), "n must be a positive integer"),
    (dict(optimizer="sgd"), "optimizer must be one of"),
    (dict(noise="uniform", sigma=0.1), "noise must be None or one of"),
    (dict(noise="gaussian"), "needs sigma > 0"),
    (dict(noise="bernoulli", sigma=-0.1), "needs sigma > 0"),
    (dict(steps=0), "steps must be a positive integer"),
    (dict(steps=2.5), "steps must be a positive integer"),
    (dict(instances=0), "instances must be a positive integer"),
    (dict(l1=-0.1), "l1 must be a finite number >= 0"),
    (dict(l1=float("nan")), "l1 must be a finite number >= 0"),
    (dict(lr=0.0), "lr must be positive"),
    (dict(lr=-1e-3), "lr must be positive"),
])
def test_train_autoencoders_rejects_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        _train(**kwargs)


def test_training_is_reproducible_per_seed():
    a, b, c = _train(seed=7), _train(seed=7), _train(seed=8)
    assert torch.equal(a.W, b.W) and torch.equal(a.W_init, b.W_init)
    assert not torch.equal(a.W_init, c.W_init) and not torch.equal(a.W, c.W)
    noisy = [_train(seed=7, noise="bernoulli", sigma=0.1, l1=0.0) for _ in range(2)]
    assert torch.equal(noisy[0].W, noisy[1].W)
    assert not torch.equal(noisy[0].W, _train(seed=7, noise="gaussian", sigma=0.1, l1=0.0).W)
    # The initialisation is init_weights with the seed's generator; training moves W.
    torch.testing.assert_close(a.W_init, poly.init_weights(3, 4, 8, torch.Generator().manual_seed(7)))
    assert not torch.equal(a.W, a.W_init)


@pytest.mark.parametrize("fast", [False, True])
def test_history_shapes_and_record_steps(fast):
    run = _train(steps=45, record_every=10, instances=3, fast=fast)
    assert run.record_steps == [0, 10, 20, 30, 40, 45]
    for history in (run.loss_history, run.l1_history, run.surviving_history, run.fourth_norm_history):
        assert history.shape == (6, 3)
        assert torch.isfinite(history).all()
    assert run.instances == 3 and run.W.shape == run.W_init.shape == (3, 4, 8)
    assert run.W.device.type == "cpu" and run.W_init.device.type == "cpu"
    torch.testing.assert_close(run.time, torch.tensor([0, 10, 20, 30, 40, 45], dtype=torch.float64) * 0.05)
    assert (run.n, run.m, run.l1, run.optimizer, run.lr, run.steps) == (4, 8, 0.03, "gd", 0.05, 45)
    assert (run.noise, run.sigma) == (None, 0.0) and run.seconds >= 0
    # Step 0 is the initialisation and the last record is the final W.
    torch.testing.assert_close(run.loss_history[0], autoencoder_loss(run.W_init, 0.03))
    torch.testing.assert_close(run.loss_history[-1], autoencoder_loss(run.W, 0.03))
    torch.testing.assert_close(run.l1_history[-1], run.W.abs().sum(-1).mean(-1))
    torch.testing.assert_close(run.fourth_norm_history[-1], fourth_norm(run.W).mean(-1))
    torch.testing.assert_close(run.surviving_history[0], (run.W_init.abs() > 0.02).sum(-1).float().mean(-1))
    default = _train(steps=300, fast=fast)  # a record every steps // 100 steps
    assert default.record_steps == list(range(0, 301, 3)) and default.loss_history.shape == (101, 3)
    assert _train(steps=7).record_steps == list(range(8))
    assert _train(optimizer="adamw").lr == 1e-3


def test_gradient_descent_with_l1_lowers_the_loss_and_prunes_weights():
    run = _train(n=5, m=10, instances=4, steps=300, record_every=50)
    assert (run.loss_history[-1] < 0.5 * run.loss_history[0]).all()
    assert (run.loss_history[1:] <= run.loss_history[:-1] + 1e-6).all()
    assert (run.surviving_history[-1] < run.surviving_history[0]).all()


@pytest.mark.parametrize("fast", [False, True])
def test_gradient_descent_step_is_w_minus_lr_grad(fast):
    run = _train(steps=1, lr=0.05, fast=fast)
    _, grad = loss_and_grad(run.W_init, 0.03)
    torch.testing.assert_close(run.W, run.W_init - 0.05 * grad)


@pytest.mark.parametrize("optimizer, reference", [("adamw", torch.optim.AdamW), ("adam", torch.optim.Adam)])
def test_adam_steps_equal_torch_optim(optimizer, reference):
    """The fast path's foreach Adam and decoupled decay are torch.optim's, given the same gradients."""
    run = _train(n=4, m=7, optimizer=optimizer, lr=0.01, l1=0.01, steps=40, seed=3, fast=True)
    W = run.W_init.clone().requires_grad_()
    options = {"weight_decay": 0.01} if optimizer == "adamw" else {}
    torch_optimizer = reference([W], lr=0.01, **options)
    for _ in range(40):
        W.grad = loss_and_grad(W.detach(), 0.01)[1]
        torch_optimizer.step()
    torch.testing.assert_close(run.W, W.detach(), rtol=1e-5, atol=1e-6)


def test_long_gradient_descent_run_ends_in_a_privileged_basis():
    """The paper's winner-take-all picture on a small model (0.3 s on the fast path): each
    feature ends with exactly one active weight, every other weight is near zero, no two
    features of the same sign share a neuron, and most winners were the initial argmax."""
    run = _train(n=6, m=12, instances=16, steps=4000, record_every=4000, fast=True)
    assert privileged_basis(run.W) == {"one_active_weight": 1.0, "others_near_zero": 1.0}
    signs = shared_neuron_signs(run.W)
    assert signs["same_sign"] == 0 and signs["opposite_sign"] >= 1
    assert polysemantic_neurons(run.W).sum() == signs["opposite_sign"]
    assert initial_argmax_win_rate(run.W_init, run.W).mean() > 5 / 12


@pytest.mark.parametrize("fast", [False, True])
def test_divergent_learning_rate_raises(fast):
    with pytest.raises(FloatingPointError, match="training diverged"):
        _train(lr=10.0, steps=100, fast=fast)
    with pytest.raises(FloatingPointError, match="lower lr"):
        _train(lr=10.0, steps=100, record_every=10**9, fast=fast)  # checked at the last step at the latest


@pytest.mark.parametrize("kwargs, atol", [
    (dict(optimizer="adamw", l1=1e-3, lr=None), 1e-5),  # the paper's setup
    (dict(optimizer="adam", l1=0.0, lr=0.01), 1e-5),
    (dict(optimizer="gd", l1=0.0), 1e-5),
    # With L1, gradient descent leaves the pruned weights jumping across zero by lr·λ = 1.5e-3
    # each step (sign(0 ± tiny) decides the direction): float noise moves them by up to 2 lr·λ.
    (dict(optimizer="gd", l1=0.03), 2 * 0.05 * 0.03 + 1e-5),
    (dict(optimizer="gd", l1=0.0, lr=0.02, noise="bernoulli", sigma=0.15), 1e-5),
    (dict(optimizer="adamw", l1=0.0, lr=0.01, noise="gaussian", sigma=0.15), 1e-5),
])
def test_plain_and_fast_paths_take_the_same_steps(kwargs, atol):
    """The default path (autograd through autoencoder_loss, torch.optim) and fast=True (the
    closed-form gradient, the foreach Adam) from one seed: the same W, records and counts."""
    plain, fast = (_train(n=6, m=12, instances=4, steps=300, record_every=50, seed=5, fast=f, **kwargs)
                   for f in (False, True))
    assert torch.equal(plain.W_init, fast.W_init) and plain.record_steps == fast.record_steps
    torch.testing.assert_close(plain.W, fast.W, atol=atol, rtol=1e-4)
    torch.testing.assert_close(plain.loss_history, fast.loss_history, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(plain.fourth_norm_history, fast.fourth_norm_history, atol=1e-4, rtol=1e-4)
    assert torch.equal(polysemantic_neurons(plain.W), polysemantic_neurons(fast.W))
    assert not torch.equal(plain.W, plain.W_init)


def test_noise_run_without_l1():
    run = _train(noise="gaussian", sigma=0.05, l1=0.0, optimizer="adamw", lr=0.01, steps=50, record_every=25)
    assert (run.noise, run.sigma, run.l1) == ("gaussian", 0.05, 0.0)
    assert run.record_steps == [0, 25, 50] and torch.isfinite(run.loss_history).all()


# --------------------------------------------------------------------------------------
# sort_for_display
# --------------------------------------------------------------------------------------


def test_sort_for_display_puts_shared_neurons_first():
    W = torch.zeros(3, 5)
    W[0, 3], W[2, 3] = 1.0, -1.0  # features 0 and 2 share neuron 3
    W[1, 1] = 0.9
    W[1, 3] = 0.25
    W[0, 0], W[2, 4] = 0.05, -0.1
    W_sorted, order = sort_for_display(W)
    assert order.tolist() == [3, 1, 0, 2, 4]
    assert sorted(order.tolist()) == list(range(5))
    torch.testing.assert_close(W_sorted, W[:, order])
    assert W_sorted[:, 0].tolist() == [1.0, 0.25, -1.0]
    assert active_weights(W_sorted[None])[0, :, 0].tolist() == [True, False, True]
    # A random W: still a permutation, winners first in feature order.
    random_W = torch.randn(6, 11, generator=torch.Generator().manual_seed(0))
    sorted_W, order = sort_for_display(random_W)
    assert sorted(order.tolist()) == list(range(11)) and sorted_W.shape == (6, 11)
    winners = list(dict.fromkeys(random_W.abs().argmax(-1).tolist()))
    assert order.tolist()[: len(winners)] == winners


@pytest.mark.parametrize("shape", [(1, 3, 4), (4,)])
def test_sort_for_display_needs_one_instance(shape):
    with pytest.raises(ValueError, match="one instance's W"):
        sort_for_display(torch.zeros(shape))


# --------------------------------------------------------------------------------------
# collision_sweep
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("fast", [False, True])
def test_collision_sweep_on_a_tiny_config(fast):
    sweep = collision_sweep(6, [12, 24], instances=4, optimizer="gd", l1=0.03, steps=300, progress=False, fast=fast)
    assert sweep.n == 6 and sweep.widths == [12, 24]
    assert sweep.counts.shape == (2, 4) and sweep.win_rates.shape == (2, 4)
    assert len(sweep.privileged) == 2 and len(sweep.seconds) == 2
    assert sweep.settings == {"instances": 4, "seed": 0, "optimizer": "gd", "l1": 0.03, "steps": 300}
    torch.testing.assert_close(sweep.prediction, torch.tensor(
        [predicted_polysemantic(6, 12), predicted_polysemantic(6, 24)], dtype=torch.float64))
    torch.testing.assert_close(sweep.leading_order, torch.tensor([36 / 48, 36 / 96], dtype=torch.float64))
    torch.testing.assert_close(sweep.mean, sweep.counts.double().mean(1))
    rows = sweep.summary()
    assert [row["m"] for row in rows] == [12, 24]
    keys = {"m", "mean", "standard_error", "prediction", "n2_over_4m", "ratio", "initial_argmax_wins",
            "chance", "one_active_weight"}
    for k, row in enumerate(rows):
        assert set(row) == keys
        assert row["prediction"] == predicted_polysemantic(6, sweep.widths[k])
        assert row["chance"] == 1 / sweep.widths[k]
        assert row["mean"] == pytest.approx(sweep.counts[k].double().mean().item())
        assert row["one_active_weight"] == sweep.privileged[k]["one_active_weight"]
    # Each width is one seeded batched run: the counts are those of train_autoencoders.
    run = train_autoencoders(6, 24, 4, seed=1000, optimizer="gd", l1=0.03, steps=300, progress=False, fast=fast)
    assert torch.equal(sweep.counts[1], polysemantic_neurons(run.W))
    torch.testing.assert_close(sweep.win_rates[1], initial_argmax_win_rate(run.W_init, run.W))


def test_collision_sweep_passes_the_switch_on(monkeypatch):
    calls = []

    def spy(*args, **kwargs):
        calls.append(kwargs["fast"])
        return train_autoencoders(*args, **kwargs)

    monkeypatch.setattr(poly, "train_autoencoders", spy)
    collision_sweep(4, [8, 8], instances=2, optimizer="gd", steps=5, progress=False, fast=True)
    collision_sweep(4, [8], instances=2, optimizer="gd", steps=5, progress=False)
    assert calls == [True, True, False]


def test_collision_sweep_rejects_bad_widths():
    with pytest.raises(ValueError, match="widths is empty"):
        collision_sweep(6, [], instances=2, progress=False)
    with pytest.raises(ValueError, match="at least as many neurons"):
        collision_sweep(6, [12, 4], instances=2, progress=False)


# --------------------------------------------------------------------------------------
# The learners' training loop, written out
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("l1, lr, weight_decay", [(1e-3, 1e-3, 0.01), (0.03, 1e-2, 0.1)])
def test_train_autoencoder_equals_the_default_path_of_train_autoencoders(l1, lr, weight_decay):
    W_init, W = poly.train_autoencoder(5, 9, 3, l1, steps=200, lr=lr, weight_decay=weight_decay, seed=4,
                                       progress=False)
    run = poly.train_autoencoders(5, 9, 3, l1=l1, lr=lr, weight_decay=weight_decay, steps=200, seed=4,
                                  device="cpu", progress=False)
    assert torch.equal(W_init, run.W_init) and torch.equal(W, run.W)
    assert torch.equal(W_init, poly.init_weights(3, 5, 9, torch.Generator().manual_seed(4)))
    assert not W.requires_grad and W.device.type == "cpu"
    assert W_init.data_ptr() != W.data_ptr() and not torch.equal(W_init, W)


def test_train_autoencoder_takes_the_loss_it_is_given():
    def no_penalty(W, l1):
        return poly.autoencoder_loss(W, 0.0)

    _, W = poly.train_autoencoder(4, 6, 2, 0.05, no_penalty, steps=50, lr=1e-2, seed=1, progress=False)
    _, W_zero = poly.train_autoencoder(4, 6, 2, 0.0, steps=50, lr=1e-2, seed=1, progress=False)
    _, W_l1 = poly.train_autoencoder(4, 6, 2, 0.05, steps=50, lr=1e-2, seed=1, progress=False)
    assert torch.equal(W, W_zero) and not torch.allclose(W, W_l1, atol=1e-3)


def test_collision_sweep_counts_and_predicts_with_the_functions_it_is_given():
    def count_twice(W):
        return 2 * poly.polysemantic_neurons(W)

    def predict_one(n, m):
        return 1.0

    def win_rate_half(W_init, W):
        return torch.full((W.shape[0],), 0.5)

    plain = collision_sweep(4, [8, 12], 3, steps=50, progress=False, device="cpu", fast=True)
    mine = collision_sweep(4, [8, 12], 3, steps=50, progress=False, device="cpu", fast=True,
                           count=count_twice, predict=predict_one, win_rate=win_rate_half)
    assert torch.equal(mine.counts, 2 * plain.counts)
    assert torch.equal(mine.prediction, torch.ones(2, dtype=torch.float64))
    assert torch.equal(plain.prediction, torch.tensor([predicted_polysemantic(4, m) for m in (8, 12)],
                                                      dtype=torch.float64))
    assert torch.equal(mine.win_rates, torch.full((2, 3), 0.5))


# --------------------------------------------------------------------------------------
# One neuron, four tokens: cross-entropy against squared error
# --------------------------------------------------------------------------------------


def test_ce_lower_bound_closed_form():
    bound = poly.ce_lower_bound
    assert math.isclose(bound(torch.tensor([2.0, 0, 0, 0])), 0.75 * math.log(3))  # monosemantic: 0.824
    assert math.isclose(bound(torch.tensor([1.0, 1.0, 0, 0])), math.log(2))  # A and B equally: 0.693
    assert math.isclose(bound(torch.tensor([1.0, 2.0, 0, 0])), 0.5 * math.log(2))  # two levels: 0.347
    assert math.isclose(bound(torch.zeros(4)), math.log(4))
    assert math.isclose(bound(torch.tensor([1.0, 2.0, 0, 0, 0, 0])), 4 / 6 * math.log(4))  # N = 6
    assert bound(torch.tensor([0.0, 1.0, 2.0])) == 0.0


def test_mse_lower_bound_ties_every_firing_pattern():
    for pattern in ([2.0, 0, 0, 0], [1.0, 1.0, 0, 0], [1.0, 2.0, 0, 0], [1.0, 2.0, 3.0, 0.5]):
        assert poly.mse_lower_bound(torch.tensor(pattern)) == 0.5
    assert poly.mse_lower_bound(torch.zeros(4)) == 0.75
    assert poly.mse_lower_bound(torch.tensor([1.0, 0, 0, 0, 0])) == 3 / 5


def test_token_neuron_loss_reaches_the_bounds_with_a_large_readout():
    # fires on A at 1, on B at 2: logits tangent to a parabola, scaled up
    w = torch.tensor([[1.0, 2.0, -1.0, -1.0]])
    scale = 200.0
    u = scale * torch.tensor([[2 * 1.0, 2 * 2.0, 0.0, 0.0]])
    c = scale * torch.tensor([[-1.0, -4.0, 0.0, 0.0]])  # u_k h + c_k = scale·(2 a_k h − a_k²), a = 1, 2, 0, 0
    assert abs(float(poly.token_neuron_loss(w, u, c, "ce")) - 0.5 * math.log(2)) < 1e-6
    # squared error: the least-squares readout reaches 1/2
    h = torch.relu(w)[0]
    x = torch.eye(4)
    design = torch.stack([h, torch.ones(4)], dim=1)
    solution = torch.linalg.lstsq(design, x).solution  # (2, outputs)
    mse = poly.token_neuron_loss(w, solution[0][None], solution[1][None], "mse")
    assert abs(float(mse) - 0.5) < 1e-5
    with pytest.raises(ValueError, match="loss must be one of"):
        poly.token_neuron_loss(w, u, c, "l1")


def test_trained_ce_neuron_fires_on_two_tokens_in_most_seeds():
    run = poly.train_token_neuron("ce", seeds=16, steps=5_000)
    firing = run.firing()
    two = firing == 2
    assert int(two.sum()) >= 8, firing
    # those end at ½ ln 2 (two levels), above the bound only by the readout's finite scale
    assert (run.loss[two] - 0.5 * math.log(2)).abs().max() < 0.005
    for k in torch.nonzero(two).flatten().tolist():
        h = run.activations[k][run.activations[k] > 0]
        assert (h.max() - h.min()) > 1.0  # at different strengths
        assert math.isclose(poly.ce_lower_bound(run.activations[k]), 0.5 * math.log(2))
    # one-token seeds sit at (3/4) ln 3; dead ones at ln 4
    assert ((run.loss[firing == 1] - 0.75 * math.log(3)).abs() < 0.005).all()
    assert ((run.loss[firing == 0] - math.log(4)).abs() < 1e-4).all()


def test_trained_mse_neuron_ends_at_one_half_whatever_it_fires_on():
    run = poly.train_token_neuron("mse", seeds=16, steps=5_000)
    alive = run.firing() > 0
    assert int(alive.sum()) >= 12
    torch.testing.assert_close(run.loss[alive], torch.full((int(alive.sum()),), 0.5), atol=1e-4, rtol=0)
    assert ((run.loss[~alive] - 0.75).abs() < 1e-4).all()


def test_plot_token_neurons_draws_one_panel_per_run():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from course_utils import plots

    runs = {"a": (torch.rand(16, 4), torch.rand(16)), "b": (torch.rand(16, 4), torch.rand(16))}
    fig = plots.plot_token_neurons(runs)
    panels = [ax for ax in fig.axes if ax.get_title()]
    assert [ax.get_title() for ax in panels] == ["a", "b"]
    assert len(panels[0].texts) == 16  # one loss per seed
    plt.close(fig)


def test_explorer_counts_and_predicts_with_the_functions_it_is_given():
    from course_utils.widgets import retrain_polysemantic

    result = retrain_polysemantic(2, 0.03, n=6, instances=4, steps=200,
                                  count=lambda W: torch.zeros(W.shape[0]), predict=lambda n, m: 7.0)
    assert torch.equal(result.counts, torch.zeros(4)) and result.prediction == 7.0
