"""Checks for chapter 02's scaling-law exercises (Liu, Liu & Gore 2025): the signed weight
decay and the training step that applies it.

The decay is checked entry by entry against ``scaling.signed_weight_decay_``, in place, on
plain tensors and on a parameter that requires grad (the loop calls it on one).  The loop is
run for a few dozen steps from one seed next to ``scaling.train_scaling_model``; its losses
and final weights must follow the reference's, and ``_loop_mistakes`` names the usual ways
to go wrong (the decay after the Adam step, the schedule forgotten, ...).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .. import scaling as ref
from ._framework import (
    Case,
    CheckFailed,
    accepts_argument,
    exercise,
    expect_finite,
    expect_shape,
    expect_tensor,
)
from ._helpers import _generator, _randint

# --------------------------------------------------------------------------------------
# signed_weight_decay_
# --------------------------------------------------------------------------------------

_GAMMAS = {0: [-1.0, 0.0, 0.5], 1: [-1.0, -0.3], 2: [0.1, 1.0], 3: [-0.5, 0.2, -2.0], 4: [-1.0],
           5: [0.0, -0.7, 0.3, 2.0], 6: [0.3, -0.1], 7: [-1.5, 1.5, 0.0]}


def _decay_case(seed: int) -> Case:
    """seed % 8 picks the γ per instance (mixed signs, all negative, all positive, ...); norms
    of the columns spread around one; seed % 8 == 3 passes W as a parameter that requires
    grad, with one zero column (a dropped feature stays zero)."""
    gen = _generator(seed)
    kind = seed % 8
    gamma = torch.tensor(_GAMMAS[kind])
    hidden, features = _randint(gen, 2, 5), _randint(gen, 3, 9)
    W = torch.randn(len(gamma), hidden, features, generator=gen)
    W = W / W.norm(dim=1, keepdim=True) * (0.2 + 1.8 * torch.rand(len(gamma), 1, features, generator=gen))
    lr = float(0.005 + 0.1 * torch.rand(1, generator=gen))
    label = f"instances={len(gamma)}, hidden={hidden}, features={features}, γ = {', '.join(f'{g:g}' for g in gamma.tolist())}, lr={lr:.3f}"
    parameter = kind == 3
    if parameter:
        W[-1, :, 0] = 0.0
        label += ", W a parameter that requires grad, feature 0 of the last instance zero"
    return Case(label, W=W, weight_decay=gamma, lr=lr, parameter=parameter)


def _decay_mistakes(W: Tensor, gamma: Tensor, lr: float) -> dict[str, Tensor]:
    g = gamma.double().reshape(-1, 1, 1)
    W = W.double()
    norms = W.norm(dim=1, keepdim=True).clamp_min(1e-12)
    rows = W.norm(dim=2, keepdim=True).clamp_min(1e-12)
    whole = W.flatten(1).norm(dim=1).reshape(-1, 1, 1).clamp_min(1e-12)
    plain = (1 - lr * g) * W
    pull = lambda n, rate=lr: W * (1 + rate * g * (1 - 1 / n))  # γ < 0: the right pull, for norm n
    return {
        "a negative γ is applied as the plain decay (1 − lr·γ)W, which grows W without bound; "
        "for γ < 0 each feature's norm must be pulled towards one": plain,
        "for γ < 0 the norms are pushed away from one instead of pulled towards it":
            torch.where(g < 0, W * (1 - lr * g * (1 - 1 / norms)), plain),
        "the norm is taken over the wrong axis: W_i is feature i's column, W[k, :, i], a norm over "
        "the hidden axis (dim=1)": torch.where(g < 0, pull(rows), plain),
        "the norm is the whole instance's (Frobenius), not each feature's": torch.where(g < 0, pull(whole), plain),
        "the learning rate is left out of the decay": torch.where(g < 0, pull(norms, 1.0), (1 - g) * W),
        "1 − ‖W_i‖ is used where the rule has 1 − 1/‖W_i‖": torch.where(g < 0, W * (1 + lr * g * (1 - norms)), plain),
        "the norms are pulled towards one for positive γ as well":
            W * (1 - lr * g.abs() * (1 - 1 / norms)),
    }


@exercise(
    "signed_weight_decay_",
    reference=ref.signed_weight_decay_,
    cases=_decay_case,
    seeds=range(8),
    hints=[
        "Per instance k: γ ≥ 0 multiplies all of W[k] by (1 − lr·γ); γ < 0 rescales each feature's "
        "column W[k, :, i] by (1 + lr·γ·(1 − 1/‖W_i‖)), i.e. W_i − lr·|γ|·(1 − 1/‖W_i‖)·W_i.",
        "Reshape γ to (instances, 1, 1) so it broadcasts; the column norms are "
        "W.norm(dim=1, keepdim=True), (instances, 1, features); add 1e-8 before dividing, so a "
        "zero column stays zero. torch.where(γ < 0, ..., ...) picks the branch per instance.",
        "Change W in place (W.mul_(factor)) and return it, inside `with torch.no_grad():` (or "
        "decorate the function with @torch.no_grad()): the loop calls it on a parameter.",
    ],
)
def check_signed_weight_decay_(learner, case: Case) -> None:
    """Check your ``signed_weight_decay_(W, weight_decay, lr)``: in place on W (instances,
    hidden, features), returning W; per instance, γ ≥ 0 is the plain decoupled decay
    W ← (1 − lr·γ)W, γ < 0 pulls every feature column's norm towards one,
    W_i ← W_i − lr·|γ|(1 − 1/‖W_i‖)W_i.  W may be a parameter that requires grad."""
    W = nn.Parameter(case.W.clone()) if case.parameter else case.W.clone()
    gamma = case.weight_decay.clone()
    try:
        out = learner(W, gamma, case.lr)
    except CheckFailed as error:
        if "leaf Variable" in str(error):
            raise CheckFailed(f"{error} -- the training loop calls the decay on W, a parameter that requires "
                              "grad: change it inside `with torch.no_grad():`") from None
        raise
    expected = ref.signed_weight_decay_(case.W.clone(), case.weight_decay, case.lr)
    if not torch.equal(gamma, case.weight_decay):
        raise CheckFailed("your function changed weight_decay in place; only W changes")
    if out is None:
        raise CheckFailed("your function returned None: change W in place and `return W`")
    out = expect_tensor(out)
    changed = not torch.equal(W.detach(), case.W)
    if out is not W:
        if changed:
            raise CheckFailed("your function changed W in place but returned another tensor: return W itself")
        raise CheckFailed("your function left W unchanged and returned a new tensor: the loop relies on W "
                          "changing in place (W.mul_(factor)), so change it and return it")
    actual = W.detach()
    expect_shape(actual, expected.shape, "(instances, hidden, features)")
    expect_finite(actual, note=" (a zero column must stay zero: add 1e-8 to the norm before dividing)")
    close = lambda a, e: torch.allclose(a.double(), e.double(), rtol=1e-5, atol=1e-7)
    if close(actual, expected):
        return
    if not changed:
        raise CheckFailed("W is unchanged: change it in place")
    for description, wrong in _decay_mistakes(case.W, case.weight_decay, case.lr).items():
        if close(actual, wrong):
            raise CheckFailed(f"your decay matches a known mistake: {description}")
    apart = ~torch.isclose(actual.double(), expected.double(), rtol=1e-5, atol=1e-7)
    bad = sorted({int(k) for k in apart.nonzero()[:, 0]})
    raise CheckFailed(f"W differs from the reference's after the decay in instance(s) "
                      f"{', '.join(map(str, bad))} (of {W.shape[0]}; look at the branch of their γ)")


# --------------------------------------------------------------------------------------
# train_scaling_model
# --------------------------------------------------------------------------------------

LOOP_STEPS = 60


def _loop_case(seed: int) -> Case:
    gen = _generator(seed)
    gammas = [[-1.0, 0.1], [-0.5, 0.0, 0.5], [-1.0, 1.0], [0.1, -2.0, -1.0]][seed % 4]
    n, m = _randint(gen, 24, 40), _randint(gen, 3, 6)
    alpha = [0.25, 1.0][seed % 2]
    batch_size = [64, 96, 128, 80][seed % 4]
    lr = [3e-2, 1e-2, 2e-2, 3e-2][seed % 4]
    label = (f"n={n} features, m={m}, γ = {', '.join(f'{g:g}' for g in gammas)}, alpha={alpha}, steps={LOOP_STEPS}, "
             f"batch_size={batch_size}, lr={lr:g}, seed={seed}")
    return Case(label, n=n, m=m, weight_decay=torch.tensor(gammas), alpha=alpha, batch_size=batch_size,
                lr=lr, seed=seed)


def _start(case: Case) -> tuple[Tensor, Tensor]:
    W, b = ref.init_parameters(case.n, case.m, len(case.weight_decay), _generator(case.seed + 7))
    return W.requires_grad_(), b.requires_grad_()


def _arguments(case: Case) -> dict:
    return dict(feature_probability=ref.power_law_probability(case.n, case.alpha),
                weight_decay=case.weight_decay.clone(), steps=LOOP_STEPS, batch_size=case.batch_size,
                lr=case.lr, seed=case.seed)


def _variant(case: Case, *, order: str = "before", schedule: bool = True, decay_lr: str = "current",
             zero_grad: bool = True) -> tuple[Tensor, Tensor, Tensor]:
    """The reference loop with one thing changed: (losses, W, b)."""
    W, b = _start(case)
    args = _arguments(case)
    optimizer = torch.optim.Adam([W, b], lr=case.lr)
    generator = torch.Generator().manual_seed(case.seed)
    losses = torch.zeros(LOOP_STEPS, W.shape[0])
    for step in range(LOOP_STEPS):
        current = case.lr * ref.lr_multiplier(step, LOOP_STEPS) if schedule else case.lr
        for group in optimizer.param_groups:
            group["lr"] = current
        x = ref.sample_batch(args["feature_probability"], case.batch_size, generator)
        loss = ref.scaling_loss(W, b, x)
        if zero_grad:
            optimizer.zero_grad()
        loss.sum().backward()
        rate = current if decay_lr == "current" else case.lr
        if order == "before":
            ref.signed_weight_decay_(W, case.weight_decay, rate)
        optimizer.step()
        if order == "after":
            ref.signed_weight_decay_(W, case.weight_decay, rate)
        losses[step] = loss.detach()
    return losses, W.detach(), b.detach()


def _loop_mistakes(case: Case) -> dict[str, tuple[Tensor, Tensor, Tensor]]:
    return {
        "the decay comes after the Adam step; the paper applies it to W before each step":
            _variant(case, order="after"),
        "the decay is never applied": _variant(case, order="never"),
        "the learning rate never follows the schedule (set it at every step from lr_multiplier)":
            _variant(case, schedule=False),
        "the decay uses the peak lr, not the step's scheduled learning rate": _variant(case, decay_lr="peak"),
        "the gradients are never zeroed (optimizer.zero_grad() is missing), so they accumulate":
            _variant(case, zero_grad=False),
    }


@exercise(
    "train_scaling_model",
    reference=ref.train_scaling_model,
    cases=_loop_case,
    seeds=range(4),
    time_limit=90,
    passed="{n}/{n} training runs follow the reference loop step by step.",
    hints=[
        "One torch.optim.Adam([W, b], lr=lr) and one torch.Generator().manual_seed(seed), both "
        "made before the loop. At every step: the learning rate lr * scaling.lr_multiplier(step, "
        "steps) on every param group; a batch scaling.sample_batch(feature_probability, "
        "batch_size, generator); the per-instance loss scaling.scaling_loss(W, b, x).",
        "The order inside a step: optimizer.zero_grad(), loss.sum().backward(), then the decay on W "
        "at the step's learning rate, then optimizer.step(). The decay is decoupled: it changes "
        "W itself, not its gradient.",
        "Call the `decay` you are given (the chapter passes decay_, what exercise 6's check returned): "
        "decay(W, weight_decay, current_lr); "
        "record loss.detach() in row `step` of a (steps, instances) tensor made before the loop, "
        "and return it.",
    ],
)
def check_train_scaling_model(learner, case: Case) -> None:
    """Check your ``train_scaling_model(W, b, feature_probability, weight_decay, decay, steps,
    batch_size, lr, seed, ...)``: it trains small models for 60 steps from one seed, and its
    losses and final W and b must follow the course's loop (Adam, the warm-up-and-cosine
    schedule, the signed decay before each step at the step's learning rate, batches from
    the seeded generator)."""
    W, b = _start(case)
    W0 = W.detach().clone()
    if not accepts_argument(learner, "decay"):
        raise CheckFailed("your function takes no `decay` argument: keep the signature train_scaling_model(W, b, "
                          "feature_probability, weight_decay, decay, steps, batch_size, lr, seed, progress)")
    kwargs = {"progress": False} if accepts_argument(learner, "progress") else {}
    torch.manual_seed(case.seed + 99_991)  # torch's global stream is not the loop's seeded one
    # A module-level function, so that the grader's sandbox can send it to the learner's code.
    losses = learner(W, b, decay=ref.signed_weight_decay_, **_arguments(case), **kwargs)
    theirs_W, theirs_b = _start(case)
    expected = ref.train_scaling_model(theirs_W, theirs_b, **_arguments(case), progress=False)
    if isinstance(losses, (list, tuple)) and losses and all(isinstance(t, Tensor) for t in losses):
        raise CheckFailed(f"your loop returned a {type(losses).__name__} of tensors: return one tensor "
                          "of shape (steps, instances), filled row by row")
    losses = expect_tensor(losses)
    if losses.requires_grad:
        raise CheckFailed("your losses still carry the autograd graph: keep loss.detach() of each step")
    expect_shape(losses, expected.shape, "(steps, instances)", note="; keep every step's per-instance loss")
    expect_finite(losses)
    if torch.equal(W.detach(), W0):
        raise CheckFailed("W did not change: train the W and b you are given, and call optimizer.step()")
    close = lambda a, e: torch.allclose(a, e, rtol=1e-4, atol=1e-8)
    if not close(losses[0], expected[0]):
        raise CheckFailed("the loss of the first step differs from the reference loop's, before any update: "
                          "draw each batch with scaling.sample_batch(feature_probability, batch_size, generator) "
                          "from one generator seeded with `seed`, and record scaling.scaling_loss(W, b, x)")
    mine = (losses, W.detach(), b.detach())
    same = lambda run: close(mine[0], run[0]) and close(mine[1], run[1]) and close(mine[2], run[2])
    if same((expected, theirs_W.detach(), theirs_b.detach())):
        return
    for description, run in _loop_mistakes(case).items():
        if same(run):
            raise CheckFailed(f"your training matches a known mistake: {description}")
    apart = ~torch.isclose(losses, expected, rtol=1e-4, atol=1e-8)
    first = int(apart.any(dim=1).float().argmax()) if apart.any() else LOOP_STEPS
    raise CheckFailed(f"your losses leave the reference loop's at step {first} of {LOOP_STEPS} (or the final "
                      "W or b differs): check the learning rate at each step, the decay and its place in the "
                      "step, and the order zero_grad, backward, step")
