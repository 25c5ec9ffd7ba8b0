"""Interventions on the course's language model with an SAE (chapter 05b).

Splicing, steering and ablation all change the residual stream at one hook point during the
forward pass.  Here that is done with PyTorch's own forward hooks, the mechanism
TransformerLens and SAELens use underneath: ``module.register_forward_hook(fn)`` makes the
module's output ``fn(module, inputs, output)`` when that returns a tensor, and the handle it
returns must be ``.remove()``-d afterwards, or every later call of the model is still
changed.  Position 0 (``<bos>``) keeps its clean activation everywhere in this module: the
SAEs are trained without it (its activation is the same in every row).

- ``run_with_forward_hook(model, tokens, hook_name, fn)``: logits with the activation at
  ``hook_name`` (positions 1 …) replaced by ``fn(activation)``.
- ``spliced_ce_losses`` (the chapter's capstone, reference): next-token cross-entropy clean,
  with a reconstruction spliced in, with the activation zeroed and with it replaced by its
  mean, and the fraction of the loss recovered against either baseline.
- ``steer_logits`` (reference): logits with α · direction added to the residual stream.
- ``ablate_latent`` (reference): an activation with one SAE latent's contribution removed.
- ``agreement_margin``: how much the model prefers the plural form of the next verb over the
  singular one, where the next token is a verb that agrees with its subject.
- ``opener_test``: a latent's activation on the same tokens with and without the bracket or
  quote that opened their context (a token detector keeps firing, a context feature stops).
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from . import language

__all__ = ["run_with_forward_hook", "spliced_ce_losses", "steer_logits", "ablate_latent",
           "agreement_margin", "opener_test"]


def run_with_forward_hook(model, tokens: Tensor, hook_name: str, fn: Callable[[Tensor], Tensor]) -> Tensor:
    """Logits (batch, T, vocab) of ``model(tokens)`` with the activation at ``hook_name``
    replaced, at positions 1 … T−1, by ``fn(activation[:, 1:])`` ((batch, T−1, d) -> the same
    shape).  The forward hook is removed afterwards, even if ``fn`` raises."""
    def hook(module, inputs, output):
        return torch.cat([output[:, :1], fn(output[:, 1:]).to(output.dtype)], dim=1)

    handle = model.get_submodule(hook_name).register_forward_hook(hook)
    try:
        return model(tokens)
    finally:
        handle.remove()


@torch.no_grad()
def spliced_ce_losses(model, tokens: Tensor, hook_name: str, reconstruct: Callable[[Tensor], Tensor]) -> dict:
    """The model's next-token loss with ``reconstruct`` spliced in at ``hook_name``, and two baselines.

    tokens: (batch, T), ``<bos>`` first.  The loss is the cross-entropy in nats of the logits
    at positions 0 … T−2 against the tokens at 1 … T−1, averaged over every predicted token.
    ``reconstruct`` maps activations (n, d) to (n, d) (an SAE's forward pass); it replaces the
    activation at positions 1 … T−1, as do the two baselines: zeros (``zero_ablated``) and
    the activation's mean over the batch and positions 1 … T−1, per dimension, (d,)
    (``mean_ablated``).  Returns dict(clean, spliced, zero_ablated, mean_ablated,
    recovered_zero = (zero − spliced) / (zero − clean), recovered_mean = (mean − spliced) /
    (mean − clean)).
    """
    def loss(fn=None):
        logits = model(tokens) if fn is None else run_with_forward_hook(model, tokens, hook_name, fn)
        return float(F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), tokens[:, 1:].reshape(-1)))

    _, cache = model.run_with_cache(tokens, [hook_name])
    mean = cache[hook_name][:, 1:].mean(dim=(0, 1))                              # (d,)
    out = dict(clean=loss(),
               spliced=loss(lambda a: reconstruct(a.reshape(-1, a.shape[-1])).reshape(a.shape)),
               zero_ablated=loss(torch.zeros_like),
               mean_ablated=loss(lambda a: mean.expand_as(a)))
    out["recovered_zero"] = (out["zero_ablated"] - out["spliced"]) / (out["zero_ablated"] - out["clean"])
    out["recovered_mean"] = (out["mean_ablated"] - out["spliced"]) / (out["mean_ablated"] - out["clean"])
    return out


@torch.no_grad()
def steer_logits(model, tokens: Tensor, hook_name: str, direction: Tensor, alpha: float) -> Tensor:
    """Logits (batch, T, vocab) with ``alpha * direction`` ((d,)) added to the activation at
    ``hook_name`` at every position but the first (``<bos>``)."""
    return run_with_forward_hook(model, tokens, hook_name, lambda a: a + alpha * direction)


def ablate_latent(x: Tensor, sae, latent: int) -> Tensor:
    """x (n, d) with latent ``latent``'s contribution removed: x − f_latent(x) · W_dec[latent],
    where f = ``sae.encode(x)`` (n, n_latents).  What the SAE does not reconstruct (its error
    x − x̂) is kept: only the one latent's part of the activation changes."""
    return x - sae.encode(x)[:, latent, None] * sae.W_dec[latent]


def _verb_forms(vocab) -> dict[int, tuple[int, int]]:
    """Token id of every agreeing verb form -> (its singular id, its plural id)."""
    forms = {}
    for pairs in (language.VERBS, language.SPEECH_VERBS, language.AUXILIARIES):
        for singular, plural in pairs:
            ids = (vocab.index[singular], vocab.index[plural])
            forms[ids[0]] = forms[ids[1]] = ids
    return forms


def agreement_margin(logits: Tensor, tokens: Tensor, vocab) -> tuple[Tensor, Tensor, Tensor]:
    """Where the next token is a verb that agrees with its subject, how much the model prefers
    the plural form: log p(plural form) − log p(singular form) of that verb, in nats.

    logits (batch, T, vocab) of ``tokens`` (batch, T).  Returns (margin, plural, singular),
    each (batch, T−1) for the predictions at positions 0 … T−2: ``plural`` / ``singular``
    mark the positions whose next token is a plural / singular verb form (the margin is
    meaningful only there).
    """
    forms = _verb_forms(vocab)
    following = tokens[:, 1:].cpu()
    pair = torch.tensor([[forms.get(t, (0, 0)) for t in row] for row in following.tolist()], dtype=torch.long)
    is_verb = torch.tensor([[t in forms for t in row] for row in following.tolist()], dtype=torch.bool)
    plural = is_verb & (following == pair[..., 1])
    logp = logits[:, :-1].float().log_softmax(dim=-1).cpu()
    margin = logp.gather(-1, pair[..., 1:]).squeeze(-1) - logp.gather(-1, pair[..., :1]).squeeze(-1)
    return margin, plural, is_verb & ~plural


OPENERS = {"in_parens": "(", "in_quotes": '"', "in_list": "["}
"""The token that opens each bracketed context concept."""


@torch.no_grad()
def opener_test(model, tokens: Tensor, hook_name: str, encode: Callable[[Tensor], Tensor], latent: int,
                concept_labels: Tensor, opener: int, max_examples: int = 200) -> dict:
    """Does ``latent`` detect the context or just a token?  Delete the opener and look again.

    For up to ``max_examples`` positions where ``concept_labels`` (batch, T) holds and the latent
    fires, delete the last ``opener`` token before the position (e.g. the "(" of a
    parenthesis; the row is padded at the end), so that the same tokens are now out of the
    context, and read the latent at the same token again.  ``encode`` maps activations (n, d)
    to latent activations (n, n_latents).  Returns dict(in_context (n,), without_opener (n,)
    the latent's activations, tokens (n,) the token ids, n).
    """
    _, cache = model.run_with_cache(tokens, [hook_name])
    acts = cache[hook_name]
    f = encode(acts.reshape(-1, acts.shape[-1]))[:, latent].reshape(acts.shape[:2]).cpu()
    rows, positions = torch.nonzero(concept_labels.cpu() & (f > 0), as_tuple=True)
    rows, positions = rows[:max_examples], positions[:max_examples]
    edited, where = [], []
    for r, p in zip(rows.tolist(), positions.tolist()):
        row = tokens[r].tolist()
        openers = [i for i in range(p) if row[i] == opener]
        if not openers:
            continue
        i = openers[-1]
        edited.append(row[:i] + row[i + 1:] + [row[-1]])
        where.append((r, p))
    if not edited:
        return dict(in_context=torch.zeros(0), without_opener=torch.zeros(0), tokens=torch.zeros(0, dtype=torch.long), n=0)
    edited_tokens = torch.tensor(edited, dtype=tokens.dtype, device=tokens.device)
    _, cache = model.run_with_cache(edited_tokens, [hook_name])
    index = torch.arange(len(where))
    at = torch.tensor([p - 1 for _, p in where])
    after = encode(cache[hook_name][index, at])[:, latent].cpu()
    before = torch.stack([f[r, p] for r, p in where])
    ids = torch.tensor([int(tokens[r, p]) for r, p in where])
    return dict(in_context=before, without_opener=after, tokens=ids, n=len(where))
