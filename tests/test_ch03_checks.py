"""Chapter 03's checks: the reference passes, the stub is "not attempted", and plausible
wrong implementations fail with a message that names what is wrong."""

from __future__ import annotations

import functools
import math
import re

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
from course_utils import polysemanticity as poly
from course_utils.checks import polysemanticity as chapter

pytestmark = pytest.mark.usefixtures("one_thread")  # the simulations are 3x slower on many threads

REFERENCES = {
    "autoencoder_loss": poly.autoencoder_loss,
    "count_polysemantic_neurons": poly.polysemantic_neurons,
    "predicted_polysemantic": poly.predicted_polysemantic,
    "initial_argmax_win_rate": poly.initial_argmax_win_rate,
    "train_autoencoder": poly.train_autoencoder,
    "ce_lower_bound": poly.ce_lower_bound,
}

@pytest.fixture(autouse=True, scope="module")
def memoised_simulation():
    """The prediction cases simulate 40,000 trials each (about 0.3 s); the simulation is seeded,
    so each (n, m, trials, seed) is run once for the whole module."""
    simulate = functools.lru_cache(maxsize=None)(poly.simulate_polysemantic)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(poly, "simulate_polysemantic", simulate)
        yield


@pytest.mark.parametrize("name", REFERENCES)
def test_reference_passes_and_stub_is_not_attempted(name, capsys):
    assert_reference_passes_and_stub_is_not_attempted(name, REFERENCES[name], capsys)


@pytest.mark.parametrize("name", REFERENCES)
def test_reference_passes_hidden_seeds(name):
    assert_passes(name, REFERENCES[name], seeds=range(100, 132))


def test_registered_under_the_exercise_names():
    assert_registered({k: v for k, v in REFERENCES.items() if k != "train_autoencoder"})
    assert_registered(["train_autoencoder"], min_seeds=6)


def test_every_check_returns_the_reference_it_hands_over():
    for name, reference in REFERENCES.items():
        assert checks.EXERCISES[name].exercise.reference is reference, name


def test_failure_messages_name_the_case():
    message = failure("autoencoder_loss", loss_no_relu)
    assert message.startswith("case 1 (instances=2, n=5, m=11, l1=0.01): ")


# --------------------------------------------------------------------------------------
# The cases cover what their docstrings promise
# --------------------------------------------------------------------------------------


def test_loss_cases_cover_l1_zero_one_instance_square_and_large_weights():
    cases = default_cases("autoencoder_loss", chapter._loss_case)
    assert any(c.l1 == 0 for c in cases) and any(c.l1 > 0 for c in cases)
    assert any(c.W.shape[0] == 1 for c in cases)
    assert any(c.W.shape[-2] == c.W.shape[-1] for c in cases)  # n = m
    assert all(c.W.shape[-1] >= c.W.shape[-2] for c in cases)  # never fewer neurons than features
    grams = [c.W @ c.W.transpose(-1, -2) for c in cases]
    assert any((G.diagonal(dim1=-2, dim2=-1) > 1).any() for G in grams)  # large weights
    # Most cases have a negative entry in W Wᵀ, where a missing output ReLU shows.
    assert sum(bool((G < 0).any()) for G in grams) >= 6
    assert len({c.l1 for c in cases}) >= 3


def test_count_cases_cover_one_instance_three_features_and_an_empty_instance():
    cases = default_cases("count_polysemantic_neurons", chapter._count_case)
    assert any(c.W.shape[0] == 1 for c in cases)
    assert all(c.W.shape[-1] != c.W.shape[-2] for c in cases)
    # a neuron with three (or more) active features
    assert any((poly.features_per_neuron(c.W) >= 3).any() for c in cases)
    three = [c for c in cases if "three active features" in c.label]
    assert three and all(poly.features_per_neuron(c.W)[0, 0] >= 3 for c in three)
    # an instance with no active weight at all
    empty = [c for c in cases if "no active weight" in c.label]
    assert empty and all(not poly.active_weights(c.W[-1]).any() for c in empty)
    assert any((poly.polysemantic_neurons(c.W) == 0).any() for c in cases)
    for c in cases:
        # the planted negative pair on the last neuron of the first instance
        assert c.W[0, 0, -1] < 0 and c.W[0, -1, -1] < 0
        assert poly.features_per_neuron(c.W)[0, -1] >= 2
    # decoys just outside [0.8, 1.2] (0.75, 1.25, 1.3) are planted
    for c in cases:
        magnitude = c.W[0].abs()
        decoys = torch.tensor([0.75, 1.25, 1.3, 0.5])
        assert torch.isclose(magnitude[..., None], decoys).any(), c.label


def test_prediction_cases_cover_more_features_than_neurons_and_m_much_larger():
    sizes = [(chapter._PREDICTION_SIZES[s % len(chapter._PREDICTION_SIZES)])
             for s in checks.check_predicted_polysemantic.exercise.seeds]
    assert any(n > m for n, m in sizes) and any(n == m for n, m in sizes)
    assert any(m >= 100 * n for n, m in sizes)


def test_prediction_case_simulation_is_seeded_and_has_a_small_standard_error():
    case = chapter._prediction_case(0)
    fresh = poly.simulate_polysemantic.__wrapped__(case.n, case.m, chapter._SIMULATION_TRIALS, seed=1000)
    assert case.simulated == float(fresh.double().mean())
    assert 0 < case.standard_error < 0.01 * case.simulated


def test_winner_cases_cover_one_instance_and_negative_largest_initial_weights():
    cases = default_cases("initial_argmax_win_rate", chapter._winner_case)
    assert any(c.W_init.shape[0] == 1 for c in cases)
    assert all(c.W.shape == c.W_init.shape for c in cases)
    signed_differs = [bool((c.W_init.abs().argmax(-1) != c.W_init.argmax(-1)).any()) for c in cases]
    assert all(signed_differs)
    rates = torch.cat([poly.initial_argmax_win_rate(c.W_init, c.W) for c in cases])
    assert ((rates > 0) & (rates < 1)).any()  # some features keep their initial winner, some do not


# --------------------------------------------------------------------------------------
# autoencoder_loss
# --------------------------------------------------------------------------------------


def _identity(W):
    n = W.shape[-2]
    return torch.eye(n, dtype=W.dtype).expand(W.shape[0], n, n)


def _outputs(W):
    return torch.relu(W @ W.transpose(-1, -2))


def _penalty(W, l1):
    return l1 * W.abs().sum(dim=(-1, -2))


def loss_right(W, l1=0.0):  # right: the learner's version of the hints
    x = _identity(W)
    y = torch.relu(x @ W @ W.transpose(-1, -2))
    return (y - x).square().sum(dim=(-1, -2)) + _penalty(W, l1)


def loss_right_einsum(W, l1=0.0):  # right, another way
    G = torch.einsum("inm,ikm->ink", W, W)
    error = torch.relu(G) - torch.eye(W.shape[-2])
    return (error**2).flatten(1).sum(1) + l1 * W.abs().flatten(1).sum(1)


def loss_no_relu(W, l1=0.0):
    x = _identity(W)
    return (x @ W @ W.transpose(-1, -2) - x).square().sum(dim=(-1, -2)) + _penalty(W, l1)


def loss_relu_on_both_layers(W, l1=0.0):  # y = ReLU(ReLU(x W) Wᵀ)
    x = _identity(W)
    y = torch.relu(torch.relu(x @ W) @ W.transpose(-1, -2))
    return (y - x).square().sum(dim=(-1, -2)) + _penalty(W, l1)


def loss_relu_on_hidden(W, l1=0.0):  # h = ReLU(x W), y = h Wᵀ: ReLU on the hidden layer
    x = _identity(W)
    y = torch.relu(x @ W) @ W.transpose(-1, -2)
    return (y - x).square().sum(dim=(-1, -2)) + _penalty(W, l1)


def loss_mean(W, l1=0.0):
    x = _identity(W)
    return (_outputs(W) - x).square().mean(dim=(-1, -2)) + _penalty(W, l1)


def loss_no_penalty(W, l1=0.0):
    return (_outputs(W) - _identity(W)).square().sum(dim=(-1, -2))


def loss_l2_penalty(W, l1=0.0):
    return (_outputs(W) - _identity(W)).square().sum(dim=(-1, -2)) + l1 * W.square().sum(dim=(-1, -2))


def loss_signed_penalty(W, l1=0.0):
    return (_outputs(W) - _identity(W)).square().sum(dim=(-1, -2)) + l1 * W.sum(dim=(-1, -2))


def loss_penalty_over_all_instances(W, l1=0.0):
    return (_outputs(W) - _identity(W)).square().sum(dim=(-1, -2)) + l1 * W.abs().sum()


def loss_penalty_mean(W, l1=0.0):
    return (_outputs(W) - _identity(W)).square().sum(dim=(-1, -2)) + l1 * W.abs().mean(dim=(-1, -2))


def loss_not_squared(W, l1=0.0):
    error = _outputs(W) - _identity(W)
    return torch.linalg.vector_norm(error, dim=-1).sum(-1) + _penalty(W, l1)


def loss_scalar(W, l1=0.0):  # summed over instances
    return loss_right(W, l1).sum()


def loss_keepdim(W, l1=0.0):
    return loss_right(W, l1)[:, None]


def loss_list(W, l1=0.0):
    return loss_right(W, l1).tolist()


def loss_float64(W, l1=0.0):
    return loss_right(W.double(), l1)


def loss_in_place(W, l1=0.0):
    out = loss_right(W, l1)
    W.mul_(2)
    return out


def loss_nan(W, l1=0.0):
    return loss_right(W, l1) * float("nan")


def loss_none(W, l1=0.0):
    loss_right(W, l1)


def loss_raises(W, l1=0.0):
    return W @ W  # (n, m) @ (n, m): a shape error


def test_autoencoder_loss_right_answers_pass():
    for learner in (loss_right, loss_right_einsum):
        assert_passes("autoencoder_loss", learner)
        assert_passes("autoencoder_loss", learner, seeds=range(100, 116))


def test_every_listed_loss_mistake_has_a_learner_here():
    case = chapter._loss_case(0)
    assert set(chapter._loss_mistakes(case.W, case.l1)) == set(LOSS_MISTAKES)


LOSS_MISTAKES = {
    "the output ReLU is missing (y = W Wᵀ x)": loss_no_relu,
    "a ReLU on the hidden layer too (y = ReLU(W ReLU(Wᵀ x))); the model has one ReLU, on the output":
        loss_relu_on_both_layers,
    "the ReLU is on the hidden layer only (ReLU(Wᵀ x) fed to W, no output ReLU)": loss_relu_on_hidden,
    "the squared errors are averaged instead of summed": loss_mean,
    "the L1 penalty is missing": loss_no_penalty,
    "the penalty squares the weights (L2) instead of taking absolute values": loss_l2_penalty,
    "the penalty sums the signed weights (no absolute value)": loss_signed_penalty,
    "the L1 penalty is summed over all instances instead of one instance at a time":
        loss_penalty_over_all_instances,
    "the penalty averages |w| instead of summing it": loss_penalty_mean,
    "the errors are not squared (‖y − x‖ instead of ‖y − x‖²)": loss_not_squared,
}


@pytest.mark.parametrize("mistake", LOSS_MISTAKES)
def test_autoencoder_loss_names_each_listed_mistake(mistake):
    assert_names_mistake("autoencoder_loss", LOSS_MISTAKES[mistake], mistake)


def test_autoencoder_loss_names_the_relu_on_the_hidden_layer():
    assert "the ReLU is on the hidden layer only" in failure("autoencoder_loss", loss_relu_on_hidden)


@pytest.mark.parametrize("wrong, phrase", [
    (loss_scalar, "output is a single number (shape ()), expected (instances,)"),
    (loss_keepdim, "output has shape (2, 1), expected (instances,) = (2,)"),
    (loss_list, "your function returned a list of 2 items; expected a single tensor"),
    (loss_float64, "output has dtype torch.float64, expected torch.float32"),
    (loss_in_place, "changed its input `W` in place"),
    (loss_nan, "output contains NaN"),
    (loss_none, "returned None; did you forget to `return`"),
    (loss_raises, "your function raised RuntimeError"),
])
def test_autoencoder_loss_catches(wrong, phrase):
    assert phrase in failure("autoencoder_loss", wrong)


def test_missing_penalty_passes_only_the_l1_zero_cases():
    l1_zero = [s for s in checks.check_autoencoder_loss.exercise.seeds if chapter._loss_case(s).l1 == 0]
    assert l1_zero
    assert_passes("autoencoder_loss", loss_no_penalty, seeds=l1_zero)
    assert checks.evaluate("autoencoder_loss", loss_penalty_over_all_instances,
                           seeds=[s for s in l1_zero if chapter._loss_case(s).W.shape[0] == 1]).passed


# --------------------------------------------------------------------------------------
# count_polysemantic_neurons
# --------------------------------------------------------------------------------------


def _active(W):
    return (W.abs() >= 0.8) & (W.abs() <= 1.2)


def count_right(W):  # right: the learner's version of the hints
    return (_active(W).sum(dim=-2) >= 2).sum(dim=-1)


def count_right_float(W):  # right: a float count is accepted
    return (_active(W).float().sum(dim=1) > 1.5).float().sum(dim=1)


def count_signed(W):
    return (((W >= 0.8) & (W <= 1.2)).sum(dim=-2) >= 2).sum(dim=-1)


def count_wrong_axis(W):
    return (_active(W).sum(dim=-1) >= 2).sum(dim=-1)


def count_at_least_one(W):
    return (_active(W).sum(dim=-2) >= 1).sum(dim=-1)


def count_no_upper_bound(W):
    return ((W.abs() >= 0.8).sum(dim=-2) >= 2).sum(dim=-1)


def count_features_on_polysemantic_neurons(W):
    per_neuron = _active(W).sum(dim=-2)
    return (per_neuron * (per_neuron >= 2)).sum(dim=-1)


def count_over_all_instances_broadcast(W):
    return (_active(W).sum(dim=-2) >= 2).sum().repeat(W.shape[0])


def count_over_all_instances(W):
    return (_active(W).sum(dim=-2) >= 2).sum()


def count_per_neuron(W):  # forgot the last sum: (instances, m)
    return _active(W).sum(dim=-2) >= 2


def count_list(W):
    return count_right(W).tolist()


def count_in_place(W):
    W.abs_()
    return count_right(W)


def count_none(W):
    count_right(W)


def count_nan(W):
    return count_right(W) * float("nan")


def test_count_right_answers_pass():
    for learner in (count_right, count_right_float):
        assert_passes("count_polysemantic_neurons", learner)
        assert_passes("count_polysemantic_neurons", learner, seeds=range(100, 116))


def count_strict_bounds(W):  # 0.8 < |w| < 1.2: the boundaries excluded
    return (((W.abs() > 0.8) & (W.abs() < 1.2)).sum(dim=-2) >= 2).sum(dim=-1)


COUNT_MISTAKES = {
    "negative weights are not counted (compare |w| with the range, not w)": count_signed,
    "the count is over features with two or more active weights (the wrong axis: neurons are "
    "the columns of W)": count_wrong_axis,
    "every neuron with at least one active weight is counted (polysemantic needs two or more)":
        count_at_least_one,
    "the ends of the range are excluded (0.8 and 1.2 themselves are active: use >= and <=)":
        count_strict_bounds,
    "weights above 1.2 are counted as active (the range is [0.8, 1.2])": count_no_upper_bound,
    "the result counts active features on polysemantic neurons instead of neurons":
        count_features_on_polysemantic_neurons,
    "the count is summed over all instances instead of one per instance": count_over_all_instances_broadcast,
}


def test_every_listed_count_mistake_has_a_learner_here():
    assert set(chapter._count_mistakes(chapter._count_case(0).W)) == set(COUNT_MISTAKES)


@pytest.mark.parametrize("mistake", COUNT_MISTAKES)
def test_count_names_each_listed_mistake(mistake):
    assert_names_mistake("count_polysemantic_neurons", COUNT_MISTAKES[mistake], mistake)


@pytest.mark.parametrize("wrong, phrase", [
    (count_over_all_instances, "output is a single number (shape ()), expected (instances,)"),
    (count_per_neuron, "output has shape (4, 8), expected (instances,) = (4,)"),
    (count_list, "your function returned a list of 4 items"),
    (count_in_place, "changed its input `W` in place"),
    (count_none, "returned None"),
    (count_nan, "output contains NaN"),
])
def test_count_catches(wrong, phrase):
    assert phrase in failure("count_polysemantic_neurons", wrong)


def test_count_catches_excluded_boundaries():
    assert "the ends of the range are excluded" in failure("count_polysemantic_neurons", count_strict_bounds)


def test_count_on_one_instance_and_an_empty_instance():
    """Summing over instances is invisible with one instance; on the cases whose last instance
    has no active weight, that instance counts 0 and the mistakes that count it are caught."""
    one = [s for s in range(8) if chapter._count_case(s).W.shape[0] == 1]
    assert one
    assert_passes("count_polysemantic_neurons", count_over_all_instances_broadcast, seeds=one)
    empty = [s for s in range(8) if "no active weight" in chapter._count_case(s).label]
    assert empty
    for seed in empty:
        assert poly.polysemantic_neurons(chapter._count_case(seed).W)[-1] == 0
        assert "summed over all instances" in failure(
            "count_polysemantic_neurons", count_over_all_instances_broadcast, seeds=[seed])
        assert "polysemantic needs two or more" in failure(
            "count_polysemantic_neurons", count_at_least_one, seeds=[seed])


# --------------------------------------------------------------------------------------
# predicted_polysemantic
# --------------------------------------------------------------------------------------


def predicted_right(n, m):  # right: inclusion-exclusion, as in the hints
    return m * (1 - 2 * (1 - 1 / (2 * m)) ** n + (1 - 1 / m) ** n)


def predicted_right_tensor(n, m):  # right: a 0-d tensor is accepted
    m_ = torch.tensor(float(m), dtype=torch.float64)
    return m_ * (1 - 2 * (1 - 1 / (2 * m_)) ** n + (1 - 1 / m_) ** n)


def predicted_right_sum_over_counts(n, m):  # right, another way: P(≥1 positive)·P(≥1 negative | …)
    total = 0.0
    for k in range(n + 1):  # k features on this neuron, each with probability 1/m
        p_k = math.comb(n, k) * (1 / m) ** k * (1 - 1 / m) ** (n - k)
        total += p_k * (1 - 2 * 0.5**k + (1.0 if k == 0 else 0.0))
    return m * total


def predicted_every_collision(n, m):
    return n * n / (2 * m)


def predicted_ignores_signs(n, m):
    return m * (1 - (1 - 1 / m) ** n - n / m * (1 - 1 / m) ** (n - 1))


def predicted_leading_order(n, m):
    return n * n / (4 * m)


def predicted_pairs_leading_order(n, m):
    return math.comb(n, 2) / (2 * m)


def predicted_birthday_pairs(n, m):  # not listed: the expected number of colliding pairs
    return math.comb(n, 2) / m


def predicted_shape_two(n, m):
    return torch.tensor([predicted_right(n, m)] * 2)


def predicted_string(n, m):
    return f"{predicted_right(n, m):.3f}"


def predicted_none(n, m):
    predicted_right(n, m)


def predicted_nan(n, m):
    return float("nan")


def predicted_inf(n, m):
    return math.inf


def predicted_bool(n, m):
    return True


def predicted_rounded(n, m):
    return round(predicted_right(n, m))


def predicted_list(n, m):
    return [predicted_right(n, m)]


def test_predicted_right_answers_pass():
    for learner in (predicted_right, predicted_right_tensor, predicted_right_sum_over_counts):
        assert_passes("predicted_polysemantic", learner)


PREDICTION_MISTAKES = {
    "n²/(2m) counts every birthday collision; only opposite-sign pairs survive the output ReLU":
        predicted_every_collision,
    "the expected number of neurons with two or more winners ignores the signs (two positive "
    "features cannot share a neuron)": predicted_ignores_signs,
    "n²/(4m) is only the leading order for m ≫ n; compute the probability that a neuron wins at "
    "least one positive and one negative feature exactly": predicted_leading_order,
    "C(n, 2)/(2m) is still the leading order (pairs), not the expected number of neurons":
        predicted_pairs_leading_order,
}


def test_every_listed_prediction_mistake_has_a_learner_here():
    assert set(chapter._prediction_mistakes(32, 64)) == set(PREDICTION_MISTAKES)


@pytest.mark.parametrize("mistake", PREDICTION_MISTAKES)
def test_predicted_names_each_listed_mistake(mistake):
    assert_names_mistake("predicted_polysemantic", PREDICTION_MISTAKES[mistake], mistake)


@pytest.mark.parametrize("wrong, phrase", [
    (predicted_birthday_pairs, "your prediction is too high against the simulation"),
    (predicted_rounded, "your prediction is too"),
    (predicted_shape_two, "returned a tensor of shape (2,); expected one number"),
    (predicted_string, "your function returned str; expected a number"),
    (predicted_list, "your function returned list; expected a number"),
    (predicted_none, "returned None (did you forget to `return`?)"),
    (predicted_nan, "returned nan, not a finite number"),
    (predicted_inf, "returned inf, not a finite number"),
    (predicted_bool, "returned bool; expected a number"),
])
def test_predicted_catches(wrong, phrase):
    assert phrase in failure("predicted_polysemantic", wrong)


def test_prediction_failure_gives_no_ratio():
    message = failure("predicted_polysemantic", predicted_birthday_pairs)
    assert "factor" not in message and not re.search(r"\d\.\d", message), message


def test_prediction_mistakes_are_outside_the_tolerance_on_every_case():
    """Each listed mistake fails on most cases, so it is never accepted by luck."""
    for seed in checks.check_predicted_polysemantic.exercise.seeds:
        n, m = chapter._PREDICTION_SIZES[seed % len(chapter._PREDICTION_SIZES)]
        exact = poly.predicted_polysemantic(n, m)
        distinct = [abs(wrong - exact) > 0.01 * exact for wrong in chapter._prediction_mistakes(n, m).values()]
        assert sum(distinct) >= 3, (n, m)


# --------------------------------------------------------------------------------------
# initial_argmax_win_rate
# --------------------------------------------------------------------------------------


def win_rate_right(W_init, W):  # right: the learner's version of the hints
    return (W_init.abs().argmax(dim=-1) == W.abs().argmax(dim=-1)).float().mean(dim=-1)


def win_rate_right_float64(W_init, W):  # right: any float dtype is accepted
    return (W_init.abs().argmax(-1) == W.abs().argmax(-1)).double().sum(-1) / W.shape[-2]


def win_rate_signed_initial(W_init, W):
    return (W_init.argmax(dim=-1) == W.abs().argmax(dim=-1)).float().mean(dim=-1)


def win_rate_signed_final(W_init, W):
    return (W_init.abs().argmax(dim=-1) == W.argmax(dim=-1)).float().mean(dim=-1)


def win_rate_count(W_init, W):
    return (W_init.abs().argmax(dim=-1) == W.abs().argmax(dim=-1)).float().sum(dim=-1)


def win_rate_over_all_instances(W_init, W):
    rate = (W_init.abs().argmax(dim=-1) == W.abs().argmax(dim=-1)).float().mean()
    return rate.expand(W.shape[0])


def win_rate_scalar(W_init, W):
    return (W_init.abs().argmax(dim=-1) == W.abs().argmax(dim=-1)).float().mean()


def win_rate_int_count(W_init, W):
    return (W_init.abs().argmax(dim=-1) == W.abs().argmax(dim=-1)).sum(dim=-1)


def win_rate_argmin(W_init, W):  # not listed
    return (W_init.abs().argmin(dim=-1) == W.abs().argmin(dim=-1)).float().mean(dim=-1)


def win_rate_per_feature(W_init, W):
    return (W_init.abs().argmax(dim=-1) == W.abs().argmax(dim=-1)).float()


def win_rate_swapped_axes(W_init, W):  # winners over features instead of neurons
    return (W_init.abs().argmax(dim=-2) == W.abs().argmax(dim=-2)).float().mean(dim=-1)


def win_rate_in_place(W_init, W):
    W_init.abs_()
    return win_rate_right(W_init, W)


def win_rate_in_place_W(W_init, W):
    W.abs_()
    return win_rate_right(W_init, W)


def win_rate_tuple(W_init, W):
    return win_rate_right(W_init, W), W.abs().argmax(-1)


def win_rate_none(W_init, W):
    win_rate_right(W_init, W)


def win_rate_nan(W_init, W):
    return win_rate_right(W_init, W) / 0 * 0


def win_rate_mean_of_bool(W_init, W):  # bool has no mean in torch
    return (W_init.abs().argmax(dim=-1) == W.abs().argmax(dim=-1)).mean(dim=-1)


def test_win_rate_right_answers_pass():
    for learner in (win_rate_right, win_rate_right_float64):
        assert_passes("initial_argmax_win_rate", learner)
        assert_passes("initial_argmax_win_rate", learner, seeds=range(100, 116))


WIN_RATE_MISTAKES = {
    "the initial winner is the largest signed weight, not the largest |weight|": win_rate_signed_initial,
    "the final winner is the largest signed weight, not the largest |weight|": win_rate_signed_final,
    "the number of features is returned instead of the fraction": win_rate_count,
    "the fraction is taken over all instances at once": win_rate_over_all_instances,
}


def test_every_listed_win_rate_mistake_has_a_learner_here():
    case = chapter._winner_case(0)
    assert set(chapter._winner_mistakes(case.W_init, case.W)) == set(WIN_RATE_MISTAKES)


@pytest.mark.parametrize("mistake", WIN_RATE_MISTAKES)
def test_win_rate_names_each_listed_mistake(mistake):
    assert_names_mistake("initial_argmax_win_rate", WIN_RATE_MISTAKES[mistake], mistake)


@pytest.mark.parametrize("wrong, phrase", [
    (win_rate_scalar, "output is a single number (shape ()), expected (instances,)"),
    (win_rate_int_count, "output has dtype torch.int64; a fraction needs a float dtype"),
    (win_rate_argmin, "output differs from the reference"),
    (win_rate_per_feature, "output has shape (4, 6), expected (instances,) = (4,)"),
    (win_rate_swapped_axes, "output differs from the reference"),
    (win_rate_in_place, "changed its input `W_init` in place"),
    (win_rate_in_place_W, "changed its input `W` in place"),
    (win_rate_tuple, "your function returned a tuple of 2 items"),
    (win_rate_none, "returned None"),
    (win_rate_nan, "output contains NaN"),
    (win_rate_mean_of_bool, "your function raised RuntimeError"),
])
def test_win_rate_catches(wrong, phrase):
    assert phrase in failure("initial_argmax_win_rate", wrong)


def test_win_rate_over_instances_is_invisible_with_one_instance():
    one = [s for s in range(8) if chapter._winner_case(s).W.shape[0] == 1]
    assert one
    assert_passes("initial_argmax_win_rate", win_rate_over_all_instances, seeds=one)


# --------------------------------------------------------------------------------------
# train_autoencoder (the capstone)
# --------------------------------------------------------------------------------------


def _train(n, m, instances, l1, loss_fn, steps, lr, weight_decay, seed, device, progress, *,
           optimizer="adamw", reduce="sum", zero_grad=True, scale=None, clone=True, order="zero-backward-step"):
    """A learner's loop, right by default; the keywords plant one mistake each."""
    generator = torch.Generator().manual_seed(seed)
    W = torch.randn(instances, n, m, generator=generator)
    W = (W / (math.sqrt(m) if scale is None else scale(n, m))).to(device).requires_grad_()
    W_init = W.detach().cpu().clone() if clone else W.detach().cpu()
    make = {"adamw": lambda: torch.optim.AdamW([W], lr=lr, weight_decay=weight_decay),
            "adam": lambda: torch.optim.Adam([W], lr=lr),
            "adam_l2": lambda: torch.optim.Adam([W], lr=lr, weight_decay=weight_decay),
            "sgd": lambda: torch.optim.SGD([W], lr=lr)}
    opt = make[optimizer]()
    for _ in range(steps):
        loss = loss_fn(W, l1)
        if order == "zero-after-backward":
            getattr(loss, reduce)().backward()
            opt.zero_grad()
        else:
            if zero_grad:
                opt.zero_grad()
            getattr(loss, reduce)().backward()
        opt.step()
    return W_init, W.detach().cpu()


def train_right(n, m, instances, l1, loss_fn, steps=7_500, lr=1e-3, weight_decay=0.01, seed=0, device="cpu",
                progress=True):
    return _train(n, m, instances, l1, loss_fn, steps, lr, weight_decay, seed, device, progress)


def _wrong(**planted):
    def train(n, m, instances, l1, loss_fn, steps=7_500, lr=1e-3, weight_decay=0.01, seed=0, device="cpu",
              progress=True):
        return _train(n, m, instances, l1, loss_fn, steps, lr, weight_decay, seed, device, progress, **planted)
    return train


train_adam = _wrong(optimizer="adam")
train_adam_l2 = _wrong(optimizer="adam_l2")
train_mean = _wrong(reduce="mean")
train_no_zero_grad = _wrong(zero_grad=False)
train_unscaled = _wrong(scale=lambda n, m: 1.0)
train_over_m = _wrong(scale=lambda n, m: m)
train_over_sqrt_n = _wrong(scale=lambda n, m: math.sqrt(n))
train_aliased = _wrong(clone=False)
train_sgd = _wrong(optimizer="sgd")
train_zero_after_backward = _wrong(order="zero-after-backward")


def train_no_loss_fn(n, m, instances, l1, steps=7_500, lr=1e-3, weight_decay=0.01, seed=0, device="cpu",
                     progress=True):
    return train_right(n, m, instances, l1, poly.autoencoder_loss, steps, lr, weight_decay, seed, device)


def train_own_generator_state(n, m, instances, l1, loss_fn, steps=7_500, lr=1e-3, weight_decay=0.01, seed=0,
                              device="cpu", progress=True):  # torch's global stream, not the seeded generator
    W = (torch.randn(instances, n, m) / math.sqrt(m)).requires_grad_()
    W_init = W.detach().clone()
    opt = torch.optim.AdamW([W], lr=lr, weight_decay=weight_decay)
    for _ in range(steps):
        loss = loss_fn(W, l1)
        opt.zero_grad()
        loss.sum().backward()
        opt.step()
    return W_init, W.detach()


def train_keeps_grad(*args, **kwargs):
    W_init, W = train_right(*args, **kwargs)
    return W_init, W.requires_grad_()


def train_returns_W_only(*args, **kwargs):
    return train_right(*args, **kwargs)[1]


def test_train_right_answers_pass():
    assert_passes("train_autoencoder", train_right)


TRAIN_MISTAKES = {
    "the optimiser is Adam without weight decay; the paper uses AdamW (decoupled weight decay "
    "`weight_decay`)": train_adam,
    "the optimiser is Adam with weight_decay, which adds the decay to the gradient (L2); the "
    "paper's AdamW decays the weights directly": train_adam_l2,
    "the per-instance losses are averaged before backward(); sum them, so that each instance "
    "trains on its own loss": train_mean,
    "the gradients are never zeroed (optimizer.zero_grad() is missing), so they accumulate "
    "from step to step": train_no_zero_grad,
}


def test_every_listed_train_mistake_has_a_learner_here():
    assert set(chapter._train_mistakes(chapter._train_case(0))) == set(TRAIN_MISTAKES)


@pytest.mark.parametrize("mistake", TRAIN_MISTAKES)
def test_train_names_each_listed_mistake(mistake):
    assert_names_mistake("train_autoencoder", TRAIN_MISTAKES[mistake], mistake)


@pytest.mark.parametrize("wrong, phrase", [
    (train_unscaled, "match a known mistake: W_init is not scaled"),
    (train_over_m, "match a known mistake: W_init is divided by m"),
    (train_over_sqrt_n, "match a known mistake: W_init is scaled by 1/√n"),
    (train_aliased, "your W_init is the trained W itself"),
    (train_own_generator_state, "your W_init is not the reference draw"),
    (train_sgd, "your W did not change in 150 steps"),  # the tiny-loss case comes first
    (train_zero_after_backward, "your W did not change"),
    (train_no_loss_fn, "takes no `loss_fn` argument"),
    (train_keeps_grad, "the trained W still requires grad"),
    (train_returns_W_only, "expected a pair (W_init, W)"),
])
def test_train_catches(wrong, phrase):
    assert phrase in failure("train_autoencoder", wrong)


def test_train_cases_vary_every_argument_and_include_the_tiny_loss():
    cases = default_cases("train_autoencoder", chapter._train_case)
    for key in ("n", "l1", "lr", "weight_decay", "seed", "instances"):
        assert len({getattr(c, key) for c in cases}) >= 2, key
    assert all(c.n <= c.m <= 2 * c.n + 1 and 3 <= c.n <= 6 for c in cases)
    assert cases[0].loss_fn is chapter._tiny_loss and any(c.loss_fn is poly.autoencoder_loss for c in cases)


def test_sgd_fails_the_plain_cases_as_a_different_loop():
    plain = [s for s in range(6) if chapter._train_case(s).loss_fn is poly.autoencoder_loss]
    assert "your trained W differs from the reference loop's" in failure("train_autoencoder", train_sgd, seeds=plain)


def test_the_mean_over_instances_is_invisible_without_the_tiny_loss():
    """Adam is blind to a loss scale except through ε: only the tiny-loss cases catch the mean."""
    plain = [s for s in range(6) if chapter._train_case(s).loss_fn is poly.autoencoder_loss]
    assert_passes("train_autoencoder", train_mean, seeds=plain)


# --------------------------------------------------------------------------------------
# ce_lower_bound
# --------------------------------------------------------------------------------------


def bound_right(activations):
    _, counts = torch.unique(activations, return_counts=True)
    p = counts.double() / activations.numel()
    return float((p * counts.double().log()).sum())


def bound_right_loop(activations):
    N = len(activations)
    total = 0.0
    for level in set(activations.tolist()):
        size = sum(1 for a in activations.tolist() if a == level)
        total += size / N * math.log(size)
    return torch.tensor(total)


def bound_log2(activations):
    _, counts = torch.unique(activations, return_counts=True)
    return float((counts.double() / activations.numel() * counts.double().log2()).sum())


def bound_unweighted(activations):
    _, counts = torch.unique(activations, return_counts=True)
    return float(counts.double().log().sum())


def bound_firing_as_one_group(activations):
    N = activations.numel()
    sizes = [int((activations > 0).sum()), int((activations <= 0).sum())]
    return sum(g / N * math.log(g) for g in sizes if g)


def bound_silent_tokens_apart(activations):
    values, counts = torch.unique(activations, return_counts=True)
    N = activations.numel()
    return sum(int(c) / N * math.log(int(c)) for v, c in zip(values, counts) if v > 0)


def bound_level_entropy(activations):
    _, counts = torch.unique(activations, return_counts=True)
    p = counts.double() / activations.numel()
    return float(-(p * p.log()).sum())


def bound_mean_over_groups(activations):
    _, counts = torch.unique(activations, return_counts=True)
    return float(counts.double().log().mean())


def bound_in_place(activations):
    activations.clamp_(min=0.5)
    return bound_right(activations)


def bound_tensor_of_groups(activations):
    _, counts = torch.unique(activations, return_counts=True)
    return counts.double() / activations.numel() * counts.double().log()


def test_bound_right_answers_pass():
    for learner in (bound_right, bound_right_loop):
        assert_passes("ce_lower_bound", learner)
        assert_passes("ce_lower_bound", learner, seeds=range(100, 116))


def test_bound_values():
    """The closed form on the chapter's patterns: (3/4) ln 3, ln 2, ½ ln 2, ln 4."""
    bound = poly.ce_lower_bound
    assert math.isclose(bound(torch.tensor([2.0, 0, 0, 0])), 0.75 * math.log(3), rel_tol=1e-12)
    assert math.isclose(bound(torch.tensor([1.0, 1.0, 0, 0])), math.log(2), rel_tol=1e-12)
    assert math.isclose(bound(torch.tensor([1.0, 3.0, 0, 0])), 0.5 * math.log(2), rel_tol=1e-12)
    assert math.isclose(bound(torch.zeros(4)), math.log(4), rel_tol=1e-12)
    assert bound(torch.tensor([1.0, 2.0, 3.0, 4.0])) == 0.0
    assert math.isclose(bound(torch.tensor([1.0, 1.0 + 1e-9, 0, 0])), math.log(2))  # equal within tol


BOUND_MISTAKES = {
    "the logarithm is base 2; the cross-entropy is in nats (natural log)": bound_log2,
    "the groups are not weighted by their probability |g|/N": bound_unweighted,
    "all tokens the neuron fires on are treated as one group; tokens at different activation "
    "levels can be told apart": bound_firing_as_one_group,
    "the silent tokens are not a group of their own: tokens with activation 0 cannot be told "
    "apart from each other either": bound_silent_tokens_apart,
    "this is the entropy of the activation level, not the uncertainty about the token given "
    "the level": bound_level_entropy,
}


def test_every_listed_bound_mistake_has_a_learner_here():
    assert set(chapter._bound_mistakes(torch.tensor([1.0, 0, 0]))) == set(BOUND_MISTAKES)


@pytest.mark.parametrize("mistake", BOUND_MISTAKES)
def test_bound_names_each_listed_mistake(mistake):
    assert_names_mistake("ce_lower_bound", BOUND_MISTAKES[mistake], mistake)


@pytest.mark.parametrize("wrong, phrase", [
    (bound_mean_over_groups, "your bound is too"),
    (bound_in_place, "changed its input `activations` in place"),
    (bound_tensor_of_groups, "expected one number"),
])
def test_bound_catches(wrong, phrase):
    assert phrase in failure("ce_lower_bound", wrong)


def test_bound_cases_cover_several_sizes_silent_and_single_level_patterns():
    cases = default_cases("ce_lower_bound", chapter._bound_case)
    sizes = {c.activations.numel() for c in cases}
    assert len(sizes) >= 4 and any(n != 4 for n in sizes)
    assert any((c.activations == 0).all() for c in cases)
    assert any((c.activations > 0).all() and len(set(c.activations.tolist())) == 1 for c in cases)
    assert {c.activations.dtype for c in cases} == {torch.float32, torch.float64}
