"""Chapter 06 (part 1) checks: the reference passes, the stub is "not attempted", plausible wrong
implementations fail with a message that names what is wrong, and broken learners (raising,
wrong shape, wrong type, NaN) fail without crashing."""

from __future__ import annotations

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

from course_utils import checks, facts
from course_utils import editing as lib
from course_utils.checks import editing as chapter

pytestmark = pytest.mark.usefixtures("one_thread")


# --------------------------------------------------------------------------------------
# Right answers, written as a learner would
# --------------------------------------------------------------------------------------


def rome_update(W, C, k_star, v_star):
    u = torch.linalg.solve(C, k_star)
    return torch.outer(v_star - W @ k_star, u) / (u @ k_star)


def key_covariance(K):
    return K @ K.T / K.shape[1]


def interference_coefficients(C, K):
    G = torch.linalg.solve(C, K).T @ K
    return G / G.diagonal()[:, None]


def whitened_cosine(C, k_i, k_j):
    eigenvalues, Q = torch.linalg.eigh(C)
    inverse_sqrt = Q @ torch.diag(eigenvalues.rsqrt()) @ Q.T
    a, b = inverse_sqrt @ k_i, inverse_sqrt @ k_j
    return (a @ b / (a.norm() * b.norm())).item()


def indirect_effect(model, tokens, subject_positions, answer, hook, position, noise):
    tokens = torch.as_tensor(tokens)[None].expand(len(noise), -1)
    _, cache = model.run_with_cache(tokens[:1], [hook], stop_early=False)
    clean = cache[hook][0, position]

    def corrupt(x):
        x = x.clone()
        x[:, subject_positions] = x[:, subject_positions] + noise
        return x

    def restore(x):
        x = x.clone()
        x[:, position] = clean
        return x

    with torch.no_grad():
        p_corrupted = model.run_with_hooks(tokens, {"hook_embed": corrupt})[:, -1].softmax(-1)[:, answer]
        p_restored = model.run_with_hooks(tokens, {"hook_embed": corrupt, hook: restore})[:, -1].softmax(-1)[:, answer]
    return (p_restored - p_corrupted).mean().item()


def counterfact_scores(edit_probs, paraphrase_probs, neighbour_probs, new, old, neighbour_answers):
    efficacy = (edit_probs[:, new] > edit_probs[:, old]).float().mean().item()
    paraphrase = (paraphrase_probs[:, new] > paraphrase_probs[:, old]).float().mean().item()
    keep = neighbour_answers != new
    q, a = neighbour_probs[keep], neighbour_answers[keep]
    neighbourhood = (q.gather(1, a[:, None])[:, 0] > q[:, new]).float().mean().item()
    values = [efficacy, paraphrase, neighbourhood]
    score = 0.0 if min(values) == 0 else 3 / sum(1 / v for v in values)
    return {"efficacy": efficacy, "paraphrase": paraphrase, "neighbourhood": neighbourhood, "score": score}


REFERENCES = {
    "indirect_effect": indirect_effect,
    "counterfact_scores": counterfact_scores,
    "rome_update": rome_update,
    "key_covariance": key_covariance,
    "interference_coefficients": interference_coefficients,
    "whitened_cosine": whitened_cosine,
}


@pytest.mark.parametrize("name", REFERENCES)
def test_reference_passes_and_stub_is_not_attempted(name, capsys):
    assert_reference_passes_and_stub_is_not_attempted(name, REFERENCES[name], capsys)


@pytest.mark.parametrize("name", REFERENCES)
def test_reference_passes_hidden_seeds(name):
    assert_passes(name, REFERENCES[name], seeds=range(100, 132))


def test_registered_under_the_exercise_names():
    assert_registered(REFERENCES)


def test_other_right_answers_pass():
    """Equivalent formulations: the library itself, an explicit inverse, a loop over the pairs,
    a Cholesky whitening, a 0-d tensor for the cosine."""
    def rome_with_inverse(W, C, k_star, v_star):
        u = torch.linalg.inv(C) @ k_star
        return (v_star - W @ k_star)[:, None] * u[None, :] / (k_star @ u)

    def covariance_by_sum(K):
        return sum(torch.outer(k, k) for k in K.T) / K.shape[1]

    def interference_loop(C, K):
        n = K.shape[1]
        P = torch.empty(n, n, dtype=K.dtype)
        for i in range(n):
            u = torch.linalg.solve(C, K[:, i])
            for j in range(n):
                P[i, j] = u @ K[:, j] / (u @ K[:, i])
        return P

    def cosine_by_cholesky(C, k_i, k_j):
        L = torch.linalg.cholesky(C)
        a = torch.linalg.solve_triangular(L, k_i[:, None], upper=False)[:, 0]
        b = torch.linalg.solve_triangular(L, k_j[:, None], upper=False)[:, 0]
        return F.cosine_similarity(a, b, dim=0)

    for name, learner in [("rome_update", lib.rome_update), ("rome_update", rome_with_inverse),
                          ("key_covariance", lib.key_covariance), ("key_covariance", covariance_by_sum),
                          ("interference_coefficients", lib.interference_coefficients),
                          ("interference_coefficients", interference_loop),
                          ("whitened_cosine", lib.whitened_cosine), ("whitened_cosine", cosine_by_cholesky)]:
        assert_passes(name, learner)


# --------------------------------------------------------------------------------------
# The cases cover what their docstrings promise
# --------------------------------------------------------------------------------------


def test_cases_cover_the_edges():
    rome = default_cases("rome_update", chapter._rome_case)
    assert any(c.W.shape[0] == c.W.shape[1] for c in rome) and any(c.W.shape[0] == 1 for c in rome)
    assert any(c.W.shape[0] > c.W.shape[1] for c in rome) and any(c.W.shape[0] < c.W.shape[1] for c in rome)
    for c in rome:  # C is far from a multiple of I, so C⁻¹ matters
        eigenvalues = torch.linalg.eigvalsh(c.C)
        assert eigenvalues.max() > 3 * eigenvalues.min()
    covariance = default_cases("key_covariance", chapter._covariance_case)
    assert {c.K.shape[0] == c.K.shape[1] for c in covariance} == {True, False}
    assert any(c.K.shape[1] < c.K.shape[0] for c in covariance)
    assert all(c.K.mean(dim=1).abs().max() > 0.1 for c in covariance)
    interference = default_cases("interference_coefficients", chapter._interference_case)
    assert any(c.K.shape[1] > c.K.shape[0] for c in interference)
    assert any(c.K.shape[1] == c.K.shape[0] for c in interference)
    trace = default_cases("indirect_effect", chapter._trace_case)
    assert {c.hook.split(".")[-1] for c in trace} == set(chapter._TRACE_KINDS)
    effects = [abs(facts.indirect_effect(c.model, c.tokens, c.subject, c.answer, c.hook, c.position, c.noise))
               for c in trace]
    assert sum(e > 0.01 for e in effects) >= 4            # restoring moves p(answer) in most cases
    assert any(c.position == c.tokens.shape[0] - 1 for c in trace) and any(c.position in c.subject for c in trace)
    scores = default_cases("counterfact_scores", chapter._scores_case)
    assert all((c.neighbour_answers == c.new).any() for c in scores)
    for c in scores[:4]:     # top-1 and "p(new) > p(old)" disagree somewhere, so the two are told apart
        e = torch.cat([c.edit_probs, c.paraphrase_probs])
        assert ((e.argmax(-1) == c.new) != (e[:, c.new] > e[:, c.old])).any() or c is not scores[0]
    cosine = default_cases("whitened_cosine", chapter._whitened_case)
    values = [lib.whitened_cosine(c.C, c.k_i, c.k_j) for c in cosine]
    assert any(abs(v) < 1e-9 for v in values) and any(abs(v + 1) < 1e-9 for v in values)


# --------------------------------------------------------------------------------------
# Wrong implementations: each fails, most with the mistake named
# --------------------------------------------------------------------------------------


def _rome(W, C, k, v, *, use_C=True, denominator="whitened", sign=1.0, transpose=False, residual=True):
    u = torch.linalg.solve(C, k) if use_C else k
    r = (v - W @ k) if residual else v
    d = {"whitened": u @ k, "plain": k @ k, "none": torch.tensor(1.0, dtype=k.dtype)}[denominator]
    outer = torch.outer(u, r) if transpose else torch.outer(r, u)
    return sign * outer / d


def _rome_in_place(W, C, k, v):
    delta = rome_update(W, C, k, v)
    W += delta
    return delta


def _centred(K):
    centred = K - K.mean(dim=1, keepdim=True)
    return centred @ centred.T / K.shape[1]


def _scale_in_place(K):
    K /= K.shape[1] ** 0.5
    return K @ K.T


def _gram(C, K):
    return torch.linalg.solve(C, K).T @ K


def _cos(a, b):
    return float(F.cosine_similarity(a, b, dim=0))


def _trace_wrong(**kwargs):
    def learner(model, tokens, subject_positions, answer, hook, position, noise):
        from course_utils.checks.editing import _trace_variant
        from course_utils.checks._framework import Case
        return _trace_variant(Case("", model=model, tokens=torch.as_tensor(tokens), subject=list(subject_positions),
                                   answer=answer, hook=hook, position=position, noise=noise), **kwargs)
    return learner


def _scores_wrong(**change):
    def learner(edit_probs, paraphrase_probs, neighbour_probs, new, old, neighbour_answers):
        out = counterfact_scores(edit_probs, paraphrase_probs, neighbour_probs, new, old, neighbour_answers)
        q, a = neighbour_probs, neighbour_answers
        keep = a != new
        rows = torch.arange(len(q))
        if change.get("top1"):
            out["efficacy"] = (edit_probs.argmax(-1) == new).float().mean().item()
        if change.get("against_old"):
            out["neighbourhood"] = (q[rows, a] > q[:, old])[keep].float().mean().item()
        if change.get("keep_all"):
            out["neighbourhood"] = (q[rows, a] > q[:, new]).float().mean().item()
        if change.get("arithmetic"):
            out["score"] = (out["efficacy"] + out["paraphrase"] + out["neighbourhood"]) / 3
        return out
    return learner


WRONG = [
    # indirect_effect
    ("indirect_effect", _trace_wrong(baseline="none"), "subtract p(answer) in the corrupted run"),
    ("indirect_effect", _trace_wrong(baseline="clean"), "subtracts the clean run's p(answer)"),
    ("indirect_effect", _trace_wrong(restore_all=True), "restores the hook at every position"),
    ("indirect_effect", _trace_wrong(noise_everywhere=True), "adds noise at every position"),
    ("indirect_effect", _trace_wrong(first_sample=True), "only the first noise sample"),
    ("indirect_effect", lambda *a: -indirect_effect(*a), "off from the right one by a constant factor"),
    # counterfact_scores
    ("counterfact_scores", _scores_wrong(top1=True), "the new target is top-1"),
    ("counterfact_scores", _scores_wrong(against_old=True), "compares p(true answer) with p(old)"),
    ("counterfact_scores", _scores_wrong(keep_all=True), "leave them out"),
    ("counterfact_scores", _scores_wrong(arithmetic=True), "the arithmetic mean"),
    # rome_update
    ("rome_update", lambda W, C, k, v: _rome(W, C, k, v, use_C=False), "C⁻¹ is missing"),
    ("rome_update", lambda W, C, k, v: _rome(W, C, k, v, denominator="plain"), "the denominator is k*ᵀ k*"),
    ("rome_update", lambda W, C, k, v: _rome(W, C, k, v, denominator="none"), "the denominator (C⁻¹ k*)ᵀ k* is missing"),
    ("rome_update", lambda W, C, k, v: _rome(W, C, k, v, sign=-1.0), "the sign is flipped"),
    ("rome_update", lambda W, C, k, v: _rome(W, C, k, v, transpose=True), "the outer product is transposed"),
    ("rome_update", lambda W, C, k, v: _rome(W, C @ C, k, v), "output differs from the reference"),
    ("rome_update", lambda W, C, k, v: _rome(W, torch.linalg.inv(C), k, v), "C is used where ROME uses C⁻¹"),
    ("rome_update", lambda W, C, k, v: _rome(W, C, k, v, residual=False), "replaced by v* alone"),
    ("rome_update", lambda W, C, k, v: W + rome_update(W, C, k, v), "you returned the edited matrix"),
    ("rome_update", _rome_in_place, "changed its input `W` in place"),
    ("rome_update", lambda W, C, k, v: rome_update(W, C, k, v).float(), "dtype torch.float32"),
    # key_covariance
    ("key_covariance", lambda K: K.T @ K / K.shape[1], "Kᵀ K"),
    ("key_covariance", _centred, "the keys are centred (K − mean)"),
    ("key_covariance", lambda K: torch.cov(K), "torch.cov"),
    ("key_covariance", lambda K: K @ K.T / (K.shape[1] - 1), "divided by n − 1"),
    ("key_covariance", lambda K: K @ K.T, "the division by n is missing"),
    ("key_covariance", lambda K: K @ K.T / K.shape[0], "divided by d_k"),
    ("key_covariance", _scale_in_place, "changed its input `K` in place"),
    # interference_coefficients
    ("interference_coefficients", lambda C, K: interference_coefficients(C, K).T, "P is transposed"),
    ("interference_coefficients", lambda C, K: F.normalize(K, dim=0).T @ F.normalize(K, dim=0), "plain cosine"),
    ("interference_coefficients", lambda C, K: interference_coefficients(torch.eye(len(C), dtype=C.dtype), K),
     "C⁻¹ is missing"),
    ("interference_coefficients", _gram, "the normaliser is missing"),
    ("interference_coefficients",
     lambda C, K: _gram(C, K) / (_gram(C, K).diagonal()[:, None] * _gram(C, K).diagonal()[None, :]).sqrt(),
     "this is the whitened cosine"),
    ("interference_coefficients", lambda C, K: _gram(C, K) / (K * K).sum(0)[:, None], "the normaliser is k_iᵀ k_i"),
    ("interference_coefficients", lambda C, K: interference_coefficients(torch.linalg.inv(C), K),
     "C is used where p(i, j) uses C⁻¹"),
    ("interference_coefficients", lambda C, K: interference_coefficients(C, K).fill_diagonal_(0), "the diagonal is 0"),
    # whitened_cosine
    ("whitened_cosine", lambda C, a, b: _cos(a, b), "plain cosine"),
    ("whitened_cosine", lambda C, a, b: _cos(C @ a, C @ b), "whitening multiplies by C^{-1/2}, not C"),
    ("whitened_cosine", lambda C, a, b: _cos(torch.linalg.solve(C, a), torch.linalg.solve(C, b)),
     "cosine of C⁻¹ k_i and C⁻¹ k_j"),
    ("whitened_cosine", lambda C, a, b: _cos(lib.sqrtm(C) @ a, lib.sqrtm(C) @ b), "C^{1/2} k_i"),
    ("whitened_cosine", lambda C, a, b: float(a @ torch.linalg.solve(C, b)), "the normalisation is missing"),
    ("whitened_cosine", lambda C, a, b: float(a @ torch.linalg.solve(C, b) / (a @ torch.linalg.solve(C, a))),
     "this is p(i, j)"),
    ("whitened_cosine", lambda C, a, b: -whitened_cosine(C, a, b), "off from the right one by a constant factor"),
    ("whitened_cosine", lambda C, a, b: whitened_cosine(C, a, b) + 0.05, "too high"),
]


@pytest.mark.parametrize("name, wrong, phrase", WRONG, ids=[f"{n}-{p[:30]}" for n, _, p in WRONG])
def test_wrong_implementations_fail_naming_the_mistake(name, wrong, phrase):
    message = failure(name, wrong)
    assert phrase in message and "your function raised" not in message, message


def test_a_transposed_outer_product_is_named_when_W_is_square():
    square_seeds = [s for s in range(16) if chapter._rome_case(s).W.shape[0] == chapter._rome_case(s).W.shape[1]]
    assert square_seeds
    message = failure("rome_update", lambda W, C, k, v: _rome(W, C, k, v, transpose=True), seeds=square_seeds)
    assert "matches a known mistake: the outer product is transposed" in message, message


# --------------------------------------------------------------------------------------
# Broken learners fail without crashing
# --------------------------------------------------------------------------------------


def _raises(*args):
    raise RuntimeError("boom")


def _fails_later(*args, calls=[0]):
    calls[0] += 1
    if calls[0] > 1:
        raise NotImplementedError
    return REFERENCES["rome_update"](*args)


BROKEN = [
    ("indirect_effect", _raises, "your function raised RuntimeError"),
    ("indirect_effect", lambda *a: None, "returned None"),
    ("indirect_effect", lambda *a: float("nan"), "not a finite number"),
    ("counterfact_scores", _raises, "your function raised RuntimeError"),
    ("counterfact_scores", lambda *a: [1.0, 1.0, 1.0, 1.0], "expected a dict"),
    ("counterfact_scores", lambda *a: {"efficacy": 1.0}, "lacks the key(s) 'paraphrase'"),
    ("counterfact_scores", lambda *a: {k: None for k in chapter.SCORE_KEYS}, "expected a number"),
    ("rome_update", _raises, "your function raised RuntimeError: boom"),
    ("rome_update", lambda W, C, k, v: rome_update(W, C, k, v)[:, :1], "expected (d_v, d_k)"),
    ("rome_update", lambda W, C, k, v: torch.full_like(W, float("nan")), "NaN"),
    ("rome_update", lambda W, C, k, v: None, "returned None"),
    ("rome_update", lambda W, C, k, v: rome_update(W, C, k, v).numpy(), "expected a torch.Tensor"),
    ("key_covariance", _raises, "your function raised RuntimeError"),
    ("key_covariance", lambda K: (K @ K.T / K.shape[1])[0], "expected (d_k, d_k)"),
    ("key_covariance", lambda K: K @ K.T * float("inf"), "inf"),
    ("interference_coefficients", _raises, "your function raised RuntimeError"),
    ("interference_coefficients", lambda C, K: interference_coefficients(C, K)[None], "expected (n, n)"),
    ("interference_coefficients", lambda C, K: interference_coefficients(C, K) * float("nan"), "NaN"),
    ("interference_coefficients", lambda C, K: (interference_coefficients(C, K),), "tuple of 1 items"),
    ("whitened_cosine", _raises, "your function raised RuntimeError"),
    ("whitened_cosine", lambda C, a, b: float("nan"), "not a finite number"),
    ("whitened_cosine", lambda C, a, b: torch.ones(2), "expected one number"),
    ("whitened_cosine", lambda C, a, b: None, "returned None"),
    ("whitened_cosine", lambda C, a, b: "0.5", "expected a number"),
    ("whitened_cosine", lambda C, a, b: 3.0, "outside [−1, 1]"),
]


@pytest.mark.parametrize("name, broken, phrase", BROKEN, ids=[f"{n}-{p[:30]}" for n, _, p in BROKEN])
def test_broken_learners_fail_without_crashing(name, broken, phrase):
    message = failure(name, broken)
    assert phrase in message, message


def test_a_stub_that_raises_after_the_first_case_is_a_failure():
    outcome = checks.evaluate("rome_update", _fails_later)
    assert outcome.status == checks.FAILED and "case 2" in outcome.message and "NotImplementedError" in outcome.message


# --------------------------------------------------------------------------------------
# The capstone: ROME's k* and v*, written as a learner would, and their plausible mistakes
# --------------------------------------------------------------------------------------

from course_utils import rome as rome_lib  # noqa: E402
from check_helpers import assert_names_mistake, stub  # noqa: E402


def learner_rome_key(model, layer, prompts, subject_last, prefixes=((),), *, position="last subject",
                     use_prefixes=True, hook="mlp.hook_post", mean=True, first=None):
    """k* as a learner writes it (a loop of single prompts); the keywords make its mistakes.
    ``first``: each prompt's first subject position (for the first-token mistake)."""
    name = f"blocks.{layer}.{hook}"
    keys = []
    for i, (tokens, s) in enumerate(zip(prompts, subject_last)):
        for p in (prefixes if use_prefixes else [[]]):
            t, pos = rome_lib.with_prefix(tokens, s, p)
            if position == "last token":
                pos = len(t) - 1
            elif position == "first subject":
                pos = first[i] + (len(p) - 1 if p else 0)
            _, cache = model.run_with_cache(torch.tensor([t]), [name])
            keys.append(cache[name][0, pos])
    keys = torch.stack(keys).double()
    return keys.mean(0) if mean else keys.sum(0)


def learner_rome_value(model, layer, request, k_star, prefixes=((),), steps=40, lr=0.5, kl_factor=0.5,
                       weight_decay=0.5, clamp=4.0, stop_loss=0.05, *, kl=True, clamped=True, relative=True,
                       keep_best=True, return_delta=False):
    """v* as a learner writes it (rome.value_batch / rome.run_with_delta); the keywords make its mistakes."""
    batch = rome_lib.value_batch(request, prefixes)
    n = batch["n_rewrite"]
    mlp = model.blocks[layer].mlp.c_proj
    v = mlp.weight.detach().double().cpu() @ k_star + mlp.bias.detach().double().cpu()
    with torch.no_grad():
        logp0 = rome_lib.run_with_delta(model, layer, batch, torch.zeros(model.cfg.d_model))[n:].log_softmax(-1)
    delta = torch.zeros(model.cfg.d_model, requires_grad=True)
    opt = torch.optim.Adam([delta], lr=lr)
    target = torch.full((n,), request.target)
    best, best_loss = delta.detach().clone(), float("inf")
    max_norm = clamp * v.norm() if relative else clamp
    for step in range(steps + 1):
        logp = rome_lib.run_with_delta(model, layer, batch, delta).log_softmax(-1)
        nll = F.nll_loss(logp[:n], target)
        loss = nll + weight_decay * delta.square().sum() / v.norm() ** 2
        if kl:
            loss = loss + kl_factor * F.kl_div(logp[n:], logp0, log_target=True, reduction="batchmean")
        if loss.item() < best_loss or not keep_best:
            best, best_loss = delta.detach().clone(), loss.item()
        if nll.item() < stop_loss or step == steps:
            break
        opt.zero_grad()
        loss.backward()
        opt.step()
        with torch.no_grad():
            if clamped and delta.norm() > max_norm:
                delta.mul_(max_norm / delta.norm())
    return best.double() if return_delta else v + best.double()


def _first_positions_key(model, layer, prompts, subject_last, prefixes=((),)):
    from course_utils import facts as facts_lib
    _, fact_set, vocab = facts_lib.load_fact_model("roomy", device="cpu")
    names = {tuple(vocab.index[w] for w in fact_set.subjects[s]): len(fact_set.subjects[s])
             for s in range(fact_set.n_subjects)}
    first = []
    for tokens, s in zip(prompts, subject_last):
        length = next(n for ids, n in names.items() if tuple(tokens[s - n + 1:s + 1]) == ids)
        first.append(s - length + 1)
    return learner_rome_key(model, layer, prompts, subject_last, prefixes, position="first subject", first=first)


def test_capstone_checks_pass_the_learners_version_and_say_not_attempted_on_the_stub(capsys):
    assert checks.check_rome_key(learner_rome_key) is learner_rome_key
    assert checks.check_rome_value(learner_rome_value) is learner_rome_value
    assert checks.check_rome_key(stub) is rome_lib.rome_key
    assert checks.check_rome_value(stub) is rome_lib.optimise_value
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("[")]
    assert lines[0].startswith("[passed] rome_key") and lines[1].startswith("[passed] rome_value")
    assert lines[2].startswith("[not attempted] rome_key") and lines[3].startswith("[not attempted] rome_value")
    assert_passes("rome_key", rome_lib.rome_key, seeds=range(100, 108))


CAPSTONE_WRONG = [
    ("rome_key", _first_positions_key, "this is the key at the subject's FIRST token"),
    ("rome_key", lambda *a: learner_rome_key(*a, position="last token"), "this is the key at the prompt's last token"),
    ("rome_key", lambda *a: learner_rome_key(*a, use_prefixes=False), "k* is not averaged over the prefixes"),
    ("rome_key", lambda *a: learner_rome_key(*a, mean=False), "the keys are summed"),
    ("rome_key", lambda m, L, *a: learner_rome_key(m, 0, *a), "this is layer 0's key"),
    ("rome_value", lambda *a, **k: learner_rome_value(*a, **k, kl=False), "the KL term is missing"),
    ("rome_value", lambda *a, **k: learner_rome_value(*a, **k, clamped=False), "the norm clamp is missing"),
    ("rome_value", lambda *a, **k: learner_rome_value(*a, **k, relative=False), "the norm clamp is absolute"),
    ("rome_value", lambda *a, **k: learner_rome_value(*a, **k, return_delta=True), "this returns δ"),
    ("rome_value", lambda *a, **k: learner_rome_value(*a, **{**k, "weight_decay": 0.0}), "the weight decay on δ is missing"),
    ("rome_value", lambda *a, **k: learner_rome_value(*a, **{**k, "stop_loss": 0.0}), "the early stop is missing"),
]


@pytest.mark.parametrize("name, learner, mistake", CAPSTONE_WRONG, ids=[m for _, _, m in CAPSTONE_WRONG])
def test_capstone_checks_name_the_mistake(name, learner, mistake):
    assert_names_mistake(name, learner, mistake)


def test_value_check_fails_a_loop_that_keeps_the_last_delta_not_the_best():
    message = failure("rome_value", lambda *a, **k: learner_rome_value(*a, **k, keep_best=False))
    assert "differs from the reference" in message


def test_the_update_check_fails_without_C_inverse_and_with_the_wrong_normalisation():
    assert "C⁻¹ is missing" in failure("rome_update", lambda W, C, k, v: _rome(W, C, k, v, use_C=False))
    assert "the denominator is k*ᵀ k*" in failure("rome_update", lambda W, C, k, v: _rome(W, C, k, v,
                                                                                             denominator="plain"))


def test_the_learners_pieces_run_the_edit_as_the_library_does():
    """rome_edit_model with the learner's key, value and update gives the library's ΔW."""
    model, fact_set, _ = facts.load_fact_model("superposed", device="cpu")
    C = rome_lib.estimate_key_covariance(model, 0, fact_set.training_tokens()[:64])
    request = rome_lib.fact_request(fact_set, subject=3, relation=1, target=0)
    ours = rome_lib.rome_edit_model(model, 0, request, C, steps=5)
    rome_lib.undo_edit(model, 0, ours["delta_W"])
    theirs = rome_lib.rome_edit_model(model, 0, request, C, steps=5, key_fn=learner_rome_key,
                                      value_fn=learner_rome_value, update_fn=rome_update)
    rome_lib.undo_edit(model, 0, theirs["delta_W"])
    torch.testing.assert_close(theirs["delta_W"], ours["delta_W"], rtol=1e-3, atol=1e-5)
