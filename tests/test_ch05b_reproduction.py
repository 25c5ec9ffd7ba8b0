"""Chapter 05b's claims, asserted on the SAEs that `solutions/05b_sae_language_model.ipynb`
trained (see notebook_results.py): TopK SAEs with 256 latents, 800 steps, on the residual
stream `blocks.0.hook_resid_post` of the shipped models, scaled to E‖x‖² = 64; corpus seed
123 (1,000 rows) to train, seed 456 (200 rows) to evaluate.

A TopK SAE (Gao et al. 2024) on the shipped language model's residual stream: the loss with
the SAE spliced in against L0 and against zero- and mean-ablation, latents scored against the
corpus's planted concepts, token detectors told from context features, steering and ablation
of the `plural_subject` latent against a frequency-matched control, and universality across
the two shipped models (Lan et al. 2024)."""

import pytest
import torch

from notebook_results import NotebookResults

RESULTS = NotebookResults(
    "05b_sae_language_model",
    # section 2: the k = 8 SAE spliced into seed0 by the learner's spliced_ce_losses
    ce="ce",
    # section 2: k -> (variance explained on the held-out activations, CE loss recovered vs zero)
    tradeoff="tradeoff",
    # section 2: k -> dict(clean, spliced, zero_ablated, mean_ablated, recovered_zero, recovered_mean)
    ce_by_k="ce_by_k",
    unigram="unigram",
    # section 5: (alpha, latent) -> (margin change at singular verbs, share preferring the plural form);
    # latent -> (margin change at plural verbs, share still preferring the plural form)
    steering="steering",
    ablation="ablation",
    ablation_loss="ablation_loss",
    latents="(plural_latent, control_latent)",
    frequency="frequency[[plural_latent, control_latent]]",
    clean_plural_share="float((clean_margin[singular_next] > 0).double().mean())",
    # section 4: the in_parens latent with and without the "(" before its tokens
    parens_test="interventions.opener_test(model, held_out.tokens.to(device), hook, encode, "
                "best_by_concept['in_parens']['latent'], held_out.label('in_parens'), vocab.index['('])",
    fur="vocab.index['fur']",
    # the implementations the chapter ran: the learner's, never the course's reference
    implementations="[checks.is_reference(f) for f in (pr_fn, ce_losses, steer, ablate)]",
    # section 3: each concept's best latent (k = 8) by F1, and each concept's share of the tokens
    best="best",
    shares="labels.double().mean(dim=0)",
    concepts="list(held_out.concepts)",
    # section 5: the k = 8 SAEs on seed0 and seed1, latents paired by activation correlation
    n_pairs="len(pairs['a'])",
    correlation="pairs['correlation'].cpu()",
    matched="matched",
    baseline="baseline.cpu()",
)
pytestmark = pytest.mark.xdist_group(RESULTS.notebook)


def test_the_solutions_run_the_learners_code_not_the_reference():
    assert RESULTS.get()["implementations"] == [False] * 4


def test_loss_recovered_rises_with_l0():
    results = RESULTS.get()
    ce, tradeoff = results["ce"], results["tradeoff"]
    recovered = {k: r for k, (_, r) in tradeoff.items()}
    fve = {k: v for k, (v, _) in tradeoff.items()}
    assert ce["clean"] == pytest.approx(2.315, abs=0.01)
    assert ce["zero_ablated"] > 8.0  # zeroing the stream is catastrophic (8.77)
    assert 0.9 < recovered[1] < recovered[2] < 1.0  # measured 0.956, 0.996
    assert recovered[8] > 0.995  # 1.000
    assert fve[1] < fve[2] < fve[8] and fve[8] > 0.98  # 0.928, 0.962, 0.988


def test_ce_in_nats_against_both_baselines():
    """Both ablation baselines are worse than a unigram model, so the fraction recovered
    saturates while the loss in nats still shows the k = 1 degradation."""
    results = RESULTS.get()
    by_k, unigram = results["ce_by_k"], results["unigram"]
    assert unigram == pytest.approx(4.86, abs=0.01)
    for k, c in by_k.items():
        assert c["clean"] == pytest.approx(2.315, abs=0.01)
        assert c["zero_ablated"] == pytest.approx(8.77, abs=0.05)  # measured 8.772
        assert c["mean_ablated"] == pytest.approx(8.98, abs=0.05)  # measured 8.978: worse than zeros
        assert c["zero_ablated"] > unigram + 3 and c["mean_ablated"] > unigram + 3
    lost = {k: c["spliced"] - c["clean"] for k, c in by_k.items()}
    assert lost[1] == pytest.approx(0.28, abs=0.06)  # measured 0.286 nats (0.312 and 0.248 on other CPUs)
    assert 0.005 < lost[2] < 0.06  # 0.025
    assert abs(lost[4]) < 0.01 and abs(lost[8]) < 0.01  # 0.001, -0.000
    for k in (4, 8):  # the fraction recovered saturates against either baseline
        assert by_k[k]["recovered_zero"] > 0.998 and by_k[k]["recovered_mean"] > 0.998
    assert 0.93 < by_k[1]["recovered_zero"] < 0.97 and 0.93 < by_k[1]["recovered_mean"] < 0.97  # 0.952, 0.953


def test_steering_with_the_plural_latent_beats_its_control():
    """Measured across CPU settings, whose SAEs differ (the committed run first): the plural
    latent at α = 4 moves the margin +8.44 nats and flips 87 % (other settings: +8.0 to +9.6,
    84-92 %); the control (no concept's best latent, frequency-matched) +4.52 and 22 %
    (others: +0.7 to +2.1, 14 %)."""
    results = RESULTS.get()
    plural, control = results["latents"]
    assert plural != control
    frequency = results["frequency"]
    assert abs(float(frequency[0] - frequency[1])) < 0.01  # frequency-matched (6.6 % and 6.4 %)
    best = {s["latent"] for s in results["best"]}
    assert control not in best  # not any concept's detector (the animal latent once was the control)
    steering = results["steering"]
    change, flipped = steering[4, plural]
    control_change, control_flipped = steering[4, control]
    assert change == pytest.approx(8.8, abs=1.5)
    assert flipped > 0.75 and flipped > results["clean_plural_share"] + 0.5
    assert control_change < change - 2 and control_flipped < results["clean_plural_share"] + 0.2
    for alpha in (2, 4, 8):
        assert steering[alpha, plural][0] > steering[alpha, control][0] + 1


def test_ablating_the_plural_latent_dents_agreement_more_than_its_control():
    results = RESULTS.get()
    plural, control = results["latents"]
    change, still = results["ablation"][plural]
    control_change, control_still = results["ablation"][control]
    assert -2.5 < change < -0.25  # measured -0.58 nats of a +6.01 margin (other CPU settings: -0.52 to -2.16)
    assert abs(control_change) < 0.1  # +0.00
    assert still > 0.85  # agreement survives: 97 % (89 % to 97 %)
    loss = results["ablation_loss"]  # the average loss barely moves: +0.001 nats (up to +0.017), control +0.001
    assert 0 < loss[plural] < 0.03 and abs(loss[control]) < 0.005


def test_the_in_parens_latent_is_not_a_clean_context_feature():
    """Without the "(" before its tokens the best in_parens latent still fires on about half of
    them (52-53 % in every CPU setting tried).  Which token it fires on most depends on the SAE
    the CPU's rounding led to: "fur" in the committed run (Intel AVX-512) and on AMD AVX2, where
    it is a detector of the word; "with" under ATEN_CPU_CAPABILITY=default + MKL_CBWR=COMPATIBLE."""
    test, fur = RESULTS.get()["parens_test"], RESULTS.get()["fur"]
    still = float((test["without_opener"] > 0).double().mean())
    assert 0.35 < still < 0.8
    if int(torch.bincount(test["tokens"]).argmax()) == fur:
        on_fur = test["tokens"] == fur
        assert on_fur.sum() >= 20
        in_context, without = float(test["in_context"][on_fur].mean()), float(test["without_opener"][on_fur].mean())
        assert without > 0.75 * in_context  # 2.42 without the "(" against 2.78 in context


def test_latents_detect_planted_concepts():
    results = RESULTS.get()
    best = {s["concept"]: s for s in results["best"]}
    assert list(best) == results["concepts"]
    f1 = torch.tensor([s["f1"] for s in best.values()])
    assert f1.min() > 0.25 and f1.max() < 0.85  # measured 0.33 to 0.69: no perfect detector
    assert sum(float(v) > 0.6 for v in f1) >= 4  # colour, name, verb, sentence_end (in_list 0.598 just misses)
    for concept in ("name", "verb"):  # precise detectors of word classes (0.81, 0.84)
        assert best[concept]["precision"] > 0.7
    assert best["colour"]["recall"] > 0.95  # one latent fires on every colour (1.00)
    # chance level: a latent firing at random on the concept's share of tokens has F1 = share
    assert (f1 > 2 * results["shares"]).all()


def test_universality_across_seeds():
    results = RESULTS.get()
    assert results["n_pairs"] > 200  # live latents (234 of 256)
    assert 0.15 < float((results["correlation"] > 0.9).double().mean()) < 0.4  # 21 % have a twin
    assert results["matched"] > float(results["baseline"].max()) + 0.03  # 0.508 vs random 0.435 (max 0.448)
