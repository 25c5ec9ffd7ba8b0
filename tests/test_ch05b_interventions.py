"""course_utils.interventions: splicing with a forward hook, steering, ablating one latent,
the agreement margin and the opener test; and plots.plot_k_sweep's ticks."""

from __future__ import annotations

import math

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import pytest
import torch
import torch.nn.functional as F

from course_utils import interventions, language, lm, plots
from course_utils import sae as saelib

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def shipped():
    model, vocab = lm.load_lm("seed0", device="cpu")
    corpus = language.generate_corpus(24, seed=7)
    return model, vocab, corpus


def small_model(seed=0):
    cfg = lm.GPTConfig(vocab_size=13, n_ctx=10, d_model=8, n_layers=2, n_heads=2)
    model = lm.GPT(cfg, seed=seed, device="cpu").eval()
    with torch.no_grad():
        model.wte.weight.mul_(30)
    tokens = torch.randint(1, 13, (3, 9), generator=torch.Generator().manual_seed(seed))
    tokens[:, 0] = 0
    return model, tokens


def no_hooks(model) -> bool:
    return all(not m._forward_hooks for m in model.modules())


def test_run_with_forward_hook_replaces_positions_after_bos_and_removes_the_hook():
    model, tokens = small_model()
    hook = "blocks.0.hook_resid_post"
    with torch.no_grad():
        clean = model(tokens)
        _, cache = model.run_with_cache(tokens, [hook])
        same = interventions.run_with_forward_hook(model, tokens, hook, lambda a: a)
        zeroed = interventions.run_with_forward_hook(model, tokens, hook, torch.zeros_like)
        expected = model.run_with_hooks(tokens, {hook: lambda x: torch.cat([x[:, :1], torch.zeros_like(x[:, 1:])], 1)})
    assert torch.allclose(same, clean, atol=1e-6) and no_hooks(model)
    assert torch.allclose(zeroed, expected, atol=1e-6)
    assert torch.allclose(zeroed[:, 0], clean[:, 0], atol=1e-6)  # causal: position 0 unchanged

    def broken(a):
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        interventions.run_with_forward_hook(model, tokens, hook, broken)
    assert no_hooks(model) and torch.allclose(model(tokens), clean, atol=1e-6)


def test_spliced_ce_losses_agrees_with_lm_ce_loss_recovered(shipped):
    model, vocab, corpus = shipped
    hook = "blocks.0.hook_resid_post"
    g = torch.Generator().manual_seed(0)
    A = torch.randn(64, 64, generator=g) * 0.05

    def reconstruct(a):
        return a + a @ A

    ours = interventions.spliced_ce_losses(model, corpus.tokens, hook, reconstruct)
    theirs = lm.ce_loss_recovered(model, corpus.tokens, hook, reconstruct)
    for key in ("clean", "spliced", "zero_ablated"):
        assert ours[key] == pytest.approx(theirs[key], rel=1e-5)
    assert ours["recovered_zero"] == pytest.approx(theirs["recovered"], rel=1e-4)
    assert ours["clean"] == pytest.approx(lm.evaluate_lm(model, corpus.tokens), rel=1e-5)
    # the mean baseline by hand
    _, cache = model.run_with_cache(corpus.tokens, [hook])
    mean = cache[hook][:, 1:].reshape(-1, 64).mean(0)
    with torch.no_grad():
        logits = model.run_with_hooks(corpus.tokens, {hook: lambda x: torch.cat(
            [x[:, :1], mean.expand_as(x[:, 1:])], 1)})
    by_hand = F.cross_entropy(logits[:, :-1].reshape(-1, len(vocab)), corpus.tokens[:, 1:].reshape(-1))
    assert ours["mean_ablated"] == pytest.approx(float(by_hand), rel=1e-5)
    assert ours["recovered_mean"] == pytest.approx(
        (ours["mean_ablated"] - ours["spliced"]) / (ours["mean_ablated"] - ours["clean"]))
    perfect = interventions.spliced_ce_losses(model, corpus.tokens, hook, lambda a: a)
    assert perfect["recovered_zero"] == pytest.approx(1.0) and perfect["recovered_mean"] == pytest.approx(1.0)
    assert no_hooks(model)


def test_steer_logits_adds_the_direction_after_bos():
    model, tokens = small_model(1)
    hook = "blocks.1.hook_resid_pre"
    direction = torch.randn(8, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        clean = model(tokens)
        assert torch.allclose(interventions.steer_logits(model, tokens, hook, direction, 0.0), clean, atol=1e-6)
        steered = interventions.steer_logits(model, tokens, hook, direction, 3.0)
        expected = model.run_with_hooks(tokens, {hook: lambda x: torch.cat([x[:, :1], x[:, 1:] + 3.0 * direction], 1)})
    assert torch.allclose(steered, expected, atol=1e-5) and not torch.allclose(steered, clean, atol=1e-3)
    assert no_hooks(model)


def test_ablate_latent_removes_exactly_one_latents_part():
    g = torch.Generator().manual_seed(0)
    sae = saelib.TopKSAE(6, 12, k=3, device="cpu", generator=g)
    x = torch.randn(20, 6, generator=g)
    with torch.no_grad():
        f = sae.encode(x)
        latent = int(f.gt(0).sum(0).argmax())
        out = interventions.ablate_latent(x, sae, latent)
        assert torch.allclose(x - out, f[:, latent, None] * sae.W_dec[latent], atol=1e-6)
        silent = f.gt(0).sum(0) == 0
        if silent.any():
            assert torch.equal(interventions.ablate_latent(x, sae, int(silent.nonzero()[0])), x)
        rows = f[:, latent] == 0
        assert torch.allclose(out[rows], x[rows])  # where the latent is silent nothing changes


def test_agreement_margin_reads_the_next_verb_pair():
    vocab = language.default_vocab()
    tokens = torch.tensor([vocab.encode("the cats chase a dog . the cat chases", bos=True)])
    T = tokens.shape[1]
    logits = torch.zeros(1, T, len(vocab))
    # position of "cats" predicts "chase": make p(chase) high
    cats, cat = 2, 8
    logits[0, cats, vocab.index["chase"]] = 3.0
    logits[0, cat, vocab.index["chases"]] = 2.0
    margin, plural, singular = interventions.agreement_margin(logits, tokens, vocab)
    assert margin.shape == plural.shape == singular.shape == (1, T - 1)
    assert plural[0].nonzero().flatten().tolist() == [cats]
    assert singular[0].nonzero().flatten().tolist() == [cat]
    assert margin[0, cats] == pytest.approx(3.0) and margin[0, cat] == pytest.approx(-2.0)


def test_opener_test_reads_the_same_token_without_its_opener(shipped):
    model, vocab, _ = shipped
    hook = "blocks.0.hook_resid_post"
    fur, paren = vocab.index["fur"], vocab.index["("]
    tokens = torch.tensor([vocab.encode("the cat ( with red fur ) sees a dog .", bos=True)])
    labels = language.concept_labels(tokens)[..., language.CONCEPTS.index("in_parens")]
    token_dir = model.wte.weight[fur].detach()

    def encode(a):
        """Latent 0 reads the embedding of "fur" (a token detector); latent 1 never fires."""
        return torch.stack([(a @ token_dir).relu(), torch.zeros(len(a))], dim=1)

    with torch.no_grad():
        result = interventions.opener_test(model, tokens, hook, encode, 0, labels, paren)
        on_fur = result["tokens"] == fur
        assert result["n"] == len(result["tokens"]) >= 1 and on_fur.sum() == 1
        assert set(result["tokens"].tolist()) <= {vocab.index[w] for w in ("with", "red", "fur")}
        # without the "(" the same token is read again: the token detector keeps firing on "fur"
        before, after = float(result["in_context"][on_fur]), float(result["without_opener"][on_fur])
        assert before > 0 and after > 0.5 * before
        # by hand: delete "(" and read "fur" one position earlier
        edited = torch.tensor([vocab.encode("the cat with red fur ) sees a dog . .", bos=True)])
        _, cache = model.run_with_cache(edited, [hook])
        p = vocab.encode("the cat with red fur", bos=True).__len__() - 1
        assert after == pytest.approx(float(encode(cache[hook][0, p:p + 1])[0, 0]), rel=1e-5)
        empty = interventions.opener_test(model, tokens, hook, encode, 1, labels, paren)
    assert empty["n"] == 0


def test_plot_k_sweep_labels_each_k_once():
    fig = plots.plot_k_sweep([1, 2, 4, 8], {"a": [0.9, 0.95, 0.97, 0.99], "b": [2.6, 2.3, 2.3, 2.3]},
                             references={"b": {"clean": 2.3}})
    fig.canvas.draw()
    for axis in fig.axes:
        labels = [t.get_text() for t in axis.get_xticklabels() if t.get_text()]
        assert labels == ["1", "2", "4", "8"]
        assert not [t.get_text() for t in axis.get_xticklabels(minor=True) if t.get_text()]
    assert fig.axes[1].get_legend() is not None
    with pytest.raises(ValueError, match="3 values for 4 values of k"):
        plots.plot_k_sweep([1, 2, 4, 8], {"a": [1, 2, 3]})
    plt.close("all")


def test_lm_precision_recall_matches_concept_scores_and_passes_the_check():
    from course_utils import checks

    g = torch.Generator().manual_seed(3)
    acts = torch.relu(torch.randn(200, 12, generator=g) - 0.5)
    acts[:, 4] = 0  # a latent that never fires
    labels = torch.rand(200, 2, generator=g) < 0.3
    for c in range(2):
        precision, recall = lm.precision_recall(acts > 0, labels[:, c])
        assert precision.shape == recall.shape == (12,) and precision[4] == 0
        best = lm.concept_scores(acts, labels)[c]
        assert precision[best["latent"]] == pytest.approx(best["precision"])
        assert recall[best["latent"]] == pytest.approx(best["recall"])
    assert checks.evaluate("precision_recall", lm.precision_recall).passed
