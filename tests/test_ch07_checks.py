"""Chapter 07 checks: the reference passes, the stub is "not attempted", other right answers pass,
plausible wrong implementations fail with a message that names what is wrong, and broken learners
(raising, wrong shape, wrong type, NaN) fail without crashing; no message gives the answer away."""

from __future__ import annotations

import math

import pytest
import torch

from check_helpers import (
    assert_names_mistake,
    assert_passes,
    assert_reference_passes_and_stub_is_not_attempted,
    assert_registered,
    default_cases,
    failure,
)

from course_utils import checks, geometry
from course_utils import memorization as mz
from course_utils.checks import memorization as chapter

pytestmark = pytest.mark.usefixtures("one_thread")


# --------------------------------------------------------------------------------------
# Right answers, written as a learner would
# --------------------------------------------------------------------------------------


def warmup_cosine(step, steps, warmup=0.05):
    w = max(1, round(warmup * steps))
    if step < w:
        return (step + 1) / w
    return 0.5 * (1 + math.cos(math.pi * (step - w) / (steps - w)))


def data_point_dimensionality(H):
    norms = H.norm(dim=-1, keepdim=True)
    unit = H / torch.where(norms > 0, norms, torch.ones_like(norms))
    denominator = torch.einsum("itm,ism->its", unit, H).square().sum(-1)
    safe = torch.where(denominator > 0, denominator, torch.ones_like(denominator))
    return torch.where(denominator > 0, H.square().sum(-1) / safe, torch.zeros_like(denominator))


def train_finite_model(model, data, test, steps, lr, weight_decay, schedule, test_every=100, progress=True):
    optimizer = torch.optim.AdamW([model.W, model.b], lr=lr, weight_decay=weight_decay)
    train_losses = torch.zeros(steps, model.n_instances)
    test_losses = []
    for step in range(steps):
        for group in optimizer.param_groups:
            group["lr"] = lr * schedule(step, steps)
        loss = mz.finite_loss(model.W, model.b, data)
        optimizer.zero_grad()
        loss.sum().backward()
        optimizer.step()
        train_losses[step] = loss.detach()
        if step % test_every == 0 or step == steps - 1:
            test_losses.append(mz.evaluate(model, test))
    return train_losses, torch.stack(test_losses)


REFERENCES = {
    "warmup_cosine": warmup_cosine,
    "data_point_dimensionality": data_point_dimensionality,
    "train_finite_model": train_finite_model,
}


@pytest.mark.parametrize("name", REFERENCES)
def test_reference_passes_and_stub_is_not_attempted(name, capsys):
    assert_reference_passes_and_stub_is_not_attempted(name, REFERENCES[name], capsys)


@pytest.mark.parametrize("name", REFERENCES)
def test_reference_passes_hidden_seeds(name):
    assert_passes(name, REFERENCES[name], seeds=range(100, 116))


def test_registered_under_the_exercise_names():
    assert_registered(["warmup_cosine", "data_point_dimensionality"])
    assert_registered(["train_finite_model"], min_seeds=4)
    for name in REFERENCES:  # the chapter runs the library's function when the learner's fails
        assert checks.EXERCISES[name].exercise.reference is getattr(mz, name)


def test_other_right_answers_pass():
    """The library itself, chapter 02's feature dimensionality on Hᵀ, a loop over the examples,
    a 0-d tensor for the schedule, a loop that preallocates its test losses."""
    def schedule_tensor(step, steps, warmup=0.05):
        return torch.tensor(warmup_cosine(step, steps, warmup), dtype=torch.float64)

    def dimensionality_by_loop(H):
        out = torch.zeros(H.shape[:2], dtype=H.dtype)
        for i in range(H.shape[0]):
            for t in range(H.shape[1]):
                h = H[i, t]
                if h.norm() > 0:
                    out[i, t] = h @ h / sum(float(h @ s) ** 2 / float(h @ h) for s in H[i])
        return out

    def train_preallocated(model, data, test, steps, lr, weight_decay, schedule, test_every=100):
        optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
        evaluations = [t for t in range(steps) if t % test_every == 0 or t == steps - 1]
        train_losses, test_losses = torch.zeros(steps, model.n_instances), torch.zeros(len(evaluations), model.n_instances)
        for step in range(steps):
            optimizer.param_groups[0]["lr"] = lr * schedule(step, steps)
            optimizer.zero_grad()
            loss = mz.finite_loss(model.W, model.b, data)
            loss.sum().backward()
            optimizer.step()
            train_losses[step] = loss.detach()
            if step in evaluations:
                test_losses[evaluations.index(step)] = mz.evaluate(model, test)
        return train_losses, test_losses

    for name, learner in [("warmup_cosine", mz.warmup_cosine), ("warmup_cosine", schedule_tensor),
                          ("data_point_dimensionality", mz.data_point_dimensionality),
                          ("data_point_dimensionality", lambda H: geometry.feature_dimensionality(H.transpose(1, 2))),
                          ("data_point_dimensionality", dimensionality_by_loop),
                          ("train_finite_model", mz.train_finite_model),
                          ("train_finite_model", train_preallocated)]:
        assert_passes(name, learner)


def test_cases_cover_the_edges():
    schedules = default_cases("warmup_cosine", chapter._schedule_case)
    assert any(s.warmup * s.steps < 0.5 for s in schedules)            # the warmup still takes one step
    assert any(round(s.warmup * s.steps) != int(s.warmup * s.steps) for s in schedules)   # rounding matters
    assert {3000, 10_000} <= {s.steps for s in schedules}              # the chapter's runs
    cases = default_cases("data_point_dimensionality", chapter._dimensionality_case)
    assert any((c.H.square().sum(-1) == 0).any() for c in cases)       # padded slots
    assert {c.H.shape[-1] for c in cases} >= {1, 2, 3} and {c.H.dtype for c in cases} == {torch.float32, torch.float64}
    polygon = next(c for c in cases if "regular" in c.label)
    T = polygon.H.shape[1]
    torch.testing.assert_close(mz.data_point_dimensionality(polygon.H)[0], torch.full((T,), 2 / T))
    training = default_cases("train_finite_model", chapter._training_case)
    assert len({c.weight_decay for c in training}) == 4 and any(c.schedule is chapter._constant for c in training)
    assert any(len(c.Ts) > 1 and len(set(c.Ts)) == len(c.Ts) for c in training)   # padded, one T per instance
    assert any((c.steps - 1) % c.test_every != 0 for c in training)    # the last step is evaluated apart
    assert len({c.m for c in training}) == 2 and len({c.steps for c in training}) >= 3


# --------------------------------------------------------------------------------------
# Wrong implementations: each fails, most with the mistake named
# --------------------------------------------------------------------------------------


def _cosine(t, start, length):
    return 0.5 * (1 + math.cos(math.pi * (t - start) / length))


@pytest.mark.parametrize("wrong, mistake", [
    (lambda t, steps, warmup=0.05: t / max(1, round(warmup * steps)) if t < max(1, round(warmup * steps))
     else _cosine(t, max(1, round(warmup * steps)), steps - max(1, round(warmup * steps))), "the warmup starts from 0"),
    (lambda t, steps, warmup=0.05: _cosine(t, 0, steps), "there is no warmup"),
    (lambda t, steps, warmup=0.05: (t + 1) / max(1, round(warmup * steps)) if t < max(1, round(warmup * steps))
     else _cosine(t, 0, steps), "the cosine runs from step 0"),
    (lambda t, steps, warmup=0.05: (t + 1) / max(1, int(warmup * steps)) if t < max(1, int(warmup * steps))
     else _cosine(t, max(1, int(warmup * steps)), steps - max(1, int(warmup * steps))), "rounded down"),
    (lambda t, steps, warmup=0.05: min(1.0, (t + 1) / max(1, round(warmup * steps))), "no cosine decay"),
])
def test_wrong_schedules_are_named(wrong, mistake):
    assert mistake in failure("warmup_cosine", wrong)


def test_broken_schedules_fail_without_the_answer():
    assert "first differs from the paper's at step" in failure("warmup_cosine", lambda t, s, w=0.05: 0.5)
    assert "expected one number" in failure("warmup_cosine", lambda t, s, w=0.05: torch.ones(2))
    assert "None" in failure("warmup_cosine", lambda t, s, w=0.05: None)
    assert "not a finite number" in failure("warmup_cosine", lambda t, s, w=0.05: float("nan"))
    assert "ZeroDivisionError" in failure("warmup_cosine", lambda t, s, w=0.05: t / 0)


def _dimensionality_with(H, *, include_self=True, unit=True, squared_norm=True):
    norms = H.norm(dim=-1, keepdim=True)
    u = H / norms.clamp_min(1e-30) if unit else H
    overlaps = torch.einsum("itm,ism->its", u, H).square()
    if not include_self:
        overlaps = overlaps.masked_fill(torch.eye(H.shape[1], dtype=torch.bool), 0)
    numerator = H.square().sum(-1) if squared_norm else H.norm(dim=-1)
    denominator = overlaps.sum(-1)
    ok = denominator > 0
    return torch.where(ok, numerator / torch.where(ok, denominator, torch.ones_like(denominator)), torch.zeros_like(numerator))


@pytest.mark.parametrize("wrong, mistake", [
    (lambda H: _dimensionality_with(H, include_self=False), "the sum leaves out s = t"),
    (lambda H: _dimensionality_with(H, unit=False), "the dot products use h_t itself"),
    (lambda H: _dimensionality_with(H, squared_norm=False), "the numerator is ‖h_t‖"),
])
def test_wrong_dimensionalities_are_named(wrong, mistake):
    assert_names_mistake("data_point_dimensionality", wrong, mistake)


def test_broken_dimensionalities_fail_without_the_answer():
    def nan_at_zero(H):
        unit = H / H.norm(dim=-1, keepdim=True)
        return H.square().sum(-1) / torch.einsum("itm,ism->its", unit, H).square().sum(-1)

    def normalises_in_place(H):
        out = data_point_dimensionality(H)
        H /= H.norm(dim=-1, keepdim=True).clamp_min(1e-30)
        return out

    assert "must get dimensionality 0" in failure("data_point_dimensionality", nan_at_zero)
    assert "in place" in failure("data_point_dimensionality", normalises_in_place)
    assert "shape" in failure("data_point_dimensionality", lambda H: data_point_dimensionality(H).T)
    assert "dtype" in failure("data_point_dimensionality", lambda H: data_point_dimensionality(H).double())
    assert "constant factor" in failure("data_point_dimensionality", lambda H: 2 * data_point_dimensionality(H))
    assert "must get dimensionality 0" in failure(
        "data_point_dimensionality", lambda H: data_point_dimensionality(H).masked_fill(H.square().sum(-1) == 0, 1.0))
    assert "differs from the reference" in failure(
        "data_point_dimensionality", lambda H: data_point_dimensionality(H).clamp_max(0.3))


def _train_with(model, data, test, steps, lr, weight_decay, schedule, test_every=100, *, optimizer="adamw",
                use_schedule=True, zero_grad=True, train_b=True, test_before=False, every_step=False, detach=True,
                as_list=False, reduce="sum"):
    params = [model.W, model.b] if train_b else [model.W]
    opt = (torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay) if optimizer == "adamw" else
           torch.optim.Adam(params, lr=lr, weight_decay=weight_decay if optimizer == "adam-l2" else 0.0))
    train_losses, test_losses = [], []
    for step in range(steps):
        for group in opt.param_groups:
            group["lr"] = lr * (schedule(step, steps) if use_schedule else 1.0)
        due = every_step or step % test_every == 0 or step == steps - 1
        if due and test_before:
            test_losses.append(mz.evaluate(model, test))
        loss = mz.finite_loss(model.W, model.b, data)
        if zero_grad:
            opt.zero_grad()
        getattr(loss, reduce)().backward()
        opt.step()
        train_losses.append(loss.detach() if detach else loss)
        if due and not test_before:
            test_losses.append(mz.evaluate(model, test))
    return torch.stack(train_losses), (test_losses if as_list else torch.stack(test_losses))


@pytest.mark.parametrize("options, mistake", [
    (dict(optimizer="adam-l2"), "torch.optim.Adam(..., weight_decay=...) adds the decay to the gradient"),
    (dict(optimizer="adam"), "the weight decay is missing"),
    (dict(use_schedule=False), "never follows the schedule"),
    (dict(zero_grad=False), "never zeroed"),
    (dict(train_b=False), "trains W only"),
    (dict(test_before=True), "measured before the step's update"),
    (dict(reduce="mean"), "averaged (loss.mean())"),
])
def test_wrong_training_loops_are_named(options, mistake):
    def wrong(model, data, test, steps, lr, weight_decay, schedule, test_every=100):
        return _train_with(model, data, test, steps, lr, weight_decay, schedule, test_every, **options)

    assert mistake in failure("train_finite_model", wrong)


def test_broken_training_loops_fail_without_the_answer():
    def args(f):
        return lambda model, data, test, steps, lr, weight_decay, schedule, test_every=100: f(
            model, data, test, steps, lr, weight_decay, schedule, test_every)

    assert "(evaluations, instances)" in failure(
        "train_finite_model", args(lambda *a: _train_with(*a, every_step=True)))
    assert "torch.stack" in failure("train_finite_model", args(lambda *a: _train_with(*a, as_list=True)))
    assert "autograd graph" in failure("train_finite_model", args(lambda *a: _train_with(*a, detach=False)))
    assert "W did not change" in failure(
        "train_finite_model", args(lambda m, d, t, steps, *rest: (torch.zeros(steps, m.n_instances),
                                                                 torch.zeros(len(range(0, steps, rest[-1]))
                                                                             + int((steps - 1) % rest[-1] != 0),
                                                                             m.n_instances))))
    assert "expected two tensors" in failure("train_finite_model", args(lambda *a: _train_with(*a)[0]))
    assert "`return`" in failure("train_finite_model", args(lambda *a: None))

    def lr_off_by_one_step(model, data, test, steps, lr, weight_decay, schedule, test_every=100):
        return _train_with(model, data, test, steps, lr, weight_decay, lambda t, s: schedule(t + 1, s), test_every)

    assert "leave the reference loop's at step" in failure("train_finite_model", lr_off_by_one_step)

    def first_loss_of_a_copy(model, data, test, steps, lr, weight_decay, schedule, test_every=100):
        train, tests = _train_with(model, data, test, steps, lr, weight_decay, schedule, test_every)
        return train * 1.5, tests

    assert "the loss of the first step differs" in failure("train_finite_model", first_loss_of_a_copy)

    def raises_system_exit(*args, **kwargs):
        raise SystemExit(1)

    assert "SystemExit" in failure("train_finite_model", raises_system_exit)
