"""Chapter 05a's claims, asserted on the SAEs that `solutions/05a_sparse_autoencoders.ipynb`
trained (see notebook_results.py): 64 features with decay 0.99 hidden in 32 dimensions,
20,000 evaluation inputs, every SAE 1,000 steps of 1,024 inputs unless said otherwise.

Sharkey, Braun & Millidge 2022 (dictionary recovery, the L1 coefficient's window, the true
dictionary size), Gao et al. 2024, Bussmann et al. 2024, Rajamanoharan et al. 2024 (TopK,
BatchTopK, JumpReLU, Gated: no shrinkage at matched sparsity), Bricken et al. 2023
(resampling), and an SAE on chapter 01's pentagon."""

import pytest

from notebook_results import NotebookResults

RESULTS = NotebookResults(
    "05a_sparse_autoencoders",
    # section 4: the ReLU SAE, 128 latents, λ = 0.3, scored against the true directions
    relu="relu_scores",
    # section 5: the same SAE at λ = 0.01 ... 3
    goldilocks="goldilocks",
    # section 6: 32 ... 256 latents at λ = 0.3 (scores with 'rare'), and the MMCS of each
    # dictionary against the next larger one
    by_size="by_size",
    agreement="dict(zip(zip(sizes, sizes[1:]), agreement))",
    # section 7: five architectures at matched sparsity, keyed by kind
    architectures="{kind: architectures[name] for name, (kind, _) in settings.items()}",
    # section 8: 64 latents, lr 0.1, without and with resampling every 100 steps
    resampling="{every: scores for every, (scores, _) in resampling.items()}",
    # section 9: the two SAEs on the best pentagon's hidden layer, on its 20,000 held-out inputs
    pentagon="{kind: saelib.evaluate(toy_saes[name], h_toy[80_000:], W_toy.T) for kind, name in "
             "[('relu', 'ReLU + L1, λ = 0.1'), ('topk', 'TopK, k = 1')]}",
    # section 7: the learner's TopK and JumpReLU variants of their SAE
    variants="{name: score(model) for name, model in variants.items()}",
    # whose code made the results: in the solutions notebook, none of it is the course's reference
    implementations="[checks.is_reference(f) for f in (encode_fn, decode_fn, loss_fn, project_fn, normalise_fn, "
                    "Autoencoder, train_fn, mmcs_fn, metrics_fn, topk_fn, batch_topk_fn, jumprelu_grads_fn, "
                    "resample_fn, resample_latents_fn)]",
)
pytestmark = pytest.mark.xdist_group(RESULTS.notebook)


def test_l1_sae_recovers_the_dictionary():
    scores = RESULTS.get()["relu"]
    assert scores["mmcs"] >= 0.99  # measured 0.994
    assert scores["recovered"] == 1.0
    assert 0.75 < scores["shrinkage"] < 0.9  # measured 0.816: the L1 penalty shrinks


def test_goldilocks_zone():
    goldilocks = RESULTS.get()["goldilocks"]
    assert sorted(goldilocks) == [0.01, 0.03, 0.1, 0.3, 1.0, 3.0]
    best = max(goldilocks, key=lambda lam: goldilocks[lam]["mmcs"])
    assert best in (0.3, 1.0)
    for lam in (0.01, 0.03):  # too little: dense, unaligned (measured MMCS 0.57, 0.75; dense 0.84, 0.91)
        assert goldilocks[lam]["mmcs"] < 0.8 and goldilocks[lam]["dense"] > 0.5 and goldilocks[lam]["l0"] > 30
    assert goldilocks[1.0]["shrinkage"] < 0.6 and goldilocks[1.0]["dead"] > 0.03  # measured 0.50, 0.078
    assert goldilocks[3.0]["dead"] > 0.5 and goldilocks[3.0]["l0"] < 0.1  # measured 0.69, 0.002
    shrink = [goldilocks[lam]["shrinkage"] for lam in (0.01, 0.03, 0.1, 0.3, 1.0)]
    assert shrink == sorted(shrink, reverse=True)  # more L1, more shrinkage


def test_three_signals_of_the_true_dictionary_size():
    results = RESULTS.get()
    by_size, agreement = results["by_size"], results["agreement"]
    assert sorted(by_size) == [32, 48, 64, 96, 128, 256]
    mse = {n: r["mse"] for n, r in by_size.items()}
    assert mse[32] > mse[48] > mse[64]  # improving up to the true size (0.458, 0.319, 0.239)
    assert mse[48] / mse[64] > 1.2
    for n in (96, 128, 256):  # then flat (0.228, 0.228, 0.230)
        assert mse[n] / mse[64] > 0.9
    assert all(by_size[n]["rare"] == 0 for n in (32, 48, 64))  # nearly dead latents appear
    assert by_size[96]["rare"] <= 0.011  # 0 on an AVX2 CPU, 1 latent of 96 on an AVX-512 one
    assert by_size[128]["rare"] > 0.03 and by_size[256]["rare"] > 0.2  # above the truth (0.07, 0.37)
    assert max(agreement, key=agreement.get) == (64, 96)  # successive dictionaries agree best at 64
    assert agreement[(64, 96)] > 0.98  # measured 0.994


def test_architectures_at_matched_sparsity():
    architectures = RESULTS.get()["architectures"]
    assert sorted(architectures) == ["batchtopk", "gated", "jumprelu", "relu", "topk"]
    for kind, scores in architectures.items():
        assert 4.0 < scores["l0"] < 6.0, kind  # matched sparsity (4.4 to 5.7)
        assert scores["mmcs"] > 0.98, kind  # all recover the dictionary (0.986 to 0.996)
    assert architectures["relu"]["shrinkage"] < 0.8  # measured 0.71
    for kind in ("topk", "batchtopk", "jumprelu", "gated"):
        assert architectures[kind]["shrinkage"] == pytest.approx(1.0, abs=0.02), kind  # 1.002 to 1.007
        assert architectures[kind]["fve"] > architectures["relu"]["fve"] + 0.08, kind  # 0.88-0.91 vs 0.76


def test_resampling_revives_dead_latents():
    scores = RESULTS.get()["resampling"]
    assert scores[None]["dead"] > 0.3 and scores[100]["dead"] < 0.05  # measured 0.375 -> 0.000
    assert scores[100]["recovered"] > scores[None]["recovered"] + 0.2  # 0.41 -> 0.77
    assert scores[100]["mmcs"] > scores[None]["mmcs"] + 0.05  # 0.81 -> 0.93
    assert scores[100]["fve"] > scores[None]["fve"]  # 0.735 -> 0.804


def test_an_sae_recovers_the_pentagon():
    results = RESULTS.get()["pentagon"]
    assert results["topk"]["mmcs"] > 0.995  # measured 1.000
    assert results["relu"]["recovered"] == 1.0 and results["relu"]["mmcs"] > 0.95  # every side within 0.9; 0.971


def test_the_learners_topk_and_jumprelu_variants_match_the_library_architectures():
    results = RESULTS.get()
    variants, architectures = results["variants"], results["architectures"]
    for name, kind in (("your TopK", "topk"), ("your JumpReLU", "jumprelu")):
        assert variants[name]["mmcs"] > 0.98 and variants[name]["shrinkage"] == pytest.approx(1.0, abs=0.02), name
        assert variants[name]["l0"] == pytest.approx(architectures[kind]["l0"], abs=0.2), name
    # without AuxK, the learner's TopK leaves more latents dead (measured 0.43 against 0.27)
    assert variants["your TopK"]["dead"] > architectures["topk"]["dead"] + 0.05


def test_no_result_was_made_with_the_course_reference():
    assert RESULTS.get()["implementations"] == [False] * 14
