"""Chapter 01 reproduces Elhage et al. 2022; these tests assert the paper's results on the
models that `solutions/01_toy_models.ipynb` trained (see notebook_results.py), so the
notebook's printed numbers are the ones checked here."""

import pytest
import torch

from course_utils import geometry
from notebook_results import NotebookResults

RESULTS = NotebookResults(
    "01_toy_models",
    five_W="W5", five_b="b5",
    pent_W="pent.W.detach().cpu()", pent_b="pent.b.detach().cpu()", pent_loss="pent_loss.cpu()",
    sparsities="sparsities",
    sweep_W="{activation: model.W.detach().cpu() for activation, model in sweep.items()}",
    relative_importance="relative_importance", density="density", diagram_W="diagram_W",
    benefit="benefit.item()", interference="interference.item()", mean_v2="float(v.square().mean())",
    paid_linear="interference_paid(torch.zeros_like(b_best), 'linear')",
    paid_relu="interference_paid(torch.zeros_like(b_best), 'relu')",
    paid_relu_bias="interference_paid(b_best, 'relu')",
    implementations="[checks.is_reference(f) for f in (forward, make_batch, weighted_loss, Model, train_fn, "
                    "norms_fn, interference_fn, phase_fn, terms_fn)]",
)
pytestmark = pytest.mark.xdist_group(RESULTS.notebook)


def test_n5_m2_dense_keeps_top_two_orthogonal_and_sparse_stores_all():
    """n=5, m=2, importance 0.9^i, 1 - S = 1, 0.3, 0.1, 0.03; best of 4 seeds each."""
    W, b = RESULTS.get()["five_W"], RESULTS.get()["five_b"]
    norms = geometry.feature_norms(W)
    # Dense: features 0 and 1 at norm ~1, exactly orthogonal; the rest dropped, bias = E[x] = 0.5.
    torch.testing.assert_close(norms[0, :2], torch.ones(2), atol=0.05, rtol=0)
    assert norms[0, 2:].max() < 0.1
    assert abs(float(W[0, :, 0] @ W[0, :, 1])) < 0.05
    torch.testing.assert_close(b[0, 2:], torch.full((3,), 0.5), atol=0.05, rtol=0)
    # 1 - S = 0.3: four features as two antipodal pairs, the two most important among them.
    kept = norms[1] > 0.5
    assert int(kept.sum()) == 4 and kept[0] and kept[1]
    angles = geometry.sorted_angle_gaps(W[1:2])[0]
    torch.testing.assert_close(angles, torch.full((4,), 90.0), atol=5.0, rtol=0)
    # Sparsest: all five represented, with negative biases.
    assert (norms[2:] > 0.9).all()
    assert (b[3] < -0.1).all()


def test_pentagon_and_its_local_minimum():
    """n=5, m=2, 1 - S = 0.05, 16 seeds."""
    results = RESULTS.get()
    W, b, loss = results["pent_W"], results["pent_b"], results["pent_loss"]
    seeds = W.shape[0]
    gaps = geometry.sorted_angle_gaps(W)
    best = int(loss.argmin())
    # The best seed is a regular pentagon: five 72° gaps, equal norms a little above 1,
    # equal negative biases.
    assert len(gaps[best]) == 5
    torch.testing.assert_close(gaps[best], torch.full((5,), 72.0), atol=3.0, rtol=0)
    norms = geometry.feature_norms(W)[best]
    assert 1.0 < norms.min() and norms.max() < 1.3 and norms.max() - norms.min() < 0.05
    assert (b[best] < -0.15).all() and b[best].max() - b[best].min() < 0.05
    # Most seeds find it; some settle in two antipodal pairs with a feature left out,
    # at clearly higher loss (about twice).
    pentagons = [k for k, g in enumerate(gaps) if len(g) == 5 and (g - 72).abs().max() < 5]
    others = [k for k in range(seeds) if k not in pentagons]
    assert len(pentagons) >= seeds // 2
    assert others, "expected at least one seed in the two-digon local minimum"
    for k in others:
        assert len(gaps[k]) == 4 and (gaps[k] - 90).abs().max() < 5
        assert loss[k] > 1.5 * loss[best]


def test_n20_m5_linear_keeps_top_five_relu_superposes_in_importance_order():
    """n=20, m=5, importance 0.7^i, S = 0 … 0.999, linear and ReLU models."""
    results = RESULTS.get()
    sparsities = results["sparsities"]
    represented = {}
    for activation in ["linear", "relu"]:
        W = results["sweep_W"][activation]
        norms, interference = geometry.feature_norms(W), geometry.superposition_interference(W)
        represented[activation] = [set((norms[k] > 0.5).nonzero().flatten().tolist()) for k in range(len(sparsities))]
        if activation == "linear":
            # Exactly the top five, orthogonal, at every sparsity.
            assert all(kept == {0, 1, 2, 3, 4} for kept in represented["linear"])
            assert interference[norms > 0.5].max() < 0.05
        else:
            dense = norms[0] > 0.5
            assert set(dense.nonzero().flatten().tolist()) == {0, 1, 2, 3, 4}
            assert interference[0][dense].max() < 0.05  # dense: no superposition
            # Sparse: superposed features (interference ~1 or more).
            assert (interference[-1][norms[-1] > 0.5] > 0.5).all()
    counts = [len(kept) for kept in represented["relu"]]
    assert counts == sorted(counts), counts  # more features as sparsity grows
    assert counts[0] == 5 and counts[-1] >= 10
    for kept in represented["relu"]:
        # In order of importance: the kept set is the top-k, up to at most one gap.
        top_k = set(range(len(kept)))
        assert len(top_k - kept) <= 1, kept


def test_n2_m1_phase_diagram_matches_closed_form():
    """10 × 10 grid of relative importance 0.1 … 10 and density 0.01 … 1, 4 seeds, 3,000 steps."""
    results = RESULTS.get()
    relative_importance, density = results["relative_importance"], results["density"]
    assert relative_importance.shape == density.shape == (10,)
    rr, ss = torch.meshgrid(relative_importance, density, indexing="ij")
    trained = geometry.classify_n2_m1(results["diagram_W"].reshape(-1, 1, 2)).reshape(10, 10)
    closed = geometry.phase_closed_form(rr, ss)
    assert (trained == closed).float().mean() >= 0.9
    # All three phases appear where predicted: dense and r < 1 -> ignore feature 2,
    # dense and r > 1 -> ignore feature 1, sparse -> antipodal pair.
    assert trained[0, -1] == 0 and trained[-1, -1] == 2 and trained[4, 0] == 1


def test_the_solutions_run_the_learners_code_not_the_references():
    """Every implementation the chapter ran is the notebook's own (the checks passed)."""
    assert RESULTS.get()["implementations"] == [False] * 9


def test_feature_benefit_and_interference_and_what_the_bias_buys():
    """The paper's split of the linear readout's one-hot loss, on the best pentagon: the linear
    readout pays the whole interference term (× E[v²]); the ReLU alone pays a small part of it
    (the pentagon's large overlaps are negative), and with the trained negative bias almost none."""
    r = RESULTS.get()
    assert r["interference"] > 1.0  # four neighbours overlap each of the five features
    assert r["paid_linear"] == pytest.approx(r["interference"] * r["mean_v2"], rel=1e-4)
    assert 0.05 * r["paid_linear"] < r["paid_relu"] < 0.25 * r["paid_linear"]
    assert r["paid_relu_bias"] < 0.02 * r["paid_linear"]
    assert 0 < r["benefit"] < 0.5  # the norms sit a little above 1: the benefit term is small, not zero
