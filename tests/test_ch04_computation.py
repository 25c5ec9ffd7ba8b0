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


# --------------------------------------------------------------------------------------
# The privileged-basis model
# --------------------------------------------------------------------------------------


def test_neuron_model_forward_has_a_relu_on_the_hidden_layer():
    from course_utils.computation import NeuronModel

    model = NeuronModel(4, 3, n_instances=2, device="cpu", generator=torch.Generator().manual_seed(0))
    x = torch.rand(2, 5, 4)
    W, b = model.W.detach(), model.b.detach()
    expected = torch.relu(torch.einsum("ihf,ibh->ibf", W, torch.relu(torch.einsum("ihf,ibf->ibh", W, x))) + b[:, None])
    torch.testing.assert_close(model(x), expected)
    assert model.loss(x).shape == (2,)


def test_neuron_model_trains_with_autograd_and_the_toy_models_fast_path_refuses_it():
    from course_utils.computation import NeuronModel
    from course_utils.toy_models import train

    model = NeuronModel(4, 3, n_instances=1, device="cpu", generator=torch.Generator().manual_seed(0))
    x = model.generate_batch(64, torch.Generator().manual_seed(1))
    before = float(model.loss(x).detach())
    train(model, steps=200, lr=1e-2, progress=False)  # would raise or diverge with the wrong fused gradient
    assert float(model.loss(x).detach()) < before
    with pytest.raises(TypeError, match="fast=False"):  # its forward is not the toy model's
        train(model, steps=1, progress=False, fast=True)


def test_neuron_monosemanticity_on_hand_built_weights():
    from course_utils.computation import neuron_monosemanticity

    W = torch.tensor([[[1.0, 0.0, 0.0], [0.6, 0.8, 0.0], [0.0, 0.0, 0.01]]])
    share = neuron_monosemanticity(W)
    assert share[0, 0] == 1.0 and abs(float(share[0, 1]) - 0.64) < 1e-6 and math.isnan(float(share[0, 2]))


# --------------------------------------------------------------------------------------
# abs(x)
# --------------------------------------------------------------------------------------


def test_abs_model_data_and_loss():
    from course_utils.computation import AbsModel

    model = AbsModel(5, 4, n_instances=2, feature_probability=torch.tensor([[1.0], [0.2]]), device="cpu",
                     generator=torch.Generator().manual_seed(0))
    x = model.generate_batch(20_000, torch.Generator().manual_seed(1))
    assert x.shape == (2, 20_000, 5) and float(x.min()) < -0.99 and float(x.max()) > 0.99
    assert abs(float((x[0] != 0).float().mean()) - 1.0) < 1e-3 and abs(float((x[1] != 0).float().mean()) - 0.2) < 0.01
    y = model(x)
    torch.testing.assert_close(model.loss(x), ((y - x.abs()) ** 2).mean(dim=(1, 2)))
    with pytest.raises(ValueError, match="n_hidden"):
        AbsModel(3, 0)


# --------------------------------------------------------------------------------------
# Compressed computation (Braun et al. 2025) and its mixing matrix (Bhagat et al. 2025)
# --------------------------------------------------------------------------------------


def test_residual_mlp_forward_equals_the_literal_residual_stream():
    from course_utils.computation import ResidualMLP

    model = ResidualMLP(20, 64, 8, n_instances=2, feature_probability=0.3, device="cpu",
                        generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        model.b_in.normal_(generator=torch.Generator().manual_seed(1))
    x = model.generate_batch(16, torch.Generator().manual_seed(2))
    r = torch.einsum("idn,ibn->ibd", model.W_E, x)
    r = r + torch.einsum("idh,ibh->ibd", model.W_out,
                         torch.relu(torch.einsum("ihd,ibd->ibh", model.W_in, r) + model.b_in[:, None]))
    literal = torch.einsum("idn,ibd->ibn", model.W_E, r)
    torch.testing.assert_close(model(x), literal, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(model.loss(x), ((literal - x - torch.relu(x)) ** 2).mean(dim=(1, 2)),
                               atol=1e-6, rtol=1e-5)


def test_embeddings_have_unit_columns_and_orthonormal_has_no_mixing():
    from course_utils.computation import ResidualMLP, embedding_matrix

    random = embedding_matrix(100, 1000, "random", torch.Generator().manual_seed(0))
    torch.testing.assert_close(random.norm(dim=0), torch.ones(100))
    model = ResidualMLP(embedding="orthonormal", device="cpu", generator=torch.Generator().manual_seed(0))
    assert float(model.mixing().abs().max()) < 1e-5
    mixed = ResidualMLP(embedding="random", device="cpu", generator=torch.Generator().manual_seed(0))
    assert 0.02 < float(mixed.mixing().abs().mean()) < 0.03  # |N(0, 1/1000)| has mean √(2/π)/√1000 ≈ 0.025
    with pytest.raises(ValueError, match="embedding"):
        embedding_matrix(10, 20, "identity")
    with pytest.raises(ValueError, match="d_embed >= n_features"):
        embedding_matrix(10, 5, "orthonormal")


def test_naive_baseline_without_mixing_has_the_closed_form_loss():
    from course_utils.computation import ResidualMLP, naive_loss_without_mixing

    model = ResidualMLP(embedding="orthonormal", device="cpu", generator=torch.Generator().manual_seed(0))
    x = model.generate_batch(200_000, torch.Generator().manual_seed(1))
    with torch.no_grad():
        measured = float(model.naive_baseline().loss(x)) / 0.01
    assert abs(naive_loss_without_mixing(100, 50, 0.01) / 0.01 - 1 / 12) < 1e-12
    assert abs(measured - 1 / 12) < 0.004, measured


def test_weight_decay_trains_with_adamw_and_the_fast_path_refuses_it():
    from course_utils.computation import ResidualMLP
    from course_utils.toy_models import ToyModel, train

    norms = {}
    for wd in (0.0, 1.0):
        model = ResidualMLP(20, 64, 8, feature_probability=0.2, device="cpu", generator=torch.Generator().manual_seed(0))
        train(model, steps=200, batch_size=64, lr=1e-2, weight_decay=wd, progress=False)
        norms[wd] = float(model.W_in.detach().norm())
    assert norms[1.0] < 0.9 * norms[0.0], norms  # the decay shrinks the weights
    assert not ResidualMLP(device="cpu").b_in.requires_grad  # no bias, as in Braun et al.
    with pytest.raises(ValueError, match="weight decay"):
        train(ToyModel(5, 2, device="cpu"), steps=1, weight_decay=0.01, progress=False, fast=True)
    with pytest.raises(ValueError, match="weight_decay"):
        train(ResidualMLP(20, 64, 8, device="cpu"), steps=1, weight_decay=-1.0, progress=False)


# --------------------------------------------------------------------------------------
# The asymmetric superposition motif
# --------------------------------------------------------------------------------------


def _motif_weights(inhibit: bool = True, symmetric: bool = False):
    """Two features, three neurons: neuron 0 reads feature 0 with weight 2 and feature 1 with
    −0.5 (or −2 if symmetric) and writes 0.5 / 2 back; neuron 1 is a ReLU(x_0) neuron that
    writes −4 into output 1 (the inhibition) when ``inhibit``; neuron 2 is idle."""
    weak = -2.0 if symmetric else -0.5
    W1 = torch.tensor([[2.0, weak], [1.0, 0.0], [0.0, 0.0]])
    W2 = torch.tensor([[0.5, 0.5, 0.0], [2.0, -4.0 if inhibit else 0.0, 0.0]])
    b = torch.tensor([-0.1, -0.1])
    return W1, W2, b


def test_asymmetric_motif_is_found_in_hand_built_weights_and_only_there():
    from course_utils.computation import asymmetric_motifs

    (motif,) = asymmetric_motifs(*_motif_weights())
    assert (motif.neuron, motif.strong, motif.weak) == (0, 0, 1)
    assert motif.input_ratio == pytest.approx(4.0) and motif.output_ratio == pytest.approx(4.0)
    assert motif.interference == pytest.approx(4.0)  # 2 (output weight) × 2 (activation)
    assert motif.total == pytest.approx(4.0 - 4.0 - 0.1) and motif.inhibitors == [1]
    assert motif.reverse_interference == pytest.approx(0.25)  # 0.5 × 0.5
    assert asymmetric_motifs(*_motif_weights(inhibit=False)) == []  # interference not cancelled
    assert asymmetric_motifs(*_motif_weights(symmetric=True)) == []  # equal input weights
    with pytest.raises(ValueError, match="one instance"):
        asymmetric_motifs(torch.zeros(2, 3, 2), torch.zeros(2, 2, 3), torch.zeros(2, 2))


def test_u_and_accuracy_counts_uncovered_pairs_as_wrong():
    from course_utils.computation import u_and_accuracy, u_and_wiring

    dense = u_and_wiring(30, 2_000, 0.3, torch.Generator().manual_seed(0))
    assert u_and_accuracy(dense, 2, batch=64, generator=torch.Generator().manual_seed(1)) == 1.0  # exact with l = 2
    empty = torch.zeros(10, 30)  # no neuron covers any pair: no AND can be read
    assert u_and_accuracy(empty, 2, batch=64, generator=torch.Generator().manual_seed(1)) == 0.0
    half = dense.clone()
    half[:, 15:] = 0  # pairs among features 15-29 (and across) uncovered: only C(15, 2) of C(30, 2) readable
    accuracy = u_and_accuracy(half, 2, batch=64, generator=torch.Generator().manual_seed(1))
    assert accuracy == pytest.approx(105 / 435)


def test_abs_monosemantic_loss_and_init_scale():
    from course_utils.computation import AbsModel, abs_monosemantic_loss

    importance = torch.tensor([[1.0, 0.5, 0.25, 0.125]])
    # 4 neurons serve the two most important features; the other two output their mean p/2
    # through the bias and miss the variance of |x|, p/3 − p²/4, each
    expected = (0.25 + 0.125) * (0.3 / 3 - 0.3**2 / 4) / 4
    assert float(abs_monosemantic_loss(importance, torch.tensor([[0.3]]), 4)[0]) == pytest.approx(expected)
    assert float(abs_monosemantic_loss(importance.flip(-1), 0.3, 5)[0]) == pytest.approx(expected)  # by importance, not index
    model = AbsModel(4, 4, feature_probability=0.3, importance=importance, device="cpu",
                     generator=torch.Generator().manual_seed(0))
    with torch.no_grad():  # the monosemantic solution, built by hand, has exactly that loss
        model.W1.zero_(); model.W2.zero_()
        for k, (feature, sign) in enumerate([(0, 1), (0, -1), (1, 1), (1, -1)]):
            model.W1[0, k, feature], model.W2[0, feature, k] = sign, 1.0
        model.b[0, 2:] = 0.3 / 2
        loss = float(model.loss(model.generate_batch(400_000, torch.Generator().manual_seed(1))))
    assert loss == pytest.approx(expected, rel=0.02)
    small = AbsModel(100, 40, init_scale=0.1, device="cpu", generator=torch.Generator().manual_seed(0))
    full = AbsModel(100, 40, device="cpu", generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(small.W1, 0.1 * full.W1)
    with pytest.raises(ValueError, match="init_scale"):
        AbsModel(3, 2, init_scale=0.0)


class _PlainUAnd:
    """A construction written as a learner would, without the library's chunking."""

    def __init__(self, m, d, p, generator=None):
        self.m, self.d, self.p = m, d, p
        self.W = (torch.rand(d, m, generator=generator) < p).float()

    def hidden(self, x):
        return torch.relu(x @ self.W.T - 1)

    def readoff(self, h):
        coverage = self.W.T @ self.W
        total = torch.einsum("bk,ki,kj->bij", h, self.W, self.W)
        return torch.where(coverage > 0, total / coverage.clamp(min=1), torch.full_like(total, float("nan")))

    def __call__(self, x):
        return self.readoff(self.hidden(x))

    def coverage(self):
        return self.W.T @ self.W


@pytest.mark.parametrize("m, d, p", [(200, 1000, 0.1), (60, 400, 0.03), (30, 50, 0.3)])
def test_measurements_take_a_construction_and_give_the_numbers_of_its_wiring(m, d, p):
    """measure_u_and_readoffs, u_and_accuracy and uncovered_fraction give the same numbers on a
    wiring W (as before), on the reference UAnd, and on a learner-style class drawn from the
    same seed."""
    W = C.u_and_wiring(m, d, p, torch.Generator().manual_seed(0))
    reference = C.UAnd(m, d, p, torch.Generator().manual_seed(0))
    plain = _PlainUAnd(m, d, p, torch.Generator().manual_seed(0))
    assert torch.equal(reference.W, W) and torch.equal(plain.W, W)
    for construction in (reference, plain, C.UAnd.from_wiring(W)):
        assert C.uncovered_fraction(construction) == C.uncovered_fraction(W)
        for l in (2, 3, 5):
            got = C.measure_u_and_readoffs(construction, l, batch=64, generator=torch.Generator().manual_seed(l))
            want = C.measure_u_and_readoffs(W, l, batch=64, generator=torch.Generator().manual_seed(l))
            assert got == pytest.approx(want, rel=1e-6, abs=1e-7, nan_ok=True), (l, got, want)
        got = C.u_and_accuracy(construction, 3, batch=40, generator=torch.Generator().manual_seed(2))
        assert got == pytest.approx(C.u_and_accuracy(W, 3, batch=40, generator=torch.Generator().manual_seed(2)), abs=1e-9)


def test_measurements_on_the_reference_construction_keep_the_chapters_numbers():
    """The chapter's m = 200, d = 1,000, p = 0.1 construction (seed 0): the read-offs at l = 2
    and 8, computed on the wiring before the functions took constructions."""
    W = C.u_and_wiring(200, 1000, 0.1, torch.Generator().manual_seed(0))
    construction = C.UAnd(200, 1000, 0.1, torch.Generator().manual_seed(0))
    for l in (2, 8):
        generator = torch.Generator().manual_seed(l)
        x = C.sparse_boolean_inputs(200, l, 256, generator)
        readoff = C.u_and_readoff(W, C.u_and_hidden(W, x))  # the old path, written out
        on = x[:, :, None] + x[:, None, :]
        covered = (C.pair_coverage(W) > 0) & ~torch.eye(200, dtype=torch.bool)
        old = {name: float(readoff[(on == k) & covered].mean()) for name, k in (("both", 2), ("one", 1), ("none", 0))}
        new = C.measure_u_and_readoffs(construction, l, batch=256, generator=torch.Generator().manual_seed(l))
        assert new == pytest.approx(old, rel=1e-6), (l, new, old)


def test_neuron_model_runs_the_forward_function_it_is_given():
    calls = []

    def forward(W, b, x):
        calls.append(W.shape)
        return C.neuron_forward(W, b, x)

    model = C.NeuronModel(4, 2, n_instances=3, device="cpu", generator=torch.Generator().manual_seed(0),
                          forward_fn=forward)
    plain = C.NeuronModel(4, 2, n_instances=3, device="cpu", generator=torch.Generator().manual_seed(0))
    x = model.generate_batch(8, torch.Generator().manual_seed(1))
    assert torch.equal(model(x), plain(x)) and calls == [(3, 2, 4)]
