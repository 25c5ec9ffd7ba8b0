"""Checks for chapter 04: the privileged-basis model, the abs(x) model's data and loss, the
U-AND layer and its read-off, the read-off's error laws, and the naive baseline's loss.

Each check runs the learner's function on seeded cases and compares it with the library's
reference in ``course_utils.computation``; ``_*_mistakes`` compute what common wrong answers
give, so that a failure can name the mistake.  The abs(x) data, being random, is checked by
statistical tests (those of chapter 01's ``generate_batch``, plus the sign of the values).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from types import SimpleNamespace

import torch
from torch import Tensor

from .. import computation as comp
from ._framework import (
    Case,
    CheckFailed,
    call_pure,
    exercise,
    expect_close,
    expect_device,
    expect_dtype,
    expect_output,
    expect_shape,
    expect_tensor,
    judge_parameter,
    observed,
    plain,
    probe_aside,
    probe_parameter,
    same_tensor,
    same_value,
)
from ..toy_models import per_instance
from ._helpers import (
    _has_variance,
    _looks_normal,
    _expect_buffer,
    _method,
    Z,
    _as_number,
    _batch_case,
    _dict_number,
    _expect_entry,
    _expect_frequencies,
    _expect_independent,
    _expect_rows_differ,
    _generator,
    _model_shape,
    _randint,
    _reduction_mistakes,
    _relu,
    _sampled_batch,
    _uniform_test,
)


# --------------------------------------------------------------------------------------
# neuron_forward
# --------------------------------------------------------------------------------------


def _forward_case(seed: int) -> Case:
    """W, b, x with weights of both signs; seed % 4 picks the shape (general, one instance,
    hidden = 1, square W) and seed % 8 < 4 nonnegative inputs (U[0, 1], the model's data),
    else signed ones (U[−1, 1])."""
    gen = _generator(seed)
    instances, hidden, features = _model_shape(gen, seed)
    batch = _randint(gen, 3, 8)
    W = torch.randn(instances, hidden, features, generator=gen) / math.sqrt(hidden)
    b = 0.5 * torch.randn(instances, features, generator=gen)
    signed = seed % 8 >= 4
    values = torch.rand(instances, batch, features, generator=gen)
    values = 2 * values - 1 if signed else values
    active = torch.rand(instances, batch, features, generator=gen) < 0.7
    x = torch.where(active, values, torch.zeros(()))
    label = (f"instances={instances}, hidden={hidden}, features={features}, batch={batch}, "
             f"{'signed' if signed else 'nonnegative'} inputs")
    return Case(label, W=W, b=b, x=x)


def _forward_mistakes(case: Case) -> dict[str, Tensor]:
    """What common wrong forward passes output on this case."""
    W, b, x = case.W, case.b[:, None, :], case.x

    def down(v):  # W v: features -> hidden
        return torch.einsum("ihf,ibf->ibh", W, v)

    def up(h):  # Wᵀ h: hidden -> features
        return torch.einsum("ihf,ibh->ibf", W, h)

    h = _relu(down(x))
    mistakes = {
        "the hidden ReLU is missing (ReLU(Wᵀ W x + b) is chapter 01's model; this one has "
        "h = ReLU(W x))": _relu(up(down(x)) + b),
        "the output ReLU is missing (x' = Wᵀ ReLU(W x) + b)": up(h) + b,
        "both ReLUs are missing": up(down(x)) + b,
        "the bias b is missing": _relu(up(h)),
        "the bias is added after the output ReLU instead of before it": _relu(up(h)) + b,
        "the bias is added to the input (h = ReLU(W (x + b))) instead of to Wᵀ h":
            _relu(up(_relu(down(x + b)))),
        "the bias is added inside both layers": _relu(up(_relu(down(x + b))) + b),
    }
    if W.shape[1] == W.shape[2]:  # the transposes can only be swapped without an error when square
        swapped_h = _relu(torch.einsum("ihf,ibh->ibf", W, x))
        mistakes["W and Wᵀ are swapped (h = ReLU(Wᵀ x), x' = ReLU(W h + b))"] = _relu(
            torch.einsum("ihf,ibf->ibh", W, swapped_h) + b)
    return mistakes


@exercise(
    "neuron_forward",
    cases=_forward_case,
    reference=comp.neuron_forward,
    seeds=range(8),
    hints=[
        "Two ReLUs now: the hidden layer is h = ReLU(W x), and the output is x' = ReLU(Wᵀ h + b). "
        "The bias belongs to the output layer only.",
        "Keep the instance axis i in every step. With torch.einsum, name the axes i (instance), "
        "h (hidden), f (feature), b (batch): W is 'ihf', x is 'ibf' and h is 'ibh'.",
        "h = relu(einsum('ihf,ibf->ibh', W, x)); the output sums over h with 'ihf,ibh->ibf' and "
        "adds b[:, None, :] (to broadcast over the batch) before the second ReLU.",
    ],
)
def check_neuron_forward(learner, case: Case) -> None:
    """Check your ``neuron_forward(W, b, x)``: the privileged-basis model
    x' = ReLU(Wᵀ ReLU(W x) + b).  W is (instances, hidden, features), b (instances, features),
    x (instances, batch, features); return (instances, batch, features)."""
    out = call_pure(learner, {"W": case.W, "b": case.b, "x": case.x})
    expected = comp.neuron_forward(case.W, case.b, case.x)
    out = expect_output(out, expected, "(instances, batch, features)")
    expect_close(out, expected, suspects=_forward_mistakes(case))


# --------------------------------------------------------------------------------------
# abs_batch (statistical)
# --------------------------------------------------------------------------------------


def _expect_in_signed_interval(x: Tensor) -> None:
    outside = (x < -1) | (x > 1)
    if outside.any():
        raise CheckFailed(
            f"{int(outside.sum())} of {x.numel()} entries lie outside [−1, 1] (min {float(x.min()):.3g}, "
            f"max {float(x.max()):.3g}); active features are uniform on [−1, 1] "
            "(2 · torch.rand(...) − 1, not torch.randn)")


def _expect_both_signs(x: Tensor) -> None:
    """Half of the active entries are negative: a binomial z-test."""
    active = x[x != 0]
    n = active.numel()
    if n < 100:
        return
    negative = float((active < 0).double().mean())
    if negative == 0:
        raise CheckFailed("no active entry is negative: the values should be uniform on [−1, 1], "
                          "not on [0, 1] (stretch torch.rand to 2 · torch.rand(...) − 1)")
    if negative == 1:
        raise CheckFailed("every active entry is negative: the values should be uniform on [−1, 1]")
    if abs(negative - 0.5) > Z * math.sqrt(0.25 / n):
        advice = ("; draw the values and the active/inactive decision with separate random numbers"
                  if negative > 0.5 else "")
        raise CheckFailed(f"{negative:.1%} of the active entries are negative; uniform values on "
                          f"[−1, 1] are negative half of the time{advice}")


def _expect_signed_uniform_values(x: Tensor) -> None:
    """The nonzero entries are U[−1, 1]: mean, variance and the largest CDF deviation (KS)."""
    failed, mean, var, ks, n = _uniform_test(x, -1.0, 1.0)
    if failed:
        distinct = x[x != 0].abs().unique().numel()
        advice = ("; are the active values all the same size (±1)? Draw them uniformly"
                  if distinct <= 2 else
                  "; draw the values and the active/inactive decision with separate random numbers"
                  if ks > 2.5 / math.sqrt(n) and var < 1 / 3 else "")
        raise CheckFailed(
            f"the nonzero entries should be uniform on [−1, 1], but theirs have mean {mean:.3f}, "
            f"variance {var:.3f} (uniform: 0 and 1/3) and differ from the uniform CDF by up to "
            f"{ks:.3f}{advice}")


@exercise(
    "abs_batch",
    cases=_batch_case,
    reference=comp.abs_batch,
    seeds=range(8),
    passed="{n}/{n} cases have the right distribution.",
    hints=[
        "Each entry is independent: active with probability feature_probability[i, f], and then "
        "uniform on [−1, 1]; inactive entries are exactly 0.  It is chapter 01's generate_batch "
        "with signed values.",
        "Draw two random tensors of shape (instances, batch_size, features): one for the values, "
        "stretched from [0, 1] to [−1, 1] by 2 · u − 1, and one to compare with the probability. "
        "Pass generator= and device= to torch.rand.",
        "feature_probability is (instances, features); index it as feature_probability[:, None, :] "
        "to broadcast over the batch, and keep an entry where the random number is < p.",
    ],
)
def check_abs_batch(learner, case: Case) -> None:
    """Check your ``abs_batch(feature_probability, batch_size, generator=None)`` by statistics:
    shape (instances, batch_size, features), dtype, range [−1, 1], how often each feature is
    active (probability feature_probability[i, f]), signed uniform values, independence.
    Deterministic: each case seeds torch (and passes ``generator`` if your function takes one)."""
    p = case.feature_probability
    x = _sampled_batch(learner, case)
    _expect_in_signed_interval(x)
    _expect_rows_differ(x)
    _expect_frequencies(x, p.detach().to("cpu", torch.float64))
    _expect_both_signs(x)
    _expect_signed_uniform_values(x)
    _expect_independent(x.abs())  # whether features are active together
    _expect_independent(x)  # and whether their values are shared


# --------------------------------------------------------------------------------------
# abs_loss
# --------------------------------------------------------------------------------------


def _loss_case(seed: int) -> Case:
    """Signed sparse x (the abs model's data) with a negative entry in every instance, y ≥ 0
    near |x|; seed % 3 picks: general, one instance, batch of one."""
    gen = _generator(seed)
    kind = seed % 3
    instances = 1 if kind == 1 else _randint(gen, 2, 4)
    batch = 1 if kind == 2 else _randint(gen, 3, 8)
    features = _randint(gen, 2, 6)
    p = torch.full((instances, 1, features), 0.7)
    x = comp.signed_sparse_features((instances, batch, features), p, gen)
    x[:, 0, 0] = -0.6  # so that the target x and the target |x| differ in every instance
    y = _relu(x.abs() + 0.3 * torch.randn(instances, batch, features, generator=gen))
    importance = 0.1 + 0.9 * torch.rand(instances, features, generator=gen)
    label = f"instances={instances}, batch={batch}, features={features}"
    return Case(label, y=y, x=x, importance=importance)


def _abs_loss_mistakes(case: Case) -> dict[str, Tensor]:
    y, x, importance = case.y, case.x, case.importance[:, None, :]
    error = y - x.abs()
    weighted = importance * error**2
    right = weighted.mean(dim=(1, 2))
    return {
        "the target is x instead of |x|": (importance * (y - x) ** 2).mean(dim=(1, 2)),
        "the target is ReLU(x) instead of |x|": (importance * (y - _relu(x)) ** 2).mean(dim=(1, 2)),
        "the importance is not applied": (error**2).mean(dim=(1, 2)),
        "the importance is squared (it is inside the square: (I·(y − |x|))² instead of I·(y − |x|)²)":
            ((importance * error) ** 2).mean(dim=(1, 2)),
        "the absolute error instead of the squared error": (importance * error.abs()).mean(dim=(1, 2)),
        **_reduction_mistakes(weighted),
        "the mean is taken over the instances too (one loss per instance is needed)":
            weighted.mean().expand(right.shape),
        "the square root of the loss": right.sqrt(),
    }


@exercise(
    "abs_loss",
    cases=_loss_case,
    reference=comp.abs_loss,
    seeds=range(8),
    hints=[
        "The model should output |x|, so the error is y − |x| (x.abs()), not y − x.  Weight each "
        "squared error by its feature's importance and average over the batch and the features.",
        "importance is (instances, features) while the errors are (instances, batch, features): "
        "broadcast it with importance[:, None, :].",
        "Return one loss per instance, shape (instances,): reduce with .mean(dim=(1, 2)), not "
        ".mean() (which also averages over instances).",
    ],
)
def check_abs_loss(learner, case: Case) -> None:
    """Check your ``abs_loss(y, x, importance)``: the mean over batch and features of
    importance · (y − |x|)², one loss per instance.  y, x are (instances, batch, features),
    importance (instances, features); return (instances,)."""
    out = call_pure(learner, {"y": case.y, "x": case.x, "importance": case.importance})
    expected = comp.abs_loss(case.y, case.x, case.importance)
    if isinstance(out, Tensor):
        expect_shape(out, expected.shape, "(instances,)",
                     note="; keep one loss per instance: average over batch and features only")
    out = expect_output(out, expected, "(instances,)")
    expect_close(out, expected, suspects=_abs_loss_mistakes(case))


# --------------------------------------------------------------------------------------
# u_and_layer
# --------------------------------------------------------------------------------------


def _wiring(gen: torch.Generator, d: int, m: int, p: float) -> Tensor:
    return (torch.rand(d, m, generator=gen) < p).float()


def _layer_case(seed: int) -> Case:
    """A random 0/1 wiring W (d, m) and boolean inputs x (batch, m) with 0 to all m features on
    (an empty row and a full row in every case).  seed % 4 == 3 has d == m, where x W and
    x Wᵀ have the same shape."""
    gen = _generator(seed)
    m = _randint(gen, 3, 8)
    d = m if seed % 4 == 3 else _randint(gen, 2, 12)
    d = d + 1 if d == m and seed % 4 != 3 else d
    W = _wiring(gen, d, m, 0.5)
    batch = _randint(gen, 4, 10)
    on = torch.randint(0, m + 1, (batch,), generator=gen)
    on[0], on[1] = 0, m
    order = torch.rand(batch, m, generator=gen).argsort(dim=-1)
    x = (order < on[:, None]).float()
    return Case(f"d={d} neurons, m={m} features, batch={batch}", W=W, x=x)


def _layer_mistakes(W: Tensor, x: Tensor) -> dict[str, Tensor]:
    pre = x @ W.T
    mistakes = {
        "the bias −1 is missing (h = ReLU(x Wᵀ)): a neuron should fire only when two or more of "
        "its features are on": _relu(pre),
        "the bias is +1 instead of −1": _relu(pre + 1),
        "the bias is −2 instead of −1 (a neuron with exactly two features on should output 1)":
            _relu(pre - 2),
        "the ReLU is missing, or applied before subtracting 1": pre - 1,
        "the neuron outputs a hard 0/1 (x Wᵀ ≥ 2) instead of ReLU(x Wᵀ − 1), which grows with "
        "every extra feature on": (pre >= 2).to(pre.dtype),
    }
    if W.shape[0] == W.shape[1]:
        mistakes["x W instead of x Wᵀ (W is (d neurons, m features): neuron k's wiring is the row W[k])"] = \
            _relu(x @ W - 1)
    return mistakes


@exercise(
    "u_and_layer",
    cases=_layer_case,
    reference=comp.u_and_hidden,
    seeds=range(8),
    hints=[
        "Neuron k adds up the features it is wired to, Σ_i W[k, i] x_i, subtracts 1 and applies a "
        "ReLU: it outputs 0 with one feature on, 1 with two, 2 with three.",
        "W is (d, m) and x is (batch, m): all the sums at once are x @ W.T, shape (batch, d).",
    ],
)
def check_u_and_layer(learner, case: Case) -> None:
    """Check your ``u_and_layer(W, x)``: the U-AND neurons h = ReLU(x Wᵀ − 1).  W is the (d, m)
    wiring of 0s and 1s, x (batch, m) booleans as floats; return (batch, d)."""
    out = call_pure(learner, {"W": case.W, "x": case.x})
    expected = comp.u_and_hidden(case.W, case.x)
    out = expect_output(out, expected, "(batch, d)")
    expect_close(out, expected, suspects=_layer_mistakes(case.W, case.x))


# --------------------------------------------------------------------------------------
# u_and_readoff
# --------------------------------------------------------------------------------------


def _readoff_case(seed: int) -> Case:
    """A random wiring W (d, m) in which features 0 and 1 share no neuron (an uncovered pair),
    and nonnegative activations h (batch, d).  seed % 4 picks: random h; h from the U-AND layer
    on sparse inputs; a batch of one; a feature wired to no neuron at all."""
    gen = _generator(seed)
    kind = seed % 4
    m = _randint(gen, 4, 7)
    d = _randint(gen, 2 * m, 3 * m)
    W = _wiring(gen, d, m, 0.5)
    W[W[:, 0] == 1, 1] = 0.0  # features 0 and 1: no neuron wired to both
    label = f"d={d} neurons, m={m} features"
    if kind == 3:
        W[:, -1] = 0.0
        label += f", feature {m - 1} wired to no neuron"
    batch = 1 if kind == 2 else _randint(gen, 3, 6)
    if kind == 1:
        x = comp.sparse_boolean_inputs(m, 3, batch, gen)
        h = comp.u_and_hidden(W, x)
        label += ", h from the U-AND layer with 3 features on"
    else:
        h = 2 * torch.rand(batch, d, generator=gen) * (torch.rand(batch, d, generator=gen) < 0.7)
    return Case(f"{label}, batch={batch}", W=W, h=h)


def _readoff_mistakes(W: Tensor, h: Tensor) -> dict[str, Tensor]:
    """Wrong read-offs on the covered off-diagonal pairs (the others are not compared)."""
    d = W.shape[0]
    both = W.T @ W  # (m, m) neurons wired to both i and j
    wired = W.sum(dim=0)  # (m,) neurons wired to i
    either = wired[:, None] + wired[None, :] - both
    total = torch.einsum("bk,ki,kj->bij", h, W, W)
    any_wired = torch.einsum("bk,kij->bij", h, ((W[:, :, None] + W[:, None, :]) > 0).to(h.dtype))
    pair_mask = (W[:, :, None] * W[:, None, :]).bool()  # (d, m, m)
    masked = torch.where(pair_mask[None], h[:, :, None, None], torch.full((), -math.inf))
    by_i = (h @ W) / wired.clamp(min=1)
    return {
        "the sum over the neurons wired to both features instead of the mean": total,
        "divided by d (all neurons) instead of by the number of neurons wired to both features":
            total / d,
        "divided by the number of neurons wired to either feature instead of to both":
            total / either.clamp(min=1),
        "averaged over the neurons wired to either feature; a neuron must be wired to both":
            any_wired / either.clamp(min=1),
        "the maximum over the neurons wired to both features instead of the mean":
            masked.amax(dim=1),
        "the mean over the neurons wired to feature i only; a neuron must be wired to both i and j":
            by_i[:, :, None].expand(total.shape),
        "the mean over the neurons wired to feature j only; a neuron must be wired to both i and j":
            by_i[:, None, :].expand(total.shape),
    }


@exercise(
    "u_and_readoff",
    cases=_readoff_case,
    reference=comp.u_and_readoff,
    seeds=range(8),
    hints=[
        "AND(i, j) is the average of h_k over the neurons k wired to both i and j, i.e. with "
        "W[k, i] = W[k, j] = 1.  Count those neurons for every pair: W.T @ W is (m, m).",
        "The sum of h_k over those neurons, for every pair and batch element at once: "
        "torch.einsum('bk,ki,kj->bij', h, W, W).  Divide it by the count.",
        "Where no neuron is wired to both features the average is undefined: return NaN there "
        "(torch.where(count > 0, ..., float('nan'))), not 0.  The diagonal i = j is not checked.",
    ],
)
def check_u_and_readoff(learner, case: Case) -> None:
    """Check your ``u_and_readoff(W, h)``: AND(i, j) for every pair of features, the mean of
    h_k over the neurons wired to both i and j.  W is the (d, m) wiring, h (batch, d); return
    (batch, m, m), NaN where no neuron is wired to both features.  The diagonal is not checked."""
    out = call_pure(learner, {"W": case.W, "h": case.h})
    expected = comp.u_and_readoff(case.W, case.h)
    out = expect_tensor(out)
    expect_shape(out, expected.shape, "(batch, m, m)")
    expect_dtype(out, expected.dtype)
    expect_device(out, expected.device)
    m = case.W.shape[1]
    off_diagonal = ~torch.eye(m, dtype=torch.bool).expand(expected.shape)
    covered = ~expected.isnan() & off_diagonal
    uncovered = expected.isnan() & off_diagonal
    if out.isinf().any():
        raise CheckFailed(f"output contains inf at {int(out.isinf().sum())} of {out.numel()} entries")
    nan_at_covered = out.isnan() & covered
    if nan_at_covered.any():
        raise CheckFailed(
            f"output is NaN at {int(nan_at_covered.sum())} of {int(covered.sum())} entries whose pair "
            "some neuron is wired to; only pairs that no neuron covers should be NaN")
    expect_close(out[covered], expected[covered],
                 suspects={k: v[covered] for k, v in _readoff_mistakes(case.W, case.h).items()})
    not_nan = ~out.isnan() & uncovered
    if not_nan.any():
        zeros = (out[not_nan] == 0).all()
        what = "0" if zeros else "a number"
        raise CheckFailed(
            f"at {int(not_nan.sum())} of {int(uncovered.sum())} entries whose pair no neuron is wired "
            f"to, your output is {what}; the mean over no neurons is undefined, so return NaN there "
            "(e.g. torch.where(count > 0, mean, float('nan')))")


# --------------------------------------------------------------------------------------
# predicted_u_and_readoffs
# --------------------------------------------------------------------------------------

READOFF_KEYS = ("both", "one", "none")
_PREDICTION_CASES = [(0.1, 5), (0.05, 2), (0.2, 3), (0.01, 10), (0.3, 4), (0.02, 8), (0.5, 2), (0.15, 6)]


def _prediction_case(seed: int) -> Case:
    """(p, l) from a fixed table for seeds 0-7 (l = 2 and small p included), random otherwise."""
    if 0 <= seed < len(_PREDICTION_CASES):
        p, l = _PREDICTION_CASES[seed]
    else:
        gen = _generator(seed)
        p = round(0.01 + 0.49 * float(torch.rand(1, generator=gen)), 3)
        l = _randint(gen, 2, 12)
    return Case(f"p={p:g}, l={l}", p=p, l=l)


def _prediction_mistakes(p: float, l: int) -> dict[str, dict[str, float]]:
    """Per entry, what common wrong laws give."""
    return {
        "both": {
            "1 + l p: only the l − 2 features other than i and j leak in": 1 + l * p,
            "1 + (l − 1) p: only the l − 2 features other than i and j leak in": 1 + (l - 1) * p,
            "(l − 2) p: the leak is missing the 1 that the two features on give": (l - 2) * p,
            "1: the leak of the other l − 2 features (each wired with probability p) is missing": 1.0,
        },
        "one": {
            "l p: only the l − 1 features other than the one on can leak in": l * p,
            "(l − 2) p: the one feature on does not leak into itself, but the other l − 1 do":
                (l - 2) * p,
            "1 + (l − 1) p: the one feature on only cancels the −1, ReLU(1 + B − 1) = B": 1 + (l - 1) * p,
            "0: a neuron with one feature on still fires when other features leak in": 0.0,
        },
        "none": {
            "l² p²: the number of pairs of leaking features is C(l, 2) = l (l − 1)/2": l * l * p * p,
            "l² p²/2: the number of pairs of leaking features is C(l, 2) = l (l − 1)/2, not l²/2":
                l * l * p * p / 2,
            "l p²: the number of pairs of leaking features is C(l, 2)": l * p * p,
            "C(l, 2) p: a neuron needs two leaks, each with probability p, so p²": math.comb(l, 2) * p,
            "l p: with no feature of the pair on, one leak only cancels the −1; two are needed": l * p,
            "0: two leaking features make the neuron fire even with neither feature on": 0.0,
        },
    }


@exercise(
    "predicted_u_and_readoffs",
    cases=_prediction_case,
    reference=comp.predicted_u_and_readoffs,
    seeds=range(8),
    hints=[
        "Take a neuron wired to both i and j.  Every other active feature is wired to it too with "
        "probability p, so it receives B ~ Binomial(k, p) extra inputs ('leaks'), where k counts "
        "the active features other than i and j.",
        "Both on: the neuron reads ReLU(2 + B − 1) = 1 + B.  One on: ReLU(1 + B − 1) = B.  None on: "
        "ReLU(B − 1), which needs two leaks.  Count how many features can leak in each case.",
        "To leading order in p: E[B] = k p exactly, and E[ReLU(B − 1)] ≈ P(B ≥ 2) ≈ C(k, 2) p² "
        "(second order: two leaks are needed).  Return "
        "{'both': ..., 'one': ..., 'none': ...} as floats.",
    ],
)
def check_predicted_u_and_readoffs(learner, case: Case) -> None:
    """Check your ``predicted_u_and_readoffs(p, l)``: a dict with float entries "both", "one"
    and "none", the expected read-off of AND(i, j) with l features on when both, one or none of
    i, j are on, to leading order in the wiring probability p (the exact "none",
    l p − 1 + (1 − p)^l, is accepted too)."""
    out = learner(case.p, case.l)
    if not isinstance(out, Mapping):
        kind = "None (did you forget to `return`?)" if out is None else type(out).__name__
        raise CheckFailed(f"your function returned {kind}; expected a dict with the keys "
                          "'both', 'one' and 'none'")
    missing = [key for key in READOFF_KEYS if key not in out]
    if missing:
        keys = ", ".join(repr(k) for k in out) or "none"
        raise CheckFailed(f"your dict lacks the key(s) {', '.join(map(repr, missing))} (its keys: "
                          f"{keys}); expected the keys 'both', 'one' and 'none'")
    first_order = comp.predicted_u_and_readoffs(case.p, case.l)
    exact = comp.predicted_u_and_readoffs(case.p, case.l, exact=True)
    mistakes = _prediction_mistakes(case.p, case.l)
    for key in READOFF_KEYS:
        _expect_entry(key, _dict_number(out, key), (first_order[key], exact[key]), mistakes[key])


# --------------------------------------------------------------------------------------
# naive_loss
# --------------------------------------------------------------------------------------

_NAIVE_CASES = [(100, 30, 0.05), (100, 50, 0.01), (20, 20, 0.1), (10, 3, 0.5), (1000, 50, 0.001),
                (30, 40, 0.2), (7, 1, 1.0), (50, 49, 0.3)]


def _naive_case(seed: int) -> Case:
    """(n_features, d_mlp, feature_probability) from a fixed table for seeds 0-7 (d ≥ n
    included, where the loss is 0), random otherwise."""
    if 0 <= seed < len(_NAIVE_CASES):
        n, d, p = _NAIVE_CASES[seed]
    else:
        gen = _generator(seed)
        n = _randint(gen, 2, 200)
        d = _randint(gen, 1, n + 20)
        p = round(0.001 + 0.999 * float(torch.rand(1, generator=gen)), 3)
    return Case(f"n_features={n}, d_mlp={d}, feature_probability={p:g}", n=n, d=d, p=p)


def _naive_mistakes(n: int, d: int, p: float) -> dict[str, float]:
    unserved = max(n - d, 0)
    return {
        "1/3 is E[x²]; the unserved features miss ReLU(x), and E[ReLU(x)²] = 1/6 for x ~ U[−1, 1]":
            p * unserved / (3 * n),
        "the loss is not averaged over the n features (p (n − d)/6 is the sum)": p * unserved / 6,
        "d features miss ReLU(x) instead of n − d (the d_mlp served features are computed exactly)":
            p * min(d, n) / (6 * n),
        "p² instead of p: each feature is active with probability p, and E[ReLU(x)²] is then 1/6":
            p * p * unserved / (6 * n),
        "p/12 is the loss for n = 100 features and d = 50 neurons only": p / 12,
        "1/12 is L/p for n = 100 features and d = 50 neurons only, not the loss": 1 / 12,
        "averaged over the d_mlp neurons instead of the n features": p * unserved / (6 * d),
        "with d_mlp ≥ n_features every feature is served: n − d must not go below 0":
            p * (n - d) / (6 * n),
    }


@exercise(
    "naive_loss",
    cases=_naive_case,
    reference=comp.naive_loss_without_mixing,
    seeds=range(8),
    hints=[
        "The naive MLP gives each of the first d_mlp features its own neuron, which computes ReLU(x) "
        "exactly (there is no mixing).  The other n − d_mlp features get nothing, so their error is "
        "ReLU(x) itself.",
        "For one unserved feature: E[ReLU(x)²] where x is 0 with probability 1 − p and U[−1, 1] "
        "otherwise.  For x ~ U[−1, 1], E[ReLU(x)²] = ½ · ∫₀¹ x² dx.",
        "The loss is the mean over all n features; the number of unserved features is "
        "max(n − d_mlp, 0).",
    ],
)
def check_naive_loss(learner, case: Case) -> None:
    """Check your ``naive_loss(n_features, d_mlp, feature_probability)`` (a number): the naive
    baseline's loss (mean squared error over the n features) in the compressed-computation
    model with no mixing (W_Eᵀ W_E = I)."""
    out = _as_number(learner(case.n, case.d, case.p))
    expected = comp.naive_loss_without_mixing(case.n, case.d, case.p)
    if abs(out - expected) <= 1e-12 + 1e-6 * abs(expected):
        return
    for description, wrong in _naive_mistakes(case.n, case.d, case.p).items():
        if math.isclose(out, wrong, rel_tol=1e-6, abs_tol=1e-12):
            raise CheckFailed(f"your loss is wrong and matches a known mistake: {description}")
    if expected == 0:
        raise CheckFailed("your loss should be 0 here: with d_mlp ≥ n_features every feature has "
                          "its own neuron")
    if out == 0:
        raise CheckFailed("your loss is 0, but n_features − d_mlp features have no neuron")
    direction = "too high" if out > expected else "too low"
    raise CheckFailed(f"your loss is {direction}: count the unserved features and what each one misses")


# --------------------------------------------------------------------------------------
# The abs(x) capstone: the AbsModel class
# --------------------------------------------------------------------------------------

ABS_INIT_INSTANCES, ABS_INIT_HIDDEN, ABS_INIT_FEATURES = 300, 4, 6  # 7,200 weights per matrix


def _abs_model_case(seed: int) -> Case:
    """Constructor arguments: seed % 4 picks the shape of feature_probability and importance
    (scalar, per feature, per instance, per instance and feature) and the model's shape
    (general, one instance, hidden = 1, square); init_scale cycles through 1, 0.1 and 0.5; on a
    machine with CUDA, seed % 4 == 3 builds the model there."""
    gen = _generator(seed)
    instances, hidden, features = _model_shape(gen, seed)
    kind = seed % 4
    p = [0.3, 0.05 + 0.9 * torch.rand(features, generator=gen),
         0.05 + 0.9 * torch.rand(instances, 1, generator=gen),
         0.05 + 0.9 * torch.rand(instances, features, generator=gen)][kind]
    importance = [1.0, 0.8 ** torch.arange(features, dtype=torch.float32),
                  0.2 + torch.rand(instances, 1, generator=gen),
                  0.2 + torch.rand(instances, features, generator=gen)][(kind + 1) % 4]
    init_scale = (1.0, 0.1, 0.5)[seed % 3]
    device = "cuda" if torch.cuda.is_available() and kind == 3 else "cpu"
    shape = lambda v: "a scalar" if not isinstance(v, Tensor) else f"shape {tuple(v.shape)}"
    label = (f"n_features={features}, n_hidden={hidden}, n_instances={instances}, init_scale={init_scale:g}, "
             f"feature_probability {shape(p)}, importance {shape(importance)}"
             + (", device='cuda'" if device == "cuda" else ""))
    return Case(label, n_features=features, n_hidden=hidden, n_instances=instances, feature_probability=p,
                importance=importance, init_scale=init_scale, device=device, seed=seed)


def _abs_arguments(case: Case, generator) -> dict:
    return dict(n_features=case.n_features, n_hidden=case.n_hidden, n_instances=case.n_instances,
                feature_probability=case.feature_probability, importance=case.importance,
                init_scale=case.init_scale, device=case.device, generator=generator)


def _build_abs(learner, case: Case, generator):
    model = learner(**_abs_arguments(case, generator))
    if not isinstance(model, torch.nn.Module):
        raise CheckFailed(f"AbsModel(...) made a {type(model).__name__}, not an nn.Module: "
                          "subclass nn.Module and call super().__init__() first")
    return model


def _abs_init_sample(learner) -> dict:
    """Runs the learner's class: a large model's initial W1 and W2, for their statistics."""
    model = learner(n_features=ABS_INIT_FEATURES, n_hidden=ABS_INIT_HIDDEN, n_instances=ABS_INIT_INSTANCES,
                    device="cpu", generator=_generator(7))
    return {name: plain(getattr(model, name, None)) for name in ("W1", "W2")}


def _abs_init_statistics(sample) -> None:
    """W1 and W2 Xavier-normal (std √(2/(hidden + features)) per instance), independent of
    each other, judged on ``_abs_init_sample``'s W1 and W2."""
    target = 2 / (ABS_INIT_HIDDEN + ABS_INIT_FEATURES)
    if not (isinstance(sample, dict) and "W1" in sample and "W2" in sample):
        raise CheckFailed("the grader could not read what your code did (no initial W1 and W2)")
    for name in ("W1", "W2"):
        W = sample[name]
        if not isinstance(W, Tensor) or W.numel() != ABS_INIT_INSTANCES * ABS_INIT_HIDDEN * ABS_INIT_FEATURES:
            return  # the per-case checks name what is wrong
        w = W.to("cpu", torch.float64).flatten()
        if not _has_variance(w, target):
            raise CheckFailed(f"{name}'s initial entries do not have Xavier-normal's spread for one instance: "
                              "mean 0 and std init_scale · √(2 / (n_hidden + n_features))")
        if not _looks_normal(w):
            raise CheckFailed(f"{name}'s initial entries have the right spread but are not normally "
                              "distributed (torch.randn, not torch.rand)")


def _abs_forward_mistakes(W1: Tensor, W2: Tensor, b: Tensor, x: Tensor) -> dict[str, Tensor]:
    """What common wrong abs(x) forward passes output (all on the CPU)."""
    b = b[:, None, :]
    pre = torch.einsum("ihf,ibf->ibh", W1, x)
    h = _relu(pre)

    def up(W, h):
        return torch.einsum("ifh,ibh->ibf", W, h)

    mistakes = {
        "the hidden ReLU is missing (h = ReLU(W1 x))": _relu(up(W2, pre) + b),
        "the output ReLU is missing (y = ReLU(W2 h + b))": up(W2, h) + b,
        "the bias b is missing from the output layer": _relu(up(W2, h)),
        "the bias is added after the output ReLU instead of before it": _relu(up(W2, h)) + b,
        "the output layer uses W1ᵀ (tied weights) instead of W2: this model's layers are untied":
            _relu(torch.einsum("ihf,ibh->ibf", W1, h) + b),
    }
    if W1.shape[1] == W1.shape[2]:  # only then can W2's axes be read the wrong way without an error
        mistakes["W2's axes are read the wrong way round: W2 is (instances, features, hidden), "
                 "so the output sums W2[i, f, h] · h[h]"] = _relu(torch.einsum("ihf,ibh->ibf", W2, h) + b)
        mistakes["W1's axes are read the wrong way round: W1 is (instances, hidden, features)"] = _relu(
            up(W2, _relu(torch.einsum("ifh,ibf->ibh", W1, x))) + b)
    return mistakes


def _abs_case_weights(case: Case) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """W1, W2, b of order one (b of both signs, so that every ReLU matters) and an input x
    (instances, 6, features) on the case's device: what forward and loss run on."""
    instances, hidden, features = case.n_instances, case.n_hidden, case.n_features
    gen = _generator(case.seed + 1)
    W1 = torch.randn(instances, hidden, features, generator=gen) / math.sqrt(features)
    W2 = torch.randn(instances, features, hidden, generator=gen) / math.sqrt(hidden)
    b = 0.3 * torch.randn(instances, features, generator=gen)
    x = comp.signed_sparse_features((instances, 6, features), torch.full((), 0.7), gen).to(case.device)
    return W1, W2, b, x


def _probe_gradients(model, loss, names, seen: dict) -> None:
    """Whether ``loss`` carries a gradient and, if so, the gradients ``loss.sum()`` gives the
    parameters ``names``."""
    seen["loss carries a gradient"] = isinstance(loss, Tensor) and loss.requires_grad
    if not seen["loss carries a gradient"]:
        return
    for name in names:
        getattr(model, name).grad = None
    loss.sum().backward()
    seen["gradients"] = {name: plain(getattr(model, name).grad) for name in names}


def _expect_gradients(data, names) -> None:
    """The judge's half of ``_probe_gradients``: a finite, nonzero gradient reaches each of
    ``names``."""
    if observed(data, "loss carries a gradient") is not True:
        raise CheckFailed("your loss carries no gradient (was it computed under torch.no_grad() or "
                          "with .detach()?): training could not change the weights")
    gradients = observed(data, "gradients")
    for name in names:
        grad = gradients.get(name) if isinstance(gradients, dict) else None
        if not isinstance(grad, Tensor) or not _nonzero_and_finite(grad):
            raise CheckFailed(f"no gradient reaches {name} from your loss: compute the output from "
                              f"self.{name} itself")


def _nonzero_and_finite(grad: Tensor) -> bool:
    grad = grad.to(torch.float64)
    return bool(torch.isfinite(grad).all()) and bool(grad.abs().sum() > 0)


def _judge_abs_model(data, case: Case) -> None:
    """The verdict on what ``check_abs_model`` saw, where no learner code runs."""
    if case.seed == 0:
        _abs_init_statistics(observed(data, "init"))
    rng = observed(data, "rng")
    if not (isinstance(rng, (list, tuple)) and len(rng) == 2 and same_tensor(*rng)):
        raise CheckFailed("building the model drew from torch's global random state: draw W1 and W2 "
                          "from the `generator` argument instead (torch.randn(..., generator=generator))")
    instances, hidden, features = case.n_instances, case.n_hidden, case.n_features
    W1 = judge_parameter(observed(data, "W1"), "W1", (instances, hidden, features), "(instances, hidden, features)")
    W2 = judge_parameter(observed(data, "W2"), "W2", (instances, features, hidden), "(instances, features, hidden)")
    b = judge_parameter(observed(data, "b"), "b", (instances, features), "(instances, features)")
    for value in (W1, W2, b):
        expect_device(value, case.device)
    if (b != 0).any():
        raise CheckFailed("b should start at zero")
    for name in ("n_features", "n_hidden", "n_instances"):
        if not same_value(observed(data, name), getattr(case, name)):
            raise CheckFailed(f"`self.{name}` should keep the {name} the model was given "
                              "(the course's tools read it)")
    for name in ("feature_probability", "importance"):
        # _expect_buffer reads the buffer as an attribute: give it what the probe read
        _expect_buffer(SimpleNamespace(**{name: observed(data, name)}), name,
                       per_instance(getattr(case, name), instances, features), case.device)

    # the initialisation: the reference's draws from the same generator seed
    reference = comp.AbsModel(**_abs_arguments(case, _generator(case.seed)))
    mine1, mine2 = W1.cpu(), W2.cpu()
    ref1, ref2 = reference.W1.detach().cpu(), reference.W2.detach().cpu()
    if torch.allclose(mine2, mine1.transpose(1, 2)):
        raise CheckFailed("W2 is W1ᵀ (tied weights): the abs(x) model's two layers are untied; draw W2 "
                          "separately from the generator")
    if not (torch.allclose(mine1, ref1) and torch.allclose(mine2, ref2)):
        if case.init_scale != 1 and torch.allclose(mine1 * case.init_scale, ref1):
            raise CheckFailed("W1 and W2 do not include init_scale: multiply the Xavier-normal draws by it")
        if torch.allclose(mine1.flatten(), ref2.flatten()):
            raise CheckFailed("W2 is drawn before W1: draw W1 first, then W2 (the reference's order), "
                              "so that a seed gives the course's model")
        if not same_tensor(W1, observed(data, "W1 again")):
            raise CheckFailed("W1 does not come from the `generator` argument: the same generator seed "
                              "should give the same W1")
        raise CheckFailed("W1 and W2 are not the reference's initial weights from the same generator: "
                          "torch.randn(n_instances, n_hidden, n_features, generator=generator) times the "
                          "scaled Xavier std for W1, then the same for W2 (instances, features, hidden)")

    # forward and loss, on the case's weights (copied into the model by the probe)
    w1, w2, bias, x = _abs_case_weights(case)
    xc = x.cpu()
    expected = torch.relu(torch.einsum("ifh,ibh->ibf", w2, torch.relu(torch.einsum("ihf,ibf->ibh", w1, xc)))
                          + bias[:, None, :])
    out = expect_tensor(observed(data, "forward"))
    expect_shape(out, expected.shape, "(instances, batch, features)")
    expect_device(out, case.device)
    expect_close(out.cpu(), expected, suspects=_abs_forward_mistakes(w1, w2, bias, xc))
    loss = expect_tensor(observed(data, "loss"))
    importance = per_instance(case.importance, instances, features)
    expected_loss = comp.abs_loss(expected, xc, importance)
    expect_shape(loss, expected_loss.shape, "(instances,)", note="; one loss per instance")
    expect_close(loss.cpu(), expected_loss,
                 suspects=_abs_loss_mistakes(Case("", y=expected, x=xc, importance=importance)))
    _expect_gradients(data, ("W1", "W2", "b"))

    # the data
    batch = expect_tensor(observed(data, "batch"))
    expect_shape(batch, (instances, 4000, features), "(instances, batch_size, features)")
    expect_device(batch, case.device)
    batch = batch.to("cpu", torch.float64)
    _expect_in_signed_interval(batch)
    _expect_frequencies(batch, per_instance(case.feature_probability, instances, features).double())
    _expect_both_signs(batch)
    repeat = observed(data, "batch again")
    if not (isinstance(repeat, Tensor) and same_tensor(batch, repeat.to("cpu", torch.float64))):
        raise CheckFailed("generate_batch does not draw from the `generator` it is given: the same "
                          "generator seed should give the same batch")


@exercise(
    "AbsModel",
    cases=_abs_model_case,
    seeds=range(8),
    time_limit=40,
    passed="{n}/{n} models built, initialised and run like the reference.",
    reference=comp.AbsModel,
    judge=_judge_abs_model,
    hints=[
        "__init__ keeps n_features, n_hidden and n_instances, broadcasts feature_probability and "
        "importance to (instances, features) with per_instance(...) into buffers, and creates three "
        "nn.Parameters: W1 (instances, hidden, features), W2 (instances, features, hidden), b "
        "(instances, features), b at zero.",
        "Both weight matrices are Xavier-normal for one instance, times init_scale: std = init_scale · "
        "√(2 / (n_hidden + n_features)). Draw W1 first, then W2, each with torch.randn(..., "
        "generator=generator), then .to(device).",
        "forward: h = relu(einsum('ihf,ibf->ibh', W1, x)), then relu(einsum('ifh,ibh->ibf', W2, h) + "
        "b[:, None, :]). loss and generate_batch call what the checks of exercises 2 and 3 returned.",
    ],
)
def check_abs_model(learner, case: Case, seen: dict) -> None:
    """Check your ``AbsModel`` class: W1, W2 and b and their initialisation (Xavier-normal ×
    init_scale, drawn from the generator in the reference's order), its buffers, and
    ``forward`` (h = ReLU(W1 x), y = ReLU(W2 h + b)), ``loss`` and ``generate_batch`` against
    the reference, with gradients reaching W1, W2 and b.

    (This half runs your class and records what it does; ``_judge_abs_model`` compares.)"""
    if case.seed == 0:
        seen["init"] = _abs_init_sample(learner)
    before = torch.get_rng_state()
    model = _build_abs(learner, case, _generator(case.seed))
    seen["rng"] = [before, torch.get_rng_state()]
    for name in ("W1", "W2", "b"):
        seen[name] = probe_parameter(model, name)
    for name in ("n_features", "n_hidden", "n_instances", "feature_probability", "importance"):
        seen[name] = plain(getattr(model, name, None))
    probe_aside(seen, "W1 again", lambda: plain(_build_abs(learner, case, _generator(case.seed)).W1))

    W1, W2, b, x = _abs_case_weights(case)
    with torch.no_grad():
        model.W1.copy_(W1)
        model.W2.copy_(W2)
        model.b.copy_(b)
        seen["forward"] = plain(_method(model, "forward", x))
    loss = _method(model, "loss", x)
    seen["loss"] = plain(loss)
    _probe_gradients(model, loss, ("W1", "W2", "b"), seen)
    seen["batch"] = plain(_method(model, "generate_batch", 4000, _generator(case.seed + 2)))
    seen["batch again"] = plain(_method(model, "generate_batch", 4000, _generator(case.seed + 2)))


# --------------------------------------------------------------------------------------
# The U-AND capstone, part 1: the random wiring
# --------------------------------------------------------------------------------------

_WIRING_CASES = [(200, 1000, 0.1), (5, 5, 0.5), (12, 30, 0.05), (7, 3, 0.9), (40, 60, 0.2), (3, 20, 1.0),
                 (30, 30, 0.3), (2, 50, 0.02)]


def _wiring_case(seed: int) -> Case:
    """(m, d, p) from a fixed table for seeds 0-7 (d = m, p = 1, the chapter's setting), random
    otherwise; the generator is seeded with the case's seed."""
    if 0 <= seed < len(_WIRING_CASES):
        m, d, p = _WIRING_CASES[seed]
    else:
        gen = _generator(seed)
        m, d = _randint(gen, 2, 40), _randint(gen, 1, 80)
        p = round(0.02 + 0.96 * float(torch.rand(1, generator=gen)), 3)
    return Case(f"m={m}, d={d}, p={p:g}", m=m, d=d, p=p, seed=seed)


def _draw_wiring(learner, case: Case, generator_seed: int):
    return learner(case.m, case.d, case.p, _generator(generator_seed))


@exercise(
    "u_and_wiring",
    cases=_wiring_case,
    seeds=range(8),
    reference=comp.u_and_wiring,
    hints=[
        "Each of the d × m entries is 1 with probability p, independently: compare a uniform random "
        "number with p.",
        "torch.rand(d, m, generator=generator) < p is a boolean (d, m) tensor, True with probability p; "
        "turn it into 0s and 1s with .float().",
        "Keep the order of the arguments (m, d, p, generator) and the shape (d, m): one row per "
        "neuron, one column per feature.",
    ],
)
def check_u_and_wiring(learner, case: Case) -> None:
    """Check your ``u_and_wiring(m, d, p, generator)``: the (d, m) float tensor of 0s and 1s,
    each entry 1 with probability p, drawn as torch.rand(d, m, generator=generator) < p (so that
    a seed gives the course's wiring)."""
    out = expect_tensor(_draw_wiring(learner, case, case.seed))
    expected = comp.u_and_wiring(case.m, case.d, case.p, _generator(case.seed))
    expect_shape(out, expected.shape, "(d, m): one row per neuron")
    expect_dtype(out, expected.dtype, why="0s and 1s as floats: .float() of the comparison")
    if not ((out == 0) | (out == 1)).all():
        raise CheckFailed("the wiring should hold only 0s and 1s")
    if torch.equal(out, expected):
        torch.manual_seed(case.seed + 12_345)
        if not torch.equal(expect_tensor(_draw_wiring(learner, case, case.seed)), expected):
            raise CheckFailed("your wiring changes with torch's global random state: draw it from the "
                              "`generator` argument only")
        return
    torch.manual_seed(case.seed + 12_345)
    again = expect_tensor(_draw_wiring(learner, case, case.seed))
    if not torch.equal(out, again):
        raise CheckFailed("your wiring does not come from the `generator` argument (the same generator "
                          "seed gave another wiring): pass generator=generator to torch.rand")
    u = torch.rand(case.d, case.m, generator=_generator(case.seed))
    suspects = {
        "each entry is 1 with probability 1 − p instead of p (torch.rand(...) > p)": (u > case.p).float(),
        "the wiring is drawn as (m, d) and transposed; draw (d, m) directly so that a seed gives the "
        "course's wiring": (torch.rand(case.m, case.d, generator=_generator(case.seed)) < case.p).float().T,
    }
    for description, wrong in suspects.items():
        if torch.equal(out, wrong):
            raise CheckFailed(f"your wiring matches a known mistake: {description}")
    n, share = out.numel(), float(out.mean())
    if abs(share - case.p) > Z * math.sqrt(case.p * (1 - case.p) / n) + 1e-9:
        raise CheckFailed("the share of 1s in your wiring is not p: each entry should be 1 with probability p, "
                          "so about a fraction p of the entries are 1")
    raise CheckFailed("your wiring is not the course's draw from this generator: use torch.rand(d, m, "
                      "generator=generator) < p (another sampler, e.g. torch.bernoulli, draws other "
                      "random numbers, and the chapter's results would differ)")


# --------------------------------------------------------------------------------------
# The U-AND capstone, part 2: the construction as a class
# --------------------------------------------------------------------------------------

_UAND_CASES = [(6, 8, 0.3), (10, 40, 0.3), (5, 5, 0.5), (12, 20, 0.2), (8, 60, 0.25), (4, 12, 0.6),
               (9, 30, 0.15), (7, 7, 0.4)]


def _u_and_case(seed: int) -> Case:
    """(m, d, p) from a fixed table for seeds 0-7 (several with uncovered pairs, two with d = m),
    random otherwise; inputs x with 0 to m features on, including rows with exactly two."""
    if 0 <= seed < len(_UAND_CASES):
        m, d, p = _UAND_CASES[seed]
    else:
        gen = _generator(seed)
        m, d = _randint(gen, 3, 12), _randint(gen, 3, 60)
        p = round(0.1 + 0.5 * float(torch.rand(1, generator=gen)), 3)
    gen = _generator(seed + 1)
    batch = 8
    on = torch.randint(0, m + 1, (batch,), generator=gen)
    on[0], on[1], on[2] = 2, 2, 3
    order = torch.rand(batch, m, generator=gen).argsort(dim=-1)
    x = (order < on[:, None]).float()
    return Case(f"UAnd(m={m}, d={d}, p={p:g}, generator), batch={batch}", m=m, d=d, p=p, x=x, seed=seed)


def _u_and_reference_hidden(case: Case) -> Tensor:
    """The course's hidden layer on the case's x, with the course's wiring from the case's
    generator: what readoff is given, so that the read-off is checked apart from the layer.
    (Built from the library's functions, not its UAnd, which the sandbox withholds while the
    learner's UAnd runs.)"""
    return comp.u_and_hidden(comp.u_and_wiring(case.m, case.d, case.p, _generator(case.seed)), case.x)


def _compare_readoff(out, expected: Tensor, what: str, W: Tensor, expected_h: Tensor) -> None:
    """A read-off (batch, m, m) against the reference's: NaN exactly at the uncovered pairs,
    the reference's means elsewhere (the diagonal is not compared)."""
    out = expect_tensor(out)
    expect_shape(out, expected.shape, "(batch, m, m)")
    off_diagonal = ~torch.eye(expected.shape[-1], dtype=torch.bool).expand(expected.shape)
    covered = ~expected.isnan() & off_diagonal
    uncovered = expected.isnan() & off_diagonal
    if (out.isnan() & covered).any():
        raise CheckFailed(f"{what} is NaN for pairs that some neuron is wired to; only uncovered "
                          "pairs should be NaN")
    try:
        expect_close(out[covered].float(), expected[covered],
                     suspects={k: v[covered] for k, v in _readoff_mistakes(W, expected_h).items()})
    except CheckFailed as failure:
        raise CheckFailed(f"{what}: {failure}") from None
    if (~out.isnan() & uncovered).any():
        zeros = bool((out[~out.isnan() & uncovered] == 0).all())
        raise CheckFailed(f"{what} is {'0' if zeros else 'a number'} for pairs no neuron is wired to: "
                          "the mean over no neurons is undefined, so return NaN there")


def _judge_u_and(data, case: Case) -> None:
    """The verdict on what ``check_u_and`` saw, where no learner code runs."""
    rng = observed(data, "rng")
    if not (isinstance(rng, (list, tuple)) and len(rng) == 2 and same_tensor(*rng)):
        raise CheckFailed("building the construction drew from torch's global random state: draw the "
                          "wiring from the `generator` argument")
    reference = comp.UAnd(case.m, case.d, case.p, _generator(case.seed))
    W, x = reference.W, case.x
    for name in ("m", "d", "p"):
        if not same_value(observed(data, name), getattr(case, name)):
            raise CheckFailed(f"`self.{name}` should keep the {name} the construction was given")
    coverage = expect_tensor(observed(data, "coverage"))
    expected_coverage = reference.coverage()
    expect_shape(coverage, expected_coverage.shape, "(m, m)")
    pairs = ~torch.eye(case.m, dtype=torch.bool)
    if not torch.allclose(coverage.float()[pairs], expected_coverage[pairs]):
        if not same_tensor(expect_tensor(observed(data, "coverage again")), coverage):
            raise CheckFailed("the wiring does not come from the `generator` argument: the same seed "
                              "gave another construction")
        either = W.sum(0)[:, None] + W.sum(0)[None, :] - expected_coverage
        if torch.allclose(coverage.float()[pairs], either[pairs]):
            raise CheckFailed("coverage() counts the neurons wired to either feature; it should count "
                              "those wired to both (W.T @ W)")
        raise CheckFailed("coverage() differs from the reference's: is the wiring the course's draw "
                          "(your u_and_wiring), and does coverage() count the neurons wired to both features?")

    h = expect_tensor(observed(data, "hidden"))
    expected_h = comp.u_and_hidden(W, x)
    expect_shape(h, expected_h.shape, "(batch, d)")
    expect_close(h.float(), expected_h, suspects=_layer_mistakes(W, x))
    expected = comp.u_and_readoff(W, expected_h)
    _compare_readoff(observed(data, "readoff"), expected, "readoff(h)", W, expected_h)
    _compare_readoff(observed(data, "construction"), expected, "construction(x)", W, expected_h)


@exercise(
    "UAnd",
    cases=_u_and_case,
    seeds=range(8),
    passed="{n}/{n} constructions built and read off like the reference.",
    reference=comp.UAnd,
    judge=_judge_u_and,
    hints=[
        "__init__ keeps m, d and p and draws the wiring self.W with your u_and_wiring (what its check "
        "returned) from the generator; hidden, readoff and __call__ use your layer and read-off.",
        "construction(x) is readoff(hidden(x)): (batch, m) -> (batch, d) -> (batch, m, m).  "
        "coverage() counts, for every pair, the neurons wired to both: W.T @ W.",
        "An uncovered pair has no neuron to average over: its read-off is NaN, not 0.",
    ],
)
def check_u_and(learner, case: Case, seen: dict) -> None:
    """Check your ``UAnd`` class: ``UAnd(m, d, p, generator)`` draws the course's wiring from the
    generator; ``hidden(x)`` (batch, m) -> (batch, d), ``readoff(h)`` -> (batch, m, m) with NaN
    for uncovered pairs, ``construction(x)`` both at once, and ``coverage()`` (m, m).

    (This half runs your class and records what it does; ``_judge_u_and`` compares.)"""
    before = torch.get_rng_state()
    construction = learner(case.m, case.d, case.p, _generator(case.seed))
    seen["rng"] = [before, torch.get_rng_state()]
    for name in ("m", "d", "p"):
        seen[name] = plain(getattr(construction, name, None))
    seen["coverage"] = plain(_method(construction, "coverage"))
    probe_aside(seen, "coverage again",
                lambda: plain(_method(learner(case.m, case.d, case.p, _generator(case.seed)), "coverage")))
    expected_h = _u_and_reference_hidden(case)
    seen["hidden"] = plain(_method(construction, "hidden", case.x))
    seen["readoff"] = plain(_method(construction, "readoff", expected_h))
    seen["construction"] = plain(_method(construction, "__call__", case.x))
