"""ROME on a transformer (chapter 06): the closed-form edit of ``course_utils.editing`` applied
to the fact models of ``course_utils.facts`` (small GPTs that store made-up facts), with
CounterFact-style metrics, lifelong editing on the model's real keys (Hu et al. 2024), and
the mitigations that hold earlier edits fixed (AlphaEdit, Fang et al. 2024; MEMIT, Meng et al.
2023).

The memory is the down-projection of one block's MLP: the key k is the MLP's neurons after
GELU (``blocks.{layer}.mlp.hook_post``) and the value is the MLP's output v = W k + b
(``facts.mlp_output_weight`` is W, (d_model, d_mlp), column convention).

An edit (subject, relation) -> new answer, Meng et al. 2022:

  1. C = E[k kᵀ] over the layer's keys on the training text      (``estimate_key_covariance``)
  2. k* = the key at the subject's last token, averaged over the fact's prompts and optional
     short prefixes (ROME's context templates)                    (``rome_key``)
  3. v* = W k* + b + δ, δ optimised (Adam) so that adding it to the MLP output at the subject's
     last token makes the model say the new answer on the fact's prompts, while a KL term
     keeps the subject's other predictions and a weight decay and a norm clamp keep δ small
                                        (``rome_value``; its batch: ``value_batch``, ``run_with_delta``;
                                         v* alone: ``optimise_value``)
  4. W ← W + ΔW with ΔW = ``editing.rome_update``(W, C, k*, v* − b)   (``rome_edit_model``)

The r-ROME correction (Gupta et al. 2024, "Rebuilding ROME"): the k* of step 4 must be the
very k* that step 3 built v* from -- ROME's original code used the prefix-averaged key in the
update but the unprefixed key to form v*, which occasionally blows the model up.  Here v* is
W k* + b + δ with the same averaged k*, so ΔW k* = δ exactly.

Edits are described by ``EditRequest`` (``fact_request``, ``lifelong_requests``), scored by
``edit_metrics`` (``counterfact_scores``), undone by ``undo_edit``, and applied in a row by
``lifelong_edit`` (``method``: ROME, ROME preserving the earlier keys, exactly orthogonal
updates ``constrained_rome_update``, AlphaEdit ``alphaedit_update`` with
``null_space_projection``, MEMIT ``memit_update``).

Linear algebra is in float64, as in ``course_utils.editing``; the model runs in its own dtype.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from . import facts as _facts
from .editing import (_f64, _matrix, _nonnegative, _square, _vector, interference_coefficients, p_statistics,
                      rome_update)
from .language import BOS
from .training import smoke_cap


def _key_hook(layer: int) -> str:
    return f"blocks.{layer}.mlp.hook_post"


def _out_hook(layer: int) -> str:
    return f"blocks.{layer}.hook_mlp_out"


def _check_layer(model, layer) -> int:
    if int(layer) != layer or not 0 <= layer < model.cfg.n_layers:
        raise ValueError(f"layer must be an integer in [0, {model.cfg.n_layers}), got {layer!r}")
    return int(layer)


def _pad(rows: list[list[int]]) -> tuple[Tensor, Tensor]:
    """Right-padded (n, T) tokens (padding repeats the row's last token; causal attention keeps
    it from reaching real positions) and the (n,) index of each row's last real token."""
    lengths = torch.tensor([len(r) for r in rows])
    T = int(lengths.max())
    return torch.tensor([r + [r[-1]] * (T - len(r)) for r in rows], dtype=torch.long), lengths - 1


@torch.no_grad()
def estimate_key_covariance(model, layer: int, token_rows, ridge: float = 1e-4, batch_size: int = 1024,
                            pad_id: int | None = None, mask: Tensor | None = None) -> Tensor:
    """C = E[k kᵀ] + ridge · (tr C / d_mlp) · I (d_mlp, d_mlp), float64: the uncentred second
    moment of block ``layer``'s MLP keys (post-GELU neurons) over every position of ``token_rows``
    ((n, T) token ids, e.g. ``FactSet.training_tokens()``).  ``pad_id``: positions holding it whose
    previous token is also ``pad_id`` (a row's padding) are left out, and so are positions where
    ``mask`` ((n, T) bool, optional) is False.  The ridge is relative to
    the mean eigenvalue, so that C is invertible whatever the scale of the keys."""
    layer = _check_layer(model, layer)
    ridge = _nonnegative("ridge", ridge)
    tokens = torch.as_tensor(token_rows, dtype=torch.long)
    if tokens.dim() != 2:
        raise ValueError(f"token_rows must be (n, T) token ids, got shape {tuple(tokens.shape)}")
    d = model.cfg.d_mlp
    total, count = torch.zeros(d, d, dtype=torch.float64), 0
    for i in range(0, len(tokens), batch_size):
        chunk = tokens[i:i + batch_size]
        _, cache = model.run_with_cache(chunk, [_key_hook(layer)])
        K = cache[_key_hook(layer)].double().cpu()
        keep = torch.ones(chunk.shape, dtype=torch.bool)
        if pad_id is not None:
            keep[:, 1:] = ~((chunk[:, 1:] == pad_id) & (chunk[:, :-1] == pad_id))
        if mask is not None:
            keep &= torch.as_tensor(mask[i:i + batch_size], dtype=torch.bool)
        K = K[keep]
        total += K.T @ K
        count += len(K)
    C = total / count
    return C + ridge * float(C.diagonal().mean()) * torch.eye(d, dtype=torch.float64)


# --------------------------------------------------------------------------------------
# Edit requests and ROME's context templates
# --------------------------------------------------------------------------------------


@dataclass
class EditRequest:
    """One edit: make the model answer ``target`` (a token id) to the fact's prompts.

    prompt, subject_last: the edited prompt (token ids, <bos> first) and its subject's last
    position; old: the answer the model was trained on; rewrite: (tokens, subject_last) pairs
    the value is optimised on (the fact's training templates, ``prompt`` first); paraphrases:
    the held-out template(s) of the same fact, for generalisation; essence: prompts about the
    same subject whose next-token distribution the KL term keeps (the biography opener
    "<bos> subject :" and the subject's other relations); neighbours: a ``facts.FactPrompts``
    of other subjects on the same relation, for specificity; subject, relation: indices into
    the ``FactSet``."""

    prompt: list[int]
    subject_last: int
    target: int
    old: int
    rewrite: list[tuple[list[int], int]]
    paraphrases: list[tuple[list[int], int]]
    essence: list[tuple[list[int], int]]
    neighbours: object = None
    subject: int = -1
    relation: int = -1


def fact_request(fact_set, subject: int, relation: int, target: int | str, n_neighbours: int = 10,
                 seed: int = 0) -> EditRequest:
    """The ``EditRequest`` that changes fact (subject, relation) of ``fact_set`` (a
    ``facts.FactSet``) to ``target`` (a word of the relation's answers, or its index there)."""
    rel = _facts.RELATIONS[relation]
    word = rel.answers[target] if isinstance(target, int) else target
    if word not in rel.answers:
        raise ValueError(f"target {word!r} is not an answer of relation {rel.name!r}")
    vocab = fact_set.vocab
    held = int(fact_set.heldout_template[subject, relation])
    rewrite = [fact_set.render(subject, relation, t)[::2] for t in fact_set.training_templates(subject, relation)]
    paraphrases = [fact_set.render(subject, relation, held)[::2]]                    # (ids, last)
    name = list(fact_set.subjects[subject])
    opener = [vocab.index[BOS]] + [vocab.index[w] for w in name]
    essence = [(opener + [vocab.index[":"]], len(opener) - 1)]
    for r in range(len(_facts.RELATIONS)):
        if r != relation:
            essence.append(fact_set.render(subject, r, fact_set.training_templates(subject, r)[0])[::2])
    return EditRequest(prompt=rewrite[0][0], subject_last=rewrite[0][1], target=vocab.index[word],
                       old=vocab.index[fact_set.answer_word(subject, relation)], rewrite=rewrite,
                       paraphrases=paraphrases, essence=essence,
                       neighbours=fact_set.neighbourhood_prompts(subject, relation, n_neighbours, seed=seed),
                       subject=subject, relation=relation)


@torch.no_grad()
def context_prefixes(model, bos: int, n: int = 4, length: int = 3, end: int | None = None,
                     seed: int = 0) -> list[list[int]]:
    """ROME's context templates, shortened for a small context: the empty prefix and ``n`` short
    texts the model itself writes after <bos> (``length`` tokens sampled at temperature 1),
    each followed by ``end`` (e.g. the "." token) when given.  Each prefix is a token list that
    starts with <bos>; a prompt is put after it with its own <bos> dropped (``with_prefix``)."""
    gen = torch.Generator().manual_seed(seed)
    out = [[]]
    rows = torch.full((n, 1), bos, dtype=torch.long)
    for _ in range(length):
        probs = model(rows)[:, -1].float().softmax(-1).cpu()
        rows = torch.cat([rows, torch.multinomial(probs, 1, generator=gen)], dim=1)
    for row in rows.tolist():
        out.append(row + ([end] if end is not None else []))
    return out


def with_prefix(tokens: list[int], subject_last: int, prefix: list[int]) -> tuple[list[int], int]:
    """(prefix + tokens without their <bos>, the shifted subject position); the empty prefix
    leaves the prompt as it is."""
    if not prefix:
        return list(tokens), int(subject_last)
    return list(prefix) + list(tokens[1:]), int(subject_last) + len(prefix) - 1


def _prefixed(pairs, prefixes):
    rows, pos = [], []
    for tokens, last in pairs:
        for p in prefixes:
            t, s = with_prefix(tokens, last, p)
            rows.append(t)
            pos.append(s)
    return rows, torch.tensor(pos)


@torch.no_grad()
def rome_key(model, layer: int, prompts, subject_last, prefixes=((),)) -> Tensor:
    """k* (d_mlp,), float64: block ``layer``'s MLP key at the subject's last token, averaged over
    the prompts (a list of token lists, or one) × ``prefixes`` (``context_prefixes``; the default
    is the prompts alone).  ``subject_last``: each prompt's last subject position.

    One prompt × prefix at a time, as chapter 06's exercise writes it (so that the learner's
    loop and this give the same bits; a padded batch differs in the last float32 digits, and
    MEMIT's solve in the chapter is sensitive enough to show it)."""
    layer = _check_layer(model, layer)
    if prompts and isinstance(prompts[0], int):
        prompts, subject_last = [prompts], [subject_last]
    subject_last = [int(s) for s in torch.as_tensor(subject_last).reshape(-1).tolist()]
    hook = _key_hook(layer)
    keys = []
    for tokens, last in zip(prompts, subject_last):
        for prefix in prefixes:
            row, position = with_prefix(tokens, last, list(prefix))
            _, cache = model.run_with_cache(torch.tensor([row], device=model.device), [hook])
            keys.append(cache[hook][0, position])
    return torch.stack(keys).double().mean(0).cpu()


# --------------------------------------------------------------------------------------
# The value: optimise δ at the subject's last token
# --------------------------------------------------------------------------------------


def value_batch(request: EditRequest, prefixes=((),)) -> dict:
    """The prompts v* is optimised on, as one right-padded batch: the rewrite prompts × ``prefixes``
    first, then the essence prompts (no prefix).  Returns dict(tokens (n, T), last (n,) each row's
    last real position (where the next token is read), positions (n,) each row's last subject
    token (where δ is added), n_rewrite (the first n_rewrite rows are the rewrite rows))."""
    prefixes = [list(p) for p in prefixes]
    rew_rows, rew_pos = _prefixed(request.rewrite, prefixes)
    ess_rows, ess_pos = _prefixed(request.essence, [[]])
    tokens, last = _pad(rew_rows + ess_rows)
    return dict(tokens=tokens, last=last, positions=torch.cat([rew_pos, ess_pos]), n_rewrite=len(rew_rows))


def run_with_delta(model, layer: int, batch: dict, delta: Tensor) -> Tensor:
    """(n, vocab) float32 logits of the next token after each row of ``batch`` (``value_batch``),
    with ``delta`` (d_model,) added to block ``layer``'s MLP output at each row's last subject
    token.  Differentiable in ``delta``."""
    device = model.device
    rows = torch.arange(len(batch["positions"]), device=device)
    positions, last = batch["positions"].to(device), batch["last"].to(device)

    def add_delta(x):
        x = x.clone()
        x[rows, positions] += delta
        return x

    return model.run_with_hooks(batch["tokens"], {_out_hook(layer): add_delta})[rows, last].float()


def rome_value(model, layer: int, request: EditRequest, prefixes=((),), k_star: Tensor | None = None,
               steps: int = 40, lr: float = 0.5, kl_factor: float = 0.5, weight_decay: float = 0.5,
               clamp: float = 4.0, stop_loss: float = 0.05) -> dict:
    """v* (d_model,) for ``request``: v* = W k* + b + δ, with δ minimising

        − mean log p(target | rewrite prompt × prefix, δ added to block ``layer``'s MLP output at
          the subject's last token)
        + kl_factor · mean KL(p_orig ‖ p_δ) of the next token after the essence prompts (δ added
          at their subject's last token too)
        + weight_decay · ‖δ‖² / ‖v‖²,          v = W k* + b, the unedited output

    by Adam (``steps``, ``lr``), with ‖δ‖ clamped to ``clamp`` · ‖v‖ after every step (ROME's
    clamp_norm_factor), stopping early when the negative log-likelihood is below ``stop_loss``;
    the δ with the lowest objective seen is kept (Adam at a high rate oscillates).

    Why each term: the likelihood term writes the new answer; the KL term keeps what the model
    says about the subject otherwise -- in these small fact models one subject's key carries all
    its facts, so the essence prompts (the subject's other relations) are what protects them;
    the weight decay and the clamp keep δ on the scale of the layer's own output, so that the
    rank-one update stays small.  k* (``rome_key`` over the same rewrite prompts and prefixes
    unless given) is the key v* is built from, and the same k* must go into the update
    (``rome_edit_model``).  All prompts run as one padded batch (``value_batch``,
    ``run_with_delta``).  The defaults suit the shipped fact models at ``facts.EDIT_LAYER``; how
    they were chosen, and what other settings do, is in ``docs/tuning.md`` (section "editing").

    Returns dict(v_star, k_star, delta, v (the unedited W k* + b), nll (the loss history),
    p_target (mean p(target) on the rewrite rows at the end), steps).  In smoke mode
    (``training.SMOKE_STEPS_ENV``) Adam takes fewer steps."""
    layer = _check_layer(model, layer)
    steps, _ = smoke_cap(steps)
    prefixes = [list(p) for p in prefixes]
    if k_star is None:
        k_star = rome_key(model, layer, [t for t, _ in request.rewrite], [s for _, s in request.rewrite], prefixes)
    mlp = model.blocks[layer].mlp.c_proj
    with torch.no_grad():
        v = (_f64(mlp.weight.detach().cpu()) @ k_star + _f64(mlp.bias.detach().cpu()))
    batch = value_batch(request, prefixes)
    n_rew = batch["n_rewrite"]
    device = model.device
    params = [p for p in model.parameters()]
    was = [p.requires_grad for p in params]
    was_training = model.training
    model.eval()
    try:
        for p in params:
            p.requires_grad_(False)
        with torch.no_grad():
            logp0 = run_with_delta(model, layer, batch, torch.zeros(model.cfg.d_model, device=device))
            logp0 = logp0[n_rew:].log_softmax(-1)
        delta = torch.zeros(model.cfg.d_model, device=device, requires_grad=True)
        opt = torch.optim.Adam([delta], lr=lr)
        v_norm = float(v.norm())
        max_norm = clamp * v_norm
        target = torch.full((n_rew,), int(request.target), device=device)
        history = []
        best, best_loss = delta.detach().clone(), float("inf")
        for step in range(steps + 1):
            logp = run_with_delta(model, layer, batch, delta).log_softmax(-1)
            nll = F.nll_loss(logp[:n_rew], target)
            kl = F.kl_div(logp[n_rew:], logp0, log_target=True, reduction="batchmean")
            loss = nll + kl_factor * kl + weight_decay * delta.square().sum() / v_norm ** 2
            history.append(float(nll.detach()))
            if float(loss.detach()) < best_loss:        # Adam at a high rate oscillates: keep the best δ seen
                best, best_loss = delta.detach().clone(), float(loss.detach())
            if float(nll.detach()) < stop_loss or step == steps:
                break
            opt.zero_grad()
            loss.backward()
            opt.step()
            with torch.no_grad():
                norm = delta.norm()
                if norm > max_norm:
                    delta.mul_(max_norm / norm)
        with torch.no_grad():
            logits = run_with_delta(model, layer, batch, best)
            p_target = float(logits[:n_rew].softmax(-1)[:, int(request.target)].mean())
    finally:
        for p, w in zip(params, was):
            p.requires_grad_(w)
        model.train(was_training)
    d = best.double().cpu()
    return dict(v_star=v + d, k_star=k_star, delta=d, v=v, nll=history, p_target=p_target, steps=len(history))


def optimise_value(model, layer: int, request: EditRequest, k_star: Tensor, prefixes=((),), steps: int = 40,
                   lr: float = 0.5, kl_factor: float = 0.5, weight_decay: float = 0.5, clamp: float = 4.0,
                   stop_loss: float = 0.05) -> Tensor:
    """v* (d_model,), float64: ``rome_value``'s optimised value for the key ``k_star``, alone (the
    chapter's exercise returns this; ``rome_edit_model(..., value_fn=...)`` takes a function with
    this signature)."""
    return rome_value(model, layer, request, prefixes=prefixes, k_star=k_star, steps=steps, lr=lr,
                      kl_factor=kl_factor, weight_decay=weight_decay, clamp=clamp, stop_loss=stop_loss)["v_star"]


# --------------------------------------------------------------------------------------
# The edit
# --------------------------------------------------------------------------------------


def rome_edit_model(model, layer: int, request: EditRequest, C: Tensor, prefixes=((),), projection: Tensor | None = None,
                    preserved_keys: Tensor | None = None, key_fn=None, value_fn=None, update_fn=None,
                    **value_kwargs) -> dict:
    """Edit ``model`` in place so that it answers ``request.target``: k* (``rome_key``), v*
    (``rome_value`` from that same k*), then the rank-one ΔW = ``rome_update``(W, C, k*, v* − b)
    added to block ``layer``'s down-projection (the bias b stays), so that W' k* + b = v*.

    With ``preserved_keys`` (the k* of earlier edits, (d_mlp, m)) and no projection, the update
    also leaves those keys' outputs exactly alone (``constrained_rome_update``).  With
    ``projection`` (AlphaEdit, ``null_space_projection``) the update is AlphaEdit's instead
    (``alphaedit_update``): ΔW P, zero on the preserved keys, protecting ``preserved_keys`` too.

    The three pieces can be swapped for the learner's (chapter 06): ``key_fn`` with ``rome_key``'s
    signature, ``value_fn`` with ``optimise_value``'s (model, layer, request, k_star, prefixes,
    **value_kwargs) -> v*, ``update_fn`` with ``editing.rome_update``'s (W, C, k*, v*) -> ΔW.

    Returns dict(delta_W (d_model, d_mlp) in the weight's dtype -- subtract it to undo the edit,
    k_star, v_star, value (``rome_value``'s diagnostics; with ``value_fn`` only v_star, delta, v)).
    """
    layer = _check_layer(model, layer)
    C = _square("C", C, model.cfg.d_mlp)
    key_fn = rome_key if key_fn is None else key_fn
    k_star = _f64(torch.as_tensor(key_fn(model, layer, [t for t, _ in request.rewrite],
                                         [s for _, s in request.rewrite], prefixes))).cpu()
    mlp = model.blocks[layer].mlp.c_proj
    if value_fn is None:
        value = rome_value(model, layer, request, prefixes=prefixes, k_star=k_star, **value_kwargs)
    else:
        v_star = _f64(torch.as_tensor(value_fn(model, layer, request, k_star, prefixes, **value_kwargs))).cpu()
        with torch.no_grad():
            v = _f64(mlp.weight.detach().cpu()) @ k_star + _f64(mlp.bias.detach().cpu())
        value = dict(v_star=v_star, delta=v_star - v, v=v)
    W = mlp.weight.detach()
    target = value["v_star"] - _f64(mlp.bias.detach().cpu())
    if projection is None and preserved_keys is None:
        delta_W = (rome_update if update_fn is None else update_fn)(_f64(W.cpu()), C, k_star, target)
    elif projection is None:
        delta_W = constrained_rome_update(_f64(W.cpu()), C, k_star, target, preserved_keys)
    else:
        delta_W = alphaedit_update(_f64(W.cpu()), projection, k_star, target, preserved_keys)
    delta_W = delta_W.to(W.dtype).to(W.device)
    with torch.no_grad():
        mlp.weight += delta_W
    return dict(delta_W=delta_W, k_star=k_star, v_star=value["v_star"], value=value)


def undo_edit(model, layer: int, delta_W: Tensor) -> None:
    """Subtract an edit's ΔW from block ``layer``'s down-projection (in place)."""
    with torch.no_grad():
        model.blocks[_check_layer(model, layer)].mlp.c_proj.weight -= delta_W


def null_space_projection(C: Tensor, threshold: float = 1e-2) -> Tensor:
    """AlphaEdit's P (d_k, d_k), float64: the orthogonal projection onto the eigenvectors of the
    preserved keys' second moment C whose eigenvalue is below ``threshold`` × the mean
    eigenvalue -- the directions the preserved knowledge (nearly) never uses.  For any preserved
    key k, P k ≈ 0, so an update ΔW P leaves its output alone."""
    C = _square("C", C)
    eigenvalues, Q = torch.linalg.eigh(_f64(C))
    small = Q[:, eigenvalues < threshold * eigenvalues.mean()]
    return small @ small.T


def alphaedit_update(W: Tensor, P: Tensor, k_star: Tensor, v_star: Tensor, preserved_keys: Tensor | None = None,
                     ridge: float = 1.0) -> Tensor:
    """AlphaEdit's update (Fang et al. 2024) for one edit, float64 (d_v, d_k):

        Δ = (v* − W k*) k*ᵀ P (K_p K_pᵀ P + k* k*ᵀ P + ridge · I)⁻¹ ,   ΔW = Δ P

    the least-squares edit that (W + ΔW) k* ≈ v* among updates living in the null space P of
    the preserved keys, with the earlier edits' keys K_p (d_k, m) held too and a ridge on ‖Δ‖."""
    W = _f64(_matrix("W", W))
    d_v, d_k = W.shape
    P = _f64(_square("P", P, d_k))
    k = _f64(_vector("k_star", k_star, d_k))
    residual = _f64(v_star) - W @ k
    A = torch.outer(k, k) @ P + ridge * torch.eye(d_k, dtype=torch.float64)
    if preserved_keys is not None and preserved_keys.numel():
        Kp = _f64(_matrix("preserved_keys", preserved_keys, rows=d_k))
        A = A + Kp @ Kp.T @ P
    # Δ = r (kᵀ P) A⁻¹  ->  solve Aᵀ x = P k
    x = torch.linalg.solve(A.T, P @ k)
    return torch.outer(residual, x) @ P


# --------------------------------------------------------------------------------------
# CounterFact-style metrics
# --------------------------------------------------------------------------------------


@torch.no_grad()
def _next_token_probs(model, rows: list[list[int]]) -> Tensor:
    tokens, last = _pad(rows)
    logits = model(tokens)
    return logits[torch.arange(len(rows)), last.to(logits.device)].float().softmax(-1).cpu()


def _harmonic(values) -> float:
    values = [float(v) for v in values]
    return 0.0 if min(values) <= 0 else len(values) / sum(1 / v for v in values)


def counterfact_scores(edit_probs: Tensor, paraphrase_probs: Tensor, neighbour_probs: Tensor, new: int, old: int,
                       neighbour_answers: Tensor) -> dict[str, float]:
    """Meng et al.'s CounterFact scores of one edit from next-token probabilities, each in [0, 1]:

    - efficacy: the fraction of the edited prompts (``edit_probs`` (n, vocab)) where
      p(new) > p(old);
    - paraphrase: the same fraction over the paraphrases (``paraphrase_probs`` (m, vocab));
    - neighbourhood: the fraction of neighbour prompts (``neighbour_probs`` (q, vocab), other
      subjects, same relation; their true answers ``neighbour_answers`` (q,)) where p(their true
      answer) > p(new) -- neighbours whose true answer is ``new`` are left out (they cannot tell);
      NaN when none is left;
    - score: the harmonic mean of the three (0 if any is 0).
    """
    neighbour_answers = torch.as_tensor(neighbour_answers, dtype=torch.long)
    eff = float((edit_probs[:, new] > edit_probs[:, old]).float().mean())
    par = float((paraphrase_probs[:, new] > paraphrase_probs[:, old]).float().mean())
    keep = neighbour_answers != new
    q, answers = neighbour_probs[keep], neighbour_answers[keep]
    nb = float((q[torch.arange(len(q)), answers] > q[:, new]).float().mean()) if len(q) else float("nan")
    return {"efficacy": eff, "paraphrase": par, "neighbourhood": nb,
            "score": _harmonic([eff, par, nb]) if len(q) else _harmonic([eff, par])}


@torch.no_grad()
def edit_metrics(model, request: EditRequest, untouched=None, scores_fn=None) -> dict:
    """Meng et al.'s CounterFact scores of ``request`` on ``model`` (after the edit), each in [0, 1]:

    - efficacy: p(new) > p(old) on the edited prompt (``efficacy``) and new = top-1
      (``efficacy_top1``);
    - paraphrase: the same on the held-out template(s) of the fact (``paraphrase``,
      ``paraphrase_top1``) -- generalisation;
    - neighbourhood: the fraction of other subjects' prompts on the same relation where
      p(their true answer) > p(new target) (``neighbourhood``), and where their answer is still
      top-1 (``neighbourhood_top1``) -- specificity (neighbours whose answer is the new target are
      left out);
    - ``score``: the harmonic mean of efficacy, paraphrase and neighbourhood (of the first two
      when no neighbour is left) -- ``counterfact_scores`` computes these four;
    - with ``untouched`` (a ``facts.FactPrompts`` of facts the edit is not about):
      ``untouched_accuracy``, their top-1 accuracy (compare with the same before the edit).

    ``scores_fn``: a function with ``counterfact_scores``' signature to compute the four scores
    with (the learner's, in chapter 06).
    """
    new, old = int(request.target), int(request.old)
    p = _next_token_probs(model, [request.prompt] + [t for t, _ in request.paraphrases])
    eff, par = p[:1], p[1:]
    nb = request.neighbours
    if nb is not None and len(nb):
        q, answers = _next_token_probs(model, nb.tokens), nb.answer
    else:
        q, answers = torch.zeros(0, p.shape[1]), torch.zeros(0, dtype=torch.long)
    out = dict((counterfact_scores if scores_fn is None else scores_fn)(eff, par, q, new, old, answers))
    out = {k: float(v) for k, v in out.items()}
    keep = answers != new                   # a neighbour whose true answer is the new target cannot tell
    out.update(efficacy_top1=float((eff.argmax(-1) == new).float().mean()),
               p_new=float(eff[0, new]), p_old=float(eff[0, old]),
               paraphrase_top1=float((par.argmax(-1) == new).float().mean()),
               neighbourhood_top1=float((q[keep].argmax(-1) == answers[keep]).float().mean()) if keep.any()
               else float("nan"))
    if untouched is not None:
        out["untouched_accuracy"] = _facts.fact_accuracy(model, untouched)[0]
    return out


# --------------------------------------------------------------------------------------
# Lifelong editing of the transformer
# --------------------------------------------------------------------------------------


def lifelong_requests(fact_set, n: int, seed: int = 0, n_neighbours: int = 10,
                      distinct_subjects: bool = True) -> list[EditRequest]:
    """``n`` edits of distinct facts of ``fact_set`` (drawn with ``seed``), each to a different
    answer of the same relation, drawn, as in CounterFact, from the answers other subjects
    have: an answer no fact has was never a training target, and the model cannot say it.
    With ``distinct_subjects`` (the default) every edit is about a different subject, so every
    edit has its own key (two edits of one subject share ROME's key, p = 1)."""
    r = random.Random(seed)
    if distinct_subjects:
        if n > fact_set.n_subjects:
            raise ValueError(f"asked for {n} edits of distinct subjects, but the fact set has "
                             f"{fact_set.n_subjects} subjects; pass distinct_subjects=False")
        chosen = [(s, r.randrange(len(_facts.RELATIONS))) for s in r.sample(range(fact_set.n_subjects), n)]
    else:
        pairs = [(s, rel) for s in range(fact_set.n_subjects) for rel in range(len(_facts.RELATIONS))]
        if n > len(pairs):
            raise ValueError(f"asked for {n} edits of a fact set with {len(pairs)} facts")
        chosen = r.sample(pairs, n)
    out = []
    for s, rel in chosen:
        choices = sorted(set(fact_set.answers[:, rel].tolist()) - {int(fact_set.answers[s, rel])})
        out.append(fact_request(fact_set, s, rel, r.choice(choices), n_neighbours=n_neighbours, seed=seed))
    return out


def untouched_prompts(fact_set, requests: Sequence[EditRequest], n: int = 300, seed: int = 0):
    """A ``facts.FactPrompts`` of up to ``n`` training prompts of facts no request edits (drawn
    with ``seed``): what lifelong editing should leave alone."""
    edited = {(q.subject, q.relation) for q in requests}
    prompts = fact_set.prompts("train")
    keep = [i for i in range(len(prompts))
            if (int(prompts.subject[i]), int(prompts.relation[i])) not in edited]
    order = torch.randperm(len(keep), generator=torch.Generator().manual_seed(seed))[:n]
    return prompts.select([keep[i] for i in order.tolist()])


@torch.no_grad()
def _retention(model, requests: Sequence[EditRequest]) -> dict:
    rows = [q.prompt for q in requests] + [q.paraphrases[0][0] for q in requests]
    p = _next_token_probs(model, rows)
    n = len(requests)
    new = torch.tensor([q.target for q in requests])
    old = torch.tensor([q.old for q in requests])
    idx = torch.arange(n)
    eff, par = p[:n], p[n:]
    return {"retention": float((eff[idx, new] > eff[idx, old]).float().mean()),
            "retention_top1": float((eff.argmax(-1) == new).float().mean()),
            "paraphrase": float((par[idx, new] > par[idx, old]).float().mean())}


def constrained_rome_update(W: Tensor, C: Tensor, k_star: Tensor, v_star: Tensor, K_prev: Tensor | None = None) -> Tensor:
    """ROME's update with the earlier edits' keys held fixed, float64 (d_v, d_k): the ΔW that
    minimises tr(ΔW C ΔWᵀ) subject to ΔW k* = v* − W k* and ΔW k_j = 0 for every column k_j of
    ``K_prev`` (d_k, m), m < d_k:

        u = C⁻¹ k* − C⁻¹ K_p (K_pᵀ C⁻¹ K_p)⁻¹ K_pᵀ C⁻¹ k*,     ΔW = (v* − W k*) uᵀ / (uᵀ k*)

    u is C⁻¹ k* made C-orthogonal to the earlier keys, so every p(t, j) with j < t is exactly 0:
    the interference term vanishes and lifelong editing keeps the earlier edits' values (the
    "orthogonal keys are lossless" case of Hu et al., enforced; AlphaEdit's K_p term, Fang et al.
    2024, in ROME's metric).  Without ``K_prev`` it is ``rome_update``."""
    W = _f64(_matrix("W", W))
    d_v, d_k = W.shape
    C = _f64(_square("C", C, d_k))
    k = _f64(_vector("k_star", k_star, d_k))
    u = torch.linalg.solve(C, k)
    if K_prev is not None and K_prev.numel():
        Kp = _f64(_matrix("K_prev", K_prev, rows=d_k))
        CiKp = torch.linalg.solve(C, Kp)
        G = Kp.T @ CiKp                                          # K_pᵀ C⁻¹ K_p (m, m)
        u = u - CiKp @ torch.linalg.lstsq(G, Kp.T @ u).solution
    denominator = u @ k
    if not abs(float(denominator)) > 1e-12 * float(k @ k):
        raise ValueError("k* lies (almost) in the span of the earlier keys: it cannot be edited alone")
    return torch.outer(_f64(v_star) - W @ k, u) / denominator


def memit_update(W: Tensor, C: Tensor, K: Tensor, V: Tensor, lam: float = 1.0) -> Tensor:
    """MEMIT's batched least-squares update on one layer (Meng et al. 2023), float64 (d_v, d_k):

        ΔW = (V − W K) Kᵀ (λ C + K Kᵀ)⁻¹

    the ΔW minimising λ tr(ΔW C ΔWᵀ) + ‖(W + ΔW) K − V‖²_F for n edits at once, keys K (d_k, n),
    targets V (d_v, n) (for W k, the bias taken off).  λ → 0 stores every edit exactly (n ≤ d_k
    independent keys); one key and λ → 0 gives ROME's rank-one update."""
    W = _f64(_matrix("W", W))
    C = _f64(_square("C", C, W.shape[1]))
    K = _f64(_matrix("K", K, rows=W.shape[1]))
    V = _f64(_matrix("V", V, W.shape[0], K.shape[1]))
    lam = _nonnegative("lam", lam)
    A = lam * C + K @ K.T                                   # symmetric
    return torch.linalg.solve(A, K @ (V - W @ K).T).T


METHODS = ("rome", "preserve", "orthogonal", "alphaedit", "memit")


def lifelong_edit(model, requests: Sequence[EditRequest], layer: int, C: Tensor, prefixes=((),),
                  record_every: int = 5, untouched=None, method: str = "rome", projection: Tensor | None = None,
                  lam: float = 1.0, max_preserved: int | None = None, key_fn=None, value_fn=None, update_fn=None,
                  interference_fn=None, **value_kwargs) -> dict:
    """Apply ``requests`` one after the other to ``model`` (in place), each a ROME edit with the
    same C (``method="rome"``), or with the earlier edits' keys added to the statistic ROME
    preserves (``method="preserve"``: C + lam Σ_j k_j k_jᵀ, the soft form of holding them fixed
    that AlphaEdit's K_p K_pᵀ term and MEMIT's sequential use add; it works for any number of
    keys), or with every earlier edit's key held fixed exactly (``method="orthogonal"``,
    ``constrained_rome_update``; with ``max_preserved`` only the most recent that many), or AlphaEdit's (``method="alphaedit"``: updates projected onto
    ``projection``, the null space of C by default (``null_space_projection``), each protecting
    the keys of the edits before it), or MEMIT's batched solve (``method="memit"``, ``memit_update``
    with ``lam``): every ``record_every`` edits are written at once, each v* computed on the model
    before its chunk, the solve including all earlier edits' keys and targets.

    After every ``record_every`` edits (and the last) it records, over all edits so far:
    ``retention`` (fraction with p(new) > p(old) on their edited prompt), ``retention_top1``,
    ``paraphrase`` (p(new) > p(old) on their held-out template), and with ``untouched`` (a
    ``facts.FactPrompts``, ``untouched_prompts``) ``untouched_accuracy``.  At the end it
    measures the interference coefficients of the edits' real keys, P = ``interference_coefficients``
    (C, [k*_1 … k*_n]), and their ``p_statistics``.

    Returns dict(n_edits, retention, retention_top1, paraphrase, untouched_accuracy (lists over
    the records; untouched_accuracy starts with the value before any edit, so it is one longer),
    efficacy_when_made (each edit's efficacy right after it; NaN for "memit", whose edits are
    written a chunk at a time), keys (d_mlp, n), P, p_stats,
    delta_W (the sum of all updates: subtract it to undo), seconds).

    ``key_fn``, ``value_fn``, ``update_fn``: the pieces of the edit (``rome_edit_model``; key and
    value for MEMIT too), ``interference_fn``: P's function (``editing.interference_coefficients``'
    signature); the learner's, in chapter 06."""
    if method not in METHODS:
        raise ValueError(f"method must be one of {', '.join(map(repr, METHODS))}, got {method!r}")
    layer = _check_layer(model, layer)
    if method == "alphaedit" and projection is None:
        projection = null_space_projection(C)
    start = time.perf_counter()
    record = {"n_edits": [], "retention": [], "retention_top1": [], "paraphrase": [], "untouched_accuracy": []}
    if untouched is not None:
        record["untouched_accuracy"].append(_facts.fact_accuracy(model, untouched)[0])
    keys, made = [], []
    total = torch.zeros_like(model.blocks[layer].mlp.c_proj.weight)
    mlp = model.blocks[layer].mlp.c_proj
    targets = []
    for i, request in enumerate(requests):
        if method == "memit":
            # v* on the model as it now is; the edits of a chunk are written at once, together with
            # every earlier edit's (k*, v* − b), so the solve keeps the earlier ones too
            k = _f64(torch.as_tensor((rome_key if key_fn is None else key_fn)(
                model, layer, [t for t, _ in request.rewrite], [s for _, s in request.rewrite], prefixes))).cpu()
            v_star = (optimise_value if value_fn is None else value_fn)(model, layer, request, k, prefixes,
                                                                           **value_kwargs)
            keys.append(k)
            targets.append(_f64(torch.as_tensor(v_star)).cpu() - _f64(mlp.bias.detach().cpu()))
            if (i + 1) % record_every == 0 or i + 1 == len(requests):
                delta_W = memit_update(_f64(mlp.weight.detach().cpu()), C, torch.stack(keys, 1),
                                       torch.stack(targets, 1), lam).to(mlp.weight.dtype).to(mlp.weight.device)
                with torch.no_grad():
                    mlp.weight += delta_W
                total += delta_W
                made += [float("nan")] * (len(keys) - len(made))
        else:
            held = keys if (method != "orthogonal" or max_preserved is None) else keys[max(0, len(keys) - max_preserved):]
            preserved = torch.stack(held, dim=1) if (held and method in ("orthogonal", "alphaedit")) else None
            C_now = C
            if method == "preserve" and keys:
                K = torch.stack(keys, dim=1)
                C_now = C + lam * K @ K.T                   # every earlier key, weight lam
            out = rome_edit_model(model, layer, request, C_now, prefixes=prefixes,
                                  projection=projection if method == "alphaedit" else None,
                                  preserved_keys=preserved, key_fn=key_fn, value_fn=value_fn,
                                  update_fn=update_fn, **value_kwargs)
            total += out["delta_W"]
            keys.append(out["k_star"])
            made.append(_retention(model, [request])["retention"])
        if (i + 1) % record_every == 0 or i + 1 == len(requests):
            r = _retention(model, requests[:i + 1])
            record["n_edits"].append(i + 1)
            for k in ("retention", "retention_top1", "paraphrase"):
                record[k].append(r[k])
            if untouched is not None:
                record["untouched_accuracy"].append(_facts.fact_accuracy(model, untouched)[0])
    K = torch.stack(keys, dim=1)
    P = ((interference_coefficients if interference_fn is None else interference_fn)(C, K) if len(keys) > 1
         else torch.ones(1, 1, dtype=torch.float64))
    P = _f64(torch.as_tensor(P)).cpu()
    record.update(efficacy_when_made=made, keys=K, P=P,
                  p_stats=p_statistics(P) if len(keys) > 1 else None, delta_W=total,
                  seconds=time.perf_counter() - start)
    return record
