"""Checks for chapter 03: the autoencoder's loss, its training loop (the capstone, step by step
against the reference), counting polysemantic neurons, the collision prediction (against a
simulation), the initial-argmax winner rate and the cross-entropy bound of one neuron reading
mutually exclusive tokens.

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
    accepts_argument,
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
    reference=poly.autoencoder_loss,
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
    reference=poly.polysemantic_neurons,
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
    reference=poly.predicted_polysemantic,
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
    raise CheckFailed(f"your prediction is {direction} against the simulation, by more than its "
                      "sampling noise allows")


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
    reference=poly.initial_argmax_win_rate,
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


# --------------------------------------------------------------------------------------
# train_autoencoder: the capstone, step by step against the reference loop
# --------------------------------------------------------------------------------------

TRAIN_STEPS = 150
_TINY = 1e-7  # the loss scale of the cases where a mean over instances would show


def _tiny_loss(W: Tensor, l1: float) -> Tensor:
    """``autoencoder_loss`` × 1e-7: gradients near Adam's ε, so that averaging the instances'
    losses instead of summing them changes the steps (Adam is otherwise blind to a scale)."""
    return poly.autoencoder_loss(W, l1) * _TINY


def _train_case(seed: int) -> Case:
    """Small autoencoders (n 3–6 features, m from n to 2n+1 neurons, 2–3 instances) trained 150
    steps; l1, lr and weight_decay change with the seed, and every other case (the first among
    them) passes a loss scaled by 1e-7, so that a mean over instances shows."""
    gen = _generator(seed)
    n = _randint(gen, 3, 6)
    m = _randint(gen, n, 2 * n + 1)
    instances = _randint(gen, 2, 3)
    l1 = [1e-2, 0.05, 0.0, 3e-3][seed % 4]
    lr = [1e-2, 2e-2, 5e-3][seed % 3]
    weight_decay = [0.1, 0.3, 0.05][(seed // 2) % 3]
    tiny = seed % 2 == 0
    device = "cuda" if torch.cuda.is_available() and seed % 4 == 3 else "cpu"
    label = (f"n={n}, m={m}, instances={instances}, l1={l1:g}, steps={TRAIN_STEPS}, lr={lr:g}, "
             f"weight_decay={weight_decay:g}, seed={seed}, device={device!r}"
             + (", loss_fn = autoencoder_loss × 1e-7" if tiny else ""))
    return Case(label, n=n, m=m, instances=instances, l1=l1, lr=lr, weight_decay=weight_decay, seed=seed,
                device=device, loss_fn=_tiny_loss if tiny else poly.autoencoder_loss)


def _train_arguments(case: Case) -> dict:
    return dict(steps=TRAIN_STEPS, lr=case.lr, weight_decay=case.weight_decay, seed=case.seed,
                device=case.device, progress=False)


def _train_variant(case: Case, optimizer: str = "adamw", reduce: str = "sum", zero_grad: bool = True) -> Tensor:
    """The final W of a (possibly wrong) loop on this case, on the CPU."""
    generator = torch.Generator().manual_seed(case.seed)
    W = (torch.randn(case.instances, case.n, case.m, generator=generator) / math.sqrt(case.m))
    W = W.to(case.device).requires_grad_()
    make = {"adamw": lambda: torch.optim.AdamW([W], lr=case.lr, weight_decay=case.weight_decay),
            "adam": lambda: torch.optim.Adam([W], lr=case.lr),
            "adam_l2": lambda: torch.optim.Adam([W], lr=case.lr, weight_decay=case.weight_decay)}
    optimizer = make[optimizer]()
    for _ in range(TRAIN_STEPS):
        loss = case.loss_fn(W, case.l1)
        if zero_grad:
            optimizer.zero_grad()
        getattr(loss, reduce)().backward()
        optimizer.step()
    return W.detach().cpu()


def _train_mistakes(case: Case) -> dict[str, Tensor]:
    return {
        "the optimiser is Adam without weight decay; the paper uses AdamW (decoupled weight decay "
        "`weight_decay`)": _train_variant(case, optimizer="adam"),
        "the optimiser is Adam with weight_decay, which adds the decay to the gradient (L2); the "
        "paper's AdamW decays the weights directly": _train_variant(case, optimizer="adam_l2"),
        "the per-instance losses are averaged before backward(); sum them, so that each instance "
        "trains on its own loss": _train_variant(case, reduce="mean"),
        "the gradients are never zeroed (optimizer.zero_grad() is missing), so they accumulate "
        "from step to step": _train_variant(case, zero_grad=False),
    }


def _init_mistakes(case: Case, W0: Tensor) -> dict[str, Tensor]:
    """What W_init is under a wrong initialisation scale, from the right one W0."""
    n, m = case.n, case.m
    return {
        "W_init is not scaled: W ~ N(0, 1/m) means torch.randn(...) divided by √m": W0 * math.sqrt(m),
        "W_init is divided by m; N(0, 1/m) has standard deviation 1/√m": W0 / math.sqrt(m),
        "W_init is scaled by 1/√n (features); the paper scales by 1/√m (neurons), so that each "
        "feature's row starts with norm about 1": W0 * math.sqrt(m / n),
    }


def _expect_weights(value, what: str, case: Case) -> Tensor:
    if not isinstance(value, Tensor):
        raise CheckFailed(f"{what} is {type(value).__name__}; expected a tensor")
    expect_shape(value, (case.instances, case.n, case.m), "(instances, n, m)")
    if value.requires_grad:
        raise CheckFailed(f"{what} still requires grad: return it detached (W.detach().cpu())")
    if value.device.type != "cpu":
        raise CheckFailed(f"{what} is on {value.device}; return it on the CPU (.cpu())")
    expect_finite(value)
    return value


@exercise(
    "train_autoencoder",
    reference=poly.train_autoencoder,
    cases=_train_case,
    seeds=range(6),
    time_limit=90,
    passed="{n}/{n} training runs follow the reference loop step by step.",
    hints=[
        "Draw W = torch.randn(instances, n, m, generator=torch.Generator().manual_seed(seed)) / √m "
        "first, move it to `device` and make it a leaf with requires_grad_(); keep a copy of it "
        "(W.detach().cpu().clone()) before the first step.",
        "One torch.optim.AdamW([W], lr=lr, weight_decay=weight_decay). Each step: loss = "
        "loss_fn(W, l1) (one loss per instance), optimizer.zero_grad(), loss.sum().backward(), "
        "optimizer.step().",
        "Return (W_init, W.detach().cpu()). `.cpu()` of a CPU tensor is the same tensor, so the "
        "copy of the initial W needs .clone(), or it is trained along with W.",
    ],
)
def check_train_autoencoder(learner, case: Case) -> None:
    """Check your ``train_autoencoder(n, m, instances, l1, loss_fn, steps, lr, weight_decay,
    seed, device, progress)``: it trains small autoencoders for 150 steps, and its (W_init, W)
    must equal the course's loop (W ~ N(0, 1/m) from the seeded generator, full-batch AdamW on
    loss_fn(W, l1) summed over instances), W_init exactly and W step by step."""
    if not accepts_argument(learner, "loss_fn"):
        raise CheckFailed("your function takes no `loss_fn` argument: keep the signature train_autoencoder(n, m, "
                          "instances, l1, loss_fn, steps, lr, weight_decay, seed, device, progress)")
    torch.manual_seed(case.seed + 99_991)  # torch's global stream is not the seeded generator
    out = learner(case.n, case.m, case.instances, case.l1, loss_fn=case.loss_fn, **_train_arguments(case))
    if not isinstance(out, (tuple, list)) or len(out) != 2:
        raise CheckFailed(f"your function returned {type(out).__name__}; expected a pair (W_init, W)")
    W_init, W = out
    W_init, W = _expect_weights(W_init, "W_init", case), _expect_weights(W, "the trained W", case)
    expected_init, expected = poly.train_autoencoder(case.n, case.m, case.instances, case.l1, case.loss_fn,
                                                     **_train_arguments(case))
    if W_init.data_ptr() == W.data_ptr() or (torch.equal(W_init, W) and not torch.equal(W_init, expected_init)):
        raise CheckFailed("your W_init is the trained W itself: it was not copied before training "
                          "(W.detach() and .cpu() of a CPU tensor share its memory; add .clone())")
    if not torch.allclose(W_init, expected_init, rtol=0, atol=1e-7):
        for description, wrong in _init_mistakes(case, expected_init).items():
            if torch.allclose(W_init, wrong, rtol=1e-5, atol=1e-7):
                raise CheckFailed(f"your initial weights match a known mistake: {description}")
        raise CheckFailed("your W_init is not the reference draw: draw torch.randn(instances, n, m, generator=g) "
                          "/ √m from g = torch.Generator().manual_seed(seed), before anything else")
    if torch.equal(W, W_init):
        raise CheckFailed(f"your W did not change in {TRAIN_STEPS} steps: train W itself with AdamW, and call "
                          "optimizer.step() after backward()")
    if torch.allclose(W, expected, rtol=1e-3, atol=1e-5):
        return
    for description, wrong in _train_mistakes(case).items():
        if torch.allclose(W, wrong, rtol=1e-3, atol=1e-5):
            raise CheckFailed(f"your training matches a known mistake: {description}")
    raise CheckFailed(f"your trained W differs from the reference loop's after {TRAIN_STEPS} steps: check the "
                      "optimiser and its arguments, that the loss is loss_fn(W, l1) summed over instances, and "
                      "the order zero_grad, backward, step")


# --------------------------------------------------------------------------------------
# ce_lower_bound: one neuron, N equally likely tokens
# --------------------------------------------------------------------------------------

_BOUND_PATTERNS = [
    [1, 0, 0, 0], [1, 1, 0, 0], [1, 2, 0, 0], [1, 2, 2, 0, 0, 0], [0, 0, 0, 0, 0],
    [3, 3, 3], [0.5, 1, 1.5, 2, 2], [1, 1, 1, 2, 0, 0, 0, 0],
]


def _bound_case(seed: int) -> Case:
    """One activation pattern per seed (the neuron's activation on each of N equally likely
    tokens, N from 3 to 8): one token, two at one level, two at different levels, several
    levels, all silent, all at one level; scaled and permuted, float32 or float64."""
    gen = _generator(seed)
    pattern = torch.tensor(_BOUND_PATTERNS[seed % len(_BOUND_PATTERNS)], dtype=torch.float64)
    scale = 0.5 + 2.5 * float(torch.rand(1, generator=gen))
    dtype = torch.float64 if seed % 2 else torch.float32
    activations = (pattern * scale)[torch.randperm(pattern.numel(), generator=gen)].to(dtype)
    return Case(f"N={activations.numel()} tokens, {len(set(pattern.tolist()))} activation level(s), "
                f"{dtype}", activations=activations)


def _group_sizes(activations: Tensor) -> tuple[list[int], list[int]]:
    """Sizes of the groups of equal activation: (silent group or [], groups that fire)."""
    values, counts = torch.unique(activations.double(), return_counts=True)
    silent = [int(c) for v, c in zip(values, counts) if v <= 0]
    firing = [int(c) for v, c in zip(values, counts) if v > 0]
    return silent, firing


def _bound_mistakes(activations: Tensor) -> dict[str, float]:
    N = activations.numel()
    silent, firing = _group_sizes(activations)
    groups = silent + firing
    right = sum(g / N * math.log(g) for g in groups)
    active = sum(firing)
    term = lambda sizes: sum(g / N * math.log(g) for g in sizes if g)
    return {
        "the logarithm is base 2; the cross-entropy is in nats (natural log)": right / math.log(2),
        "all tokens the neuron fires on are treated as one group; tokens at different activation "
        "levels can be told apart": term(silent + [active]),
        "the groups are not weighted by their probability |g|/N": sum(math.log(g) for g in groups),
        "the silent tokens are not a group of their own: tokens with activation 0 cannot be told "
        "apart from each other either": term(firing),
        "this is the entropy of the activation level, not the uncertainty about the token given "
        "the level": -sum(g / N * math.log(g / N) for g in groups),
    }


@exercise(
    "ce_lower_bound",
    reference=poly.ce_lower_bound,
    cases=_bound_case,
    seeds=range(8),
    hints=[
        "Group the tokens by their activation: tokens at the same level look identical to the "
        "readout, tokens at different levels can be separated (in the limit of a large readout). "
        "Within a group of |g| tokens the best guess is uniform.",
        "A token in a group of size |g| costs ln |g| (a uniform guess among |g|); it is drawn with "
        "probability 1/N. Sum over tokens, i.e. Σ over groups of (|g|/N) ln |g|; torch.unique(..., "
        "return_counts=True) gives the group sizes.",
    ],
)
def check_ce_lower_bound(learner, case: Case) -> None:
    """Check your ``ce_lower_bound(activations)``: the smallest cross-entropy (in nats) a linear
    readout of one neuron can reach when predicting N equally likely tokens, given the
    neuron's activation on each token, (N,).  Return a number."""
    out = _as_number(call_pure(learner, {"activations": case.activations}))
    expected = poly.ce_lower_bound(case.activations)
    if math.isclose(out, expected, rel_tol=1e-5, abs_tol=1e-7):
        return
    for description, wrong in _bound_mistakes(case.activations).items():
        if math.isclose(out, wrong, rel_tol=1e-5, abs_tol=1e-7):
            raise CheckFailed(f"your bound matches a known mistake: {description}")
    raise CheckFailed(f"your bound is too {'high' if out > expected else 'low'}")
