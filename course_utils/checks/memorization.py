"""Checks for chapter 07 (Henighan et al. 2023, memorization and double descent): the paper's
learning-rate schedule, the data-point dimensionality, and the capstone, the training loop on a
finite dataset.

Each check compares the learner's code with the library's reference
(``course_utils.memorization``) on seeded cases; ``_*_mistakes`` compute what common wrong
answers give, so that a failure can name the mistake without showing the right values.
"""

from __future__ import annotations

import functools
import math

import torch
from torch import Tensor

from .. import memorization as ref
from ..toy_models import ToyModel
from ._framework import (
    Case,
    CheckFailed,
    accepts_argument,
    call_pure,
    exercise,
    expect_close,
    expect_finite,
    expect_output,
    expect_shape,
    expect_tensor,
)
from ._helpers import _as_number, _generator, _randint

# --------------------------------------------------------------------------------------
# warmup_cosine: the paper's learning-rate schedule
# --------------------------------------------------------------------------------------

# (steps, warmup) per seed: the chapter's 5 % of 3,000 and 10,000 steps, a warmup shorter than
# one step (it still takes one), one that rounds up, an odd length, half the run
_SCHEDULES = ((3000, 0.05), (20, 0.1), (7, 0.05), (50, 0.25), (10_000, 0.05), (13, 0.3), (40, 0.5), (101, 0.07))


def _schedule_case(seed: int) -> Case:
    steps, warmup = _SCHEDULES[seed % len(_SCHEDULES)]
    return Case(f"steps={steps}, warmup={warmup:g}", steps=steps, warmup=warmup)


def _warmup_steps(steps: int, warmup: float) -> int:
    return max(1, round(warmup * steps))


def _steps_to_check(steps: int, warmup: float) -> list[int]:
    """The steps at which a schedule is compared: every step of a short run; for a long one
    every step of the warmup and just after it, the last steps, and 200 spread over the decay
    (the grader calls the learner's function in a sandbox, one call per step, so 10,000 calls
    would take longer than its time limit)."""
    if steps <= 400:
        return list(range(steps))
    w = _warmup_steps(steps, warmup)
    spread = {round(w + i * (steps - 1 - w) / 199) for i in range(200)}
    return sorted(set(range(min(steps, w + 3))) | spread | set(range(steps - 3, steps)))


def _schedule_mistakes(steps: int, warmup: float) -> dict[str, list[float]]:
    """The multipliers of a few wrong schedules at the steps ``_steps_to_check`` compares."""
    w = _warmup_steps(steps, warmup)
    at = _steps_to_check(steps, warmup)

    def cosine(t: int, start: int, length: int) -> float:
        return 0.5 * (1 + math.cos(math.pi * (t - start) / max(1, length)))

    floor = max(1, int(warmup * steps))
    return {
        "the warmup starts from 0 (t / w): the paper's first step already moves, at (t + 1) / w":
            [t / w if t < w else cosine(t, w, steps - w) for t in at],
        "the cosine runs from step 0 instead of from the end of the warmup":
            [(t + 1) / w if t < w else cosine(t, 0, steps) for t in at],
        "there is no warmup: the multiplier starts at 1": [cosine(t, 0, steps) for t in at],
        "the cosine reaches zero one step early (at the last step); it divides by steps − w":
            [(t + 1) / w if t < w else cosine(t, w, steps - w - 1) for t in at],
        "the warmup length is rounded down (int); the paper's w is round(warmup · steps), at least 1":
            [(t + 1) / floor if t < floor else cosine(t, floor, steps - floor) for t in at],
        "there is no cosine decay: after the warmup the multiplier stays at 1":
            [(t + 1) / w if t < w else 1.0 for t in at],
    }


@exercise(
    "warmup_cosine",
    cases=_schedule_case,
    seeds=range(8),
    reference=ref.warmup_cosine,
    passed="{n}/{n} schedules match the paper's.",
    hints=[
        "Two pieces. During the warmup, the first w = max(1, round(warmup * steps)) steps, the "
        "multiplier rises linearly to 1; after it, it follows half a cosine from 1 down to 0.",
        "Warmup: step t (counted from 0) gets (t + 1) / w, so step w − 1 reaches exactly 1. "
        "Decay: the cosine's argument is π (t − w) / (steps − w), 0 at t = w.",
        "After the warmup: 0.5 * (1 + math.cos(math.pi * (step - w) / (steps - w))). Return one "
        "number (a float).",
    ],
)
def check_warmup_cosine(learner, case: Case) -> None:
    """Check your ``warmup_cosine(step, steps, warmup)``: the paper's learning-rate multiplier,
    linear from (t + 1)/w to 1 over the first w = max(1, round(warmup · steps)) steps, then a
    cosine decay towards 0; every step of a short run is compared, and of a long one the
    warmup, the last steps and 200 steps spread over the decay."""
    at = _steps_to_check(case.steps, case.warmup)
    expected = [ref.warmup_cosine(t, case.steps, case.warmup) for t in at]
    values = [_as_number(learner(t, case.steps, case.warmup)) for t in at]
    close = [abs(v - e) <= 1e-6 for v, e in zip(values, expected)]
    if all(close):
        return
    for description, wrong in _schedule_mistakes(case.steps, case.warmup).items():
        if all(abs(v - u) <= 1e-6 for v, u in zip(values, wrong)):
            raise CheckFailed(f"your schedule matches a known mistake: {description}")
    t = at[close.index(False)]
    phase = "the warmup" if t < _warmup_steps(case.steps, case.warmup) else "the cosine decay"
    raise CheckFailed(f"your multiplier first differs from the paper's at step {t} of {case.steps}, "
                      f"during {phase}")


# --------------------------------------------------------------------------------------
# data_point_dimensionality
# --------------------------------------------------------------------------------------


def _regular_polygon(T: int, radius: float = 1.0, phase: float = 0.0) -> Tensor:
    angles = phase + torch.arange(T, dtype=torch.float64) * 2 * math.pi / T
    return radius * torch.stack([angles.cos(), angles.sin()], dim=-1)


def _dimensionality_case(seed: int) -> Case:
    """H (instances, T, m).  seed % 4: 0 a regular T-gon in m = 2 (D = 2/T each) beside a random
    instance; 1 random, m = 1 (seed % 8 == 1) or 2 to 5; 2 a padded sweep (zero vectors after each instance's
    own T, and a zero vector in the middle); 3 float64 with an antipodal pair and a vector
    orthogonal to everything else."""
    gen = _generator(seed)
    kind = seed % 4
    if kind == 0:
        T = _randint(gen, 3, 8)
        polygon = _regular_polygon(T, 1.0 + float(torch.rand((), generator=gen)), float(torch.rand((), generator=gen)))
        H = torch.stack([polygon, torch.randn(T, 2, generator=gen, dtype=torch.float64)]).float()
        return Case(f"instances=2 (a regular {T}-gon, then random), T={T}, m=2", H=H)
    if kind == 1:
        instances, T, m = _randint(gen, 1, 3), _randint(gen, 2, 9), 1 if seed % 8 == 1 else _randint(gen, 2, 5)
        H = torch.randn(instances, T, m, generator=gen) * (0.2 + 2 * torch.rand(instances, T, 1, generator=gen))
        return Case(f"instances={instances}, T={T}, m={m}", H=H)
    if kind == 2:
        Ts = [_randint(gen, 2, 6), _randint(gen, 5, 9), 1]
        T_max, m = max(Ts), _randint(gen, 2, 3)
        H = torch.randn(3, T_max, m, generator=gen)
        for k, T in enumerate(Ts):
            H[k, T:] = 0
        H[1, 1] = 0
        return Case(f"instances=3 padded to T={T_max} (zero vectors in the empty slots), m={m}", H=H)
    T = _randint(gen, 4, 7)
    H = torch.zeros(1, T, 3, dtype=torch.float64)
    H[0, :, :2] = torch.randn(T, 2, generator=gen, dtype=torch.float64)
    H[0, 1, :2] = -0.5 * H[0, 0, :2]
    H[0, -1] = torch.tensor([0.0, 0.0, 1.5], dtype=torch.float64)
    return Case(f"instances=1, T={T}, m=3, float64 (an antipodal pair, one vector alone in its dimension)", H=H)


def _dimensionality_mistakes(H: Tensor) -> dict[str, Tensor]:
    """What wrong dimensionalities give on H (zero vectors get 0 in each)."""
    norms2 = H.square().sum(-1)  # (instances, T)
    nonzero = norms2 > 0
    unit = H / norms2.sqrt().clamp_min(1e-30)[..., None]
    overlaps = torch.einsum("itm,ism->its", unit, H)  # ĥ_t · h_s
    dots = torch.einsum("itm,ism->its", H, H)  # h_t · h_s

    def safe(numerator: Tensor, denominator: Tensor) -> Tensor:
        ok = nonzero & (denominator > 0)
        return torch.where(ok, numerator / torch.where(ok, denominator, torch.ones_like(denominator)),
                           torch.zeros_like(numerator))

    squared = overlaps.square()
    eye = torch.eye(H.shape[1], dtype=torch.bool)
    return {
        "the sum leaves out s = t; the paper's sum runs over every training example, t itself included":
            safe(norms2, squared.masked_fill(eye, 0).sum(-1)),
        "the dot products use h_t itself where the paper has the unit vector ĥ_t = h_t / ‖h_t‖":
            safe(norms2, dots.square().sum(-1)),
        "the numerator is ‖h_t‖ where the paper has ‖h_t‖²": safe(norms2.sqrt(), squared.sum(-1)),
        "the overlaps are not squared: the paper sums (ĥ_t · h_s)²": safe(norms2, overlaps.abs().sum(-1)),
        "this is 1 / Σ_s cos²(h_t, h_s): the paper weighs each h_s by its length, (ĥ_t · h_s)² over ‖h_t‖²":
            safe(torch.ones_like(norms2), torch.einsum("itm,ism->its", unit, unit).square().sum(-1)),
    }


@exercise(
    "data_point_dimensionality",
    cases=_dimensionality_case,
    seeds=range(8),
    reference=ref.data_point_dimensionality,
    hints=[
        "It is chapter 02's feature dimensionality with the training examples' hidden vectors h_t "
        "(the rows of H) in place of the features W_i: D^t = ‖h_t‖² / Σ_s (ĥ_t · h_s)², the sum over "
        "every s, t included.",
        "All overlaps at once: unit = H / ‖H‖ along the last axis, then "
        "torch.einsum('itm,ism->its', unit, H) is ĥ_t · h_s, shape (instances, T, T); square it and "
        "sum over s.",
        "A zero vector (an empty slot of a padded training set) has a zero denominator: give it 0 "
        "with torch.where(denominator > 0, ..., 0) instead of dividing by zero (and divide by a safe "
        "norm when you make the unit vectors).",
    ],
)
def check_data_point_dimensionality(learner, case: Case) -> None:
    """Check your ``data_point_dimensionality(H)``: D^t = ‖h_t‖² / Σ_s (ĥ_t · h_s)² for every
    hidden vector h_t (the rows of H (instances, T, m)), returned as (instances, T); a zero
    vector gets 0."""
    out = call_pure(learner, {"H": case.H})
    expected = ref.data_point_dimensionality(case.H)
    out = expect_output(out, expected, "(instances, T)",
                        finite_note=": a zero vector (an empty slot of a padded training set) must get "
                                    "dimensionality 0, not a division by zero")
    zero = case.H.square().sum(-1) == 0
    if zero.any() and not (out[zero] == 0).all():
        raise CheckFailed("a zero vector (an empty slot of a padded training set) must get dimensionality 0")
    expect_close(out, expected, suspects=_dimensionality_mistakes(case.H))


# --------------------------------------------------------------------------------------
# The capstone: training on a finite dataset
# --------------------------------------------------------------------------------------

_TRAINING = (  # per seed: (features, hidden, Ts, steps, lr, weight decay, warmup, test_every)
    (12, 2, (3, 8), 60, 3e-2, 0.5, 0.05, 7),
    (16, 3, (5,), 50, 1e-2, 1.0, 0.2, 20),
    (20, 2, (2, 6, 4), 61, 3e-2, 1e-2, 0.1, 60),
    (12, 2, (4, 9), 45, 2e-2, 0.0, 0.3, 1),
)


def _constant(step: int, steps: int) -> float:
    """A schedule that is no schedule (module level, so that the grader can send it)."""
    return 1.0


def _training_case(seed: int) -> Case:
    """A small batched model (one instance per T), its training sets and a fresh test set; the
    sizes, learning rate, weight decay, schedule and test interval change with the seed."""
    n, m, Ts, steps, lr, weight_decay, warmup, test_every = _TRAINING[seed % len(_TRAINING)]
    schedule = _constant if seed % 4 == 1 else functools.partial(ref.warmup_cosine, warmup=warmup)
    what = "a constant schedule" if schedule is _constant else f"warmup_cosine with warmup={warmup:g}"
    label = (f"{n} features, {m} dimensions, T={'/'.join(map(str, Ts))}, steps={steps}, lr={lr:g}, "
             f"weight_decay={weight_decay:g}, {what}, test_every={test_every}")
    return Case(label, n=n, m=m, Ts=Ts, steps=steps, lr=lr, weight_decay=weight_decay, schedule=schedule,
                test_every=test_every, seed=seed)


def _training_problem(case: Case) -> tuple[ToyModel, object, object]:
    """(model, data, test) of the case, the same for every call (own generators)."""
    model, data, test = ref.sweep_problem(case.Ts, case.m, case.n, 0.25, T_test=48, seed=case.seed, device="cpu")
    with torch.no_grad():  # a nonzero bias, so that a b left out of the optimiser shows at once
        model.b.copy_(0.1 * torch.randn(model.b.shape, generator=_generator(case.seed + 5)))
    return model, data, test


def _training_arguments(case: Case) -> dict:
    return dict(steps=case.steps, lr=case.lr, weight_decay=case.weight_decay, schedule=case.schedule,
                test_every=case.test_every)


def _training_mistakes(case: Case) -> dict[str, tuple[Tensor, Tensor, Tensor]]:
    """(train losses, test losses, final W) of known wrong loops on this case."""

    def run(optimizer="adamw", schedule=True, zero_grad=True, train_b=True, test_before=False, reduce="sum"):
        model, data, test = _training_problem(case)
        params = [model.W, model.b] if train_b else [model.W]
        if optimizer == "adamw":
            opt = torch.optim.AdamW(params, lr=case.lr, weight_decay=case.weight_decay)
        else:
            opt = torch.optim.Adam(params, lr=case.lr, weight_decay=case.weight_decay if optimizer == "adam-l2" else 0)
        train, tests = [], []
        for step in range(case.steps):
            for group in opt.param_groups:
                group["lr"] = case.lr * (case.schedule(step, case.steps) if schedule else 1.0)
            record = step % case.test_every == 0 or step == case.steps - 1
            if record and test_before:
                tests.append(ref.evaluate(model, test))
            loss = ref.finite_loss(model.W, model.b, data)
            if zero_grad:
                opt.zero_grad()
            getattr(loss, reduce)().backward()
            opt.step()
            train.append(loss.detach())
            if record and not test_before:
                tests.append(ref.evaluate(model, test))
        return torch.stack(train), torch.stack(tests), model.W.detach()

    mistakes = {
        "torch.optim.Adam(..., weight_decay=...) adds the decay to the gradient (an L2 penalty that "
        "Adam then rescales); the paper's AdamW shrinks the weights directly: use torch.optim.AdamW":
            run(optimizer="adam-l2"),
        "the weight decay is missing (plain Adam): use torch.optim.AdamW with weight_decay": run(optimizer="adam"),
        "the optimiser trains W only; b is a parameter of the model too": run(train_b=False),
        "the gradients are never zeroed (optimizer.zero_grad() is missing), so they accumulate "
        "from step to step": run(zero_grad=False),
        "the test loss is measured before the step's update; measure it after optimizer.step()":
            run(test_before=True),
    }
    if len(case.Ts) > 1:
        mistakes["the per-instance losses are averaged (loss.mean()) where the chapter sums them (loss.sum()): "
                 "Adam almost cancels the factor, but not where the gradients are tiny (its eps), so the "
                 "weights drift apart"] = run(reduce="mean")
    if case.schedule is not _constant:
        mistakes["the learning rate never follows the schedule (set lr · schedule(step, steps) on every "
                 "param group at every step)"] = run(schedule=False)
    return mistakes


def _evaluations(steps: int, test_every: int) -> int:
    return len(range(0, steps, test_every)) + int((steps - 1) % test_every != 0)


@exercise(
    "train_finite_model",
    cases=_training_case,
    seeds=range(4),
    time_limit=90,
    reference=ref.train_finite_model,
    passed="{n}/{n} training runs follow the reference loop step by step.",
    hints=[
        "One torch.optim.AdamW over [model.W, model.b] with lr and weight_decay. At every step set "
        "the learning rate, compute the loss of the whole training set, "
        "mz.finite_loss(model.W, model.b, data) (one loss per instance), and take one optimiser step "
        "on their sum.",
        "The learning rate at step t is lr * schedule(t, steps), set on every entry of "
        "optimizer.param_groups. Inside the loop: optimizer.zero_grad(), loss.sum().backward(), "
        "optimizer.step(); write loss.detach() into row t of a (steps, instances) tensor made before "
        "the loop.",
        "After optimizer.step(), when t % test_every == 0 or t == steps - 1, append mz.evaluate(model, test) "
        "(one test loss per instance) to a list; return (train_losses, torch.stack(test_losses)).",
    ],
)
def check_train_finite_model(learner, case: Case) -> None:
    """Check your ``train_finite_model(model, data, test, steps, lr, weight_decay, schedule,
    test_every, ...)``: it trains a small batched model on fixed training sets, full batch, and
    its train losses, test losses and final W and b must follow the course's loop (AdamW, the
    schedule at every step, the summed loss, the test loss after the update of every
    test_every-th step and of the last)."""
    mine, data, test = _training_problem(case)
    theirs, data_ref, test_ref = _training_problem(case)
    W0 = mine.W.detach().clone()
    torch.manual_seed(case.seed + 99_991)
    kwargs = {"progress": False} if accepts_argument(learner, "progress") else {}
    out = learner(mine, data, test, **_training_arguments(case), **kwargs)
    expected_train, expected_test = ref.train_finite_model(theirs, data_ref, test_ref, **_training_arguments(case),
                                                           progress=False)
    if not isinstance(out, (tuple, list)) or len(out) != 2:
        what = "None (did you forget to `return`?)" if out is None else (
            f"a {type(out).__name__} of {len(out)} items" if isinstance(out, (tuple, list)) else type(out).__name__)
        raise CheckFailed(f"your loop returned {what}; expected two tensors, (train_losses, test_losses)")
    train, tests = out
    if isinstance(tests, (tuple, list)) and tests and all(isinstance(t, Tensor) for t in tests):
        raise CheckFailed(f"your test losses are a {type(tests).__name__} of tensors: return one tensor "
                          "(evaluations, instances), e.g. torch.stack(test_losses)")
    for name, value, expected, axes, note in (
            ("train", train, expected_train, "(steps, instances)",
             "; keep every step's per-instance loss, not their mean"),
            ("test", tests, expected_test, "(evaluations, instances)",
             "; one row per evaluation: after the update of steps 0, test_every, 2·test_every, … and of "
             "the last step")):
        value = expect_tensor(value)
        if value.requires_grad:
            raise CheckFailed(f"your {name} losses still carry the autograd graph: keep loss.detach() "
                              "(otherwise every step's graph stays in memory)")
        expect_shape(value, expected.shape, axes, note=note)
        expect_finite(value)
    train, tests = train.detach().cpu().double(), tests.detach().cpu().double()
    if torch.equal(mine.W.detach(), W0):
        raise CheckFailed("the model's W did not change: train the model you are given, and call "
                          "optimizer.step() after backward()")

    def close(a: Tensor, b: Tensor) -> bool:
        return torch.allclose(a.double(), b.double(), rtol=1e-3, atol=1e-6)

    if not close(train[0], expected_train[0]):
        raise CheckFailed("the loss of the first step differs from the reference loop's, before any update: "
                          "record mz.finite_loss(model.W, model.b, data), one loss per instance, for the whole "
                          "training set")
    W, b = mine.W.detach(), mine.b.detach()
    if (close(train, expected_train) and close(tests, expected_test)
            and torch.allclose(W, theirs.W.detach(), rtol=1e-3, atol=1e-5)
            and torch.allclose(b, theirs.b.detach(), rtol=1e-3, atol=1e-5)):
        return
    for description, (wrong_train, wrong_test, wrong_W) in _training_mistakes(case).items():
        if close(train, wrong_train) and close(tests, wrong_test) and torch.allclose(W, wrong_W, rtol=1e-3, atol=1e-5):
            raise CheckFailed(f"your training matches a known mistake: {description}")
    if close(train, expected_train) and torch.allclose(W, theirs.W.detach(), rtol=1e-3, atol=1e-5):
        if not torch.allclose(b, theirs.b.detach(), rtol=1e-3, atol=1e-5):
            raise CheckFailed("your final b differs from the reference loop's although the losses agree")
        raise CheckFailed("your training follows the reference loop, but your test losses differ: measure "
                          "mz.evaluate(model, test) after optimizer.step() of every step t with "
                          "t % test_every == 0, and after the last step")
    apart = ~torch.isclose(train, expected_train.double(), rtol=1e-3, atol=1e-6)
    first = int(apart.any(dim=1).float().argmax()) if apart.any() else case.steps
    raise CheckFailed(f"your train losses leave the reference loop's at step {first} of {case.steps} (or the "
                      "final W differs): check the optimiser (AdamW with weight_decay), the learning rate at "
                      "each step, and the order zero_grad, backward, step")
