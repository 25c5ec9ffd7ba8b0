"""Checks for chapter 01: the toy model's forward pass, its data, its loss, its geometry.

Each check runs the learner's function on seeded cases and compares it with the library's
reference (``course_utils.toy_models``, ``course_utils.geometry``).  ``_*_mistakes``
compute what common wrong answers give, so a failure can name the mistake; the batch
generator, being random, is checked by statistical tests instead.  Case shapes cycle with
the seed so that the default seeds cover one instance, one hidden dimension and square W.
"""

from __future__ import annotations

import math
from types import SimpleNamespace

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
    judge_parameter,
    observed,
    plain,
    probe_parameter,
    result_check,
    same_tensor,
    same_value,
)
from ._helpers import (
    _has_variance,
    _looks_normal,
    _expect_buffer,
    _method,
    Z,
    _batch_case,
    _expect_frequencies,
    _expect_generator_argument,
    _expect_independent,
    _expect_sparse_uniform,
    _expect_uses_generator,
    _generator,
    _model_shape,
    _randint,
    _reduction_mistakes,
    _sampled_batch,
)


def _sparse_features(gen: torch.Generator, shape, p: float = 0.5) -> Tensor:
    """Features like the model's data: 0 with probability 1 - p, else U[0, 1]."""
    values = torch.rand(shape, generator=gen)
    return torch.where(torch.rand(shape, generator=gen) < p, values, torch.zeros(()))


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
    reference=ref.toy_forward,
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


@exercise(
    "generate_batch",
    reference=ref.generate_batch,
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
    _expect_generator_argument(learner, "generate_batch(feature_probability, batch_size, generator=None)")
    x = _sampled_batch(learner, case)
    _expect_sparse_uniform(x, p)
    _expect_independent(x)
    _expect_uses_generator(lambda generator: learner(p, 64, generator=generator))


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
        **_reduction_mistakes(weighted),
        "the square root of the loss": ref.importance_weighted_loss(case.out, case.x, case.importance).sqrt(),
    }


@exercise(
    "importance_weighted_loss",
    reference=ref.importance_weighted_loss,
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
    reference=geometry.feature_norms,
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
    reference=geometry.superposition_interference,
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


# --------------------------------------------------------------------------------------
# The capstone, part 1: the ToyModel class
# --------------------------------------------------------------------------------------

INIT_INSTANCES, INIT_HIDDEN, INIT_FEATURES = 300, 4, 6  # 7,200 weights for the initialisation's statistics


def _model_case(seed: int) -> Case:
    """Constructor arguments; seed % 4 picks the shape of feature_probability and importance
    (scalar, per feature, per instance, per instance and feature) and the activation cycles."""
    gen = _generator(seed)
    instances, hidden, features = _model_shape(gen, seed)
    activation = "relu" if seed % 3 else "linear"
    kind = seed % 4
    p = [0.3, 0.05 + 0.9 * torch.rand(features, generator=gen),
         0.05 + 0.9 * torch.rand(instances, 1, generator=gen),
         0.05 + 0.9 * torch.rand(instances, features, generator=gen)][kind]
    importance = [1.0, 0.8 ** torch.arange(features, dtype=torch.float32),
                  0.2 + torch.rand(instances, 1, generator=gen),
                  0.2 + torch.rand(instances, features, generator=gen)][(kind + 1) % 4]
    device = "cuda" if torch.cuda.is_available() and seed % 4 == 3 else "cpu"
    shape = lambda v: "a scalar" if not isinstance(v, Tensor) else f"shape {tuple(v.shape)}"
    label = (f"n_features={features}, n_hidden={hidden}, n_instances={instances}, activation={activation!r}, "
             f"feature_probability {shape(p)}, importance {shape(importance)}"
             + (", device='cuda'" if device == "cuda" else ""))
    return Case(label, n_features=features, n_hidden=hidden, n_instances=instances, activation=activation,
                feature_probability=p, importance=importance, device=device, seed=seed)


def _build(learner, case: Case, generator: torch.Generator | None, **changes):
    arguments = dict(n_features=case.n_features, n_hidden=case.n_hidden, n_instances=case.n_instances,
                     activation=case.activation, feature_probability=case.feature_probability,
                     importance=case.importance, device=case.device, generator=generator)
    arguments.update(changes)
    model = learner(**arguments)
    if not isinstance(model, torch.nn.Module):
        raise CheckFailed(f"ToyModel(...) made a {type(model).__name__}, not an nn.Module: "
                          "subclass nn.Module and call super().__init__() first")
    return model


def _init_sample(learner, device) -> dict:
    """Runs the learner's class: a large model's initial W and b, for their statistics."""
    model = learner(n_features=INIT_FEATURES, n_hidden=INIT_HIDDEN, n_instances=INIT_INSTANCES,
                    device=device, generator=_generator(7))
    return {"W": plain(getattr(model, "W", None)), "b": plain(getattr(model, "b", None))}


def _init_statistics(sample) -> None:
    """Xavier-normal W (std √(2/(hidden + features)), per instance) and a zero b, judged on
    ``_init_sample``'s W and b."""
    if not (isinstance(sample, dict) and "W" in sample):
        raise CheckFailed("the grader could not read what your code did (no initial W)")
    W = sample["W"]
    if not isinstance(W, Tensor) or W.shape != (INIT_INSTANCES, INIT_HIDDEN, INIT_FEATURES):
        return  # the per-case checks name what is wrong with W
    w = W.to("cpu", torch.float64).flatten()
    if not _has_variance(w, 2 / (INIT_HIDDEN + INIT_FEATURES)):
        if _has_variance(w, 2 / (INIT_HIDDEN * INIT_FEATURES + INIT_INSTANCES * INIT_FEATURES)):
            raise CheckFailed("W's initial spread matches nn.init.xavier_normal_ applied to the whole "
                              "(instances, hidden, features) tensor, which takes its fans from the wrong "
                              "axes; use the std of Xavier's formula for one instance's (hidden, features)")
        raise CheckFailed("W's initial entries do not have Xavier-normal's spread for one instance: "
                          "mean 0 and std √(2 / (n_hidden + n_features))")
    if not _looks_normal(w):
        raise CheckFailed("W's initial entries have the right spread but are not normally distributed "
                          "(torch.randn, not torch.rand)")
    b = sample.get("b")
    if isinstance(b, Tensor) and (b != 0).any():
        raise CheckFailed("b should start at zero")


def _model_input(case: Case) -> Tensor:
    """The batch that forward and loss run on: (instances, 6, features) on the case's device."""
    return _sparse_features(_generator(case.seed + 1), (case.n_instances, 6, case.n_features)).to(case.device)


def _judge_toy_model(data, case: Case) -> None:
    """The verdict on what ``check_toy_model`` saw, where no learner code runs: the
    initialisation's statistics, the parameters, attributes and buffers, and forward, loss,
    its gradients and generate_batch against the reference functions."""
    if case.seed == 0:
        _init_statistics(observed(data, "init"))
    rng = observed(data, "rng")
    if not (isinstance(rng, (list, tuple)) and len(rng) == 2 and same_tensor(*rng)):
        raise CheckFailed("building the model drew from torch's global random state: draw W from the "
                          "`generator` argument instead (torch.randn(..., generator=generator))")
    instances, hidden, features = case.n_instances, case.n_hidden, case.n_features
    W = judge_parameter(observed(data, "W"), "W", (instances, hidden, features), "(instances, hidden, features)")
    b = judge_parameter(observed(data, "b"), "b", (instances, features), "(instances, features)")
    for value in (W, b):
        expect_device(value, case.device)
    if (b != 0).any():
        raise CheckFailed("b should start at zero")
    if not same_value(observed(data, "activation"), case.activation):
        raise CheckFailed("`self.activation` should keep the activation the model was given")
    for name in ("n_features", "n_hidden", "n_instances"):
        if not same_value(observed(data, name), getattr(case, name)):
            raise CheckFailed(f"`self.{name}` should keep the {name} the model was given "
                              "(the course's tools read it)")
    p = ref.per_instance(case.feature_probability, instances, features)
    importance = ref.per_instance(case.importance, instances, features)
    for name, expected in (("feature_probability", p), ("importance", importance)):
        # _expect_buffer reads the buffer as an attribute: give it what the probe read
        _expect_buffer(SimpleNamespace(**{name: observed(data, name)}), name, expected, case.device)
    if not same_tensor(W, observed(data, "W again")) or same_tensor(W, observed(data, "W other")):
        raise CheckFailed("W does not come from the `generator` argument: the same generator seed "
                          "should give the same W, another seed another W")

    x = _model_input(case)
    with torch.no_grad():
        expected = ref.toy_forward(W, b, x, case.activation)
        out = expect_output(observed(data, "forward"), expected, "(instances, batch, features)")
        mistakes = _forward_mistakes(Case("", W=W.cpu(), b=b.cpu(), x=x.cpu(), activation=case.activation))
        expect_close(out, expected, suspects=mistakes)
        expected_loss = ref.importance_weighted_loss(expected, x, importance.to(x.device))
        loss = expect_output(observed(data, "loss"), expected_loss, "(instances,)")
        loss_mistakes = _loss_mistakes(Case("", out=expected.cpu(), x=x.cpu(), importance=importance))
    expect_close(loss, expected_loss, suspects=loss_mistakes)
    if observed(data, "loss carries a gradient") is not True:
        raise CheckFailed("your loss carries no gradient (was it computed under torch.no_grad() or "
                          "with .detach()?): training could not change W and b")
    gradients = observed(data, "gradients")
    for name in ("W", "b"):
        grad = gradients.get(name) if isinstance(gradients, dict) else None
        if not isinstance(grad, Tensor) or not _nonzero_and_finite(grad):
            raise CheckFailed(f"no gradient reaches {name} from your loss: compute the output from "
                              f"self.{name} itself")

    batch = expect_tensor(observed(data, "batch"))
    expect_shape(batch, (instances, 4000, features), "(instances, batch_size, features)")
    expect_device(batch, case.device)
    _expect_frequencies(batch.to("cpu", torch.float64), p.double())
    if not same_tensor(batch, observed(data, "batch again")):
        raise CheckFailed("generate_batch does not draw from the `generator` it is given: the same "
                          "generator seed should give the same batch")


def _nonzero_and_finite(grad: Tensor) -> bool:
    grad = grad.to(torch.float64)
    return bool(torch.isfinite(grad).all()) and bool(grad.abs().sum() > 0)


@exercise(
    "ToyModel",
    cases=_model_case,
    seeds=range(8),
    time_limit=40,
    passed="{n}/{n} models built, initialised and run like the reference.",
    reference=ref.ToyModel,
    judge=_judge_toy_model,
    hints=[
        "__init__ stores the sizes and the activation, broadcasts feature_probability and importance "
        "to (instances, features) with per_instance(...), and creates W (instances, hidden, "
        "features) and b (instances, features) as nn.Parameters; forward, loss and generate_batch "
        "call your functions from exercises 1-3.",
        "Xavier-normal for one instance's (hidden, features) matrix: std = √(2 / (n_hidden + "
        "n_features)). torch.randn(..., generator=generator) * std, then .to(device); b starts at zero.",
        "nn.init.xavier_normal_ on the 3-D W would take its fans from the wrong axes. register_buffer "
        "keeps feature_probability and importance on the model's device.",
    ],
)
def check_toy_model(learner, case: Case, seen: dict) -> None:
    """Check your ``ToyModel`` class: its parameters and their initialisation, its buffers, and
    ``forward``, ``loss`` and ``generate_batch`` against the reference functions, with gradients
    reaching W and b.

    (This half runs your class and records what it does; ``_judge_toy_model`` compares.)"""
    if case.seed == 0:
        seen["init"] = _init_sample(learner, case.device)
    before = torch.get_rng_state()
    model = _build(learner, case, _generator(case.seed))
    seen["rng"] = [before, torch.get_rng_state()]
    seen["W"] = probe_parameter(model, "W")
    seen["b"] = probe_parameter(model, "b")
    for name in ("activation", "n_features", "n_hidden", "n_instances", "feature_probability", "importance"):
        seen[name] = plain(getattr(model, name, None))
    seen["W again"] = plain(_build(learner, case, _generator(case.seed)).W)
    seen["W other"] = plain(_build(learner, case, _generator(case.seed + 1000)).W)

    x = _model_input(case)
    with torch.no_grad():
        seen["forward"] = plain(_method(model, "forward", x))
    loss = _method(model, "loss", x)
    seen["loss"] = plain(loss)
    seen["loss carries a gradient"] = isinstance(loss, Tensor) and loss.requires_grad
    if seen["loss carries a gradient"]:
        model.W.grad = model.b.grad = None
        loss.sum().backward()
        seen["gradients"] = {"W": plain(model.W.grad), "b": plain(model.b.grad)}
    seen["batch"] = plain(_method(model, "generate_batch", 4000, _generator(case.seed + 2)))
    seen["batch again"] = plain(_method(model, "generate_batch", 4000, _generator(case.seed + 2)))


# --------------------------------------------------------------------------------------
# The capstone, part 2: the training loop
# --------------------------------------------------------------------------------------

TRAIN_STEPS = 150
SCHEDULES = ("cosine", "constant", "linear")


def _train_case(seed: int) -> Case:
    """A small model (5 features, 2 dimensions, 3 instances) and the loop's arguments; the
    schedule, learning rate, batch size and importance scale change with the seed (a tiny
    importance makes Adam sensitive to a mean taken where the paper sums)."""
    gen = _generator(seed)
    schedule = SCHEDULES[seed % 3]
    lr = (1e-3, 3e-3)[seed % 2]
    batch_size = (64, 128)[(seed // 2) % 2]
    scale = 1e-5 if seed % 4 == 0 else 1.0  # first, so that a mean taken for the sum fails fast
    p = 0.05 + 0.5 * torch.rand(3, 1, generator=gen)
    label = (f"5 features, 2 dimensions, 3 instances, steps={TRAIN_STEPS}, batch_size={batch_size}, "
             f"lr={lr:g}, schedule={schedule!r}, seed={seed}" + (", importance × 1e-5" if scale != 1 else ""))
    return Case(label, schedule=schedule, lr=lr, batch_size=batch_size, seed=seed,
                feature_probability=p, importance=scale * ref.importance_decay(5, 0.9))


def _fresh_model(case: Case) -> ref.ToyModel:
    return ref.ToyModel(5, 2, 3, feature_probability=case.feature_probability, importance=case.importance,
                        device="cpu", generator=_generator(case.seed + 17))


def _train_arguments(case: Case) -> dict:
    return dict(steps=TRAIN_STEPS, batch_size=case.batch_size, lr=case.lr, schedule=case.schedule, seed=case.seed)


def _loop_mistakes(case: Case) -> dict[str, tuple[Tensor, Tensor]]:
    """(losses, final W) of known wrong loops on this case."""
    def run(zero_grad=True, schedule=True, reduce="sum"):
        model = _fresh_model(case)
        optimizer = torch.optim.Adam(model.parameters(), lr=case.lr)
        multiplier = ref.lr_schedule(case.schedule)
        generator = torch.Generator().manual_seed(case.seed)
        losses = []
        for step in range(TRAIN_STEPS):
            if schedule:
                for group in optimizer.param_groups:
                    group["lr"] = case.lr * multiplier(step, TRAIN_STEPS)
            loss = model.loss(model.generate_batch(case.batch_size, generator))
            if zero_grad:
                optimizer.zero_grad()
            getattr(loss, reduce)().backward()
            optimizer.step()
            losses.append(loss.detach())
        return torch.stack(losses), model.W.detach()

    mistakes = {"the gradients are never zeroed (optimizer.zero_grad() is missing), so they "
                "accumulate from step to step": run(zero_grad=False),
                "the per-instance losses are averaged before backward(); the paper sums them, "
                "so each instance trains on its own loss": run(reduce="mean")}
    if case.schedule != "constant":
        mistakes["the learning rate never follows the schedule (set it at every step)"] = run(schedule=False)
    return mistakes


@exercise(
    "train_model",
    cases=_train_case,
    seeds=range(4),
    time_limit=90,
    passed="{n}/{n} training runs follow the reference loop step by step.",
    reference=ref.train_model,
    hints=[
        "One Adam optimiser over model.parameters(); at every step set the learning rate from the "
        "schedule, draw a fresh batch with model.generate_batch(batch_size, generator), compute "
        "model.loss(x) (one loss per instance), and take one optimiser step on the summed loss.",
        "The batches come from one generator made before the loop: torch.Generator(device=...)"
        ".manual_seed(seed). The learning rate at step t is lr * lr_schedule(schedule)(t, steps), "
        "set on every optimizer.param_groups entry.",
        "Inside the loop: optimizer.zero_grad(), loss.sum().backward(), optimizer.step(); write "
        "loss.detach() into row `step` of a (steps, instances) tensor made before the loop, and "
        "return it.",
    ],
)
def check_train_model(learner, case: Case) -> None:
    """Check your ``train_model(model, steps, batch_size, lr, schedule, seed, ...)``: it trains a
    small model for 150 steps from one seed, and its losses and final W must follow the course's
    loop (Adam, the schedule, fresh batches from the seeded generator, the summed loss)."""
    mine, theirs = _fresh_model(case), _fresh_model(case)
    W0 = mine.W.detach().clone()
    torch.manual_seed(case.seed + 99_991)  # torch's global stream is not the loop's seeded one
    kwargs = {"progress": False} if accepts_argument(learner, "progress") else {}
    losses = learner(mine, **_train_arguments(case), **kwargs)
    expected = ref.train_model(theirs, **_train_arguments(case), progress=False)
    if isinstance(losses, (list, tuple)) and losses and all(isinstance(t, Tensor) for t in losses):
        raise CheckFailed(f"your loop returned a {type(losses).__name__} of tensors: return one "
                          "tensor of shape (steps, instances), filled row by row")
    losses = expect_tensor(losses)
    if losses.requires_grad:
        raise CheckFailed("your losses still carry the autograd graph: keep loss.detach() of each step "
                          "(otherwise every step's graph stays in memory)")
    expect_shape(losses, expected.shape, "(steps, instances)",
                 note="; keep every step's per-instance loss, not their mean")
    expect_finite(losses)
    if torch.equal(mine.W.detach(), W0):
        raise CheckFailed("the model's W did not change: train the model you are given, and call "
                          "optimizer.step() after backward()")
    close = lambda a, b: torch.allclose(a, b, rtol=1e-3, atol=1e-7 * float(case.importance.max()) + 1e-9)
    if not close(losses[0], expected[0]):
        raise CheckFailed("the loss of the first step differs from the reference loop's, before any "
                          "update: draw each batch with model.generate_batch(batch_size, generator) from a "
                          "generator seeded with `seed`, and record model.loss(x) of that batch")
    if close(losses, expected) and torch.allclose(mine.W.detach(), theirs.W.detach(), rtol=1e-3, atol=1e-5):
        return
    for description, (wrong_losses, wrong_W) in _loop_mistakes(case).items():
        if close(losses, wrong_losses) and torch.allclose(mine.W.detach(), wrong_W, rtol=1e-3, atol=1e-5):
            raise CheckFailed(f"your training matches a known mistake: {description}")
    apart = ~torch.isclose(losses, expected, rtol=1e-3, atol=1e-7 * float(case.importance.max()) + 1e-9)
    first = int(apart.any(dim=1).float().argmax()) if apart.any() else TRAIN_STEPS
    raise CheckFailed(f"your losses leave the reference loop's at step {first} of {TRAIN_STEPS} (or the "
                      "final W differs): check the optimiser, the learning rate at each step, and the "
                      "order zero_grad, backward, step")


# --------------------------------------------------------------------------------------
# The n=2, m=1 phase diagram, derived
# --------------------------------------------------------------------------------------


def _phase_case(seed: int) -> Case:
    """r and s as tensors of several shapes (broadcast against each other), or plain floats."""
    gen = _generator(seed)
    kind = seed % 3
    if kind == 0:
        r, s = torch.logspace(-1, 1, 7), torch.logspace(-2, 0, 5)[:, None]
        label = "r (7,), s (5, 1): broadcast to (5, 7)"
    elif kind == 1:
        r, s = 0.1 + 5 * torch.rand(4, 3, generator=gen), 0.01 + 0.99 * torch.rand(4, 3, generator=gen)
        label = "r and s of shape (4, 3)"
    else:
        r, s = float(0.2 + 3 * torch.rand(1, generator=gen)), float(0.05 + 0.9 * torch.rand(1, generator=gen))
        label = "r and s plain floats"
    return Case(label, r=r, s=s)


def _phase_mistakes(r, s) -> dict[str, Tensor]:
    r, s = torch.broadcast_tensors(torch.as_tensor(r, dtype=torch.float64), torch.as_tensor(s, dtype=torch.float64))
    mean_square, variance = s / 3, s / 3 - s**2 / 4
    both = (1 + r) * s**2 / 6
    return {
        "an ignored feature costs its mean square E[x²], but its bias can absorb the mean: it costs "
        "the variance": torch.stack([r * mean_square, both, mean_square], dim=-1),
        "the variance of an active feature alone (1/12) ignores that it is off with probability 1 - s":
            torch.stack([r * s / 12, both, s / 12], dim=-1),
        "E[min(x₁, x₂)²] for two U[0, 1] values is 1/6, not 1/4 or 1/3":
            torch.stack([r * variance, (1 + r) * s**2 / 4, variance], dim=-1),
        "the antipodal pair errs only when both features are on (probability s², not s)":
            torch.stack([r * variance, (1 + r) * s / 6, variance], dim=-1),
        "the columns are out of order: (ignore feature 2, antipodal pair, ignore feature 1)":
            torch.stack([variance, both, r * variance], dim=-1),
    }


@exercise(
    "phase_losses",
    cases=_phase_case,
    seeds=range(6),
    reference=geometry.phase_losses,
    hints=[
        "Three expected losses per (r, s), stacked on a last axis of 3 in the order of "
        "geometry.PHASES: ignore feature 2, antipodal pair, ignore feature 1.",
        "An ignored feature's best output is a constant (its bias): its mean. The cost is then its "
        "importance times its variance, E[x²] − E[x]², for x = 0 with probability 1 − s, else U[0, 1].",
        "The antipodal pair is exact unless both features are on (probability s²); then each output "
        "misses by min(x₁, x₂), and E[min²] for two independent U[0, 1] values is 1/6. Broadcast with "
        "torch.broadcast_tensors and stack with dim=-1.",
    ],
)
def check_phase_losses(learner, case: Case) -> None:
    """Check your ``phase_losses(r, s)``: the three solutions' expected losses, shape (..., 3)."""
    out = learner(case.r, case.s)
    expected = geometry.phase_losses(case.r, case.s)
    out = expect_tensor(out)
    expect_shape(out, expected.shape, "(..., 3) = the broadcast shape of r and s, then the three solutions")
    expect_finite(out)
    expect_close(out.double(), expected, suspects=_phase_mistakes(case.r, case.s))


# --------------------------------------------------------------------------------------
# one_sparse_terms: feature benefit and interference
# --------------------------------------------------------------------------------------


def _terms_case(seed: int) -> Case:
    gen = _generator(seed)
    instances, hidden, features = _model_shape(gen, seed)
    W = torch.randn(instances, hidden, features, generator=gen) / math.sqrt(hidden)
    importance = 0.1 + torch.rand(instances, features, generator=gen)
    label = f"instances={instances}, hidden={hidden}, features={features}, importance varies per feature"
    return Case(label, W=W, importance=importance)


def _terms_mistakes(W: Tensor, importance: Tensor) -> dict[str, tuple[Tensor, Tensor]]:
    benefit, interference = geometry.one_sparse_terms(W, importance)
    gram = torch.einsum("ihf,ihg->ifg", W, W)
    norms_squared = gram.diagonal(dim1=-2, dim2=-1)
    off = gram.square() - torch.diag_embed(norms_squared.square())
    return {
        "the feature benefit uses ‖W_i‖ where the paper has ‖W_i‖²":
            ((importance * (1 - norms_squared.sqrt()) ** 2).sum(-1), interference),
        "the interference term includes i = j": (benefit, interference + (importance * norms_squared**2).sum(-1)),
        "the overlaps W_j · W_i are not squared": (benefit, (gram - torch.diag_embed(norms_squared))
                                                   .mul(importance[:, None, :]).sum(dim=(-2, -1))),
        "the importance is left out": ((1 - norms_squared).square().sum(-1), off.sum(dim=(-2, -1))),
    }


@exercise(
    "one_sparse_terms",
    cases=_terms_case,
    seeds=range(6),
    reference=geometry.one_sparse_terms,
    passed="{n}/{n} cases match the reference (both terms).",
    hints=[
        "Both terms come from the Gram matrix W_i · W_j, (instances, features, features): its diagonal "
        "holds ‖W_i‖², its off-diagonal entries the overlaps.",
        "feature benefit = Σ_i I_i (1 − ‖W_i‖²)²; interference = Σ over i ≠ j of I_j (W_j · W_i)²: "
        "feature i active, error on output j, weighted by output j's importance.",
        "einsum('ihf,ihg->ifg', W, W) is the Gram matrix; remove its diagonal before squaring and "
        "summing, and broadcast importance[:, None, :] over the first feature axis.",
    ],
)
def check_one_sparse_terms(learner, case: Case) -> None:
    """Check your ``one_sparse_terms(W, importance)``: (feature benefit, interference), each (instances,)."""
    out = call_pure(learner, {"W": case.W, "importance": case.importance})
    if not (isinstance(out, (tuple, list)) and len(out) == 2):
        raise CheckFailed("return two tensors, (feature_benefit, interference)")
    expected = geometry.one_sparse_terms(case.W, case.importance)
    mistakes = _terms_mistakes(case.W, case.importance)
    for k, (mine, theirs, name) in enumerate(zip(out, expected, ("feature benefit", "interference"))):
        mine = expect_output(mine, theirs, f"(instances,) for the {name}")
        suspects = {description: pair[k] for description, pair in mistakes.items()}
        try:
            expect_close(mine, theirs, suspects=suspects)
        except CheckFailed as failure:
            raise CheckFailed(f"the {name} term: {failure}") from None


# --------------------------------------------------------------------------------------
# The capstones' result: the learner's ToyModel, trained by their train_model, is a pentagon
# --------------------------------------------------------------------------------------

# The chapter's pentagon (§7): 5 equally important features, 1 - S = 0.05, in 2 dimensions,
# several seeds trained at once, the best by loss kept.  The grader's run is shorter than
# the chapter's (10,000 steps at lr 1e-3).  With the reference ToyModel + train_model, the
# best of 8 instances was a pentagon for 41 of 50 initialisation and data seeds after 300
# steps at lr 3e-3, 160 of 160 after 400, 209 of 210 after 500, 260 of 260 after 1000 (every
# gap within 1.8° of 72°): PENTAGON_STEPS leaves room for a sound but slower learner model
# (docs/grading.md).
PENTAGON_INSTANCES = 8
PENTAGON_STEPS = 1000
PENTAGON_LR = 3e-3
PENTAGON_PROBABILITY = 0.05
PENTAGON_SEED = 0  # the model's generator and train_model's seed
PENTAGON_GAP_TOLERANCE = 5.0  # degrees: every gap between neighbouring features within 72 ± 5
PENTAGON_NORM_SPREAD = 1.25  # the longest feature at most 1.25 × the shortest
PENTAGON_EVAL_BATCH = 20_000  # the grader's own loss, to pick the best instance
PENTAGON_EVAL_SEED = 4321


def _plain_tensor(value) -> Tensor | None:
    """A plain float32 CPU copy of a tensor (a subclass loses its class), else None."""
    if not isinstance(value, Tensor):
        return None
    value = value.detach().to("cpu")
    return torch.empty(value.shape, dtype=torch.float32).copy_(value)


def _pentagon_call() -> str:
    return (f"ToyModel(5, 2, n_instances={PENTAGON_INSTANCES}, feature_probability={PENTAGON_PROBABILITY}, "
            f"generator=...)")


def _pentagon_training() -> str:
    return f"train_model(model, steps={PENTAGON_STEPS}, lr={PENTAGON_LR:g}, seed={PENTAGON_SEED})"


@torch.no_grad()
def _pentagon_losses(W: Tensor, b: Tensor) -> Tensor:
    """The loss of each trained instance in the ReLU model, on one large batch the grader
    draws itself: (instances,), inf for an instance with NaN or inf."""
    instances, _, features = W.shape
    p = torch.full((instances, features), PENTAGON_PROBABILITY)
    x = ref.generate_batch(p, PENTAGON_EVAL_BATCH, _generator(PENTAGON_EVAL_SEED))
    losses = ref.importance_weighted_loss(ref.toy_forward(W, b, x, "relu"), x, torch.ones(instances, features))
    return torch.where(torch.isfinite(losses), losses, torch.full_like(losses, math.inf))


def _degrees(values: Tensor) -> str:
    return "[" + ", ".join(f"{v:.0f}°" for v in values.tolist()) + "]"


def _judge_pentagon(data) -> str:
    """Runs in the grader: is the best trained instance (by the grader's loss) a regular
    pentagon?  Says what it measured either way."""
    instances, shapes = PENTAGON_INSTANCES, {"W": (PENTAGON_INSTANCES, 2, 5), "b": (PENTAGON_INSTANCES, 5)}
    if not isinstance(data, dict):
        raise CheckFailed("the training gave the grader nothing it could read")
    for name, shape in shapes.items():
        value = data.get(name)
        if not isinstance(value, Tensor):
            raise CheckFailed(f"after training, your model has no tensor `{name}`")
        if tuple(value.shape) != shape:
            raise CheckFailed(f"after training, the model's `{name}` has shape {tuple(value.shape)}, "
                              f"expected {shape}")
    W, b = data["W"].float(), data["b"].float()
    finite = torch.isfinite(W).all(dim=(1, 2)) & torch.isfinite(b).all(dim=1)
    if not finite.all():
        raise CheckFailed(f"after {_pentagon_training()}, W or b holds NaN or inf in "
                          f"{int((~finite).sum())} of {instances} instances")
    W0 = data.get("W0")
    if isinstance(W0, Tensor) and W0.shape == W.shape and torch.equal(W0.float(), W):
        raise CheckFailed(f"{_pentagon_training()} did not change the model's W")
    losses = _pentagon_losses(W, b)
    best = int(losses.argmin())
    norms = geometry.feature_norms(W[best:best + 1])[0]
    gaps = geometry.sorted_angle_gaps(W[best:best + 1])[0]
    represented = int((norms > 0.5).sum())
    where = (f"the best of {instances} instances (by loss) after {PENTAGON_STEPS} steps of your train_model "
             f"(lr {PENTAGON_LR:g})")
    measured = (f"{represented} of 5 features represented (‖W_i‖ > 0.5), angle gaps {_degrees(gaps)}, "
                f"‖W_i‖ {', '.join(f'{n:.2f}' for n in norms.tolist())}")
    regular = len(gaps) == 5 and float((gaps - 72).abs().max()) <= PENTAGON_GAP_TOLERANCE
    even = represented == 5 and float(norms.max() / norms.min()) <= PENTAGON_NORM_SPREAD
    if not (regular and even):
        raise CheckFailed(f"{where} is not a regular pentagon: {measured}")
    return (f"{where} is a regular pentagon: angle gaps {float(gaps.min()):.0f}°-{float(gaps.max()):.0f}°, "
            f"‖W_i‖ {float(norms.min()):.2f}-{float(norms.max()):.2f}")


@result_check("pentagon", uses=("ToyModel", "train_model"), judge=_judge_pentagon, points=1.0, time_limit=60,
              title="pentagon (result of ToyModel + train_model)")
def pentagon_result(ToyModel, train_model) -> dict:
    """Runs where the learner's code runs (the grader's sandbox): build the chapter's
    pentagon model with the learner's ``ToyModel``, train it with their ``train_model``,
    and return W before and after, and b, as plain tensors for ``_judge_pentagon``."""
    from ._framework import _describe_raise

    for name, value in (("ToyModel", ToyModel), ("train_model", train_model)):
        if not callable(value):
            raise CheckFailed(f"`{name}` is a {type(value).__name__}, not something the grader can call")
    try:
        model = ToyModel(5, 2, n_instances=PENTAGON_INSTANCES, feature_probability=PENTAGON_PROBABILITY,
                         device="cpu", generator=_generator(PENTAGON_SEED))
    except (NotImplementedError, CheckFailed):
        raise
    except Exception as error:
        raise CheckFailed(f"{_pentagon_call()} raised {_describe_raise(error, ToyModel)}") from None
    if not isinstance(model, torch.nn.Module):
        raise CheckFailed(f"{_pentagon_call()} made a {type(model).__name__}, not an nn.Module")
    W0 = _plain_tensor(getattr(model, "W", None))
    if W0 is None:
        raise CheckFailed(f"the model {_pentagon_call()} made has no tensor `W`")
    kwargs = {"progress": False} if accepts_argument(train_model, "progress") else {}
    try:
        train_model(model, steps=PENTAGON_STEPS, lr=PENTAGON_LR, seed=PENTAGON_SEED, **kwargs)
    except (NotImplementedError, CheckFailed):
        raise
    except Exception as error:
        raise CheckFailed(f"{_pentagon_training()} raised {_describe_raise(error, train_model)}") from None
    return {"W0": W0, "W": _plain_tensor(getattr(model, "W", None)), "b": _plain_tensor(getattr(model, "b", None))}
