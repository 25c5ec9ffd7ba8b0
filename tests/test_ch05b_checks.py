"""Chapter 05b's intervention checks: the reference passes, the stub is "not attempted", and
plausible wrong implementations fail with a message that names the mistake."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from check_helpers import (
    assert_names_mistake,
    assert_passes,
    assert_reference_passes_and_stub_is_not_attempted,
    failure,
)

from course_utils import checks
from course_utils import interventions as lib

pytestmark = pytest.mark.usefixtures("one_thread")

NAMES = ("spliced_ce_losses", "steer_logits", "ablate_latent")


# --------------------------------------------------------------------------------------
# Right answers, written as a learner would
# --------------------------------------------------------------------------------------


def spliced_ce_losses(model, tokens, hook_name, reconstruct, *, bits=False, shift=1, bos=False,
                      mean="per_dimension", remove=True, lost=False):
    """A learner's capstone; the keyword arguments plant one mistake each."""
    point = model.get_submodule(hook_name)
    _, cache = model.run_with_cache(tokens, [hook_name])
    acts = cache[hook_name]
    mu = {"per_dimension": acts[:, 1:].mean(dim=(0, 1)), "scalar": acts[:, 1:].mean(),
          "with_bos": acts.mean(dim=(0, 1))}[mean]
    start = 0 if bos else 1

    def loss(fn=None):
        handle = None
        if fn is not None:
            handle = point.register_forward_hook(
                lambda m, i, out: torch.cat([out[:, :start], fn(out[:, start:])], dim=1))
        try:
            logits = model(tokens)
        finally:
            if handle is not None and remove:
                handle.remove()
        pred, target = (logits[:, :-1], tokens[:, 1:]) if shift else (logits, tokens)
        return float(F.cross_entropy(pred.reshape(-1, pred.shape[-1]), target.reshape(-1))) / (math.log(2) if bits else 1.0)  # bits: the log base 2

    with torch.no_grad():
        clean = loss()
        spliced = loss(lambda a: reconstruct(a.reshape(-1, a.shape[-1])).reshape(a.shape))
        zero = loss(lambda a: a * 0)
        mean_ = loss(lambda a: torch.zeros_like(a) + mu)
    rz, rm = (zero - spliced) / (zero - clean), (mean_ - spliced) / (mean_ - clean)
    if lost:
        rz, rm = 1 - rz, 1 - rm
    return dict(clean=clean, spliced=spliced, zero_ablated=zero, mean_ablated=mean_, recovered_zero=rz,
                recovered_mean=rm)


def steer_logits(model, tokens, hook_name, direction, alpha, *, start=1, scale=True, remove=True):
    def hook(module, inputs, output):
        return torch.cat([output[:, :start], output[:, start:] + (alpha if scale else 1.0) * direction], dim=1)

    handle = model.get_submodule(hook_name).register_forward_hook(hook)
    try:
        return model(tokens)
    finally:
        if remove:
            handle.remove()


def ablate_latent(x, sae, latent, *, keep_error=True, use_pre=False):
    f = sae.encode(x)
    if not keep_error:
        f = f.clone()
        f[:, latent] = 0
        return sae.decode(f)
    a = sae.pre_activations(x)[:, latent] if use_pre else f[:, latent]
    return x - a[:, None] * sae.W_dec[latent]


# --------------------------------------------------------------------------------------
# The references pass, the stubs are not attempted, the learner's versions pass
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("name, reference", [("spliced_ce_losses", lib.spliced_ce_losses),
                                             ("steer_logits", lib.steer_logits),
                                             ("ablate_latent", lib.ablate_latent)])
def test_reference_passes_and_stub_is_not_attempted(name, reference, capsys):
    assert_reference_passes_and_stub_is_not_attempted(name, reference, capsys)


def test_registered_with_hints_and_docstrings():
    for name in NAMES:
        check = getattr(checks, f"check_{name}")
        assert checks.EXERCISES[name] is check and f"check_{name}" in checks.__all__
        assert len(check.exercise.hints) >= 2 and len(check.exercise.seeds) >= 6
        assert check.__doc__ and name in check.__doc__ and check.exercise.reference is not None


def test_learner_versions_pass():
    assert_passes("spliced_ce_losses", spliced_ce_losses)
    assert_passes("steer_logits", steer_logits)
    assert_passes("ablate_latent", ablate_latent)


def test_checks_are_fast():
    import time
    for name, learner in (("spliced_ce_losses", spliced_ce_losses), ("steer_logits", steer_logits),
                          ("ablate_latent", ablate_latent)):
        start = time.perf_counter()
        assert checks.evaluate(name, learner).passed
        assert time.perf_counter() - start < 5


# --------------------------------------------------------------------------------------
# Plausible mistakes fail, naming the mistake
# --------------------------------------------------------------------------------------


def test_spliced_ce_losses_names_its_mistakes():
    def wrong(**mistake):
        return lambda *args: spliced_ce_losses(*args, **mistake)

    assert "hook was left" in failure("spliced_ce_losses", wrong(remove=False))
    assert_names_mistake_in("spliced_ce_losses", wrong(bits=True), "in bits")
    assert_names_mistake_in("spliced_ce_losses", wrong(shift=0), "NEXT token")
    assert_names_mistake_in("spliced_ce_losses", wrong(bos=True), "<bos> position is replaced")
    assert_names_mistake_in("spliced_ce_losses", wrong(mean="scalar"), "mean over the whole tensor")
    assert_names_mistake_in("spliced_ce_losses", wrong(mean="with_bos"), "includes the <bos>")
    assert_names_mistake_in("spliced_ce_losses", wrong(lost=True), "LOST")


def assert_names_mistake_in(name, learner, words):
    message = failure(name, learner)
    assert "known mistake" in message and words in message, message


def test_spliced_ce_losses_rejects_wrong_types():
    assert "expected a dict" in failure("spliced_ce_losses", lambda *args: 2.3)
    assert "lacks the key" in failure("spliced_ce_losses", lambda *args: {"clean": 2.3})


def test_steer_logits_names_its_mistakes():
    def wrong(**mistake):
        return lambda *args: steer_logits(*args, **mistake)

    assert "hook was left" in failure("steer_logits", wrong(remove=False))
    assert_names_mistake_in("steer_logits", wrong(start=0), "at <bos>")
    assert_names_mistake_in("steer_logits", wrong(scale=False), "without its factor alpha")
    assert_names_mistake_in("steer_logits", lambda m, t, h, d, a: steer_logits(m, t, h, -d, a), "subtracted")
    assert_names_mistake_in("steer_logits", lambda m, t, h, d, a: m(t), "changed nothing")


def test_ablate_latent_names_its_mistakes():
    def wrong(**mistake):
        return lambda *args: ablate_latent(*args, **mistake)

    assert_names_mistake_in("ablate_latent", wrong(keep_error=False), "reconstruction with the latent zeroed")
    assert_names_mistake_in("ablate_latent", wrong(use_pre=True), "pre-activation")
    assert_names_mistake_in("ablate_latent", lambda x, sae, i: x - sae.W_dec[i], "whether or not the latent fires")
    assert_names_mistake_in("ablate_latent", lambda x, sae, i: x - sae.encode(x)[:, i, None] * sae.W_enc[:, i],
                            "column of the encoder")


def test_ablate_latent_rejects_in_place_changes():
    def in_place(x, sae, latent):
        x -= sae.encode(x)[:, latent, None] * sae.W_dec[latent]
        return x

    assert "in place" in failure("ablate_latent", in_place)


def test_a_raising_or_nan_learner_fails_without_crashing():
    def raises(*args):
        raise SystemExit(1)

    for name in NAMES:
        assert checks.evaluate(name, raises).status == checks.FAILED
    assert "NaN" in failure("ablate_latent", lambda x, sae, i: x * float("nan"))
