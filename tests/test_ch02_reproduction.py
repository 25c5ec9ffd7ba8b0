"""Chapter 02's results asserted on the models that `solutions/02_feature_geometry.ipynb`
trained (see notebook_results.py): non-uniform superposition (Elhage et al. 2022, section
5: n=5, m=2, four features at 1-S = 0.05, feature 0 at 0.05 × factor, best of 4 seeds), the
correlated and anticorrelated pairs trained on the learner's batches, and the scaling law's
strong and weak regimes trained by the learner's loop (Liu et al. 2025)."""

import pytest
import torch

from course_utils import geometry
from notebook_results import NotebookResults

RESULTS = NotebookResults(
    "02_feature_geometry", factors="factors", W="W_pent", W_corr="W_corr", W_anti="W_anti",
    W16="W16.detach()", loss16="loss16", yours="yours", history_fast="history_fast[:, :, 0]",
    slopes="scaling_run.slopes",
    implementations="[checks.is_reference(f) for f in (dimensionality, per_feature, recognise, correlated, "
                    "anticorrelated, decay_, train_scaling)]",
)
pytestmark = pytest.mark.xdist_group(RESULTS.notebook)


def test_non_uniform_superposition_deforms_the_pentagon_then_jumps_to_two_digons():
    results = RESULTS.get()
    factor = {f: int((results["factors"] - f).abs().argmin()) for f in (0.1, 0.2, 1.0, 20.0)}
    W = results["W"]
    norms, D = geometry.feature_norms(W), geometry.feature_dimensionality(W)
    gaps = geometry.sorted_angle_gaps(W)
    names = [geometry.summarise_configuration(d) for d in geometry.describe_configuration(W)]
    # Much sparser odd feature (× 0.1, × 0.2): it is dropped and the other four form two antipodal pairs.
    for k in (factor[0.1], factor[0.2]):
        assert norms[k, 0] < 0.1 and names[k] == "2 digons", (k, norms[k], names[k])
        torch.testing.assert_close(D[k, 1:], torch.full((4,), 0.5), atol=0.03, rtol=0)
    # Uniform: the regular pentagon.
    assert names[factor[1.0]] == "1 pentagon"
    torch.testing.assert_close(gaps[factor[1.0]], torch.full((5,), 72.0), atol=3.0, rtol=0)
    # Much denser odd feature (× 20): all five still stored, but the pentagon is deformed.
    assert (norms[factor[20.0]] > 0.9).all()
    assert gaps[factor[20.0]].max() - gaps[factor[20.0]].min() > 20


def test_correlated_pairs_go_orthogonal_and_anticorrelated_pairs_antipodal_on_the_learners_batches():
    results = RESULTS.get()
    corr, anti = geometry.feature_cosines(results["W_corr"]), geometry.feature_cosines(results["W_anti"])
    # Sparse correlated partners orthogonal; dense ones collapsed onto one direction (norms ~1/√2).
    assert corr[0, 0, 1].abs() < 0.1 and corr[0, 2, 3].abs() < 0.1
    assert corr[1, 0, 1] > 0.99 and corr[1, 2, 3] > 0.99
    torch.testing.assert_close(results["W_corr"][1].norm(dim=0), torch.full((4,), 2 ** -0.5), atol=0.03, rtol=0)
    # Anticorrelated partners antipodal at both densities.
    assert (anti[:, 0, 1] < -0.99).all() and (anti[:, 2, 3] < -0.99).all()


def test_the_learners_scaling_loop_gives_strong_and_weak_superposition_and_equals_the_fast_path():
    results = RESULTS.get()
    kept = (results["W16"].norm(dim=1) > 0.5).sum(dim=1)
    assert int(kept[0]) == 512 and 8 <= int(kept[1]) <= 24, kept  # γ = -1 keeps all; γ = +0.1 about m = 16
    torch.testing.assert_close(results["history_fast"], results["yours"], atol=1e-6, rtol=1e-4)
    strong, weak = results["slopes"]
    assert -1.1 < strong < -0.8 and -0.6 < weak < -0.3, results["slopes"]


def test_the_solved_chapter_ran_the_learners_code_everywhere():
    assert RESULTS.get()["implementations"] == [False] * 7
