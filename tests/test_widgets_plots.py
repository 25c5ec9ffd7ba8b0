"""The explorer's pure function and the plotting functions, on small inputs."""

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import pytest
import torch

from course_utils import geometry, plots
from course_utils.widgets import retrain_toy_model, toy_model_explorer


def test_explorer_retrain_reproduces_dense_and_sparse_regimes():
    dense = retrain_toy_model(sparsity=0.0, decay=0.7, steps=2000)
    sparse = retrain_toy_model(sparsity=0.95, decay=1.0, steps=2000)
    assert dense.represented == 2
    assert sparse.represented == 5  # a pentagon, best of three seeds
    assert dense.W.shape == (1, 2, 5) and dense.b.shape == (1, 5)
    assert "2 of 5 features" in dense.summary()
    again = retrain_toy_model(sparsity=0.95, decay=1.0, steps=2000)
    assert torch.equal(again.W, sparse.W), "the explorer must be deterministic"


def test_explorer_rejects_bad_values():
    with pytest.raises(ValueError, match="sparsity"):
        retrain_toy_model(sparsity=1.0, decay=1.0)
    with pytest.raises(ValueError, match="decay"):
        retrain_toy_model(sparsity=0.5, decay=0.0)


def test_explorer_builds_widgets():
    box = toy_model_explorer(steps=50)
    sliders = box.children[0].children
    assert [s.description for s in sliders] == ["1 - S", "importance decay"]
    plt.close("all")


def test_plots_draw_one_panel_per_instance():
    W = torch.randn(3, 2, 5)
    b = torch.randn(3, 5)
    fig = plots.plot_WtW(W, b, titles=["a", "b", "c"])
    assert [ax.get_title() for ax in fig.axes[:6:2]][:1] == ["a"]
    fan = plots.plot_feature_fan(W)
    assert len(fan.axes) == 3 and len(fan.axes[0].lines) >= 5
    bars = plots.plot_feature_bars(W)
    assert len(bars.axes[0].patches) == 5
    with pytest.raises(ValueError, match="hidden=2"):
        plots.plot_feature_fan(torch.randn(1, 3, 4))
    with pytest.raises(ValueError, match="titles"):
        plots.plot_WtW(W, b, titles=["only one"])
    plt.close("all")


def test_phase_plot_has_boundary():
    r, s = torch.logspace(-1, 1, 4), torch.logspace(-2, 0, 4)
    rr, ss = torch.meshgrid(r, s, indexing="ij")
    phase = geometry.phase_closed_form(rr, ss)
    fig = plots.plot_phase_diagram(r, s, phase, phase)
    assert len(fig.axes) == 2
    assert any(line.get_label() == "closed-form boundary" for line in fig.axes[0].lines)
    plt.close("all")
