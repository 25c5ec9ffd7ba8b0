"""Checks for chapter 05b's interventions on the language model: splicing an SAE's
reconstruction into the forward pass with a hook (the loss with it, against zero- and
mean-ablation), steering with a latent's decoder direction, and ablating one latent.

Each case builds a small random ``lm.GPT`` (its weights scaled up so that its predictions are
far from uniform, and so that the baselines differ), and compares the learner's function with
the reference in ``course_utils.interventions``.  ``_*_variant`` functions compute what common
mistakes give, so that a failure can name them.  After each call the check also looks for a
forward hook left on the model: a hook that is not removed changes every later call.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from .. import interventions as ref
from .. import lm
from .. import sae as saelib
from ._framework import Case, CheckFailed, call_pure, exercise, expect_close, expect_output
from ._helpers import _dict_number, _expect_entry, _generator, _randint

_HOOKS = ("blocks.0.hook_resid_post", "blocks.0.hook_resid_mid", "blocks.1.hook_resid_pre", "blocks.1.hook_resid_post")


def _small_model(gen: torch.Generator, seed: int) -> tuple[lm.GPT, Tensor, str]:
    """A 2-layer GPT with a vocabulary of 11–19 tokens, d_model 8 or 16, its weights scaled up,
    and (batch, T) tokens with token 0 (``<bos>``) first; and one of four hook names."""
    vocab_size, d_model = _randint(gen, 11, 19), (8, 16)[seed % 2]
    cfg = lm.GPTConfig(vocab_size=vocab_size, n_ctx=12, d_model=d_model, n_layers=2, n_heads=2)
    model = lm.GPT(cfg, seed=int(torch.randint(0, 2**31 - 1, (1,), generator=gen)), device="cpu")
    with torch.no_grad():
        model.wte.weight.mul_(40.0)
        model.wpe.weight.mul_(20.0)
        for block in model.blocks:
            for layer in (block.attn.c_attn, block.attn.c_proj, block.mlp.c_fc, block.mlp.c_proj):
                layer.weight.mul_(15.0)
    model.eval()
    batch, T = _randint(gen, 2, 5), _randint(gen, 6, 12)
    tokens = torch.randint(1, vocab_size, (batch, T), generator=gen)
    tokens[:, 0] = 0
    return model, tokens, _HOOKS[seed % len(_HOOKS)]


def _hooks_left(model) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules()) + sum(
        point.fn is not None for point in model._hook_points.values())


def _expect_hooks_removed(model, tokens: Tensor, clean_logits: Tensor) -> None:
    """Fail (and clean up) if the learner's call left a hook on the model."""
    left = _hooks_left(model)
    with torch.no_grad():
        after = model(tokens)
    for m in model.modules():
        m._forward_hooks.clear()
        m._forward_pre_hooks.clear()
    model._set_hooks({})
    if left or not torch.allclose(after, clean_logits, atol=1e-5, rtol=1e-5):
        raise CheckFailed("the model's output is still changed after your function returned: a hook was left "
                          "on it. Keep the handle that register_forward_hook returns and call handle.remove() "
                          "in a `finally:` block")


# --------------------------------------------------------------------------------------
# spliced_ce_losses: the capstone
# --------------------------------------------------------------------------------------


class _NoisyReconstruction:
    """A stand-in for an SAE's forward pass: a ↦ a (I + ε A) + c, (n, d) -> (n, d); a
    module-level class so that the grader can pickle it."""

    def __init__(self, A: Tensor, c: Tensor):
        self.A, self.c = A, c

    def __call__(self, a: Tensor) -> Tensor:
        if a.dim() != 2 or a.shape[1] != self.A.shape[0]:
            raise ValueError(f"reconstruct takes activations (n, d={self.A.shape[0]}), got shape {tuple(a.shape)}")
        return a + a @ self.A + self.c


def _ce_case(seed: int) -> Case:
    gen = _generator(seed)
    model, tokens, hook = _small_model(gen, seed)
    d = model.cfg.d_model
    reconstruct = _NoisyReconstruction(torch.randn(d, d, generator=gen) * 0.3 / math.sqrt(d),
                                       torch.randn(d, generator=gen) * 0.5)
    return Case(f"vocab {model.cfg.vocab_size}, d_model {d}, tokens {tuple(tokens.shape)}, hook {hook}",
                model=model, tokens=tokens, hook=hook, reconstruct=reconstruct)


_CE_KEYS = ("clean", "spliced", "zero_ablated", "mean_ablated", "recovered_zero", "recovered_mean")


@torch.no_grad()
def _ce_variant(case: Case, log2: bool = False, shift: int = 1, splice_bos: bool = False, mean: str = "per_dimension",
                sum_: bool = False) -> dict:
    """What spliced_ce_losses gives under a common mistake."""
    model, tokens, hook = case.model, case.tokens, case.hook
    _, cache = model.run_with_cache(tokens, [hook])
    acts = cache[hook]
    start = 0 if splice_bos else 1
    if mean == "per_dimension":
        mu = acts[:, 1:].mean(dim=(0, 1))
    elif mean == "scalar":
        mu = acts[:, 1:].mean().expand(acts.shape[-1])
    elif mean == "with_bos":
        mu = acts.mean(dim=(0, 1))
    else:  # "per_token": the mean over dimensions, a different value at each token
        mu = None

    def replace(fn):
        def hook_fn(module, inputs, output):
            return torch.cat([output[:, :start], fn(output[:, start:])], dim=1)
        return hook_fn

    def loss(fn=None):
        handle = model.get_submodule(hook).register_forward_hook(replace(fn)) if fn is not None else None
        try:
            logits = model(tokens)
        finally:
            if handle is not None:
                handle.remove()
        if shift == 1:
            pred, target = logits[:, :-1], tokens[:, 1:]
        elif shift == 0:
            pred, target = logits, tokens
        else:  # the first prediction dropped
            pred, target = logits[:, 1:-1], tokens[:, 2:]
        value = F.cross_entropy(pred.reshape(-1, pred.shape[-1]), target.reshape(-1), reduction="sum" if sum_ else "mean")
        return float(value) / (math.log(2) if log2 else 1.0)

    def mean_fn(a):
        return mu.expand_as(a) if mu is not None else a.mean(dim=-1, keepdim=True).expand_as(a)

    out = dict(clean=loss(), spliced=loss(lambda a: case.reconstruct(a.reshape(-1, a.shape[-1])).reshape(a.shape)),
               zero_ablated=loss(torch.zeros_like), mean_ablated=loss(mean_fn))
    out["recovered_zero"] = (out["zero_ablated"] - out["spliced"]) / (out["zero_ablated"] - out["clean"])
    out["recovered_mean"] = (out["mean_ablated"] - out["spliced"]) / (out["mean_ablated"] - out["clean"])
    return out


def _ce_mistakes(case: Case) -> list[tuple[str, dict]]:
    right = _ce_variant(case)
    lost = dict(right)
    lost["recovered_zero"], lost["recovered_mean"] = 1 - right["recovered_zero"], 1 - right["recovered_mean"]
    return [
        ("the losses are in bits (log base 2); measure them in nats, with the natural log as "
         "F.cross_entropy does", _ce_variant(case, log2=True)),
        ("the logits at position t are compared with the token at t; they predict the NEXT token: "
         "logits[:, :-1] against tokens[:, 1:]", _ce_variant(case, shift=0)),
        ("the first prediction (of the token after <bos>) is left out; average over every predicted "
         "token, logits[:, :-1] against tokens[:, 1:]", _ce_variant(case, shift=2)),
        ("the loss is summed over the tokens; average it (nats per token)", _ce_variant(case, sum_=True)),
        ("the <bos> position is replaced too; keep position 0's clean activation and replace "
         "positions 1 … T−1", _ce_variant(case, splice_bos=True)),
        ("the mean-ablation baseline uses one number, the mean over the whole tensor; take the mean "
         "of each dimension over the batch and positions, a (d_model,) vector", _ce_variant(case, mean="scalar")),
        ("the mean-ablation baseline's mean includes the <bos> position; average over positions "
         "1 … T−1 only, the positions you replace", _ce_variant(case, mean="with_bos")),
        ("the mean-ablation baseline averages each token's activation over its dimensions; average "
         "each dimension over the batch and positions", _ce_variant(case, mean="per_token")),
        ("the fractions are the share of the loss LOST; recovered = (baseline − spliced) / "
         "(baseline − clean)", lost),
    ]


@exercise(
    "spliced_ce_losses",
    cases=_ce_case,
    seeds=range(6),
    hints=[
        "Write one helper loss(fn) that registers a forward hook on model.get_submodule(hook_name), "
        "runs logits = model(tokens), removes the hook (handle.remove() in a finally: block) and returns "
        "F.cross_entropy(logits[:, :-1].reshape(-1, vocab), tokens[:, 1:].reshape(-1)).",
        "A forward hook is hook(module, inputs, output) and returns the new output: torch.cat([output[:, :1], "
        "new_rest], dim=1), where new_rest replaces output[:, 1:] (batch, T−1, d). reconstruct takes (n, d): "
        "reshape(-1, d) before and reshape back after.",
        "The mean baseline: run the clean model once with model.run_with_cache(tokens, [hook_name]) and "
        "take cache[hook_name][:, 1:].mean(dim=(0, 1)), one value per dimension.",
    ],
    reference=ref.spliced_ce_losses,
)
def check_spliced_ce_losses(learner, case: Case) -> None:
    """Check your ``spliced_ce_losses(model, tokens, hook_name, reconstruct)`` -> dict(clean, spliced,
    zero_ablated, mean_ablated, recovered_zero, recovered_mean): the next-token cross-entropy in
    nats per predicted token, clean and with the activation at ``hook_name`` (positions 1 … T−1)
    replaced by ``reconstruct``, by zeros and by its per-dimension mean; the fraction of the loss
    recovered against each baseline."""
    with torch.no_grad():
        clean_logits = case.model(case.tokens)
    try:
        out = learner(case.model, case.tokens, case.hook, case.reconstruct)
    finally:
        _expect_hooks_removed(case.model, case.tokens, clean_logits)
    if not isinstance(out, dict):
        kind = "None (did you forget to `return`?)" if out is None else type(out).__name__
        raise CheckFailed(f"your function returned {kind}; expected a dict with the keys {', '.join(_CE_KEYS)}")
    missing = [k for k in _CE_KEYS if k not in out]
    if missing:
        raise CheckFailed(f"your dict lacks the key(s) {', '.join(missing)}")
    got = {k: _dict_number(out, k) for k in _CE_KEYS}
    right = _ce_variant(case)
    for key in _CE_KEYS:
        _expect_entry(key, got[key], [right[key]], {description: wrong[key] for description, wrong in _ce_mistakes(case)})


# --------------------------------------------------------------------------------------
# steer_logits
# --------------------------------------------------------------------------------------


def _steer_case(seed: int) -> Case:
    gen = _generator(seed)
    model, tokens, hook = _small_model(gen, seed)
    direction = torch.randn(model.cfg.d_model, generator=gen)
    direction = direction / direction.norm()
    alpha = (3.0, -2.0, 0.5, 8.0, 1.0, -5.0)[seed % 6]
    return Case(f"d_model {model.cfg.d_model}, tokens {tuple(tokens.shape)}, hook {hook}, alpha {alpha:g}",
                model=model, tokens=tokens, hook=hook, direction=direction, alpha=alpha)


@torch.no_grad()
def _steered(case: Case, vector: Tensor, start: int = 1, last_only: bool = False) -> Tensor:
    def hook_fn(module, inputs, output):
        out = output.clone()
        if last_only:
            out[:, -1] += vector
        else:
            out[:, start:] += vector
        return out

    handle = case.model.get_submodule(case.hook).register_forward_hook(hook_fn)
    try:
        return case.model(case.tokens)
    finally:
        handle.remove()


@exercise(
    "steer_logits",
    cases=_steer_case,
    seeds=range(6),
    hints=[
        "A forward hook on model.get_submodule(hook_name) that returns the output with alpha * direction "
        "added at positions 1 … T−1 (position 0, <bos>, stays clean); run the model; remove the hook in a "
        "finally: block.",
        "torch.cat([output[:, :1], output[:, 1:] + alpha * direction], dim=1) adds the vector to every "
        "position but the first.",
    ],
    reference=ref.steer_logits,
)
def check_steer_logits(learner, case: Case) -> None:
    """Check your ``steer_logits(model, tokens, hook_name, direction, alpha)`` -> logits (batch, T,
    vocab) with ``alpha * direction`` added to the activation at ``hook_name`` at every position
    but the first (``<bos>``)."""
    with torch.no_grad():
        clean_logits = case.model(case.tokens)
    try:
        out = call_pure(learner, {"model": case.model, "tokens": case.tokens, "hook_name": case.hook,
                                  "direction": case.direction, "alpha": case.alpha})
    finally:
        _expect_hooks_removed(case.model, case.tokens, clean_logits)
    expected = _steered(case, case.alpha * case.direction)
    out = expect_output(out, expected, "(batch, T, vocab)")
    expect_close(out, expected, rtol=1e-4, atol=1e-4, suspects={
        "the direction is added at <bos> (position 0) too; leave position 0 clean":
            _steered(case, case.alpha * case.direction, start=0),
        "the direction is added without its factor alpha": _steered(case, case.direction),
        "the direction is added at the last position only; add it at every position but the first":
            _steered(case, case.alpha * case.direction, last_only=True),
        "the direction is subtracted; steering adds alpha * direction": _steered(case, -case.alpha * case.direction),
        "these are the clean logits: the hook changed nothing (does it return the new activation?)": clean_logits,
    })


# --------------------------------------------------------------------------------------
# ablate_latent
# --------------------------------------------------------------------------------------


def _ablate_case(seed: int) -> Case:
    gen = _generator(seed)
    d, n_latents, k = (8, 16, 12, 8)[seed % 4], (24, 16, 40, 8)[seed % 4], (3, 2, 4, 8)[seed % 4]
    sae = saelib.TopKSAE(d, n_latents, k=k, device="cpu", generator=gen)
    with torch.no_grad():
        sae.b_enc.copy_(torch.randn(n_latents, generator=gen) * 0.3)
        sae.b_dec.copy_(torch.randn(d, generator=gen) * 0.3)
        sae.W_enc.add_(torch.randn(d, n_latents, generator=gen) * 0.2)
    n = _randint(gen, 5, 30)
    x = torch.randn(n, d, generator=gen) * 2
    with torch.no_grad():
        f = sae.encode(x)
    firing = torch.nonzero(f.gt(0).any(dim=0)).flatten()
    latent = int(firing[seed % len(firing)])
    return Case(f"d {d}, {n_latents} latents, k {k}, {n} activations, latent {latent}", sae=sae, x=x, latent=latent)


@exercise(
    "ablate_latent",
    cases=_ablate_case,
    seeds=range(8),
    hints=[
        "The latent's contribution to the reconstruction is f_latent(x) · W_dec[latent]: its activation "
        "(a number per row of x) times its decoder row. Subtract it from x.",
        "f = sae.encode(x) is (n, n_latents); f[:, latent, None] * sae.W_dec[latent] is (n, d).",
    ],
    reference=ref.ablate_latent,
)
def check_ablate_latent(learner, case: Case) -> None:
    """Check your ``ablate_latent(x, sae, latent)`` -> x (n, d) with the latent's contribution
    f_latent(x) · W_dec[latent] subtracted (f = sae.encode(x)); the SAE's error is kept."""
    with torch.no_grad():
        out = call_pure(learner, {"x": case.x, "sae": case.sae, "latent": case.latent})
        expected = ref.ablate_latent(case.x, case.sae, case.latent)
        out = expect_output(out, expected, "(n, d)")
        sae, x, i = case.sae, case.x, case.latent
        f = sae.encode(x)
        zeroed = f.clone()
        zeroed[:, i] = 0
        expect_close(out, expected, suspects={
            "this is the SAE's reconstruction with the latent zeroed: it drops what the SAE does not "
            "reconstruct (x − x̂); subtract the latent's part from x instead": sae.decode(zeroed),
            "the decoder row is subtracted at every row of x, whether or not the latent fires; scale it by "
            "the latent's activation": x - sae.W_dec[i],
            "this uses the pre-activation (before TopK and the ReLU); use the latent's activation, "
            "sae.encode(x)": x - sae.pre_activations(x)[:, i, None] * sae.W_dec[i],
            "this uses a column of the encoder; the latent's direction in the activation space is its decoder "
            "row, sae.W_dec[latent]": x - f[:, i, None] * sae.W_enc[:, i],
            "this also subtracts b_dec; remove only the latent's own contribution":
                x - f[:, i, None] * sae.W_dec[i] - sae.b_dec,
        })
