"""Chapter 00's explorer (``course_utils.widgets.orthogonality_explorer``) and its pure functions
``orthogonality_summary``, ``describe_orthogonality`` and ``orthogonality_frame``: the numbers
it shows follow the chapter's laws (coherence near its prediction and above the Welch floor,
interference near sqrt(k E[f²]/d), ISTA recovering where the one-step decoder fails), the
implementations it is handed are the ones it runs, and the sliders redraw."""

import math

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import pytest
import torch

from course_utils import orthogonality as ortho
from course_utils.widgets import (describe_orthogonality, orthogonality_explorer, orthogonality_frame,
                                  orthogonality_summary)

pytestmark = pytest.mark.usefixtures("one_thread")


def test_summary_follows_the_laws_of_the_chapter():
    """d = 50, n = 200: the coherence within 15 % of the exact-law median and above the Welch
    floor; the interference within 10 % of sqrt(k·7/3/d) (measured: 0.499 vs 0.483 at k = 5,
    0.674 vs 0.683 at k = 10); ISTA recovers every signal at k = 5 and at least 0.85 at k = 10
    (ρ ≤ 0.2, inside the Donoho–Tanner edge 0.27; measured 1.00 and 0.90), where the one-step
    decoder fails on most (measured 0.25); at k = 25 (ρ = 0.5) both fail."""
    sparse = orthogonality_summary(50, 200, 5)
    assert sparse["delta"] == 0.25 and sparse["rho"] == 0.1
    assert sparse["mu"] == pytest.approx(sparse["predicted"], rel=0.15) and sparse["mu"] > 2 * sparse["welch"]
    assert sparse["welch"] == pytest.approx(ortho.welch_bound(200, 50))
    assert sparse["identifiable"] == ortho.identifiable_sparsity(sparse["mu"]) == 1
    assert sparse["interference"] == pytest.approx(math.sqrt(5 * 7 / 3 / 50), rel=0.1)
    assert sparse["ista_rate"] == 1.0
    assert sparse["rho_dt"] == pytest.approx(float(ortho.dt_curve([0.25])[0]))
    denser = orthogonality_summary(50, 200, 10)
    assert denser["ista_rate"] >= 0.85 and denser["one_step_rate"] < 0.5
    assert denser["interference"] == pytest.approx(math.sqrt(10 * 7 / 3 / 50), rel=0.1)
    assert denser["interference"] > sparse["interference"]
    beyond = orthogonality_summary(50, 200, 25)  # ρ = 0.5, far past the edge
    assert beyond["ista_rate"] < 0.05 and beyond["one_step_rate"] == 0.0


def test_summary_is_deterministic_and_shaped_for_the_figure():
    a, b = orthogonality_summary(20, 60, 3, trials=5, seed=1), orthogonality_summary(20, 60, 3, trials=5, seed=1)
    assert describe_orthogonality(a) == describe_orthogonality(b)
    assert a["cosines"].shape == (60 * 59,) and a["f"].shape == a["projection"].shape == a["ista_estimate"].shape == (60,)
    assert int((a["f"] > 0).sum()) == 3
    assert float(a["cosines"].max()) == pytest.approx(a["mu"], rel=1e-6)
    assert describe_orthogonality(orthogonality_summary(20, 60, 3, trials=5, seed=2)) != describe_orthogonality(a)


def test_summary_runs_the_implementations_it_is_handed():
    """The chapter hands the widget the learner's ISTA and coherence: a wrong ISTA (one that
    never leaves f = 0) or a wrong coherence must show up."""
    calls = []

    def idle_ista(W, x, lam, steps):
        calls.append((lam, steps))
        return torch.zeros(x.shape[0], W.shape[1], dtype=x.dtype)

    summary = orthogonality_summary(50, 200, 5, ista=idle_ista, coherence=lambda V: torch.tensor(0.25))
    assert calls == [(0.05, 300)]
    assert summary["ista_rate"] == 0.0 and summary["mu"] == 0.25 and summary["identifiable"] == 2


@pytest.mark.parametrize("d, n, k, words", [(1, 10, 1, "at least 2"), (20, 10, 15, "at most"), (10, 40, 0, "positive"),
                                            (10, 40, 2.5, "whole")])
def test_summary_rejects_impossible_settings(d, n, k, words):
    with pytest.raises(ValueError, match=words):
        orthogonality_summary(d, n, k)


def test_describe_names_every_number():
    summary = orthogonality_summary(50, 200, 5)
    text = describe_orthogonality(summary)
    assert text.startswith("d = 50 dimensions, n = 200 directions (δ = d/n = 0.25), k = 5 nonzeros (ρ = k/d = 0.10)")
    assert f"coherence μ = {summary['mu']:.3f}" in text and f"Welch floor {summary['welch']:.3f}" in text
    assert "coherence alone guarantees k ≤ 1" in text
    assert f"std {summary['interference']:.3f}" in text and "against the bias |b| = 0.50" in text
    assert f"ISTA {summary['ista_rate']:.2f}, one-step ReLU(Wᵀx + b) {summary['one_step_rate']:.2f} of 20" in text
    assert text.endswith(f"edge at this δ is ρ = {summary['rho_dt']:.2f}")


def test_frame_draws_overlaps_one_signal_and_the_plane():
    summary = orthogonality_summary(50, 200, 5)
    text, fig = orthogonality_frame(summary)
    assert text == describe_orthogonality(summary)
    hist, signal, plane = fig.axes
    assert len(hist.patches) == 40 and [line.get_xdata()[0] for line in hist.lines] == [summary["mu"], summary["welch"]]
    projection, threshold, truth, estimate = signal.lines
    assert len(projection.get_xdata()) == 200 and list(threshold.get_ydata()) == [0.5, 0.5]
    assert len(truth.get_xdata()) == 5
    curve, here = plane.lines
    assert list(here.get_xdata()) == [0.25] and list(here.get_ydata()) == [0.1]
    assert here.get_color() == "C2"  # ISTA recovers here: drawn as a success
    _, failing = orthogonality_frame(orthogonality_summary(50, 200, 25))
    assert failing.axes[2].lines[1].get_color() == "C3"
    plt.close("all")


def test_explorer_builds_and_redraws(capsys):
    box = orthogonality_explorer(d=30, n=90, k=3)  # outside a kernel the Output widget lets prints through
    sliders, _ = box.children
    dims, directions, nonzeros = sliders.children
    assert [s.description for s in sliders.children] == ["d (dimensions)", "n (directions)", "k (nonzeros)"]
    assert describe_orthogonality(orthogonality_summary(30, 90, 3)) in capsys.readouterr().out
    nonzeros.value = 9
    assert describe_orthogonality(orthogonality_summary(30, 90, 9)) in capsys.readouterr().out
    dims.value = 5  # k = 9 > d = 5: said, not raised
    assert "Cannot draw this setting: k (nonzeros) must be at most d = 5" in capsys.readouterr().out
    plt.close("all")
