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


def test_neuron_model_trains_with_autograd_not_the_toy_models_fused_step():
    from course_utils.computation import NeuronModel
    from course_utils.toy_models import train

    model = NeuronModel(4, 3, n_instances=1, device="cpu", generator=torch.Generator().manual_seed(0))
    x = model.generate_batch(64, torch.Generator().manual_seed(1))
    before = float(model.loss(x).detach())
    train(model, steps=200, lr=1e-2, progress=False)  # would raise or diverge with the wrong fused gradient
    assert float(model.loss(x).detach()) < before


def test_privileged_basis_dense_features_get_monosemantic_neurons_sparse_ones_polysemantic(one_thread):
    """Elhage et al. 2022, "privileged basis": n=10, m=5, importance 0.75^i."""
    from course_utils.computation import NeuronModel, neuron_monosemanticity
    from course_utils.toy_models import importance_decay, train

    density = torch.tensor([[1.0], [0.01]])
    model = NeuronModel(10, 5, n_instances=2, feature_probability=density, importance=importance_decay(10, 0.75),
                        device="cpu", generator=torch.Generator().manual_seed(0))
    train(model, steps=10_000, progress=False)
    W = model.W.detach()
    share = neuron_monosemanticity(W)
    represented = (W.norm(dim=1) > 0.5).sum(dim=1)
    # dense: the 5 most important features, one neuron each
    assert (share[0] > 0.98).all() and int(represented[0]) == 5, (share[0], represented[0])
    assert set(W[0].abs().argmax(dim=1).tolist()) == {0, 1, 2, 3, 4}
    # sparse: all 10 features stored, most neurons mix several
    assert int(represented[1]) == 10 and int((share[1] < 0.6).sum()) >= 3, (share[1], represented[1])


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


def test_abs_with_two_neurons_per_feature_is_solved_exactly(one_thread):
    """n=3, m=6, dense: the exact solution |x| = ReLU(x) + ReLU(−x), one neuron for each sign."""
    from course_utils.computation import AbsModel
    from course_utils.toy_models import train

    model = AbsModel(3, 6, n_instances=4, device="cpu", generator=torch.Generator().manual_seed(0))
    train(model, steps=10_000, progress=False)
    losses = model.loss(model.generate_batch(10_000, torch.Generator().manual_seed(5))).detach()
    best = int(losses.argmin())
    assert float(losses[best]) < 1e-6 and int((losses < 1e-6).sum()) >= 3, losses
    W1 = model.W1.detach()[best]  # (hidden, features)
    for feature in range(3):
        on = W1[:, feature][W1[:, feature].abs() > 0.5]
        assert on.numel() == 2 and float(on[0] * on[1]) < 0, W1  # one ReLU(x_i) and one ReLU(-x_i) neuron
    assert int((W1.abs() > 0.5).sum(dim=1).max()) == 1  # each neuron reads one feature


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


def test_trained_model_beats_the_naive_baseline_only_through_the_mixing_matrix(one_thread):
    """Braun et al. 2025's setup (100 features, 1000-d residual, 50 neurons, p = 0.01, U[-1, 1],
    batch 2048, lr 3e-3 cosine), 2,000 steps.  Measured: L/p 0.066 with a random embedding
    (1/12 = 0.083 for the naive baseline without mixing), 0.084 with an orthonormal one."""
    from course_utils.computation import ResidualMLP
    from course_utils.toy_models import train

    results = {}
    for embedding in ("random", "orthonormal"):
        model = ResidualMLP(embedding=embedding, device="cpu", generator=torch.Generator().manual_seed(0))
        train(model, steps=2_000, batch_size=2048, lr=3e-3, schedule="cosine", progress=False)
        x = model.generate_batch(100_000, torch.Generator().manual_seed(2))
        with torch.no_grad():
            results[embedding] = (float(model.loss(x)) / 0.01, float(model.naive_baseline().loss(x)) / 0.01)
    trained, naive = results["random"]
    assert trained < 0.075 and trained < 0.5 * naive, results  # beats 1/12 and its own naive baseline
    trained, naive = results["orthonormal"]
    assert abs(trained - 1 / 12) < 0.006 and abs(naive - 1 / 12) < 0.004, results  # no advantage left
