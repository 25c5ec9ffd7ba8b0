"""Checks for chapter 01: the toy model's forward pass, its data, its loss, its geometry.

Each check runs the learner's function on seeded cases and compares it with the library's
reference (``course_utils.toy_models``, ``course_utils.geometry``).  ``_*_mistakes``
compute what common wrong answers give, so a failure can name the mistake; the batch
generator, being random, is checked by statistical tests instead.  Case shapes cycle with
the seed so that the default seeds cover one instance, one hidden dimension and square W.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from .. import geometry
from .. import toy_models as ref
from ._framework import (
    Case,
    CheckFailed,
    accepts_argument,
    call_pure,
    exercise,
    expect_close,
    expect_device,
    expect_dtype,
    expect_finite,
    expect_output,
    expect_shape,
    expect_tensor,
)

Z = 5.0  # statistical tests reject at 5 standard errors: the reference never fails them


def _generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed % 2**63)


def _randint(gen: torch.Generator, low: int, high: int) -> int:
    """A random integer in [low, high]."""
    return int(torch.randint(low, high + 1, (1,), generator=gen))


def _sparse_features(gen: torch.Generator, shape, p: float = 0.5) -> Tensor:
    """Features like the model's data: 0 with probability 1 - p, else U[0, 1]."""
    values = torch.rand(shape, generator=gen)
    return torch.where(torch.rand(shape, generator=gen) < p, values, torch.zeros(()))


def _model_shape(gen: torch.Generator, seed: int) -> tuple[int, int, int]:
    """(instances, hidden, features); seed % 4 picks: general, one instance, hidden=1, square."""
    kind = seed % 4
    instances = 1 if kind == 1 else _randint(gen, 2, 4)
    hidden = 1 if kind == 2 else _randint(gen, 2, 4)
    features = hidden if kind == 3 else _randint(gen, hidden + 1, 7)
    return instances, hidden, features


# --------------------------------------------------------------------------------------
# toy_forward
# --------------------------------------------------------------------------------------


def _forward_case(seed: int) -> Case:
    """W, b, x for one case; activation "relu" for seed % 8 < 4, else "linear"."""
    gen = _generator(seed)
    instances, hidden, features = _model_shape(gen, seed)
    batch = features if hidden == features else _randint(gen, 2, 8)
    activation = "relu" if seed % 8 < 4 else "linear"
    W = torch.randn(instances, hidden, features, generator=gen) / math.sqrt(hidden)
    b = 0.5 * torch.randn(instances, features, generator=gen)
    x = _sparse_features(gen, (instances, batch, features))
    label = (f"instances={instances}, hidden={hidden}, features={features}, batch={batch}, "
             f"activation={activation!r}")
    return Case(label, W=W, b=b, x=x, activation=activation)


def _forward_mistakes(case: Case) -> dict[str, Tensor]:
    """What common wrong forward passes output on this case."""
    W, b, x = case.W, case.b[:, None, :], case.x
    WtWx = torch.einsum("ihf,ibh->ibf", W, torch.einsum("ihf,ibf->ibh", W, x))
    if case.activation == "relu":
        mistakes = {
            "the ReLU is missing": WtWx + b,
            "the bias b is missing": F.relu(WtWx),
            "the bias is added after the ReLU instead of before it": F.relu(WtWx) + b,
        }
    else:
        mistakes = {
            "a ReLU is applied although activation='linear'": F.relu(WtWx + b),
            "the bias b is missing": WtWx,
        }
    if W.shape[1] == W.shape[2]:  # W Wᵀ x has the right shape only when W is square
        WWtx = torch.einsum("ihf,ibf->ibh", W, torch.einsum("ihf,ibh->ibf", W, x)) + b
        act = F.relu if case.activation == "relu" else (lambda t: t)
        mistakes["W and Wᵀ are swapped (W Wᵀ x instead of Wᵀ W x)"] = act(WWtx)
    return mistakes


@exercise(
    "toy_forward",
    cases=_forward_case,
    seeds=range(8),
    hints=[
        "Two steps: compress h = W x into the hidden space, then reconstruct Wᵀ h + b, and "
        "apply the ReLU only when activation == 'relu'.",
        "Keep the instance axis i in every step. With torch.einsum, name the axes "
        "i (instance), h (hidden), f (feature), b (batch): W is 'ihf' and x is 'ibf'.",
        "h = einsum('ihf,ibf->ibh', W, x); the reconstruction sums over h and adds "
        "b[:, None, :] so the bias broadcasts over the batch.",
    ],
)
def check_toy_forward(learner, case: Case) -> None:
    """Check your ``toy_forward(W, b, x, activation)`` against the reference, ReLU and linear."""
    out = call_pure(learner, {"W": case.W, "b": case.b, "x": case.x, "activation": case.activation})
    expected = ref.toy_forward(case.W, case.b, case.x, case.activation)
    out = expect_output(out, expected, "(instances, batch, features)")
    expect_close(out, expected, suspects=_forward_mistakes(case))


# --------------------------------------------------------------------------------------
# generate_batch (statistical)
# --------------------------------------------------------------------------------------

BATCH_SIZE = 20_000


def _batch_case(seed: int) -> Case:
    """feature_probability differing per instance and per feature; seed % 4 picks: general,
    one instance, a probability of exactly 0 and one of exactly 1, instances == features."""
    gen = _generator(seed)
    kind = seed % 4
    features = _randint(gen, 2, 5)
    instances = {1: 1, 3: features}.get(kind, _randint(gen, 2, 4))
    p = 0.05 + 0.9 * torch.rand(instances, features, generator=gen)
    label = f"instances={instances}, features={features}, batch_size={BATCH_SIZE}"
    if kind == 2:
        p[0, 0], p[-1, -1] = 0.0, 1.0
        label += ", with feature_probability 0 and 1 at some entries"
    return Case(label, feature_probability=p, batch_size=BATCH_SIZE, seed=seed)


def _correlation(a: Tensor, b: Tensor, dim: int = 1) -> Tensor:
    """Pearson correlation of a and b along ``dim`` (0 where either is constant)."""
    a = a - a.mean(dim, keepdim=True)
    b = b - b.mean(dim, keepdim=True)
    scale = ((a * a).sum(dim) * (b * b).sum(dim)).sqrt()
    return torch.where(scale > 0, (a * b).sum(dim) / scale.clamp_min(1e-300), torch.zeros(()))


def _expect_in_unit_interval(x: Tensor) -> None:
    outside = (x < 0) | (x > 1)
    if outside.any():
        raise CheckFailed(
            f"{int(outside.sum())} of {x.numel()} entries lie outside [0, 1] (min {float(x.min()):.3g}, "
            f"max {float(x.max()):.3g}); active features are uniform on [0, 1] (torch.rand, not torch.randn)")


def _expect_rows_differ(x: Tensor) -> None:
    for i in range(x.shape[0]):
        if (x[i] == x[i, :1]).all():
            raise CheckFailed(f"in instance {i}, every row of the batch is the same; each batch "
                              "element needs its own random numbers")


def _expect_frequencies(x: Tensor, p: Tensor) -> None:
    """Entry (i, b, f) is nonzero with probability p[i, f]: a z-test per (instance, feature)."""
    batch = x.shape[1]
    fraction = (x != 0).double().mean(dim=1)  # (instances, features)

    def z(target: Tensor) -> Tensor:
        return (fraction - target).abs() / ((target * (1 - target) + 1 / batch) / batch).sqrt()

    z_p = z(p)
    if z_p.max() <= Z:
        return
    if z(1 - p).max() <= Z:
        raise CheckFailed("entries are nonzero with probability 1 - feature_probability: "
                          "sparsity and feature probability are swapped")
    i, f = divmod(int(z_p.argmax()), p.shape[1])
    raise CheckFailed(
        f"in instance {i}, feature {f} is nonzero in {float(fraction[i, f]):.1%} of the batch, but "
        f"its feature_probability is {float(p[i, f]):.2f} (every instance and feature has its own "
        "probability)")


def _uniform_test(x: Tensor, low: float, high: float) -> tuple[bool, float, float, float, int]:
    """Whether the nonzero entries of x fail to look U[low, high] (mean, variance or the largest
    CDF deviation, KS, beyond chance), with their mean, variance, KS statistic and count; too few
    entries (< 100) never fail."""
    values = x[x != 0].sort().values
    n = values.numel()
    if n < 100:
        return False, 0.0, 0.0, 0.0, n
    width = high - low
    mean, var = float(values.mean()), float(values.var())
    ranks = torch.arange(1, n + 1, dtype=torch.float64) / n
    cdf = (values - low) / width
    ks = float(torch.maximum(ranks - cdf, cdf - (ranks - 1 / n)).max())
    # uniform: variance w²/12, fourth central moment w⁴/80, so Var(sample variance) ≈ w⁴/180/n
    failed = (abs(mean - (low + high) / 2) > Z * math.sqrt(width ** 2 / 12 / n)
              or abs(var - width ** 2 / 12) > Z * math.sqrt(width ** 4 / 180 / n) or ks > 2.5 / math.sqrt(n))
    return failed, mean, var, ks, n


def _expect_uniform_values(x: Tensor) -> None:
    """The nonzero entries are U[0, 1]: mean, variance and the largest CDF deviation (KS)."""
    failed, mean, var, ks, _ = _uniform_test(x, 0.0, 1.0)
    if failed:
        advice = ("; are the active values all the same?" if var < 1e-6 else
                  "; draw the values and the active/inactive decision with separate random numbers"
                  if mean < 0.5 else "")
        raise CheckFailed(
            f"the nonzero entries should be uniform on [0, 1], but theirs have mean {mean:.3f}, "
            f"variance {var:.3f} (uniform: 0.5 and 1/12) and differ from the uniform CDF by up "
            f"to {ks:.3f}{advice}")


def _expect_independent(x: Tensor) -> None:
    """No correlation between neighbouring instances, nor between neighbouring features."""
    limit = Z / math.sqrt(x.shape[1])
    if x.shape[0] > 1:
        r = _correlation(x[:-1], x[1:])  # (instances - 1, features)
        if r.abs().max() > limit:
            i, f = divmod(int(r.abs().argmax()), r.shape[1])
            raise CheckFailed(
                f"instances {i} and {i + 1} are not independent (feature {f} has correlation "
                f"{float(r[i, f]):.2f} between them); draw fresh random numbers for every instance")
    if x.shape[2] > 1:
        r = _correlation(x[..., :-1], x[..., 1:])  # (instances, features - 1)
        if r.abs().max() > limit:
            i, f = divmod(int(r.abs().argmax()), r.shape[1])
            raise CheckFailed(
                f"features {f} and {f + 1} of instance {i} are not independent (correlation "
                f"{float(r[i, f]):.2f}); draw fresh random numbers for every feature")


def _sampled_batch(learner, case: Case) -> Tensor:
    """Call a batch generator ``learner(feature_probability, batch_size[, generator])`` on a
    batch case and check its shape, dtype, device and finiteness; the batch in float64 on the CPU."""
    p = case.feature_probability
    kwargs = {"generator": _generator(case.seed)} if accepts_argument(learner, "generator") else {}
    out = expect_tensor(call_pure(learner, {"feature_probability": p, "batch_size": case.batch_size},
                                  **kwargs))
    expect_shape(out, (p.shape[0], case.batch_size, p.shape[1]), "(instances, batch_size, features)")
    expect_dtype(out, torch.float32, why="like torch.rand")
    expect_device(out, p.device)
    expect_finite(out)
    return out.detach().to("cpu", torch.float64)


@exercise(
    "generate_batch",
    cases=_batch_case,
    seeds=range(4),
    passed="{n}/{n} cases have the right distribution.",
    hints=[
        "Each entry is independent: active with probability feature_probability[i, f], and then "
        "uniform on [0, 1]; inactive entries are exactly 0.",
        "Draw two random tensors of shape (instances, batch_size, features): one for the values, "
        "one to compare with the probability. Pass generator= and device= to torch.rand.",
        "feature_probability is (instances, features); index it as feature_probability[:, None, :] "
        "to broadcast over the batch, and keep an entry where the random number is < p.",
    ],
)
def check_generate_batch(learner, case: Case) -> None:
    """Check your ``generate_batch(feature_probability, batch_size, generator=None)`` by
    statistics: shape, dtype, range, how often each feature is active, uniform values,
    independence.  Deterministic: each case seeds torch (and passes ``generator`` if your
    function takes one)."""
    p = case.feature_probability
    x = _sampled_batch(learner, case)
    _expect_in_unit_interval(x)
    _expect_rows_differ(x)
    _expect_frequencies(x, p.detach().to("cpu", torch.float64))
    _expect_uniform_values(x)
    _expect_independent(x)


# --------------------------------------------------------------------------------------
# importance_weighted_loss
# --------------------------------------------------------------------------------------


def _loss_case(seed: int) -> Case:
    """seed % 3 picks: general, one instance, batch of one.  Importance varies per feature."""
    gen = _generator(seed)
    kind = seed % 3
    instances = 1 if kind == 1 else _randint(gen, 2, 4)
    batch = 1 if kind == 2 else _randint(gen, 3, 8)
    features = _randint(gen, 2, 6)
    x = _sparse_features(gen, (instances, batch, features))
    out = x + 0.3 * torch.randn(instances, batch, features, generator=gen)
    importance = 0.1 + 0.9 * torch.rand(instances, features, generator=gen)
    label = f"instances={instances}, batch={batch}, features={features}"
    return Case(label, out=out, x=x, importance=importance)


def _loss_mistakes(case: Case) -> dict[str, Tensor]:
    error = case.x - case.out
    importance = case.importance[:, None, :]
    weighted = importance * error**2
    return {
        "the importance is not applied": (error**2).mean(dim=(1, 2)),
        "the importance is inside the square ((I·(x - x'))² instead of I·(x - x')²)":
            ((importance * error) ** 2).mean(dim=(1, 2)),
        "the absolute error instead of the squared error": (importance * error.abs()).mean(dim=(1, 2)),
        "a sum over batch and features instead of a mean": weighted.sum(dim=(1, 2)),
        "a mean over the batch but a sum over features": weighted.mean(dim=1).sum(dim=-1),
        "a sum over the batch but a mean over features": weighted.sum(dim=1).mean(dim=-1),
        "the square root of the loss": ref.importance_weighted_loss(case.out, case.x, case.importance).sqrt(),
    }


@exercise(
    "importance_weighted_loss",
    cases=_loss_case,
    seeds=range(6),
    hints=[
        "One loss per instance, shape (instances,): weight each squared error by its feature's "
        "importance, then average over the batch and the features.",
        "importance is (instances, features) while the errors are (instances, batch, features): "
        "broadcast it with importance[:, None, :].",
        "The importance multiplies the squared error, it is not inside the square; reduce with "
        ".mean(dim=(1, 2)), not .mean() (which also averages over instances).",
    ],
)
def check_importance_weighted_loss(learner, case: Case) -> None:
    """Check your ``importance_weighted_loss(out, x, importance)``: one loss per instance."""
    out = call_pure(learner, {"out": case.out, "x": case.x, "importance": case.importance})
    expected = ref.importance_weighted_loss(case.out, case.x, case.importance)
    if isinstance(out, Tensor):
        expect_shape(out, expected.shape, "(instances,)",
                     note="; keep one loss per instance: average over batch and features only")
    out = expect_output(out, expected, "(instances,)")
    expect_close(out, expected, suspects=_loss_mistakes(case))


# --------------------------------------------------------------------------------------
# feature_norms and superposition_interference
# --------------------------------------------------------------------------------------


def _geometry_case(seed: int) -> Case:
    """A random W with one zero column (feature ``zero`` of instance 0)."""
    gen = _generator(seed)
    instances, hidden, features = _model_shape(gen, seed)
    W = torch.randn(instances, hidden, features, generator=gen)
    zero = _randint(gen, 0, features - 1)
    W[0, :, zero] = 0.0
    label = f"instances={instances}, hidden={hidden}, features={features}, W[0, :, {zero}] = 0"
    return Case(label, W=W)


def _norms_mistakes(W: Tensor) -> dict[str, Tensor]:
    mistakes = {
        "squared norms (the square root is missing)": (W**2).sum(dim=1),
        "the sum of absolute values (L1) instead of the Euclidean norm": W.abs().sum(dim=1),
    }
    if W.shape[1] == W.shape[2]:
        mistakes["the norm is taken over the feature axis instead of the hidden axis"] = W.norm(dim=2)
    return mistakes


@exercise(
    "feature_norms",
    cases=_geometry_case,
    seeds=range(4),
    hints=[
        "Feature i's direction is the column W[:, :, i]; its length is the Euclidean norm of "
        "that column.",
        "W is (instances, hidden, features): take the norm over the hidden axis, dim=1.",
    ],
)
def check_feature_norms(learner, case: Case) -> None:
    """Check your ``feature_norms(W)``: ‖W_i‖ per instance and feature, shape (instances, features)."""
    out = call_pure(learner, {"W": case.W})
    expected = geometry.feature_norms(case.W)
    out = expect_output(out, expected, "(instances, features)")
    expect_close(out, expected, suspects=_norms_mistakes(case.W))


def _off_diagonal_sum(squared: Tensor, dim: int = -1) -> Tensor:
    """Σ_{j≠i} of an (instances, i, j) matrix, summing over ``dim``."""
    return squared.sum(dim=dim) - squared.diagonal(dim1=-2, dim2=-1)


def _interference_mistakes(W: Tensor) -> dict[str, Tensor]:
    unit = geometry.unit_features(W)
    overlaps = torch.einsum("ihf,ihg->ifg", unit, W)  # Ŵ_i · W_j
    return {
        "the sum includes the j = i term (‖W_i‖²)": overlaps.square().sum(dim=-1),
        "W_i is not normalised (W_i · W_j instead of Ŵ_i · W_j)":
            _off_diagonal_sum(torch.einsum("ihf,ihg->ifg", W, W).square()),
        "both W_i and W_j are normalised (Ŵ_i · Ŵ_j instead of Ŵ_i · W_j)":
            _off_diagonal_sum(torch.einsum("ihf,ihg->ifg", unit, unit).square()),
        "W_j is normalised instead of W_i, or the sum runs over i instead of j":
            _off_diagonal_sum(overlaps.square(), dim=-2),
        "the overlaps Ŵ_i · W_j are not squared": _off_diagonal_sum(overlaps),
        "absolute overlaps |Ŵ_i · W_j| instead of squared ones": _off_diagonal_sum(overlaps.abs()),
    }


@exercise(
    "superposition_interference",
    cases=_geometry_case,
    seeds=range(4),
    hints=[
        "For each feature i, normalise its column to Ŵ_i = W_i / ‖W_i‖, take its dot product "
        "with every other column W_j, square, and sum over j ≠ i.",
        "All the dot products at once: einsum('ihf,ihg->ifg', W_hat, W) gives (instances, i, j). "
        "Remove the j = i term (the diagonal) before or after summing over j.",
        "A zero column has norm 0: divide by norm.clamp_min(1e-8) so that Ŵ_i stays 0 "
        "instead of NaN.",
    ],
)
def check_superposition_interference(learner, case: Case) -> None:
    """Check your ``superposition_interference(W)``: Σ_{j≠i} (Ŵ_i · W_j)², shape (instances, features)."""
    out = call_pure(learner, {"W": case.W})
    expected = geometry.superposition_interference(case.W)
    out = expect_output(out, expected, "(instances, features)", finite_note=(
        " (a zero column W_i has norm 0: keep Ŵ_i = 0 there instead of dividing by 0)"))
    expect_close(out, expected, suspects=_interference_mistakes(case.W))
