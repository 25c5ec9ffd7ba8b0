"""Checks for chapter 05: a sparse autoencoder from scratch — encoder, decoder, the L1 loss, the
unit-norm decoder (gradient projection and renormalisation), TopK and BatchTopK activations,
JumpReLU's straight-through gradients, dead-latent resampling, MMCS and the evaluation metrics.

Row-vector convention throughout: x (batch, d_in), W_enc (d_in, n_latents), b_enc (n_latents,),
W_dec (n_latents, d_in) with unit-norm rows, b_dec (d_in,).  Each check compares the learner's
function with the library's reference in ``course_utils.sae`` (its SAE modules, activations,
``JumpReLUFunction`` and metrics) on seeded cases; ``_*_mistakes`` compute what common wrong
answers give, so that a failure can name the mistake.  Case shapes cycle with the seed so the
default seeds cover square weights (where a transpose goes unnoticed by the shapes), a batch of
one and a latent that never fires.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from .. import lm
from .. import sae as ref
from ._framework import (
    accepts_argument,
    Case,
    CheckFailed,
    call_pure,
    exercise,
    expect_close,
    expect_device,
    expect_output,
    expect_shape,
    expect_tensor,
    judge_parameter,
    observed,
    plain,
    probe_parameter,
    same_value,
)
from ._helpers import (
    _as_number,
    _close_number,
    _dict_number,
    _expect_entry,
    _generator,
    _method,
    _randint,
    _relu,
)


def _sae_shape(gen: torch.Generator, seed: int) -> tuple[int, int, int]:
    """(batch, d_in, n_latents); seed % 4 picks: overcomplete, square (d_in = n_latents),
    a batch of one, undercomplete."""
    kind = seed % 4
    batch = 1 if kind == 2 else _randint(gen, 3, 8)
    d_in = _randint(gen, 2, 6)
    if kind == 1:
        n = d_in
    elif kind == 3:
        d_in = max(d_in, 3)
        n = _randint(gen, 1, d_in - 1)
    else:
        n = _randint(gen, d_in + 1, 12)
    return batch, d_in, n


def _unit_rows(gen: torch.Generator, n: int, d: int) -> Tensor:
    W = torch.randn(n, d, generator=gen)
    return W / W.norm(dim=1, keepdim=True)


def _shape_label(batch: int, d_in: int, n: int) -> str:
    return f"batch={batch}, d_in={d_in}, n_latents={n}"


def _relu_sae(W_enc: Tensor, b_enc: Tensor, W_dec: Tensor, b_dec: Tensor) -> ref.ReLUSAE:
    """The library's ReLU SAE holding these parameters (on the CPU)."""
    d_in, n = W_enc.shape
    model = ref.ReLUSAE(d_in, n, device="cpu", generator=torch.Generator().manual_seed(0))
    for name, value in (("W_enc", W_enc), ("b_enc", b_enc), ("W_dec", W_dec), ("b_dec", b_dec)):
        # new Parameters, not copy_: with d_in = 1 or n_latents = 1 the initial W_enc = W_decᵀ
        # shares W_dec's storage
        setattr(model, name, torch.nn.Parameter(value.detach().clone()))
    return model


def _expect_tuple(out, names: Sequence[str]) -> tuple:
    """Fail unless ``out`` is a tuple (or list) of len(names) items."""
    wanted = f"a tuple ({', '.join(names)})"
    if out is None:
        raise CheckFailed(f"your function returned None; did you forget to `return` {wanted}?")
    if isinstance(out, Tensor):
        raise CheckFailed(f"your function returned a single tensor; expected {wanted}")
    if not isinstance(out, (tuple, list)):
        raise CheckFailed(f"your function returned a {type(out).__name__}; expected {wanted}")
    if len(out) != len(names):
        raise CheckFailed(f"your function returned {len(out)} items; expected {wanted}")
    return tuple(out)


def _expect_part(name: str, out, expected: Tensor, axes: str, suspects: dict[str, Tensor] | None = None,
                 shape_note: str = "") -> Tensor:
    """``expect_output`` + ``expect_close`` for one named item of a returned tuple."""
    if not isinstance(out, Tensor):
        kind = "None" if out is None else type(out).__name__
        raise CheckFailed(f"{name} is {kind}; expected a tensor {axes}")
    try:
        if shape_note:
            expect_shape(out, expected.shape, axes, note=shape_note)
        out = expect_output(out, expected, axes)
        expect_close(out, expected, suspects=suspects)
    except CheckFailed as failure:
        raise CheckFailed(f"{name}: {failure}") from None
    return out


# --------------------------------------------------------------------------------------
# sae_encode
# --------------------------------------------------------------------------------------


def _params(gen: torch.Generator, d_in: int, n: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """W_enc (d_in, n), b_enc (n,) of both signs, W_dec (n, d_in) with unit rows, b_dec (d_in,)."""
    W_enc = torch.randn(d_in, n, generator=gen) / math.sqrt(d_in)
    b_enc = 0.5 * torch.randn(n, generator=gen)
    W_dec = _unit_rows(gen, n, d_in)
    b_dec = 0.5 + 0.5 * torch.randn(d_in, generator=gen)
    return W_enc, b_enc, W_dec, b_dec


def _encode_case(seed: int) -> Case:
    """x, W_enc, b_enc, b_dec (shapes from ``_sae_shape``); for seed % 8 ≥ 4 latent 0 has a
    large negative bias, so it never fires."""
    gen = _generator(seed)
    batch, d_in, n = _sae_shape(gen, seed)
    W_enc, b_enc, _, b_dec = _params(gen, d_in, n)
    x = torch.randn(batch, d_in, generator=gen) + b_dec
    label = _shape_label(batch, d_in, n)
    if seed % 8 >= 4:
        b_enc[0] = -20.0
        label += ", latent 0 never fires"
    return Case(label, x=x, W_enc=W_enc, b_enc=b_enc, b_dec=b_dec)


def _encode_mistakes(case: Case) -> dict[str, Tensor]:
    x, W_enc, b_enc, b_dec = case.x, case.W_enc, case.b_enc, case.b_dec
    mistakes = {
        "it looks like you forgot to subtract b_dec from x before encoding": _relu(x @ W_enc + b_enc),
        "b_dec is added to x instead of subtracted": _relu((x + b_dec) @ W_enc + b_enc),
        "the ReLU is missing": (x - b_dec) @ W_enc + b_enc,
        "the ReLU is applied before adding b_enc (ReLU(...) + b_enc)": _relu((x - b_dec) @ W_enc) + b_enc,
        "b_enc is missing": _relu((x - b_dec) @ W_enc),
    }
    if W_enc.shape[0] == W_enc.shape[1]:
        mistakes["W_enc is transposed: it is (d_in, n_latents), so use (x − b_dec) @ W_enc"] = \
            _relu((x - b_dec) @ W_enc.T + b_enc)
    return mistakes


@exercise(
    "sae_encode",
    cases=_encode_case,
    seeds=range(8),
    reference=ref.sae_encode,
    hints=[
        "Three steps: subtract the decoder bias b_dec from x (the pre-encoder bias), multiply by "
        "W_enc and add b_enc, then apply a ReLU.",
        "x is (batch, d_in) and W_enc is (d_in, n_latents), so (x − b_dec) @ W_enc is "
        "(batch, n_latents); b_enc (n_latents,) broadcasts over the batch.  The ReLU comes last.",
    ],
)
def check_sae_encode(learner, case: Case) -> None:
    """Check your ``sae_encode(x, W_enc, b_enc, b_dec)``: the latent activations
    f = ReLU((x − b_dec) W_enc + b_enc).  x is (batch, d_in), W_enc (d_in, n_latents), b_enc
    (n_latents,), b_dec (d_in,); return (batch, n_latents)."""
    out = call_pure(learner, {"x": case.x, "W_enc": case.W_enc, "b_enc": case.b_enc, "b_dec": case.b_dec})
    d_in, n = case.W_enc.shape
    model = _relu_sae(case.W_enc, case.b_enc, torch.zeros(n, d_in), case.b_dec)
    with torch.no_grad():
        expected = model.encode(case.x)
    out = expect_output(out, expected, "(batch, n_latents)")
    expect_close(out, expected, suspects=_encode_mistakes(case))


# --------------------------------------------------------------------------------------
# sae_decode
# --------------------------------------------------------------------------------------


def _decode_case(seed: int) -> Case:
    """Nonnegative sparse f (a ReLU's output, latent 0 never firing when seed % 8 ≥ 4),
    W_dec with unit rows, b_dec."""
    gen = _generator(seed)
    batch, d_in, n = _sae_shape(gen, seed)
    _, _, W_dec, b_dec = _params(gen, d_in, n)
    f = _relu(torch.randn(batch, n, generator=gen))
    f[0, 0] = 1.5  # at least one latent on, so that every mistake shows
    label = _shape_label(batch, d_in, n)
    if seed % 8 >= 4 and n > 1:
        f[:, 0] = 0.0
        f[0, -1] = 1.5
        label += ", latent 0 never fires"
    return Case(label, f=f, W_dec=W_dec, b_dec=b_dec)


def _decode_mistakes(case: Case) -> dict[str, Tensor]:
    f, W_dec, b_dec = case.f, case.W_dec, case.b_dec
    mistakes = {
        "b_dec is missing: add it back after f @ W_dec": f @ W_dec,
        "b_dec is subtracted instead of added": f @ W_dec - b_dec,
        "a ReLU is applied to the output; the decoder is linear": _relu(f @ W_dec + b_dec),
    }
    if W_dec.shape[0] == W_dec.shape[1]:
        mistakes["W_dec is transposed: it is (n_latents, d_in) with latent i's direction in row i, "
                 "so use f @ W_dec"] = f @ W_dec.T + b_dec
    return mistakes


@exercise(
    "sae_decode",
    cases=_decode_case,
    seeds=range(8),
    reference=ref.sae_decode,
    hints=[
        "The reconstruction is a sum of decoder directions weighted by the latent activations, "
        "plus the decoder bias: x̂ = Σ_i f_i d_i + b_dec, where d_i is row i of W_dec.",
        "f is (batch, n_latents) and W_dec (n_latents, d_in): the sum for every input at once is "
        "f @ W_dec; add b_dec, which broadcasts over the batch.  No activation function.",
    ],
)
def check_sae_decode(learner, case: Case) -> None:
    """Check your ``sae_decode(f, W_dec, b_dec)``: the reconstruction x̂ = f W_dec + b_dec.
    f is (batch, n_latents), W_dec (n_latents, d_in), b_dec (d_in,); return (batch, d_in)."""
    out = call_pure(learner, {"f": case.f, "W_dec": case.W_dec, "b_dec": case.b_dec})
    n, d_in = case.W_dec.shape
    model = _relu_sae(torch.zeros(d_in, n), torch.zeros(n), case.W_dec, case.b_dec)
    with torch.no_grad():
        expected = model.decode(case.f)
    out = expect_output(out, expected, "(batch, d_in)")
    expect_close(out, expected, suspects=_decode_mistakes(case))


# --------------------------------------------------------------------------------------
# l1_sae_loss
# --------------------------------------------------------------------------------------

_L1_COEFFICIENTS = (0.3, 1.0, 0.05, 2.0, 0.0, 0.3, 0.7, 0.1)


def _l1_loss_case(seed: int) -> Case:
    """x, a reconstruction x̂ near x, nonnegative sparse f, and λ (0 in one default case);
    shapes from ``_sae_shape``.  x̂ and f require gradients."""
    gen = _generator(seed)
    batch, d_in, n = _sae_shape(gen, seed)
    x = torch.randn(batch, d_in, generator=gen)
    x_hat = (x + 0.5 * torch.randn(batch, d_in, generator=gen)).requires_grad_()
    f = (2 * _relu(torch.randn(batch, n, generator=gen))).requires_grad_()
    l1 = _L1_COEFFICIENTS[seed] if 0 <= seed < len(_L1_COEFFICIENTS) else \
        round(float(torch.rand(1, generator=gen)), 3)
    return Case(f"{_shape_label(batch, d_in, n)}, l1_coefficient={l1:g}", x=x, x_hat=x_hat, f=f, l1=l1)


def _l1_loss_reference(x: Tensor, x_hat: Tensor, f: Tensor, l1: float) -> Tensor:
    """The ReLU SAE's loss (``ReLUSAE.loss``) for a given x̂ and f: ‖x − x̂‖² summed over d_in
    and λ Σ_i |f_i|, each averaged over the batch."""
    return ref.SAE.mse(x, x_hat) + l1 * f.abs().sum(dim=1).mean()


def _l1_loss_mistakes(case: Case) -> dict[str, Tensor]:
    x, x_hat, f, l1 = case.x, case.x_hat.detach(), case.f.detach(), case.l1
    squared = (x - x_hat).square()
    mse = squared.sum(dim=1).mean()
    sparsity = f.abs().sum(dim=1).mean()
    return {
        "the squared error is averaged over d_in; sum it over d_in (and average over the batch)":
            squared.mean() + l1 * sparsity,
        "the L1 penalty is averaged over the latents; sum it over the latents (and average over "
        "the batch)": mse + l1 * f.abs().mean(),
        "both terms are averaged over every entry instead of summed per input":
            squared.mean() + l1 * f.abs().mean(),
        "the L1 coefficient λ is missing": mse + sparsity,
        "λ multiplies the reconstruction error instead of the L1 penalty": l1 * mse + sparsity,
        "λ multiplies the whole loss": l1 * (mse + sparsity),
        "the sparsity penalty is an L2 (Σ f²) instead of an L1 (Σ |f|)":
            mse + l1 * f.square().sum(dim=1).mean(),
        "the sparsity penalty is missing": mse,
        "summed over the batch instead of averaged": squared.sum() + l1 * f.abs().sum(),
        "the reconstruction error is not squared (‖x − x̂‖ instead of ‖x − x̂‖²)":
            squared.sum(dim=1).sqrt().mean() + l1 * sparsity,
        "the absolute error is used instead of the squared error": (x - x_hat).abs().sum(dim=1).mean() + l1 * sparsity,
    }


@exercise(
    "l1_sae_loss",
    cases=_l1_loss_case,
    seeds=range(8),
    reference=ref.l1_sae_loss,
    hints=[
        "Two terms: the reconstruction error ‖x − x̂‖² (squared, summed over the d_in dimensions) "
        "and λ times the L1 norm of the latents Σ_i |f_i| (summed over the latents).  Each is "
        "computed per input and then averaged over the batch.",
        "(x − x_hat).square().sum(dim=1) is one error per input, f.abs().sum(dim=1) one L1 norm "
        "per input; take .mean() of each.  Return a tensor (no .item(), no NumPy), so that "
        ".backward() can train through it.",
    ],
)
def check_l1_sae_loss(learner, case: Case) -> None:
    """Check your ``l1_sae_loss(x, x_hat, f, l1_coefficient)``: the ReLU SAE's loss, the batch
    mean of ‖x − x̂‖² (summed over d_in) plus λ times the batch mean of Σ_i |f_i|.  x, x_hat are
    (batch, d_in), f (batch, n_latents); return a scalar tensor that gradients can flow through."""
    with torch.enable_grad():  # even if the notebook calls the check under torch.no_grad()
        _check_l1_sae_loss(learner, case)


def _check_l1_sae_loss(learner, case: Case) -> None:
    x_hat = case.x_hat.detach().clone().requires_grad_()
    f = case.f.detach().clone().requires_grad_()
    out = call_pure(learner, {"x": case.x, "x_hat": x_hat, "f": f, "l1_coefficient": case.l1})
    expected = _l1_loss_reference(case.x, case.x_hat, case.f, case.l1)
    if isinstance(out, float):
        raise CheckFailed("your function returned a Python float; return the loss as a tensor (no .item()), "
                          "so that gradients can flow through it")
    if isinstance(out, Tensor) and out.dim() == 1 and len(out) == len(case.x) and len(out) > 1:
        raise CheckFailed(f"output has shape {tuple(out.shape)}: one loss per input; average over the "
                          "batch to return a single number (shape ())")
    out = expect_output(out, expected.detach(), "a single number, shape")
    expect_close(out, expected, suspects=_l1_loss_mistakes(case))
    if not out.requires_grad or out.grad_fn is None:
        raise CheckFailed("the loss has the right value but no gradient: it was computed outside "
                          "autograd's graph (.detach(), .item(), NumPy, or torch.no_grad()); compute "
                          "it with torch operations on the inputs")
    wanted = torch.autograd.grad(expected, (case.x_hat, case.f))
    got = torch.autograd.grad(out, (x_hat, f), allow_unused=True)
    where = (torch.ones_like(case.x, dtype=torch.bool), case.f.detach() != 0)  # |f| has no slope at 0
    for name, g, w, at in zip(("x_hat", "f"), got, wanted, where):
        if g is None or not torch.allclose(g[at].double(), w[at].double(), rtol=1e-4, atol=1e-5):
            raise CheckFailed(f"the loss has the right value but its gradient with respect to {name} is "
                              f"wrong: part of it is computed outside autograd's graph (.detach(), "
                              f".item() or NumPy)")


# --------------------------------------------------------------------------------------
# project_decoder_grad
# --------------------------------------------------------------------------------------


def _projection_case(seed: int) -> Case:
    """W_dec with unit rows and a gradient (n_latents, d_in); shapes from ``_sae_shape``
    (n_latents = 1 in some); for seed % 8 ≥ 4 row 0 of the gradient lies along W_dec's row 0."""
    gen = _generator(seed)
    _, d_in, n = _sae_shape(gen, seed)
    W_dec = _unit_rows(gen, n, d_in)
    grad = torch.randn(n, d_in, generator=gen)
    label = f"n_latents={n}, d_in={d_in}"
    if seed % 8 >= 4:
        grad[0] = -1.7 * W_dec[0]
        label += ", gradient row 0 along the decoder row"
    return Case(label, W_dec=W_dec, grad=grad)


def _projection_mistakes(case: Case) -> dict[str, Tensor]:
    W, g = case.W_dec, case.grad
    along = (g * W).sum(dim=1, keepdim=True)  # (n, 1): g_i · w_i
    mistakes = {
        "the sign is flipped: subtract the radial part, g − (g·w) w": g + along * W,
        "you returned the radial part (g·w) w; the new gradient is what is left, g − (g·w) w": along * W,
        "the columns are projected instead of the rows: each row g_i loses its component along "
        "its own decoder row w_i (sum over d_in, dim=1)": g - (g * W).sum(dim=0, keepdim=True) * W,
        "each row loses its components along every decoder row (g − g Wᵀ W); only its own row w_i counts":
            g - (g @ W.T) @ W,
        "the gradient is normalised instead of projected": g / g.norm(dim=1, keepdim=True),
        "the decoder rows are projected instead of the gradient (w − (w·g) g)": W - along * g,
    }
    if W.shape[0] == W.shape[1]:
        mistakes["(g·w) is broadcast along the wrong axis: keep it as a column, (g * W).sum(dim=1, "
                 "keepdim=True)"] = g - (g * W).sum(dim=1)[None, :] * W
    return mistakes


@exercise(
    "project_decoder_grad",
    cases=_projection_case,
    seeds=range(8),
    reference=ref.project_decoder_grad,
    hints=[
        "Each decoder row w_i has unit norm.  Remove from the gradient's row g_i the part that "
        "would change that norm, its component along w_i; what remains is tangent to the sphere.",
        "The component of g_i along the unit vector w_i is (g_i · w_i) w_i.  For all rows at once "
        "the dot products are (grad * W_dec).sum(dim=1, keepdim=True), shape (n_latents, 1).  "
        "Return a new tensor: don't modify grad in place.",
    ],
)
def check_project_decoder_grad(learner, case: Case) -> None:
    """Check your ``project_decoder_grad(W_dec, grad)``: the gradient with each row's component
    along its (unit) decoder row removed, g_i − (g_i · w_i) w_i.  W_dec and grad are
    (n_latents, d_in); return a new (n_latents, d_in) tensor without changing the inputs."""
    out = call_pure(learner, {"W_dec": case.W_dec, "grad": case.grad})
    n, d_in = case.W_dec.shape
    model = _relu_sae(torch.zeros(d_in, n), torch.zeros(n), case.W_dec, torch.zeros(d_in))
    model.W_dec.grad = case.grad.clone()
    model.project_decoder_grad_()
    expected = model.W_dec.grad
    out = expect_output(out, expected, "(n_latents, d_in)",
                        finite_note=" (dividing by a norm? the rows of W_dec already have norm 1)")
    expect_close(out, expected, suspects=_projection_mistakes(case))


# --------------------------------------------------------------------------------------
# normalise_decoder
# --------------------------------------------------------------------------------------


def _normalise_case(seed: int) -> Case:
    """W_dec (n_latents, d_in) with row norms between 0.1 and 5 (row 0 already unit when
    seed % 8 ≥ 4); shapes from ``_sae_shape``, d_in = 1 for seed 6."""
    gen = _generator(seed)
    _, d_in, n = _sae_shape(gen, seed)
    if seed == 6:
        d_in = 1
    norms = 0.1 + 4.9 * torch.rand(n, 1, generator=gen)
    W = _unit_rows(gen, n, d_in) * norms
    label = f"n_latents={n}, d_in={d_in}"
    if seed % 8 >= 4:
        W[0] = W[0] / W[0].norm()
        label += ", row 0 already unit"
    return Case(label, W_dec=W)


def _normalise_mistakes(W: Tensor) -> dict[str, Tensor]:
    rows = W.norm(dim=1, keepdim=True)
    return {
        "the columns are normalised instead of the rows (norm over dim=1, keepdim=True)":
            W / W.norm(dim=0, keepdim=True),
        "divided by the norm of the whole matrix instead of each row's norm": W / W.norm(),
        "divided by the squared norm instead of the norm": W / rows.square(),
        "divided by the sum of absolute values (L1 norm) instead of the Euclidean norm":
            W / W.abs().sum(dim=1, keepdim=True),
        "divided by the largest entry instead of the norm": W / W.abs().amax(dim=1, keepdim=True),
    }


@exercise(
    "normalise_decoder",
    cases=_normalise_case,
    seeds=range(8),
    reference=ref.normalise_decoder,
    hints=[
        "Every decoder row (a latent's direction) should end with Euclidean norm 1: divide each "
        "row by its own norm.",
        "W_dec.norm(dim=1, keepdim=True) is (n_latents, 1) and broadcasts over the row.  Return a "
        "new tensor (W / norms), not W /= norms.",
    ],
)
def check_normalise_decoder(learner, case: Case) -> None:
    """Check your ``normalise_decoder(W_dec)``: W_dec (n_latents, d_in) with every row rescaled
    to unit norm; return a new tensor without changing the input."""
    out = call_pure(learner, {"W_dec": case.W_dec})
    n, d_in = case.W_dec.shape
    model = _relu_sae(torch.zeros(d_in, n), torch.zeros(n), case.W_dec, torch.zeros(d_in))
    model.normalise_decoder_()
    expected = model.W_dec.detach()
    out = expect_output(out, expected, "(n_latents, d_in)")
    expect_close(out, expected, suspects=_normalise_mistakes(case.W_dec))


# --------------------------------------------------------------------------------------
# topk_activation
# --------------------------------------------------------------------------------------


def _topk_case(seed: int) -> Case:
    """Pre-activations (batch, n_latents) with large negative entries; row 0 has fewer than k
    positive entries (all negative when k = 1).  seed % 4 picks: general k (< batch, so that a
    top-k over the batch runs and differs from a ReLU), k = n_latents, a batch of one, k = 1."""
    gen = _generator(seed)
    kind = seed % 4
    batch = 1 if kind == 2 else _randint(gen, 3, 7)
    n = _randint(gen, 3, 10)
    k = n if kind == 1 else 1 if kind == 3 else _randint(gen, 2, n - 1 if kind == 2 else min(n - 1, batch - 1))
    pre = 2 * torch.randn(batch, n, generator=gen)
    pre[:, 0] = -5.0 - torch.rand(batch, generator=gen)  # |pre| largest but negative
    positive = min(k - 1, n - 1)  # row 0: fewer than k positive entries
    pre[0, 1:] = -pre[0, 1:].abs()
    pre[0, 1: 1 + positive] = pre[0, 1: 1 + positive].abs() + 0.1
    return Case(f"batch={batch}, n_latents={n}, k={k}", pre=pre, k=k)


def _topk_reference(pre: Tensor, k: int) -> Tensor:
    """``TopKSAE.activation``: ReLU of each row's k largest pre-activations, 0 elsewhere."""
    model = ref.TopKSAE(1, pre.shape[1], k, device="cpu", generator=torch.Generator().manual_seed(0))
    return model.activation(pre)


def _keep_topk(values: Tensor, pre: Tensor, k: int, dim: int = 1) -> Tensor:
    """pre where ``values`` is among the k largest along ``dim``, 0 elsewhere."""
    k = max(0, min(k, values.shape[dim]))
    index = values.topk(k, dim=dim).indices
    return torch.zeros_like(pre).scatter(dim, index, pre.gather(dim, index))


def _topk_mistakes(case: Case) -> dict[str, Tensor]:
    pre, k = case.pre, case.k
    mistakes = {
        "the ReLU is missing: an input with fewer than k positive pre-activations keeps negative values":
            _keep_topk(pre, pre, k),
        "the top k are picked by absolute value; pick the k largest values":
            _relu(_keep_topk(pre.abs(), pre, k)),
        "k + 1 activations are kept per input": _relu(_keep_topk(pre, pre, k + 1)),
        "k − 1 activations are kept per input": _relu(_keep_topk(pre, pre, k - 1)),
        "a plain ReLU: nothing outside the top k is zeroed": _relu(pre),
    }
    if k <= pre.shape[0]:
        mistakes["the top k are taken over the batch (dim=0) instead of over each input's latents (dim=1)"] = \
            _relu(_keep_topk(pre, pre, k, dim=0))
    return mistakes


@exercise(
    "topk_activation",
    cases=_topk_case,
    seeds=range(8),
    reference=ref.topk_activation,
    hints=[
        "For each input (row), keep its k largest pre-activations and set all the others to 0; "
        "then apply a ReLU, since a kept value may still be negative.",
        "pre.topk(k, dim=1) gives the values and the indices of each row's k largest entries.  "
        "Tensor.scatter(dim, indices, values) writes values at those indices of another tensor: "
        "start from torch.zeros_like(pre), and ReLU the values.",
    ],
)
def check_topk_activation(learner, case: Case) -> None:
    """Check your ``topk_activation(pre, k)``: ReLU of each row's k largest pre-activations,
    zeros elsewhere (TopK, Gao et al. 2024).  pre is (batch, n_latents); return a dense
    (batch, n_latents) tensor."""
    out = call_pure(learner, {"pre": case.pre, "k": case.k})
    expected = _topk_reference(case.pre, case.k)
    if isinstance(out, Tensor) and tuple(out.shape) == (case.pre.shape[0], case.k) and case.k != case.pre.shape[1]:
        raise CheckFailed(f"output has shape {tuple(out.shape)}, the top k values or indices; return the "
                          "dense (batch, n_latents) activations, with zeros outside the top k (scatter)")
    out = expect_output(out, expected, "(batch, n_latents)")
    expect_close(out, expected, suspects=_topk_mistakes(case))


# --------------------------------------------------------------------------------------
# batch_topk_activation
# --------------------------------------------------------------------------------------


def _batch_topk_case(seed: int) -> Case:
    """Pre-activations whose rows have different scales (so per-input top-k and batch top-k
    differ); seed % 4 picks: general k, k = n_latents (fewer than k·batch positive), a batch of
    one, k = 1."""
    gen = _generator(seed)
    kind = seed % 4
    batch = 1 if kind == 2 else _randint(gen, 3, 7)
    n = _randint(gen, 4, 10)
    k = n if kind == 1 else 1 if kind == 3 else _randint(gen, 2, n - 2)
    scale = 0.3 + 3 * torch.rand(batch, 1, generator=gen)
    pre = scale * torch.randn(batch, n, generator=gen)
    pre[0] = -pre[0].abs() - 0.05  # an input with no positive pre-activation: top-k can't keep it
    pre[0, 0] = 0.2 if batch == 1 else pre[0, 0]
    if batch > 1:
        pre[-1] = pre[-1].abs() + 0.05  # an input with every pre-activation positive
    return Case(f"batch={batch}, n_latents={n}, k={k}", pre=pre, k=k)


def _batch_topk_reference(pre: Tensor, k: int) -> Tensor:
    """``BatchTopKSAE.batch_topk``: ReLU(pre) with all but its k·batch largest entries zeroed."""
    model = ref.BatchTopKSAE(1, pre.shape[1], k, device="cpu", generator=torch.Generator().manual_seed(0))
    return model.batch_topk(pre)


def _flat_topk(values: Tensor, pre: Tensor, keep: int) -> Tensor:
    keep = max(0, min(keep, values.numel()))
    index = values.flatten().topk(keep).indices
    return torch.zeros_like(pre).flatten().scatter(0, index, pre.flatten()[index]).view_as(pre)


def _batch_topk_mistakes(case: Case) -> dict[str, Tensor]:
    pre, k = case.pre, case.k
    batch = pre.shape[0]
    return {
        "the top k are taken per input (TopK); BatchTopK keeps the k·batch largest over the whole batch":
            _relu(_keep_topk(pre, pre, k)),
        "only k activations are kept over the whole batch; keep k·batch": _relu(_flat_topk(pre, pre, k)),
        "the ReLU is missing: when fewer than k·batch pre-activations are positive, negative values "
        "are kept": _flat_topk(pre, pre, k * batch),
        "k·batch + 1 activations are kept": _relu(_flat_topk(pre, pre, k * batch + 1)),
        "k·batch − 1 activations are kept": _relu(_flat_topk(pre, pre, k * batch - 1)),
        "the largest are picked by absolute value": _relu(_flat_topk(pre.abs(), pre, k * batch)),
    }


@exercise(
    "batch_topk_activation",
    cases=_batch_topk_case,
    seeds=range(8),
    reference=ref.batch_topk_activation,
    hints=[
        "BatchTopK shares the budget across the batch: of all batch × n_latents ReLU'd "
        "pre-activations, keep the k·batch largest (so some inputs get more than k, some fewer) "
        "and set the rest to 0.",
        "Work on the flattened tensor (batch · n_latents entries): after the ReLU, its "
        ".topk(k * batch) picks the entries to keep.  Put them into a flat tensor of zeros and "
        "reshape it to (batch, n_latents).",
    ],
)
def check_batch_topk_activation(learner, case: Case) -> None:
    """Check your ``batch_topk_activation(pre, k)``: ReLU(pre) with all but the k·batch largest
    entries of the whole batch set to 0 (BatchTopK's training-time activation, Bussmann et al.
    2024).  pre is (batch, n_latents); return (batch, n_latents)."""
    out = call_pure(learner, {"pre": case.pre, "k": case.k})
    expected = _batch_topk_reference(case.pre, case.k)
    out = expect_output(out, expected, "(batch, n_latents)")
    expect_close(out, expected, suspects=_batch_topk_mistakes(case))


# --------------------------------------------------------------------------------------
# jumprelu_grads
# --------------------------------------------------------------------------------------

_BANDWIDTHS = (0.1, 0.05, 0.2, 0.5, 0.1, 0.3, 0.05, 0.2)


def _jumprelu_case(seed: int) -> Case:
    """z (batch, n_latents) near the thresholds θ > 0: inside the kernel's window |z − θ| < ε/2,
    just outside it (ε/2 < |z − θ| < ε), between 0 and θ, negative and far above.  Latent 0
    has an entry inside the window, the last latent none; seed % 4 == 2 is a batch of one.  No
    entry lies within 0.05 ε of a window's edge."""
    gen = _generator(seed)
    batch = 1 if seed % 4 == 2 else _randint(gen, 3, 8)
    n = _randint(gen, 3, 7)
    eps = _BANDWIDTHS[seed] if 0 <= seed < len(_BANDWIDTHS) else 0.05 + 0.45 * float(torch.rand(1, generator=gen))
    theta = 2 * eps + torch.rand(n, generator=gen)  # θ > ε, so θ − ε > 0
    kind = torch.randint(0, 5, (batch, n), generator=gen)
    kind[0, 0], kind[0, -1] = 0, 1
    kind[:, -1][kind[:, -1] == 0] = 1  # the last latent: no entry inside the window
    sign = torch.where(torch.rand(batch, n, generator=gen) < 0.5, -1.0, 1.0)
    u = torch.rand(batch, n, generator=gen)
    inside = theta + sign * eps * (0.05 + 0.4 * u)  # |z − θ| in (0.05 ε, 0.45 ε)
    near = theta + sign * eps * (0.55 + 0.4 * u)  # |z − θ| in (0.55 ε, 0.95 ε)
    below = (theta - 1.05 * eps) * u  # in (0, θ − ε)
    negative = -u - 0.1
    above = theta + eps * (1.05 + 2 * u)
    z = torch.stack([inside, near, below, negative, above])[kind, torch.arange(batch)[:, None], torch.arange(n)]
    grad_output = torch.randn(batch, n, generator=gen)
    label = f"batch={batch}, n_latents={n}, bandwidth={eps:.3g}"
    return Case(label, z=z, threshold=theta, bandwidth=eps, grad_output=grad_output)


def _jumprelu_reference(z: Tensor, threshold: Tensor, bandwidth: float, grad_output: Tensor) -> tuple[Tensor, Tensor]:
    """(∂L/∂z, ∂L/∂θ) by autograd through the library's ``JumpReLUFunction``."""
    z = z.detach().clone().requires_grad_()
    threshold = threshold.detach().clone().requires_grad_()
    with torch.enable_grad():
        out = ref.JumpReLUFunction.apply(z, threshold, bandwidth)
        out.backward(grad_output)
    return z.grad, threshold.grad


def _jumprelu_mistakes(case: Case) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
    """(mistakes in grad_z, mistakes in grad_threshold)."""
    z, theta, eps, g = case.z, case.threshold, case.bandwidth, case.grad_output
    window = ((z - theta).abs() < eps / 2).to(z.dtype)
    wide = ((z - theta).abs() < eps).to(z.dtype)
    grad_z = {
        "the gradient is not masked: JumpReLU passes the gradient only where z > θ (H(z − θ))": g,
        "masked by z > 0 (a ReLU's derivative) instead of z > θ": g * (z > 0).to(z.dtype),
        "masked by z < θ instead of z > θ": g * (z < theta).to(z.dtype),
    }
    grad_threshold = {
        "the factor θ is missing: −(1/ε) K is the step function's pseudo-derivative; JumpReLU's "
        "is −(θ/ε) K": -(1 / eps) * (window * g).sum(dim=0),
        "the sign is flipped: raising θ lowers the output near the jump, so the pseudo-derivative "
        "is −(θ/ε) K": (theta / eps) * (window * g).sum(dim=0),
        "the kernel's window is too wide: K(u) = 1 for |u| < 1/2, i.e. |z − θ| < ε/2, not ε":
            -(theta / eps) * (wide * g).sum(dim=0),
        "grad_output is not multiplied in: the chain rule needs K · grad_output":
            -(theta / eps) * window.sum(dim=0),
        "averaged over the batch instead of summed": -(theta / eps) * (window * g).mean(dim=0),
        "divided by ε² (or not by ε): the pseudo-derivative is −(θ/ε) K((z − θ)/ε)":
            -(theta / eps**2) * (window * g).sum(dim=0),
        "multiplied by ε instead of divided by it": -(theta * eps) * (window * g).sum(dim=0),
        "θ/ε is missing: the pseudo-derivative is −(θ/ε) K": -(window * g).sum(dim=0),
    }
    return grad_z, grad_threshold


@exercise(
    "jumprelu_grads",
    cases=_jumprelu_case,
    seeds=range(8),
    reference=ref.jumprelu_grads,
    hints=[
        "Away from the jump, JumpReLU_θ(z) = z · H(z − θ) is z or 0, so ∂/∂z is H(z − θ): pass "
        "grad_output through where z > θ.  The threshold's true derivative is 0 almost everywhere; "
        "the straight-through estimator replaces it with −(θ/ε) K((z − θ)/ε), K the rectangle "
        "kernel.",
        "K(u) = 1 when |u| < 1/2, so K((z − θ)/ε) is 1 where |z − θ| < ε/2.  Multiply it by "
        "grad_output (chain rule) and by −θ/ε, and sum over the batch: θ is shared by every "
        "input, so grad_threshold has shape (n_latents,).",
    ],
)
def check_jumprelu_grads(learner, case: Case) -> None:
    """Check your ``jumprelu_grads(z, threshold, bandwidth, grad_output)``: the straight-through
    gradients of JumpReLU_θ(z) = z · H(z − θ) (Rajamanoharan et al. 2024), the tuple
    (grad_z, grad_threshold) with grad_z = grad_output · H(z − θ) of shape (batch, n_latents) and
    grad_threshold = −(θ/ε) Σ_batch K((z − θ)/ε) · grad_output of shape (n_latents,), K the
    rectangle kernel 1[|u| < 1/2]."""
    out = call_pure(learner, {"z": case.z, "threshold": case.threshold, "bandwidth": case.bandwidth,
                              "grad_output": case.grad_output})
    grad_z, grad_threshold = _expect_tuple(out, ("grad_z", "grad_threshold"))
    expected_z, expected_threshold = _jumprelu_reference(case.z, case.threshold, case.bandwidth, case.grad_output)
    z_mistakes, threshold_mistakes = _jumprelu_mistakes(case)
    _expect_part("grad_z", grad_z, expected_z, "(batch, n_latents)", z_mistakes)
    note = ("; θ is shared by the whole batch: sum over the batch (dim=0)"
            if isinstance(grad_threshold, Tensor) and tuple(grad_threshold.shape) == tuple(case.z.shape) else "")
    _expect_part("grad_threshold", grad_threshold, expected_threshold, "(n_latents,)", threshold_mistakes,
                 shape_note=note)


# --------------------------------------------------------------------------------------
# resample_dead
# --------------------------------------------------------------------------------------

_ENCODER_SCALES = (0.2, 0.5, 0.2, 0.1, 0.2, 1.0, 0.3, 0.2)


def _resample_case(seed: int) -> Case:
    """An SAE's parameters with nonzero biases, alive encoder columns of other norms than the
    dead ones, 1 to n_latents − 1 dead latents and one chosen input per dead latent.
    seed % 4 == 1 is square (d_in = n_latents); seed % 4 == 3 has a single dead latent."""
    gen = _generator(seed)
    d_in = _randint(gen, 2, 6)
    n = d_in if seed % 4 == 1 else _randint(gen, d_in + 1, 10)
    n = max(n, 2)
    W_enc = torch.randn(d_in, n, generator=gen) * (0.5 + 2 * torch.rand(1, n, generator=gen))
    b_enc = 0.5 * torch.randn(n, generator=gen) - 0.2
    W_dec = _unit_rows(gen, n, d_in)
    b_dec = 0.5 + 0.5 * torch.randn(d_in, generator=gen)
    n_dead = 1 if seed % 4 == 3 else _randint(gen, 1, n - 1)
    dead = torch.zeros(n, dtype=torch.bool)
    dead[torch.randperm(n, generator=gen)[:n_dead]] = True
    W_enc[:, dead] *= 0.1  # dead latents' encoders: much shorter than the alive ones
    inputs = torch.randn(n_dead, d_in, generator=gen) + 0.5
    scale = _ENCODER_SCALES[seed] if 0 <= seed < len(_ENCODER_SCALES) else 0.2
    label = f"d_in={d_in}, n_latents={n}, {n_dead} dead, encoder_scale={scale:g}"
    return Case(label, W_enc=W_enc, b_enc=b_enc, W_dec=W_dec, b_dec=b_dec, dead=dead, inputs=inputs,
                encoder_scale=scale)


def _resample(W_enc: Tensor, b_enc: Tensor, W_dec: Tensor, b_dec: Tensor, dead: Tensor, inputs: Tensor,
              encoder_scale: float, *, subtract_b_dec: bool = True, normalise: bool = True,
              norms_over: str = "alive columns", scale_factor: bool = True, reset_b_enc: bool = True,
              encoder_rows: bool = False) -> tuple[Tensor, Tensor, Tensor]:
    """The deterministic part of ``resample_dead_latents`` (keywords: the mistakes' variants)."""
    v = inputs - b_dec if subtract_b_dec else inputs
    d = v / v.norm(dim=1, keepdim=True).clamp_min(1e-12) if normalise else v
    alive = ~dead
    norm = {"alive columns": lambda: W_enc[:, alive].norm(dim=0).mean(),
            "all columns": lambda: W_enc.norm(dim=0).mean(),
            "alive rows": lambda: W_enc[:, alive].norm(dim=1).mean(),
            "decoder rows": lambda: W_dec[alive].norm(dim=1).mean()}[norms_over]()
    new_enc, new_b, new_dec = W_enc.clone(), b_enc.clone(), W_dec.clone()
    column = d * (encoder_scale if scale_factor else 1.0) * norm
    if encoder_rows:
        new_enc[dead] = column
    else:
        new_enc[:, dead] = column.T
    if reset_b_enc:
        new_b[dead] = 0.0
    new_dec[dead] = d
    return new_enc, new_b, new_dec


def _resample_mistakes(case: Case) -> dict[str, tuple[Tensor, Tensor, Tensor]]:
    args = (case.W_enc, case.b_enc, case.W_dec, case.b_dec, case.dead, case.inputs, case.encoder_scale)
    mistakes = {
        "it looks like you forgot to subtract b_dec from the inputs: the new direction is "
        "(v − b_dec)/‖v − b_dec‖": _resample(*args, subtract_b_dec=False),
        "the new direction is not normalised: divide v − b_dec by its norm": _resample(*args, normalise=False),
        "the encoder norm is averaged over all latents; average only over the alive ones":
            _resample(*args, norms_over="all columns"),
        "the encoder norms are taken over W_enc's rows; a latent's encoder is a column "
        "(norm over dim=0)": _resample(*args, norms_over="alive rows"),
        "the encoder column is scaled by the decoder rows' norm (1); use the mean norm of the alive "
        "latents' encoder columns": _resample(*args, norms_over="decoder rows"),
        "encoder_scale is not applied to the encoder column": _resample(*args, scale_factor=False),
        "b_enc of the dead latents is not reset to 0": _resample(*args, reset_b_enc=False),
    }
    if case.encoder_scale != 0.2:
        mistakes["encoder_scale is ignored (0.2 is hard-coded): use the argument"] = _resample(*args[:-1], 0.2)
    if case.W_enc.shape[0] == case.W_enc.shape[1]:
        mistakes["the rows of W_enc are overwritten instead of its columns: W_enc is (d_in, n_latents), "
                 "so latent j's encoder is W_enc[:, j]"] = _resample(*args, encoder_rows=True)
    return mistakes


_RESAMPLE_NAMES = ("W_enc", "b_enc", "W_dec")
_RESAMPLE_AXES = ("(d_in, n_latents)", "(n_latents,)", "(n_latents, d_in)")
_LATENT_DIMS = (1, 0, 0)


@exercise(
    "resample_dead",
    cases=_resample_case,
    seeds=range(8),
    reference=ref.resample_dead,
    hints=[
        "Only the dead latents change.  Dead latent j (in index order) gets the input v = "
        "inputs[m] for the m-th dead latent: its decoder row becomes the unit vector along "
        "v − b_dec, its encoder column that vector times encoder_scale times the mean norm of the "
        "alive latents' encoder columns, and its b_enc 0.",
        "dead.nonzero().squeeze(1) lists the dead latents in index order, matching the rows of "
        "inputs.  W_enc is (d_in, n_latents): a latent's encoder is a column, so its norm is over "
        "dim=0 and W_enc[:, ~dead] selects the alive ones.  Write into clones (W_enc.clone(), ...), "
        "never into the arguments.",
    ],
)
def check_resample_dead(learner, case: Case) -> None:
    """Check your ``resample_dead(W_enc, b_enc, W_dec, b_dec, dead, inputs, encoder_scale=0.2)``:
    the deterministic part of Bricken et al.'s resampling (``resample_dead_latents``).  dead is
    a (n_latents,) bool mask, inputs (n_dead, d_in) the chosen inputs, one per dead latent in
    index order.  Return new (W_enc, b_enc, W_dec) in which dead latent j has decoder row
    d = (v − b_dec)/‖v − b_dec‖, encoder column d · encoder_scale · (mean norm of the alive
    latents' encoder columns) and b_enc[j] = 0; the alive latents are unchanged and no input is
    modified in place."""
    out = call_pure(learner, {"W_enc": case.W_enc, "b_enc": case.b_enc, "W_dec": case.W_dec, "b_dec": case.b_dec,
                              "dead": case.dead, "inputs": case.inputs, "encoder_scale": case.encoder_scale})
    parts = _expect_tuple(out, _RESAMPLE_NAMES)
    expected = _resample(case.W_enc, case.b_enc, case.W_dec, case.b_dec, case.dead, case.inputs, case.encoder_scale)
    for name, part, wanted, axes in zip(_RESAMPLE_NAMES, parts, expected, _RESAMPLE_AXES):
        if not isinstance(part, Tensor):
            kind = "None" if part is None else type(part).__name__
            raise CheckFailed(f"{name} is {kind}; expected a tensor {axes}")
        try:
            expect_output(part, wanted, axes)
        except CheckFailed as failure:
            raise CheckFailed(f"{name}: {failure}") from None
    if all(_allclose(p, e) for p, e in zip(parts, expected)):
        return
    for description, wrong in _resample_mistakes(case).items():
        if all(_allclose(p, w) for p, w in zip(parts, wrong)):
            raise CheckFailed(f"output differs from the reference and matches a known mistake: {description}")
    alive = (~case.dead).nonzero().squeeze(1)
    for name, part, original, dim in zip(_RESAMPLE_NAMES, parts, (case.W_enc, case.b_enc, case.W_dec), _LATENT_DIMS):
        if not _allclose(part.index_select(dim, alive), original.index_select(dim, alive)):
            raise CheckFailed(f"{name} changed for alive latents; only the dead latents' slices should change")
    for name, part, wanted in zip(_RESAMPLE_NAMES, parts, expected):
        try:
            expect_close(part, wanted)
        except CheckFailed as failure:
            raise CheckFailed(f"{name} is wrong for the dead latents: {failure}") from None


def _allclose(a: Tensor, b: Tensor) -> bool:
    return bool(torch.allclose(a.detach().double(), b.double(), rtol=1e-4, atol=1e-5))


# --------------------------------------------------------------------------------------
# mmcs
# --------------------------------------------------------------------------------------


def _mmcs_case(seed: int) -> Case:
    """True directions (n_true, d) and learned ones (n_learned, d), neither normalised (norms
    0.3 to 3): some learned rows are noisy copies of true ones, one is a negated copy of a true
    direction, the rest random.  seed % 4 picks: general, one learned direction, one true
    direction, n_learned = n_true."""
    gen = _generator(seed)
    kind = seed % 4
    d = _randint(gen, 3, 8)
    n_true = 1 if kind == 2 else _randint(gen, 2, 6)
    n_learned = 1 if kind == 1 else n_true if kind == 3 else _randint(gen, 2, 10)
    true = torch.randn(n_true, d, generator=gen)
    learned = torch.randn(n_learned, d, generator=gen)
    copies = min(n_learned, n_true)
    learned[:copies] = true[:copies] + 0.5 * torch.randn(copies, d, generator=gen)
    learned[0] = -true[0] + 0.05 * torch.randn(d, generator=gen)  # anti-aligned: |cos| ≈ 1 but cos ≈ −1
    true = true * (0.3 + 2.7 * torch.rand(n_true, 1, generator=gen))
    learned = learned * (0.3 + 2.7 * torch.rand(n_learned, 1, generator=gen))
    return Case(f"n_true={n_true}, n_learned={n_learned}, d={d}", true=true, learned=learned)


def _mmcs_mistakes(case: Case) -> dict[str, float]:
    t, s = case.true.double(), case.learned.double()
    tn, sn = t / t.norm(dim=1, keepdim=True), s / s.norm(dim=1, keepdim=True)
    cos = tn @ sn.T  # (n_true, n_learned)
    return {
        "the max is over the true features and the mean over the learned ones: for each TRUE "
        "feature take the max over learned directions, then average": float(cos.max(dim=0).values.mean()),
        "the absolute cosine similarity: an opposite direction should count −1, not 1":
            float(cos.abs().max(dim=1).values.mean()),
        "dot products instead of cosine similarities: normalise both sets of rows":
            float((t @ s.T).max(dim=1).values.mean()),
        "only the learned directions are normalised: normalise the true ones too":
            float((t @ sn.T).max(dim=1).values.mean()),
        "only the true directions are normalised: normalise the learned ones too":
            float((tn @ s.T).max(dim=1).values.mean()),
        "the mean of all cosine similarities instead of the mean of each true feature's max":
            float(cos.mean()),
        "the largest cosine similarity overall instead of the mean over true features of their max":
            float(cos.max()),
        "the sum over true features instead of the mean": float(cos.max(dim=1).values.sum()),
        "the columns are normalised instead of the rows":
            float(((t / t.norm(dim=0, keepdim=True)) @ (s / s.norm(dim=0, keepdim=True)).T).max(dim=1).values.mean()),
    }


@exercise(
    "mmcs",
    cases=_mmcs_case,
    seeds=range(8),
    reference=ref.mmcs,
    hints=[
        "For each true feature (a row of true_directions), find the learned direction (row of "
        "learned_directions) with the largest cosine similarity; MMCS is the mean of those maxima "
        "over the true features.",
        "Normalise the rows of both matrices; then one matrix product gives every cosine "
        "similarity, shape (n_true, n_learned).  Take the max along the learned axis, keep the "
        "sign (no abs), average, and return a float.",
    ],
)
def check_mmcs(learner, case: Case) -> None:
    """Check your ``mmcs(true_directions, learned_directions)`` (a float): the mean over the true
    features (rows of (n_true, d)) of the largest cosine similarity with a learned direction
    (rows of (n_learned, d)), Sharkey et al. 2022.  Neither input is normalised."""
    out = _as_number(call_pure(learner, {"true_directions": case.true, "learned_directions": case.learned}))
    expected = ref.mmcs(case.true, case.learned)
    if _close_number(out, expected):
        return
    for description, wrong in _mmcs_mistakes(case).items():
        if _close_number(out, wrong):
            raise CheckFailed(f"your MMCS is wrong and matches a known mistake: {description}")
    if not -1 - 1e-6 <= out <= 1 + 1e-6:
        raise CheckFailed(f"your MMCS is {out:.3g}, outside [−1, 1]; a mean of cosine similarities lies in "
                          "[−1, 1] (normalise the rows)")
    raise CheckFailed(f"your MMCS is too {'high' if out > expected else 'low'}")


# --------------------------------------------------------------------------------------
# sae_metrics
# --------------------------------------------------------------------------------------

METRIC_KEYS = ("l0", "fve", "dead", "shrinkage")


def _metrics_case(seed: int) -> Case:
    """x with a nonzero mean (so centring matters), x̂ = γ x + noise (γ < 1, shrinkage), and
    nonnegative sparse f with some latents that never fire (none in seed % 4 == 3)."""
    gen = _generator(seed)
    batch = _randint(gen, 4, 12)
    d_in = _randint(gen, 2, 6)
    n = _randint(gen, 3, 12)
    x = torch.randn(batch, d_in, generator=gen) + 1 + 2 * torch.rand(d_in, generator=gen)
    gamma = 0.6 + 0.35 * float(torch.rand(1, generator=gen))
    x_hat = gamma * x + 0.3 * torch.randn(batch, d_in, generator=gen)
    f = _relu(torch.randn(batch, n, generator=gen))
    f[0] = f[0] + 0.1  # every latent fires at least once ...
    n_dead = 0 if seed % 4 == 3 else _randint(gen, 2, max(2, n // 2))
    f[:, :n_dead] = 0.0  # ... except the dead ones
    return Case(f"batch={batch}, d_in={d_in}, n_latents={n}, {n_dead} dead", x=x, x_hat=x_hat, f=f)


def _metrics_reference(x: Tensor, x_hat: Tensor, f: Tensor) -> dict[str, float]:
    return {"l0": ref.l0(f), "fve": ref.fraction_variance_explained(x, x_hat), "dead": ref.dead_fraction(f),
            "shrinkage": ref.shrinkage(x, x_hat)}


def _metrics_mistakes(case: Case) -> dict[str, dict[str, float]]:
    x, x_hat, f = case.x.double(), case.x_hat.double(), case.f.double()
    active = (f != 0).double()
    error = (x - x_hat).square().sum()
    never = (active.sum(dim=0) == 0).double()
    dot, hh = float((x_hat * x).sum()), float(x_hat.square().sum())
    return {
        "l0": {
            "the fraction of latents active per input; L0 is the number of nonzero latents per input":
                float(active.mean()),
            "the total number of nonzero entries; L0 is their mean number per input": float(active.sum()),
            "the number of zeros per input; L0 counts the nonzero latents": float((1 - active).sum(dim=1).mean()),
            "the mean activation per input instead of the number of nonzero latents": float(f.sum(dim=1).mean()),
        },
        "fve": {
            "the variance is not centred: divide by Σ‖x − x̄‖² with x̄ the mean input, not Σ‖x‖²":
                1 - float(error / x.square().sum()),
            "centred by the mean of all entries; x̄ is the mean input, x.mean(dim=0)":
                1 - float(error / (x - x.mean()).square().sum()),
            "the fraction of variance unexplained; FVE is 1 minus it":
                float(error / (x - x.mean(dim=0)).square().sum()),
            "x and x̂ are swapped in the variance: centre the inputs x":
                1 - float(error / (x_hat - x_hat.mean(dim=0)).square().sum()),
        },
        "dead": {
            "the number of dead latents; return the fraction (divide by n_latents)": float(never.sum()),
            "the fraction of alive latents; dead is the fraction that never fire": 1 - float(never.mean()),
            "latents that are zero on some input counted as dead; dead latents are zero on every input":
                float(((active == 0).any(dim=0)).double().mean()),
            "the fraction of zero entries; dead counts latents that are zero on every input":
                float((1 - active).mean()),
        },
        "shrinkage": {
            "the ratio is inverted: Σ‖x̂‖² / Σ⟨x̂, x⟩, not Σ⟨x̂, x⟩ / Σ‖x̂‖²": dot / hh,
            "divided by Σ‖x‖² instead of Σ⟨x̂, x⟩": hh / float(x.square().sum()),
            "a ratio of norms instead of Σ‖x̂‖² / Σ⟨x̂, x⟩": math.sqrt(hh / float(x.square().sum())),
            "per-input ratios averaged; sum over the batch first": float(
                (x_hat.square().sum(dim=1) / (x_hat * x).sum(dim=1)).mean()),
        },
    }


@exercise(
    "sae_metrics",
    cases=_metrics_case,
    seeds=range(8),
    reference=ref.sae_metrics,
    hints=[
        "Four numbers in a dict: l0, the mean number of nonzero latents per input; fve, "
        "1 − Σ‖x − x̂‖² / Σ‖x − x̄‖² with x̄ the mean input; dead, the fraction of latents that are "
        "zero on every input; shrinkage, Σ‖x̂‖² / Σ⟨x̂, x⟩ (1 when unbiased, < 1 when shrunk).",
        "(f != 0).sum(dim=1).float().mean() is L0; x.mean(dim=0) is x̄; (f != 0).any(dim=0) marks "
        "the latents that fire.  Convert each value with float(...).",
    ],
)
def check_sae_metrics(learner, case: Case) -> None:
    """Check your ``sae_metrics(x, x_hat, f)``: a dict with float entries "l0" (mean number of
    nonzero latents per input), "fve" (1 − Σ‖x − x̂‖² / Σ‖x − x̄‖², x̄ the mean input), "dead"
    (fraction of latents zero on every input) and "shrinkage" (Σ‖x̂‖² / Σ⟨x̂, x⟩).  x, x_hat are
    (batch, d_in), f (batch, n_latents)."""
    out = call_pure(learner, {"x": case.x, "x_hat": case.x_hat, "f": case.f})
    if not isinstance(out, Mapping):
        kind = "None (did you forget to `return`?)" if out is None else type(out).__name__
        raise CheckFailed(f"your function returned {kind}; expected a dict with the keys "
                          f"{', '.join(map(repr, METRIC_KEYS))}")
    missing = [key for key in METRIC_KEYS if key not in out]
    if missing:
        keys = ", ".join(repr(k) for k in out) or "none"
        raise CheckFailed(f"your dict lacks the key(s) {', '.join(map(repr, missing))} (its keys: {keys})")
    expected = _metrics_reference(case.x, case.x_hat, case.f)
    mistakes = _metrics_mistakes(case)
    for key in METRIC_KEYS:
        _expect_entry(key, _dict_number(out, key), (expected[key],), mistakes[key])


# --------------------------------------------------------------------------------------
# precision_recall (chapter 05b: scoring latents against known concepts)
# --------------------------------------------------------------------------------------


def _precision_recall_case(seed: int) -> Case:
    """fires (n_tokens, n_latents) bool and concept (n_tokens,) bool: latents that fire mostly
    on the concept, mostly elsewhere, at random, on every token, and one that never fires
    (seed % 4 != 3)."""
    gen = _generator(seed)
    n_tokens, n_latents = _randint(gen, 12, 40), _randint(gen, 3, 7)
    concept = torch.rand(n_tokens, generator=gen) < 0.3
    concept[0], concept[1] = True, False  # both classes present
    rates = torch.rand(n_latents, 2, generator=gen)  # P(fire | concept), P(fire | not concept)
    fires = torch.rand(n_tokens, n_latents, generator=gen) < torch.where(concept[:, None], rates[:, 0], rates[:, 1])
    fires[:, 0] = concept | (torch.rand(n_tokens, generator=gen) < 0.2)  # a good detector, some false alarms
    if n_latents > 3:
        fires[:, 3] = True  # fires everywhere: precision = the concept's share, recall 1
    if seed % 4 != 3:
        fires[:, 1] = False  # never fires: precision 0 by convention
    return Case(f"n_tokens={n_tokens}, n_latents={n_latents}", fires=fires, concept=concept)


def _precision_recall_reference(fires: Tensor, concept: Tensor) -> tuple[Tensor, Tensor]:
    f, c = fires.double(), concept.double()
    hits = c @ f
    return hits / f.sum(dim=0).clamp_min(1), hits / c.sum()


def _precision_recall_mistakes(case: Case) -> dict[str, tuple[Tensor, Tensor]]:
    f, c = case.fires.double(), case.concept.double()
    hits = c @ f
    precision, recall = _precision_recall_reference(case.fires, case.concept)
    n = float(len(c))
    return {
        "precision and recall are swapped: precision divides by the tokens where the latent fires, "
        "recall by the tokens that have the concept": (recall, precision),
        "both are divided by the number of tokens: divide by where the latent fires (precision) and "
        "by where the concept is (recall)": (hits / n, hits / n),
        "accuracy instead of precision: precision counts only the tokens where the latent fires":
            (((f * c[:, None]) + ((1 - f) * (1 - c)[:, None])).sum(dim=0) / n, recall),
        "recall divided by the tokens where the latent does NOT fire": (precision, hits / (n - f.sum(dim=0)).clamp_min(1)),
    }


@exercise(
    "precision_recall",
    cases=_precision_recall_case,
    seeds=range(8),
    reference=lm.precision_recall,
    hints=[
        "For each latent (a column of fires): hits = number of tokens where it fires AND the concept "
        "holds.  precision = hits / (tokens where it fires); recall = hits / (tokens with the concept).",
        "With floats: hits = concept.float() @ fires.float() gives every latent's hits at once.  "
        "A latent that never fires would divide by zero: give it precision 0 (e.g. clamp the "
        "denominator to at least 1).",
    ],
)
def check_precision_recall(learner, case: Case) -> None:
    """Check your ``precision_recall(fires, concept)``: fires (n_tokens, n_latents) bool, concept
    (n_tokens,) bool -> (precision, recall), each (n_latents,): precision = |fires ∧ concept| /
    |fires| (0 for a latent that never fires), recall = |fires ∧ concept| / |concept|."""
    out = call_pure(learner, {"fires": case.fires, "concept": case.concept})
    if not isinstance(out, (tuple, list)) or len(out) != 2:
        kind = "None (did you forget to `return`?)" if out is None else type(out).__name__
        raise CheckFailed(f"your function returned {kind}; expected a tuple (precision, recall)")
    n_latents = case.fires.shape[1]
    got = []
    for name, value in zip(("precision", "recall"), out):
        value = expect_tensor(value)
        expect_shape(value, (n_latents,), "(n_latents,)")
        got.append(value.detach().double().cpu())
    expected = _precision_recall_reference(case.fires, case.concept)
    if all(torch.allclose(g, e, atol=1e-6) for g, e in zip(got, expected)):
        return
    never = ~case.fires.any(dim=0)
    if never.any() and not torch.isfinite(got[0][never]).all():
        raise CheckFailed("precision is NaN or infinite for a latent that never fires (0/0): give such a "
                          "latent precision 0")
    for name, g in zip(("precision", "recall"), got):
        if not torch.isfinite(g).all():
            raise CheckFailed(f"your {name} contains NaN or infinite values")
    for description, wrong in _precision_recall_mistakes(case).items():
        if all(torch.allclose(g, w.double(), atol=1e-6) for g, w in zip(got, wrong)):
            raise CheckFailed(f"your precision and recall match a known mistake: {description}")
    for name, g, e in zip(("precision", "recall"), got, expected):
        if not torch.allclose(g, e, atol=1e-6):
            raise CheckFailed(f"your {name} is wrong for some latents")


# --------------------------------------------------------------------------------------
# The capstone, part 1: the SparseAutoencoder class
# --------------------------------------------------------------------------------------


def _sae_class_case(seed: int) -> Case:
    """Constructor arguments: seed % 4 picks overcomplete, square, undercomplete, and
    overcomplete on the GPU when there is one; λ changes with the seed."""
    gen = _generator(seed)
    kind = seed % 4
    d_in = _randint(gen, 3, 7)
    n = d_in if kind == 1 else _randint(gen, 1, d_in - 1) if kind == 2 else _randint(gen, d_in + 2, 16)
    l1 = (0.3, 0.05, 1.0, 0.5)[kind]
    device = "cuda" if torch.cuda.is_available() and kind == 3 else "cpu"
    label = f"d_in={d_in}, n_latents={n}, l1_coefficient={l1:g}" + (", device='cuda'" if device == "cuda" else "")
    return Case(label, d_in=d_in, n=n, l1=l1, device=device, seed=seed)


def _sae_parameter(value, name: str, shape, axes: str, device) -> Tensor:
    """The judge's half of ``self.<name>``: a float32 tensor of this shape on ``device``."""
    value = judge_parameter(value, name, shape, axes)
    expect_device(value, device)
    return value


def _sae_case_weights(case: Case) -> tuple[dict[str, Tensor], Tensor]:
    """Nonzero biases and a decoder apart from the encoder, which the probe copies into the
    learner's SAE before comparing it with the reference holding the same, and the input x
    (6, d_in) on the case's device."""
    gen = _generator(case.seed + 1)
    new = {"W_enc": torch.randn(case.d_in, case.n, generator=gen),
           "b_enc": 0.3 * torch.randn(case.n, generator=gen),
           "W_dec": _unit_rows(gen, case.n, case.d_in),
           "b_dec": 0.5 + 0.5 * torch.randn(case.d_in, generator=gen)}
    x = (torch.randn(6, case.d_in, generator=gen) + new["b_dec"]).to(case.device)
    return new, x


def _reference_sae(case: Case, new: dict[str, Tensor]) -> ref.SparseAutoencoder:
    """The course's SAE for this case, holding the parameters ``new``."""
    theirs = ref.SparseAutoencoder(case.d_in, case.n, case.l1, device=case.device, generator=_generator(case.seed))
    with torch.no_grad():
        for name, value in new.items():
            getattr(theirs, name).copy_(value)
    return theirs


def _build_sae(learner, case: Case, seed: int):
    model = learner(case.d_in, case.n, l1_coefficient=case.l1, device=case.device, generator=_generator(seed))
    if not isinstance(model, torch.nn.Module):
        raise CheckFailed(f"SparseAutoencoder(...) made a {type(model).__name__}, not an nn.Module: "
                          "subclass nn.Module and call super().__init__() first")
    return model


def _sae_class_mistakes(x: Tensor, W_enc, b_enc, W_dec, b_dec, l1) -> dict[str, tuple[Tensor, Tensor, Tensor]]:
    """(f, x̂, loss) of known wrong SAEs with these parameters."""
    def pieces(f, x_hat=None, sparsity=None):
        x_hat = f @ W_dec + b_dec if x_hat is None else x_hat
        sparsity = f.abs().sum(dim=1).mean() if sparsity is None else sparsity
        return f, x_hat, (x - x_hat).square().sum(dim=1).mean() + l1 * sparsity

    f = _relu((x - b_dec) @ W_enc + b_enc)
    return {
        "encode does not subtract the pre-encoder bias: f = ReLU((x − b_dec) W_enc + b_enc)":
            pieces(_relu(x @ W_enc + b_enc)),
        "encode adds b_dec instead of subtracting it": pieces(_relu((x + b_dec) @ W_enc + b_enc)),
        "decode leaves out b_dec": pieces(f, f @ W_dec),
        "the L1 penalty is summed over the batch and averaged over the latents (the wrong axis); "
        "sum over the latents, average over the batch": pieces(f, sparsity=f.abs().sum(dim=0).mean()),
        "the L1 penalty is averaged over every entry; sum over the latents, average over the batch":
            pieces(f, sparsity=f.abs().mean()),
        "the loss leaves out the L1 penalty": pieces(f, sparsity=torch.zeros(())),
    }


def _type_name_of(value) -> str:
    return type(value).__name__


def _judge_sparse_autoencoder(data, case: Case) -> None:
    """The verdict on what ``check_sparse_autoencoder`` saw, where no learner code runs."""
    theirs = ref.SparseAutoencoder(case.d_in, case.n, case.l1, device=case.device, generator=_generator(case.seed))
    W_enc = _sae_parameter(observed(data, "W_enc"), "W_enc", (case.d_in, case.n), "(d_in, n_latents)", case.device)
    b_enc = _sae_parameter(observed(data, "b_enc"), "b_enc", (case.n,), "(n_latents,)", case.device)
    W_dec = _sae_parameter(observed(data, "W_dec"), "W_dec", (case.n, case.d_in), "(n_latents, d_in)", case.device)
    b_dec = _sae_parameter(observed(data, "b_dec"), "b_dec", (case.d_in,), "(d_in,)", case.device)
    if not same_value(observed(data, "l1_coefficient"), case.l1):
        raise CheckFailed("`self.l1_coefficient` should keep the coefficient the SAE was given")
    norms = W_dec.norm(dim=1)
    if not torch.allclose(norms, torch.ones_like(norms), atol=1e-5):
        raise CheckFailed("the decoder rows do not start at unit norm: divide each row of W_dec by its norm")
    if not torch.allclose(W_dec, theirs.W_dec.detach(), atol=1e-6):
        raise CheckFailed("W_dec is not drawn as the course's SAE draws it: torch.randn(n_latents, d_in, "
                          "generator=generator), then each row divided by its norm")
    if not torch.allclose(W_enc, W_dec.T, atol=1e-6):
        raise CheckFailed("W_enc should start as the transpose of W_dec (Gao et al. 2024's initialisation)")
    if observed(data, "W_enc shares W_dec's memory") is not False:
        raise CheckFailed("W_enc shares its memory with W_dec (a view made by .T): copy it with .T.clone()")
    if (b_enc != 0).any() or (b_dec != 0).any():
        raise CheckFailed("b_enc and b_dec should start at zero")

    # Both SAEs hold the same nonzero biases and a decoder apart from the encoder (the probe copied them).
    new, x = _sae_case_weights(case)
    theirs = _reference_sae(case, new)
    mistakes = _sae_class_mistakes(x.cpu(), *(new[k] for k in ("W_enc", "b_enc", "W_dec", "b_dec")), case.l1)
    with torch.no_grad():
        f = expect_output(observed(data, "encode"), theirs.encode(x), "(batch, n_latents)")
        expect_close(f, theirs.encode(x), suspects={k: v[0] for k, v in mistakes.items()})
        f_ref = theirs.encode(x)
        x_hat = expect_output(observed(data, "decode"), theirs.decode(f_ref), "(batch, d_in)")
        expect_close(x_hat, theirs.decode(f_ref), suspects={"decode leaves out b_dec": f_ref.cpu() @ new["W_dec"]})
        out = observed(data, "forward")
        if not isinstance(out, (tuple, list)) or len(out) != 2:
            raise CheckFailed("forward(x) should return the pair (x_hat, f)")
        expect_close(expect_output(out[0], theirs(x)[0], "(batch, d_in)"), theirs(x)[0],
                     suspects={"forward returns (f, x_hat); return (x_hat, f)": f_ref.cpu()}
                     if out[0].shape == f_ref.shape and case.n == case.d_in else None)
    loss = observed(data, "loss")
    expected = theirs.loss(x)
    if not isinstance(loss, Tensor):
        raise CheckFailed(f"loss(x) returned a {_type_name_of(loss)}; return a scalar tensor")
    loss_value = expect_output(loss, expected.detach(), "a single number, shape")
    expect_close(loss_value, expected.detach(), suspects={k: v[2] for k, v in mistakes.items()})
    if observed(data, "loss carries a gradient") is not True:
        raise CheckFailed("your loss carries no gradient (torch.no_grad() or .detach()?): training could not "
                          "change the SAE")
    expected.backward()
    gradients = observed(data, "gradients")
    for name in ("W_enc", "b_enc", "W_dec", "b_dec"):
        mine, wanted = gradients.get(name) if isinstance(gradients, dict) else None, getattr(theirs, name).grad
        if (not isinstance(mine, Tensor) or mine.shape != wanted.shape
                or not torch.allclose(mine.to(wanted.device, wanted.dtype), wanted, rtol=1e-4, atol=1e-5)):
            raise CheckFailed(f"the loss has the right value but its gradient with respect to {name} is wrong: "
                              f"compute it from self.{name} itself, inside autograd's graph")


@exercise(
    "SparseAutoencoder",
    cases=_sae_class_case,
    seeds=range(4),
    time_limit=30,
    passed="{n}/{n} SAEs match the reference (initialisation, encode, decode, loss and its gradients).",
    reference=ref.SparseAutoencoder,
    judge=_judge_sparse_autoencoder,
    hints=[
        "In __init__: draw W_dec = torch.randn(n_latents, d_in, generator=generator), divide each row by "
        "its norm, and make W_enc its transpose (a copy: .T.clone()); b_enc and b_dec start at zero.  "
        "All four are nn.Parameters, moved to `device`.",
        "encode(x) = encode_fn(x, W_enc, b_enc, b_dec), decode(f) = decode_fn(f, W_dec, b_dec), "
        "forward returns (x̂, f), and loss(x) = loss_fn(x, x̂, f, self.l1_coefficient): the functions "
        "your checks returned.",
    ],
)
def check_sparse_autoencoder(learner, case: Case, seen: dict) -> None:
    """Check your ``SparseAutoencoder(d_in, n_latents, l1_coefficient, device, generator)``:
    parameters W_enc (d_in, n_latents), b_enc (n_latents,), W_dec (n_latents, d_in) with unit
    rows drawn from ``generator`` like ``ReLUSAE``'s (W_enc = W_decᵀ, zero biases);
    ``encode`` with the pre-encoder bias, ``decode``, ``forward`` -> (x̂, f) and ``loss`` (the
    L1 SAE loss, a scalar with gradients to every parameter).

    (This half runs your class and records what it does; ``_judge_sparse_autoencoder``
    compares.)"""
    model = _build_sae(learner, case, case.seed)
    for name in ("W_enc", "b_enc", "W_dec", "b_dec"):
        seen[name] = probe_parameter(model, name)
    seen["l1_coefficient"] = plain(getattr(model, "l1_coefficient", None))
    seen["W_enc shares W_dec's memory"] = model.W_enc.data_ptr() == model.W_dec.data_ptr()

    new, x = _sae_case_weights(case)
    with torch.no_grad():
        for name, value in new.items():
            getattr(model, name).copy_(value)
        # decode's input: the course's code of x (the library's sae_encode, as its SAE encodes;
        # the sandbox withholds the SAE class itself while the learner's runs)
        f_ref = ref.sae_encode(x, *(new[k].to(case.device) for k in ("W_enc", "b_enc", "b_dec")))
        seen["encode"] = plain(_method(model, "encode", x))
        seen["decode"] = plain(_method(model, "decode", f_ref))
        seen["forward"] = plain(_method(model, "forward", x))
    loss = _method(model, "loss", x)
    seen["loss"] = plain(loss)
    seen["loss carries a gradient"] = isinstance(loss, Tensor) and loss.requires_grad
    if seen["loss carries a gradient"]:
        loss.backward()
        seen["gradients"] = {name: plain(getattr(model, name).grad) for name in ("W_enc", "b_enc", "W_dec", "b_dec")}


# --------------------------------------------------------------------------------------
# The capstone, part 2: the training loop
# --------------------------------------------------------------------------------------

LOOP_STEPS = 60


def _loop_case(seed: int) -> Case:
    """A small SAE (8 inputs, 16 latents) on 12 synthetic features and the loop's arguments;
    seed 2 (and every seed ≡ 2 mod 3) resamples every 20 steps, with three latents made dead."""
    gen = _generator(seed)
    resample = seed % 3 == 2
    lr = (1e-2, 3e-3, 3e-2)[seed % 3]
    batch_size = (64, 128)[seed % 2]
    l1 = (0.3, 0.1, 0.5)[seed % 3]
    schedule = ("constant", "cosine", "cosine")[seed % 3]
    label = (f"d_in=8, n_latents=16, l1_coefficient={l1:g}, steps={LOOP_STEPS}, batch_size={batch_size}, "
             f"lr={lr:g}, schedule={schedule!r}, seed={seed}"
             + (", resample_every=20 with 3 dead latents" if resample else ""))
    return Case(label, lr=lr, batch_size=batch_size, l1=l1, seed=seed, resample=resample, schedule=schedule,
                data_seed=int(torch.randint(0, 1000, (1,), generator=gen)))


def _loop_data(case: Case) -> ref.SyntheticFeatures:
    return ref.SyntheticFeatures(12, 8, mean_active=3.0, device="cpu", generator=_generator(case.data_seed))


def _loop_sae(case: Case) -> ref.SparseAutoencoder:
    model = ref.SparseAutoencoder(8, 16, case.l1, device="cpu", generator=_generator(case.seed + 17))
    if case.resample:
        with torch.no_grad():
            model.b_enc[:3] = -20.0  # dead from the start
    return model


def _loop_arguments(case: Case) -> dict:
    arguments = dict(steps=LOOP_STEPS, batch_size=case.batch_size, lr=case.lr, schedule=case.schedule, seed=case.seed)
    if case.resample:
        arguments.update(resample_every=20, resample=ref.resample_latents, resample_inputs=256)
    return arguments


def _loop_variant(case: Case, *, project=True, normalise=True, zero_grad=True, normalise_first=False,
                  one_generator=True, resample=True, schedule=True) -> tuple[Tensor, Tensor]:
    """(losses, final W_dec) of the reference loop with one thing changed (a known mistake)."""
    sae, data = _loop_sae(case), _loop_data(case)
    optimizer = torch.optim.Adam(sae.parameters(), lr=case.lr)
    generator = torch.Generator().manual_seed(case.seed)
    losses = torch.zeros(LOOP_STEPS)
    multiplier = ref.lr_schedule(case.schedule)
    for step in range(LOOP_STEPS):
        if schedule:
            for group in optimizer.param_groups:
                group["lr"] = case.lr * multiplier(step, LOOP_STEPS)
        if resample and case.resample and step and step % 20 == 0:
            ref.resample_latents(sae, optimizer, data(256, generator), torch.Generator().manual_seed(case.seed + 1))
        batch_generator = generator if one_generator else torch.Generator().manual_seed(case.seed + step)
        loss = sae.loss(data(case.batch_size, batch_generator))
        if zero_grad:
            optimizer.zero_grad()
        loss.backward()
        if project:
            sae.W_dec.grad = ref.project_decoder_grad(sae.W_dec.detach(), sae.W_dec.grad)
        with torch.no_grad():
            if normalise_first:
                sae.W_dec.copy_(ref.normalise_decoder(sae.W_dec))
        optimizer.step()
        with torch.no_grad():
            if normalise and not normalise_first:
                sae.W_dec.copy_(ref.normalise_decoder(sae.W_dec))
        losses[step] = loss.detach()
    return losses, sae.W_dec.detach()


def _loop_mistakes(case: Case) -> dict[str, tuple[Tensor, Tensor]]:
    mistakes = {
        "the decoder's gradient is not projected (remove each row's component along its decoder row "
        "with project_fn before optimizer.step())": _loop_variant(case, project=False),
        "the decoder rows are not renormalised after the step (normalise_fn after optimizer.step())":
            _loop_variant(case, normalise=False),
        "the decoder is renormalised before optimizer.step() instead of after it":
            _loop_variant(case, normalise_first=True),
        "the gradients are never zeroed (optimizer.zero_grad() is missing), so they accumulate":
            _loop_variant(case, zero_grad=False),
        "the batches do not come from one generator seeded with `seed` before the loop":
            _loop_variant(case, one_generator=False),
    }
    if case.schedule != "constant":
        mistakes["the learning rate never follows the schedule (set lr × lr_schedule(schedule)(step, steps) on "
                 "every param group at every step)"] = _loop_variant(case, schedule=False)
    if case.resample:
        mistakes["the latents are never resampled (call resample every resample_every steps)"] = \
            _loop_variant(case, resample=False)
    return mistakes


@exercise(
    "train_sparse_autoencoder",
    cases=_loop_case,
    seeds=range(3),
    time_limit=90,
    passed="{n}/{n} training runs follow the reference loop step by step.",
    reference=ref.train_sparse_autoencoder,
    hints=[
        "One Adam optimiser over sae.parameters(); one generator made before the loop, "
        "torch.Generator(device=sae.W_dec.device).manual_seed(seed); each step: the learning rate "
        "lr * lr_schedule(schedule)(step, steps) on every param group, loss = "
        "sae.loss(data(batch_size, generator)), zero_grad, backward, project W_dec's gradient, "
        "optimizer.step(), renormalise W_dec.",
        "The projection: sae.W_dec.grad = project_fn(sae.W_dec.detach(), sae.W_dec.grad).  The "
        "renormalisation, under torch.no_grad(): sae.W_dec.copy_(normalise_fn(sae.W_dec)).",
        "Resampling comes first in a step: if resample_every and step and step % resample_every == 0, "
        "call resample(sae, optimizer, data(resample_inputs, generator), resample_generator) with "
        "resample_generator = torch.Generator().manual_seed(seed + 1) made before the loop.",
    ],
)
def check_train_sparse_autoencoder(learner, case: Case) -> None:
    """Check your ``train_sparse_autoencoder(sae, data, steps, batch_size, lr, schedule, seed,
    resample_every, resample, resample_inputs, ...)``: it trains a small SAE for 60 steps from one
    seed, and its losses and final W_dec must follow the course's loop (Adam, the schedule, the projected gradient, the
    renormalised decoder, fresh batches from the seeded generator, resampling at its steps)."""
    mine, theirs = _loop_sae(case), _loop_sae(case)
    W0 = mine.W_dec.detach().clone()
    torch.manual_seed(case.seed + 99_991)
    kwargs = {"progress": False} if accepts_argument(learner, "progress") else {}
    losses = learner(mine, _loop_data(case), **_loop_arguments(case), **kwargs)
    expected = ref.train_sparse_autoencoder(theirs, _loop_data(case), **_loop_arguments(case), progress=False)
    if isinstance(losses, (list, tuple)):
        raise CheckFailed(f"your loop returned a {type(losses).__name__}: return one tensor of shape (steps,) "
                          "made before the loop and filled step by step")
    losses = expect_tensor(losses)
    if losses.requires_grad:
        raise CheckFailed("your losses still carry the autograd graph: store loss.detach() of each step")
    expect_shape(losses, expected.shape, "(steps,)", note="; keep every step's loss")
    if torch.equal(mine.W_dec.detach(), W0):
        raise CheckFailed("the SAE's W_dec did not change: train the SAE you are given")
    close = lambda a, b: torch.allclose(a.detach().cpu(), b, rtol=1e-3, atol=1e-5)  # noqa: E731
    if not close(losses[:1], expected[:1]):
        raise CheckFailed("the loss of the first step differs from the reference loop's, before any update: "
                          "draw each batch with data(batch_size, generator) from one generator seeded with "
                          "`seed`, and record sae.loss(x) of that batch")
    if close(losses, expected) and close(mine.W_dec, theirs.W_dec.detach()):
        return
    for description, (wrong_losses, wrong_W) in _loop_mistakes(case).items():
        if close(losses, wrong_losses) and close(mine.W_dec, wrong_W):
            raise CheckFailed(f"your training matches a known mistake: {description}")
    norms = mine.W_dec.detach().norm(dim=1)
    if not torch.allclose(norms, torch.ones_like(norms), atol=1e-4):
        raise CheckFailed("after training the decoder rows are not unit vectors: renormalise them after "
                          "every step")
    apart = ~torch.isclose(losses.detach().cpu(), expected, rtol=1e-3, atol=1e-5)
    first = int(apart.float().argmax()) if apart.any() else LOOP_STEPS
    raise CheckFailed(f"your losses leave the reference loop's at step {first} of {LOOP_STEPS} (or the final "
                      "W_dec differs): check the order zero_grad, backward, projection, step, renormalisation")


# --------------------------------------------------------------------------------------
# The capstone, part 3: resampling dead latents in proportion to the loss
# --------------------------------------------------------------------------------------

RESAMPLE_REPEATS = 30


def _resample_sae(seed: int, d_in: int, n: int, n_dead: int):
    """A reference SAE whose first ``n_dead`` latents never fire, and an Adam optimiser with state."""
    sae = ref.SparseAutoencoder(d_in, n, 0.3, device="cpu", generator=_generator(seed))
    gen = _generator(seed + 5)
    with torch.no_grad():
        sae.b_dec.copy_(0.3 * torch.randn(d_in, generator=gen))
        sae.b_enc.copy_(1.0 + 0.1 * torch.rand(n, generator=gen))  # the alive latents fire on every input
        sae.W_enc.mul_(0.5 + torch.rand(1, n, generator=gen))
    optimizer = torch.optim.Adam(sae.parameters(), lr=1e-2)
    sae.loss(torch.randn(16, d_in, generator=gen).abs()).backward()
    optimizer.step()  # Adam's state is nonzero for every latent ...
    optimizer.zero_grad()
    with torch.no_grad():
        sae.b_enc[:n_dead] = -1e3  # ... and then the first n_dead latents die
    # Adam's state tensors, also held as buffers of the SAE: the instructor's grader runs the learner's
    # function in another process and sends back a module's buffers, not an optimiser's state, so
    # this is how a reset made in place there reaches the optimiser here.
    for name in ("W_enc", "b_enc", "W_dec"):
        for key, value in optimizer.state[getattr(sae, name)].items():
            if isinstance(value, Tensor) and value.shape == getattr(sae, name).shape:
                sae.register_buffer(f"adam_{name}_{key}", value)
    return sae, optimizer


def _resample_pool(seed: int, d_in: int, size: int, bad: int) -> Tensor:
    """Inputs; the first ``bad`` are twice as long as the others (so the SAE reconstructs them worse)."""
    x = torch.randn(size, d_in, generator=_generator(seed + 9)).abs() + 0.2
    x[:bad] *= 2.0
    return x


def _resample_latents_case(seed: int) -> Case:
    gen = _generator(seed)
    d_in = _randint(gen, 4, 7)
    n = _randint(gen, d_in + 2, 12)
    n_dead = 1 if seed % 3 == 1 else _randint(gen, 2, n - 2)
    scale = (0.2, 0.5, 0.1)[seed % 3]
    return Case(f"d_in={d_in}, n_latents={n}, {n_dead} dead, encoder_scale={scale:g}", d_in=d_in, n=n,
                n_dead=n_dead, scale=scale, seed=seed)


def _picks(sae, pool: Tensor, dead: Tensor) -> Tensor:
    """The pool input each resampled decoder row points at."""
    directions = F.normalize(pool - sae.b_dec.detach(), dim=1)
    return (sae.W_dec.detach()[dead] @ directions.T).argmax(dim=1)


def _draw_fraction(weights: Tensor, n_draws: int, bad: int) -> float:
    """The expected fraction of draws (without replacement) landing among the first ``bad``."""
    hits = 0
    for r in range(RESAMPLE_REPEATS):
        hits += int((torch.multinomial(weights, n_draws, generator=_generator(50_000 + r)) < bad).sum())
    return hits / (RESAMPLE_REPEATS * n_draws)


def _check_proportional(learner, seed: int) -> None:
    """Many resamplings on a pool whose first inputs have the largest losses: the picks must land
    among them as often as draws ∝ the squared loss do, not as uniform or ∝-loss draws."""
    d_in, n, n_dead, size, bad = 4, 12, 6, 120, 8
    hits = 0
    for r in range(RESAMPLE_REPEATS):
        sae, optimizer = _resample_sae(seed, d_in, n, n_dead)
        pool = _resample_pool(seed, d_in, size, bad)
        with torch.no_grad():
            x_hat, f = sae(pool)
            dead = (f == 0).all(dim=0)
        count = learner(sae, optimizer, pool, torch.Generator().manual_seed(1000 + r))
        if _as_number(count) != int(dead.sum()):
            raise CheckFailed("return the number of latents resampled")
        hits += int((_picks(sae, pool, dead) < bad).sum())
    fraction = hits / (RESAMPLE_REPEATS * n_dead)
    loss = (pool - x_hat).square().sum(dim=1).double()
    hypotheses = {"squared": _draw_fraction(loss.square(), n_dead, bad),
                  "loss": _draw_fraction(loss, n_dead, bad),
                  "uniform": _draw_fraction(torch.ones_like(loss), n_dead, bad),
                  "fourth": _draw_fraction(loss.pow(4), n_dead, bad)}
    nearest = min(hypotheses, key=lambda h: abs(hypotheses[h] - fraction))
    messages = {
        "uniform": "the inputs are drawn uniformly; draw them with probability ∝ the squared loss ‖v − v̂‖⁴ "
                   "(torch.multinomial on the weights)",
        "loss": "the inputs are drawn ∝ the loss ‖v − v̂‖²; Bricken et al. draw ∝ its square, ‖v − v̂‖⁴",
        "fourth": "the inputs are drawn with weights raised to too high a power: ∝ the squared loss ‖v − v̂‖⁴",
    }
    if nearest != "squared":
        raise CheckFailed(messages[nearest])


@exercise(
    "resample_latents",
    cases=_resample_latents_case,
    seeds=range(4),
    time_limit=60,
    passed="{n}/{n} resamplings match the reference, and the inputs are drawn in proportion to the squared loss.",
    reference=ref.resample_latents,
    hints=[
        "Under torch.no_grad(): x̂, f = sae(inputs); dead latents fire on no input, (f == 0).all(dim=0).  "
        "Each input's loss is ‖v − v̂‖² (sum over d_in); draw one input per dead latent with "
        "torch.multinomial(weights, n_dead, generator=generator), weights = loss² on the CPU.",
        "resample_fn(sae.W_enc, sae.b_enc, sae.W_dec, sae.b_dec, dead, inputs[chosen], encoder_scale) gives "
        "the new tensors: copy them into the parameters with .copy_().  Then zero Adam's state for the "
        "dead latents: for each of W_enc (latents on dim 1), b_enc and W_dec (dim 0), every tensor in "
        "optimizer.state[param].values() of the parameter's shape, .index_fill_(dim, index, 0).",
    ],
)
def check_resample_latents(learner, case: Case) -> None:
    """Check your ``resample_latents(sae, optimizer, inputs, generator, encoder_scale=0.2)``: the
    latents that fire on none of ``inputs`` are pointed at inputs drawn with probability ∝ the
    squared loss (via ``resample_fn``), Adam's state for them is zeroed, the rest is untouched,
    and it returns how many it resampled."""
    sae, optimizer = _resample_sae(case.seed, case.d_in, case.n, case.n_dead)
    before = {name: getattr(sae, name).detach().clone() for name in ("W_enc", "b_enc", "W_dec", "b_dec")}
    state_before = {name: {k: v.clone() for k, v in optimizer.state[getattr(sae, name)].items()
                           if isinstance(v, Tensor) and v.dim()} for name in ("W_enc", "b_enc", "W_dec")}
    pool = _resample_pool(case.seed, case.d_in, 64, 4)
    with torch.no_grad():
        dead = (sae(pool)[1] == 0).all(dim=0)
    count = learner(sae, optimizer, pool, torch.Generator().manual_seed(case.seed), encoder_scale=case.scale)
    if count is None:
        raise CheckFailed("your function returned None; return the number of latents resampled")
    if _as_number(count) != int(dead.sum()):
        raise CheckFailed("the number returned is not the number of dead latents (those that fire on none "
                          "of the inputs)")
    alive = ~dead
    for name, dim in (("W_enc", 1), ("b_enc", 0), ("W_dec", 0)):
        now = getattr(sae, name).detach()
        keep = alive.nonzero().squeeze(1)
        if not torch.equal(now.index_select(dim, keep), before[name].index_select(dim, keep)):
            raise CheckFailed(f"{name} changed for alive latents; only the dead latents should change")
    if not torch.equal(sae.b_dec.detach(), before["b_dec"]):
        raise CheckFailed("b_dec changed; resampling leaves it alone")
    W_dec = sae.W_dec.detach()[dead]
    if torch.allclose(W_dec, before["W_dec"][dead]):
        raise CheckFailed("the dead latents' decoder rows did not change: copy resample_fn's tensors into the "
                          "parameters (sae.W_dec.copy_(...)), not into new names")
    plain = F.normalize(pool, dim=1)
    centred = F.normalize(pool - before["b_dec"], dim=1)
    if (W_dec @ centred.T).max(dim=1).values.min() < 1 - 1e-4:
        if (W_dec @ plain.T).max(dim=1).values.min() > 1 - 1e-4:
            raise CheckFailed("the new decoder rows point at the inputs without subtracting b_dec")
        raise CheckFailed("the new decoder rows do not point at the inputs (v − b_dec)/‖v − b_dec‖: pass the "
                          "chosen inputs, inputs[chosen], to resample_fn")
    if sae.b_enc.detach()[dead].abs().max() > 0:
        raise CheckFailed("b_enc of the resampled latents should be 0")
    expected = before["W_enc"].clone()
    expected[:, dead] = (W_dec * case.scale * before["W_enc"][:, alive].norm(dim=0).mean()).T
    if not _allclose(sae.W_enc.detach(), expected):
        raise CheckFailed("the resampled encoder columns are wrong: pass encoder_scale on to resample_fn")
    for name, dim in (("W_enc", 1), ("b_enc", 0), ("W_dec", 0)):
        index = dead.nonzero().squeeze(1)
        keep = alive.nonzero().squeeze(1)
        for key, old in state_before[name].items():
            new = optimizer.state[getattr(sae, name)][key]
            if new.index_select(dim, index).abs().max() > 0:
                raise CheckFailed(f"Adam's state ({key}) for the resampled latents of {name} is not reset to 0 in "
                                  "place (index_fill_): a new latent should not inherit the dead one's moments")
            if not torch.equal(new.index_select(dim, keep), old.index_select(dim, keep)):
                raise CheckFailed(f"Adam's state ({key}) of {name} changed for alive latents")
    if case.seed == 0:
        _check_proportional(learner, case.seed)
