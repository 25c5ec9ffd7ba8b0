"""Chapter 02's non-uniform superposition (Elhage et al. 2022, section 5), asserted on the
models that `solutions/02_feature_geometry.ipynb` trained (see notebook_results.py): n=5,
m=2, four features at 1-S = 0.05, feature 0 at 0.05 × factor, best of 4 seeds."""

import pytest
import torch

from course_utils import geometry
from notebook_results import NotebookResults

RESULTS = NotebookResults("02_feature_geometry", factors="factors", W="W_pent")
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
