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
# # Chapter 02 — Feature geometry and polytopes
#
# Chapter 01 saw five features settle into a pentagon in two dimensions. This chapter turns
# trained weights into **geometry**: how much of a dimension each feature gets, which
# polytopes the features form, and what bends them. It follows the "Feature geometry" and
# "Non-uniform superposition" sections of Elhage et al. (2022), *Toy Models of
# Superposition*, and ends with a scaling law from Liu, Liu & Gore (2025).
#
# **You will reproduce**
# 1. **Uniform superposition**: with many equally important features, the number of
#    *dimensions per feature* sticks at 1/2 over a range of sparsities, and each feature's
#    dimensionality `D_i` clusters on the polytope levels (the paper shows 1, 3/4, 2/3, 1/2,
#    2/5 and 3/8; our smaller sweep shows 2/3, 1/2, 2/5 and 3/8, see §2).
# 2. **Non-uniform superposition**: one feature sparser or denser than the rest deforms the
#    pentagon, and past a threshold it jumps to two antipodal pairs.
# 3. **Correlated features** prefer orthogonality; **anticorrelated** ones go antipodal.
# 4. **Learning dynamics**: `D_i` moves in discrete jumps, each one a drop in the loss.
# 5. **A scaling law**: in strong superposition the loss falls as `1/m`.
#
# **You build what the chapter runs.** Every `D_i` and `D*` below is computed by *your*
# functions, every configuration is named by *your* `recognise_polytope`, the correlated and
# anticorrelated models train on *your* batches, and the scaling law's models are trained by
# *your* training step with *your* signed weight decay. Each check returns the implementation
# the rest of the chapter uses: yours once it passes, otherwise the course's reference, and it
# says which; every result prints a `[made with]` line. Run all cells before you start: the
# chapter reaches the end with the course's code, and each exercise you solve replaces a piece
# of it with yours.
#
# | # | you build | the chapter runs it for | about |
# |---|---|---|---|
# | 1 | `feature_dimensionality`: `D_i` | every `D_i` in the chapter | 10 min |
# | 2 | `dimensions_per_feature`: `D*` | the sweeps' `D*` | 5 min |
# | 3 | `recognise_polytope` | naming every configuration | 15 min |
# | 4 | `correlated_batch`: features active together | the correlated models of §5 | 15 min |
# | 5 | `anticorrelated_batch`: at most one feature of a set | the anticorrelated models of §5 | 15 min |
# | 6 | `signed_weight_decay_` (Liu et al.) | every model of the scaling law | 10 min |
# | 7 ★ | **capstone:** `train_scaling_model`, the training step with the signed decay | strong vs weak superposition, and the check of the fast sweep | 25 min |
#
# 🔮 marks a **predict-then-see** question: write your prediction down before you run the next
# cell; the answer is folded under it.
#
# **Time:** about 2½ minutes of compute on a laptop CPU.
# Exercises are marked ✏️; each has a check, and `checks.hint("name")` helps when you are stuck.

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
import numpy as np
import torch
from torch import Tensor

from course_utils import checks, dynamics, geometry, plots, toy_models
from course_utils.device import set_seed
from course_utils.toy_models import ToyModel, evaluate_loss, generate_batch, select_best, train

torch.set_printoptions(precision=3, sci_mode=False)
set_seed(0)


def fmt(values, digits: int = 2) -> str:
    """A row of numbers at a fixed precision (stable output for the notebook tests)."""
    return " ".join(f"{float(v):.{digits}f}" for v in values)


# %% [markdown]
# ## 1. How much of a dimension does a feature get?
#
# Take a trained `W` (`hidden × features`, column `W_i` for feature `i`). The paper measures
# the share of a dimension feature `i` occupies by its **feature dimensionality**
#
# $$D_i = \frac{\lVert W_i \rVert^2}{\sum_j (\hat W_i \cdot W_j)^2}, \qquad \hat W_i = \frac{W_i}{\lVert W_i\rVert}.$$
#
# The numerator is how much the feature is represented; the denominator is how many features
# share its direction, itself included (the `j = i` term is `‖W_i‖²`). A feature with a
# dimension to itself has `D_i = 1`; each feature of an antipodal pair has `1/2`; `k`
# features arranged as a regular polytope spanning `d` dimensions each have `d/k`. A dropped
# feature (`W_i = 0`) gets `0`, never NaN.
#
# ✏️ **Exercise 1.** Implement `D_i`, batched: `(instances, hidden, features) → (instances, features)`.

# %%
def feature_dimensionality(W: Tensor) -> Tensor:
    """D_i = ‖W_i‖² / Σ_j (Ŵ_i·W_j)²: (instances, hidden, features) -> (instances, features); 0 for a zero column."""
    ### BEGIN SOLUTION
    norms = W.norm(dim=1, keepdim=True)  # (instances, 1, features)
    W_hat = W / norms.clamp_min(1e-8)
    overlaps = torch.einsum("ihf,ihg->ifg", W_hat, W)  # (instances, i, j)
    denominator = overlaps.square().sum(dim=-1)
    safe = torch.where(denominator > 0, denominator, torch.ones_like(denominator))
    return torch.where(denominator > 0, W.square().sum(dim=1) / safe, torch.zeros_like(denominator))
    ### END SOLUTION


dimensionality = checks.check_feature_dimensionality(feature_dimensionality)

# %% [markdown]
# Summing `D_i` over features gives (about) the number of dimensions the features fill, so
# a single number summarises a whole model: the paper's **dimensions per feature**
#
# $$D^* = \frac{m}{\lVert W \rVert_F^2}.$$
#
# `‖W‖_F² = Σ_i ‖W_i‖²` counts the represented features (each has `‖W_i‖ ≈ 1`), so `D^*` is the
# hidden size shared out among them: 1 when `m` features sit orthogonally, 1/2 for antipodal
# pairs.
#
# ✏️ **Exercise 2.** Implement `D^*`: `(instances, hidden, features) → (instances,)`.

# %%
def dimensions_per_feature(W: Tensor) -> Tensor:
    """m / ‖W‖_F² per instance: (instances, hidden, features) -> (instances,)."""
    ### BEGIN SOLUTION
    return W.shape[1] / W.square().sum(dim=(1, 2))
    ### END SOLUTION


per_feature = checks.check_dimensions_per_feature(dimensions_per_feature)

# %% [markdown]
# From here on the chapter measures with what the checks returned, `dimensionality` and
# `per_feature`: your functions once they pass. First on shapes built by hand: an orthonormal
# basis, an antipodal pair, and the regular triangle and pentagon.
#
# 🔮 **Predict.** What is `D_i` for each vertex of the regular triangle, and for each of the
# pentagon's five?
#
# <details><summary>Answer</summary>
#
# `d/k`: the triangle's 3 features share 2 dimensions, so `2/3 ≈ 0.667` each; the pentagon's
# 5 share 2, so `2/5 = 0.4`. A regular polygon is a *tight frame*: every feature gets the same
# share, and the shares add up to the dimensions spanned.
# </details>

# %%
def regular_polygon(k: int) -> Tensor:
    """k unit vectors at equal angles in 2-D, shape (1, 2, k)."""
    angles = torch.arange(k) * 2 * torch.pi / k
    return torch.stack([angles.cos(), angles.sin()])[None]


shapes = {"orthonormal basis": torch.eye(3)[None], "antipodal pair": torch.tensor([[[1.0, -1.0]]]),
          "triangle": regular_polygon(3), "pentagon": regular_polygon(5)}
for name, W in shapes.items():
    print(f"{name:17s}: D_i = {fmt(dimensionality(W)[0], 3)};  D* = {per_feature(W)[0]:.3f}")
print(checks.made_with(dimensionality, per_feature))

# %% [markdown]
# ## 2. Uniform superposition: the sticky 1/2 and the polytope levels
#
# The paper's headline geometry experiment: **many features of equal importance** (`n = 400`
# in `m = 30` dimensions), one model per sparsity, `1/(1-S)` swept on a log axis. Because our
# `ToyModel` carries a leading instance dimension, the whole sweep is **one model**: instance
# `k` has its own feature probability `1 - S_k`.
#
# A live sweep the size of the paper's takes too long for this notebook, so we do two things:
# - train a **small sweep** here (`n = 60`, `m = 6`, 10 sparsities, about 25 seconds);
# - load a **larger sweep** (`n = 200`, `m = 20`, 32 sparsities, 10,000 steps) trained by the
#   course script `scripts/uniform_sweep.py` in about 6 minutes. Its result ships with the
#   course; a test re-runs the script and checks that it reproduces the file.
#
# 🔮 **Predict.** As the features get sparser (left to right), does `D*` fall smoothly from 1,
# or does it stop at some value for a while? If it stops, where?
#
# <details><summary>Answer</summary>
#
# It stops: `D*` **sticks near 1/2** for a range of sparsities (here from about `1/(1-S) ≈ 2` to
# 3.6), where every represented feature sits in an antipodal pair. An antipodal pair is so
# cheap (the ReLU removes the interference of a negative overlap) that the model fills all
# its dimensions with pairs before it tries anything denser.
# </details>

# %% tags=["nbval-ignore-output"]
live_density = 1.0 / torch.logspace(0, 1.0, 10)  # 1/(1-S) from 1 to 10
live = ToyModel(60, 6, n_instances=10, feature_probability=live_density[:, None], device=device,
                generator=torch.Generator().manual_seed(0))
# the fast path: same maths, hand-derived gradients; see course_utils/_fast
live_run = train(live, steps=4_000, description="live sweep (n=60, m=6)", fast=True)

# %%
W_live = live.W.detach().cpu()
print("1/(1-S)             :", fmt(1 / live_density))
print("dimensions / feature:", fmt(per_feature(W_live)))
print(checks.made_with(per_feature), "Trained by the course's fast trainer; the plot's D_i by the course's plotting code.")
plots.plot_uniform_sweep(live_density, W_live, title="live sweep: n=60, m=6, 4,000 steps")
plt.show()

# %% [markdown]
# Already at this size `D^*` falls from 1, **sticks near 1/2** for a while, and then falls
# further: the 1/2 level is where every represented feature sits in an antipodal pair. The
# `D_i` scatter hints at levels below 1/2, but with 60 features they are thin. The larger
# sweep shows them clearly:

# %%
from importlib.resources import files

sweep = np.load(files("course_utils") / "data" / "uniform_sweep.npz")
W_sweep, sweep_density = torch.tensor(sweep["W"]), torch.tensor(sweep["density"])
print(f"committed sweep: {W_sweep.shape[0]} sparsities, n={W_sweep.shape[2]}, m={W_sweep.shape[1]}, "
      f"{int(sweep['steps'])} steps")
plots.plot_uniform_sweep(sweep_density, W_sweep, title="committed sweep: n=200, m=20, 10,000 steps")
plt.show()

# %% [markdown]
# Count the represented features (`‖W_i‖ > 0.5`) whose `D_i` lies within 0.02 of each level,
# and check the paper's last claim: when packing is efficient, `Σ_i D_i ≈ m`. Every sparsity up
# to `1/(1-S) ≈ 6`, then every fourth.

# %%
LEVELS = {"1": 1.0, "3/4": 3 / 4, "2/3": 2 / 3, "1/2": 1 / 2, "2/5": 2 / 5, "3/8": 3 / 8}
D_sweep = dimensionality(W_sweep)
represented = geometry.feature_norms(W_sweep) > 0.5
dpf_sweep = per_feature(W_sweep)
ROWS = [*range(13), *range(16, W_sweep.shape[0], 4)]
print("1/(1-S)   D*     Σ D_i  " + "  ".join(f"{k:>4s}" for k in LEVELS))
for k in ROWS:
    counts = [int((((D_sweep[k] - v).abs() < 0.02) & represented[k]).sum()) for v in LEVELS.values()]
    print(f"{1 / sweep_density[k]:7.2f}  {dpf_sweep[k]:.3f}  {D_sweep[k].sum():5.2f}  "
          + "  ".join(f"{c:4d}" for c in counts))
print(checks.made_with(dimensionality, per_feature))

# %% [markdown]
# What we measured (the project's tests assert these numbers on the committed file):
# - `D^* = 1.00` when dense, a **plateau at 1/2** for `1/(1-S)` from about 2.1 to 3.3 where
#   every represented feature is in an antipodal pair, then a steady fall.
# - Clusters at **2/3** (15 features in triangles at `1/(1-S) ≈ 1.6`), **1/2** (38 features in
#   digons on the plateau), and **2/5** and **3/8** (40 and 33 features, pentagons and square
#   antiprisms, at 4.4). `Σ_i D_i = m = 20` at every sparsity.
# - Where we differ from the paper: **no 3/4 cluster** (tetrahedra): a single feature near
#   3/4 at `1/(1-S) ≈ 1.35`, nothing more. And past `1/(1-S) ≈ 6` **no cluster at all**: every
#   represented feature belongs to one large group spanning all 20 dimensions (next section).
#   At `1/(1-S) ≈ 5.1` our sweep also has 31 features with `D_i ≈ 1/3`, a line the paper's
#   figure does not show: they belong to **one group of 35 features spanning 12
#   dimensions**, close to a tight frame, whose `D_i ≈ d/k = 12/35 ≈ 0.34`. Our model is
#   smaller than the paper's (`n = 200, m = 20` against `400, 30`) and trains for 10,000
#   steps, and at these sparsities it has not (yet) split its large groups into small
#   polytopes.
#
# ## 3. Which polytopes? Tegum products
#
# The paper explains the levels: the features split into groups that are **mutually
# orthogonal** (a *tegum product*), and inside each group they form a polytope. Each polytope
# has one `D` for all its features, `d/k` for `k` features spanning `d` dimensions:
#
# | polytope | features `k` | dimensions `d` | `D_i` |
# |---|---|---|---|
# | orthogonal | 1 | 1 | 1 |
# | digon (antipodal pair) | 2 | 1 | 1/2 |
# | triangle | 3 | 2 | 2/3 |
# | tetrahedron | 4 | 3 | 3/4 |
# | pentagon | 5 | 2 | 2/5 |
# | square antiprism | 8 | 3 | 3/8 |
#
# `geometry.tegum_factors` finds the groups (the connected components of the graph joining
# features whose directions are not orthogonal, `|cos| > 0.1`). Naming each group's polytope
# is your job.
#
# ✏️ **Exercise 3.** Given the columns of one group, `W_component` of shape `(hidden, k)`,
# return the polytope's name from the table, or `"other"`. Check the size `k`, the number of
# dimensions the group spans (count singular values above 0.2 × the largest: noise must not
# count), and that every `D_i` (computed within the group with `dimensionality`, what
# exercise 1's check returned) is within 0.05 of `d/k`.

# %%
POLYTOPES = {"orthogonal": (1, 1), "digon": (2, 1), "triangle": (3, 2), "tetrahedron": (4, 3),
             "pentagon": (5, 2), "square antiprism": (8, 3)}


def recognise_polytope(W_component: Tensor) -> str:
    """Name the polytope formed by the k columns of W_component (hidden, k), or 'other'."""
    ### BEGIN SOLUTION
    k = W_component.shape[1]
    s = torch.linalg.svdvals(W_component.double())
    rank = int((s > 0.2 * s[0]).sum()) if s[0] > 0 else 0
    D = dimensionality(W_component[None].double())[0]
    for name, (size, dims) in POLYTOPES.items():
        if k == size and rank == dims and bool(((D - dims / size).abs() <= 0.05).all()):
            return name
    return "other"
    ### END SOLUTION


recognise = checks.check_recognise_polytope(recognise_polytope)

# %% [markdown]
# `geometry.describe_configuration(W, recognise=recognise)` finds the groups of every instance
# and names each with your `recognise_polytope`; a group that is no polytope of the table is
# described by its size. Here is the committed sweep, read as tegum products:

# %%
for k in ROWS:
    description = geometry.describe_configuration(W_sweep[k : k + 1], recognise=recognise)[0]
    print(f"1/(1-S) = {1 / sweep_density[k]:6.2f}: {geometry.summarise_configuration(description, W_sweep[k])}")
print(checks.made_with(recognise))

# %% [markdown]
# Dense: no feature gets a direction of its own. With dense features of equal importance the
# best the model can do is project onto *some* 20-dimensional subspace, and nothing prefers
# one feature to another, so they all share it: one group of 166 represented features (the
# other 34 are shorter than half the longest) spanning 20 dimensions, no polytope, and still
# `D^* = 1.00`. Then triangles, all digons on the plateau, digons with a pentagon, then a
# pentagon and a square antiprism beside larger groups, and from `1/(1-S) ≈ 6` on a single
# group spanning all 20 dimensions that grows from 66 to all 200 features: as sparsity grows
# the groups get larger than our six polytopes (see the `1/3` note above).
#
# Polytopes are easier to believe when you can look at them. With `m = 3` we can draw the
# configurations in 3-D: the sweep below (12 features, 10 sparsities, best of 2 seeds, about
# 10 seconds) passes through three digons (an octahedron's axes) and the square antiprism.

# %% tags=["nbval-ignore-output"]
density_3d = 1.0 / torch.logspace(0, 1.0, 10)
seeds_3d = 2
model_3d = ToyModel(12, 3, n_instances=10 * seeds_3d, device=device,
                    feature_probability=density_3d.repeat_interleave(seeds_3d)[:, None],
                    generator=torch.Generator().manual_seed(0))
run_3d = train(model_3d, steps=3_000, description="m=3 sweep", fast=True)

# %%
best_3d = select_best(model_3d, evaluate_loss(model_3d, batch_size=20_000), seeds_3d)
W_3d = model_3d.W.detach().cpu()[best_3d]
for k in range(10):
    description = geometry.describe_configuration(W_3d[k : k + 1], recognise=recognise)[0]
    print(f"1/(1-S) = {1 / density_3d[k]:5.2f}: D* = {per_feature(W_3d[k:k + 1])[0]:.3f}, "
          f"{geometry.summarise_configuration(description, W_3d[k])}")
print(checks.made_with(per_feature, recognise), "Trained by the course's fast trainer.")

# %% [markdown]
# **Explore.** The slider picks a sparsity of this `m = 3` sweep and shows the features'
# directions in 3-D (turn the view with the azimuth and elevation sliders), their `D_i` against
# the polytope levels, and the recognised groups. Pass `W_sweep, sweep_density` instead to
# browse the big sweep's `D_i`.

# %% tags=["nbval-ignore-output"]
from course_utils.widgets import configuration_explorer

configuration_explorer(W_3d, density_3d)

# %% [markdown]
# ## 4. Non-uniform superposition: one feature out of line
#
# Back to five features in two dimensions, all of importance 1 and density `1-S = 0.05`, the
# regular pentagon of chapter 01. Now make **feature 0** sparser or denser than the others
# by a factor and watch the pentagon respond. Optimisation in 2-D has **local minima** (the
# model can get stuck with a feature half-dropped), so we train 4 seeds per setting and keep
# the lowest loss.
#
# 🔮 **Predict.** Make feature 0 **ten times sparser** than the other four. Does the pentagon
# just shrink feature 0's arrow, or does the whole configuration change? Into what?
#
# <details><summary>Answer</summary>
#
# The whole configuration changes. Feature 0 is no longer worth a direction: it is **dropped**
# (`‖W_0‖ = 0`), and the other four, no longer a pentagon, pair up into **two digons**
# (antipodal pairs at right angles, gaps of 90°). The change is a jump between two
# configurations, not a gradual squeeze.
# </details>

# %% tags=["nbval-ignore-output"]
factors = torch.tensor([0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 20.0])
seeds = 4
probability = torch.full((len(factors), 5), 0.05)
probability[:, 0] = 0.05 * factors
pentagon_model = ToyModel(5, 2, n_instances=len(factors) * seeds, device=device,
                          feature_probability=probability.repeat_interleave(seeds, 0),
                          generator=torch.Generator().manual_seed(0))
pentagon_run = train(pentagon_model, steps=10_000, description="non-uniform pentagon", fast=True)

# %%
best = select_best(pentagon_model, evaluate_loss(pentagon_model), seeds)
W_pent = pentagon_model.W.detach().cpu()[best]
titles = [f"feature 0 × {f:g}" for f in factors.tolist()]
for title, W, description in zip(titles, W_pent, geometry.describe_configuration(W_pent, recognise=recognise)):
    print(f"{title:16s}: ‖W_0‖ = {W[:, 0].norm():.2f}, angle gaps {fmt(geometry.sorted_angle_gaps(W[None])[0], 0)}"
          f"  -> {geometry.summarise_configuration(description, W)}")
print(checks.made_with(recognise), "Trained by the course's fast trainer.")
plots.plot_feature_fan(W_pent, titles=titles, importance=probability[:, :].log())
plt.show()

# %% [markdown]
# (Colour: each feature's density, yellow = densest.) With the odd feature **10× or 5×
# sparser** it is not worth a direction: it drops to zero and the other four form **two
# digons**, the configuration with `D_i = 1/2` — a sudden jump, not a gradual squeeze. At
# equal density we get the regular pentagon (gaps of 72°). A **denser** feature keeps its
# place but the pentagon deforms: the gaps beside the dense feature widen, because it
# interferes more often with its neighbours. The paper shows the same picture. In our runs
# the modest factors (× 0.5, × 2) bend the pentagon only slightly, and for some settings
# (e.g. × 3 and × 10, not shown) the best of 4 seeds was still a local minimum with another
# feature half-dropped: try a few factors in the widget of chapter 01 to see how fragile 2-D
# optimisation is.
#
# ## 5. Correlated and anticorrelated features
#
# So far every feature was independent. Real features are not: some tend to appear together
# (correlated), some exclude each other (anticorrelated). The paper's rules for the data:
# the features of a **correlated set** are zero or nonzero *together* (one draw decides, the
# values stay independent); in an **anticorrelated set** at most one feature is nonzero at a
# time. Each feature keeps its own probability `p_i` of being nonzero.
#
# ✏️ **Exercise 4.** Write `correlated_batch(feature_probability, batch_size, sets, generator)`:
# like chapter 01's batches (`generate_batch` is imported: use it for the features in no set),
# but for each set in `sets` (a list of lists of feature indices, e.g. `[[0, 1], [2, 3]]`)
# **one** random number per instance and sample decides whether the whole set is active, with
# the probability of the set's first feature (a correlated set shares one); each active
# feature still draws its own `U[0, 1]` value. Returns `(instances, batch_size, features)`.
# Pass `generator=generator` to every `torch.rand`.

# %%
def correlated_batch(feature_probability: Tensor, batch_size: int, sets: list[list[int]],
                     generator: torch.Generator | None = None) -> Tensor:
    """(instances, batch_size, features): the features of each set are zero or nonzero together."""
    ### BEGIN SOLUTION
    p = feature_probability
    x = generate_batch(p, batch_size, generator)
    for members in sets:
        active = torch.rand(p.shape[0], batch_size, 1, generator=generator, device=p.device) < p[:, None, members[:1]]
        values = torch.rand(p.shape[0], batch_size, len(members), generator=generator, device=p.device)
        x[:, :, members] = values * active
    return x
    ### END SOLUTION


correlated = checks.check_correlated_batch(correlated_batch)

# %% [markdown]
# ✏️ **Exercise 5.** Write `anticorrelated_batch(feature_probability, batch_size, sets, generator)`:
# in each set **at most one** feature is nonzero, and feature `i` of the set is still nonzero
# with its own probability `p_i` (so the set is active with probability `Σ p_i`, which the
# data keep at most 1). One uniform `u` per instance, sample and set picks the active member:
# cut `[0, 1)` into consecutive pieces of lengths `p_a, p_b, …`; the member whose piece holds
# `u` is active, and none when `u` lies past the last piece.

# %%
def anticorrelated_batch(feature_probability: Tensor, batch_size: int, sets: list[list[int]],
                         generator: torch.Generator | None = None) -> Tensor:
    """(instances, batch_size, features): at most one feature of each set is nonzero."""
    ### BEGIN SOLUTION
    p = feature_probability
    x = generate_batch(p, batch_size, generator)
    for members in sets:
        upper = p[:, members].cumsum(dim=1)[:, None, :]  # (instances, 1, k)
        lower = upper - p[:, None, members]
        u = torch.rand(p.shape[0], batch_size, 1, generator=generator, device=p.device)
        values = torch.rand(p.shape[0], batch_size, len(members), generator=generator, device=p.device)
        x[:, :, members] = values * ((u >= lower) & (u < upper))
    return x
    ### END SOLUTION


anticorrelated = checks.check_anticorrelated_batch(anticorrelated_batch)

# %% [markdown]
# Now the models train on **your** batches: `ToyModel(..., batch_fn=...)` draws every batch with
# the function it is given, and the course's fast trainer (`train(..., fast=True)`, as in chapter 01)
# calls it at every step instead of its own sampler. We train four of the paper's
# experiments, best of several seeds each (the 2-D landscapes have local minima here too),
# 3,000 steps at learning rate 3e-3, about 40 seconds in all.

# %% tags=["nbval-ignore-output"]
def train_best(n, m, probabilities, seeds, batch_fn, sets, name):
    """Best of `seeds` instances per probability (all features at that p), trained on
    batch_fn(p, batch_size, sets, generator): W (len(probabilities), m, n)."""
    p = torch.tensor(probabilities)[:, None].expand(-1, n).repeat_interleave(seeds, 0)
    model = ToyModel(n, m, p.shape[0], feature_probability=p, device=device,
                     generator=torch.Generator().manual_seed(0),
                     batch_fn=lambda prob, size, gen: batch_fn(prob, size, sets, gen))
    train(model, steps=3_000, lr=3e-3, description=f"n={n}, m={m}, {name}", fast=True)
    best = select_best(model, evaluate_loss(model, batch_size=100_000), seeds)
    return model.W.detach().cpu()[best]


W_corr = train_best(4, 2, [0.05, 0.5], 2, correlated, [[0, 1], [2, 3]], "correlated")
W_anti = train_best(4, 2, [0.05, 0.45], 6, anticorrelated, [[0, 1], [2, 3]], "anticorrelated")
W_three = train_best(6, 2, [0.01, 0.1, 0.2, 0.5], 8, correlated, [[0, 1], [2, 3], [4, 5]], "correlated")
W_local = train_best(20, 10, [0.02], 1, correlated, [list(range(10)), list(range(10, 20))], "correlated")

# %% [markdown]
# **Two correlated pairs, two anticorrelated pairs** (`n = 4, m = 2`). The cosine between
# the partners of each pair tells the story: 0 is orthogonal, −1 antipodal, +1 the same
# direction.
#
# 🔮 **Predict.** Sparse features (`p = 0.05`), two dimensions, four features in two pairs.
# Where does each feature's **partner** go: the same direction, orthogonal, or antipodal, when
# the pairs are correlated? And when they are anticorrelated?
#
# <details><summary>Answer</summary>
#
# **Correlated** partners sit **orthogonally** (cosine 0): they are often active together, and
# only orthogonal directions do not interfere then; each feature is antipodal to one of the
# *other* pair instead. **Anticorrelated** partners go **antipodal** (cosine −1): they are never
# active together, so a negative overlap costs nothing after the ReLU.
# </details>

# %%
cos_corr, cos_anti = geometry.feature_cosines(W_corr), geometry.feature_cosines(W_anti)
for label, W, cos in [("correlated, p = 0.05", W_corr[0], cos_corr[0]), ("correlated, p = 0.5 ", W_corr[1], cos_corr[1]),
                      ("anticorrelated, p = 0.05", W_anti[0], cos_anti[0]), ("anticorrelated, p = 0.45", W_anti[1], cos_anti[1])]:
    print(f"{label:25s}: cos(partners) = {cos[0, 1]:+.2f}, {cos[2, 3]:+.2f};  "
          f"‖W_i‖ = {fmt(W.norm(dim=0))}")
pair_colour = torch.tensor([0.0, 0.0, 1.0, 1.0])
plots.plot_feature_fan(torch.cat([W_corr, W_anti]), importance=pair_colour,
                       titles=["correlated, p=0.05", "correlated, p=0.5", "anticorr., p=0.05", "anticorr., p=0.45"])
plt.show()
print(checks.made_with(correlated, anticorrelated), "Trained by the course's fast trainer.")

# %% [markdown]
# (Colour: the pair.) **Correlated** features that are sparse sit **orthogonally** to their
# partner: both are often active together, and orthogonal directions do not interfere, so
# the model superposes each feature with one of the *other* pair instead (antipodally). When
# dense there is no room: each pair **collapses onto its principal component**, both
# features along one direction with norms near `1/√2`, as linear PCA would store
# `(x_a + x_b)/√2`. **Anticorrelated** partners go **antipodal**: they never occur together,
# so the ReLU removes all their interference and the loss is essentially zero.
#
# **Local orthogonal bases.** With 20 features in two correlated sets of 10, in `m = 10`:

# %%
cos_local = geometry.feature_cosines(W_local)[0]
off = ~torch.eye(10, dtype=torch.bool)
within = torch.cat([cos_local[:10, :10][off], cos_local[10:, 10:][off]]).abs()
print(f"features per dimension 1/D* = {1 / geometry.dimensions_per_feature(W_local)[0]:.2f}; "
      f"|cos| within a set: max {within.max():.2f}; between the sets: mean {cos_local[:10, 10:].abs().mean():.2f}, "
      f"max {cos_local[:10, 10:].abs().max():.2f}")
print(checks.made_with(correlated, per_feature), "Trained by the course's fast trainer.")

# %% [markdown]
# The model is in superposition as a whole (two features per dimension), yet each set on its
# own is an orthogonal basis: all the interference is between features that rarely co-occur.
#
# **Three correlated pairs in two dimensions**, at four densities:

# %%
pairs = [(0, 1), (2, 3), (4, 5)]
cos_three = geometry.feature_cosines(W_three)
for k, p in enumerate([0.01, 0.1, 0.2, 0.5]):
    partners = torch.stack([cos_three[k, a, b] for a, b in pairs])
    print(f"p = {p:<4}: cos(partners) = {fmt(partners)}  -> {int((partners > 0.99).sum())} of 3 pairs collapsed;"
          f"  ‖W_i‖ = {fmt(W_three[k].norm(dim=0))}")
plots.plot_feature_fan(W_three, importance=torch.tensor([0.0, 0.0, 1.0, 1.0, 2.0, 2.0]),
                       titles=[f"p = {p}" for p in [0.01, 0.1, 0.2, 0.5]])
plt.show()
print(checks.made_with(correlated), "Trained by the course's fast trainer.")

# %% [markdown]
# Very sparse, the six features form a **hexagon** with partners side by side (the paper's
# picture), partners a little further apart (about 65°) than a regular hexagon's 60°. As
# density grows the pairs **collapse one at a time** onto their principal components: none,
# one, two, then all three (a triangle of collapsed pairs). The paper saw the same sequence;
# its thresholds differ a little from ours (all three collapse by `p = 0.25` there, between
# 0.3 and 0.4 here). Two more differences we measured: with 8 seeds per setting about half
# of the sparsest runs fall into a one-collapsed local minimum (which the paper also calls an
# optimisation failure), and six *independent* features at `p = 0.02` do form a regular
# hexagon in our runs, which the paper says they do not.
#
# ## 6. Learning dynamics: jumps between the levels
#
# The paper also watched `D_i` **during training**: features do not slide smoothly into
# place; they sit on one level, then jump to another, and each jump is a drop in the loss.
# We train 16 seeds of the pentagon model and keep a snapshot of `W` and `b` every 50 steps
# (`train(..., snapshot_every=50, fast=True)`), then measure every snapshot on one fixed batch of
# 20,000 samples (the training loss, drawn fresh each step, is too noisy to show small
# steps).

# %% tags=["nbval-ignore-output"]
dyn_model = ToyModel(5, 2, n_instances=16, feature_probability=0.05, device=device,
                     generator=torch.Generator().manual_seed(0))
dyn_run = train(dyn_model, steps=10_000, snapshot_every=50, description="learning dynamics", fast=True)

# %%
D_dyn = dynamics.dimensionality_history(dyn_run)  # (snapshots, instances, features)
loss_dyn = dynamics.loss_history(dyn_model, dyn_run)  # (snapshots, instances)
jumps = dynamics.transitions(D_dyn, loss_dyn, dyn_run.snapshot_steps, min_jump=0.05, skip=4)
print(f"{len(jumps)} intervals of 50 steps in which some D_i moved by more than 0.05 (after step 200):")
for t in jumps:
    print(f"  seed {t.instance:2d}, step {t.step:5d}: largest |ΔD_i| = {t.largest_D_change:.2f}, "
          f"loss changed by {t.loss_change:+.0%}")
dD = (D_dyn[1:] - D_dyn[:-1]).abs().amax(dim=-1)[4:]
dL = ((loss_dyn[1:] - loss_dyn[:-1]) / loss_dyn[:-1])[4:]
print(f"intervals where no D_i moved by more than 0.01: median |loss change| = {dL[dD < 0.01].abs().median():.2%}")

# %% [markdown]
# Every jump in the geometry comes with a loss drop of several percent in the same 50 steps,
# while the quiet intervals barely move the loss. Seed 3 is the clearest case: it sits in the
# **two-digon** configuration, one feature dropped, for about 8,000 steps on a flat loss;
# then the dropped feature grows, the four others make room, and within a few hundred steps
# the model is a **pentagon** with half the loss.

# %%
seed = 3
W_dyn, steps_dyn = dyn_run.W_history(), dyn_run.snapshot_steps
for k in (min(40, len(steps_dyn) - 1), -1):  # step 2,000 and the end (fewer snapshots in a smoke run)
    print(f"configuration at step {steps_dyn[k]:<6,}:", geometry.summarise_configuration(
        geometry.describe_configuration(W_dyn[k, seed : seed + 1], recognise=recognise)[0]))
print(f"loss on the plateau {loss_dyn[min(100, len(loss_dyn) - 1), seed]:.5f}, at the end {loss_dyn[-1, seed]:.5f}")
print(checks.made_with(recognise), "Trained by the course's fast trainer.")
plots.plot_dynamics(dyn_run.snapshot_steps, D_dyn[:, seed], loss_dyn[:, seed],
                    title=f"seed {seed}: two digons, then a pentagon")
plt.show()

# %% [markdown]
# **Explore.** Scrub through training (or press play) to watch seed 3's features move.
# Change `seed` above to look at the other runs.

# %% tags=["nbval-ignore-output"]
from course_utils.widgets import dynamics_scrubber

dynamics_scrubber(dyn_run.snapshot_steps, dyn_run.W_history()[:, seed], D_dyn[:, seed], loss_dyn[:, seed])

# %% [markdown]
# ## 7. Interference sets a scaling law
#
# Why does superposition matter beyond pretty shapes? Liu, Liu & Gore (2025), *Superposition
# yields robust neural scaling*, argue it explains why bigger models have lower loss. Start
# with a fact about random directions: `n` random unit vectors in `m` dimensions overlap, and
# the mean squared overlap `(v_i · v_j)²` is exactly `1/m` on average.

# %%
from course_utils import scaling

for m in (8, 32, 128):
    measured = scaling.random_mean_squared_overlap(2_000, m, generator=torch.Generator().manual_seed(0))
    print(f"m = {m:3d}: mean squared overlap of 2,000 random unit vectors {measured.item():.4f}, 1/m = {1 / m:.4f}")

# %% [markdown]
# If a model stores *all* its features, each one in its own direction, then the error it
# makes is interference, and interference falls as `1/m`: the loss should scale as `1/m`
# whatever the data. If it stores only the `m` most frequent features (weak superposition),
# the loss is what the dropped ones cost, and that depends on how frequent they are.
#
# The paper's setup, scaled down (the library's docstring lists every difference):
# `n = 512` features with **power-law frequencies** `p_i ∝ i^-(1+α)` at `α = 0.25` (one active
# feature per sample on average; values `U(0, 2)`), plain MSE, the same ReLU toy model, and a
# **signed weight decay** `γ`. Positive `γ` is ordinary decay, which lets rare features die
# (weak superposition). Negative `γ` is not "negative decay" (that would blow `W` up); it pulls
# every feature's norm towards one, `W_i ← W_i − η|γ|(1 − 1/‖W_i‖) W_i`, so every feature is
# kept (strong superposition). We use `α < 1` on purpose: at `α = 1` the weak regime's law is
# `m^-1` too, and the two regimes cannot be told apart.
#
# ✏️ **Exercise 6.** Write the paper's signed weight decay, **in place**: `W` is
# `(instances, hidden, features)`, `weight_decay` holds one `γ` per instance. For `γ ≥ 0`,
# `W ← (1 − lr·γ) W`; for `γ < 0`, every feature column `W_i = W[k, :, i]` becomes
# `W_i − lr·|γ|(1 − 1/‖W_i‖) W_i` (add `1e-8` to the norm, so a zero column stays zero).
# Return `W`. The training loop calls it on a parameter that requires grad, so work under
# `torch.no_grad()`.

# %%
def signed_weight_decay_(W: Tensor, weight_decay: Tensor, lr: float) -> Tensor:
    """Per instance: γ ≥ 0 plain decay (1 − lr·γ)W; γ < 0 pulls each column's norm towards one. In place; returns W."""
    ### BEGIN SOLUTION
    with torch.no_grad():
        gamma = weight_decay.reshape(-1, 1, 1).to(W.dtype)
        norms = W.norm(dim=1, keepdim=True) + 1e-8  # (instances, 1, features)
        factor = torch.where(gamma < 0, 1 + lr * gamma * (1 - 1 / norms), 1 - lr * gamma)
        return W.mul_(factor)
    ### END SOLUTION


decay_ = checks.check_signed_weight_decay_(signed_weight_decay_)

# %% [markdown]
# ✏️ **Exercise 7 (capstone).** Write the training loop the paper's models learn with:
# `train_scaling_model(W, b, feature_probability, weight_decay, decay, steps, batch_size, lr, seed)`
# trains the leaf tensors `W` `(instances, hidden, features)` and `b` `(instances, features)` in
# place and returns every step's per-instance loss, `(steps, instances)`. Per step:
#
# 1. the learning rate `lr * scaling.lr_multiplier(step, steps)` (10% warm-up, then cosine),
#    set on the optimiser (one `torch.optim.Adam([W, b])` made before the loop);
# 2. a fresh batch `scaling.sample_batch(feature_probability, batch_size, generator)` from one
#    `torch.Generator().manual_seed(seed)` made before the loop (power-law features, values
#    `U(0, 2)`), and the per-instance loss `scaling.scaling_loss(W, b, x)`;
# 3. `zero_grad`, `backward` on the summed loss, then **the decay on `W` at this step's learning
#    rate**, `decay(W, weight_decay, current_lr)`, and only then the Adam step: the decay is
#    *decoupled*, it acts on the weights, not on the gradient. `decay` is an argument: the
#    chapter passes `decay_`, what exercise 6's check returned.
#
# Show a progress bar (`tqdm(range(steps), disable=not progress)`).

# %%
from tqdm.auto import tqdm


def train_scaling_model(W: Tensor, b: Tensor, feature_probability: Tensor, weight_decay: Tensor, decay,
                        steps: int = 1000, batch_size: int = 512, lr: float = 3e-2, seed: int = 0,
                        progress: bool = True) -> Tensor:
    """Adam + signed weight decay on W and b, in place; returns the loss of every step, (steps, instances)."""
    ### BEGIN SOLUTION
    optimizer = torch.optim.Adam([W, b], lr=lr)
    generator = torch.Generator().manual_seed(seed)
    losses = torch.zeros(steps, W.shape[0])
    for step in tqdm(range(steps), desc="training", disable=not progress, mininterval=0.5):
        current_lr = lr * scaling.lr_multiplier(step, steps)
        for group in optimizer.param_groups:
            group["lr"] = current_lr
        x = scaling.sample_batch(feature_probability, batch_size, generator)
        loss = scaling.scaling_loss(W, b, x)
        optimizer.zero_grad()
        loss.sum().backward()
        decay(W, weight_decay, current_lr)
        optimizer.step()
        losses[step] = loss.detach()
    return losses
    ### END SOLUTION


train_scaling = checks.check_train_scaling_model(train_scaling_model)

# %% [markdown]
# **Your loop, one width.** Two models of width `m = 16` on the same `n = 512` power-law
# features, one with `γ = −1`, one with `γ = +0.1`, 1,000 steps each (about 10 seconds).
#
# 🔮 **Predict.** After training, how many of the 512 features does each model represent
# (`‖W_i‖ > 0.5`): all of them, about `m = 16`, or none?
#
# <details><summary>Answer</summary>
#
# With `γ = −1` **all 512**: the decay pulls every norm to one, so every feature is kept and 512
# directions overlap in 16 dimensions (strong superposition). With `γ = +0.1` only **14**,
# fewer than `m`: ordinary decay lets the rare features die, and the model keeps about as many
# as it has dimensions (weak superposition). Its loss is the higher one here: at this width
# the dropped features cost more than the interference of all 512.
# </details>

# %% tags=["nbval-ignore-output"]
n_scaling, alpha = 512, 0.25
p_scaling = scaling.power_law_probability(n_scaling, alpha)
gammas = torch.tensor([-1.0, 0.1])
W16, b16 = scaling.init_parameters(n_scaling, 16, 2, generator=torch.Generator().manual_seed(0))
W16.requires_grad_(), b16.requires_grad_()
losses16 = train_scaling(W16, b16, p_scaling, gammas, decay_, steps=1000, batch_size=512, lr=3e-2, seed=0)

# %%
loss16 = scaling.evaluate_loss(W16.detach(), b16.detach(), p_scaling)
for k, gamma in enumerate(gammas.tolist()):
    kept = int((W16[k].detach().norm(dim=0) > 0.5).sum())
    print(f"γ = {gamma:+.1f}: {kept} of {n_scaling} features represented, loss {loss16[k]:.2e}")
print(checks.made_with(train_scaling, decay_))

# %% [markdown]
# **The fast path, shown equal.** A sweep over widths trains ten such models, which your loop
# would take about a minute for; the course's `scaling.train_scaling_models(..., fast=True)` computes
# the same step with sparse hand-derived gradients (a batch has one active feature per row on average).
# Given the same batches (`sampler="torch"`, your loop's stream) and **your** decay, it takes
# the same steps as your loop: 200 steps at `m = 8`, both ways.

# %% tags=["nbval-approx-0.000001"]
W8, b8 = scaling.init_parameters(n_scaling, 8, 2, generator=torch.Generator().manual_seed(0))
W8.requires_grad_(), b8.requires_grad_()
yours = train_scaling(W8, b8, p_scaling, gammas, decay_, steps=200, batch_size=512, lr=3e-2, seed=0, progress=False)
params_fast, history_fast, _ = scaling.train_scaling_models(n_scaling, [8], gammas.tolist(), alpha, steps=200,
                                                            sampler="torch", decay=decay_, log_every=1, progress=False,
                                                            fast=True)
print(f"largest difference over 200 steps: loss {(history_fast[:, :, 0] - yours).abs().max():.1e}, "
      f"W {(params_fast[0][0] - W8.detach()).abs().max():.1e}")
print(checks.made_with(train_scaling, decay_))

# %% [markdown]
# Now the sweep: `m = 8 … 32` for `γ = −1` and `γ = +0.1`, trained by the fast path (`fast=True`) with your
# `signed_weight_decay_` (about 12 seconds).
#
# 🔮 **Predict.** On log-log axes, the loss against `m` is a straight line of slope `k`
# (`L ∝ m^k`). What `k` do you expect in the strong regime? Will the weak regime's line be
# steeper or shallower?
#
# <details><summary>Answer</summary>
#
# Strong: **`k ≈ −1`**, the `1/m` of interference (we measure −0.90). Weak: **shallower**
# (−0.49), close to the prediction for storing the top `m` features exactly (−0.42 here), not
# to `1/m`.
# </details>

# %% tags=["nbval-ignore-output"]
scaling_run = scaling.scaling_sweep(decay=decay_, fast=True)

# %%
print(scaling_run.summary())
print("mean squared overlap of the represented features, strong regime:",
      fmt(scaling_run.overlap[0], 4), "| 1/m:", fmt([1 / m for m in scaling_run.n_hidden], 4))
plots.plot_scaling(scaling_run.n_hidden, scaling_run.loss, ["strong (γ = −1)", "weak (γ = +0.1)"],
                   weak_theory=scaling_run.weak_theory, title=f"n = 512, α = {scaling_run.alpha:g}")
plt.show()
print(checks.made_with(decay_), "Trained by the course's fast trainer.")

# %% [markdown]
# In the **strong** regime every feature is represented (`represented / m = n/m`) and the
# loss falls with a slope close to `−1`: the `1/m` of interference. In the **weak** regime
# only about `m` features survive and the loss falls much more slowly, close to the
# prediction of storing the top `m` features exactly (the dotted line, slope about −0.4;
# `m^-α` = `m^-0.25` for infinitely many features, steeper here because `n` is finite).
#
# Compared with the paper: it trains `n = 1000` features for 20,000 steps of batch 2048 at
# `m` up to 100 and reports slopes near −1 (strong) and near `−α` (weak). Our 1,000-step run
# gives −0.90 and −0.49 with this seed; across 6 seeds the strong slope ranged from −1.03 to
# −0.88 and the weak one from −0.54 to −0.32 (`benchmarks/results/scaling.json`). A
# longer run (`scaling.scaling_sweep(n_features=1024, steps=4000, fast=True, ...)`) gets closer.
#
# ## Summary
#
# - `D_i = ‖W_i‖² / Σ_j (Ŵ_i·W_j)²` measures the share of a dimension feature `i` gets;
#   `D^* = m / ‖W‖_F²` summarises a model. Uniform superposition makes them take
#   **discrete values**: `D^*` sticks at 1/2, and `D_i` lands on the polytope levels.
# - Configurations are **tegum products**: orthogonal groups, each a polytope.
# - Geometry responds to the data: a feature much sparser than its neighbours is dropped
#   (pentagon → two digons), a denser one deforms the pentagon; correlated features avoid
#   each other, anticorrelated features pair up.
# - Training moves between these configurations in **jumps**, each a drop in the loss.
# - Superposition sets how loss scales with width: interference among many features falls
#   as `1/m`.
