"""Chapter 05a results asserted with the notebook's settings and seeds (one thread).

Sharkey, Braun & Millidge 2022 (dictionary recovery, the L1 coefficient's window, the true
dictionary size), Gao et al. 2024, Bussmann et al. 2024, Rajamanoharan et al. 2024 (TopK,
BatchTopK, JumpReLU, Gated: no shrinkage at matched sparsity), Bricken et al. 2023
(resampling), and an SAE on chapter 01's pentagon.  About a minute in all."""

import pytest
import torch

from course_utils import sae as saelib
from course_utils.toy_models import ToyModel, evaluate_loss, train


@pytest.fixture(scope="module")
def data(single_thread):
    data = saelib.SyntheticFeatures(64, 32, mean_active=5.0, decay=0.99, device="cpu",
                                    generator=torch.Generator().manual_seed(0))
    return data, data.sample(20_000, torch.Generator().manual_seed(5))


def trained(data, kind="relu", n_latents=128, steps=1_000, lr=1e-2, **kwargs):
    synthetic, x_eval = data
    model = saelib.make_sae(kind, 32, n_latents, device="cpu", generator=torch.Generator().manual_seed(100), **kwargs)
    run = saelib.train_sae(model, synthetic, steps=steps, batch_size=1_024, lr=lr, progress=False)
    return model, run, saelib.evaluate(model, x_eval, synthetic.directions)


@pytest.fixture(scope="module")
def goldilocks(data):
    return {lam: trained(data, l1_coefficient=lam)[2] for lam in [0.01, 0.03, 0.1, 0.3, 1.0, 3.0]}


def test_l1_sae_recovers_the_dictionary(goldilocks):
    scores = goldilocks[0.3]
    assert scores["mmcs"] >= 0.99  # measured 0.994
    assert scores["recovered"] == 1.0
    assert 0.75 < scores["shrinkage"] < 0.9  # measured 0.816: the L1 penalty shrinks


def test_goldilocks_zone(goldilocks):
    best = max(goldilocks, key=lambda lam: goldilocks[lam]["mmcs"])
    assert best in (0.3, 1.0)
    for lam in (0.01, 0.03):  # too little: dense, unaligned (measured MMCS 0.57, 0.75; dense 0.84, 0.91)
        assert goldilocks[lam]["mmcs"] < 0.8 and goldilocks[lam]["dense"] > 0.5 and goldilocks[lam]["l0"] > 30
    assert goldilocks[1.0]["shrinkage"] < 0.6 and goldilocks[1.0]["dead"] > 0.03  # measured 0.50, 0.078
    assert goldilocks[3.0]["dead"] > 0.5 and goldilocks[3.0]["l0"] < 0.1  # measured 0.69, 0.002
    shrink = [goldilocks[lam]["shrinkage"] for lam in (0.01, 0.03, 0.1, 0.3, 1.0)]
    assert shrink == sorted(shrink, reverse=True)  # more L1, more shrinkage


@pytest.fixture(scope="module")
def by_size(data):
    sizes = [32, 48, 64, 96, 128, 256]
    results, dictionaries = {}, {}
    for n in sizes:
        model, _, scores = trained(data, n_latents=n, l1_coefficient=0.3)
        with torch.no_grad():
            scores["rare"] = float((saelib.firing_rates(model.encode(data[1])) < 1e-3).double().mean())
        results[n], dictionaries[n] = scores, model.W_dec.detach()
    agreement = {(a, b): saelib.mmcs(dictionaries[a], dictionaries[b]) for a, b in zip(sizes, sizes[1:])}
    return results, agreement


def test_three_signals_of_the_true_dictionary_size(by_size):
    results, agreement = by_size
    mse = {n: r["mse"] for n, r in results.items()}
    assert mse[32] > mse[48] > mse[64]  # improving up to the true size (0.458, 0.319, 0.239)
    assert mse[48] / mse[64] > 1.2
    for n in (96, 128, 256):  # then flat (0.228, 0.228, 0.230)
        assert mse[n] / mse[64] > 0.9
    assert all(results[n]["rare"] == 0 for n in (32, 48, 64, 96))  # nearly dead latents appear
    assert results[128]["rare"] > 0.03 and results[256]["rare"] > 0.2  # above the truth (0.07, 0.37)
    assert max(agreement, key=agreement.get) == (64, 96)  # successive dictionaries agree best at 64
    assert agreement[(64, 96)] > 0.98


@pytest.fixture(scope="module")
def architectures(data):
    settings = {"relu": dict(l1_coefficient=0.5), "topk": dict(k=5), "batchtopk": dict(k=5),
                "jumprelu": dict(l0_coefficient=0.02), "gated": dict(l1_coefficient=0.4)}
    return {kind: trained(data, kind, **kwargs)[2] for kind, kwargs in settings.items()}


def test_architectures_at_matched_sparsity(architectures):
    for kind, scores in architectures.items():
        assert 4.0 < scores["l0"] < 6.0, kind  # matched sparsity (4.4 to 5.7)
        assert scores["mmcs"] > 0.98, kind  # all recover the dictionary (0.986 to 0.996)
    assert architectures["relu"]["shrinkage"] < 0.8  # measured 0.71
    for kind in ("topk", "batchtopk", "jumprelu", "gated"):
        assert architectures[kind]["shrinkage"] == pytest.approx(1.0, abs=0.02), kind  # 1.002 to 1.007
        assert architectures[kind]["fve"] > architectures["relu"]["fve"] + 0.08, kind  # 0.88-0.91 vs 0.76


def test_resampling_revives_dead_latents(data):
    synthetic, x_eval = data
    scores = {}
    for every in (None, 100):
        model = saelib.ReLUSAE(32, 64, l1_coefficient=0.3, device="cpu", generator=torch.Generator().manual_seed(100))
        saelib.train_sae(model, synthetic, steps=1_500, batch_size=1_024, lr=0.1, schedule="cosine",
                         resample_every=every, progress=False)
        scores[every] = saelib.evaluate(model, x_eval, synthetic.directions)
    assert scores[None]["dead"] > 0.3 and scores[100]["dead"] < 0.1  # measured 0.375 -> 0.047
    assert scores[100]["recovered"] > scores[None]["recovered"] + 0.15  # 0.41 -> 0.66
    assert scores[100]["fve"] > scores[None]["fve"]


def test_an_sae_recovers_the_pentagon(single_thread):
    pentagon = ToyModel(5, 2, n_instances=4, feature_probability=0.05, device="cpu",
                        generator=torch.Generator().manual_seed(0))
    train(pentagon, steps=10_000, progress=False)
    best = int(evaluate_loss(pentagon).argmin())
    W = pentagon.W.detach()[best]
    h = pentagon.generate_batch(100_000, torch.Generator().manual_seed(1))[best] @ W.T
    results = {}
    for kind, kwargs in [("relu", dict(l1_coefficient=0.1)), ("topk", dict(k=1))]:
        model = saelib.make_sae(kind, 2, 5, device="cpu", generator=torch.Generator().manual_seed(3), **kwargs)
        saelib.train_sae(model, h[:80_000], steps=2_000, batch_size=1_024, lr=3e-3, progress=False)
        results[kind] = saelib.evaluate(model, h[80_000:], W.T)
    assert results["topk"]["mmcs"] > 0.995  # measured 1.000
    assert results["relu"]["recovered"] == 1.0 and results["relu"]["mmcs"] > 0.95  # every side within 0.9; 0.971
