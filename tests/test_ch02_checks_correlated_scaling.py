"""The checks of chapter 02's data generators (correlated, anticorrelated) and of its scaling-law
exercises (signed weight decay, the training step): the references pass, the stubs are not
attempted, and plausible wrong implementations fail with a message naming the mistake."""

import pytest
import torch

from check_helpers import (
    assert_passes,
    assert_reference_passes_and_stub_is_not_attempted,
    assert_registered,
    failure,
)
from course_utils import checks, scaling
from course_utils import toy_models as ref

REFERENCES = {
    "correlated_batch": ref.correlated_batch,
    "anticorrelated_batch": ref.anticorrelated_batch,
    "signed_weight_decay_": scaling.signed_weight_decay_,
    "train_scaling_model": scaling.train_scaling_model,
}


@pytest.mark.parametrize("name", REFERENCES)
def test_reference_passes_and_stub_is_not_attempted(name, capsys):
    assert_reference_passes_and_stub_is_not_attempted(name, REFERENCES[name], capsys)


@pytest.mark.parametrize("name", ["correlated_batch", "anticorrelated_batch", "signed_weight_decay_"])
def test_reference_passes_hidden_seeds(name):
    assert_passes(name, REFERENCES[name], seeds=range(100, 116))


def test_the_scaling_loop_passes_hidden_seeds():
    assert_passes("train_scaling_model", scaling.train_scaling_model, seeds=range(100, 104))


def test_registered_under_the_exercise_names():
    assert_registered(["correlated_batch", "anticorrelated_batch", "signed_weight_decay_"])
    assert checks.EXERCISES["train_scaling_model"] is checks.check_train_scaling_model


def test_the_fast_generator_passes_both_checks():
    """The library's fast sampler draws the same distribution as the readable references."""
    fast_corr = lambda p, size, sets, generator=None: ref.generate_correlated_batch(p, size, sets, (), generator)
    fast_anti = lambda p, size, sets, generator=None: ref.generate_correlated_batch(p, size, (), sets, generator)
    assert_passes("correlated_batch", fast_corr)
    assert_passes("anticorrelated_batch", fast_anti)


# --------------------------------------------------------------------------------------
# correlated_batch
# --------------------------------------------------------------------------------------


def corr_same_value(p, size, sets, generator=None):
    x = ref.generate_batch(p, size, generator)
    for m in sets:
        active = torch.rand(p.shape[0], size, 1, generator=generator) < p[:, None, m[:1]]
        value = torch.rand(p.shape[0], size, 1, generator=generator)
        x[:, :, m] = (value * active).expand(-1, -1, len(m))
    return x


def corr_independent(p, size, sets, generator=None):
    return ref.generate_batch(p, size, generator)


def corr_one_draw_for_all_sets(p, size, sets, generator=None):
    x = ref.generate_batch(p, size, generator)
    u = torch.rand(p.shape[0], size, 1, generator=generator)
    for m in sets:
        x[:, :, m] = torch.rand(p.shape[0], size, len(m), generator=generator) * (u < p[:, None, m[:1]])
    return x


def corr_ignores_generator(p, size, sets, generator=None):
    return ref.correlated_batch(p, size, sets)


def corr_set_probability_summed(p, size, sets, generator=None):
    x = ref.generate_batch(p, size, generator)
    for m in sets:
        active = torch.rand(p.shape[0], size, 1, generator=generator) < p[:, None, m].sum(-1, keepdim=True)
        x[:, :, m] = torch.rand(p.shape[0], size, len(m), generator=generator) * active
    return x


@pytest.mark.parametrize("wrong, phrase", [
    (corr_same_value, "each feature draws its own value"),
    (corr_independent, "zero or nonzero together"),
    (corr_one_draw_for_all_sets, "are not independent"),
    (corr_ignores_generator, "`generator`"),
    (corr_set_probability_summed, "its feature_probability is"),
])
def test_correlated_batch_catches(wrong, phrase):
    assert phrase in failure("correlated_batch", wrong)


# --------------------------------------------------------------------------------------
# anticorrelated_batch
# --------------------------------------------------------------------------------------


def anti_member_uniform(p, size, sets, generator=None):
    """The set active with Σ p, then a uniformly chosen member: right only for equal p_i."""
    x = ref.generate_batch(p, size, generator)
    for m in sets:
        active = torch.rand(p.shape[0], size, 1, generator=generator) < p[:, None, m].sum(-1, keepdim=True)
        pick = torch.randint(len(m), (p.shape[0], size, 1), generator=generator)
        mask = torch.zeros(p.shape[0], size, len(m)).scatter_(2, pick, 1.0) * active
        x[:, :, m] = torch.rand(p.shape[0], size, len(m), generator=generator) * mask
    return x


def anti_independent(p, size, sets, generator=None):
    return ref.generate_batch(p, size, generator)


def anti_always_one(p, size, sets, generator=None):
    x = ref.generate_batch(p, size, generator)
    for m in sets:
        pick = torch.randint(len(m), (p.shape[0], size, 1), generator=generator)
        mask = torch.zeros(p.shape[0], size, len(m)).scatter_(2, pick, 1.0)
        x[:, :, m] = torch.rand(p.shape[0], size, len(m), generator=generator) * mask
    return x


def anti_shared_uniform(p, size, sets, generator=None):
    x = ref.generate_batch(p, size, generator)
    u = torch.rand(p.shape[0], size, 1, generator=generator)
    for m in sets:
        upper = p[:, m].cumsum(1)[:, None, :]
        mask = (u >= upper - p[:, None, m]) & (u < upper)
        x[:, :, m] = torch.rand(p.shape[0], size, len(m), generator=generator) * mask
    return x


@pytest.mark.parametrize("wrong, phrase", [
    (anti_member_uniform, "its feature_probability is"),
    (anti_independent, "two or more features of anticorrelated set"),
    (anti_always_one, "its feature_probability is"),
    (anti_shared_uniform, "are not independent"),
])
def test_anticorrelated_batch_catches(wrong, phrase):
    assert phrase in failure("anticorrelated_batch", wrong)


# --------------------------------------------------------------------------------------
# signed_weight_decay_
# --------------------------------------------------------------------------------------


def decay_plain(W, weight_decay, lr):
    with torch.no_grad():
        return W.mul_((1 - lr * weight_decay).reshape(-1, 1, 1))


def decay_without_no_grad(W, weight_decay, lr):
    g = weight_decay.reshape(-1, 1, 1)
    norms = W.norm(dim=1, keepdim=True) + 1e-8
    return W.mul_(torch.where(g < 0, 1 + lr * g * (1 - 1 / norms), 1 - lr * g))


def decay_without_epsilon(W, weight_decay, lr):
    with torch.no_grad():
        g = weight_decay.reshape(-1, 1, 1)
        norms = W.norm(dim=1, keepdim=True)
        return W.mul_(torch.where(g < 0, 1 + lr * g * (1 - 1 / norms), 1 - lr * g))


def decay_new_tensor(W, weight_decay, lr):
    return scaling.signed_weight_decay_(W.detach().clone(), weight_decay, lr)


def decay_wrong_axis(W, weight_decay, lr):
    with torch.no_grad():
        g = weight_decay.reshape(-1, 1, 1)
        norms = W.norm(dim=2, keepdim=True) + 1e-8
        return W.mul_(torch.where(g < 0, 1 + lr * g * (1 - 1 / norms), 1 - lr * g))


def decay_pushes_away(W, weight_decay, lr):
    with torch.no_grad():
        g = weight_decay.reshape(-1, 1, 1)
        norms = W.norm(dim=1, keepdim=True) + 1e-8
        return W.mul_(torch.where(g < 0, 1 - lr * g * (1 - 1 / norms), 1 - lr * g))


@pytest.mark.parametrize("wrong, phrase", [
    (decay_plain, "grows W without bound"),
    (decay_without_no_grad, "torch.no_grad()"),
    (decay_without_epsilon, "a zero column must stay zero"),
    (decay_new_tensor, "returned a new tensor"),
    (decay_wrong_axis, "wrong axis"),
    (decay_pushes_away, "pushed away from one"),
])
def test_signed_weight_decay_catches(wrong, phrase):
    assert phrase in failure("signed_weight_decay_", wrong)


# --------------------------------------------------------------------------------------
# train_scaling_model (the capstone)
# --------------------------------------------------------------------------------------


def scaling_loop(order="before", schedule=True, zero_grad=True, record="detach", fixed_seed=True):
    def train_scaling_model(W, b, feature_probability, weight_decay, decay, steps=1000, batch_size=512, lr=3e-2,
                            seed=0, progress=True):
        optimizer = torch.optim.Adam([W, b], lr=lr)
        generator = torch.Generator().manual_seed(seed if fixed_seed else seed + 1)
        losses = torch.zeros(steps, W.shape[0]) if record == "detach" else []
        for step in range(steps):
            current = lr * scaling.lr_multiplier(step, steps) if schedule else lr
            for group in optimizer.param_groups:
                group["lr"] = current
            x = scaling.sample_batch(feature_probability, batch_size, generator)
            loss = scaling.scaling_loss(W, b, x)
            if zero_grad:
                optimizer.zero_grad()
            loss.sum().backward()
            if order == "before":
                decay(W, weight_decay, current)
            optimizer.step()
            if order == "after":
                decay(W, weight_decay, current)
            if record == "detach":
                losses[step] = loss.detach()
            else:
                losses.append(loss.detach())
        return losses

    return train_scaling_model


def test_the_loop_written_as_the_chapter_asks_passes():
    assert_passes("train_scaling_model", scaling_loop())


@pytest.mark.parametrize("wrong, phrase", [
    (scaling_loop(order="after"), "the decay comes after the Adam step"),
    (scaling_loop(order="never"), "the decay is never applied"),
    (scaling_loop(schedule=False), "never follows the schedule"),
    (scaling_loop(zero_grad=False), "zero_grad() is missing"),
    (scaling_loop(record="list"), "return one tensor"),
    (scaling_loop(fixed_seed=False), "the loss of the first step differs"),
])
def test_train_scaling_model_catches(wrong, phrase):
    assert phrase in failure("train_scaling_model", wrong)
