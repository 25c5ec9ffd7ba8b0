"""ipywidgets explorers.  Each is a thin layer over a pure function that the tests call directly.

``toy_model_explorer()`` — sliders for feature sparsity and importance decay retrain a small
ReLU toy model (n features into m=2 dimensions, a few seeds, best kept) and redraw WᵀW and
the feature fan.  The work happens in ``retrain_toy_model``, which returns plain tensors.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from . import geometry
from .toy_models import ToyModel, evaluate_loss, importance_decay, select_best, train


@dataclass
class ExplorerResult:
    """One retrained model: the best seed's weights and what the explorer prints about it."""

    W: Tensor  # (1, hidden, features)
    b: Tensor  # (1, features)
    loss: float
    importance: Tensor  # (features,)
    represented: int  # features with ‖W_i‖ > 0.5

    def summary(self) -> str:
        n = self.W.shape[-1]
        return f"{self.represented} of {n} features represented in {self.W.shape[1]} dimensions; loss {self.loss:.5f}"


def retrain_toy_model(
    sparsity: float,
    decay: float,
    n_features: int = 5,
    n_hidden: int = 2,
    seeds: int = 3,
    steps: int = 2_000,
    seed: int = 0,
    lr: float = 1e-2,
) -> ExplorerResult:
    """Train ``seeds`` ReLU toy models with S = ``sparsity`` and importance ``decay``**i and
    return the lowest-loss one.  Deterministic for fixed arguments; a few seconds on a CPU.

    It uses a higher learning rate (1e-2, cosine decay) than the chapter's 1e-3 recipe, so
    that 2,000 steps reach the solutions the recipe reaches in 10,000.
    """
    if not 0.0 <= sparsity < 1.0:
        raise ValueError(f"sparsity must be in [0, 1), got {sparsity}")
    if not 0.0 < decay <= 1.0:
        raise ValueError(f"importance decay must be in (0, 1], got {decay}")
    importance = importance_decay(n_features, decay)
    model = ToyModel(n_features, n_hidden, n_instances=seeds, feature_probability=1.0 - sparsity,
                     importance=importance, device="cpu", generator=torch.Generator().manual_seed(seed))
    train(model, steps=steps, lr=lr, schedule="cosine", seed=seed, progress=False)
    losses = evaluate_loss(model, batch_size=20_000)
    best = int(select_best(model, losses, seeds)[0])
    W = model.W.detach()[best : best + 1].clone()
    b = model.b.detach()[best : best + 1].clone()
    represented = int((geometry.feature_norms(W) > 0.5).sum())
    return ExplorerResult(W, b, float(losses[best]), importance, represented)


def toy_model_explorer(n_features: int = 5, steps: int = 2_000):
    """Sliders for sparsity (log scale) and importance decay; redraws on release.

    Returns the widget box: make it the last expression of a cell to show it.
    """
    import ipywidgets as widgets
    import matplotlib.pyplot as plt

    from .plots import plot_feature_fan, plot_WtW

    density = widgets.FloatLogSlider(value=0.05, base=10, min=-3, max=0, step=0.1,
                                     description="1 - S", continuous_update=False, readout_format=".3f")
    decay = widgets.FloatSlider(value=1.0, min=0.5, max=1.0, step=0.05, description="importance decay",
                                continuous_update=False, style={"description_width": "initial"})
    output = widgets.Output()

    def redraw(_=None):
        with output:
            output.clear_output(wait=True)
            result = retrain_toy_model(1.0 - density.value, decay.value, n_features=n_features, steps=steps)
            print(result.summary())
            plot_WtW(result.W, result.b, titles=["WᵀW and b"])
            plot_feature_fan(result.W, titles=["feature directions"], importance=result.importance)
            plt.show()

    density.observe(redraw, names="value")
    decay.observe(redraw, names="value")
    redraw()
    return widgets.VBox([widgets.HBox([density, decay]), output])
