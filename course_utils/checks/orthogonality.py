"""Checks for chapter 00 (nearly orthogonal directions and compressed sensing): the coherence of a
set of vectors, soft-thresholding, the one-step decoder, and the capstone, ISTA.

Each check compares the learner's code with the library's reference
(``course_utils.orthogonality``) on seeded cases; ``_*_mistakes`` compute what common wrong
answers give, so that a failure can name the mistake without showing the right values.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .. import orthogonality as ref
from ._framework import Case, CheckFailed, call_pure, exercise, expect_close, expect_output
from ._helpers import _generator, _randint

# --------------------------------------------------------------------------------------
# coherence
# --------------------------------------------------------------------------------------


def _coherence_case(seed: int) -> Case:
    """V (N, d).  seed % 4: 0 random unit rows; 1 rows of random lengths; 2 an antipodal pair
    (v and −2v: coherence 1 only with |cos|); 3 float64, more rows than dimensions, one row
    repeated in the batch of two sets (V (2, N, d))."""
    gen = _generator(seed)
    kind = seed % 4
    N, d = _randint(gen, 3, 9), _randint(gen, 2, 6)
    V = torch.randn(N, d, generator=gen)
    if kind == 0:
        V = V / V.norm(dim=-1, keepdim=True)
        return Case(f"N={N} unit vectors in d={d}", V=V)
    if kind == 1:
        V = V * (0.2 + 3 * torch.rand(N, 1, generator=gen))
        return Case(f"N={N} vectors of different lengths in d={d}", V=V)
    if kind == 2:
        V[1] = -2 * V[0]
        return Case(f"N={N} vectors in d={d}, one pair antipodal", V=V)
    V = torch.randn(2, N, d, generator=gen, dtype=torch.float64)
    return Case(f"a batch of 2 sets of N={N} vectors in d={d}, float64", V=V)


def _coherence_mistakes(V: Tensor) -> dict[str, Tensor]:
    U = V / V.norm(dim=-1, keepdim=True)
    C, dots = U @ U.transpose(-1, -2), V @ V.transpose(-1, -2)
    off = ~torch.eye(V.shape[-2], dtype=torch.bool)
    return {
        "the diagonal is included: cos(v_i, v_i) = 1 is every set's maximum; take i ≠ j only":
            C.abs().amax(dim=(-1, -2)),
        "the cosines are signed: v and −v are the same line, so take |cos|": C[..., off].amax(dim=-1),
        "these are dot products, not cosines: normalise the rows first": dots[..., off].abs().amax(dim=-1),
        "this is the mean |cos| over pairs, not the maximum": C[..., off].abs().mean(dim=-1),
    }


@exercise(
    "coherence",
    cases=_coherence_case,
    seeds=range(8),
    reference=ref.coherence,
    hints=[
        "Normalise each row to unit length, then all cosines at once are U @ U.T (shape (N, N)).",
        "Lines, not arrows: take the absolute value; the diagonal holds cos(v_i, v_i) = 1 and must "
        "be left out (a boolean mask ~torch.eye(N, dtype=torch.bool)).",
        "Write it for a leading batch dimension too: U @ U.transpose(-1, -2), C[..., mask], and the "
        "maximum over the last axis.",
    ],
)
def check_coherence(learner, case: Case) -> None:
    """Check your ``coherence(V)``: the mutual coherence μ = max_{i≠j} |cos(v_i, v_j)| of the
    rows of V (N, d), or of each set of a batch (..., N, d) -> (...,)."""
    out = call_pure(learner, {"V": case.V})
    expected = ref.coherence(case.V)
    out = expect_output(out, expected, "(...) = one number per set")
    expect_close(out, expected, suspects=_coherence_mistakes(case.V))


# --------------------------------------------------------------------------------------
# soft_threshold
# --------------------------------------------------------------------------------------


def _threshold_case(seed: int) -> Case:
    """x (trials, n) with entries on both sides of ±t, exact zeros; t a number, or per entry."""
    gen = _generator(seed)
    trials, n = _randint(gen, 1, 4), _randint(gen, 3, 10)
    x = 2 * torch.randn(trials, n, generator=gen)
    x[0, 0] = 0.0
    if seed % 3 == 2:
        t = 0.2 + torch.rand(n, generator=gen)
        return Case(f"x of shape {(trials, n)}, t a tensor of shape ({n},)", x=x, t=t)
    t = float(0.2 + torch.rand((), generator=gen))
    if seed % 4 == 3:
        x = x.double()
    return Case(f"x of shape {(trials, n)}{', float64' if x.dtype == torch.float64 else ''}, t a number",
                x=x, t=t)


def _threshold_mistakes(x: Tensor, t) -> dict[str, Tensor]:
    return {
        "this is hard thresholding (x where |x| > t, else 0); soft thresholding also shrinks the "
        "survivors by t": torch.where(x.abs() > t, x, torch.zeros_like(x)),
        "this is the ReLU of x − t: the negative entries must shrink towards 0 too, "
        "sign(x) · max(|x| − t, 0)": torch.relu(x - t),
        "the sign is lost: multiply max(|x| − t, 0) by sign(x)": (x.abs() - t).clamp_min(0),
        "entries inside [−t, t] are not set to 0": x.sign() * (x.abs() - t),
    }


@exercise(
    "soft_threshold",
    cases=_threshold_case,
    seeds=range(8),
    reference=ref.soft_threshold,
    hints=[
        "S_t(x) = sign(x) · max(|x| − t, 0), entry by entry: every entry moves t towards 0, and "
        "the ones that would cross it stop at 0.",
        "torch.sign(x) * torch.clamp(x.abs() - t, min=0); t may be a number or a tensor that "
        "broadcasts against x.",
    ],
)
def check_soft_threshold(learner, case: Case) -> None:
    """Check your ``soft_threshold(x, t)``: S_t(x) = sign(x) · max(|x| − t, 0) entrywise, the
    proximal map of t‖·‖₁."""
    out = call_pure(learner, {"x": case.x, "t": case.t})
    expected = ref.soft_threshold(case.x, case.t)
    out = expect_output(out, expected, "x's shape")
    expect_close(out, expected, suspects=_threshold_mistakes(case.x, case.t))


# --------------------------------------------------------------------------------------
# one_step_decode
# --------------------------------------------------------------------------------------


def _decode_case(seed: int) -> Case:
    """W (d, n) with unit columns, x = W f for nonnegative sparse f (trials, n), b a negative
    number or a (n,) tensor."""
    gen = _generator(seed)
    d, n, trials = _randint(gen, 3, 8), _randint(gen, 9, 20), _randint(gen, 1, 5)
    W = ref.sensing_matrix(d, n, gen, torch.float32)
    x = ref.measure(W, ref.sparse_signals(trials, n, _randint(gen, 1, 3), gen, dtype=torch.float32))
    b = -0.5 if seed % 2 == 0 else -(0.2 + 0.6 * torch.rand(n, generator=gen))
    what = "b = −0.5" if seed % 2 == 0 else f"b a tensor of shape ({n},)"
    return Case(f"W of shape {(d, n)}, x of shape {(trials, d)}, {what}", W=W, x=x, b=b)


def _decode_mistakes(W: Tensor, x: Tensor, b) -> dict[str, Tensor]:
    return {
        "the ReLU is missing: f̂ = ReLU(Wᵀ x + b)": x @ W + b,
        "the bias is added after the ReLU; it goes inside: ReLU(Wᵀ x + b)": torch.relu(x @ W) + b,
        "the bias is subtracted: b is already negative, add it": torch.relu(x @ W - b),
        "the bias is missing": torch.relu(x @ W),
    }


@exercise(
    "one_step_decode",
    cases=_decode_case,
    seeds=range(8),
    reference=ref.one_step_decode,
    hints=[
        "The toy model's decoder: project x onto every feature direction (the columns of W), add "
        "the bias, and keep the positive part: f̂ = ReLU(Wᵀ x + b).",
        "With x as rows (trials, d) and W (d, n), Wᵀ x for every trial is x @ W, shape (trials, n); "
        "then torch.relu(x @ W + b).",
    ],
)
def check_one_step_decode(learner, case: Case) -> None:
    """Check your ``one_step_decode(W, x, b)``: f̂ = ReLU(Wᵀ x + b) for every row of x (trials, d),
    with W (d, n) -> (trials, n)."""
    out = call_pure(learner, {"W": case.W, "x": case.x, "b": case.b})
    expected = ref.one_step_decode(case.W, case.x, case.b)
    out = expect_output(out, expected, "(trials, n)")
    expect_close(out, expected, suspects=_decode_mistakes(case.W, case.x, case.b))


# --------------------------------------------------------------------------------------
# The capstone: ISTA
# --------------------------------------------------------------------------------------


def _ista_case(seed: int) -> Case:
    """A small sparse-recovery problem, float64: W (d, n) with unit columns (or, seed % 4 == 3,
    columns of different lengths, so that ‖W‖₂ ≠ 1 matters more), signed k-sparse f, x = W f;
    λ and the number of steps change with the seed (steps = 1 included)."""
    gen = _generator(seed)
    d, n, trials = _randint(gen, 5, 12), _randint(gen, 15, 30), _randint(gen, 1, 4)
    W = ref.sensing_matrix(d, n, gen)
    if seed % 4 == 3:
        W = W * (0.5 + 2 * torch.rand(n, generator=gen, dtype=W.dtype))
    x = ref.measure(W, ref.sparse_signals(trials, n, _randint(gen, 1, 3), gen, nonnegative=False))
    lam = (0.01, 0.1, 0.3, 0.05)[seed % 4]
    steps = (1, 5, 40, 100)[seed % 4] if seed < 8 else _randint(gen, 1, 60)
    return Case(f"W of shape {(d, n)}, x of shape {(trials, d)}, lam={lam:g}, steps={steps}",
                W=W, x=x, lam=lam, steps=steps)


def _ista_with(W: Tensor, x: Tensor, lam: float, steps: int, *, step: str = "1/L", threshold: str = "lam/L",
               sign: int = 1, shrink: bool = True) -> Tensor:
    """ISTA with one part changed: the step (1/L, or 1), the threshold (λ/L, or λ), the gradient's
    sign, or no soft-threshold at all."""
    L = torch.linalg.matrix_norm(W, ord=2) ** 2
    eta = 1 / L if step == "1/L" else torch.ones((), dtype=W.dtype)
    t = lam * eta if threshold == "lam/L" else lam
    f = torch.zeros(x.shape[0], W.shape[1], dtype=x.dtype)
    for _ in range(steps):
        f = f + sign * eta * ((x - f @ W.T) @ W)
        if shrink:
            f = ref.soft_threshold(f, t)
    return f


def _ista_mistakes(case: Case) -> dict[str, Tensor]:
    W, x, lam, steps = case.W, case.x, case.lam, case.steps
    return {
        "the step size is 1, not 1/L with L = ‖W‖₂² (the largest singular value, squared)":
            _ista_with(W, x, lam, steps, step="1", threshold="lam"),
        "the threshold is λ; after a step of size 1/L it is λ/L": _ista_with(W, x, lam, steps, threshold="lam"),
        "the gradient step goes uphill: f + (1/L) Wᵀ(x − W f) moves towards the data, the sign is flipped":
            _ista_with(W, x, lam, steps, sign=-1),
        "there is no soft-thresholding: every step must end with S_{λ/L}": _ista_with(W, x, lam, steps, shrink=False),
    }


def _first_differing_step(learner, case: Case, expected: Tensor) -> int:
    """The first number of steps at which the learner's iterate leaves the reference's."""
    for t in range(1, case.steps + 1):
        mine = learner(case.W, case.x, case.lam, t)
        if not isinstance(mine, Tensor) or mine.shape != expected.shape:
            return t
        if not torch.allclose(mine.double(), ref.ista(case.W, case.x, case.lam, t), rtol=1e-4, atol=1e-7):
            return t
    return case.steps


@exercise(
    "ista",
    cases=_ista_case,
    seeds=range(8),
    reference=ref.ista,
    passed="{n}/{n} runs follow the reference ISTA step by step.",
    hints=[
        "Start from f = 0 (shape (trials, n)). Each step: a gradient step on ½‖x − W f‖², then "
        "soft-thresholding: f ← S_{λ/L}(f + (1/L) Wᵀ(x − W f)).",
        "L = ‖W‖₂², the largest singular value of W squared: torch.linalg.matrix_norm(W, ord=2) ** 2. "
        "With x as rows, W f for every trial is f @ W.T and Wᵀ r is r @ W.",
        "The threshold is λ/L, not λ: the step has size 1/L, and so does the L1 term's share of it. "
        "Run exactly `steps` steps and return the last f.",
    ],
)
def check_ista(learner, case: Case) -> None:
    """Check your ``ista(W, x, lam, steps)``: ``steps`` iterations of f ← S_{λ/L}(f + (1/L) Wᵀ(x − W f))
    from f = 0, L = ‖W‖₂², for every row of x (trials, d) with W (d, n) -> f (trials, n); compared
    with the reference after 1, 5, 40 and 100 steps, and step by step where it differs."""
    out = call_pure(learner, {"W": case.W, "x": case.x, "lam": case.lam, "steps": case.steps})
    expected = ref.ista(case.W, case.x, case.lam, case.steps)
    out = expect_output(out, expected, "(trials, n)")
    try:
        expect_close(out, expected, rtol=1e-4, atol=1e-7, suspects=_ista_mistakes(case))
    except CheckFailed as failure:
        if "known mistake" in str(failure) or case.steps == 1:
            raise
        t = _first_differing_step(learner, case, expected)
        raise CheckFailed(f"output differs from the reference: your iterate first leaves the reference's after "
                          f"{t} of {case.steps} steps; check the start f = 0, the step size 1/L and the "
                          "threshold λ/L") from None
