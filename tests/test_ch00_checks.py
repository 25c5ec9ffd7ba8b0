"""Chapter 00 checks: the reference passes, the stub is "not attempted", other right answers pass,
plausible wrong implementations fail with a message that names what is wrong, and broken learners
(raising, wrong shape, NaN) fail without crashing; no message gives the answer away."""

from __future__ import annotations

import pytest
import torch

from check_helpers import (
    assert_names_mistake,
    assert_passes,
    assert_reference_passes_and_stub_is_not_attempted,
    default_cases,
    failure,
)

from course_utils import checks
from course_utils import orthogonality as ortho
from course_utils.checks import orthogonality as chapter  # importing registers the exercises

pytestmark = pytest.mark.usefixtures("one_thread")


# --------------------------------------------------------------------------------------
# Right answers, written as a learner would
# --------------------------------------------------------------------------------------


def coherence(V):
    U = V / V.norm(dim=-1, keepdim=True)
    C = (U @ U.transpose(-1, -2)).abs()
    mask = ~torch.eye(V.shape[-2], dtype=torch.bool)
    return C[..., mask].max(dim=-1).values


def soft_threshold(x, t):
    return torch.sign(x) * torch.clamp(x.abs() - t, min=0)


def one_step_decode(W, x, b):
    return torch.relu(x @ W + b)


def ista(W, x, lam, steps):
    L = torch.linalg.matrix_norm(W, ord=2) ** 2
    f = torch.zeros(x.shape[0], W.shape[1], dtype=x.dtype)
    for _ in range(steps):
        f = soft_threshold(f + (x - f @ W.T) @ W / L, lam / L)
    return f


REFERENCES = {
    "coherence": coherence,
    "soft_threshold": soft_threshold,
    "one_step_decode": one_step_decode,
    "ista": ista,
}


@pytest.mark.parametrize("name", REFERENCES)
def test_reference_passes_and_stub_is_not_attempted(name, capsys):
    assert_reference_passes_and_stub_is_not_attempted(name, REFERENCES[name], capsys)


@pytest.mark.parametrize("name", REFERENCES)
def test_reference_passes_hidden_seeds(name):
    assert_passes(name, REFERENCES[name], seeds=range(100, 116))


def test_registered_with_hints_seeds_and_references():
    for name in REFERENCES:
        check = checks.EXERCISES[name]
        assert check is getattr(chapter, f"check_{name}") and check.exercise.name == name
        assert len(check.exercise.hints) >= 2 and len(check.exercise.seeds) >= 8
        assert check.__doc__ and name in check.__doc__
        assert check.exercise.reference is getattr(ortho, name)  # what the chapter runs when yours fails


def test_other_right_answers_pass():
    """The library itself, loops over pairs and entries, an SVD for L, a float threshold."""
    def coherence_by_loop(V):
        flat = V.reshape(-1, *V.shape[-2:])
        out = []
        for S in flat:
            best = torch.zeros((), dtype=V.dtype)
            for i in range(S.shape[0]):
                for j in range(S.shape[0]):
                    if i != j:
                        best = torch.maximum(best, (S[i] @ S[j]).abs() / (S[i].norm() * S[j].norm()))
            out.append(best)
        return torch.stack(out).reshape(V.shape[:-2])

    def soft_threshold_where(x, t):
        return torch.where(x > t, x - t, torch.where(x < -t, x + t, torch.zeros_like(x)))

    def ista_svd(W, x, lam, steps):
        L = torch.linalg.svdvals(W)[0] ** 2
        f = torch.zeros(x.shape[0], W.shape[1], dtype=x.dtype)
        for _ in range(steps):
            gradient = (f @ W.T - x) @ W
            f = ortho.soft_threshold(f - gradient / L, lam / L)
        return f

    for name, learner in [("coherence", ortho.coherence), ("coherence", coherence_by_loop),
                          ("soft_threshold", ortho.soft_threshold), ("soft_threshold", soft_threshold_where),
                          ("one_step_decode", ortho.one_step_decode),
                          ("one_step_decode", lambda W, x, b: torch.clamp(torch.einsum("dn,td->tn", W, x) + b, min=0)),
                          ("ista", ortho.ista), ("ista", ista_svd)]:
        assert_passes(name, learner)


def test_cases_cover_the_edges():
    coherences = default_cases("coherence", chapter._coherence_case)
    assert any(c.V.dim() == 3 for c in coherences) and any("antipodal" in c.label for c in coherences)
    assert any(not torch.allclose(c.V.norm(dim=-1), torch.ones(())) for c in coherences)
    thresholds = default_cases("soft_threshold", chapter._threshold_case)
    assert any(isinstance(c.t, torch.Tensor) for c in thresholds) and any(isinstance(c.t, float) for c in thresholds)
    assert all(((c.x.abs() < 0.2).any() and (c.x.abs() > 1.2).any()) for c in thresholds)  # both sides of t
    runs = default_cases("ista", chapter._ista_case)
    assert {c.steps for c in runs} >= {1, 5, 40, 100} and len({c.lam for c in runs}) == 4
    assert any(float(torch.linalg.matrix_norm(c.W, ord=2)) > 2 for c in runs)  # L far from 1


# --------------------------------------------------------------------------------------
# Wrong implementations: each fails, most with the mistake named
# --------------------------------------------------------------------------------------


def _cosines(V):
    U = V / V.norm(dim=-1, keepdim=True)
    return U @ U.transpose(-1, -2)


@pytest.mark.parametrize("wrong, mistake", [
    (lambda V: _cosines(V).abs().amax(dim=(-1, -2)), "the diagonal is included"),
    (lambda V: _cosines(V)[..., ~torch.eye(V.shape[-2], dtype=torch.bool)].amax(dim=-1), "the cosines are signed"),
    (lambda V: (V @ V.transpose(-1, -2))[..., ~torch.eye(V.shape[-2], dtype=torch.bool)].abs().amax(dim=-1),
     "these are dot products"),
    (lambda V: _cosines(V)[..., ~torch.eye(V.shape[-2], dtype=torch.bool)].abs().mean(dim=-1), "this is the mean |cos|"),
])
def test_wrong_coherences_are_named(wrong, mistake):
    assert_names_mistake("coherence", wrong, mistake)


@pytest.mark.parametrize("wrong, mistake", [
    (lambda x, t: torch.where(x.abs() > t, x, torch.zeros_like(x)), "this is hard thresholding"),
    (lambda x, t: torch.relu(x - t), "this is the ReLU of x − t"),
    (lambda x, t: (x.abs() - t).clamp_min(0), "the sign is lost"),
    (lambda x, t: x.sign() * (x.abs() - t), "entries inside [−t, t] are not set to 0"),
])
def test_wrong_soft_thresholds_are_named(wrong, mistake):
    assert_names_mistake("soft_threshold", wrong, mistake)


@pytest.mark.parametrize("wrong, mistake", [
    (lambda W, x, b: x @ W + b, "the ReLU is missing"),
    (lambda W, x, b: torch.relu(x @ W) + b, "the bias is added after the ReLU"),
    (lambda W, x, b: torch.relu(x @ W - b), "the bias is subtracted"),
    (lambda W, x, b: torch.relu(x @ W), "the bias is missing"),
])
def test_wrong_one_step_decoders_are_named(wrong, mistake):
    assert_names_mistake("one_step_decode", wrong, mistake)


@pytest.mark.parametrize("options, mistake", [
    (dict(step="1", threshold="lam"), "the step size is 1, not 1/L"),
    (dict(threshold="lam"), "the threshold is λ; after a step of size 1/L it is λ/L"),
    (dict(sign=-1), "the gradient step goes uphill"),
    (dict(shrink=False), "there is no soft-thresholding"),
])
def test_wrong_istas_are_named(options, mistake):
    assert_names_mistake("ista", lambda W, x, lam, steps: chapter._ista_with(W, x, lam, steps, **options), mistake)


def test_a_run_that_drifts_is_located():
    """A run that goes wrong only after its first steps (here: the threshold of the first step
    only is λ/L, the later ones λ/(2L)) is told where it leaves the reference."""
    def drifts(W, x, lam, steps):
        L = torch.linalg.matrix_norm(W, ord=2) ** 2
        f = torch.zeros(x.shape[0], W.shape[1], dtype=x.dtype)
        for t in range(steps):
            f = ortho.soft_threshold(f + (x - f @ W.T) @ W / L, lam / L if t == 0 else lam / (2 * L))
        return f

    message = failure("ista", drifts, seeds=[1])
    assert "first leaves the reference's after 2 of 5 steps" in message, message


def test_broken_learners_fail_without_the_answer():
    assert "ZeroDivisionError" in failure("coherence", lambda V: 1 / 0)
    assert "shape" in failure("coherence", lambda V: _cosines(V))
    assert "NaN" in failure("soft_threshold", lambda x, t: soft_threshold(x, t) * float("nan"))
    assert "dtype" in failure("soft_threshold", lambda x, t: soft_threshold(x, t).half())
    assert "shape" in failure("one_step_decode", lambda W, x, b: one_step_decode(W, x, b).T)
    assert "None" in failure("one_step_decode", lambda W, x, b: None)
    assert "constant factor" in failure("one_step_decode", lambda W, x, b: 2 * one_step_decode(W, x, b))
    assert "shape" in failure("ista", lambda W, x, lam, steps: ista(W, x, lam, steps)[0])
    assert "NaN" in failure("ista", lambda W, x, lam, steps: ista(W, x, lam, steps) / 0 * 0)

    def in_place(x, t):
        x.abs_()
        return soft_threshold(x, t)

    assert "in place" in failure("soft_threshold", in_place)

    def raises_system_exit(*args):
        raise SystemExit(1)

    assert "SystemExit" in failure("ista", raises_system_exit)
