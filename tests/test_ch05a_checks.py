"""Chapter 05's checks: the reference passes, the stub is "not attempted", plausible wrong
implementations fail with a message that names what is wrong, and broken learners (raising,
wrong shape, wrong type, NaN) fail without crashing."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from check_helpers import (
    assert_passes,
    assert_reference_passes_and_stub_is_not_attempted,
    assert_registered,
    default_cases,
    failure,
)

from course_utils import checks
from course_utils import sae as lib
from course_utils.checks import sae as chapter

pytestmark = pytest.mark.usefixtures("one_thread")


# --------------------------------------------------------------------------------------
# Right answers, written as a learner would
# --------------------------------------------------------------------------------------


def sae_encode(x, W_enc, b_enc, b_dec):
    return torch.relu((x - b_dec) @ W_enc + b_enc)


def sae_decode(f, W_dec, b_dec):
    return f @ W_dec + b_dec


def l1_sae_loss(x, x_hat, f, l1_coefficient):
    return (x - x_hat).pow(2).sum(dim=1).mean() + l1_coefficient * f.abs().sum(dim=1).mean()


def project_decoder_grad(W_dec, grad):
    return grad - (grad * W_dec).sum(dim=1, keepdim=True) * W_dec


def normalise_decoder(W_dec):
    return W_dec / W_dec.norm(dim=1, keepdim=True)


def topk_activation(pre, k):
    values, indices = pre.topk(k, dim=1)
    return torch.zeros_like(pre).scatter(1, indices, values.relu())


def batch_topk_activation(pre, k):
    a = pre.relu().flatten()
    values, indices = a.topk(k * pre.shape[0])
    return torch.zeros_like(a).scatter(0, indices, values).view_as(pre)


def jumprelu_grads(z, threshold, bandwidth, grad_output):
    grad_z = grad_output * (z > threshold)
    kernel = ((z - threshold) / bandwidth).abs() < 0.5
    return grad_z, -(threshold / bandwidth) * (kernel * grad_output).sum(dim=0)


def resample_dead(W_enc, b_enc, W_dec, b_dec, dead, inputs, encoder_scale=0.2):
    W_enc, b_enc, W_dec = W_enc.clone(), b_enc.clone(), W_dec.clone()
    index = dead.nonzero().squeeze(1)
    d = inputs - b_dec
    d = d / d.norm(dim=1, keepdim=True)
    mean_norm = W_enc[:, ~dead].norm(dim=0).mean()
    W_dec[index] = d
    W_enc[:, index] = (d * encoder_scale * mean_norm).T
    b_enc[index] = 0.0
    return W_enc, b_enc, W_dec


def mmcs(true_directions, learned_directions):
    t = F.normalize(true_directions, dim=1)
    s = F.normalize(learned_directions, dim=1)
    return (t @ s.T).max(dim=1).values.mean().item()


def sae_metrics(x, x_hat, f):
    return {
        "l0": (f != 0).sum(dim=1).float().mean(),  # a 0-d tensor is accepted
        "fve": float(1 - (x - x_hat).square().sum() / (x - x.mean(dim=0)).square().sum()),
        "dead": float((~(f != 0).any(dim=0)).float().mean()),
        "shrinkage": float(x_hat.square().sum() / (x_hat * x).sum()),
    }


def precision_recall(fires, concept):
    hits = (fires & concept[:, None]).sum(dim=0).float()
    return hits / fires.sum(dim=0).clamp(min=1), hits / concept.sum()


REFERENCES = {
    "sae_encode": sae_encode,
    "sae_decode": sae_decode,
    "l1_sae_loss": l1_sae_loss,
    "project_decoder_grad": project_decoder_grad,
    "normalise_decoder": normalise_decoder,
    "topk_activation": topk_activation,
    "batch_topk_activation": batch_topk_activation,
    "jumprelu_grads": jumprelu_grads,
    "resample_dead": resample_dead,
    "mmcs": mmcs,
    "sae_metrics": sae_metrics,
    "precision_recall": precision_recall,
}


@pytest.mark.parametrize("name", REFERENCES)
def test_reference_passes_and_stub_is_not_attempted(name, capsys):
    assert_reference_passes_and_stub_is_not_attempted(name, REFERENCES[name], capsys)


@pytest.mark.parametrize("name", REFERENCES)
def test_reference_passes_hidden_seeds(name):
    assert_passes(name, REFERENCES[name], seeds=range(100, 124))


def test_registered_under_the_exercise_names():
    assert_registered(REFERENCES)


def test_other_right_answers_pass():
    """Equivalent formulations: the library's own modules, a loss with f.sum() (f ≥ 0), a ReLU
    before the top-k, a loop over the dead latents."""
    def encode_by_module(x, W_enc, b_enc, b_dec):
        model = lib.ReLUSAE(W_enc.shape[0], W_enc.shape[1], device="cpu")
        with torch.no_grad():
            model.W_enc.copy_(W_enc), model.b_enc.copy_(b_enc), model.b_dec.copy_(b_dec)
            return model.encode(x)

    def loss_sum_of_f(x, x_hat, f, l1_coefficient):
        return F.mse_loss(x_hat, x, reduction="sum") / len(x) + l1_coefficient * f.sum() / len(x)

    def topk_relu_first(pre, k):
        a = pre.relu()
        values, indices = a.topk(k, dim=1)
        return torch.zeros_like(a).scatter(1, indices, values)

    def resample_loop(W_enc, b_enc, W_dec, b_dec, dead, inputs, encoder_scale=0.2):
        W_enc, b_enc, W_dec = W_enc.clone(), b_enc.clone(), W_dec.clone()
        scale = torch.stack([W_enc[:, j].norm() for j in range(len(dead)) if not dead[j]]).mean()
        for v, j in zip(inputs, torch.where(dead)[0]):
            d = (v - b_dec) / (v - b_dec).norm()
            W_dec[j], W_enc[:, j], b_enc[j] = d, d * encoder_scale * scale, 0.0
        return W_enc, b_enc, W_dec

    def metrics_tensors(x, x_hat, f):
        return {"l0": torch.tensor(lib.l0(f)), "fve": lib.fraction_variance_explained(x, x_hat),
                "dead": lib.dead_fraction(f), "shrinkage": lib.shrinkage(x, x_hat), "extra": "ignored"}

    for name, learner in [("sae_encode", encode_by_module), ("l1_sae_loss", loss_sum_of_f),
                          ("topk_activation", topk_relu_first), ("resample_dead", resample_loop),
                          ("sae_metrics", metrics_tensors),
                          ("mmcs", lambda t, s: lib.max_cosine_similarity(t, s).mean())]:
        assert_passes(name, learner)


def test_resample_reference_matches_the_library_with_one_dead_latent():
    """With one dead latent and one candidate input, ``resample_dead_latents`` has no choice to make."""
    for seed in (3, 7, 11):
        case = chapter._resample_case(seed)
        assert int(case.dead.sum()) == 1
        model = lib.ReLUSAE(*case.W_enc.shape, device="cpu")
        with torch.no_grad():
            for name in ("W_enc", "b_enc", "W_dec", "b_dec"):
                getattr(model, name).copy_(getattr(case, name))
        lib.resample_dead_latents(model, case.inputs, case.dead, encoder_scale=case.encoder_scale)
        expected = chapter._resample(case.W_enc, case.b_enc, case.W_dec, case.b_dec, case.dead, case.inputs,
                                     case.encoder_scale)
        for got, want in zip((model.W_enc, model.b_enc, model.W_dec), expected):
            torch.testing.assert_close(got.detach(), want)


# --------------------------------------------------------------------------------------
# The cases cover what their docstrings promise
# --------------------------------------------------------------------------------------


def test_encode_and_decode_cases_cover_the_edges():
    encode = default_cases("sae_encode", chapter._encode_case)
    assert any(c.W_enc.shape[0] == c.W_enc.shape[1] for c in encode)
    assert any(c.x.shape[0] == 1 for c in encode)
    assert any((sae_encode(c.x, c.W_enc, c.b_enc, c.b_dec)[:, 0] == 0).all() for c in encode)
    decode = default_cases("sae_decode", chapter._decode_case)
    assert any(c.W_dec.shape[0] == c.W_dec.shape[1] for c in decode)
    assert any((c.f[:, 0] == 0).all() for c in decode)


def test_topk_cases_cover_the_edges():
    cases = default_cases("topk_activation", chapter._topk_case)
    assert {c.k == c.pre.shape[1] for c in cases} == {True, False}
    assert any(c.k == 1 for c in cases) and any(c.pre.shape[0] == 1 for c in cases)
    for c in cases:
        assert int((c.pre[0] > 0).sum()) < c.k  # the ReLU matters
    batch = default_cases("batch_topk_activation", chapter._batch_topk_case)
    assert any(int((c.pre > 0).sum()) < c.k * c.pre.shape[0] for c in batch)


def test_jumprelu_cases_have_entries_inside_and_just_outside_the_window():
    for c in default_cases("jumprelu_grads", chapter._jumprelu_case):
        distance = (c.z - c.threshold).abs() / c.bandwidth
        inside, near = distance < 0.5, (distance > 0.5) & (distance < 1)
        assert inside[:, 0].any() and not inside[:, -1].any() and near.any()
        assert ((distance - 0.5).abs() > 0.04).all() and ((distance - 1).abs() > 0.04).all()
        assert ((c.z > 0) & (c.z < c.threshold - c.bandwidth)).any() or c.z.shape[0] == 1


def test_metrics_and_mmcs_cases_cover_the_edges():
    metrics = default_cases("sae_metrics", chapter._metrics_case)
    assert {lib.dead_fraction(c.f) == 0 for c in metrics} == {True, False}
    mmcs_cases = default_cases("mmcs", chapter._mmcs_case)
    assert any(c.learned.shape[0] == 1 for c in mmcs_cases) and any(c.true.shape[0] == 1 for c in mmcs_cases)


# --------------------------------------------------------------------------------------
# Wrong implementations: each fails, most with the mistake named
# --------------------------------------------------------------------------------------

relu = torch.relu


def _keep(values, pre, k, dim=1):
    index = values.topk(k, dim=dim).indices
    return torch.zeros_like(pre).scatter(dim, index, pre.gather(dim, index))


def _flat_keep(values, pre, keep):
    index = values.flatten().topk(keep).indices
    return torch.zeros_like(pre).flatten().scatter(0, index, pre.flatten()[index]).view_as(pre)


def _jump_threshold(z, threshold, bandwidth, grad_output, half_width=0.5):
    kernel = ((z - threshold) / bandwidth).abs() < half_width
    return -(threshold / bandwidth) * (kernel * grad_output).sum(dim=0)


def _resample_variant(W_enc, b_enc, W_dec, b_dec, dead, inputs, encoder_scale, *, subtract=True,
                      all_norms=False, reset_b_enc=True, rows=False, in_place=False, touch_alive=False):
    if not in_place:
        W_enc, b_enc, W_dec = W_enc.clone(), b_enc.clone(), W_dec.clone()
    index = dead.nonzero().squeeze(1)
    d = inputs - b_dec if subtract else inputs
    d = d / d.norm(dim=1, keepdim=True)
    norms = W_enc.norm(dim=0) if all_norms else W_enc[:, ~dead].norm(dim=0)
    column = d * encoder_scale * norms.mean()
    if rows:
        W_enc[index] = column
    else:
        W_enc[:, index] = column.T
    if reset_b_enc:
        b_enc[index] = 0.0
    if touch_alive:
        b_enc[~dead] = 0.0
    W_dec[index] = d
    return W_enc, b_enc, W_dec


def _normalise_inputs_in_place(true_directions, learned_directions):
    true_directions /= true_directions.norm(dim=1, keepdim=True)
    learned_directions /= learned_directions.norm(dim=1, keepdim=True)
    return float((true_directions @ learned_directions.T).max(dim=1).values.mean())


def _metrics_with(**changes):
    def learner(x, x_hat, f):
        out = sae_metrics(x, x_hat, f)
        for key, fn in changes.items():
            if fn is None:
                del out[key]
            else:
                out[key] = fn(x, x_hat, f)
        return out
    return learner


WRONG = [
    # sae_encode
    ("sae_encode", lambda x, W, b, bd: relu(x @ W + b), "forgot to subtract b_dec"),
    ("sae_encode", lambda x, W, b, bd: relu((x + bd) @ W + b), "b_dec is added to x instead of subtracted"),
    ("sae_encode", lambda x, W, b, bd: (x - bd) @ W + b, "the ReLU is missing"),
    ("sae_encode", lambda x, W, b, bd: relu((x - bd) @ W) + b, "the ReLU is applied before adding b_enc"),
    ("sae_encode", lambda x, W, b, bd: relu((x - bd) @ W), "b_enc is missing"),
    # sae_decode
    ("sae_decode", lambda f, W, b: f @ W, "b_dec is missing"),
    ("sae_decode", lambda f, W, b: relu(f @ W + b), "a ReLU is applied to the output"),
    ("sae_decode", lambda f, W, b: f @ W - b, "b_dec is subtracted"),
    # l1_sae_loss
    ("l1_sae_loss", lambda x, xh, f, l1: (x - xh).square().mean() + l1 * f.abs().sum(1).mean(),
     "the squared error is averaged over d_in"),
    ("l1_sae_loss", lambda x, xh, f, l1: (x - xh).square().sum(1).mean() + f.abs().sum(1).mean(),
     "the L1 coefficient λ is missing"),
    ("l1_sae_loss", lambda x, xh, f, l1: (x - xh).square().sum(1).mean() + l1 * f.square().sum(1).mean(),
     "an L2 (Σ f²) instead of an L1"),
    ("l1_sae_loss", lambda x, xh, f, l1: (x - xh).square().sum() + l1 * f.abs().sum(),
     "summed over the batch instead of averaged"),
    ("l1_sae_loss", lambda x, xh, f, l1: (x - xh).norm(dim=1).mean() + l1 * f.abs().sum(1).mean(),
     "the reconstruction error is not squared"),
    ("l1_sae_loss", lambda x, xh, f, l1: (x - xh).square().sum(1).mean() + l1 * f.abs().mean(),
     "the L1 penalty is averaged over the latents"),
    ("l1_sae_loss", lambda x, xh, f, l1: l1_sae_loss(x, xh, f, l1).item(), "Python float"),
    ("l1_sae_loss", lambda x, xh, f, l1: l1_sae_loss(x, xh, f, l1).detach(), "no gradient"),
    ("l1_sae_loss", lambda x, xh, f, l1: (x - xh).square().sum(1).mean() + l1 * f.detach().sum(1).mean(),
     "gradient with respect to f is wrong"),
    ("l1_sae_loss", lambda x, xh, f, l1: (x - xh).square().sum(1) + l1 * f.abs().sum(1), "one loss per input"),
    # project_decoder_grad
    ("project_decoder_grad", lambda W, g: g + (g * W).sum(1, keepdim=True) * W, "the sign is flipped"),
    ("project_decoder_grad", lambda W, g: g - (g * W).sum(0, keepdim=True) * W,
     "the columns are projected instead of the rows"),
    ("project_decoder_grad", lambda W, g: g / g.norm(dim=1, keepdim=True),
     "the gradient is normalised instead of projected"),
    ("project_decoder_grad", lambda W, g: g.sub_((g * W).sum(1, keepdim=True) * W),
     "changed its input `grad` in place"),
    ("project_decoder_grad", lambda W, g: (g * W).sum(1, keepdim=True) * W, "you returned the radial part"),
    ("project_decoder_grad", lambda W, g: g - (g @ W.T) @ W, "along every decoder row"),
    # normalise_decoder
    ("normalise_decoder", lambda W: W / W.norm(dim=0, keepdim=True), "the columns are normalised"),
    ("normalise_decoder", lambda W: W / W.norm(), "the norm of the whole matrix"),
    ("normalise_decoder", lambda W: W / W.norm(dim=1, keepdim=True) ** 2, "divided by the squared norm"),
    ("normalise_decoder", lambda W: W.div_(W.norm(dim=1, keepdim=True)), "changed its input `W_dec` in place"),
    ("normalise_decoder", lambda W: W / W.abs().sum(dim=1, keepdim=True), "L1 norm"),
    # topk_activation
    ("topk_activation", lambda pre, k: _keep(pre, pre, k), "the ReLU is missing"),
    ("topk_activation", lambda pre, k: relu(_keep(pre, pre, k, dim=0)), "taken over the batch (dim=0)"),
    ("topk_activation", lambda pre, k: relu(_keep(pre, pre, min(k + 1, pre.shape[1]))), "k + 1 activations"),
    ("topk_activation", lambda pre, k: relu(_keep(pre, pre, k - 1)), "k − 1 activations"),
    ("topk_activation", lambda pre, k: pre.topk(k, dim=1).values, "the top k values or indices"),
    ("topk_activation", lambda pre, k: pre.topk(k, dim=1), "returned a"),
    ("topk_activation", lambda pre, k: relu(_keep(pre.abs(), pre, k)), "by absolute value"),
    # batch_topk_activation
    ("batch_topk_activation", lambda pre, k: topk_activation(pre, k), "the top k are taken per input"),
    ("batch_topk_activation", lambda pre, k: relu(_flat_keep(pre, pre, k)), "only k activations are kept"),
    ("batch_topk_activation", lambda pre, k: _flat_keep(pre, pre, k * len(pre)), "the ReLU is missing"),
    ("batch_topk_activation", lambda pre, k: relu(_flat_keep(pre.abs(), pre, k * len(pre))), "absolute value"),
    # jumprelu_grads
    ("jumprelu_grads", lambda z, t, e, g: (g * (z > t), -(1 / e) * ((((z - t) / e).abs() < 0.5) * g).sum(0)),
     "the factor θ is missing"),
    ("jumprelu_grads", lambda z, t, e, g: (g * (z > t), -_jump_threshold(z, t, e, g)), "the sign is flipped"),
    ("jumprelu_grads", lambda z, t, e, g: (g * (z > t), -(t / e) * ((((z - t) / e).abs() < 0.5) * g)),
     "sum over the batch"),
    ("jumprelu_grads", lambda z, t, e, g: (g * (z > t), _jump_threshold(z, t, e, g, half_width=1.0)),
     "the kernel's window is too wide"),
    ("jumprelu_grads", lambda z, t, e, g: (g, _jump_threshold(z, t, e, g)), "grad_z: output differs"),
    ("jumprelu_grads", lambda z, t, e, g: (g, _jump_threshold(z, t, e, g)), "the gradient is not masked"),
    ("jumprelu_grads", lambda z, t, e, g: (g * (z > 0), _jump_threshold(z, t, e, g)), "z > 0"),
    ("jumprelu_grads", lambda z, t, e, g: _jump_threshold(z, t, e, g), "returned a single tensor"),
    ("jumprelu_grads", lambda z, t, e, g: (g * (z > t), _jump_threshold(z, t, e, torch.ones_like(g))),
     "grad_output is not multiplied in"),
    # resample_dead
    ("resample_dead", lambda *a: _resample_variant(*a, subtract=False), "forgot to subtract b_dec"),
    ("resample_dead", lambda *a: _resample_variant(*a, all_norms=True), "averaged over all latents"),
    ("resample_dead", lambda *a: _resample_variant(*a, reset_b_enc=False), "b_enc of the dead latents is not reset"),
    ("resample_dead", lambda *a: _resample_variant(*a, touch_alive=True), "b_enc changed for alive latents"),
    ("resample_dead", lambda *a: _resample_variant(*a, in_place=True), "changed its input `W_enc` in place"),
    ("resample_dead", lambda We, be, Wd, bd, dead, inputs, s=0.2: resample_dead(We, be, Wd, bd, dead, inputs),
     "encoder_scale is ignored (0.2 is hard-coded)"),
    ("resample_dead", lambda We, be, Wd, bd, dead, inputs, s: resample_dead(We, be, Wd, bd, dead, inputs, 1.0),
     "encoder_scale is not applied"),
    ("resample_dead", lambda We, be, Wd, bd, dead, inputs, s: resample_dead(We, be, Wd, bd, dead, inputs.sub_(bd), 0),
     "changed its input `inputs` in place"),
    ("resample_dead", lambda *a: resample_dead(*a)[:2], "returned 2 items"),
    # mmcs
    ("mmcs", lambda t, s: mmcs(s, t), "the max is over the true features"),
    ("mmcs", lambda t, s: float((F.normalize(t, dim=1) @ F.normalize(s, dim=1).T).abs().max(1).values.mean()),
     "the absolute cosine similarity"),
    ("mmcs", lambda t, s: float((t @ s.T).max(1).values.mean()), "dot products instead of cosine"),
    ("mmcs", lambda t, s: float((t @ F.normalize(s, dim=1).T).max(1).values.mean()),
     "only the learned directions are normalised"),
    ("mmcs", lambda t, s: float((F.normalize(t, dim=1) @ F.normalize(s, dim=1).T).mean()),
     "the mean of all cosine similarities"),
    ("mmcs", _normalise_inputs_in_place, "in place"),
    ("mmcs", lambda t, s: lib.max_cosine_similarity(t, s), "expected one number"),
    # sae_metrics
    ("sae_metrics", _metrics_with(fve=lambda x, xh, f: float(1 - (x - xh).square().sum() / x.square().sum())),
     "the variance is not centred"),
    ("sae_metrics", _metrics_with(l0=lambda x, xh, f: float((f != 0).float().mean())),
     "the fraction of latents active"),
    ("sae_metrics", _metrics_with(dead=lambda x, xh, f: int((f == 0).all(dim=0).sum())), "the number of dead latents"),
    ("sae_metrics", _metrics_with(shrinkage=lambda x, xh, f: float((xh * x).sum() / xh.square().sum())),
     "the ratio is inverted"),
    ("sae_metrics", _metrics_with(shrinkage=None), "lacks the key(s) 'shrinkage'"),
    ("sae_metrics", _metrics_with(dead=lambda x, xh, f: float((f == 0).any(dim=0).float().mean())),
     "zero on some input counted as dead"),
    ("sae_metrics", lambda x, xh, f: list(sae_metrics(x, xh, f).values()), "expected a dict"),
    ("sae_metrics", _metrics_with(l0=lambda x, xh, f: "3"), "the entry 'l0' of your dict is str"),
    # precision_recall
    ("precision_recall", lambda fi, c: precision_recall(fi, c)[::-1], "precision and recall are swapped"),
    ("precision_recall", lambda fi, c: ((fi & c[:, None]).sum(0) / len(c),) * 2, "divided by the number of tokens"),
    ("precision_recall", lambda fi, c: ((fi == c[:, None]).float().mean(0), precision_recall(fi, c)[1]),
     "accuracy instead of precision"),
    ("precision_recall", lambda fi, c: ((fi & c[:, None]).sum(0) / fi.sum(0), precision_recall(fi, c)[1]),
     "a latent that never fires"),
    ("precision_recall", lambda fi, c: (precision_recall(fi, c)[0], (fi & c[:, None]).sum(0) / (~fi).sum(0).clamp(min=1)),
     "recall divided by the tokens where the latent does NOT fire"),
]


@pytest.mark.parametrize("name, wrong, phrase", WRONG, ids=[f"{n}-{p[:30]}" for n, _, p in WRONG])
def test_wrong_implementations_fail_naming_the_mistake(name, wrong, phrase):
    message = failure(name, wrong)
    assert phrase in message and "your function raised" not in message, message


def _square_seeds(name, make_case, is_square):
    return [s for s in checks.EXERCISES[name].exercise.seeds if is_square(make_case(s))]


# Mistakes that only square weights let through: an error elsewhere (a failure too), named here.
SQUARE_ONLY = [
    ("sae_encode", chapter._encode_case, lambda c: c.W_enc.shape[0] == c.W_enc.shape[1],
     lambda x, W, b, bd: relu((x - bd) @ W.T + b), "W_enc is transposed"),
    ("sae_decode", chapter._decode_case, lambda c: c.W_dec.shape[0] == c.W_dec.shape[1],
     lambda f, W, b: f @ W.T + b, "W_dec is transposed"),
    ("project_decoder_grad", chapter._projection_case, lambda c: c.W_dec.shape[0] == c.W_dec.shape[1],
     lambda W, g: g - (g * W).sum(1) * W, "broadcast along the wrong axis"),
    ("resample_dead", chapter._resample_case, lambda c: c.W_enc.shape[0] == c.W_enc.shape[1],
     lambda *a: _resample_variant(*a, rows=True), "the rows of W_enc are overwritten"),
]


@pytest.mark.parametrize("name, make_case, is_square, wrong, phrase", SQUARE_ONLY,
                         ids=[m[0] for m in SQUARE_ONLY])
def test_square_only_mistakes_are_named_on_square_cases_and_fail_on_the_others(name, make_case, is_square,
                                                                                 wrong, phrase):
    seeds = _square_seeds(name, make_case, is_square)
    assert seeds, "the default seeds have no square case"
    message = failure(name, wrong, seeds=seeds)
    assert phrase in message and "your function raised" not in message, message
    failure(name, wrong)  # the default seeds, non-square first: the learner raises, a failure


def test_every_exercise_has_three_named_mistakes():
    counts = {name: sum(n == name for n, *_ in WRONG + SQUARE_ONLY) for name in REFERENCES}
    assert min(counts.values()) >= 3, counts


def _close(a, b) -> bool:
    if isinstance(a, tuple):
        return all(_close(x, y) for x, y in zip(a, b))
    a, b = torch.as_tensor(a, dtype=torch.float64), torch.as_tensor(b, dtype=torch.float64)
    return a.shape == b.shape and bool(((a - b).abs() <= 1e-5 + 1e-4 * b.abs()).all())


def _jumprelu_ref(c, part):
    return jumprelu_grads(c.z, c.threshold, c.bandwidth, c.grad_output)[part]


# exercise -> (case maker, reference output of a case, {description: output} of a case); the
# metrics' dict of dicts and jumprelu's pair of dicts are split into one entry per part.
SUSPECTS = {
    "sae_encode": (chapter._encode_case, lambda c: sae_encode(c.x, c.W_enc, c.b_enc, c.b_dec),
                   chapter._encode_mistakes),
    "sae_decode": (chapter._decode_case, lambda c: sae_decode(c.f, c.W_dec, c.b_dec), chapter._decode_mistakes),
    "l1_sae_loss": (chapter._l1_loss_case, lambda c: l1_sae_loss(c.x, c.x_hat, c.f, c.l1).detach(),
                    chapter._l1_loss_mistakes),
    "project_decoder_grad": (chapter._projection_case, lambda c: project_decoder_grad(c.W_dec, c.grad),
                             chapter._projection_mistakes),
    "normalise_decoder": (chapter._normalise_case, lambda c: normalise_decoder(c.W_dec),
                          lambda c: chapter._normalise_mistakes(c.W_dec)),
    "topk_activation": (chapter._topk_case, lambda c: topk_activation(c.pre, c.k), chapter._topk_mistakes),
    "batch_topk_activation": (chapter._batch_topk_case, lambda c: batch_topk_activation(c.pre, c.k),
                              chapter._batch_topk_mistakes),
    "jumprelu_grads/grad_z": (chapter._jumprelu_case, lambda c: _jumprelu_ref(c, 0),
                              lambda c: chapter._jumprelu_mistakes(c)[0]),
    "jumprelu_grads/grad_threshold": (chapter._jumprelu_case, lambda c: _jumprelu_ref(c, 1),
                                      lambda c: chapter._jumprelu_mistakes(c)[1]),
    "resample_dead": (chapter._resample_case,
                      lambda c: resample_dead(c.W_enc, c.b_enc, c.W_dec, c.b_dec, c.dead, c.inputs, c.encoder_scale),
                      chapter._resample_mistakes),
    "mmcs": (chapter._mmcs_case, lambda c: mmcs(c.true, c.learned), chapter._mmcs_mistakes),
    "precision_recall": (chapter._precision_recall_case, lambda c: precision_recall(c.fires, c.concept),
                         chapter._precision_recall_mistakes),
    **{f"sae_metrics/{key}": (chapter._metrics_case, lambda c, key=key: float(sae_metrics(c.x, c.x_hat, c.f)[key]),
                              lambda c, key=key: chapter._metrics_mistakes(c)[key])
       for key in chapter.METRIC_KEYS},
}


@pytest.mark.parametrize("name", SUSPECTS)
def test_every_listed_mistake_can_be_named(name):
    """Each ``_*_mistakes`` entry differs from the right answer on some default case, and on the
    first such case no entry listed before it gives the same output (which would be named instead)."""
    make_case, reference, mistakes = SUSPECTS[name]
    cases = [make_case(seed) for seed in checks.EXERCISES[name.split("/")[0]].exercise.seeds]
    listed = {description for c in cases for description in mistakes(c)}
    for description in listed:
        named = None
        for c in cases:
            outputs = mistakes(c)
            if description in outputs and not _close(outputs[description], reference(c)):
                named = next(d for d, out in outputs.items() if _close(outputs[description], out))
                break
        assert named == description, (description, named)


def test_loss_check_works_under_no_grad():
    with torch.no_grad():
        assert_passes("l1_sae_loss", l1_sae_loss)


def test_printed_line_names_the_case_and_the_mistake(capsys):
    checks.check_sae_encode(lambda x, W, b, bd: relu(x @ W + b))
    line, using = capsys.readouterr().out.strip().splitlines()
    assert line.startswith("[failed] sae_encode: case 1 (batch=")
    assert line.endswith("matches a known mistake: it looks like you forgot to subtract b_dec from x before encoding.")
    assert using.startswith("  → using the course's sae_encode for the rest of the chapter: yours failed")


# --------------------------------------------------------------------------------------
# Broken learners: raising, wrong shape, wrong type, NaN
# --------------------------------------------------------------------------------------


def _raises(*args, **kwargs):
    raise ValueError("boom")


def _returns_none(*args, **kwargs):
    return None


@pytest.mark.parametrize("name", REFERENCES)
def test_an_exception_is_a_failure_not_a_crash(name):
    assert "your function raised ValueError: boom" in failure(name, _raises)


@pytest.mark.parametrize("name", REFERENCES)
def test_none_is_a_failure(name):
    assert "None" in failure(name, _returns_none)


def _nan_like(out):
    if isinstance(out, torch.Tensor):
        return torch.full_like(out, math.nan)
    if isinstance(out, tuple):
        return tuple(_nan_like(o) for o in out)
    if isinstance(out, dict):
        return {key: math.nan for key in out}
    return math.nan


@pytest.mark.parametrize("name", REFERENCES)
def test_nan_is_a_failure(name):
    message = failure(name, lambda *args: _nan_like(REFERENCES[name](*args)))
    assert "NaN" in message or "nan, not a finite number" in message


@pytest.mark.parametrize("name, wrong, phrase", [
    ("sae_encode", lambda *a: sae_encode(*a)[:, :-1], "output has shape"),
    ("sae_decode", lambda f, W, b: sae_decode(f, W, b).T, "output has shape"),
    ("l1_sae_loss", lambda *a: l1_sae_loss(*a)[None], "output has shape (1,)"),
    ("project_decoder_grad", lambda W, g: project_decoder_grad(W, g)[None], "output has shape"),
    ("normalise_decoder", lambda W: normalise_decoder(W).flatten(), "output has shape"),
    ("topk_activation", lambda pre, k: topk_activation(pre, k)[None], "output has shape"),
    ("batch_topk_activation", lambda pre, k: batch_topk_activation(pre, k).flatten(), "output has shape"),
    ("jumprelu_grads", lambda *a: (jumprelu_grads(*a)[0][:1], jumprelu_grads(*a)[1]), "grad_z: output has shape"),
    ("resample_dead", lambda *a: (resample_dead(*a)[0].T, *resample_dead(*a)[1:]), "W_enc: output has shape"),
    ("mmcs", lambda t, s: torch.zeros(2), "expected one number"),
    ("precision_recall", lambda fi, c: tuple(v[None] for v in precision_recall(fi, c)), "output has shape"),
])
def test_wrong_shapes_are_failures(name, wrong, phrase):
    assert phrase in failure(name, wrong)


@pytest.mark.parametrize("name, wrong, phrase", [
    ("sae_encode", lambda *a: sae_encode(*a).numpy(), "numpy.ndarray; expected a torch.Tensor"),
    ("sae_decode", lambda *a: sae_decode(*a).double(), "dtype torch.float64"),
    ("l1_sae_loss", lambda *a: l1_sae_loss(*a).double(), "dtype torch.float64"),
    ("topk_activation", lambda pre, k: topk_activation(pre, k).tolist(), "list"),
    ("jumprelu_grads", lambda *a: [g.tolist() for g in jumprelu_grads(*a)], "grad_z is list"),
    ("resample_dead", lambda *a: {"W_enc": 1}, "expected a tuple (W_enc, b_enc, W_dec)"),
    ("mmcs", lambda t, s: "0.5", "returned str; expected a number"),
    ("sae_metrics", lambda *a: 0.5, "returned float; expected a dict"),
])
def test_wrong_types_are_failures(name, wrong, phrase):
    assert phrase in failure(name, wrong)


# --------------------------------------------------------------------------------------
# Load-bearing: every exercise hands the chapter an implementation
# --------------------------------------------------------------------------------------

HANDED_OVER = ["sae_encode", "sae_decode", "l1_sae_loss", "project_decoder_grad", "normalise_decoder",
               "topk_activation", "batch_topk_activation", "jumprelu_grads", "resample_dead", "mmcs",
               "sae_metrics", "SparseAutoencoder", "train_sparse_autoencoder", "resample_latents"]


@pytest.mark.parametrize("name", HANDED_OVER)
def test_the_library_reference_passes_its_own_check(name):
    reference = checks.EXERCISES[name].exercise.reference
    assert reference is not None and checks.is_reference(reference)
    assert_passes(name, reference)


# --------------------------------------------------------------------------------------
# The capstones: the SparseAutoencoder class, its training loop, loss-proportional resampling
# --------------------------------------------------------------------------------------


class LearnerSAE(torch.nn.Module):
    """A right answer written as a learner would (parameters in another order, its own encode)."""

    def __init__(self, d_in, n_latents, l1_coefficient=0.3, device="cpu", generator=None):
        super().__init__()
        self.l1_coefficient = l1_coefficient
        W = torch.randn(n_latents, d_in, generator=generator)
        W = W / W.norm(dim=1, keepdim=True)
        self.b_dec = torch.nn.Parameter(torch.zeros(d_in, device=device))
        self.W_dec = torch.nn.Parameter(W.to(device))
        self.W_enc = torch.nn.Parameter(W.T.clone().to(device))
        self.b_enc = torch.nn.Parameter(torch.zeros(n_latents, device=device))

    def encode(self, x):
        return sae_encode(x, self.W_enc, self.b_enc, self.b_dec)

    def decode(self, f):
        return sae_decode(f, self.W_dec, self.b_dec)

    def forward(self, x):
        f = self.encode(x)
        return self.decode(f), f

    def loss(self, x):
        x_hat, f = self(x)
        return l1_sae_loss(x, x_hat, f, self.l1_coefficient)


class NoPreEncoderBias(LearnerSAE):
    def encode(self, x):
        return torch.relu(x @ self.W_enc + self.b_enc)


class L1WrongAxis(LearnerSAE):
    def loss(self, x):
        x_hat, f = self(x)
        return (x - x_hat).square().sum(dim=1).mean() + self.l1_coefficient * f.abs().sum(dim=0).mean()


class DecoderNotUnit(LearnerSAE):
    def __init__(self, d_in, n_latents, l1_coefficient=0.3, device="cpu", generator=None):
        super().__init__(d_in, n_latents, l1_coefficient, device, generator)
        with torch.no_grad():
            self.W_dec.copy_(torch.randn(n_latents, d_in, generator=generator))


class IndependentEncoder(LearnerSAE):
    def __init__(self, d_in, n_latents, l1_coefficient=0.3, device="cpu", generator=None):
        super().__init__(d_in, n_latents, l1_coefficient, device, generator)
        with torch.no_grad():
            self.W_enc.copy_(torch.randn(d_in, n_latents, generator=generator))


def test_sae_class_passes_and_stub_is_not_attempted(capsys):
    assert_reference_passes_and_stub_is_not_attempted("SparseAutoencoder", LearnerSAE, capsys)


@pytest.mark.parametrize("wrong, phrase", [
    (NoPreEncoderBias, "does not subtract the pre-encoder bias"),
    (L1WrongAxis, "the wrong axis"),
    (DecoderNotUnit, "do not start at unit norm"),
    (IndependentEncoder, "W_enc should start as the transpose of W_dec"),
])
def test_wrong_sae_classes_fail_naming_the_mistake(wrong, phrase):
    message = failure("SparseAutoencoder", wrong)
    assert phrase in message, message


def _loop(sae, data, steps, batch_size=1024, lr=1e-2, schedule="constant", seed=0, resample_every=None,
          resample=None, resample_inputs=8192, description="SAE", progress=True, project=True, normalise=True,
          resample_too=True, order="after", follow_schedule=True):
    optimizer = torch.optim.Adam(sae.parameters(), lr=lr)
    multiplier = lib.lr_schedule(schedule)
    generator = torch.Generator(device=sae.W_dec.device).manual_seed(seed)
    resample_generator = torch.Generator().manual_seed(seed + 1)
    losses = torch.zeros(steps)
    for step in range(steps):
        if follow_schedule:
            for group in optimizer.param_groups:
                group["lr"] = lr * multiplier(step, steps)
        if resample_too and resample_every and step and step % resample_every == 0:
            resample(sae, optimizer, data(resample_inputs, generator), resample_generator)
        loss = sae.loss(data(batch_size, generator))
        optimizer.zero_grad()
        loss.backward()
        if project:
            sae.W_dec.grad = project_decoder_grad(sae.W_dec.detach(), sae.W_dec.grad)
        if normalise and order == "before":
            with torch.no_grad():
                sae.W_dec.copy_(normalise_decoder(sae.W_dec))
        optimizer.step()
        if normalise and order == "after":
            with torch.no_grad():
                sae.W_dec.copy_(normalise_decoder(sae.W_dec))
        losses[step] = loss.detach()
    return losses


def _loop_without(**change):
    def loop(*args, **kwargs):
        return _loop(*args, **kwargs, **change)
    return loop


def test_training_loop_passes_and_stub_is_not_attempted(capsys):
    assert_reference_passes_and_stub_is_not_attempted("train_sparse_autoencoder", _loop, capsys)


@pytest.mark.parametrize("change, phrase", [
    (dict(project=False), "gradient is not projected"),
    (dict(normalise=False), "not renormalised after the step"),
    (dict(order="before"), "renormalised before optimizer.step()"),
    (dict(resample_too=False), "never resampled"),
    (dict(follow_schedule=False), "never follows the schedule"),
])
def test_wrong_training_loops_fail_naming_the_mistake(change, phrase):
    message = failure("train_sparse_autoencoder", _loop_without(**change))
    assert phrase in message, message


def test_a_loop_returning_a_list_fails():
    def as_list(*args, **kwargs):
        return list(_loop(*args, **kwargs))
    assert "return one tensor" in failure("train_sparse_autoencoder", as_list)


def _resampler(sae, optimizer, inputs, generator, encoder_scale=0.2, weights="squared", reset=True,
               subtract=True):
    with torch.no_grad():
        x_hat, f = sae(inputs)
        dead = (f == 0).all(dim=0)
        n_dead = int(dead.sum())
        if n_dead == 0:
            return 0
        loss = (inputs - x_hat).square().sum(dim=1)
        w = {"squared": loss.square(), "loss": loss, "uniform": torch.ones_like(loss)}[weights]
        chosen = torch.multinomial(w, n_dead, generator=generator)
        b_dec = sae.b_dec if subtract else torch.zeros_like(sae.b_dec)
        W_enc, b_enc, W_dec = resample_dead(sae.W_enc, sae.b_enc, sae.W_dec, b_dec, dead, inputs[chosen],
                                            encoder_scale)
        sae.W_enc.copy_(W_enc), sae.b_enc.copy_(b_enc), sae.W_dec.copy_(W_dec)
        if reset:
            index = dead.nonzero().squeeze(1)
            for p, dim in ((sae.W_enc, 1), (sae.b_enc, 0), (sae.W_dec, 0)):
                for s in optimizer.state[p].values():
                    if s.shape == p.shape:
                        s.index_fill_(dim, index, 0.0)
        return n_dead


def _resampler_with(**change):
    def resample(*args, **kwargs):
        return _resampler(*args, **kwargs, **change)
    return resample


def test_resampling_passes_and_stub_is_not_attempted(capsys):
    assert_reference_passes_and_stub_is_not_attempted("resample_latents", _resampler, capsys)


@pytest.mark.parametrize("change, phrase", [
    (dict(weights="uniform"), "drawn uniformly"),
    (dict(weights="loss"), "drawn ∝ the loss"),
    (dict(reset=False), "is not reset to 0"),
    (dict(subtract=False), "without subtracting b_dec"),
])
def test_wrong_resamplings_fail_naming_the_mistake(change, phrase):
    message = failure("resample_latents", _resampler_with(**change))
    assert phrase in message, message
