"""Chapter 01's checks: the reference passes, the stub is "not attempted", and plausible
wrong implementations fail with a message that names what is wrong."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from check_helpers import assert_reference_passes_and_stub_is_not_attempted, failure, stub

from course_utils import checks, geometry
from course_utils import toy_models as ref
from course_utils.checks import toy_models as chapter


def status(name, learner, **kwargs) -> str:
    return checks.evaluate(name, learner, **kwargs).status


REFERENCES = {
    "toy_forward": ref.toy_forward,
    "generate_batch": ref.generate_batch,
    "importance_weighted_loss": ref.importance_weighted_loss,
    "feature_norms": geometry.feature_norms,
    "superposition_interference": geometry.superposition_interference,
}


@pytest.mark.parametrize("name", REFERENCES)
def test_reference_passes_and_stub_is_not_attempted(name, capsys):
    assert_reference_passes_and_stub_is_not_attempted(name, REFERENCES[name], capsys)


def test_printed_lines_for_toy_forward(capsys):
    checks.check_toy_forward(ref.toy_forward)
    checks.check_toy_forward(forward_no_bias)
    assert capsys.readouterr().out.splitlines() == [
        "[passed] toy_forward: 8/8 cases match the reference.",
        "[failed] toy_forward: case 1 (instances=4, hidden=2, features=6, batch=4, activation='relu'): "
        "output differs from the reference and matches a known mistake: the bias b is missing.",
    ]


@pytest.mark.parametrize("name", REFERENCES)
def test_reference_passes_hidden_seeds(name):
    seeds = range(100, 112) if name == "generate_batch" else range(100, 160)
    assert checks.evaluate(name, REFERENCES[name], seeds=seeds).passed


def test_default_cases_cover_the_edge_shapes():
    forward = [chapter._forward_case(s) for s in checks.check_toy_forward.exercise.seeds]
    assert {c.W.shape[0] for c in forward} >= {1} and {c.W.shape[1] for c in forward} >= {1}
    assert any(c.W.shape[1] == c.W.shape[2] for c in forward)
    assert {(c.activation, c.W.shape[1] == 1) for c in forward} == {
        ("relu", True), ("relu", False), ("linear", True), ("linear", False)}
    geometry_cases = [chapter._geometry_case(s) for s in range(4)]
    assert any(c.W.shape[1] == 1 for c in geometry_cases)
    assert all((c.W.norm(dim=1) == 0).any() for c in geometry_cases)
    batch_cases = [chapter._batch_case(s) for s in range(4)]
    assert any((c.feature_probability == 1).any() for c in batch_cases)


# --------------------------------------------------------------------------------------
# toy_forward
# --------------------------------------------------------------------------------------


def _WtWx(W, x):
    return torch.einsum("ihf,ibh->ibf", W, torch.einsum("ihf,ibf->ibh", W, x))


def forward_no_relu(W, b, x, activation="relu"):
    return _WtWx(W, x) + b[:, None, :]


def forward_always_relu(W, b, x, activation="relu"):
    return F.relu(_WtWx(W, x) + b[:, None, :])


def forward_no_bias(W, b, x, activation="relu"):
    out = _WtWx(W, x)
    return F.relu(out) if activation == "relu" else out


def forward_W_not_transposed(W, b, x, activation="relu"):  # W Wᵀ x
    out = torch.einsum("ihf,ibf->ibh", W, torch.einsum("ihf,ibh->ibf", W, x)) + b[:, None, :]
    return F.relu(out) if activation == "relu" else out


def forward_wrong_einsum_axis(W, b, x, activation="relu"):
    h = torch.einsum("ihf,ibf->ibh", W, x)
    out = torch.einsum("ihf,ibh->ibh", W, h) + b[:, None, :]
    return F.relu(out) if activation == "relu" else out


def forward_transposed_output(W, b, x, activation="relu"):
    return ref.toy_forward(W, b, x, activation).transpose(1, 2)


def forward_mutates_x(W, b, x, activation="relu"):
    x.clamp_(max=0.5)
    return ref.toy_forward(W, b, x, activation)


def forward_returns_hidden_too(W, b, x, activation="relu"):
    return ref.toy_forward(W, b, x, activation), torch.einsum("ihf,ibf->ibh", W, x)


def forward_float64(W, b, x, activation="relu"):
    return ref.toy_forward(W.double(), b.double(), x.double(), activation)


@pytest.mark.parametrize("wrong, phrase", [
    (forward_no_relu, "the ReLU is missing"),
    (forward_always_relu, "a ReLU is applied although activation='linear'"),
    (forward_no_bias, "the bias b is missing"),
    (forward_W_not_transposed, "your function raised RuntimeError"),
    (forward_wrong_einsum_axis, "your function raised RuntimeError"),
    (forward_transposed_output, "(the last two axes look swapped)"),
    (forward_mutates_x, "changed its input `x` in place"),
    (forward_returns_hidden_too, "returned a tuple of 2 items"),
    (forward_float64, "dtype torch.float64"),
])
def test_toy_forward_catches(wrong, phrase):
    assert phrase in failure("toy_forward", wrong)


def test_toy_forward_square_cases_name_shape_valid_mistakes():
    square = [3]  # hidden == features == batch
    assert "W and Wᵀ are swapped" in failure("toy_forward", forward_W_not_transposed, seeds=square)
    assert "output is transposed" in failure("toy_forward", forward_transposed_output, seeds=square)
    assert "differs from the reference at" in failure("toy_forward", forward_wrong_einsum_axis, seeds=square)


def test_toy_forward_python_loop_over_batch_is_right():
    def loop(W, b, x, activation="relu"):
        rows = [ref.toy_forward(W, b, x[:, k : k + 1], activation) for k in range(x.shape[1])]
        return torch.cat(rows, dim=1)

    assert checks.evaluate("toy_forward", loop).passed


# --------------------------------------------------------------------------------------
# generate_batch
# --------------------------------------------------------------------------------------


def _shape(p, batch_size):
    return (p.shape[0], batch_size, p.shape[1])


def batch_global_rng(feature_probability, batch_size):  # right, without a generator argument
    p = feature_probability
    values = torch.rand(_shape(p, batch_size))
    return torch.where(torch.rand(_shape(p, batch_size)) < p[:, None, :], values, 0.0)


def batch_swapped(feature_probability, batch_size, generator=None):
    p = feature_probability
    values = torch.rand(_shape(p, batch_size), generator=generator)
    return torch.where(torch.rand(_shape(p, batch_size), generator=generator) < 1 - p[:, None, :], values, 0.0)


def batch_normal_values(feature_probability, batch_size, generator=None):
    p = feature_probability
    values = torch.randn(_shape(p, batch_size), generator=generator)
    return torch.where(torch.rand(_shape(p, batch_size), generator=generator) < p[:, None, :], values, 0.0)


def batch_same_mask_for_every_instance(feature_probability, batch_size, generator=None):
    p = feature_probability
    values = torch.rand(_shape(p, batch_size), generator=generator)
    shared = torch.rand(1, batch_size, p.shape[1], generator=generator)
    return torch.where(shared < p[:, None, :], values, 0.0)


def batch_ones_when_active(feature_probability, batch_size, generator=None):
    p = feature_probability
    return (torch.rand(_shape(p, batch_size), generator=generator) < p[:, None, :]).float()


def batch_reuses_the_uniform(feature_probability, batch_size, generator=None):
    u = torch.rand(_shape(feature_probability, batch_size), generator=generator)
    return torch.where(u < feature_probability[:, None, :], u, 0.0)


def batch_ignores_instances(feature_probability, batch_size, generator=None):
    p = feature_probability.mean(dim=0)
    values = torch.rand(_shape(feature_probability, batch_size), generator=generator)
    active = torch.rand(_shape(feature_probability, batch_size), generator=generator) < p
    return torch.where(active, values, 0.0)


def batch_wrong_axis(feature_probability, batch_size, generator=None):
    p = feature_probability
    values = torch.rand(_shape(p, batch_size), generator=generator)
    return torch.where(torch.rand(_shape(p, batch_size), generator=generator) < p.T[:, None, :], values, 0.0)


def batch_identical_rows(feature_probability, batch_size, generator=None):
    return ref.generate_batch(feature_probability, 1, generator).expand(-1, batch_size, -1)


def batch_float64(feature_probability, batch_size, generator=None):
    return ref.generate_batch(feature_probability, batch_size, generator).double()


def batch_batch_first(feature_probability, batch_size, generator=None):
    return ref.generate_batch(feature_probability, batch_size, generator).transpose(0, 1)


@pytest.mark.parametrize("wrong, phrase", [
    (batch_swapped, "sparsity and feature probability are swapped"),
    (batch_normal_values, "outside [0, 1]"),
    (batch_same_mask_for_every_instance, "are not independent"),
    (batch_ones_when_active, "should be uniform on [0, 1]"),
    (batch_reuses_the_uniform, "should be uniform on [0, 1]"),
    (batch_ignores_instances, "is nonzero in"),
    (batch_wrong_axis, ""),  # a shape error or wrong frequencies, depending on the case
    (batch_identical_rows, "every row of the batch is the same"),
    (batch_float64, "dtype torch.float64"),
    (batch_batch_first, "output has shape"),
])
def test_generate_batch_catches(wrong, phrase):
    assert phrase in failure("generate_batch", wrong)


def test_generate_batch_wrong_axis_on_a_square_case_is_a_frequency_failure():
    assert "is nonzero in" in failure("generate_batch", batch_wrong_axis, seeds=[3])


def test_generate_batch_is_deterministic_with_the_global_rng():
    first = checks.evaluate("generate_batch", batch_global_rng)
    assert first.passed
    assert checks.evaluate("generate_batch", batch_swapped) == checks.evaluate("generate_batch", batch_swapped)


# --------------------------------------------------------------------------------------
# importance_weighted_loss
# --------------------------------------------------------------------------------------


def loss_mean_over_everything(out, x, importance):
    return (importance[:, None, :] * (x - out) ** 2).mean()


def loss_sum(out, x, importance):
    return (importance[:, None, :] * (x - out) ** 2).sum(dim=(1, 2))


def loss_no_importance(out, x, importance):
    return ((x - out) ** 2).mean(dim=(1, 2))


def loss_importance_inside_square(out, x, importance):
    return (importance[:, None, :] * (x - out)).pow(2).mean(dim=(1, 2))


def loss_negative(out, x, importance):
    return -(importance[:, None, :] * (x - out) ** 2).mean(dim=(1, 2))


def loss_absolute_error(out, x, importance):
    return (importance[:, None, :] * (x - out).abs()).mean(dim=(1, 2))


def loss_keepdim(out, x, importance):
    return (importance[:, None, :] * (x - out) ** 2).mean(dim=(1, 2), keepdim=True)


@pytest.mark.parametrize("wrong, phrase", [
    (loss_mean_over_everything, "output is a single number"),
    (loss_sum, "a sum over batch and features instead of a mean"),
    (loss_no_importance, "the importance is not applied"),
    (loss_importance_inside_square, "the importance is inside the square"),
    (loss_negative, "sign flipped"),
    (loss_absolute_error, "the absolute error instead of the squared error"),
    (loss_keepdim, "output has shape"),
])
def test_importance_weighted_loss_catches(wrong, phrase):
    assert phrase in failure("importance_weighted_loss", wrong)


# --------------------------------------------------------------------------------------
# feature_norms and superposition_interference
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("wrong, phrase", [
    (lambda W: (W**2).sum(dim=1), "the square root is missing"),
    (lambda W: W.norm(dim=2), "output has shape (4, 2)"),  # wrong axis; named on a square case
    (lambda W: W.norm(dim=0), "output has shape"),
    (lambda W: W.abs().sum(dim=1), "(L1)"),
    (lambda W: W.norm(dim=1, keepdim=True), "output has shape"),
])
def test_feature_norms_catches(wrong, phrase):
    assert phrase in failure("feature_norms", wrong)


def test_feature_norms_wrong_axis_is_named_on_a_square_case():
    assert "over the feature axis" in failure("feature_norms", lambda W: W.norm(dim=2), seeds=[3])


def _unit(W):
    return W / W.norm(dim=1, keepdim=True).clamp_min(1e-8)


def _off_diagonal(overlaps):
    squared = overlaps.square()
    return squared.sum(-1) - squared.diagonal(dim1=-2, dim2=-1)


def interference_with_diagonal(W):
    return torch.einsum("ihf,ihg->ifg", _unit(W), W).square().sum(-1)


def interference_not_normalised(W):
    return _off_diagonal(torch.einsum("ihf,ihg->ifg", W, W))


def interference_both_normalised(W):
    return _off_diagonal(torch.einsum("ihf,ihg->ifg", _unit(W), _unit(W)))


def interference_nan_on_zero_column(W):
    return _off_diagonal(torch.einsum("ihf,ihg->ifg", W / W.norm(dim=1, keepdim=True), W))


def interference_wrong_index(W):
    overlaps = torch.einsum("ihf,ihg->ifg", _unit(W), W).square()
    return overlaps.sum(-2) - overlaps.diagonal(dim1=-2, dim2=-1)


def interference_not_squared(W):
    overlaps = torch.einsum("ihf,ihg->ifg", _unit(W), W)
    return overlaps.sum(-1) - overlaps.diagonal(dim1=-2, dim2=-1)


def interference_hidden_axis(W):  # overlaps between hidden directions: wrong einsum axes
    overlaps = torch.einsum("ihf,igf->ihg", _unit(W), W).square()
    return overlaps.sum(-1) - overlaps.diagonal(dim1=-2, dim2=-1)


@pytest.mark.parametrize("wrong, phrase", [
    (interference_with_diagonal, "includes the j = i term"),
    (interference_not_normalised, "W_i is not normalised"),
    (interference_both_normalised, "both W_i and W_j are normalised"),
    (interference_nan_on_zero_column, "output contains NaN"),
    (interference_wrong_index, "the sum runs over i instead of j"),
    (interference_not_squared, "are not squared"),
    (interference_hidden_axis, "output has shape"),
])
def test_superposition_interference_catches(wrong, phrase):
    assert phrase in failure("superposition_interference", wrong)
