"""course_utils.rome, ROME on a transformer: the key covariance, the prefix-averaged key,
the value optimisation, the rank-one edit of a fact model's MLP (exact, undoable, the same k*
in the value and the update -- the r-ROME fix), CounterFact-style metrics, the constrained /
AlphaEdit / MEMIT updates, lifelong editing's records, and AlphaEdit's missing null space in the
superposed model.  The 100 lifelong ROME and MEMIT edits of the two shipped models are the
chapter notebook's own (tests/test_ch06_reproduction.py asserts on its results).

The edit layer is a parameter everywhere; these tests edit layer 0 at the last subject token,
where the shipped checkpoints' subject MLP recall is measured to sit (single edits of the 6-layer
roomy model there reach efficacy 1 with the default v* optimisation, lr 0.5, up to 40 steps;
layers 1-2 reach 0 on the same five requests)."""

import copy

import pytest
import torch

from course_utils import editing, facts, rome

pytestmark = pytest.mark.usefixtures("one_thread")   # one CPU thread, as the course runs (conftest)
LAYER = 0


@pytest.fixture(scope="module")
def roomy(single_thread):
    model, fs, vocab = facts.load_fact_model("roomy", device="cpu")
    C = rome.estimate_key_covariance(model, LAYER, fs.training_tokens(), pad_id=vocab.index["."])
    return model.eval(), fs, vocab, C


@pytest.fixture(scope="module")
def requests_(roomy):
    _, fs, _, _ = roomy
    return rome.lifelong_requests(fs, 10, seed=0)


def _rewrite(request):
    return [t for t, _ in request.rewrite], [s for _, s in request.rewrite]


# --------------------------------------------------------------------------------------
# Keys and covariance
# --------------------------------------------------------------------------------------


def test_key_covariance_is_the_second_moment_of_the_mlp_keys(roomy):
    model, fs, vocab, C = roomy
    d = model.cfg.d_mlp
    assert C.shape == (d, d) and C.dtype == torch.float64
    assert torch.allclose(C, C.T)
    assert float(torch.linalg.eigvalsh(C).min()) > 0               # the ridge makes it invertible
    rows = fs.training_tokens()[:7]
    C7 = rome.estimate_key_covariance(model, LAYER, rows, ridge=0.0)
    _, cache = model.run_with_cache(rows, [f"blocks.{LAYER}.mlp.hook_post"])
    K = cache[f"blocks.{LAYER}.mlp.hook_post"].reshape(-1, d).double()
    assert torch.allclose(C7, K.T @ K / len(K), atol=1e-10)
    with pytest.raises(ValueError):
        rome.estimate_key_covariance(model, 9, rows)


def test_rome_key_averages_the_subject_keys(roomy, requests_):
    model, fs, vocab, _ = roomy
    q = requests_[0]
    prompts, last = _rewrite(q)
    k = rome.rome_key(model, LAYER, prompts, last)
    single = facts.subject_key(model, LAYER, prompts, last).double()
    assert k.shape == (model.cfg.d_mlp,)
    assert torch.allclose(k, single.mean(0), atol=1e-6)
    assert torch.allclose(rome.rome_key(model, LAYER, prompts[0], last[0]), single[0], atol=1e-6)
    # with prefixes: the key at the shifted subject position, averaged over prefixes too
    prefixes = rome.context_prefixes(model, vocab.index["<bos>"], n=3, length=2, end=vocab.index["."], seed=1)
    assert prefixes[0] == [] and all(p[0] == vocab.index["<bos>"] and len(p) == 4 for p in prefixes[1:])
    rows = [rome.with_prefix(t, s, p) for t, s in zip(prompts, last) for p in prefixes]
    by_hand = facts.subject_key(model, LAYER, [r for r, _ in rows], [s for _, s in rows]).double().mean(0)
    assert torch.allclose(rome.rome_key(model, LAYER, prompts, last, prefixes), by_hand, atol=1e-6)


# --------------------------------------------------------------------------------------
# One edit
# --------------------------------------------------------------------------------------


def test_one_edit_of_the_roomy_model_works_and_stays_local(roomy, requests_):
    model, fs, vocab, C = roomy
    model = copy.deepcopy(model)
    untouched = rome.untouched_prompts(fs, requests_, n=200)
    before = rome.edit_metrics(model, requests_[0], untouched)
    assert before["efficacy"] == 0 and before["neighbourhood"] == 1 and before["untouched_accuracy"] == 1
    rows = []
    for q in requests_[:5]:
        out = rome.rome_edit_model(model, LAYER, q, C)
        rows.append(rome.edit_metrics(model, q, untouched))
        rome.undo_edit(model, LAYER, out["delta_W"])
    mean = {k: sum(r[k] for r in rows) / len(rows) for k in rows[0]}
    # measured (6-layer roomy, lr 0.5, ≤ 40 steps): efficacy 1.0 (top-1 1.0, p(new) 0.84), paraphrase
    # 0.8, neighbourhood 1.0, untouched 0.997; on 10 requests: 1.0 / 1.0 / 0.9 / 1.0 / 0.992
    assert mean["efficacy"] == 1 and mean["efficacy_top1"] == 1
    assert mean["paraphrase"] >= 0.6
    assert mean["neighbourhood"] >= 0.9
    assert mean["untouched_accuracy"] >= 0.97
    assert 0 < mean["score"] <= 1


def test_the_rank_one_update_maps_k_star_to_v_star(roomy, requests_):
    model, fs, vocab, C = roomy
    model = copy.deepcopy(model)
    q = requests_[1]
    mlp = model.blocks[LAYER].mlp.c_proj
    W0 = mlp.weight.detach().clone()
    out = rome.rome_edit_model(model, LAYER, q, C)
    k, v_star, dW = out["k_star"], out["v_star"], out["delta_W"]
    s = torch.linalg.svdvals(dW.double())
    assert s[1] < 1e-5 * s[0]                                           # rank one, to float32 rounding
    W1, b = mlp.weight.detach().double(), mlp.bias.detach().double()
    # W' k* = v* − b (the bias is not part of the memory), to float32 rounding
    assert torch.allclose(W1 @ k, v_star - b, atol=1e-4 * float(v_star.norm()))
    # ... which is the unedited output plus the optimised δ
    assert torch.allclose((W1 - W0.double()) @ k, out["value"]["delta"], atol=1e-4 * float(v_star.norm()))
    assert torch.allclose(W0.double() @ k + b, out["value"]["v"], atol=1e-5)


def test_undoing_the_edit_restores_the_model(roomy, requests_):
    model, fs, vocab, C = roomy
    model = copy.deepcopy(model)
    prompts = fs.prompts("train")
    W0 = model.blocks[LAYER].mlp.c_proj.weight.detach().clone()
    p0 = facts.answer_probabilities(model, prompts)
    out = rome.rome_edit_model(model, LAYER, requests_[2], C)
    assert not torch.allclose(facts.answer_probabilities(model, prompts), p0, atol=1e-3)
    rome.undo_edit(model, LAYER, out["delta_W"])
    assert torch.allclose(model.blocks[LAYER].mlp.c_proj.weight, W0, atol=1e-6)
    assert torch.allclose(facts.answer_probabilities(model, prompts), p0, atol=1e-5)


def test_the_key_of_the_update_is_the_key_of_the_value(roomy, requests_):
    """r-ROME: v* is built from the same prefix-averaged k* that goes into the update."""
    model, fs, vocab, C = roomy
    model = copy.deepcopy(model)
    q = requests_[3]
    prefixes = rome.context_prefixes(model, vocab.index["<bos>"], n=2, length=2, end=vocab.index["."], seed=0)
    mlp = model.blocks[LAYER].mlp.c_proj
    W0, b = mlp.weight.detach().double().clone(), mlp.bias.detach().double()
    out = rome.rome_edit_model(model, LAYER, q, C, prefixes=prefixes)
    k = rome.rome_key(roomy[0], LAYER, *_rewrite(q), prefixes)                  # on the unedited model
    assert torch.equal(out["k_star"], out["value"]["k_star"])
    assert torch.allclose(out["k_star"], k, atol=1e-7)
    assert not torch.allclose(k, rome.rome_key(roomy[0], LAYER, *_rewrite(q)), atol=1e-3)   # prefixes matter
    assert torch.allclose(out["v_star"], W0 @ k + b + out["value"]["delta"], atol=1e-6)


def test_rome_value_clamps_delta_and_reports_its_loss(roomy, requests_):
    model, fs, vocab, _ = roomy
    q = requests_[4]
    small = rome.rome_value(model, LAYER, q, clamp=0.1, steps=5)
    assert float(small["delta"].norm()) <= 0.1 * float(small["v"].norm()) + 1e-5
    full = rome.rome_value(model, LAYER, q)
    # measured: nll 8.08 -> 0.39, p(target) 0.69 (the hardest of the ten requests; 0.03 at lr 0.2, 20 steps)
    assert full["nll"][-1] < full["nll"][0] and full["p_target"] > 0.5
    assert all(p.requires_grad for p in model.parameters())        # the model's flags are restored


# --------------------------------------------------------------------------------------
# The closed forms beside ROME's
# --------------------------------------------------------------------------------------


def _memory(d_v=6, d_k=10, seed=0):
    g = torch.Generator().manual_seed(seed)
    C = editing.random_covariance(d_k, 30.0, g)
    W = torch.randn(d_v, d_k, dtype=torch.float64, generator=g)
    return W, C, g


def test_memit_with_one_key_is_rome():
    W, C, g = _memory()
    k, v = torch.randn(10, dtype=torch.float64, generator=g), torch.randn(6, dtype=torch.float64, generator=g)
    # ΔW = r (C⁻¹k)ᵀ / (λ + kᵀC⁻¹k): ROME's as λ → 0 (λ C + k kᵀ is singular at λ = 0 itself)
    assert torch.allclose(rome.memit_update(W, C, k[:, None], v[:, None], lam=1e-7), editing.rome_update(W, C, k, v), atol=1e-5)
    K, V = torch.randn(10, 4, dtype=torch.float64, generator=g), torch.randn(6, 4, dtype=torch.float64, generator=g)
    assert torch.allclose((W + rome.memit_update(W, C, K, V, lam=1e-7)) @ K, V, atol=1e-4)


def test_the_constrained_update_holds_the_earlier_keys():
    W, C, g = _memory()
    Kp = torch.randn(10, 3, dtype=torch.float64, generator=g)
    k, v = torch.randn(10, dtype=torch.float64, generator=g), torch.randn(6, dtype=torch.float64, generator=g)
    dW = rome.constrained_rome_update(W, C, k, v, Kp)
    assert torch.allclose((W + dW) @ k, v, atol=1e-10)
    assert torch.allclose(dW @ Kp, torch.zeros(6, 3, dtype=torch.float64), atol=1e-10)
    assert torch.allclose(rome.constrained_rome_update(W, C, k, v), editing.rome_update(W, C, k, v), atol=1e-12)


def test_alphaedit_update_lives_in_the_null_space():
    W, C, g = _memory()
    eigenvalues, Q = torch.linalg.eigh(C)
    P = rome.null_space_projection(C, threshold=float(eigenvalues[3] / eigenvalues.mean()) * 1.0001)
    assert torch.allclose(P, Q[:, :4] @ Q[:, :4].T, atol=1e-10)
    k0 = Q[:, 5:] @ torch.randn(5, dtype=torch.float64, generator=g)    # a key the preserved knowledge uses
    k, v = torch.randn(10, dtype=torch.float64, generator=g), torch.randn(6, dtype=torch.float64, generator=g)
    dW = rome.alphaedit_update(W, P, k, v, ridge=1e-9)
    assert torch.allclose(dW @ P, dW, atol=1e-10)
    assert float((dW @ k0).norm()) < 1e-8
    assert torch.allclose((W + dW) @ k, v, atol=1e-5)                  # k has a null-space part: exact
    Kp = Q[:, :4] @ torch.randn(4, 2, dtype=torch.float64, generator=g)
    dW2 = rome.alphaedit_update(W, P, k, v, Kp, ridge=1e-9)
    assert float((dW2 @ Kp).norm()) < 1e-3 * float(dW2.norm())        # and earlier edits are held


# --------------------------------------------------------------------------------------
# Lifelong editing
# --------------------------------------------------------------------------------------


def test_lifelong_edit_records_and_measures_the_real_keys(roomy):
    model, fs, vocab, C = roomy
    model = copy.deepcopy(model)
    W0 = model.blocks[LAYER].mlp.c_proj.weight.detach().clone()
    reqs = rome.lifelong_requests(fs, 6, seed=3)
    assert len({(q.subject, q.relation) for q in reqs}) == 6 and all(q.target != q.old for q in reqs)
    res = rome.lifelong_edit(model, reqs, LAYER, C, record_every=3, untouched=rome.untouched_prompts(fs, reqs, n=100))
    assert res["n_edits"] == [3, 6] and len(res["untouched_accuracy"]) == 3
    assert res["keys"].shape == (model.cfg.d_mlp, 6)
    assert torch.allclose(res["P"], editing.interference_coefficients(C, res["keys"]))
    assert torch.allclose(res["P"].diagonal(), torch.ones(6, dtype=torch.float64))
    assert set(res["p_stats"]) == {"mean", "std", "kurtosis"}
    assert sum(res["efficacy_when_made"]) >= 5                         # measured: 6 of 6, retention 1.0
    rome.undo_edit(model, LAYER, res["delta_W"])
    assert torch.allclose(model.blocks[LAYER].mlp.c_proj.weight, W0, atol=1e-5)


@pytest.mark.slow
def test_alphaedit_finds_no_null_space_in_the_small_mlps():
    """AlphaEdit needs directions the preserved keys never use; a 64-neuron first-layer MLP has
    none (its keys' second moment has no eigenvalue below 1 % of the mean), so the projected
    update cannot make the edit.  Kept as a measured negative result: the chapter says so."""
    model, fs, vocab = facts.load_fact_model("superposed", device="cpu")
    C = rome.estimate_key_covariance(model, LAYER, fs.training_tokens(), pad_id=vocab.index["."])
    P = rome.null_space_projection(C)
    assert int(torch.linalg.matrix_rank(P)) <= 2
    reqs = rome.lifelong_requests(fs, 10, seed=0)
    res = rome.lifelong_edit(model.eval(), reqs, LAYER, C, method="alphaedit", record_every=10)
    assert res["retention"][-1] <= 0.2
