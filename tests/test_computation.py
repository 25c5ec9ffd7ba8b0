"""U-AND (Hänni, Mendel, Vaintrob et al. 2024): the construction, its read-off and its error laws."""

import math

import pytest
import torch

from course_utils import computation as C


def test_wiring_is_a_random_0_1_matrix_of_density_p():
    W = C.u_and_wiring(300, 400, 0.1, torch.Generator().manual_seed(0))
    assert W.shape == (400, 300) and set(W.unique().tolist()) <= {0.0, 1.0}
    assert abs(float(W.mean()) - 0.1) < 0.005
    assert torch.equal(W, C.u_and_wiring(300, 400, 0.1, torch.Generator().manual_seed(0)))


@pytest.mark.parametrize("kwargs, message", [
    (dict(m=1, d=10, p=0.1), "at least two features"),
    (dict(m=10, d=0, p=0.1), "d must be a positive integer"),
    (dict(m=10, d=10, p=0.0), "p must be in"),
    (dict(m=10, d=10, p=1.5), "p must be in"),
])
def test_wiring_rejects_bad_sizes(kwargs, message):
    with pytest.raises(ValueError, match=message):
        C.u_and_wiring(**kwargs)


def test_sparse_inputs_have_exactly_l_features_on():
    x = C.sparse_boolean_inputs(50, 7, 100, torch.Generator().manual_seed(1))
    assert x.shape == (100, 50) and (x.sum(1) == 7).all()
    assert (x.sum(0) > 0).sum() > 45  # the sets vary
    with pytest.raises(ValueError, match="between 0 and m"):
        C.sparse_boolean_inputs(5, 6, 1)


def test_readoff_is_exact_when_only_the_pair_is_on():
    W = C.u_and_wiring(40, 600, 0.2, torch.Generator().manual_seed(2))
    assert C.uncovered_fraction(W) == 0.0
    for i, j in [(0, 1), (5, 17), (39, 3)]:
        x = torch.zeros(1, 40)
        x[0, [i, j]] = 1.0
        readoff = C.u_and_readoff(W, C.u_and_hidden(W, x))[0]
        assert float(readoff[i, j]) == 1.0 and float(readoff[j, i]) == 1.0
    # with nothing on, no neuron fires and every covered pair reads 0
    zero = C.u_and_readoff(W, C.u_and_hidden(W, torch.zeros(1, 40)))[0]
    assert float(zero.abs().max()) == 0.0


def test_readoff_is_nan_for_uncovered_pairs():
    W = torch.tensor([[1.0, 1.0, 0.0]])  # one neuron, wired to features 0 and 1
    readoff = C.u_and_readoff(W, C.u_and_hidden(W, torch.tensor([[1.0, 1.0, 1.0]])))[0]
    assert float(readoff[0, 1]) == 1.0
    assert math.isnan(float(readoff[0, 2])) and math.isnan(float(readoff[1, 2]))
    assert C.pair_coverage(W).tolist() == [[1, 1, 0], [1, 1, 0], [0, 0, 0]]


@pytest.mark.parametrize("m, d, p, l", [(200, 2000, 0.1, 5), (200, 2000, 0.1, 10), (200, 1500, 0.05, 8)])
def test_measured_readoffs_follow_the_error_laws(m, d, p, l):
    generator = torch.Generator().manual_seed(3)
    W = C.u_and_wiring(m, d, p, generator)
    measured = C.measure_u_and_readoffs(W, l, batch=64, generator=generator)
    first_order, exact = C.predicted_u_and_readoffs(p, l), C.predicted_u_and_readoffs(p, l, exact=True)
    assert abs(measured["both"] - first_order["both"]) < 0.03, measured
    assert abs(measured["one"] - first_order["one"]) < 0.03, measured
    assert abs(measured["none"] - exact["none"]) < 0.01, measured
    # the first-order law for "none" is good while l p is small, and overestimates beyond
    if l * p <= 0.5:
        assert abs(measured["none"] - first_order["none"]) < 0.015
    else:
        assert first_order["none"] > measured["none"] + 0.05


def test_coverage_follows_exp_minus_d_p_squared_and_the_construction_fails_when_it_is_small():
    generator = torch.Generator().manual_seed(4)
    for d, p in [(300, 0.05), (100, 0.1), (2000, 0.1)]:
        W = C.u_and_wiring(200, d, p, generator)
        assert abs(C.uncovered_fraction(W) - (1 - p * p) ** d) < 0.02, (d, p)
    # thousands of ANDs from far fewer neurons: m = 500 gives 124,750 pairs, all read by 2,000 neurons
    W = C.u_and_wiring(500, 2000, 0.1, generator)
    assert C.uncovered_fraction(W) == 0.0 and 500 * 499 // 2 > 60 * 2000
    # too little wiring (d p² = 0.25): most pairs have no neuron, their AND cannot be read
    W = C.u_and_wiring(200, 100, 0.05, generator)
    assert C.uncovered_fraction(W) > 0.7
