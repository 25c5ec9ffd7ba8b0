"""Exact tests of course_utils.geometry on constructed weights."""

import math

import pytest
import torch

from course_utils import geometry


def polygon(k, radius=1.0):
    angles = torch.arange(k) * 2 * math.pi / k
    return radius * torch.stack([torch.cos(angles), torch.sin(angles)])[None]  # (1, 2, k)


def test_norms_and_orthogonal_features():
    W = torch.eye(3)[None] * torch.tensor([1.0, 2.0, 0.5])
    torch.testing.assert_close(geometry.feature_norms(W), torch.tensor([[1.0, 2.0, 0.5]]))
    torch.testing.assert_close(geometry.superposition_interference(W), torch.zeros(1, 3))


def test_zero_column_gives_zero_not_nan():
    W = torch.tensor([[[1.0, 0.0, 1.0], [0.0, 0.0, 0.0]]])
    interference = geometry.superposition_interference(W)
    assert torch.isfinite(interference).all()
    assert interference[0, 1] == 0
    torch.testing.assert_close(interference[0, [0, 2]], torch.tensor([1.0, 1.0]))


def test_antipodal_pair_and_pentagon():
    pair = torch.tensor([[[1.0, -1.0]]])
    torch.testing.assert_close(geometry.superposition_interference(pair), torch.ones(1, 2))
    pentagon = polygon(5)
    # Σ_{j≠i} cos²(72° k) over k = 1..4 = 1.5 for a regular pentagon of unit vectors.
    torch.testing.assert_close(geometry.superposition_interference(pentagon), torch.full((1, 5), 1.5))
    gaps = geometry.sorted_angle_gaps(pentagon)[0]
    torch.testing.assert_close(gaps, torch.full((5,), 72.0))


def test_angles_need_two_dimensions():
    with pytest.raises(ValueError, match="2-D hidden space"):
        geometry.angles_degrees(torch.zeros(1, 3, 4))


def test_closed_form_phase_losses():
    # Ignoring a feature costs I·Var(x) = I(s/3 - s²/4); the antipodal pair (1 + r)s²/6.
    losses = geometry.phase_losses(torch.tensor(2.0), torch.tensor(0.5))
    var = 0.5 / 3 - 0.25 / 4
    torch.testing.assert_close(losses, torch.tensor([2 * var, 3 * 0.25 / 6, var], dtype=torch.float64))


def test_closed_form_phases_and_boundary():
    # Dense features: store the more important one; sparse: antipodal pair.
    assert geometry.phase_closed_form(torch.tensor(0.5), torch.tensor(1.0)) == 0
    assert geometry.phase_closed_form(torch.tensor(3.0), torch.tensor(1.0)) == 2
    assert geometry.phase_closed_form(torch.tensor(0.5), torch.tensor(0.01)) == 1
    r = torch.tensor([0.2, 0.7, 1.0, 4.0], dtype=torch.float64)
    s = geometry.antipodal_boundary_density(r)
    losses = geometry.phase_losses(r, s)
    weak = torch.where(r < 1, losses[:, 0], losses[:, 2])
    torch.testing.assert_close(weak, losses[:, 1])  # the two costs are equal on the boundary
    assert (s > 0).all() and (s < 1).all()


def test_classify_n2_m1():
    W = torch.tensor([[[1.0, 0.0]], [[0.9, -1.0]], [[0.1, 1.0]], [[1.0, 1.0]]])
    assert geometry.classify_n2_m1(W).tolist() == [0, 1, 2, 0]
    with pytest.raises(ValueError):
        geometry.classify_n2_m1(torch.zeros(2, 2, 2))
