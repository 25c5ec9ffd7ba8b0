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
# 4. The paper's split of the loss into **feature benefit** and **interference**, and what the
#    ReLU and its negative bias buy.
#
# **You build what the chapter runs.** Every model below is *your* `ToyModel`, trained by *your*
# `train_model`, on *your* batches, and measured with *your* functions. Each exercise has a check
# that tells you *what* is wrong without giving the answer (`checks.hint("name")` when you are
# stuck). The check returns the implementation the rest of the chapter uses: yours once it
# passes, otherwise the course's reference, and it says which. Every result prints a
# `[made with]` line, so you always know whose code produced it. Run all cells before you
# start: the chapter reaches the end with the course's code, and each exercise you solve
# replaces a piece of it with yours.
#
# | # | you build | the chapter runs it for | about |
# |---|---|---|---|
# | 1 | `toy_forward`: the model's forward pass | every model | 5 min |
# | 2 | `generate_batch`: sparse features | every training batch | 10 min |
# | 3 | `importance_weighted_loss` | the training objective | 5 min |
# | 4 ★ | **capstone:** the `ToyModel` class (Xavier initialisation, forward, batches, loss) | every model in §6–8 | 20 min |
# | 5 ★ | **capstone:** `train_model`, the training loop (Adam, schedule, progress bar) | the pentagon and the `n=20` sweep | 20 min |
# | 6 | `feature_norms`, `superposition_interference` | every table of what is stored | 10 min |
# | 7 | `phase_losses`: the `n=2, m=1` closed form | the phase diagram's boundary | 20 min |
# | 8 | `one_sparse_terms`: feature benefit and interference | what the bias buys | 15 min |
#
# 🔮 marks a **predict-then-see** question: write your prediction down before you run the next
# cell; the answer is folded under it.
#
# **Time:** about 2½ minutes of compute on a laptop CPU (seconds on a GPU).

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

from torch import nn

from course_utils import checks, geometry, plots, toy_models
from course_utils.device import set_seed
from course_utils.toy_models import evaluate_loss, importance_decay, lr_schedule, per_instance, select_best

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


forward = checks.check_toy_forward(toy_forward)

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


make_batch = checks.check_generate_batch(generate_batch)

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


weighted_loss = checks.check_importance_weighted_loss(importance_weighted_loss)

# %% [markdown]
# ## 4. ★ Capstone, part 1: the model as a class
#
# Now assemble the pieces into the paper's model. `ToyModel` holds the parameters and knows
# its data:
#
# - `W`, shape `(instances, hidden, features)`, **Xavier-normal** for each instance: entries
#   drawn from `N(0, σ²)` with `σ = √(2 / (n_hidden + n_features))`, from the `generator` it is
#   given (so that a seed fixes the model), on `device`;
# - `b`, shape `(instances, features)`, starting at zero; both `nn.Parameter`s;
# - `feature_probability` and `importance`, each given as a number, one value per feature,
#   per instance, or per instance and feature: `per_instance(value, n_instances, n_features)`
#   broadcasts any of these to `(instances, features)`; keep them with `register_buffer` so
#   that they follow the model to its device;
# - `forward(x)`, `loss(x)` (one loss per instance) and `generate_batch(batch_size,
#   generator)`, built from **`forward`, `weighted_loss` and `make_batch`**: the
#   implementations your checks above returned (yours where they passed).
#
# Keep `n_features`, `n_hidden`, `n_instances` and `activation` as attributes: the course's
# tools read them. One trap: `nn.init.xavier_normal_` on a 3-D tensor takes its fans from the
# wrong axes.

# %%
class ToyModel(nn.Module):
    """x' = act(Wᵀ W x + b) for n_instances independent models trained together."""

    def __init__(self, n_features: int, n_hidden: int, n_instances: int = 1, activation: str = "relu",
                 feature_probability=1.0, importance=1.0, device="cpu", generator=None):
        super().__init__()
        # YOUR CODE HERE
        raise NotImplementedError("exercise: ToyModel.__init__")

    def forward(self, x: Tensor) -> Tensor:
        """(instances, batch, features) -> (instances, batch, features)."""
        # YOUR CODE HERE
        raise NotImplementedError("exercise: ToyModel.forward")

    def loss(self, x: Tensor) -> Tensor:
        """The importance-weighted loss of the model's output on x, shape (instances,)."""
        # YOUR CODE HERE
        raise NotImplementedError("exercise: ToyModel.loss")

    def generate_batch(self, batch_size: int, generator=None) -> Tensor:
        """A fresh batch from the model's feature probabilities, (instances, batch_size, features)."""
        # YOUR CODE HERE
        raise NotImplementedError("exercise: ToyModel.generate_batch")


Model = checks.check_toy_model(ToyModel)

# %% [markdown]
# ## 5. ★ Capstone, part 2: the training loop
#
# The paper's recipe: **Adam**, learning rate `1e-3`, a **fresh batch of 1024 every step**, all
# instances at once. Write it:
#
# - one `torch.optim.Adam` over `model.parameters()`;
# - at step `t`, the learning rate `lr * lr_schedule(schedule)(t, steps)` (`"constant"`,
#   `"cosine"` or `"linear"`), set on every `optimizer.param_groups` entry;
# - the batches from **one** generator made before the loop,
#   `torch.Generator(device=model.W.device).manual_seed(seed)`, drawn with
#   `model.generate_batch(batch_size, generator)`;
# - `model.loss(x)` gives one loss per instance: **sum** them before `backward()`, so that each
#   instance trains on its own loss (no parameter is shared);
# - a progress bar (`tqdm(range(steps), desc=description, disable=not progress)`);
# - return every step's per-instance loss, detached, as a tensor `(steps, instances)`: make it
#   before the loop (`torch.zeros(steps, model.n_instances, device=...)`) and fill row `step`.
#   (Appending 10,000 small tensors to a list looks harmless, but each one pins a hole in
#   glibc's heap the size of a batch: on Linux that loop ends at 3 GB instead of 0.3 GB, more
#   than Binder allows.)
#
# The check trains a small model with your loop and with the course's for 150 steps from one
# seed; the losses must agree step by step.

# %%
from tqdm.auto import tqdm


def train_model(model: nn.Module, steps: int = 10_000, batch_size: int = 1024, lr: float = 1e-3,
                schedule: str = "constant", seed: int = 0, description: str = "training",
                progress: bool = True) -> Tensor:
    """Train every instance of `model` with Adam on fresh batches; returns (steps, instances) losses."""
    # YOUR CODE HERE
    raise NotImplementedError("exercise: train_model")


train_fn = checks.check_train_model(train_model)

# %% [markdown]
# ## 6. Measuring superposition
#
# Two numbers per feature tell the story (the paper's diagnostics):
# - `‖W_i‖`: about 1 if feature `i` is represented, about 0 if it was dropped;
# - `Σ_{j≠i} (Ŵ_i · W_j)²` with `Ŵ_i = W_i/‖W_i‖`: 0 if feature `i` has a direction to
#   itself, large if other features share it. A feature with `W_i = 0` scores 0 (not NaN).
#
# ✏️ **Exercise 6.** Implement both, shape `(instances, features)`. The tables below use them.

# %%
def feature_norms(W: Tensor) -> Tensor:
    """‖W_i‖ for each feature: (instances, hidden, features) -> (instances, features)."""
    # YOUR CODE HERE
    raise NotImplementedError("exercise: feature_norms")


def superposition_interference(W: Tensor) -> Tensor:
    """Σ_{j≠i} (Ŵ_i·W_j)²: (instances, hidden, features) -> (instances, features)."""
    # YOUR CODE HERE
    raise NotImplementedError("exercise: superposition_interference")


norms_fn = checks.check_feature_norms(feature_norms)
interference_fn = checks.check_superposition_interference(superposition_interference)

# %% [markdown]
# ## 7. Five features, two dimensions
#
# First, `n = 5` features with importance `0.9^i` in `m = 2` dimensions, at four feature
# probabilities from dense (`1 − S = 1`) to sparse (`1 − S = 0.03`). Optimisation in 2-D
# has local minima (more on them below), so each setting trains 4 seeds and we keep the one
# with the lowest loss on a large fresh batch: one model of 16 instances, 10,000 steps, built
# by your `ToyModel` and trained by your `train_model`.
#
# 🔮 **Predict.** With **dense** features (`1 − S = 1`), how many of the five features will the
# model represent (`‖W_i‖ > 0.5`), which ones, and at what angle to each other?
#
# <details><summary>Answer</summary>
#
# Two: the two most important, at 90°. When every feature is on all the time, any two
# features sharing a direction interfere on every input, and the ReLU cannot filter that out;
# the best use of two dimensions is to store the two features that matter most, exactly, and
# to give the other three a bias equal to their mean (0.5). This is PCA on the
# importance-weighted features.
# </details>

# %% tags=["nbval-ignore-output"]
densities = torch.tensor([1.0, 0.3, 0.1, 0.03])
seeds_per_setting = 4
five = Model(5, 2, n_instances=len(densities) * seeds_per_setting,
             feature_probability=densities.repeat_interleave(seeds_per_setting)[:, None],
             importance=importance_decay(5, 0.9), device=device, generator=torch.Generator().manual_seed(0))
train_fn(five, steps=10_000, description="n=5, m=2")
five_best = select_best(five, evaluate_loss(five), seeds_per_setting)

# %%
W5, b5 = five.W.detach().cpu()[five_best], five.b.detach().cpu()[five_best]


def fmt(values: Tensor) -> str:
    """A row of numbers at two decimals, stable to print and compare."""
    return "[" + ", ".join(f"{v:5.2f}" for v in values.tolist()) + "]"


print(checks.made_with(Model, train_fn, norms_fn))
for k, p in enumerate(densities.tolist()):
    norms = norms_fn(W5)[k]
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
#
# 🔮 **Predict.** Five equally important sparse features in two dimensions: what angle will
# separate neighbouring features in the best solution, and will their biases be positive,
# zero or negative?
#
# <details><summary>Answer</summary>
#
# 72°, a regular pentagon: by symmetry every feature gets the same share of the circle, 360°/5.
# Neighbours then overlap with cosine 0.31 and next-neighbours with −0.81; the ReLU removes
# the negative overlaps, and a **negative** bias (about −0.25 here) removes the small positive
# ones, at the price of reading every active feature back slightly too small.
# </details>

# %% tags=["nbval-ignore-output"]
seeds = 16
pent = Model(5, 2, n_instances=seeds, feature_probability=0.05, device=device,
             generator=torch.Generator().manual_seed(0))
pent_losses = train_fn(pent, steps=10_000, description="pentagon, 16 seeds")
pent_loss = evaluate_loss(pent)

# %%
Wp = pent.W.detach().cpu()
gaps = geometry.sorted_angle_gaps(Wp)
shapes = ["pentagon" if len(g) == 5 and (g - 72).abs().max() < 5 else f"{len(g)} features" for g in gaps]
best, worst = int(pent_loss.argmin()), int(pent_loss.argmax())
print(checks.made_with(Model, train_fn, norms_fn))
print(f"pentagons: {shapes.count('pentagon')} of {seeds} seeds")
for name, k in [("best", best), ("worst", worst)]:
    print(f"{name} seed {k}: loss {pent_loss[k]:.5f}, {shapes[k]}, angle gaps {fmt(gaps[k].round())}")
    print(f"    ‖W_i‖ = {fmt(norms_fn(Wp)[k])}   b = {fmt(pent.b.detach().cpu()[k])}")

# %%
plots.plot_feature_fan(Wp[[best, worst]], titles=[f"best: loss {pent_loss[best]:.5f}",
                                                  f"worst: loss {pent_loss[worst]:.5f}"])
plots.plot_loss_curves(list(range(0, len(pent_losses), 100)), pent_losses[::100, [best, worst]].cpu(),
                       labels=[f"best seed {best}", f"worst seed {worst}"])
plt.show()

# %% [markdown]
# The best seeds form a **regular pentagon**: five gaps of 72°, equal norms slightly above 1,
# and equal negative biases (about −0.25) that cut off the interference from the other four
# features. Some seeds instead settle in **two antipodal pairs with one feature left out**
# (four gaps of 90°, one short vector): a local minimum with about twice the loss, and the
# loss curves show it plateauing early. Gradient descent on its own cannot leave it; this is
# why the course always trains several seeds and keeps the lowest loss. The paper reports the
# same pentagon (feature dimensionality 2/5, chapter 02) and the same local minimum.

# %% [markdown]
# ## 8. Twenty features, five dimensions: linear vs ReLU
#
# The paper's central comparison: `n = 20`, `m = 5`, importance `0.7^i`, over a sweep of
# sparsities: two models (linear and ReLU) of seven instances, 10,000 steps each. Your loop
# would take about two minutes for them on one CPU core, so the larger runs from here on use
# the course's **fast trainer**, `toy_models.train(..., fast=True)`: the same Adam steps on the
# same model, with the gradients of `WᵀW x + b` derived by hand instead of by autograd, and
# batches drawn by a faster sampler (that code lives apart, in `course_utils/_fast`; without
# `fast=True`, `toy_models.train` is your loop). The models are still built by your
# `ToyModel`. First, proof that the fast trainer takes your loop's steps: both train copies
# of one small model from one seed, on the same batches.

# %%
twins = [Model(5, 2, n_instances=4, feature_probability=0.1, device=device,
               generator=torch.Generator().manual_seed(3)) for _ in range(2)]
yours = train_fn(twins[0], steps=300, seed=5, progress=False)
fast = toy_models.train(twins[1], steps=300, seed=5, progress=False, fast=True, sampler="torch", log_every=1)
gap = (torch.stack(fast.losses).to(yours.device) - yours).abs().max().item()
print(checks.made_with(Model, train_fn))
print(f"300 steps, 4 instances, losses about {yours[-1].mean().item():.3f}: the two loss curves agree "
      f"to within 1e-6 at every step: {gap < 1e-6}; the trained W to within 1e-5: "
      f"{(twins[0].W - twins[1].W).abs().max().item() < 1e-5}")

# %% [markdown]
# Float rounding, nothing more. Now the sweep, with the fast trainer and your model.
#
# 🔮 **Predict.** At the sparsest setting, `S = 0.999`, how many of the 20 features will the
# **linear** model represent? And the ReLU model: more or fewer than ten?
#
# <details><summary>Answer</summary>
#
# The linear model: exactly five, the five most important, at every sparsity. Without a
# nonlinearity, interference is never filtered, so superposition only adds error and the best
# linear map is the top-5 projection. The ReLU model: more than ten. Sparse features rarely
# collide, so packing them together costs little; the least important ones need many more
# than 10,000 steps to appear (their gradients are tiny).
# </details>
#
# The bars show `‖W_i‖` for every feature (most important at the top), coloured by
# `Σ_{j≠i}(Ŵ_i·W_j)²`: dark = a dimension of its own, yellow = superposed.

# %% tags=["nbval-ignore-output"]
sparsities = torch.tensor([0.0, 0.7, 0.9, 0.97, 0.99, 0.997, 0.999])
sweep = {}
for activation in ["linear", "relu"]:
    sweep[activation] = Model(20, 5, n_instances=len(sparsities), activation=activation,
                              feature_probability=(1 - sparsities)[:, None],
                              importance=importance_decay(20, 0.7), device=device,
                              generator=torch.Generator().manual_seed(1))
    # the fast path: same maths, hand-derived gradients; see course_utils/_fast
    toy_models.train(sweep[activation], steps=10_000, fast=True, description=f"n=20, m=5, {activation}")

# %%
print(checks.made_with(Model, norms_fn, interference_fn), "Trained by the course's fast trainer.")
for activation, model in sweep.items():
    W = model.W.detach().cpu()
    norms, interference = norms_fn(W), interference_fn(W)
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
# ## 9. The phase diagram of the smallest model
#
# Take `n = 2` features in `m = 1` dimension. Feature 1 has importance 1, feature 2 has
# importance `r`, both are active with probability `s = 1 − S`. Three solutions compete:
#
# - **Ignore feature 2** (`W = [1, 0]`): feature 1 is read back exactly; feature 2 gets no
#   direction, only its bias.
# - **Ignore feature 1** (`W = [0, 1]`): the mirror image.
# - **Antipodal pair** (`W = [1, −1]`, `b = 0`): `x' = (ReLU(x₁ − x₂), ReLU(x₂ − x₁))`, exact
#   whenever at most one feature is on.
#
# ✏️ **Exercise 7.** Derive the expected loss `E[Σ_i I_i (x_i − x'_i)²]` of each solution as a
# function of `r` and `s`, and write `phase_losses(r, s)`, returning the three losses stacked on
# a last axis in the order of `geometry.PHASES` (ignore feature 2, antipodal pair, ignore
# feature 1), for `r` and `s` that broadcast against each other (tensors or plain numbers).
# Three facts you need: a feature that gets only a bias is best served by the bias that equals
# its mean; a feature here is 0 with probability `1 − s`, else `U[0, 1]`; when both features
# are on, each output of the antipodal pair misses by `min(x₁, x₂)`.
#
# The model should choose the cheapest solution; the diagram below draws **your** boundary
# over the trained models.
#
# 🔮 **Predict.** With equal importances (`r = 1`), below which density `s` will the antipodal
# pair win? Work it out from your losses before you run the diagram.
#
# <details><summary>Answer</summary>
#
# Ignoring a feature costs `s/3 − s²/4` (its variance: `E[x²] = s/3`, `E[x] = s/2`); the pair
# costs `2 s²/6` (both on with probability `s²`, `E[min²] = 1/6` for each output). They are
# equal at `s/3 − s²/4 = s²/3`, that is `s* = 4/7 ≈ 0.57`: superposition wins for any density
# below about 57%, which is most of the diagram.
# </details>

# %%
def phase_losses(r, s) -> Tensor:
    """Expected loss of (ignore feature 2, antipodal pair, ignore feature 1), shape (..., 3)."""
    # YOUR CODE HERE
    raise NotImplementedError("exercise: phase_losses")


phase_fn = checks.check_phase_losses(phase_losses)

# %% [markdown]
# Now train the model at 10 × 10 settings of `(r, s)`, 4 seeds each: 400 instances of your
# `ToyModel` in one model (fast trainer), keeping the best seed of each cell.

# %% tags=["nbval-ignore-output"]
relative_importance = torch.logspace(-1, 1, 10)
density = torch.logspace(-2, 0, 10)
rr, ss = torch.meshgrid(relative_importance, density, indexing="ij")
cell_importance = torch.stack([torch.ones_like(rr), rr], dim=-1).reshape(-1, 2).repeat_interleave(4, 0)
phase_model = Model(2, 1, n_instances=400, feature_probability=ss.reshape(-1, 1).repeat_interleave(4, 0),
                    importance=cell_importance, device=device, generator=torch.Generator().manual_seed(0))
toy_models.train(phase_model, steps=3_000, fast=True, description="phase diagram")  # the fast path
phase_best = select_best(phase_model, evaluate_loss(phase_model, batch_size=20_000), 4)
diagram_W = phase_model.W.detach().cpu()[phase_best]  # (100, 1, 2), the best seed of each cell

# %%
trained_phase = geometry.classify_n2_m1(diagram_W).reshape(10, 10)
closed_phase = phase_fn(rr, ss).argmin(dim=-1)
agreement = (trained_phase == closed_phase).float().mean().item()
print(checks.made_with(Model, phase_fn), "Trained by the course's fast trainer.")
print(f"trained phase = closed-form phase in {agreement:.0%} of the 100 cells")
for phase, name in enumerate(geometry.PHASES):
    print(f"  {name:16s}: trained {int((trained_phase == phase).sum()):3d} cells, "
          f"closed form {int((closed_phase == phase).sum()):3d}")

# %%
plots.plot_phase_diagram(relative_importance, density, trained_phase, closed_phase, phase_losses=phase_fn)
plt.show()

# %% [markdown]
# The trained models fall on the predicted side of the boundary almost everywhere. The rare
# disagreements are of two kinds: cells right next to the boundary, where the costs of two
# solutions nearly tie (the closed form also fixes the antipodal pair's bias at zero, which a
# trained model need not do), and cells where all four seeds fell into a local minimum. The
# paper's "toy model of the toy model" draws the same three regions with the same shape:
# superposition wins when features are sparse, and the more so the closer their importances.

# %% [markdown]
# ## 10. Feature benefit and interference
#
# The paper explains *why* superposition pays by splitting the loss of a **linear** readout on
# inputs with one active feature, `x = v e_i`, into two terms (up to the factor `E[v²]`):
#
# $$\underbrace{\sum_i I_i \big(1 - \|W_i\|^2\big)^2}_{\text{feature benefit}} \;+\;
#   \underbrace{\sum_{i \ne j} I_j \big(W_j \cdot W_i\big)^2}_{\text{interference}}.$$
#
# The first rewards giving each feature a direction of length 1; the second charges every
# overlap, because an active feature `i` leaks `v (W_j · W_i)` into output `j`. A linear model
# balances the two by storing at most `m` features. The ReLU model stores more: it pays the
# interference only where `W_j · W_i v + b_j > 0`.
#
# ✏️ **Exercise 8.** Write `one_sparse_terms(W, importance)`, returning `(feature_benefit,
# interference)`, each of shape `(instances,)`.
#
# 🔮 **Predict.** For the best pentagon, the interference term is large: four neighbours
# overlap each feature. What fraction of it does the trained ReLU model actually pay on
# one-hot inputs: most of it, about half, or almost none?
#
# <details><summary>Answer</summary>
#
# Almost none. In a pentagon the big overlaps are negative: the two far neighbours, 144°
# away, overlap at −0.81 of the squared norm, the near ones at +0.31. The ReLU alone removes
# the negative ones, most of the term; the negative bias removes the small positive ones,
# because `v (W_j · W_i) + b_j` stays below zero for almost every `v ≤ 1`. The table below
# measures it.
# </details>

# %%
def one_sparse_terms(W: Tensor, importance: Tensor) -> tuple[Tensor, Tensor]:
    """(feature benefit, interference) of the linear readout, each (instances,)."""
    # YOUR CODE HERE
    raise NotImplementedError("exercise: one_sparse_terms")


terms_fn = checks.check_one_sparse_terms(one_sparse_terms)

# %% [markdown]
# What does the ReLU model pay? Feed the best pentagon every one-hot input `x = v e_i`
# (`v` on a fine grid in `[0, 1]`) and measure the squared error that lands on the
# **inactive** outputs, weighted by their importance, for three readouts of the same `W`:
# linear with no bias (which pays exactly the interference term times `E[v²] = 1/3`), ReLU
# with no bias, and ReLU with the trained bias.

# %%
W_best, b_best = Wp[best : best + 1], pent.b.detach().cpu()[best : best + 1]
importance_best = pent.importance.cpu()[best : best + 1]
benefit, interference = terms_fn(W_best, importance_best)
v = torch.linspace(0, 1, 201)
x_one_hot = (v[:, None, None] * torch.eye(5)).reshape(1, -1, 5)  # (1, 201·5, 5): every v e_i, v-major
inactive = (x_one_hot == 0).float()


def interference_paid(bias: Tensor, activation: str) -> float:
    """Σ_i mean over v of Σ_{j≠i} I_j x'_j², on the inputs x = v e_i."""
    out = forward(W_best, bias, x_one_hot, activation)
    per_input = (importance_best[:, None, :] * inactive * out.square()).sum(-1)  # (1, 201·5)
    return float(per_input.reshape(len(v), 5).mean(0).sum())


print(checks.made_with(terms_fn, forward, Model, train_fn))
print(f"best pentagon: feature benefit term {benefit.item():.3f}, interference term {interference.item():.3f}")
print("interference paid on one-hot inputs, Σ_i mean_v Σ_(j≠i) I_j x'_j²:")
print(f"  linear readout, no bias   {interference_paid(torch.zeros_like(b_best), 'linear'):.3f}"
      f"   (the interference term × mean v² = {interference.item() * float(v.square().mean()):.3f})")
print(f"  ReLU, no bias             {interference_paid(torch.zeros_like(b_best), 'relu'):.3f}")
print(f"  ReLU, trained bias        {interference_paid(b_best, 'relu'):.3f}")

# %% [markdown]
# The linear readout would pay the whole interference term (times the mean of `v²`, about a
# third). The ReLU with no bias pays about an eighth of that: the large negative overlaps are
# cut off. The trained negative bias removes almost all the rest, leaving under 1%. That is
# what superposition needs: a nonlinearity and a bias that filter the overlaps of sparse
# features, bought with a readout of the active feature that is slightly off (the norms sit
# above 1 to make up for the bias, so the feature benefit term is small but not zero).

# %% [markdown]
# ## 11. Explore
#
# Move the sliders: each change retrains a 5-feature, 2-dimension ReLU model (3 seeds, best
# kept) in a few seconds with the course's fast trainer and redraws `WᵀW` and the feature
# directions. Try: dense with decay 0.7 (two orthogonal features), sparse with decay 1
# (pentagon), and in between.

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
# - You built all of it: the model, its data, its loss, its training loop and its measurements.
