"""Chapter 01's checks: the reference passes, the stub is "not attempted", and plausible
wrong implementations fail with a message that names what is wrong."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from check_helpers import assert_passes, assert_reference_passes_and_stub_is_not_attempted, failure

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
    "ToyModel": ref.ToyModel,
    "train_model": ref.train_model,
    "phase_losses": geometry.phase_losses,
    "one_sparse_terms": geometry.one_sparse_terms,
}
HIDDEN_SEEDS = {"generate_batch": range(100, 112), "ToyModel": range(100, 116), "train_model": range(100, 104)}


@pytest.mark.parametrize("name", REFERENCES)
def test_reference_passes_and_stub_is_not_attempted(name, capsys):
    assert_reference_passes_and_stub_is_not_attempted(name, REFERENCES[name], capsys)


def test_printed_lines_for_toy_forward(capsys):
    checks.check_toy_forward(ref.toy_forward)
    checks.check_toy_forward(forward_no_bias)
    assert capsys.readouterr().out.splitlines() == [
        "[passed] toy_forward: 8/8 cases match the reference.",
        "  → the chapter now runs your toy_forward.",
        "[failed] toy_forward: case 1 (instances=4, hidden=2, features=6, batch=4, activation='relu'): "
        "output differs from the reference and matches a known mistake: the bias b is missing.",
        "  → using the course's toy_forward for the rest of the chapter: yours failed its check; "
        "rerun this cell once it passes.",
    ]


@pytest.mark.parametrize("name", REFERENCES)
def test_reference_passes_hidden_seeds(name):
    seeds = HIDDEN_SEEDS.get(name, range(100, 160))
    assert_passes(name, REFERENCES[name], seeds=seeds)


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

    assert_passes("toy_forward", loop)


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


def batch_ignores_its_generator(feature_probability, batch_size, generator=None):
    return batch_global_rng(feature_probability, batch_size)


def test_generate_batch_must_use_the_generator_it_is_given():
    assert "takes no `generator` argument" in failure("generate_batch", batch_global_rng)
    assert "do not come from the `generator`" in failure("generate_batch", batch_ignores_its_generator)
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
    (loss_negative, "off by a constant factor"),
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


# --------------------------------------------------------------------------------------
# The capstone: the ToyModel class
# --------------------------------------------------------------------------------------


def model_class(**mistakes):
    """The reference ToyModel written out plainly, with one mistake switched on."""
    m = mistakes

    class ToyModel(torch.nn.Module):
        def __init__(self, n_features, n_hidden, n_instances=1, activation="relu", feature_probability=1.0,
                     importance=1.0, device="cpu", generator=None):
            super().__init__()
            self.n_features, self.n_hidden, self.n_instances = n_features, n_hidden, n_instances
            self.activation = activation
            p = ref.per_instance(feature_probability, n_instances, n_features)
            imp = ref.per_instance(importance, n_instances, n_features)
            self.register_buffer("feature_probability", (p[:, :1].expand_as(p) if m.get("p_first") else p).to(device))
            self.register_buffer("importance", imp.to(device))
            shape = (n_instances, n_hidden, n_features)
            if m.get("torch_xavier"):
                W = torch.nn.init.xavier_normal_(torch.empty(shape), generator=generator)
            elif m.get("std_one"):
                W = torch.randn(shape, generator=generator)
            elif m.get("uniform"):
                W = (torch.rand(shape, generator=generator) - 0.5) * (12 * 2 / (n_hidden + n_features)) ** 0.5
            elif m.get("global_rng"):
                W = torch.randn(shape) * (2 / (n_hidden + n_features)) ** 0.5
            else:
                W = torch.randn(shape, generator=generator) * (2 / (n_hidden + n_features)) ** 0.5
            W = W.to(device)
            self.W = W if m.get("not_parameter") else torch.nn.Parameter(W)
            b = torch.randn(n_instances, n_features) * 0.1 if m.get("random_b") else torch.zeros(n_instances, n_features)
            self.b = torch.nn.Parameter(b.to(device))

        def forward(self, x):
            if m.get("forward_stub"):
                raise NotImplementedError("exercise: ToyModel.forward")
            activation = "relu" if m.get("always_relu") else self.activation
            return ref.toy_forward(self.W.detach() if m.get("detached") else self.W, self.b, x, activation)

        def loss(self, x):
            importance = torch.ones_like(self.importance) if m.get("no_importance") else self.importance
            return ref.importance_weighted_loss(self(x), x, importance)

        def generate_batch(self, batch_size, generator=None):
            return ref.generate_batch(self.feature_probability, batch_size, None if m.get("batch_global") else generator)

    return ToyModel


def test_the_plain_model_class_passes():
    assert_passes("ToyModel", model_class())


@pytest.mark.parametrize("mistake, phrase", [
    ("torch_xavier", "nn.init.xavier_normal_ applied to the whole"),
    ("std_one", "do not have Xavier-normal's spread"),
    ("uniform", "not normally distributed"),
    ("global_rng", "drew from torch's global random state"),
    ("not_parameter", "not an nn.Parameter"),
    ("random_b", "b should start at zero"),
    ("p_first", "`self.feature_probability` holds other values"),
    ("forward_stub", "your `forward` still raises NotImplementedError"),
    ("always_relu", "a ReLU is applied although activation='linear'"),
    ("detached", "no gradient reaches W"),
    ("no_importance", "differs from the reference"),
    ("batch_global", "generate_batch does not draw from the `generator`"),
])
def test_the_model_class_check_catches(mistake, phrase):
    assert phrase in failure("ToyModel", model_class(**{mistake: True}))


# --------------------------------------------------------------------------------------
# The capstone: the training loop
# --------------------------------------------------------------------------------------


def training_loop(zero_grad=True, schedule=True, reduce="sum", seeded=True, detach=True, stack=True,
                  optimizer=torch.optim.Adam, step=True):
    def train_model(model, steps=10_000, batch_size=1024, lr=1e-3, schedule_name="constant", seed=0,
                    description="training", progress=True, **kwargs):
        schedule_name = kwargs.get("schedule", schedule_name)
        opt = optimizer(model.parameters(), lr=lr)
        multiplier = ref.lr_schedule(schedule_name)
        generator = torch.Generator().manual_seed(seed) if seeded else None
        losses = []
        for t in range(steps):
            if schedule:
                for group in opt.param_groups:
                    group["lr"] = lr * multiplier(t, steps)
            loss = model.loss(model.generate_batch(batch_size, generator))
            if zero_grad:
                opt.zero_grad()
            getattr(loss, reduce)().backward()
            if step:
                opt.step()
            losses.append(loss.detach() if detach else loss)
        return torch.stack(losses) if stack else losses

    return train_model


def test_the_plain_loop_passes():
    assert_passes("train_model", training_loop())


@pytest.mark.parametrize("loop, phrase", [
    (training_loop(zero_grad=False), "optimizer.zero_grad() is missing"),
    (training_loop(schedule=False), "the learning rate never follows the schedule"),
    (training_loop(reduce="mean"), "averaged before backward(); the paper sums them"),
    (training_loop(seeded=False), "the loss of the first step differs"),
    (training_loop(detach=False), "still carry the autograd graph"),
    (training_loop(stack=False), "return one tensor of shape (steps, instances)"),
    (training_loop(optimizer=torch.optim.AdamW), "leave the reference loop's at step"),
    (training_loop(optimizer=torch.optim.SGD), ""),  # "W did not change" or "leave the reference loop's", by case
    (training_loop(step=False), "the model's W did not change"),
])
def test_the_training_loop_check_catches(loop, phrase):
    assert phrase in failure("train_model", loop)


# --------------------------------------------------------------------------------------
# phase_losses: the n=2, m=1 closed form
# --------------------------------------------------------------------------------------


def _phase(ignore_cost, both_cost, order=(0, 1, 2)):
    def phase_losses(r, s):
        r, s = torch.broadcast_tensors(torch.as_tensor(r, dtype=torch.float64), torch.as_tensor(s, dtype=torch.float64))
        columns = [r * ignore_cost(s), both_cost(r, s), ignore_cost(s)]
        return torch.stack([columns[k] for k in order], dim=-1)

    return phase_losses


VARIANCE = lambda s: s / 3 - s**2 / 4
BOTH = lambda r, s: (1 + r) * s**2 / 6


@pytest.mark.parametrize("wrong, phrase", [
    (_phase(lambda s: s / 3, BOTH), "it costs the variance"),
    (_phase(lambda s: s / 12, BOTH), "ignores that it is off with probability 1 - s"),
    (_phase(VARIANCE, lambda r, s: (1 + r) * s**2 / 4), "is 1/6, not 1/4 or 1/3"),
    (_phase(VARIANCE, lambda r, s: (1 + r) * s / 6), "probability s², not s"),
    (_phase(VARIANCE, BOTH, order=(2, 1, 0)), "the columns are out of order"),
    (_phase(VARIANCE, lambda r, s: 2 * s**2 / 6), "differs from the reference"),
    (lambda r, s: geometry.phase_losses(r, s)[..., :2], "output has shape"),
])
def test_phase_losses_check_catches(wrong, phrase):
    assert phrase in failure("phase_losses", wrong)


def test_phase_losses_accepts_float32_and_plain_floats():
    assert_passes("phase_losses", lambda r, s: geometry.phase_losses(r, s).float())
    assert_passes("phase_losses", _phase(VARIANCE, BOTH))


# --------------------------------------------------------------------------------------
# one_sparse_terms: feature benefit and interference
# --------------------------------------------------------------------------------------


def _terms(norm_power=2, include_diagonal=False, weight="j", squared=True, importance_used=True, swap=False):
    def one_sparse_terms(W, importance):
        I = importance if importance_used else torch.ones_like(importance)
        gram = torch.einsum("ihf,ihg->ifg", W, W)
        n2 = gram.diagonal(dim1=-2, dim2=-1)
        benefit = (I * (1 - n2 ** (norm_power / 2)) ** 2).sum(-1)
        overlaps = gram.square() if squared else gram
        if not include_diagonal:
            overlaps = overlaps - torch.diag_embed(overlaps.diagonal(dim1=-2, dim2=-1))
        weights = I[:, None, :] if weight == "j" else I[:, :, None]
        interference = (overlaps * weights).sum(dim=(-2, -1))
        return (interference, benefit) if swap else (benefit, interference)

    return one_sparse_terms


def test_the_plain_terms_pass():
    assert_passes("one_sparse_terms", _terms())


@pytest.mark.parametrize("wrong, phrase", [
    (_terms(norm_power=1), "the feature benefit term: output differs from the reference and matches a known "
                           "mistake: the feature benefit uses ‖W_i‖"),
    (_terms(include_diagonal=True), "the interference term includes i = j"),
    (_terms(squared=False), "are not squared"),
    (_terms(importance_used=False), "the importance is left out"),
    (_terms(swap=True), "the feature benefit term"),
    (lambda W, importance: geometry.one_sparse_terms(W, importance)[0], "return two tensors"),
])
def test_one_sparse_terms_check_catches(wrong, phrase):
    assert phrase in failure("one_sparse_terms", wrong)
