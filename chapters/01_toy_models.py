# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Chapter 01 — Toy models of superposition
#
# Neural networks often represent **more features than they have dimensions**. Elhage et al.
# (2022), *Toy Models of Superposition*, showed this happening in a model small enough to see
# completely: `n` features squeezed through `m < n` hidden dimensions and read back out.
# In this chapter you build that model, train it on your own machine, and watch it decide
# which features to keep, when to pack them into **superposition**, and into which shapes
# (antipodal pairs, pentagons).
#
# **You will reproduce**
# 1. With dense features the model keeps the `m` most important ones, orthogonally, and
#    drops the rest; with sparse features of equal importance, 5 features fit in 2
#    dimensions as a **regular pentagon**.
# 2. With `n=20, m=5` and importance `0.7^i`, a **linear** model always keeps exactly the top
#    five features, while the **ReLU** model adds features in superposition, in order of
#    importance, as sparsity grows.
# 3. The `n=2, m=1` **phase diagram**: trained models against a boundary you derive by hand.
#
# **Time:** about 2 minutes of compute on a laptop CPU (seconds on a GPU).
# Exercises are marked ✏️; each has a check that tells you *what* is wrong without giving the
# answer, and `checks.hint("name")` when you are stuck.

# %%
# Setup: on Colab this installs the course package alone (--no-deps: Colab's own torch,
# ipywidgets and matplotlib are kept); elsewhere it only configures torch's CPU threads.
# `device` is the torch device the chapter trains on: the GPU when there is one.
import sys, subprocess, importlib.util
if "google.colab" in sys.modules and importlib.util.find_spec("course_utils") is None:
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps",
                    "git+https://github.com/superposition-course/superposition@main"], check=True)
    importlib.invalidate_caches()
from course_utils.colab import prepare
device = prepare()

# %%
import matplotlib.pyplot as plt
import torch
from torch import Tensor

from course_utils import checks, geometry, plots
from course_utils.device import set_seed
from course_utils.toy_models import (
    ToyModel,
    evaluate_loss,
    importance_decay,
    select_best,
    train,
    train_phase_diagram,
)

torch.set_printoptions(precision=2, sci_mode=False)
set_seed(0)

# %% [markdown]
# ## 1. The model
#
# Each input `x ∈ ℝⁿ` is a vector of features. The model projects it down with a matrix
# `W` (`m × n`, column `W_i` is the direction given to feature `i`) and tries to recover it:
#
# $$h = W x, \qquad x' = \mathrm{ReLU}(W^\top h + b) = \mathrm{ReLU}(W^\top W x + b).$$
#
# The *linear* model is the same without the ReLU. Because we want to compare many models
# (different sparsities, importances, seeds), every tensor carries a leading **instance**
# dimension and all instances train at once as one tensor program:
#
# | tensor | shape |
# |---|---|
# | `W` | `(instances, hidden, features)` |
# | `b` | `(instances, features)` |
# | `x`, `x'` | `(instances, batch, features)` |
#
# ✏️ **Exercise 1.** Implement the forward pass. `torch.einsum` keeps the axes readable.

# %%
def toy_forward(W: Tensor, b: Tensor, x: Tensor, activation: str = "relu") -> Tensor:
    """x' = act(Wᵀ W x + b) per instance. W (i, h, f), b (i, f), x (i, batch, f) -> (i, batch, f)."""
    # YOUR CODE HERE
    raise NotImplementedError("exercise: toy_forward")


checks.check_toy_forward(toy_forward)

# %% [markdown]
# ## 2. The data: sparse features
#
# Feature `i` is **zero with probability `S`** (the *sparsity*) and otherwise uniform on
# `[0, 1]`. We write `p = 1 − S` for the *feature probability*; each instance may have its own
# `p` per feature, shape `(instances, features)`.
#
# ✏️ **Exercise 2.** Generate a batch. Draw the values and the "is it active?" decisions
# independently for every instance, batch row and feature.

# %%
def generate_batch(feature_probability: Tensor, batch_size: int, generator=None) -> Tensor:
    """(instances, features) probabilities -> (instances, batch_size, features) sparse features."""
    # YOUR CODE HERE
    raise NotImplementedError("exercise: generate_batch")


checks.check_generate_batch(generate_batch)

# %% [markdown]
# ## 3. The loss: importance-weighted squared error
#
# Not all features matter equally. Feature `i` has an **importance** `I_i` that weights its
# squared error: `L = Σ_i I_i (x_i − x'_i)²`. We average over the batch and the features, and
# keep one loss **per instance** (summing them for the optimiser trains every instance
# independently, because no parameter is shared).
#
# ✏️ **Exercise 3.** Implement the per-instance loss, shape `(instances,)`.

# %%
def importance_weighted_loss(out: Tensor, x: Tensor, importance: Tensor) -> Tensor:
    """mean over batch and features of importance * (x - out)^2; out, x (i, b, f); importance (i, f) -> (i,)."""
    # YOUR CODE HERE
    raise NotImplementedError("exercise: importance_weighted_loss")


checks.check_importance_weighted_loss(importance_weighted_loss)

# %% [markdown]
# ## 4. Training
#
# The course library holds the reference versions of your three functions in
# `course_utils.toy_models`: `ToyModel` (Xavier-normal `W`, zero `b`), and `train`, which
# follows the paper's recipe: Adam, learning rate 1e-3, a **fresh batch of 1024 every
# step**, all instances at once. On a CPU, `train` runs a fused step whose gradients are
# derived by hand (tested against autograd), because for models this small the per-step
# overhead, not the arithmetic, is what you wait for; on a GPU it runs the same maths there.
#
# ## 5. Measuring superposition
#
# Two numbers per feature tell the story (the paper's diagnostics):
# - `‖W_i‖`: about 1 if feature `i` is represented, about 0 if it was dropped;
# - `Σ_{j≠i} (Ŵ_i · W_j)²` with `Ŵ_i = W_i/‖W_i‖`: 0 if feature `i` has a direction to
#   itself, large if other features share it. A feature with `W_i = 0` scores 0 (not NaN).
#
# ✏️ **Exercise 4.** Implement both, shape `(instances, features)`.

# %%
def feature_norms(W: Tensor) -> Tensor:
    """‖W_i‖ for each feature: (instances, hidden, features) -> (instances, features)."""
    # YOUR CODE HERE
    raise NotImplementedError("exercise: feature_norms")


def superposition_interference(W: Tensor) -> Tensor:
    """Σ_{j≠i} (Ŵ_i·W_j)²: (instances, hidden, features) -> (instances, features)."""
    # YOUR CODE HERE
    raise NotImplementedError("exercise: superposition_interference")


checks.check_feature_norms(feature_norms)
checks.check_superposition_interference(superposition_interference)

# %% [markdown]
# ## 6. Five features, two dimensions
#
# First, `n = 5` features with importance `0.9^i` in `m = 2` dimensions, at four feature
# probabilities from dense (`1 − S = 1`) to sparse (`1 − S = 0.03`). Optimisation in 2-D
# has local minima (more on them below), so each setting trains 4 seeds and we keep the one
# with the lowest loss on a large fresh batch: one model of 16 instances, 10,000 steps.

# %% tags=["nbval-ignore-output"]
densities = torch.tensor([1.0, 0.3, 0.1, 0.03])
seeds_per_setting = 4
five = ToyModel(5, 2, n_instances=len(densities) * seeds_per_setting,
                feature_probability=densities.repeat_interleave(seeds_per_setting)[:, None],
                importance=importance_decay(5, 0.9), generator=torch.Generator().manual_seed(0))
train(five, steps=10_000, description="n=5, m=2")
five_best = select_best(five, evaluate_loss(five), seeds_per_setting)

# %%
W5, b5 = five.W.detach().cpu()[five_best], five.b.detach().cpu()[five_best]


def fmt(values: Tensor) -> str:
    """A row of numbers at two decimals, stable to print and compare."""
    return "[" + ", ".join(f"{v:5.2f}" for v in values.tolist()) + "]"


for k, p in enumerate(densities.tolist()):
    norms = geometry.feature_norms(W5)[k]
    print(f"1-S = {p:<5.2f} ‖W_i‖ = {fmt(norms)}  b = {fmt(b5[k])}  represented: {int((norms > 0.5).sum())}")

# %%
titles = [f"1 - S = {p:g}" for p in densities.tolist()]
plots.plot_WtW(W5, b5, titles=titles)
plots.plot_feature_fan(W5, titles=titles, importance=five.importance.cpu()[five_best])
plt.show()

# %% [markdown]
# **Dense** (left): the model keeps the two most important features (yellow), exactly
# orthogonal, and gives the other three zero weight and a bias of 0.5, their mean: the best
# it can do without a direction. `WᵀW` is a 2×2 identity block. This is what PCA would do.
#
# **Sparser**: as features are rarely active together, the model starts to pack more
# features than dimensions, tolerating some interference (off-diagonal `WᵀW`). At
# `1 − S = 0.3` it stores four as two **antipodal pairs** (`W_j = −W_i`: the ReLU removes the
# negative interference); which of the two least important features it drops is nearly a
# tie between seeds. At `1 − S = 0.1` and `0.03` all five are stored, with **negative
# biases** that cut the remaining interference off below the ReLU.
#
# ### The pentagon and its local minima
# Now all five features equally important, `1 − S = 0.05`, and 16 seeds in one batched
# model. Optimising in 2-D has local minima, so we train several and compare their losses
# on a large fresh batch.

# %% tags=["nbval-ignore-output"]
seeds = 16
pent = ToyModel(5, 2, n_instances=seeds, feature_probability=0.05,
                generator=torch.Generator().manual_seed(0))
train(pent, steps=10_000, description="pentagon, 16 seeds")
pent_loss = evaluate_loss(pent)

# %%
Wp = pent.W.detach().cpu()
gaps = geometry.sorted_angle_gaps(Wp)
shapes = ["pentagon" if len(g) == 5 and (g - 72).abs().max() < 5 else f"{len(g)} features" for g in gaps]
best, worst = int(pent_loss.argmin()), int(pent_loss.argmax())
print(f"pentagons: {shapes.count('pentagon')} of {seeds} seeds")
for name, k in [("best", best), ("worst", worst)]:
    print(f"{name} seed {k}: loss {pent_loss[k]:.5f}, {shapes[k]}, angle gaps {fmt(gaps[k].round())}")
    print(f"    ‖W_i‖ = {fmt(geometry.feature_norms(Wp)[k])}   b = {fmt(pent.b.detach().cpu()[k])}")

# %%
plots.plot_feature_fan(Wp[[best, worst]], titles=[f"best: loss {pent_loss[best]:.5f}",
                                                  f"worst: loss {pent_loss[worst]:.5f}"])
plt.show()

# %% [markdown]
# The best seeds form a **regular pentagon**: five gaps of 72°, equal norms slightly above 1,
# and equal negative biases (about −0.25) that cut off the interference from the other four
# features. Some seeds instead settle in **two antipodal pairs with one feature left out**
# (four gaps of 90°, one short vector): a local minimum with about twice the loss. Gradient
# descent on its own cannot leave it; this is why the course always trains several seeds and
# keeps the lowest loss. The paper reports the same pentagon (feature dimensionality 2/5,
# chapter 02) and the same local minimum.

# %% [markdown]
# ## 7. Twenty features, five dimensions: linear vs ReLU
#
# The paper's central comparison: `n = 20`, `m = 5`, importance `0.7^i`, over a sweep of
# sparsities. The bars show `‖W_i‖` for every feature (most important at the top), coloured by
# `Σ_{j≠i}(Ŵ_i·W_j)²`: dark = a dimension of its own, yellow = superposed.

# %% tags=["nbval-ignore-output"]
sparsities = torch.tensor([0.0, 0.7, 0.9, 0.97, 0.99, 0.997, 0.999])
sweep = {}
for activation in ["linear", "relu"]:
    sweep[activation] = ToyModel(20, 5, n_instances=len(sparsities), activation=activation,
                                 feature_probability=(1 - sparsities)[:, None],
                                 importance=importance_decay(20, 0.7),
                                 generator=torch.Generator().manual_seed(1))
    train(sweep[activation], steps=10_000, description=f"n=20, m=5, {activation}")

# %%
for activation, model in sweep.items():
    W = model.W.detach().cpu()
    norms, interference = geometry.feature_norms(W), geometry.superposition_interference(W)
    print(f"{activation} model")
    for k, S in enumerate(sparsities.tolist()):
        kept = (norms[k] > 0.5).nonzero().flatten().tolist()
        superposed = int(((norms[k] > 0.5) & (interference[k] > 0.1)).sum())
        print(f"  S = {S:<5.3f}  {len(kept):2d} features represented, {superposed:2d} superposed: {kept}")

# %%
for activation, model in sweep.items():
    fig = plots.plot_feature_bars(model.W.detach().cpu(), titles=[f"S = {S:g}" for S in sparsities.tolist()])
    fig.suptitle(f"{activation} model", y=1.02)
plt.show()

# %% [markdown]
# The **linear** model keeps exactly the five most important features, orthogonal, at every
# sparsity: with no nonlinearity to filter interference, superposition only hurts, and the
# optimum is PCA on the importance-weighted features. The **ReLU** model matches it when
# dense, then, as features get sparser, adds features **in order of importance** and puts them
# in superposition (yellow). At `S = 0.999` the paper's model represents nearly all 20; ours
# represents a few more than ten after 10,000 steps: the last, least important features have
# tiny gradients (importance `0.7^19 ≈ 0.001`, active 0.1% of the time) and need far longer to
# train. The ordering, the transition and the linear model's behaviour match the paper.

# %% [markdown]
# ## 8. The phase diagram of the smallest model
#
# Take `n = 2` features in `m = 1` dimension. Feature 1 has importance 1, feature 2 has
# importance `r`, both are active with probability `s = 1 − S`. Three solutions compete:
#
# - **Ignore feature 2** (`W = [1, 0]`): feature 1 is perfect; the best the model can do for
#   feature 2 is a constant bias equal to its mean, costing `r · Var(x₂)`, and
#   `Var(x₂) = E[x²] − E[x]² = s/3 − s²/4`.
# - **Ignore feature 1** (`W = [0, 1]`): costs `s/3 − s²/4`.
# - **Antipodal pair** (`W = [1, −1]`, `b = 0`): `x' = (ReLU(x₁ − x₂), ReLU(x₂ − x₁))` is exact
#   when at most one feature is on. When both are on (probability `s²`) each output is off by
#   `min(x₁, x₂)`, and for two independent U[0,1] values `E[min²] = 1/6`. Cost: `(1 + r) s²/6`.
#
# The model should choose the cheapest. Setting `min(r, 1)(s/3 − s²/4) = (1 + r)s²/6` gives
# the boundary density below which superposition wins:
#
# $$s^* = \frac{\min(r,1)/3}{(1+r)/6 + \min(r,1)/4}.$$
#
# Dense features → store the more important one; sparse features → antipodal pair. We now
# train the model at 10 × 10 settings, 4 seeds each (400 instances in one model), and compare.

# %% tags=["nbval-ignore-output"]
relative_importance = torch.logspace(-1, 1, 10)
density = torch.logspace(-2, 0, 10)
diagram = train_phase_diagram(relative_importance, density, seeds=4, steps=3_000)

# %%
rr, ss = torch.meshgrid(relative_importance, density, indexing="ij")
trained_phase = geometry.classify_n2_m1(diagram.W.reshape(-1, 1, 2)).reshape(10, 10)
closed_phase = geometry.phase_closed_form(rr, ss)
agreement = (trained_phase == closed_phase).float().mean().item()
print(f"trained phase = closed-form phase in {agreement:.0%} of the 100 cells")
for phase, name in enumerate(geometry.PHASES):
    print(f"  {name:16s}: trained {int((trained_phase == phase).sum()):3d} cells, "
          f"closed form {int((closed_phase == phase).sum()):3d}")

# %%
plots.plot_phase_diagram(relative_importance, density, trained_phase, closed_phase)
plt.show()

# %% [markdown]
# The trained models fall on the predicted side of the boundary almost everywhere. The rare
# disagreements are of two kinds: cells right next to the boundary, where the costs of two
# solutions nearly tie (our closed form also fixes the antipodal pair's bias at zero, which a
# trained model need not do), and cells where all four seeds fell into a local minimum. The
# paper's "toy model of the toy model" draws the same three regions with the same shape:
# superposition wins when features are sparse, and the more so the closer their importances.

# %% [markdown]
# ## 9. Explore
#
# Move the sliders: each change retrains a 5-feature, 2-dimension ReLU model (3 seeds, best
# kept) in a few seconds and redraws `WᵀW` and the feature directions. Try: dense with decay
# 0.7 (two orthogonal features), sparse with decay 1 (pentagon), and in between.

# %% tags=["nbval-ignore-output"]
from course_utils.widgets import toy_model_explorer

toy_model_explorer()

# %% [markdown]
# ## Summary
#
# - A ReLU output lets a model store features in **superposition** when they are sparse: it
#   accepts interference because two features are rarely active together, and negative biases
#   clean up what interference there is. A linear model never does.
# - **Importance** decides which features are kept; **sparsity** decides how many.
# - Superposition organises into geometry: antipodal pairs, pentagons. Chapter 02 measures it.
# - Even the `n=2, m=1` model has a **phase change**, and a few lines of algebra predict it.
