"""Chapter 07's T explorer (``course_utils.widgets.memorization_explorer``) and its pure
functions ``describe_memorization`` and ``memorization_frame``, on a made-up sweep of two
instances whose geometry is known: at T = 5 the training examples form a regular pentagon and
the features do not; at T = 8 five features form one and the training examples do not."""

import math

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import pytest
import torch

from course_utils import memorization as mz
from course_utils.widgets import describe_memorization, memorization_explorer, memorization_frame


def _ring(k: int, radius: float = 1.0, phase: float = 0.0) -> torch.Tensor:
    angles = phase + torch.arange(k) * 2 * math.pi / k
    return radius * torch.stack([angles.cos(), angles.sin()])  # (2, k)


@pytest.fixture
def sweep():
    n, T_max = 12, 8
    g = torch.Generator().manual_seed(0)
    W = 0.2 * torch.randn(2, 2, n, generator=g)
    W[0, :, :3] = torch.tensor([[1.0, 0.9, 0.8], [0.1, 0.3, -0.2]])   # three long features, bunched up
    W[1, :, :5] = _ring(5)                                               # a pentagon of features
    H = torch.zeros(2, T_max, 2)
    H[0, :5] = _ring(5, 2.0, 0.3).T                                      # a pentagon of training examples
    H[1] = torch.randn(T_max, 2, generator=g) * torch.tensor([1.0, 0.1])  # squashed onto a line
    feature_D = mz.weighted_dimensionality(W, torch.rand(2, n, generator=g))
    data_D = torch.tensor([0.4, 0.05])
    return mz.Sweep(torch.tensor([5, 8]), W, torch.zeros(2, n), H, torch.tensor([0.001, 0.8]),
                    torch.tensor([1.2, 0.9]), feature_D, data_D, seconds=1.0)


def test_describe_memorization_names_the_polygons(sweep):
    text = describe_memorization(sweep, 0)
    assert text.startswith("T = 5: train loss 0.001, test loss 1.200; dimensionality of features ")
    assert "of training examples 0.400" in text
    assert text.endswith("training examples: the 5 longest are 0° from a regular 5-gon")
    assert "features: the 3 longest are " in text and "features: the 3 longest are 0°" not in text
    late = describe_memorization(sweep, 1)
    assert "features: the 5 longest are 0° from a regular 5-gon" in late
    assert "training examples: the 5 longest are 0°" not in late
    with pytest.raises(ValueError, match="index"):
        describe_memorization(sweep, 2)


def test_memorization_frame_draws_features_examples_and_dimensionalities(sweep):
    text, fig = memorization_frame(sweep, 1)
    assert text == describe_memorization(sweep, 1)
    features, examples, curves = fig.axes
    assert len(features.lines) == 12 and len(examples.lines) == 8     # one line per feature, per example
    assert examples.get_title() == "training examples h_t (T = 8)"
    assert len(curves.lines) == 3 and curves.get_xscale() == "log"    # two curves and the marker at T
    assert list(curves.lines[2].get_xdata()) == [8, 8]
    _, early = memorization_frame(sweep, 0)
    assert len(early.axes[1].lines) == 5                               # only the T real examples, not the padding
    plt.close("all")


def test_memorization_explorer_builds_and_redraws(sweep, capsys):
    box = memorization_explorer(sweep)          # outside a kernel the Output widget lets prints through
    slider, _ = box.children
    assert slider.description == "T" and [label for label, _ in slider.options] == ["5", "8"]
    assert describe_memorization(sweep, 0) in capsys.readouterr().out
    slider.value = 1                            # moving the slider redraws at the new T
    assert describe_memorization(sweep, 1) in capsys.readouterr().out
    plt.close("all")


def test_the_explorer_needs_a_2d_hidden_space(sweep):
    flat = mz.Sweep(sweep.T, torch.zeros(2, 3, 12), sweep.b, torch.zeros(2, 8, 3), sweep.train_loss,
                    sweep.test_loss, sweep.feature_D, sweep.data_D, 1.0)
    with pytest.raises(ValueError, match="2-D hidden space"):
        memorization_frame(flat, 0)
    with pytest.raises(ValueError, match="2-D hidden space"):
        memorization_explorer(flat)
