"""What the checks of several chapters share: seeded case shapes and the loss reductions a
learner gets wrong, the statistics of a sampled batch of sparse features, and reading a number
(or a dict of numbers) the learner returned.

``_framework`` is the machinery every check runs in (registering an exercise, calling the
learner safely, comparing tensors) and knows nothing about the course's models or data.  This
module holds the pieces that build cases and judge outputs for more than one chapter, so a
chapter's check module imports from ``_framework`` and from here, never from another
chapter's module.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Mapping, Sequence

import torch
from torch import Tensor

from ._framework import (
    Case,
    CheckFailed,
    accepts_argument,
    call_pure,
    expect_device,
    expect_dtype,
    expect_finite,
    expect_shape,
    expect_tensor,
)

# --------------------------------------------------------------------------------------
# Seeded cases, and what they are compared with
# --------------------------------------------------------------------------------------


def _generator(seed: int) -> torch.Generator:
    """A CPU generator seeded with ``seed``: a case's inputs depend on its seed alone."""
    return torch.Generator().manual_seed(seed % 2**63)


def _randint(gen: torch.Generator, low: int, high: int) -> int:
    """A random integer in [low, high]."""
    return int(torch.randint(low, high + 1, (1,), generator=gen))


def _model_shape(gen: torch.Generator, seed: int) -> tuple[int, int, int]:
    """(instances, hidden, features); seed % 4 picks: general, one instance, hidden=1, square."""
    kind = seed % 4
    instances = 1 if kind == 1 else _randint(gen, 2, 4)
    hidden = 1 if kind == 2 else _randint(gen, 2, 4)
    features = hidden if kind == 3 else _randint(gen, hidden + 1, 7)
    return instances, hidden, features


def _relu(t: Tensor) -> Tensor:
    return torch.relu(t)


def _reduction_mistakes(weighted: Tensor) -> dict[str, Tensor]:
    """What a per-instance loss (instances,) comes out as when ``weighted``, the weighted squared
    errors (instances, batch, features), is summed where it should be averaged: the right loss
    is their mean over batch and features."""
    return {
        "a sum over batch and features instead of a mean": weighted.sum(dim=(1, 2)),
        "a mean over the batch but a sum over features": weighted.mean(dim=1).sum(dim=-1),
        "a sum over the batch but a mean over features": weighted.sum(dim=1).mean(dim=-1),
    }


# --------------------------------------------------------------------------------------
# Sampled batches: statistical tests of a batch generator's output (instances, batch, features)
# --------------------------------------------------------------------------------------

Z = 5.0  # statistical tests reject at 5 standard errors: the reference never fails them
BATCH_SIZE = 20_000  # samples per statistical case: 5 standard errors of a frequency are < 2 %


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


def _expect_batch(out, case: Case) -> Tensor:
    """``out``, a batch drawn for ``case``, as float64 on the CPU, after checking that it is a
    float32 tensor (instances, batch_size, features) on the inputs' device with no NaN or inf."""
    p = case.feature_probability
    out = expect_tensor(out)
    expect_shape(out, (p.shape[0], case.batch_size, p.shape[1]), "(instances, batch_size, features)")
    expect_dtype(out, torch.float32, why="like torch.rand")
    expect_device(out, p.device)
    expect_finite(out)
    return out.detach().to("cpu", torch.float64)


def _sampled_batch(learner, case: Case) -> Tensor:
    """Call a batch generator ``learner(feature_probability, batch_size[, generator])`` on a
    batch case and check its shape, dtype, device and finiteness; the batch in float64 on the CPU."""
    p = case.feature_probability
    kwargs = {"generator": _generator(case.seed)} if accepts_argument(learner, "generator") else {}
    return _expect_batch(call_pure(learner, {"feature_probability": p, "batch_size": case.batch_size},
                                   **kwargs), case)


def _expect_generator_argument(learner, signature: str) -> None:
    """Fail unless ``learner`` takes a ``generator`` argument, as ``signature`` does."""
    if not accepts_argument(learner, "generator"):
        raise CheckFailed(f"your function takes no `generator` argument: keep the signature {signature}")


def _expect_uses_generator(sample: Callable[[torch.Generator], object]) -> None:
    """``sample(generator)`` draws a batch: the same generator seed gives the same batch whatever
    torch's global state; another seed another batch."""
    def draw(seed: int, global_seed: int) -> Tensor:
        torch.manual_seed(global_seed)
        return expect_tensor(sample(_generator(seed)))

    first, again, other = draw(1, 2), draw(1, 3), draw(4, 3)
    if not torch.equal(first, again) or torch.equal(first, other):
        raise CheckFailed("your batches do not come from the `generator` you are given: pass "
                          "generator=generator to every torch.rand call")


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


def _has_variance(w: Tensor, variance: float) -> bool:
    """Whether the flat float64 entries ``w`` can be draws of mean 0 and this variance (each
    within Z standard errors)."""
    n = w.numel()
    return (abs(float(w.mean())) <= Z * math.sqrt(variance / n)
            and abs(float(w.var()) - variance) <= Z * variance * math.sqrt(2 / n))


def _looks_normal(w: Tensor) -> bool:
    """Whether the kurtosis of the flat float64 entries ``w`` is a normal distribution's, 3,
    within Z standard errors (uniform draws have 1.8)."""
    var = float(w.var())
    return abs(float(((w - w.mean()) ** 4).mean() / var**2) - 3) <= Z * math.sqrt(24 / w.numel())


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


def _expect_sparse_uniform(x: Tensor, p: Tensor) -> None:
    """``x`` (instances, batch, features) is the course's sparse feature data: entry (i, b, f) is
    0, or with probability p[i, f] uniform on [0, 1], drawn afresh for every batch row."""
    _expect_in_unit_interval(x)
    _expect_rows_differ(x)
    _expect_frequencies(x, p.detach().to("cpu", torch.float64))
    _expect_uniform_values(x)


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


# --------------------------------------------------------------------------------------
# Numbers: a learner's function that returns one number, or a dict of them
# --------------------------------------------------------------------------------------


def _as_number(out) -> float:
    """``out`` as a float: a Python number or a one-element tensor, finite, not a bool."""
    if isinstance(out, Tensor):
        if out.numel() != 1:
            raise CheckFailed(f"your function returned a tensor of shape {tuple(out.shape)}; expected one number")
        out = out.item()
    if isinstance(out, bool) or not isinstance(out, numbers.Real):
        kind = "None (did you forget to `return`?)" if out is None else type(out).__name__
        raise CheckFailed(f"your function returned {kind}; expected a number")
    if not math.isfinite(out):
        raise CheckFailed(f"your function returned {out}, not a finite number")
    return float(out)


def _dict_number(out: Mapping, key: str) -> float:
    """The entry ``key`` of the learner's dict as a float: a number, a one-element tensor or a
    NumPy scalar, finite, not a bool."""
    value = out[key]
    if isinstance(value, Tensor) and value.numel() == 1:
        value = value.item()
    if hasattr(value, "item") and not isinstance(value, Tensor) and getattr(value, "size", 1) == 1:
        value = value.item()  # a NumPy scalar
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise CheckFailed(f"the entry {key!r} of your dict is {type(value).__name__}; expected a number")
    if not math.isfinite(value):
        raise CheckFailed(f"the entry {key!r} of your dict is {value}, not a finite number")
    return float(value)


def _close_number(a: float, b: float) -> bool:
    """Whether ``a`` ≈ ``b`` up to float noise (rtol 1e-4, atol 1e-6)."""
    return abs(a - b) <= 1e-6 + 1e-4 * abs(b)


def _expect_entry(key: str, value: float, right: Sequence[float], mistakes: Mapping[str, float]) -> None:
    """Fail unless ``value``, the learner's entry ``key`` of a dict of numbers, is close to one
    of the ``right`` values; name the known mistake it matches (description -> the value that
    mistake gives), or say whether it is too high or too low (than the first right value)."""
    if any(_close_number(value, r) for r in right):
        return
    for description, wrong in mistakes.items():
        if _close_number(value, wrong):
            raise CheckFailed(f"the entry {key!r} is wrong and matches a known mistake: {description}")
    raise CheckFailed(f"the entry {key!r} is too {'high' if value > right[0] else 'low'}")


# --------------------------------------------------------------------------------------
# A learner's model class: its methods, parameters and buffers
# --------------------------------------------------------------------------------------


def _method(model, name: str, *args):
    """Call ``model.<name>(*args)``, naming the method in any failure."""
    method = getattr(model, name, None)
    if not callable(method):
        raise CheckFailed(f"your model has no method `{name}`")
    try:
        return method(*args)
    except NotImplementedError:
        raise CheckFailed(f"your `{name}` still raises NotImplementedError: write it too") from None
    except CheckFailed:
        raise
    except Exception as error:
        from ._framework import _describe_raise

        raise CheckFailed(f"your `{name}` raised {_describe_raise(error, method)}") from None


def _expect_buffer(model, name: str, expected: Tensor, device) -> None:
    value = getattr(model, name, None)
    if not isinstance(value, Tensor):
        raise CheckFailed(f"`self.{name}` should be a tensor of shape (instances, features) "
                          "(per_instance(...) broadcasts what was given)")
    expect_shape(value, expected.shape, "(instances, features)",
                 note=f" for self.{name}; broadcast it with per_instance(...)")
    expect_device(value, device)
    if not torch.allclose(value.detach().cpu().float(), expected):
        raise CheckFailed(f"`self.{name}` holds other values than the {name} the model was given")
