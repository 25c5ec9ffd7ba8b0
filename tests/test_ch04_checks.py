"""Chapter 04's checks: the reference passes, the stub is "not attempted", and plausible
wrong implementations fail with a message that names what is wrong."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from check_helpers import (
    assert_names_mistake,
    assert_passes,
    assert_reference_passes_and_stub_is_not_attempted,
    assert_registered,
    default_cases,
    failure,
)

from course_utils import checks
from course_utils import computation as comp
from course_utils.checks import computation as chapter
from course_utils.checks._helpers import _close_number

pytestmark = pytest.mark.usefixtures("one_thread")  # the statistical checks crawl on busy threads

REFERENCES = {
    "neuron_forward": comp.neuron_forward,
    "abs_batch": comp.abs_batch,
    "abs_loss": comp.abs_loss,
    "u_and_layer": comp.u_and_hidden,
    "u_and_readoff": comp.u_and_readoff,
    "predicted_u_and_readoffs": comp.predicted_u_and_readoffs,
    "naive_loss": comp.naive_loss_without_mixing,
}
@pytest.mark.parametrize("name", REFERENCES)
def test_reference_passes_and_stub_is_not_attempted(name, capsys):
    assert_reference_passes_and_stub_is_not_attempted(name, REFERENCES[name], capsys)


@pytest.mark.parametrize("name", REFERENCES)
def test_reference_passes_hidden_seeds(name):
    assert_passes(name, REFERENCES[name], seeds=range(100, 132))


def test_registered_under_the_exercise_names():
    assert_registered(REFERENCES)


def _raises(*args, **kwargs):
    raise ValueError("boom")


@pytest.mark.parametrize("name", REFERENCES)
def test_an_exception_is_a_failure_not_a_crash(name):
    assert "your function raised ValueError: boom" in failure(name, _raises)


def test_printed_line_names_the_case_and_the_mistake(capsys):
    checks.check_neuron_forward(forward_no_hidden_relu)
    line = capsys.readouterr().out.strip()
    assert line.startswith("[failed] neuron_forward: case 1 (instances=")
    assert "matches a known mistake: the hidden ReLU is missing" in line


# --------------------------------------------------------------------------------------
# The cases cover what their docstrings promise
# --------------------------------------------------------------------------------------


def test_forward_cases_cover_edge_shapes_signs_and_both_relus():
    cases = default_cases("neuron_forward", chapter._forward_case)
    assert any(c.W.shape[0] == 1 for c in cases) and any(c.W.shape[1] == 1 for c in cases)
    assert any(c.W.shape[1] == c.W.shape[2] for c in cases)
    assert any((c.x < 0).any() for c in cases) and any((c.x >= 0).all() for c in cases)
    for c in cases:
        pre_hidden = torch.einsum("ihf,ibf->ibh", c.W, c.x)
        out = comp.neuron_forward(c.W, c.b, c.x)
        assert (pre_hidden < 0).any() and (out == 0).any() and (out > 0).any(), c.label


def test_abs_loss_cases_have_negative_inputs_in_every_instance():
    for c in default_cases("abs_loss", chapter._loss_case):
        assert ((c.x < 0).flatten(1).any(dim=1)).all()
    assert any(c.x.shape[0] == 1 for c in default_cases("abs_loss", chapter._loss_case))
    assert any(c.x.shape[1] == 1 for c in default_cases("abs_loss", chapter._loss_case))


def test_layer_cases_have_empty_and_full_rows_and_a_square_wiring():
    cases = default_cases("u_and_layer", chapter._layer_case)
    assert any(c.W.shape[0] == c.W.shape[1] for c in cases)
    for c in cases:
        assert set(c.W.unique().tolist()) <= {0.0, 1.0}
        assert c.x[0].sum() == 0 and c.x[1].sum() == c.x.shape[1]
        assert (c.x @ c.W.T >= 3).any()  # a neuron with three features on (hard AND differs)


def test_readoff_cases_have_uncovered_pairs_and_shared_neurons():
    cases = default_cases("u_and_readoff", chapter._readoff_case)
    for c in cases:
        coverage = comp.pair_coverage(c.W)
        assert coverage[0, 1] == 0 and (coverage > 1).any()
    assert any(c.h.shape[0] == 1 for c in cases)
    assert any((c.W.sum(0) == 0).any() for c in cases)  # a feature wired to no neuron
    assert any("U-AND layer" in c.label for c in cases)


def test_prediction_and_naive_cases_cover_the_edges():
    predictions = default_cases("predicted_u_and_readoffs", chapter._prediction_case)
    assert any(c.l == 2 for c in predictions) and min(c.p for c in predictions) <= 0.01
    naive = default_cases("naive_loss", chapter._naive_case)
    assert any(c.d == c.n for c in naive) and any(c.d > c.n for c in naive)
    assert any(comp.naive_loss_without_mixing(c.n, c.d, c.p) > 0 for c in naive)


# --------------------------------------------------------------------------------------
# neuron_forward
# --------------------------------------------------------------------------------------


def _down(W, x):
    return torch.einsum("ihf,ibf->ibh", W, x)


def _up(W, h):
    return torch.einsum("ihf,ibh->ibf", W, h)


def forward_right_matmul(W, b, x):  # right, another way
    h = torch.relu(x @ W.transpose(1, 2))
    return torch.relu(h @ W + b.unsqueeze(1))


def forward_no_hidden_relu(W, b, x):
    return torch.relu(_up(W, _down(W, x)) + b[:, None, :])


def forward_no_output_relu(W, b, x):
    return _up(W, torch.relu(_down(W, x))) + b[:, None, :]


def forward_no_relus(W, b, x):
    return _up(W, _down(W, x)) + b[:, None, :]


def forward_no_bias(W, b, x):
    return torch.relu(_up(W, torch.relu(_down(W, x))))


def forward_bias_after_relu(W, b, x):
    return torch.relu(_up(W, torch.relu(_down(W, x)))) + b[:, None, :]


def forward_bias_on_input(W, b, x):
    return torch.relu(_up(W, torch.relu(_down(W, x + b[:, None, :]))))


def forward_bias_in_both_layers(W, b, x):
    return torch.relu(_up(W, torch.relu(_down(W, x + b[:, None, :]))) + b[:, None, :])


def forward_swapped_transposes(W, b, x):  # h = ReLU(Wᵀ x): works only for square W
    h = torch.relu(torch.einsum("ihf,ibh->ibf", W, x))
    return torch.relu(torch.einsum("ihf,ibf->ibh", W, h) + b[:, None, :])


FORWARD_MISTAKES = {
    "the hidden ReLU is missing": forward_no_hidden_relu,
    "the output ReLU is missing": forward_no_output_relu,
    "both ReLUs are missing": forward_no_relus,
    "the bias b is missing": forward_no_bias,
    "the bias is added after the output ReLU": forward_bias_after_relu,
    "the bias is added to the input": forward_bias_on_input,
    "the bias is added inside both layers": forward_bias_in_both_layers,
    "W and Wᵀ are swapped": forward_swapped_transposes,
}


def test_every_listed_forward_mistake_has_a_learner_here():
    square = next(s for s in range(8) if chapter._forward_case(s).W.shape[1] == chapter._forward_case(s).W.shape[2])
    listed = chapter._forward_mistakes(chapter._forward_case(square))
    assert len(listed) == len(FORWARD_MISTAKES)
    for phrase in FORWARD_MISTAKES:
        assert sum(description.startswith(phrase) for description in listed) == 1, phrase


@pytest.mark.parametrize("mistake", FORWARD_MISTAKES)
def test_forward_names_each_listed_mistake(mistake):
    learner = FORWARD_MISTAKES[mistake]
    seeds = [3] if learner is forward_swapped_transposes else None  # seed 3: a square W
    assert_names_mistake("neuron_forward", learner, mistake, seeds=seeds)


def test_forward_swapped_transposes_is_an_error_on_non_square_weights():
    assert "your function raised RuntimeError" in failure("neuron_forward", forward_swapped_transposes)


def forward_batch_first(W, b, x):
    return comp.neuron_forward(W, b, x).transpose(0, 1)


def forward_float64(W, b, x):
    return comp.neuron_forward(W.double(), b.double(), x.double())


def forward_in_place(W, b, x):
    x.relu_()
    return comp.neuron_forward(W, b, x)


def forward_hidden(W, b, x):  # returns h instead of x'
    return torch.relu(_down(W, x))


def forward_tuple(W, b, x):
    return comp.neuron_forward(W, b, x), torch.relu(_down(W, x))


@pytest.mark.parametrize("wrong, phrase", [
    (forward_right_matmul, None),
    (forward_batch_first, "output has shape"),
    (forward_hidden, "expected (instances, batch, features)"),
    (forward_float64, "output has dtype torch.float64"),
    (forward_in_place, "changed its input `x` in place"),
    (forward_tuple, "returned a tuple of 2 items"),
])
def test_neuron_forward_catches(wrong, phrase):
    if phrase is None:
        assert_passes("neuron_forward", wrong, seeds=range(16))
    else:
        assert phrase in failure("neuron_forward", wrong)


# --------------------------------------------------------------------------------------
# abs_batch
# --------------------------------------------------------------------------------------


def _shape(p, batch_size):
    return (p.shape[0], batch_size, p.shape[1])


def _uniform(p, batch_size, generator):
    return torch.rand(_shape(p, batch_size), generator=generator)


def batch_global_rng(feature_probability, batch_size):  # right, without a generator argument
    p = feature_probability
    values = 2 * torch.rand(_shape(p, batch_size)) - 1
    return torch.where(torch.rand(_shape(p, batch_size)) < p[:, None, :], values, 0.0)


def batch_unsigned(feature_probability, batch_size, generator=None):
    p = feature_probability
    values = _uniform(p, batch_size, generator)
    return torch.where(_uniform(p, batch_size, generator) < p[:, None, :], values, 0.0)


def batch_swapped(feature_probability, batch_size, generator=None):
    p = feature_probability
    values = 2 * _uniform(p, batch_size, generator) - 1
    return torch.where(_uniform(p, batch_size, generator) < 1 - p[:, None, :], values, 0.0)


def batch_gaussian(feature_probability, batch_size, generator=None):
    p = feature_probability
    values = torch.randn(_shape(p, batch_size), generator=generator)
    return torch.where(_uniform(p, batch_size, generator) < p[:, None, :], values, 0.0)


def batch_plus_minus_one(feature_probability, batch_size, generator=None):
    p = feature_probability
    signs = torch.where(_uniform(p, batch_size, generator) < 0.5, -1.0, 1.0)
    return torch.where(_uniform(p, batch_size, generator) < p[:, None, :], signs, 0.0)


def batch_shared_mask_over_features(feature_probability, batch_size, generator=None):
    p = feature_probability
    values = 2 * _uniform(p, batch_size, generator) - 1
    shared = torch.rand(p.shape[0], batch_size, 1, generator=generator)
    return torch.where(shared < p[:, None, :], values, 0.0)


def batch_shared_mask_over_instances(feature_probability, batch_size, generator=None):
    p = feature_probability
    values = 2 * _uniform(p, batch_size, generator) - 1
    shared = torch.rand(1, batch_size, p.shape[1], generator=generator)
    return torch.where(shared < p[:, None, :], values, 0.0)


def batch_shared_values_over_features(feature_probability, batch_size, generator=None):
    p = feature_probability
    values = 2 * torch.rand(p.shape[0], batch_size, 1, generator=generator) - 1
    return torch.where(_uniform(p, batch_size, generator) < p[:, None, :], values, 0.0)


def batch_reuses_the_uniform(feature_probability, batch_size, generator=None):
    u = _uniform(feature_probability, batch_size, generator)
    return torch.where(u < feature_probability[:, None, :], 2 * u - 1, 0.0)


def batch_half_width(feature_probability, batch_size, generator=None):  # U[-0.5, 0.5]
    return comp.abs_batch(feature_probability, batch_size, generator) / 2


def batch_identical_rows(feature_probability, batch_size, generator=None):
    return comp.abs_batch(feature_probability, 1, generator).expand(-1, batch_size, -1)


def batch_float64(feature_probability, batch_size, generator=None):
    return comp.abs_batch(feature_probability, batch_size, generator).double()


def batch_batch_first(feature_probability, batch_size, generator=None):
    return comp.abs_batch(feature_probability, batch_size, generator).transpose(0, 1)


def batch_in_place(feature_probability, batch_size, generator=None):
    out = comp.abs_batch(feature_probability, batch_size, generator)
    feature_probability.clamp_(0.1, 0.9)
    return out


def test_abs_batch_passes_without_a_generator_and_deterministically():
    assert_passes("abs_batch", batch_global_rng)
    assert checks.evaluate("abs_batch", batch_swapped) == checks.evaluate("abs_batch", batch_swapped)


@pytest.mark.parametrize("wrong, phrase", [
    (batch_unsigned, "no active entry is negative: the values should be uniform on [−1, 1], not on [0, 1]"),
    (batch_swapped, "sparsity and feature probability are swapped"),
    (batch_gaussian, "outside [−1, 1]"),
    (batch_plus_minus_one, "are the active values all the same size (±1)?"),
    (batch_shared_mask_over_features, "are not independent"),
    (batch_shared_mask_over_instances, "are not independent"),
    (batch_shared_values_over_features, "are not independent"),
    (batch_reuses_the_uniform, "with separate random numbers"),
    (batch_half_width, "should be uniform on [−1, 1]"),
    (batch_identical_rows, "every row of the batch is the same"),
    (batch_float64, "dtype torch.float64"),
    (batch_batch_first, "output has shape"),
    (batch_in_place, "changed its input `feature_probability` in place"),
])
def test_abs_batch_catches(wrong, phrase):
    assert phrase in failure("abs_batch", wrong)


def test_abs_batch_shared_mask_is_caught_on_every_case_with_a_testable_pair():
    """Nested masks over features (one uniform compared with each feature's p) are correlated
    enough to fail on every default case on its own, except where every neighbouring pair has a
    feature with probability 0 or 1 (always off or always on: independent of anything)."""
    for seed in checks.check_abs_batch.exercise.seeds:
        p = chapter._batch_case(seed).feature_probability
        inside = (p > 0) & (p < 1)
        if (inside[:, :-1] & inside[:, 1:]).any():
            assert "are not independent" in failure("abs_batch", batch_shared_mask_over_features, seeds=[seed])
        else:
            assert seed % 4 == 2


# --------------------------------------------------------------------------------------
# abs_loss
# --------------------------------------------------------------------------------------


def _I(importance):
    return importance[:, None, :]


def loss_right_sum(y, x, importance):  # right, another way
    return (_I(importance) * (y - x.abs()).square()).sum(dim=(1, 2)) / (x.shape[1] * x.shape[2])


def loss_target_x(y, x, importance):
    return (_I(importance) * (y - x) ** 2).mean(dim=(1, 2))


def loss_target_relu(y, x, importance):
    return (_I(importance) * (y - torch.relu(x)) ** 2).mean(dim=(1, 2))


def loss_no_importance(y, x, importance):
    return ((y - x.abs()) ** 2).mean(dim=(1, 2))


def loss_importance_squared(y, x, importance):
    return (_I(importance) * (y - x.abs())).square().mean(dim=(1, 2))


def loss_absolute_error(y, x, importance):
    return (_I(importance) * (y - x.abs()).abs()).mean(dim=(1, 2))


def loss_sum(y, x, importance):
    return (_I(importance) * (y - x.abs()) ** 2).sum(dim=(1, 2))


def loss_sum_over_features(y, x, importance):
    return (_I(importance) * (y - x.abs()) ** 2).mean(dim=1).sum(dim=-1)


def loss_sum_over_batch(y, x, importance):
    return (_I(importance) * (y - x.abs()) ** 2).sum(dim=1).mean(dim=-1)


def loss_mean_over_instances_broadcast(y, x, importance):
    return (_I(importance) * (y - x.abs()) ** 2).mean().expand(x.shape[0])


def loss_sqrt(y, x, importance):
    return (_I(importance) * (y - x.abs()) ** 2).mean(dim=(1, 2)).sqrt()


ABS_LOSS_MISTAKES = {
    "the target is x instead of |x|": loss_target_x,
    "the target is ReLU(x) instead of |x|": loss_target_relu,
    "the importance is not applied": loss_no_importance,
    "the importance is squared": loss_importance_squared,
    "the absolute error instead of the squared error": loss_absolute_error,
    "a sum over batch and features instead of a mean": loss_sum,
    "a mean over the batch but a sum over features": loss_sum_over_features,
    "a sum over the batch but a mean over features": loss_sum_over_batch,
    "the mean is taken over the instances too": loss_mean_over_instances_broadcast,
    "the square root of the loss": loss_sqrt,
}


def test_every_listed_abs_loss_mistake_has_a_learner_here():
    listed = chapter._abs_loss_mistakes(chapter._loss_case(0))
    assert len(listed) == len(ABS_LOSS_MISTAKES)
    for phrase in ABS_LOSS_MISTAKES:
        assert sum(description.startswith(phrase) for description in listed) == 1, phrase


@pytest.mark.parametrize("mistake", ABS_LOSS_MISTAKES)
def test_abs_loss_names_each_listed_mistake(mistake):
    assert_names_mistake("abs_loss", ABS_LOSS_MISTAKES[mistake], mistake)


def loss_scalar(y, x, importance):
    return (_I(importance) * (y - x.abs()) ** 2).mean()


def loss_per_feature(y, x, importance):
    return (_I(importance) * (y - x.abs()) ** 2).mean(dim=1)


def loss_in_place(y, x, importance):
    x.abs_()
    return (_I(importance) * (y - x) ** 2).mean(dim=(1, 2))


def loss_none(y, x, importance):
    (_I(importance) * (y - x.abs()) ** 2).mean(dim=(1, 2))


@pytest.mark.parametrize("wrong, phrase", [
    (loss_right_sum, None),
    (loss_scalar, "output is a single number (shape ()), expected (instances,)"),
    (loss_per_feature, "keep one loss per instance"),
    (loss_in_place, "changed its input `x` in place"),
    (loss_none, "returned None"),
])
def test_abs_loss_catches(wrong, phrase):
    if phrase is None:
        assert_passes("abs_loss", wrong, seeds=range(16))
    else:
        assert phrase in failure("abs_loss", wrong)


# --------------------------------------------------------------------------------------
# u_and_layer
# --------------------------------------------------------------------------------------


def layer_right_einsum(W, x):  # right, another way
    return torch.clamp(torch.einsum("km,bm->bk", W, x) - 1, min=0)


def layer_no_bias(W, x):
    return torch.relu(x @ W.T)


def layer_bias_plus_one(W, x):
    return torch.relu(x @ W.T + 1)


def layer_bias_minus_two(W, x):
    return torch.relu(x @ W.T - 2)


def layer_no_relu(W, x):
    return x @ W.T - 1


def layer_relu_before_bias(W, x):
    return torch.relu(x @ W.T) - 1


def layer_hard_and(W, x):
    return (x @ W.T >= 2).float()


def layer_untransposed(W, x):
    return torch.relu(x @ W - 1)


LAYER_MISTAKES = {
    "the bias −1 is missing": layer_no_bias,
    "the bias is +1 instead of −1": layer_bias_plus_one,
    "the bias is −2 instead of −1": layer_bias_minus_two,
    "the ReLU is missing, or applied before subtracting 1": layer_no_relu,
    "the neuron outputs a hard 0/1": layer_hard_and,
    "x W instead of x Wᵀ": layer_untransposed,
}


def test_every_listed_layer_mistake_has_a_learner_here():
    case = chapter._layer_case(3)
    assert case.W.shape[0] == case.W.shape[1]
    listed = chapter._layer_mistakes(case.W, case.x)
    assert len(listed) == len(LAYER_MISTAKES)
    for phrase in LAYER_MISTAKES:
        assert sum(description.startswith(phrase) for description in listed) == 1, phrase


@pytest.mark.parametrize("mistake", LAYER_MISTAKES)
def test_layer_names_each_listed_mistake(mistake):
    learner = LAYER_MISTAKES[mistake]
    seeds = [3, 7] if learner is layer_untransposed else None  # square wirings
    assert_names_mistake("u_and_layer", learner, mistake, seeds=seeds)


def test_layer_relu_before_bias_is_named_as_missing_relu():
    assert "the ReLU is missing, or applied before subtracting 1" in failure("u_and_layer", layer_relu_before_bias)


def layer_transposed_output(W, x):
    return comp.u_and_hidden(W, x).T


def layer_bool(W, x):
    return comp.u_and_hidden(W, x) > 0


def layer_in_place(W, x):
    W.sub_(0)  # no change: allowed
    x.mul_(2)
    return comp.u_and_hidden(W, x / 2)


@pytest.mark.parametrize("wrong, phrase", [
    (layer_right_einsum, None),
    (layer_untransposed, "your function raised RuntimeError"),  # non-square wiring
    (layer_transposed_output, "output has shape"),
    (layer_bool, "output has dtype torch.bool"),
    (layer_in_place, "changed its input `x` in place"),
])
def test_u_and_layer_catches(wrong, phrase):
    if phrase is None:
        assert_passes("u_and_layer", wrong, seeds=range(16))
    else:
        assert phrase in failure("u_and_layer", wrong)


# --------------------------------------------------------------------------------------
# u_and_readoff
# --------------------------------------------------------------------------------------


def _pair_sums(W, h):
    return torch.einsum("bk,ki,kj->bij", h, W, W)


def readoff_right_plain_division(W, h):  # right: 0/0 is NaN by itself
    return _pair_sums(W, h) / (W.T @ W)


def readoff_right_loop(W, h):  # right, a loop over pairs; the diagonal left at 0
    batch, m = h.shape[0], W.shape[1]
    out = torch.zeros(batch, m, m)
    for i in range(m):
        for j in range(m):
            if i == j:
                continue
            both = (W[:, i] * W[:, j]).bool()
            out[:, i, j] = h[:, both].mean(dim=1) if both.any() else float("nan")
    return out


def readoff_sum(W, h):
    coverage = W.T @ W
    return torch.where(coverage > 0, _pair_sums(W, h), float("nan"))


def readoff_divide_by_d(W, h):
    coverage = W.T @ W
    return torch.where(coverage > 0, _pair_sums(W, h) / W.shape[0], float("nan"))


def readoff_divide_by_either(W, h):
    coverage = W.T @ W
    wired = W.sum(dim=0)
    either = wired[:, None] + wired[None, :] - coverage
    return torch.where(coverage > 0, _pair_sums(W, h) / either, float("nan"))


def readoff_mean_over_either(W, h):
    either = ((W[:, :, None] + W[:, None, :]) > 0).float()  # (d, m, m)
    coverage = W.T @ W
    mean = torch.einsum("bk,kij->bij", h, either) / either.sum(dim=0).clamp(min=1)
    return torch.where(coverage > 0, mean, float("nan"))


def readoff_max(W, h):
    both = (W[:, :, None] * W[:, None, :]).bool()
    values = torch.where(both[None], h[:, :, None, None], -math.inf).amax(dim=1)
    return torch.where(values == -math.inf, float("nan"), values)


def readoff_wired_to_i(W, h):
    coverage = W.T @ W
    by_i = (h @ W) / W.sum(dim=0).clamp(min=1)
    return torch.where(coverage > 0, by_i[:, :, None].expand(-1, -1, W.shape[1]), float("nan"))


def readoff_wired_to_j(W, h):
    coverage = W.T @ W
    by_j = (h @ W) / W.sum(dim=0).clamp(min=1)
    return torch.where(coverage > 0, by_j[:, None, :].expand(-1, W.shape[1], -1), float("nan"))


def readoff_zero_not_nan(W, h):
    return _pair_sums(W, h) / (W.T @ W).clamp(min=1)


READOFF_MISTAKES = {
    "the sum over the neurons wired to both features instead of the mean": readoff_sum,
    "divided by d (all neurons)": readoff_divide_by_d,
    "divided by the number of neurons wired to either feature": readoff_divide_by_either,
    "averaged over the neurons wired to either feature": readoff_mean_over_either,
    "the maximum over the neurons wired to both features": readoff_max,
    "the mean over the neurons wired to feature i only": readoff_wired_to_i,
    "the mean over the neurons wired to feature j only": readoff_wired_to_j,
}


def test_readoff_right_answers_pass():
    for learner in (readoff_right_plain_division, readoff_right_loop):
        assert_passes("u_and_readoff", learner, seeds=range(16))


def test_every_listed_readoff_mistake_has_a_learner_here():
    case = chapter._readoff_case(0)
    listed = chapter._readoff_mistakes(case.W, case.h)
    assert len(listed) == len(READOFF_MISTAKES)
    for phrase in READOFF_MISTAKES:
        assert sum(description.startswith(phrase) for description in listed) == 1, phrase


@pytest.mark.parametrize("mistake", READOFF_MISTAKES)
def test_readoff_names_each_listed_mistake(mistake):
    assert_names_mistake("u_and_readoff", READOFF_MISTAKES[mistake], mistake)


def test_readoff_zero_instead_of_nan_asks_for_nan():
    message = failure("u_and_readoff", readoff_zero_not_nan)
    assert "your output is 0; the mean over no neurons is undefined, so return NaN there" in message


def readoff_minus_one_not_nan(W, h):
    out = readoff_right_plain_division(W, h)
    return torch.nan_to_num(out, nan=-1.0)


def readoff_nan_everywhere_off_diagonal(W, h):
    return torch.full((h.shape[0], W.shape[1], W.shape[1]), float("nan"))


def readoff_unbatched(W, h):
    return readoff_right_plain_division(W, h).mean(dim=0)


def readoff_float64(W, h):
    return readoff_right_plain_division(W.double(), h.double())


def readoff_in_place(W, h):
    h.clamp_(max=1.0)
    return readoff_right_plain_division(W, h)


@pytest.mark.parametrize("wrong, phrase", [
    (readoff_minus_one_not_nan, "your output is a number; the mean over no neurons is undefined, so return NaN"),
    (readoff_nan_everywhere_off_diagonal, "output is NaN at"),
    (readoff_unbatched, "expected (batch, m, m)"),
    (readoff_float64, "output has dtype torch.float64"),
    (readoff_in_place, "changed its input `h` in place"),
])
def test_u_and_readoff_catches(wrong, phrase):
    assert phrase in failure("u_and_readoff", wrong)


def test_readoff_inf_is_caught():
    # a sum over no neurons divided by a count of 0 is 0/0 = NaN; inf only from a nonzero sum
    def readoff_with_inf(W, h):
        out = readoff_right_plain_division(W, h).clone()
        out[:, 0, 1] = math.inf
        return out

    assert "output contains inf" in failure("u_and_readoff", readoff_with_inf)


def test_readoff_ignores_the_diagonal():
    def readoff_nan_diagonal(W, h):
        out = readoff_right_plain_division(W, h)
        return out.masked_fill(torch.eye(W.shape[1], dtype=torch.bool), float("nan"))

    assert_passes("u_and_readoff", readoff_nan_diagonal)


# --------------------------------------------------------------------------------------
# predicted_u_and_readoffs
# --------------------------------------------------------------------------------------


def laws(both, one, none):
    """A learner returning the given laws of (p, l)."""
    def learner(p, l):
        return {"both": both(p, l), "one": one(p, l), "none": none(p, l)}
    return learner


def _both(p, l):
    return 1 + (l - 2) * p


def _one(p, l):
    return (l - 1) * p


def _none(p, l):
    return math.comb(l, 2) * p**2


def predicted_exact(p, l):  # right: the exact "none"
    return comp.predicted_u_and_readoffs(p, l, exact=True)


def predicted_tensors(p, l):  # right: 0-d tensors and NumPy scalars are accepted
    return {"both": torch.tensor(_both(p, l)), "one": np.float64(_one(p, l)), "none": np.float32(_none(p, l))}


def predicted_extra_key(p, l):  # right: an extra key does no harm
    return {"both": _both(p, l), "one": _one(p, l), "none": _none(p, l), "two": 0.0}


PREDICTION_MISTAKES = {
    "'both' is wrong and matches a known mistake: 1 + l p": laws(lambda p, l: 1 + l * p, _one, _none),
    "'both' is wrong and matches a known mistake: 1 + (l − 1) p": laws(lambda p, l: 1 + (l - 1) * p, _one, _none),
    "'both' is wrong and matches a known mistake: (l − 2) p": laws(lambda p, l: (l - 2) * p, _one, _none),
    "'both' is wrong and matches a known mistake: 1: the leak": laws(lambda p, l: 1.0, _one, _none),
    "'one' is wrong and matches a known mistake: l p": laws(_both, lambda p, l: l * p, _none),
    "'one' is wrong and matches a known mistake: (l − 2) p": laws(_both, lambda p, l: (l - 2) * p, _none),
    "'one' is wrong and matches a known mistake: 1 + (l − 1) p": laws(_both, lambda p, l: 1 + (l - 1) * p, _none),
    "'one' is wrong and matches a known mistake: 0": laws(_both, lambda p, l: 0, _none),
    "'none' is wrong and matches a known mistake: l² p²:": laws(_both, _one, lambda p, l: (l * p) ** 2),
    "'none' is wrong and matches a known mistake: l² p²/2": laws(_both, _one, lambda p, l: (l * p) ** 2 / 2),
    "'none' is wrong and matches a known mistake: l p²": laws(_both, _one, lambda p, l: l * p * p),
    "'none' is wrong and matches a known mistake: C(l, 2) p:": laws(_both, _one, lambda p, l: math.comb(l, 2) * p),
    "'none' is wrong and matches a known mistake: l p:": laws(_both, _one, lambda p, l: l * p),
    "'none' is wrong and matches a known mistake: 0": laws(_both, _one, lambda p, l: 0.0),
}


def test_predicted_right_answers_pass():
    for learner in (laws(_both, _one, _none), predicted_exact, predicted_tensors, predicted_extra_key):
        for seeds in (None, range(100, 132)):
            assert_passes("predicted_u_and_readoffs", learner, seeds=seeds)


def test_every_listed_prediction_mistake_has_a_learner_here():
    listed = chapter._prediction_mistakes(0.1, 5)
    assert sum(len(v) for v in listed.values()) == len(PREDICTION_MISTAKES)
    for key, mistakes in listed.items():
        for description in mistakes:
            full = f"{key!r} is wrong and matches a known mistake: {description}"
            assert sum(full.startswith(phrase) for phrase in PREDICTION_MISTAKES) == 1, full


@pytest.mark.parametrize("mistake", PREDICTION_MISTAKES)
def test_predicted_names_each_listed_mistake(mistake):
    message = failure("predicted_u_and_readoffs", PREDICTION_MISTAKES[mistake])
    assert mistake in message, message


def predicted_tuple(p, l):
    return _both(p, l), _one(p, l), _none(p, l)


def predicted_wrong_keys(p, l):
    return {"both": _both(p, l), "one": _one(p, l), "neither": _none(p, l)}


def predicted_string_value(p, l):
    return {"both": _both(p, l), "one": f"{_one(p, l):.3f}", "none": _none(p, l)}


def predicted_nan(p, l):
    return {"both": _both(p, l), "one": _one(p, l), "none": float("nan")}


def predicted_vector(p, l):
    return {"both": torch.tensor([_both(p, l)] * 2), "one": _one(p, l), "none": _none(p, l)}


def predicted_none(p, l):
    {"both": _both(p, l), "one": _one(p, l), "none": _none(p, l)}


def predicted_second_order_both(p, l):  # not listed
    return {"both": 1 + (l - 2) * p + p * p, "one": _one(p, l), "none": _none(p, l)}


@pytest.mark.parametrize("wrong, phrase", [
    (predicted_tuple, "returned tuple; expected a dict with the keys 'both', 'one' and 'none'"),
    (predicted_none, "returned None (did you forget to `return`?)"),
    (predicted_wrong_keys, "your dict lacks the key(s) 'none' (its keys: 'both', 'one', 'neither')"),
    (predicted_string_value, "the entry 'one' of your dict is str; expected a number"),
    (predicted_nan, "the entry 'none' of your dict is nan, not a finite number"),
    (predicted_vector, "the entry 'both' of your dict is Tensor; expected a number"),
    (predicted_second_order_both, "the entry 'both' is too high"),
])
def test_predicted_catches(wrong, phrase):
    assert phrase in failure("predicted_u_and_readoffs", wrong)


def test_prediction_cases_tell_the_mistakes_apart_from_the_right_laws():
    """On every default case, the mistakes of each entry differ from the right values."""
    for seed in checks.check_predicted_u_and_readoffs.exercise.seeds:
        case = chapter._prediction_case(seed)
        right = comp.predicted_u_and_readoffs(case.p, case.l)
        exact = comp.predicted_u_and_readoffs(case.p, case.l, exact=True)
        for key, mistakes in chapter._prediction_mistakes(case.p, case.l).items():
            caught = [not _close_number(wrong, right[key]) and not _close_number(wrong, exact[key])
                      for wrong in mistakes.values()]
            assert sum(caught) >= len(caught) - 1, (case.label, key)


# --------------------------------------------------------------------------------------
# naive_loss
# --------------------------------------------------------------------------------------


def naive_right(n_features, d_mlp, feature_probability):  # right: the learner's version of the hints
    unserved = max(n_features - d_mlp, 0)
    return feature_probability * unserved * (1 / 6) / n_features


def naive_right_tensor(n_features, d_mlp, feature_probability):  # right: a 0-d tensor is accepted
    return torch.tensor(feature_probability / 6) * torch.tensor(n_features - d_mlp).clamp(min=0) / n_features


def naive_one_third(n, d, p):
    return p * max(n - d, 0) / (3 * n)


def naive_not_averaged(n, d, p):
    return p * max(n - d, 0) / 6


def naive_served(n, d, p):
    return p * d / (6 * n)


def naive_p_squared(n, d, p):
    return p * p * max(n - d, 0) / (6 * n)


def naive_p_over_12(n, d, p):
    return p / 12


def naive_one_twelfth(n, d, p):
    return 1 / 12


def naive_over_d(n, d, p):
    return p * max(n - d, 0) / (6 * d)


def naive_unclamped(n, d, p):
    return p * (n - d) / (6 * n)


NAIVE_MISTAKES = {
    "1/3 is E[x²]": naive_one_third,
    "the loss is not averaged over the n features": naive_not_averaged,
    "d features miss ReLU(x) instead of n − d": naive_served,
    "p² instead of p": naive_p_squared,
    "p/12 is the loss for n = 100 features and d = 50 neurons only": naive_p_over_12,
    "1/12 is L/p for n = 100 features and d = 50 neurons only": naive_one_twelfth,
    "averaged over the d_mlp neurons instead of the n features": naive_over_d,
    "with d_mlp ≥ n_features every feature is served": naive_unclamped,
}


def test_naive_right_answers_pass():
    for learner in (naive_right, naive_right_tensor):
        for seeds in (None, range(100, 132)):
            assert_passes("naive_loss", learner, seeds=seeds)


def test_every_listed_naive_mistake_has_a_learner_here():
    listed = chapter._naive_mistakes(100, 30, 0.05)
    assert len(listed) == len(NAIVE_MISTAKES)
    for phrase in NAIVE_MISTAKES:
        assert sum(description.startswith(phrase) for description in listed) == 1, phrase


@pytest.mark.parametrize("mistake", NAIVE_MISTAKES)
def test_naive_names_each_listed_mistake(mistake):
    assert_names_mistake("naive_loss", NAIVE_MISTAKES[mistake], mistake)


def naive_zero(n, d, p):
    return 0.0


def naive_one_sixth_per_feature(n, d, p):  # not listed: forgot p
    return max(n - d, 0) / (6 * n)


def naive_served_is_zero_when_full(n, d, p):  # wrong only where d ≥ n
    return p * abs(n - d) / (6 * n) + (p if d >= n else 0)


def naive_vector(n, d, p):
    return torch.full((n,), p / 6)


def naive_string(n, d, p):
    return "0.01"


def naive_none(n, d, p):
    naive_right(n, d, p)


@pytest.mark.parametrize("wrong, phrase", [
    (naive_zero, "your loss is 0, but n_features − d_mlp features have no neuron"),
    (naive_one_sixth_per_feature, "your loss is too high: count the unserved features"),
    (naive_served_is_zero_when_full, "your loss should be 0 here"),
    (naive_vector, "returned a tensor of shape"),
    (naive_string, "your function returned str; expected a number"),
    (naive_none, "returned None"),
])
def test_naive_catches(wrong, phrase):
    assert phrase in failure("naive_loss", wrong)


# --------------------------------------------------------------------------------------
# Wrong shapes, for every tensor-valued exercise
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("name, wrong, phrase", [
    ("neuron_forward", lambda W, b, x: comp.neuron_forward(W, b, x)[:, :1], "output has shape"),
    ("abs_batch", lambda p, n, generator=None: comp.abs_batch(p, n + 1, generator), "output has shape"),
    ("abs_loss", lambda y, x, importance: comp.abs_loss(y, x, importance)[None], "output has shape"),
    ("u_and_layer", lambda W, x: comp.u_and_hidden(W, x)[None], "output has shape"),
    ("u_and_readoff", lambda W, h: comp.u_and_readoff(W, h)[:, :-1], "output has shape"),
])
def test_wrong_shapes_are_failures(name, wrong, phrase):
    assert phrase in failure(name, wrong)


# --------------------------------------------------------------------------------------
# The load-bearing exercises return what the chapter runs
# --------------------------------------------------------------------------------------

CAPSTONES = {"AbsModel": comp.AbsModel, "u_and_wiring": comp.u_and_wiring, "UAnd": comp.UAnd}


@pytest.mark.parametrize("name", [*REFERENCES, *CAPSTONES])
def test_every_chapter_04_exercise_has_a_reference(name):
    expected = {**REFERENCES, **CAPSTONES}[name]
    assert checks.EXERCISES[name].exercise.reference is expected
    assert checks.is_reference(expected)


@pytest.mark.parametrize("name", CAPSTONES)
def test_capstone_reference_passes_and_stub_is_not_attempted(name, capsys):
    assert_reference_passes_and_stub_is_not_attempted(name, CAPSTONES[name], capsys)


@pytest.mark.parametrize("name", CAPSTONES)
def test_capstone_reference_passes_hidden_seeds(name):
    assert_passes(name, CAPSTONES[name], seeds=range(100, 112))


def test_capstone_checks_are_registered():
    for name, check in (("AbsModel", checks.check_abs_model), ("u_and_wiring", checks.check_u_and_wiring),
                        ("UAnd", checks.check_u_and)):
        assert checks.EXERCISES[name] is check and check.__name__ in checks.__all__
        assert len(check.exercise.hints) >= 2 and len(check.exercise.seeds) >= 8 and name in check.__doc__


# --------------------------------------------------------------------------------------
# Capstone A: the AbsModel class
# --------------------------------------------------------------------------------------


def abs_model_class(**mistakes):
    """The reference AbsModel written out plainly, with one mistake switched on."""
    m = mistakes
    from course_utils.toy_models import per_instance

    class AbsModel(torch.nn.Module):
        def __init__(self, n_features, n_hidden, n_instances=1, feature_probability=1.0, importance=1.0,
                     init_scale=1.0, device="cpu", generator=None):
            super().__init__()
            self.n_features, self.n_hidden, self.n_instances = n_features, n_hidden, n_instances
            self.register_buffer("feature_probability", per_instance(feature_probability, n_instances, n_features).to(device))
            self.register_buffer("importance", per_instance(importance, n_instances, n_features).to(device))
            std = (1.0 if m.get("no_init_scale") else init_scale) * (2 / (n_hidden + n_features)) ** 0.5
            gen = None if m.get("global_rng") else generator
            if m.get("W2_first"):
                W2 = torch.randn(n_instances, n_features, n_hidden, generator=gen) * std
                W1 = torch.randn(n_instances, n_hidden, n_features, generator=gen) * std
            else:
                W1 = torch.randn(n_instances, n_hidden, n_features, generator=gen) * std
                W2 = torch.randn(n_instances, n_features, n_hidden, generator=gen) * std
            if m.get("std_one"):
                W1, W2 = W1 / std, W2 / std
            self.W1 = torch.nn.Parameter(W1.to(device))
            self.W2 = torch.nn.Parameter((W1.transpose(1, 2).clone() if m.get("tied_init") else W2).to(device))
            self.b = torch.nn.Parameter(torch.zeros(n_instances, n_features, device=device))

        def forward(self, x):
            pre = torch.einsum("ihf,ibf->ibh", self.W1, x)
            h = pre if m.get("no_hidden_relu") else torch.relu(pre)
            if m.get("tied"):
                out = torch.einsum("ihf,ibh->ibf", self.W1, h)
            elif m.get("W2_axes"):
                out = torch.einsum("ihf,ibh->ibf", self.W2, h)
            else:
                out = torch.einsum("ifh,ibh->ibf", self.W2, h)
            if m.get("no_bias"):
                return torch.relu(out)
            out = out + self.b[:, None, :]
            return out if m.get("no_output_relu") else torch.relu(out)

        def loss(self, x):
            y = self(x)
            if m.get("detached"):
                y = y.detach()
            target = x if m.get("target_x") else x.abs()
            return (self.importance[:, None, :] * (y - target) ** 2).mean(dim=(1, 2))

        def generate_batch(self, batch_size, generator=None):
            if m.get("unsigned_batch"):
                return comp.abs_batch(self.feature_probability, batch_size, generator).abs()
            return comp.abs_batch(self.feature_probability, batch_size, None if m.get("batch_global") else generator)

    return AbsModel


def test_the_plain_abs_model_class_passes():
    assert_passes("AbsModel", abs_model_class())
    assert_passes("AbsModel", abs_model_class(), seeds=range(100, 108))


@pytest.mark.parametrize("mistake, phrase", [
    ("global_rng", "drew from torch's global random state"),
    ("tied_init", "W2 is W1ᵀ (tied weights)"),
    ("W2_first", "W2 is drawn before W1"),
    ("no_init_scale", "do not include init_scale"),
    ("std_one", "do not have Xavier-normal's spread"),
    ("no_hidden_relu", "the hidden ReLU is missing"),
    ("no_output_relu", "the output ReLU is missing"),
    ("no_bias", "the bias b is missing"),
    ("tied", "tied weights"),
    ("W2_axes", "W2's axes are read the wrong way round"),
    ("target_x", "the target is x instead of |x|"),
    ("detached", "your loss carries no gradient"),
    ("unsigned_batch", "negative"),
    ("batch_global", "generate_batch does not draw from the `generator`"),
])
def test_the_abs_model_check_catches(mistake, phrase):
    seeds = [3, 7] if mistake == "W2_axes" else None  # square W1: reading W2's axes wrongly raises no error
    assert phrase in failure("AbsModel", abs_model_class(**{mistake: True}), seeds=seeds)


def test_abs_model_wrong_axes_fail_on_the_default_cases_too():
    assert failure("AbsModel", abs_model_class(W2_axes=True))  # a shape error on the non-square cases


# --------------------------------------------------------------------------------------
# Capstone B: the U-AND wiring and construction
# --------------------------------------------------------------------------------------


def wiring_above(m, d, p, generator=None):
    return (torch.rand(d, m, generator=generator) > p).float()


def wiring_transposed(m, d, p, generator=None):
    return (torch.rand(m, d, generator=generator) < p).float().T


def wiring_global(m, d, p, generator=None):
    return (torch.rand(d, m) < p).float()


def wiring_bernoulli(m, d, p, generator=None):  # right: torch.bernoulli compares the same uniforms with p
    return torch.bernoulli(torch.full((d, m), float(p)), generator=generator)


def wiring_gaussian(m, d, p, generator=None):
    return (torch.randn(d, m, generator=generator) < p).float()


def wiring_extra_draw(m, d, p, generator=None):  # right frequency, another draw
    torch.rand(1, generator=generator)
    return (torch.rand(d, m, generator=generator) < p).float()


def test_u_and_wiring_passes_bernoulli():
    assert_passes("u_and_wiring", wiring_bernoulli)


def wiring_bool(m, d, p, generator=None):
    return torch.rand(d, m, generator=generator) < p


def wiring_shape_m_d(m, d, p, generator=None):
    return (torch.rand(m, d, generator=generator) < p).float()


@pytest.mark.parametrize("wrong, phrase", [
    (wiring_above, "1 with probability 1 − p instead of p"),
    (wiring_transposed, "drawn as (m, d) and transposed"),
    (wiring_global, "`generator` argument"),
    (wiring_gaussian, "a fraction p of the entries"),
    (wiring_extra_draw, "not the course's draw"),
    (wiring_bool, "dtype torch.bool"),
    (wiring_shape_m_d, "shape"),
])
def test_u_and_wiring_catches(wrong, phrase):
    assert phrase in failure("u_and_wiring", wrong)


def u_and_class(**mistakes):
    """The reference UAnd written out plainly, with one mistake switched on."""
    m_ = mistakes

    class UAnd:
        def __init__(self, m, d, p, generator=None):
            self.m, self.d, self.p = m, d, p
            self.W = (torch.rand(d, m, generator=None if m_.get("global_rng") else generator) < p).float()

        def hidden(self, x):
            pre = x @ self.W.T
            if m_.get("no_bias"):
                return torch.relu(pre)
            return torch.relu(pre - (2 if m_.get("threshold_two") else 1))

        def readoff(self, h):
            coverage = self.W.T @ self.W
            total = torch.einsum("bk,ki,kj->bij", h, self.W, self.W)
            if m_.get("summed"):
                mean = total
            else:
                mean = total / coverage.clamp(min=1)
            fill = 0.0 if m_.get("uncovered_zero") else float("nan")
            return torch.where(coverage > 0, mean, torch.full_like(total, fill))

        def __call__(self, x):
            return self.readoff(self.hidden(x))

        def coverage(self):
            if m_.get("coverage_either"):
                wired = self.W.sum(0)
                return wired[:, None] + wired[None, :] - self.W.T @ self.W
            return self.W.T @ self.W

    return UAnd


def test_the_plain_u_and_class_passes():
    assert_passes("UAnd", u_and_class())
    assert_passes("UAnd", u_and_class(), seeds=range(100, 108))


@pytest.mark.parametrize("mistake, phrase", [
    ("global_rng", "drew from torch's global random state"),
    ("no_bias", "the bias −1 is missing"),
    ("threshold_two", "the bias is −2 instead of −1"),
    ("summed", "the sum over the neurons wired to both features instead of the mean"),
    ("uncovered_zero", "is 0 for pairs no neuron is wired to"),
    ("coverage_either", "counts the neurons wired to either feature"),
])
def test_the_u_and_check_catches(mistake, phrase):
    assert phrase in failure("UAnd", u_and_class(**{mistake: True}))


def test_u_and_cases_include_uncovered_pairs_and_exactly_two_on():
    cases = default_cases("UAnd", chapter._u_and_case)
    uncovered = [comp.uncovered_fraction(comp.UAnd(c.m, c.d, c.p, torch.Generator().manual_seed(c.seed)))
                 for c in cases]
    assert sum(u > 0 for u in uncovered) >= 3 and sum(u == 0 for u in uncovered) >= 2, uncovered
    assert all((c.x.sum(dim=1) == 2).any() for c in cases)
    assert any(c.m == c.d for c in cases)
