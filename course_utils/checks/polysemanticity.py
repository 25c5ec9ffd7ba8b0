"""Checks for chapter 03: the autoencoder's loss, counting polysemantic neurons, the collision
prediction (against a simulation) and the initial-argmax winner rate.

Each check runs the learner's function on seeded cases and compares it with the library's
reference in ``course_utils.polysemanticity``; ``_*_mistakes`` compute what common wrong
answers give, so that a failure can name the mistake.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from .. import polysemanticity as poly
from ._framework import (
    Case,
    CheckFailed,
    call_pure,
    exercise,
    expect_close,
    expect_device,
    expect_dtype,
    expect_finite,
    expect_shape,
    expect_tensor,
)
from ._helpers import _as_number, _generator, _randint

# --------------------------------------------------------------------------------------
# autoencoder_loss
# --------------------------------------------------------------------------------------


def _loss_case(seed: int) -> Case:
    """seed % 4 picks: general; one instance with l1 = 0; n = m; large weights (diagonal of
    W Wᵀ above 1).  Most cases have negative entries in W Wᵀ, so a missing ReLU shows."""
    gen = _generator(seed)
    kind = seed % 4
    instances = 1 if kind == 1 else _randint(gen, 2, 3)
    n = _randint(gen, 2, 5)
    m = n if kind == 2 else _randint(gen, n + 1, 2 * n + 1)
    scale = 1.6 if kind == 3 else 1.0
    W = torch.randn(instances, n, m, generator=gen) * scale / math.sqrt(m)
    l1 = 0.0 if kind == 1 else [0.01, 0.3, 0.05][seed % 3]
    return Case(f"instances={instances}, n={n}, m={m}, l1={l1:g}", W=W, l1=l1)


def _loss_mistakes(W: Tensor, l1: float) -> dict[str, Tensor]:
    n = W.shape[-2]
    eye = torch.eye(n).expand(W.shape[0], n, n)
    G = W @ W.transpose(-1, -2)
    y = torch.relu(G)
    penalty = l1 * W.abs().sum(dim=(-1, -2))
    sse = (y - eye).square().sum(dim=(-1, -2))
    mistakes = {
        "the output ReLU is missing (y = W Wᵀ x)": (G - eye).square().sum(dim=(-1, -2)) + penalty,
        "a ReLU on the hidden layer too (y = ReLU(W ReLU(Wᵀ x))); the model has one ReLU, on the output":
            (torch.relu(torch.relu(W) @ W.transpose(-1, -2)) - eye).square().sum(dim=(-1, -2)) + penalty,
        "the ReLU is on the hidden layer only (ReLU(Wᵀ x) fed to W, no output ReLU)":
            (torch.relu(W) @ W.transpose(-1, -2) - eye).square().sum(dim=(-1, -2)) + penalty,
        "the squared errors are averaged instead of summed": (y - eye).square().mean(dim=(-1, -2)) + penalty,
        "the L1 penalty is missing": sse,
        "the penalty squares the weights (L2) instead of taking absolute values":
            sse + l1 * W.square().sum(dim=(-1, -2)),
        "the penalty sums the signed weights (no absolute value)": sse + l1 * W.sum(dim=(-1, -2)),
        "the L1 penalty is summed over all instances instead of one instance at a time":
            sse + l1 * W.abs().sum(),
        "the penalty averages |w| instead of summing it": sse + l1 * W.abs().mean(dim=(-1, -2)),
        "the errors are not squared (‖y − x‖ instead of ‖y − x‖²)":
            (y - eye).norm(dim=-1).sum(dim=-1) + penalty,
    }
    return mistakes


@exercise(
    "autoencoder_loss",
    cases=_loss_case,
    seeds=range(8),
    hints=[
        "The dataset is the n basis vectors, so stack them as x = torch.eye(n) (one per row, "
        "expanded over instances); the model is y = ReLU(x W Wᵀ) in row-vector form.",
        "Reconstruction: ((y − x)²) summed over both the batch and the feature axes, one number "
        "per instance; then add λ · |W| summed over the n × m weights of that instance.",
        "Shapes: W is (instances, n, m); W @ W.transpose(-1, -2) is (instances, n, n) and is "
        "already the whole batch of outputs before the ReLU, because the inputs are the identity.",
    ],
)
def check_autoencoder_loss(learner, case: Case) -> None:
    """Check your ``autoencoder_loss(W, l1)``: Σ_i ‖ReLU(W Wᵀ e_i) − e_i‖² + λ Σ|W| over the n
    basis inputs, one number per instance.  W is (instances, n, m); return (instances,)."""
    out = call_pure(learner, {"W": case.W}, l1=case.l1)
    expected = poly.autoencoder_loss(case.W, case.l1)
    out = expect_tensor(out)
    expect_shape(out, expected.shape, "(instances,)")
    expect_dtype(out, expected.dtype)
    expect_device(out, expected.device)
    expect_finite(out)
    expect_close(out, expected, suspects=_loss_mistakes(case.W, case.l1))


# --------------------------------------------------------------------------------------
# count_polysemantic_neurons
# --------------------------------------------------------------------------------------


def _planted_weights(gen: torch.Generator, instances: int, n: int, m: int) -> Tensor:
    """Mostly small weights, with active weights planted on random neurons (some shared, some
    negative) and decoys just outside [0.8, 1.2]."""
    W = (torch.rand(instances, n, m, generator=gen) - 0.5) * 0.1
    for i in range(instances):
        for feature in range(n):
            neuron = _randint(gen, 0, m - 1)
            magnitude = 0.8 + 0.4 * float(torch.rand(1, generator=gen))
            sign = 1.0 if float(torch.rand(1, generator=gen)) < 0.5 else -1.0
            W[i, feature, neuron] = sign * magnitude
        for _ in range(2):  # decoys: too small or too large to be active
            feature, neuron = _randint(gen, 0, n - 1), _randint(gen, 0, m - 1)
            W[i, feature, neuron] = [0.75, -1.3, 0.5, 1.25][_randint(gen, 0, 3)]
    return W


def _count_case(seed: int) -> Case:
    """seed % 4 picks: planted weights; one instance; a neuron with three features and a
    feature with three active weights; an instance with no active weight at all.  Every case
    has weights exactly on the ends of the range (0.8 and −1.2), which count as active."""
    gen = _generator(seed)
    kind = seed % 4
    instances = 1 if kind == 1 else _randint(gen, 2, 4)
    n = _randint(gen, 3, 7)
    m = _randint(gen, n + 1, 2 * n)  # n != m, so the wrong axis shows
    W = _planted_weights(gen, instances, n, m)
    label = f"instances={instances}, n={n}, m={m}"
    if kind == 2:
        W[0, :3, 0] = torch.tensor([0.9, -1.1, 1.0])
        W[0, 1, 1:3] = torch.tensor([1.0, -0.95])
        label += ", neuron 0 of instance 0 has three active features"
    if kind == 3:
        W[-1] = (torch.rand(n, m, generator=gen) - 0.5) * 0.1
        label += ", the last instance has no active weight"
    # a negative pair on one neuron in the first instance, so that |w| matters
    W[0, 0, m - 1], W[0, n - 1, m - 1] = -0.9, -1.05
    # the ends of the range are active: a pair 0.8, −1.2 on one neuron (not in the instance
    # that has no active weight)
    k = 0 if kind == 3 else -1
    W[k, 1, m - 2], W[k, n - 2, m - 2] = 0.8, -1.2
    return Case(label, W=W)


def _count_mistakes(W: Tensor) -> dict[str, Tensor]:
    magnitude = W.abs()
    active = poly.active_weights(W)
    return {
        "negative weights are not counted (compare |w| with the range, not w)":
            (((W >= 0.8) & (W <= 1.2)).sum(-2) >= 2).sum(-1),
        "the count is over features with two or more active weights (the wrong axis: neurons are "
        "the columns of W)": (active.sum(-1) >= 2).sum(-1),
        "every neuron with at least one active weight is counted (polysemantic needs two or more)":
            (active.sum(-2) >= 1).sum(-1),
        "the ends of the range are excluded (0.8 and 1.2 themselves are active: use >= and <=)":
            ((((magnitude > 0.8) & (magnitude < 1.2)).sum(-2)) >= 2).sum(-1),
        "weights above 1.2 are counted as active (the range is [0.8, 1.2])":
            ((magnitude >= 0.8).sum(-2) >= 2).sum(-1),
        "the result counts active features on polysemantic neurons instead of neurons":
            (active.sum(-2) * (active.sum(-2) >= 2)).sum(-1),
        "the count is summed over all instances instead of one per instance":
            poly.polysemantic_neurons(W).sum().expand(W.shape[0]),
    }


@exercise(
    "count_polysemantic_neurons",
    cases=_count_case,
    seeds=range(8),
    hints=[
        "A weight is active when 0.8 <= |w| <= 1.2; a neuron (a column of W) is polysemantic "
        "when two or more features (rows) have an active weight on it.",
        "active = (W.abs() >= 0.8) & (W.abs() <= 1.2) is (instances, n, m); sum it over the "
        "feature axis (dim=-2) to get features per neuron, compare with 2, and sum over neurons.",
    ],
)
def check_count_polysemantic_neurons(learner, case: Case) -> None:
    """Check your ``count_polysemantic_neurons(W)``: the number of neurons on which two or more
    features have an active weight (|w| ∈ [0.8, 1.2]).  W is (instances, n, m); return
    (instances,) counts (any integer or float dtype)."""
    out = call_pure(learner, {"W": case.W})
    expected = poly.polysemantic_neurons(case.W)
    out = expect_tensor(out)
    expect_shape(out, expected.shape, "(instances,)")
    expect_finite(out)
    expect_close(out.double(), expected.double(), rtol=0, atol=1e-6,
                 suspects={k: v.double() for k, v in _count_mistakes(case.W).items()})


# --------------------------------------------------------------------------------------
# predicted_polysemantic, checked against a simulation
# --------------------------------------------------------------------------------------

_PREDICTION_SIZES = [(32, 64), (32, 512), (20, 20), (40, 10), (100, 300), (8, 4), (64, 128), (3, 1000)]
_SIMULATION_TRIALS = 40_000


def _prediction_case(seed: int) -> Case:
    n, m = _PREDICTION_SIZES[seed % len(_PREDICTION_SIZES)]
    counts = poly.simulate_polysemantic(n, m, trials=_SIMULATION_TRIALS, seed=1000 + seed).double()
    return Case(f"n={n}, m={m}", n=n, m=m, simulated=float(counts.mean()),
                standard_error=float(counts.std() / math.sqrt(counts.numel())))


def _prediction_mistakes(n: int, m: int) -> dict[str, float]:
    return {
        "n²/(2m) counts every birthday collision; only opposite-sign pairs survive the output ReLU":
            n * n / (2 * m),
        "the expected number of neurons with two or more winners ignores the signs (two positive "
        "features cannot share a neuron)": m * (1 - (1 - 1 / m) ** n - n / m * (1 - 1 / m) ** (n - 1)),
        "n²/(4m) is only the leading order for m ≫ n; compute the probability that a neuron wins at "
        "least one positive and one negative feature exactly": n * n / (4 * m),
        "C(n, 2)/(2m) is still the leading order (pairs), not the expected number of neurons":
            n * (n - 1) / (4 * m),
    }


@exercise(
    "predicted_polysemantic",
    cases=_prediction_case,
    seeds=range(8),
    hints=[
        "Model: each of the n features picks its winning neuron uniformly at random among m and "
        "its sign by a fair coin, i.e. one of 2m (neuron, sign) slots.  Two features of the same "
        "sign cannot share a neuron; so a neuron is polysemantic when it gets at least one "
        "positive and at least one negative feature.",
        "P(no positive feature on neuron j) = (1 − 1/(2m))ⁿ, the same for negative, and P(neither) "
        "= (1 − 1/m)ⁿ.  Inclusion-exclusion gives P(both); multiply by m (linearity of expectation).",
    ],
)
def check_predicted_polysemantic(learner, case: Case) -> None:
    """Check your ``predicted_polysemantic(n, m)`` (a number) against a Monte Carlo simulation
    of random winners and signs, within 4 standard errors (+0.5 %)."""
    out = _as_number(learner(case.n, case.m))
    tolerance = 4 * case.standard_error + 0.005 * abs(case.simulated) + 1e-9
    if abs(out - case.simulated) <= tolerance:
        return
    for description, wrong in _prediction_mistakes(case.n, case.m).items():
        if math.isclose(out, wrong, rel_tol=1e-6, abs_tol=1e-9):
            raise CheckFailed(f"your prediction is off and matches a known mistake: {description}")
    direction = "too high" if out > case.simulated else "too low"
    factor = out / case.simulated if case.simulated else float("inf")
    raise CheckFailed(f"your prediction is {direction} by a factor of {factor:.2f} against the simulation")


# --------------------------------------------------------------------------------------
# initial_argmax_win_rate
# --------------------------------------------------------------------------------------


def _winner_case(seed: int) -> Case:
    """A random W_init and a trained-looking W (one weight ≈ ±1 per feature) whose winner is
    the initial argmax of |w| for some features and another neuron for the rest.  The largest
    initial weight is often negative, so that a missing absolute value shows."""
    gen = _generator(seed)
    instances = 1 if seed % 4 == 1 else _randint(gen, 2, 4)
    n = _randint(gen, 3, 8)
    m = _randint(gen, n + 1, 2 * n + 2)
    W_init = torch.randn(instances, n, m, generator=gen) / math.sqrt(m)
    W = (torch.rand(instances, n, m, generator=gen) - 0.5) * 0.02
    initial = W_init.abs().argmax(-1)
    for i in range(instances):
        for feature in range(n):
            keep = float(torch.rand(1, generator=gen)) < 0.5
            neuron = int(initial[i, feature]) if keep else _randint(gen, 0, m - 1)
            W[i, feature, neuron] = 1.0 if float(torch.rand(1, generator=gen)) < 0.5 else -1.0
    return Case(f"instances={instances}, n={n}, m={m}", W_init=W_init, W=W)


def _winner_mistakes(W_init: Tensor, W: Tensor) -> dict[str, Tensor]:
    final = W.abs().argmax(-1)
    return {
        "the initial winner is the largest signed weight, not the largest |weight|":
            (W_init.argmax(-1) == final).float().mean(-1),
        "the final winner is the largest signed weight, not the largest |weight|":
            (W_init.abs().argmax(-1) == W.argmax(-1)).float().mean(-1),
        "the number of features is returned instead of the fraction":
            (W_init.abs().argmax(-1) == final).float().sum(-1),
        "the fraction is taken over all instances at once":
            (W_init.abs().argmax(-1) == final).float().mean().expand(W.shape[0]),
    }


@exercise(
    "initial_argmax_win_rate",
    cases=_winner_case,
    seeds=range(8),
    hints=[
        "A feature's winning neuron is the column of its largest |weight|: W.abs().argmax(dim=-1) "
        "gives (instances, n).  Do the same for W_init.",
        "Compare the two (instances, n) index tensors, convert the booleans to float and average "
        "over features only, one fraction per instance.",
    ],
)
def check_initial_argmax_win_rate(learner, case: Case) -> None:
    """Check your ``initial_argmax_win_rate(W_init, W)``: per instance, the fraction of
    features whose final winning neuron (largest |w|) is the neuron of their largest initial
    |w|.  Both are (instances, n, m); return (instances,) floats."""
    out = call_pure(learner, {"W_init": case.W_init, "W": case.W})
    expected = poly.initial_argmax_win_rate(case.W_init, case.W)
    out = expect_tensor(out)
    expect_shape(out, expected.shape, "(instances,)")
    expect_finite(out)
    if not out.is_floating_point():
        raise CheckFailed(f"output has dtype {out.dtype}; a fraction needs a float dtype "
                          "(convert the comparison with .float() before averaging)")
    expect_close(out, expected, suspects=_winner_mistakes(case.W_init, case.W))
