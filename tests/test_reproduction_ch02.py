"""Chapter 02 results asserted with the library (the notebook will use the same settings)."""

import pytest
import torch

from course_utils import geometry
from course_utils.toy_models import ToyModel, evaluate_loss, select_best, train


pytestmark = pytest.mark.usefixtures("one_thread")


def test_non_uniform_superposition_deforms_the_pentagon_then_jumps_to_two_digons():
    """n=5, m=2, four features at 1-S = 0.05, feature 0 at 0.05 × factor; best of 4 seeds."""
    factors, seeds, base = torch.tensor([0.1, 0.2, 1.0, 20.0]), 4, 0.05
    probability = torch.full((len(factors), 5), base)
    probability[:, 0] = base * factors
    model = ToyModel(5, 2, len(factors) * seeds, feature_probability=probability.repeat_interleave(seeds, 0),
                     device="cpu", generator=torch.Generator().manual_seed(0))
    train(model, steps=10_000, progress=False)
    W = model.W.detach()[select_best(model, evaluate_loss(model), seeds)]
    norms, D = geometry.feature_norms(W), geometry.feature_dimensionality(W)
    gaps = geometry.sorted_angle_gaps(W)
    names = [geometry.summarise_configuration(d) for d in geometry.describe_configuration(W)]
    # Much sparser odd feature: it is dropped and the other four form two antipodal pairs.
    for k in (0, 1):
        assert norms[k, 0] < 0.1 and names[k] == "2 digons", (k, norms[k], names[k])
        torch.testing.assert_close(D[k, 1:], torch.full((4,), 0.5), atol=0.03, rtol=0)
    # Uniform: the regular pentagon.
    assert names[2] == "1 pentagon"
    torch.testing.assert_close(gaps[2], torch.full((5,), 72.0), atol=3.0, rtol=0)
    # Much denser odd feature: all five still stored, but the pentagon is deformed.
    assert (norms[3] > 0.9).all()
    assert gaps[3].max() - gaps[3].min() > 20
