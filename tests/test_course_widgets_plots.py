"""The explorer's pure function and the plotting functions, on small inputs."""

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import pytest
import numpy as np
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
    # The boundary drawn is where the cheapest closed-form solution changes: its points lie on
    # s*(r) (both sides of r = 1).
    from matplotlib.contour import ContourSet

    contours = [c for c in fig.axes[0].collections if isinstance(c, ContourSet)]
    points = np.concatenate([path.vertices for path in contours[0].get_paths() if len(path.vertices)])
    expected = geometry.antipodal_boundary_density(torch.as_tensor(points[:, 0])).numpy()
    assert len(points) > 100 and np.allclose(points[:, 1], expected, rtol=0.03)
    plt.close("all")


def test_phase_plot_draws_the_learners_boundary():
    """Chapter 01 passes the learner's phase_losses: the plot draws its boundary, not the library's."""
    from matplotlib.contour import ContourSet

    r, s = torch.logspace(-1, 1, 4), torch.logspace(-2, 0, 4)
    phase = torch.zeros(4, 4, dtype=torch.long)
    halved = lambda rr, ss: geometry.phase_losses(rr, ss) * torch.tensor([1.0, 0.5, 1.0], dtype=torch.float64)
    fig = plots.plot_phase_diagram(r, s, phase, phase_losses=halved)
    contour = next(c for c in fig.axes[0].collections if isinstance(c, ContourSet))
    points = np.concatenate([path.vertices for path in contour.get_paths() if len(path.vertices)])
    library = geometry.antipodal_boundary_density(torch.as_tensor(points[:, 0])).numpy()
    assert (points[:, 1] > 1.2 * library).mean() > 0.9  # a cheaper pair wins at higher densities
    plt.close("all")


def _antipodal_and_pentagon() -> torch.Tensor:
    """Two instances in 2-D: two antipodal pairs (+ a dropped feature), and a pentagon."""
    angles = torch.arange(5) * 2 * torch.pi / 5
    pentagon = torch.stack([angles.cos(), angles.sin()])
    digons = torch.tensor([[1.0, -1.0, 0.0, 0.0, 0.0], [0.0, 0.0, 1.0, -1.0, 0.0]])
    return torch.stack([digons, pentagon])


def test_describe_sweep_point_names_the_configuration():
    from course_utils.widgets import describe_sweep_point

    W = _antipodal_and_pentagon()
    density = torch.tensor([0.5, 0.05])
    assert describe_sweep_point(W, density, 0) == (
        "1/(1-S) = 2.00: 4 of 5 features in 2 dimensions, dimensions per feature 0.500; configuration: 2 digons")
    assert describe_sweep_point(W, density, 1).endswith("dimensions per feature 0.400; configuration: 1 pentagon")
    with pytest.raises(ValueError, match="index"):
        describe_sweep_point(W, density, 2)


def test_configuration_explorer_and_dynamics_scrubber_build():
    from course_utils.widgets import configuration_explorer, dynamics_frame, dynamics_scrubber

    W = _antipodal_and_pentagon()
    box = configuration_explorer(W, torch.tensor([0.5, 0.05]))
    assert box.children[0].description == "1/(1-S)" and len(box.children[0].options) == 2
    with pytest.raises(ValueError, match="instances"):
        configuration_explorer(W, torch.tensor([0.5]))
    W3 = torch.randn(2, 3, 6, generator=torch.Generator().manual_seed(0))
    box3 = configuration_explorer(W3, torch.tensor([0.5, 0.05]))
    azimuth, elevation = box3.children[1].children
    assert (azimuth.description, elevation.description) == ("azimuth", "elevation")
    azimuth.value = 45  # turning the view redraws at the new angle
    views = [ax for number in plt.get_fignums() for ax in plt.figure(number).axes if ax.name == "3d"]
    assert views[-1].azim == 45
    steps = [0, 10]
    D = geometry.feature_dimensionality(W)
    loss = torch.tensor([0.01, 0.005])
    text, figures = dynamics_frame(steps, W, D, loss, 1)
    assert text.startswith("step 10: loss 0.00500; configuration: 1 pentagon; D_i = 0.40, 0.40")
    assert len(figures) == 2 and len(figures[1].axes[0].lines) >= 5
    box = dynamics_scrubber(steps, W, D, loss)
    assert box.children[0].children[1].max == 1
    with pytest.raises(ValueError, match="one entry per snapshot"):
        dynamics_scrubber(steps, W, D, loss[:1])
    plt.close("all")


def test_chapter02_plots():
    W = torch.cat([_antipodal_and_pentagon(), torch.zeros(1, 2, 5)])
    fig = plots.plot_uniform_sweep(torch.tensor([0.5, 0.05, 0.01]), W, title="sweep")
    top, bottom = fig.axes
    dpf = top.get_lines()[0].get_ydata().tolist()
    assert dpf[:2] == pytest.approx([0.5, 0.4]) and dpf[2] == float("inf")
    assert len(bottom.collections[0].get_offsets()) == 9  # 4 + 5 represented features
    fig3 = plots.plot_feature_3d(torch.eye(3)[None].repeat(2, 1, 1))
    assert len(fig3.axes) == 2
    with pytest.raises(ValueError, match="hidden=3"):
        plots.plot_feature_3d(torch.randn(1, 2, 4))
    strip = plots.plot_dimensionality_strip(torch.tensor([0.5, 0.4, 1.0]), torch.tensor([1.0, 1.0, 0.1]))
    assert len(strip.axes[0].patches) == 3
    plt.close("all")


def test_scaling_plot_fits_each_regime():
    m = torch.tensor([8, 16, 32])
    loss = torch.stack([1.0 / m, m.float() ** -0.5])
    fig = plots.plot_scaling(m, loss, ["strong", "weak"], weak_theory=m.float() ** -0.5)
    labels = [line.get_label() for line in fig.axes[0].lines]
    assert "strong: slope -1.00" in labels and "weak: slope -0.50" in labels
    with pytest.raises(ValueError, match="expected"):
        plots.plot_scaling(m, loss, ["only one"])
    plt.close("all")


def test_polysemanticity_explorer_retrains_and_counts():
    from course_utils import polysemanticity as poly
    from course_utils.widgets import retrain_polysemantic

    sparse = retrain_polysemantic(2, 0.03)
    assert sparse.W.shape == (16, 32) and sparse.counts.shape == (32,)
    assert sparse.one_active_weight >= 0.99
    # the count averaged over 32 seeds is near the prediction 1.51 (measured 1.56)
    assert abs(float(sparse.counts.double().mean()) - poly.predicted_polysemantic(16, 32)) < 0.5
    assert "prediction 1.51" in sparse.summary() and "n²/(4m) = 2.00" in sparse.summary()
    no_l1 = retrain_polysemantic(2, 0.0)
    assert no_l1.one_active_weight == 0.0 and int(no_l1.counts.sum()) == 0
    assert torch.equal(retrain_polysemantic(2, 0.03).W, sparse.W), "the explorer must be deterministic"
    with pytest.raises(ValueError, match="m/n"):
        retrain_polysemantic(0.5, 0.03)
    with pytest.raises(ValueError, match="λ"):
        retrain_polysemantic(2, -1.0)


def test_polysemanticity_explorer_builds():
    from course_utils.widgets import polysemanticity_explorer

    box = polysemanticity_explorer(n=8, steps=300)
    ratio, l1 = box.children[0].children
    assert ratio.description == "m / n" and l1.description == "λ"
    l1.value = 0.1  # triggers a retrain; must not raise
    plt.close("all")


def test_chapter03_plots():
    from course_utils import polysemanticity as poly

    W = torch.zeros(4, 8)
    W[0, 5], W[1, 2], W[2, 5], W[3, 0] = 1.0, -1.0, -0.9, 0.95  # features 0 and 2 share neuron 5
    fig = plots.plot_polysemantic_weights([W, W], titles=["a", "b"])
    ax = fig.axes[0]
    markers = [line for line in ax.lines if line.get_marker() == "v"]
    assert len(markers) == 1 and markers[0].get_xdata()[0] == 0  # neuron 5 sorted first, marked
    with pytest.raises(ValueError, match="one instance"):
        plots.plot_polysemantic_weights([W[None]])
    sweep = poly.collision_sweep(4, [8, 16], 2, optimizer="gd", l1=0.03, steps=50, progress=False)
    fig = plots.plot_collision_sweep({"gd": sweep})
    assert fig.axes[0].get_xscale() == "log" and len(fig.axes[0].lines) >= 2
    t = torch.linspace(0, 10, 11)
    fig = plots.plot_sparsification(t, torch.linspace(8, 1, 11), torch.linspace(3, 1, 11),
                                    poly.predicted_surviving(8, 0.1, t))
    assert len(fig.axes[0].lines) == 4
    fig = plots.plot_fourth_norms([0, 1, 2], {"a": torch.rand(3, 4), "b": torch.rand(3, 4)})
    assert [t.get_text() for t in fig.axes[0].get_legend().get_texts()] == ["a", "b"]
    plt.close("all")


# --------------------------------------------------------------------------------------
# Chapter 04: computation in superposition
# --------------------------------------------------------------------------------------


def test_neuron_features_plot_stacks_weights_and_orders_monosemantic_neurons_first():
    # 4 neurons x 3 features: neuron 0 polysemantic, 1 dead, 2 monosemantic on feature 2,
    # 3 monosemantic on feature 0 (with a small negative weight on feature 1)
    W = torch.tensor([[0.7, -0.6, 0.5], [0.0, 0.0, 0.0], [0.0, 0.0, 1.2], [1.0, -0.1, 0.0]])
    order, group = plots.neuron_display_order(W)
    assert order.tolist() == [3, 2, 0, 1] and group.tolist() == [0, 0, 1, 2]
    fig = plots.plot_neuron_features([W, 2 * W], titles=["1 − S = 1.0", "1 − S = 0.1"])
    assert len(fig.axes) == 3  # two panels and the colourbar
    ax = fig.axes[0]
    (bars,) = ax.collections
    assert len(bars.get_paths()) == 6  # one rectangle per non-zero weight
    tops = sorted(float(path.vertices[:, 1].max()) for path in bars.get_paths())
    bottoms = sorted(float(path.vertices[:, 1].min()) for path in bars.get_paths())
    assert tops[-1] == pytest.approx(1.2) and bottoms[0] == pytest.approx(-0.6)
    # neuron 0's positive weights stack: 0.7 then 0.5 on top, ending at 1.2, in column 2
    column2 = [p.vertices for p in bars.get_paths() if p.vertices[:, 0].min() < 2 < p.vertices[:, 0].max()]
    assert sorted(float(v[:, 1].max()) for v in column2) == pytest.approx([0.0, 0.7, 1.2])
    dead = [line for line in ax.lines if line.get_label() == "dead"]
    assert len(dead) == 1 and dead[0].get_xdata().tolist() == [3]
    assert "1 − S = 1.0" in ax.get_xlabel() and "2/4 monosemantic" in ax.get_xlabel()
    assert fig.axes[-1].get_ylabel() == "feature index"
    with pytest.raises(ValueError, match="one instance"):
        plots.plot_neuron_features([W[None]])
    plt.close("all")


@pytest.mark.parametrize("n_panels, hidden, features", [(5, 5, 10), (2, 40, 30)])
def test_neuron_features_panels_do_not_overlap(n_panels, hidden, features):
    """The chapter's two figures (five privileged-basis panels, two abs(x) panels): no panel's
    tick labels or axis labels run into its neighbour, nor into the colourbar."""
    generator = torch.Generator().manual_seed(0)
    Ws = [3 * torch.randn(hidden, features, generator=generator) for _ in range(n_panels)]
    fig = plots.plot_neuron_features(Ws, titles=[f"1 − S = {k}" for k in range(n_panels)])
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    boxes = [axis.get_tightbbox(renderer) for axis in fig.axes]  # the panels, then the colourbar
    for left, right in zip(boxes, boxes[1:]):
        assert left.x1 <= right.x0 + 0.5, (left, right)
    plt.close("all")


def test_neuron_features_plot_handles_a_dead_model_and_an_abs_model_sized_matrix():
    fig = plots.plot_neuron_features(torch.zeros(3, 5))  # a single 2-D tensor, every neuron dead
    assert len(fig.axes) == 2 and len(fig.axes[0].collections[0].get_paths()) == 0
    W1 = torch.randn(40, 100, generator=torch.Generator().manual_seed(0))  # abs(x): m=40, n=100
    fig = plots.plot_neuron_features(W1, importance=0.99 ** torch.arange(100.0))
    assert len(fig.axes[0].collections[0].get_paths()) == 4000
    assert fig.axes[0].get_legend() is None and fig.axes[-1].get_ylabel() == "importance"
    _, ax = plt.subplots()
    assert plots.plot_neuron_features(W1, ax=ax) is ax.figure
    plt.close("all")


def test_u_and_plots():
    from course_utils import computation as C

    ls = [2, 4, 6]
    predicted = {key: [C.predicted_u_and_readoffs(0.1, l)[key] for l in ls] for key in ("both", "one", "none")}
    measured = {key: [v + 0.01 for v in values] for key, values in predicted.items()}
    fig = plots.plot_u_and_errors(ls, measured, predicted)
    ax = fig.axes[0]
    points = [line for line in ax.lines if line.get_marker() == "o"]
    solid = [line for line in ax.lines if line.get_linestyle() == "-" and line.get_marker() in ("None", "", None)]
    assert len(points) == 3 and len(solid) == 3
    assert points[0].get_color() == solid[0].get_color() != points[1].get_color()
    assert solid[0].get_ydata().tolist() == pytest.approx([1.0, 1.2, 1.4])
    with pytest.raises(ValueError, match="values of l"):
        plots.plot_u_and_errors([2, 3], measured, predicted)
    fig = plots.plot_u_and_readoffs(C.predicted_u_and_readoffs(0.1, 3), C.predicted_u_and_readoffs(0.1, 3),
                                    C.predicted_u_and_readoffs(0.1, 3, exact=True))
    assert len(fig.axes[0].patches) == 6  # measured and predicted bars for both / one / none
    plt.close("all")


def test_compressed_computation_and_abs_sweep_plots():
    trained, naive = torch.linspace(0.1, 0.0, 10), torch.tensor([1 / 6, 0.0] * 5)
    per_feature = {"random embedding": {"trained": trained, "naive baseline": naive},
                   "orthonormal embedding": {"trained": trained.flip(0), "naive baseline": naive}}
    fig = plots.plot_compressed_computation(per_feature, reference=1 / 12, reference_label="naive, no mixing (1/12)")
    assert len(fig.axes) == 2 and [ax.get_title() for ax in fig.axes] == list(per_feature)
    ax = fig.axes[0]
    assert ax.lines[0].get_ydata().tolist() == pytest.approx(sorted(trained.tolist()))  # each curve sorted
    assert ax.lines[1].get_ydata().tolist() == pytest.approx(sorted(naive.tolist()))  # by its own loss
    reference = [line for line in ax.lines if line.get_label() == "naive, no mixing (1/12)"]
    assert len(reference) == 1 and reference[0].get_linestyle() == "--"
    assert reference[0].get_ydata()[0] == pytest.approx(1 / 12)
    fig = plots.plot_compressed_computation({"one": {"trained": trained}}, sort=False)
    assert len(fig.axes[0].lines) == 1 and fig.axes[0].lines[0].get_ydata()[0] == pytest.approx(0.1)
    density = torch.logspace(-2, 0, 5)
    fig = plots.plot_abs_sweep(density, torch.linspace(0.2, 1.0, 5))
    assert fig.axes[0].get_xscale() == "log" and len(fig.axes[0].lines) == 1
    fig = plots.plot_abs_sweep(density, torch.rand(3, 5))  # seeds: mean line and a band
    assert len(fig.axes[0].lines) == 1 and len(fig.axes[0].collections) == 1
    with pytest.raises(ValueError, match="densities"):
        plots.plot_abs_sweep(density, torch.rand(4))
    plt.close("all")


def test_u_and_summary_agrees_with_the_library_and_the_error_laws():
    import math

    from course_utils import computation as C
    from course_utils.widgets import describe_u_and, u_and_summary

    summary = u_and_summary(60, 400, 0.1, 3)
    assert summary["n_ands"] == 1770 and summary["neurons"] == 400 and summary["d_p2"] == pytest.approx(4.0)
    assert summary["predicted"] == C.predicted_u_and_readoffs(0.1, 3)
    assert summary["predicted_exact"] == C.predicted_u_and_readoffs(0.1, 3, exact=True)
    for key in ("both", "one"):
        assert abs(summary["measured"][key] - summary["predicted"][key]) < 0.03, summary["measured"]
    assert abs(summary["measured"]["none"] - summary["predicted_exact"]["none"]) < 0.01, summary["measured"]
    # the same numbers as calling the library directly with the same generator
    generator = torch.Generator().manual_seed(0)
    W = C.u_and_wiring(60, 400, 0.1, generator)
    assert summary["measured"] == C.measure_u_and_readoffs(W, 3, 256, generator)
    assert summary["uncovered"] == C.uncovered_fraction(W)
    assert u_and_summary(60, 400, 0.1, 3) == summary, "deterministic for fixed arguments"
    # with d p² small most pairs have no neuron: the uncovered fraction is about e^(-d p²)
    sparse = u_and_summary(100, 400, 0.05, 3)  # d p² = 1; over seeds the fraction is 0.367 ± 0.015
    assert sparse["d_p2"] == pytest.approx(1.0)
    assert abs(sparse["uncovered"] - math.exp(-1)) < 0.05 and sparse["predicted_uncovered"] == math.exp(-1)
    text = describe_u_and(sparse)
    assert text.startswith("d = 400 neurons compute C(100,2) = 4950 ANDs; d·p² = 1.00, uncovered pairs")
    assert "cannot be computed" in text and "cannot be computed" not in describe_u_and(summary)
    with pytest.raises(ValueError, match="from 2 to m = 5"):
        u_and_summary(5, 100, 0.1, 8)
    with pytest.raises(ValueError, match="p must be in"):
        u_and_summary(10, 100, 0.0, 3)


def test_u_and_summary_and_explorer_run_a_given_construction(capsys):
    """With construction= the explorer builds that class (the learner's UAnd): the reference
    class gives the default's numbers, and a class that always reads 1 shows its own."""
    from course_utils import computation as C
    from course_utils.widgets import u_and_explorer, u_and_summary

    assert u_and_summary(60, 400, 0.1, 3, construction=C.UAnd) == u_and_summary(60, 400, 0.1, 3)

    class ReadsOne(C.UAnd):
        def __call__(self, x):
            return torch.ones(x.shape[0], self.m, self.m)

    summary = u_and_summary(60, 400, 0.1, 3, construction=ReadsOne)
    assert summary["measured"] == {"both": 1.0, "one": 1.0, "none": 1.0}
    u_and_explorer(m=30, d=200, p=0.1, l=3, construction=ReadsOne)
    assert "one on 1.000" in capsys.readouterr().out
    plt.close("all")


def test_u_and_explorer_redraws_and_reports_impossible_settings(capsys):
    from course_utils.widgets import u_and_explorer

    box = u_and_explorer(m=30, d=200, p=0.1, l=3)
    d, p, l = box.children[0].children
    assert [s.description for s in (d, p, l)] == ["d (neurons)", "p (wiring)", "l (features on)"]
    assert "d = 200 neurons compute C(30,2) = 435 ANDs" in capsys.readouterr().out
    d.value = 400  # outside a kernel the Output widget lets the print through to stdout
    assert "d = 400 neurons" in capsys.readouterr().out
    p.value = 0.02
    assert "cannot be computed" in capsys.readouterr().out
    small = u_and_explorer(m=5, d=100, p=0.2, l=8)  # l > m: a message, not a traceback
    assert "Cannot build this setting" in capsys.readouterr().out
    small.children[0].children[2].value = 4
    assert "d = 100 neurons compute C(5,2) = 10 ANDs" in capsys.readouterr().out
    small.children[0].children[2].value = 9
    assert "Cannot build this setting" in capsys.readouterr().out
    plt.close("all")
