"""Unit tests of course_utils.toy_models: shapes, the plain loop, the fast path
(course_utils._fast.toy: fused gradients, NumPy sampler) against autograd and the plain loop."""

import math

import numpy as np
import pytest
import torch

from course_utils import toy_models
from course_utils._fast.toy import NumpySampler, fused_loss_and_grads
from course_utils.toy_models import (
    ToyModel,
    evaluate_loss,
    generate_batch,
    importance_decay,
    importance_weighted_loss,
    lr_schedule,
    select_best,
    toy_forward,
    train,
)


def make_model(activation="relu", n=7, m=3, instances=4, seed=0, device="cpu"):
    prob = torch.linspace(0.1, 1.0, instances)[:, None]
    return ToyModel(n, m, instances, activation=activation, feature_probability=prob,
                    importance=importance_decay(n, 0.8), device=device,
                    generator=torch.Generator().manual_seed(seed))


def test_forward_matches_the_formula():
    model = make_model()
    with torch.no_grad():
        model.b.normal_()
    x = torch.rand(4, 9, 7)
    W, b = model.W.detach(), model.b.detach()
    expected = torch.relu(torch.stack([x[k] @ W[k].T @ W[k] + b[k] for k in range(4)]))
    torch.testing.assert_close(model(x), expected)
    linear = toy_forward(W, b, x, "linear")
    assert (linear < 0).any(), "the linear model must not clip"
    with pytest.raises(ValueError, match="activation"):
        toy_forward(W, b, x, "tanh")


def test_bad_arguments_get_clear_errors():
    with pytest.raises(ValueError, match="feature_probability"):
        ToyModel(5, 2, 3, feature_probability=torch.ones(4, 5), device="cpu")
    with pytest.raises(ValueError, match="\\[0, 1\\]"):
        ToyModel(5, 2, 1, feature_probability=1.5, device="cpu")
    with pytest.raises(ValueError, match="n_hidden"):
        ToyModel(5, 0, 1, device="cpu")
    with pytest.raises(ValueError, match="positive"):
        train(make_model(), steps=0)
    with pytest.raises(ValueError, match="schedule"):
        lr_schedule("warmup")


def test_per_instance_shapes_broadcast():
    model = ToyModel(5, 2, 3, feature_probability=torch.tensor([0.1, 0.2, 0.3]), importance=0.5, device="cpu")
    assert model.feature_probability.shape == (3, 5)
    assert torch.allclose(model.feature_probability[:, 0], torch.tensor([0.1, 0.2, 0.3]))
    assert torch.all(model.importance == 0.5)
    per_feature = ToyModel(5, 2, 3, importance=importance_decay(5, 0.9), device="cpu")
    assert torch.allclose(per_feature.importance[2], 0.9 ** torch.arange(5.0))


@pytest.mark.parametrize("activation", ["relu", "linear"])
def test_fused_gradients_equal_autograd(activation):
    model = make_model(activation)
    with torch.no_grad():
        model.b.uniform_(-0.3, 0.1)
    x = generate_batch(model.feature_probability, 64, torch.Generator().manual_seed(3))
    loss = model.loss(x)
    loss.sum().backward()
    fused_loss, grad_W, grad_b = fused_loss_and_grads(model, x.clone(), slice(0, 4))
    torch.testing.assert_close(fused_loss, loss.detach(), rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(grad_W, model.W.grad, rtol=1e-4, atol=1e-7)
    torch.testing.assert_close(grad_b, model.b.grad, rtol=1e-4, atol=1e-7)


def test_fast_and_plain_training_agree():
    """The fast path and the plain loop optimise the same objective: from the same start they
    reach the same loss (the fast path's NumPy sampler draws other batches, so weights agree
    only statistically)."""
    fast, plain = make_model(seed=1), make_model(seed=1)
    prob = torch.full((4, 7), 0.3)
    fast.feature_probability.copy_(prob)
    plain.feature_probability.copy_(prob)
    fast_result = train(fast, steps=200, progress=False, fast=True, seed=5)
    assert fast_result.final_loss.shape == (4,)
    plain_result = train(plain, steps=200, progress=False, seed=5)
    f, p = evaluate_loss(fast, 50_000), evaluate_loss(plain, 50_000)
    assert torch.allclose(f, p, rtol=0.1), (f, p)
    assert fast_result.loss_curve().shape[1] == 4 and plain_result.final_loss.shape == (4,)


def test_the_default_path_and_the_fast_path_take_the_same_steps():
    """Same start, same batches (``sampler="torch"`` draws the plain loop's): 200 steps of the
    default loop (autograd, torch.optim.Adam) and of the fast path (hand-derived gradients,
    foreach Adam) agree to float rounding, at every logged loss and in the final W and b."""
    plain, fast = make_model(seed=4), make_model(seed=4)
    plain_result = train(plain, steps=200, seed=7, schedule="cosine", progress=False, log_every=1)
    fast_result = train(fast, steps=200, seed=7, schedule="cosine", progress=False, log_every=1,
                        fast=True, sampler="torch")
    assert plain_result.steps == fast_result.steps == list(range(200))
    torch.testing.assert_close(fast_result.loss_curve(), plain_result.loss_curve(), rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(fast.W, plain.W, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(fast.b, plain.b, rtol=1e-4, atol=1e-6)
    assert (plain_result.final_loss < plain_result.losses[0]).all()


def test_the_default_path_is_the_plain_loop():
    """``train`` (fast=False) is ``train_model``'s loop, the one chapter 01's learner writes:
    from one seed it takes exactly the same steps."""
    a, b = make_model(seed=3), make_model(seed=3)
    result = train(a, steps=100, lr=3e-3, schedule="linear", seed=2, progress=False, log_every=1)
    losses = toy_models.train_model(b, steps=100, lr=3e-3, schedule="linear", seed=2, progress=False)
    torch.testing.assert_close(result.loss_curve(), losses, rtol=0, atol=0)
    assert torch.equal(a.W, b.W) and torch.equal(a.b, b.b)


def test_the_fast_path_trains_a_toy_model_in_all_but_class_and_refuses_other_models():
    """Chapter 01's learner-written ToyModel (the parts, not the class) trains on the fast path
    with the toy maths; a ToyModel subclass with its own forward, or another model, does not."""
    from torch import nn

    from course_utils.computation import NeuronModel

    class LearnerToyModel(nn.Module):
        def __init__(self, reference):
            super().__init__()
            self.n_features, self.n_hidden, self.n_instances = 7, 3, 4
            self.activation = "relu"
            self.W = nn.Parameter(reference.W.detach().clone())
            self.b = nn.Parameter(reference.b.detach().clone())
            self.register_buffer("feature_probability", reference.feature_probability.clone())
            self.register_buffer("importance", reference.importance.clone())

    reference = make_model(seed=6)
    learner = LearnerToyModel(reference)
    train(reference, steps=50, seed=1, progress=False, fast=True)
    train(learner, steps=50, seed=1, progress=False, fast=True)
    assert torch.equal(learner.W, reference.W)
    with pytest.raises(TypeError, match="fast=False"):
        train(NeuronModel(4, 2, device="cpu"), steps=1, progress=False, fast=True)
    with pytest.raises(TypeError, match="fast=False"):
        train(nn.Linear(3, 3), steps=1, progress=False, fast=True)


def test_adam_matches_torch_adam():
    from course_utils._fast.adam import Adam

    torch.manual_seed(0)
    a = [torch.randn(3, 4), torch.randn(5)]
    b = [t.clone().requires_grad_() for t in a]
    ours = Adam(a)
    theirs = torch.optim.Adam(b, lr=1e-2)
    for _ in range(5):
        grads = [torch.randn_like(t) for t in a]
        ours.step(grads, 1e-2)
        for t, g in zip(b, grads):
            t.grad = g
        theirs.step()
    for x, y in zip(a, b):
        torch.testing.assert_close(x, y.detach())


@pytest.mark.parametrize("p", [1.0, 0.5, 0.2, 0.05, 0.003])
def test_numpy_sampler_distribution(p):
    """One uniform per entry still gives P(active) = p and U[0, 1] values."""
    instances, batch, n = 2, 4096, 40  # 163,840 entries per instance: sparse path for p < 0.25
    sampler = NumpySampler(torch.full((instances, n), p), seed=0)
    out = torch.empty(instances, batch, n)
    sampler.fill(slice(0, instances), out)
    active = out > 0
    frac = active.float().mean().item()
    total = out[0].numel() * instances
    assert abs(frac - p) < 6 * math.sqrt(p * (1 - p) / total) + 1e-6
    values = out[active]
    assert values.min() >= 0 and values.max() < 1
    assert abs(values.mean().item() - 0.5) < 6 * math.sqrt(1 / 12 / values.numel())
    assert abs(values.var().item() - 1 / 12) < 0.01
    # Instances and rows are independent draws.
    assert not torch.equal(out[0], out[1])
    assert not torch.equal(out[0, 0], out[0, 1]) or p < 0.01


def test_numpy_sampler_respects_per_feature_probabilities():
    prob = torch.tensor([[0.9, 0.1, 0.5], [0.05, 0.6, 0.3]])
    sampler = NumpySampler(prob, seed=1)
    out = torch.empty(2, 50_000, 3)
    sampler.fill(slice(0, 2), out)
    torch.testing.assert_close((out > 0).float().mean(dim=1), prob, atol=0.01, rtol=0)


def test_generate_batch_distribution():
    prob = torch.tensor([[0.2, 0.7], [1.0, 0.0]])
    x = generate_batch(prob, 40_000, torch.Generator().manual_seed(0))
    assert x.shape == (2, 40_000, 2) and x.dtype == torch.float32
    torch.testing.assert_close((x > 0).float().mean(dim=1), prob, atol=0.01, rtol=0)


def test_loss_is_per_instance_mean():
    out, x = torch.zeros(2, 3, 4), torch.ones(2, 3, 4)
    importance = torch.tensor([[1.0, 1, 1, 1], [2, 2, 0, 0]])
    torch.testing.assert_close(importance_weighted_loss(out, x, importance), torch.tensor([1.0, 1.0]))


def test_select_best_picks_lowest_loss_per_group():
    model = make_model()
    losses = torch.tensor([0.3, 0.1, 0.5, 0.2])
    assert select_best(model, losses, 2).tolist() == [1, 3]
    with pytest.raises(ValueError):
        select_best(model, losses, 3)


@pytest.mark.parametrize("fast", [False, True])
def test_training_reduces_loss_and_is_seeded(fast):
    a, b = make_model(seed=2), make_model(seed=2)
    ra = train(a, steps=300, progress=False, seed=1, fast=fast)
    rb = train(b, steps=300, progress=False, seed=1, fast=fast)
    assert torch.equal(a.W, b.W), "same seed, same weights"
    assert (ra.final_loss < ra.losses[0]).all()


def test_cosine_schedule_ends_near_zero():
    f = lr_schedule("cosine")
    assert f(0, 100) == 1.0 and f(100, 100) < 1e-12 and 0.49 < f(50, 100) < 0.51


@pytest.mark.parametrize("fast", [False, True])
def test_nan_loss_raises_a_clear_error(fast):
    model = make_model()
    with pytest.raises(FloatingPointError, match="learning rate"):
        train(model, steps=20, lr=1e12, progress=False, fast=fast)


@pytest.mark.parametrize("fast", [False, True])
def test_snapshots_record_W_at_the_requested_steps(fast):
    model = ToyModel(5, 2, 3, feature_probability=0.1, device="cpu", generator=torch.Generator().manual_seed(0))
    W0 = model.W.detach().clone()
    result = train(model, steps=50, snapshot_every=20, progress=False, fast=fast)
    assert result.snapshot_steps == [0, 20, 40, 50]
    history = result.W_history()
    assert history.shape == (4, 3, 2, 5)
    torch.testing.assert_close(history[0], W0)
    torch.testing.assert_close(history[-1], model.W.detach())
    assert not torch.equal(history[1], history[0])
    with pytest.raises(ValueError, match="snapshot_every"):
        train(model, steps=5, snapshot_every=0, progress=False, fast=fast)
    with pytest.raises(ValueError, match="no snapshots"):
        train(model, steps=5, progress=False, fast=fast).W_history()


@pytest.mark.parametrize("schedule", ["constant", "cosine"])
def test_the_plain_loop_and_the_fast_path_agree_step_by_step(schedule):
    """train_model (what chapter 01's learner writes) and train(fast=True) (fused gradients,
    foreach Adam) take the same steps from the same seed when they draw the same batches."""
    from course_utils.toy_models import train_model

    models = [ToyModel(5, 2, 4, feature_probability=torch.tensor([[0.05], [0.1], [0.3], [1.0]]),
                       importance=0.9 ** torch.arange(5.0), device="cpu",
                       generator=torch.Generator().manual_seed(3)) for _ in range(2)]
    plain = train_model(models[0], steps=300, schedule=schedule, seed=5, progress=False)
    fused = train(models[1], steps=300, schedule=schedule, seed=5, progress=False, sampler="torch", log_every=1,
                  fast=True)
    assert plain.shape == (300, 4)
    torch.testing.assert_close(torch.stack(fused.losses), plain, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(models[1].W, models[0].W, rtol=1e-4, atol=1e-6)
    with pytest.raises(ValueError, match="sampler must be"):
        train(models[1], steps=1, sampler="numpy", progress=False, fast=True)


def test_a_batch_fn_draws_the_batches_on_the_fast_path_and_the_plain_loop_alike():
    calls = []

    def batch_fn(p, size, generator):
        calls.append(size)
        return toy_models.correlated_batch(p, size, [[0, 1]], generator)

    model = toy_models.ToyModel(4, 2, 2, feature_probability=0.2, batch_fn=batch_fn,
                                generator=torch.Generator().manual_seed(0))
    x = model.generate_batch(500, torch.Generator().manual_seed(1))
    assert calls == [500] and ((x[..., 0] != 0) == (x[..., 1] != 0)).all()
    # The fast path draws its batches with batch_fn too, and takes the plain loop's steps.
    fused = toy_models.train(model, steps=30, lr=1e-2, seed=3, progress=False, log_every=1, fast=True)
    assert len(calls) == 31
    twin = toy_models.ToyModel(4, 2, 2, feature_probability=0.2, batch_fn=batch_fn,
                               generator=torch.Generator().manual_seed(0))
    plain = toy_models.train_model(twin, steps=30, lr=1e-2, seed=3, progress=False)
    torch.testing.assert_close(torch.stack(fused.losses), plain, atol=1e-6, rtol=1e-4)
    torch.testing.assert_close(model.W, twin.W, atol=1e-6, rtol=1e-4)
    with pytest.raises(ValueError, match="either batch_fn or"):
        toy_models.ToyModel(4, 2, batch_fn=batch_fn, correlated_sets=[[0, 1]])
    with pytest.raises(TypeError, match="batch_fn must be a function"):
        toy_models.ToyModel(4, 2, batch_fn=3)
