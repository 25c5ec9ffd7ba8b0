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
# # Chapter 07 — Memorization and double descent
#
# Every model so far trained on a **fresh batch every step**: infinite data, so it could never
# overfit. Real networks see a finite training set, and can memorize it. Henighan et al. 2023
# (*Superposition, Memorization, and Double Descent*) train chapter 01's ReLU-output toy model on a
# **fixed set of T examples** and find that overfitting is superposition too, of a different
# kind:
#
# - with few examples the model stores the **training examples** in superposition: their hidden
#   vectors h_t = W x_t form the tidy polygons of chapter 01, while the feature directions are
#   a mess (it **memorizes**);
# - with many examples it stores the **features**, as in chapter 01, and the training examples
#   form no pattern (it **generalizes**);
# - in between neither is stored well, and the test loss rises and falls again: **double descent**.
#
# **You will**
# 1. Set up the paper's experiment: a finite sparse dataset, full-batch AdamW with a warmup and a
#    cosine decay (✏️ the schedule, ★ capstone: the training loop, with the test loss on fresh
#    samples).
# 2. Train one batched model with an instance per training-set size T, with your loop, and see
#    memorization at small T and generalization at large T.
# 3. Write the paper's **data-point dimensionality** (✏️) and watch it cross the feature
#    dimensionality as T grows.
# 4. Find the double-descent bump in the test loss, and where it sits.
# 5. Read the larger sweep that ships with the course: the test loss over T and the hidden
#    dimension m, and what weight decay does to the bump; then explore every T in a widget.
#
# | # | you build | the chapter runs it for | about |
# |---|---|---|---|
# | 1 | `warmup_cosine`: the paper's learning-rate schedule | every training step | 10 min |
# | 2 ★ | **capstone:** `train_finite_model`, full-batch AdamW on a fixed training set, test loss on fresh samples | the sweep over T (§3–5) | 25 min |
# | 3 | `data_point_dimensionality` | the crossover (§4) and the widget | 15 min |
#
# Each check tells you *what* is wrong without giving the answer (`checks.hint("name")` when you
# are stuck) and returns what the rest of the chapter runs: yours once it passes, the course's
# until then (a `→` line says which); every result says what it was `[made with]`. 🔮 marks a
# **predict-then-see** question: write your prediction down before you run the next cell.
#
# **Time:** about a minute of compute on a laptop CPU.

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
import math
from importlib.resources import files

import matplotlib.pyplot as plt
import numpy as np
import torch
from torch import Tensor
from tqdm.auto import tqdm

from course_utils import checks, geometry, toy_models, widgets
from course_utils import memorization as mz
from course_utils.device import set_seed

torch.set_printoptions(precision=3, sci_mode=False)
set_seed(0)


def fmt(values, digits: int = 2) -> str:
    """A row of numbers at a fixed precision (stable output for the notebook tests)."""
    return " ".join(f"{float(v):.{digits}f}" for v in values)


# %% [markdown]
# ## 1. A finite dataset
#
# The data is chapter 01's, with one change the paper makes: feature i is 0 with probability
# S and otherwise uniform on [0, 1], and then **every example is rescaled to ‖x‖ = 1** ("this
# will make memorization of training examples easier"). The model is chapter 01's ReLU-output
# model, h = W x and x' = ReLU(Wᵀ h + b), with equal importance for every feature, and the loss
# is the squared error **summed over the features and averaged over the T training examples**:
#
# $$L = \frac{1}{T} \sum_{t=1}^{T} \sum_{i=1}^{n} (x_{t,i} - x'_{t,i})^2 .$$
#
# (Chapter 01 averaged over the features too: the same loss divided by n.)
#
# **Sizes.** The paper uses n = 10,000 features, 1 − S = 0.001 (10 active features per example
# on average) and m = 2 hidden dimensions. We scale the features down a hundredfold, n = 100,
# with 1 − S = 0.05 (5 active per example), so that a model with an instance for each of eight
# training-set sizes trains in half a minute on a CPU; m = 2 as in the paper's pictures.
#
# `mz.make_dataset` draws a training set. It is stored **sparse**, as the indices and values of
# each example's active features, because the encoder h = W x only needs the columns of W of the
# active features (`mz.hidden`); the decoder x' is dense. `mz.finite_loss(W, b, data)` is the loss
# above, one value per instance.

# %%
N_FEATURES, P, M = 100, 0.05, 2
example = mz.make_dataset(N_FEATURES, 5, P, generator=torch.Generator().manual_seed(0))
x = example.dense()[0]  # (T, n)
print(f"one training set of T = 5 examples, x: {tuple(x.shape)}")
print("active features per example:", (x > 0).sum(-1).tolist())
print("‖x‖ per example:            ", fmt(x.norm(dim=-1)))
print(f"stored as indices {tuple(example.indices.shape)} and values {tuple(example.values.shape)}: "
      "(instances, T, the most active features of any example)")

# %% [markdown]
# ## 2. Training on a fixed dataset
#
# The paper's recipe: **50,000 full-batch AdamW steps** (every step sees all T examples), weight
# decay 10⁻², and a learning rate that rises linearly to 10⁻³ over the first 5 % of the steps
# and then decays to zero along half a cosine.
#
# ✏️ **Exercise 1.** Write that schedule as a multiplier of the learning rate at step t
# (counted from 0) of a run of `steps` steps. With w = max(1, round(warmup · steps)) warmup steps:
#
# $$\text{multiplier}(t) = \begin{cases} (t + 1)/w & t < w \\
#   \tfrac12\bigl(1 + \cos(\pi\,(t - w)/(\text{steps} - w))\bigr) & t \ge w. \end{cases}$$

# %%
def warmup_cosine(step: int, steps: int, warmup: float = 0.05) -> float:
    """The learning-rate multiplier at `step` of `steps`: linear warmup to 1, then cosine to 0."""
    ### BEGIN SOLUTION
    w = max(1, round(warmup * steps))
    if step < w:
        return (step + 1) / w
    return 0.5 * (1 + math.cos(math.pi * (step - w) / (steps - w)))
    ### END SOLUTION


schedule_ = checks.check_warmup_cosine(warmup_cosine)

# %% [markdown]
# ### ★ Capstone: the training loop
#
# Write the loop that trains a batched `ToyModel` (chapter 01's class: `model.W` (instances, m,
# n), `model.b` (instances, n)) whose instance k has its own training set of T_k examples, in
# `data` (a `mz.SparseDataset`; the sizes may differ between instances, `mz.finite_loss` takes
# care of that):
#
# - one `torch.optim.AdamW` over `[model.W, model.b]` with `lr` and `weight_decay` (AdamW shrinks
#   the weights directly at every step; Adam's own `weight_decay` adds an L2 term to the gradient
#   instead, which Adam then rescales: not the same thing);
# - at step t the learning rate `lr * schedule(t, steps)`, set on every `optimizer.param_groups`
#   entry (the chapter passes your `warmup_cosine`);
# - **full batch**: the loss of the whole training set, `mz.finite_loss(model.W, model.b, data)`,
#   one value per instance, **summed** before `backward()` so that every instance trains on its
#   own loss;
# - the train loss of every step (before its update), detached, in a `(steps, instances)` tensor
#   made before the loop;
# - the **test loss on fresh samples**, `mz.evaluate(model, test)` (one value per instance), after
#   the update of every step t with `t % test_every == 0` and after the last step; return them
#   stacked, `(evaluations, instances)`;
# - a progress bar, `tqdm(range(steps), disable=not progress)`.
#
# The check trains small models with your loop and with the course's for 45 to 61 steps; the
# train and test losses and the final weights must agree step by step.

# %%
def train_finite_model(model: toy_models.ToyModel, data: mz.SparseDataset, test: mz.SparseDataset, steps: int, lr: float,
                       weight_decay: float, schedule, test_every: int = 100,
                       progress: bool = True) -> tuple[Tensor, Tensor]:
    """Full-batch AdamW on each instance's fixed training set; returns (train_loss (steps,
    instances), test_loss (evaluations, instances))."""
    ### BEGIN SOLUTION
    optimizer = torch.optim.AdamW([model.W, model.b], lr=lr, weight_decay=weight_decay)
    train_loss = torch.zeros(steps, model.n_instances)
    test_loss = []
    for step in tqdm(range(steps), disable=not progress, mininterval=0.5):
        for group in optimizer.param_groups:
            group["lr"] = lr * schedule(step, steps)
        loss = mz.finite_loss(model.W, model.b, data)
        optimizer.zero_grad()
        loss.sum().backward()
        optimizer.step()
        train_loss[step] = loss.detach().cpu()
        if step % test_every == 0 or step == steps - 1:
            test_loss.append(mz.evaluate(model, test))
    return train_loss, torch.stack(test_loss)
    ### END SOLUTION


train_fn = checks.check_train_finite_model(train_finite_model)

# %% [markdown]
# The chapter's runs take 3,000 steps, so the warmup lasts 150 of them. Your schedule at a few
# steps:

# %%
for t in (0, 74, 149, 150, 1575, 2999):
    print(f"step {t:4d}: learning rate × {schedule_(t, 3_000):.4f}")
print(checks.made_with(schedule_))

# %% [markdown]
# ## 3. Memorization and generalization
#
# One batched model, one instance per training-set size T from 3 to 400, each with its own
# training set (drawn from its own seed) and its own initial W; the test set, 1,000 fresh
# samples, is shared. `mz.sweep_problem` builds them. We train with your loop for 3,000 steps at
# learning rate 10⁻² (the paper: 50,000 at 10⁻³; our problem is a hundred times smaller and
# trains faster), with the paper's weight decay 10⁻² and your warmup-cosine schedule.
#
# 🔮 **Predict.** At T = 5, at T = 35 and at T = 400, which vectors will form a regular polygon:
# the hidden vectors h_t of the T training examples, or the 100 feature directions W_i?
#
# <details><summary>Answer</summary>
#
# At T = 5 the **training examples**: the model has room to give each of a handful of examples
# its own direction in the plane, and spreads them as far apart as it can, a regular pentagon,
# while the features get whatever directions serve those five examples. At T = 400 the
# **features**: five of them form chapter 01's pentagon, and the 400 examples' hidden vectors are
# a cloud. At T = 35 **neither**: too many examples to give each its own direction, too few to
# learn the features from.
# </details>

# %% tags=["nbval-ignore-output"]
TS = (3, 5, 8, 20, 35, 60, 100, 400)
STEPS, LR, WEIGHT_DECAY = 3_000, 1e-2, 1e-2
model, data, test = mz.sweep_problem(TS, M, N_FEATURES, P, T_test=1_000, seed=0, device=device)
train_loss, test_loss = train_fn(model, data, test, steps=STEPS, lr=LR, weight_decay=WEIGHT_DECAY,
                                 schedule=schedule_, test_every=100)

# %% tags=["nbval-ignore-output"]
W, H = model.W.detach().cpu(), mz.hidden(model.W.detach(), data).cpu()  # H: (instances, T_max, m)


def polygon_text(vectors: Tensor) -> str:
    """How far the longest of some 2-D vectors (2, N) are from a regular polygon."""
    gaps = mz.polygon(vectors[None])[0]
    return f"{gaps.numel():2d}-gon, {mz.polygon_error(gaps):5.1f}° off"


print("    T   train   test    features             training examples")
for k, T in enumerate(TS):
    print(f"{T:5d}  {float(train_loss[-1, k]):6.3f} {float(test_loss[-1, k]):6.2f}    "
          f"{polygon_text(W[k]):19s}  {polygon_text(H[k, :T].T)}")
print("(the longest vectors: those longer than half the longest one; 'off': the largest gap's distance "
      "from 360°/k)")
print(checks.made_with(train_fn, schedule_))

fig, axes = plt.subplots(2, 5, figsize=(12, 5))
for column, T in enumerate((3, 5, 8, 35, 400)):
    k = TS.index(T)
    for row, (vectors, colour, what) in enumerate(((W[k].T, "C0", "features W_i"),
                                                   (H[k, :T], "C3", "training examples h_t"))):
        ax = axes[row, column]
        lim = 1.1 * float(vectors.norm(dim=-1).max())
        for x_, y_ in vectors.tolist():
            ax.plot([0, x_], [0, y_], color=colour, lw=1)
        ax.set_xlim(-lim, lim)
        ax.set_ylim(-lim, lim)
        ax.set_aspect("equal")
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_title(f"T = {T}: {what}", fontsize=8)
plt.tight_layout()
plt.show()

# %% [markdown]
# What the table and the figure show (this run; on another CPU the last digits can differ):
#
# - **T = 5 and 8 memorize.** The train loss is 0.000, and the training examples' hidden vectors
#   form a regular 5-gon and 8-gon, within 7° and 10°. The longest feature directions (9 and 16
#   of them) are 40° and 27° from any regular polygon.
# - **T = 3** is memorized too (train loss 0.000), but its three vectors are 26° from an
#   equilateral triangle: nothing in the loss needs three points to be spread evenly. The paper's
#   T = 3 triangle, with 10,000 features, is regular; ours, with 100, is not.
# - **T = 400 generalizes.** Five features form a pentagon within 4°, and the training examples'
#   hidden vectors form nothing: 59 of them are longer than half the longest, 52° from a regular
#   59-gon. The train loss, 0.87, is close to the test loss, 0.92.
# - **In between** (T = 20 to 100) neither set of vectors is a polygon.
#
# ## 4. Dimensionality of data points
#
# Chapter 02 measured how much of the hidden space a feature gets with its **dimensionality**
# D_i = ‖W_i‖² / Σ_j (Ŵ_i · W_j)². The paper applies the same measure to the training examples,
# with their hidden vectors h_t = W x_t in place of the features:
#
# $$D^t = \frac{\lVert h_t \rVert^2}{\sum_{s=1}^{T} (\hat h_t \cdot h_s)^2}, \qquad \hat h_t = h_t / \lVert h_t \rVert ,$$
#
# the sum over every training example, t included. An example with a dimension to itself gets
# 1; each vertex of a regular k-gon in m = 2 gets 2/k.
#
# ✏️ **Exercise 3.** Compute D^t for every row h_t of H (instances, T, m). H comes from the
# sweep, whose instances have different T: their training sets are padded with zero vectors,
# which must get 0 (not NaN) and change nothing for the others.

# %%
def data_point_dimensionality(H: Tensor) -> Tensor:
    """D^t = ‖h_t‖² / Σ_s (ĥ_t · h_s)²: (instances, T, m) -> (instances, T); a zero vector gets 0."""
    ### BEGIN SOLUTION
    norms = H.norm(dim=-1, keepdim=True)
    unit = H / torch.where(norms > 0, norms, torch.ones_like(norms))
    denominator = torch.einsum("itm,ism->its", unit, H).square().sum(-1)
    safe = torch.where(denominator > 0, denominator, torch.ones_like(denominator))
    return torch.where(denominator > 0, H.square().sum(-1) / safe, torch.zeros_like(denominator))
    ### END SOLUTION


dimensionality = checks.check_data_point_dimensionality(data_point_dimensionality)

# %% [markdown]
# One number per model: the mean of D over the vectors **weighted by ‖v‖²**, so that vectors the
# model barely stores count little (`mz.weighted_dimensionality`; a regular k-gon gives 2/k). For
# the features, chapter 02's D_i (`geometry.feature_dimensionality`); for the training examples,
# your function. `mz.summarise_sweep` collects both, with the final losses.
#
# 🔮 **Predict.** As T grows from 3 to 400, how do the two weighted dimensionalities move? Do they
# cross, and if so, where?
#
# <details><summary>Answer</summary>
#
# The training examples' dimensionality **falls**. A handful of examples each get a large share
# of the plane (a regular triangle would give each 2/3), and the more examples there are, the
# less each gets. The features' dimensionality **rises** once the model stores features: at
# large T a pentagon gives five features 2/5 each. They **cross** where the model switches from
# storing examples to storing features.
# </details>

# %% tags=["nbval-approx-0.01"]
sweep = mz.summarise_sweep(model, data, train_loss, test_loss, dimensionality=dimensionality)
print("T                  " + " ".join(f"{T:5d}" for T in TS))
print("features           " + " ".join(f"{v:5.3f}" for v in sweep.feature_D.tolist()))
print("training examples  " + " ".join(f"{v:5.3f}" for v in sweep.data_D.tolist()))
order = torch.sign(sweep.feature_D - sweep.data_D)
crossings = torch.nonzero(order[1:] != order[:-1]).flatten().tolist()
crossing = crossings[0] if crossings else len(TS) - 2
print(f"they change order {len(crossings)} time(s)"
      + (f", first between T = {TS[crossing]} and T = {TS[crossing + 1]}" if crossings else ""))
for T in (3, 5, 8):
    k = TS.index(T)
    print(f"D^t of the {T} training examples at T = {T}: {fmt(dimensionality(H[k:k + 1, :T])[0])}")
print(checks.made_with(dimensionality, train_fn))

# %% [markdown]
# The training examples' dimensionality falls at every step, from 0.68 at T = 3 to 0.02 at
# T = 400. At T = 8 each of the eight examples gets almost exactly 2/8 = 0.25: the regular
# octagon. The features' dimensionality drifts down from 0.17 to 0.06 (T = 35) while the model
# memorizes, and rises to 0.29 at T = 400. It is below the pentagon's 0.4 because the ‖W_i‖²
# weighting also counts the weaker features outside it. The two cross once, between T = 35 and
# T = 60: there the model stops storing examples and starts storing features, as in the paper.
#
# ## 5. Double descent
#
# Now the test loss, on the 1,000 fresh samples, against T.
#
# 🔮 **Predict.** The test loss is highest at some T. Where, relative to the crossover you just
# measured, and how much higher than at the smallest and the largest T?
#
# <details><summary>Answer</summary>
#
# **At the crossover.** There the model stores neither the examples (too many) nor the features
# (too few examples to learn them from). The paper finds the spike of the test loss where the
# two dimensionalities cross.
# </details>

# %% tags=["nbval-approx-0.02"]
peak = int(sweep.test_loss.argmax())
print("T          " + " ".join(f"{T:5d}" for T in TS))
print("test loss  " + " ".join(f"{v:5.2f}" for v in sweep.test_loss.tolist()))
print("train loss " + " ".join(f"{v:5.2f}" for v in sweep.train_loss.tolist()))
print(f"highest test loss at T = {TS[peak]}: {float(sweep.test_loss[peak]):.2f}, against "
      f"{float(sweep.test_loss[0]):.2f} at T = {TS[0]} and {float(sweep.test_loss[-1]):.2f} at T = {TS[-1]}; "
      f"the dimensionalities cross between T = {TS[crossing]} and {TS[crossing + 1]}")
print(f"‖W‖ (Frobenius) at each T: {fmt(sweep.W.norm(dim=(1, 2)), 1)}")
print(checks.made_with(train_fn, dimensionality))
fig, (ax_loss, ax_D) = plt.subplots(1, 2, figsize=(10, 3.3))
ax_loss.plot(TS, sweep.test_loss, "o-", color="k", label="test")
ax_loss.plot(TS, sweep.train_loss, "o--", color="grey", label="train")
ax_D.plot(TS, sweep.feature_D, "o-", color="C0", label="features")
ax_D.plot(TS, sweep.data_D, "s-", color="C3", label="training examples")
for ax in (ax_loss, ax_D):
    ax.axvspan(TS[crossing], TS[crossing + 1], color="gold", alpha=0.3)
    ax.set_xscale("log")
    ax.set_xlabel("training-set size T")
    ax.legend(fontsize=8)
ax_loss.set_ylabel("loss")
ax_D.set_ylabel("weighted dimensionality")
plt.tight_layout()
plt.show()

# %% [markdown]
# The test loss is highest at **T = 60**: 2.29, more than twice its value at either end (1.05 at
# T = 3, 0.92 at T = 400) and 0.75 above its higher neighbour (1.54 at T = 35). The
# dimensionalities cross between T = 35 and T = 60, so the peak sits at the crossover's upper
# edge. Past it the test loss descends again: the **second descent**.
#
# The norm of W tells the same story. It grows from 1.9 at T = 3 to 11.6 at T = 35 and 11.0 at
# T = 60, as the model stretches W to pull more and more examples apart, and falls back to 2.5
# at T = 400. The train loss is 0 up to T = 8 and climbs from there.
#
# Note the scale: predicting x' = 0 scores a test loss of about 1 (every example has ‖x‖ = 1),
# and even the best model here beats that only a little. Two dimensions for 100 features hold
# little; what matters is the shape of the curve.
#
# Your loop also recorded the test loss every 100 steps. Over training, for each T:

# %% tags=["nbval-approx-0.02"]
evaluated = [min(100 * i, STEPS - 1) for i in range(len(test_loss))]  # after steps 0, 100, ..., 2900, 2999
fig, ax = plt.subplots(figsize=(6, 3))
for k, T in enumerate(TS):
    ax.plot(evaluated, test_loss[:, k], label=f"T = {T}", color=plt.get_cmap("viridis")(k / (len(TS) - 1)))
ax.set_yscale("log")
ax.set_xlabel("step")
ax.set_ylabel("test loss")
ax.legend(fontsize=7, ncol=2)
plt.show()
for k, T in enumerate(TS):
    print(f"T = {T:3d}: test loss {float(test_loss[0, k]):.2f} after the first step, "
          f"{float(test_loss[-1, k]):.2f} at the end")
print(checks.made_with(train_fn))

# %% [markdown]
# The models that memorize many examples, **T = 35 and 60, get worse on fresh samples all
# through training**: their test loss climbs from 0.95 after the first step to 1.54 and 2.29 at
# the end, while their train loss falls. Those that memorize a handful (T ≤ 8) settle near 1
# within a few hundred steps. T = 400 improves to 0.92 and stays there.
#
# ## 6. The larger sweep: T × m, and weight decay
#
# `scripts/memorization_sweep.py` trains the same experiment longer and wider: ten training-set
# sizes from 3 to 400, 10,000 steps, hidden dimensions m = 2, 3, 4 and 6, and at m = 4 a second
# run with weight decay 1.0 instead of 10⁻². Each setting is one batched model, as above; all of
# it took about 8 minutes of one CPU thread, too long for this notebook, so its results ship with
# the course (`course_utils/data/memorization_sweep.npz`; a test re-runs part of the script and
# checks that it reproduces the file). The paper draws the same map over T and m.
#
# 🔮 **Predict.** With more hidden dimensions the model can memorize more examples, and the
# features have more room. Does the bump move to larger or smaller T as m grows, and does it get
# bigger or smaller?
#
# <details><summary>Answer</summary>
#
# The paper: the spike **moves to larger T** as m grows, because more dimensions can memorize
# more examples, so memorization lasts longer. And it **shrinks**, because with more room the
# model needs to stretch W less to hold its examples apart.
# </details>

# %%
big = np.load(files("course_utils") / "data" / "memorization_sweep.npz")
big_T, big_m, loss_map = big["T"], big["m"], big["test_loss_map"]  # loss_map: (m, T)
print(f"committed sweep: n = {int(big['n_features'])}, 1 - S = {float(big['feature_probability']):g}, "
      f"{int(big['steps']):,} steps at lr {float(big['lr']):g}; {float(big['cpu_seconds']) / 60:.1f} min of CPU time")
print("test loss     T = " + " ".join(f"{T:6d}" for T in big_T))
for i, m in enumerate(big_m):
    print(f"  m = {m}          " + " ".join(f"{v:6.2f}" for v in loss_map[i]))
for i, m in enumerate(big_m):
    j = int(loss_map[i].argmax())
    print(f"m = {m}: the test loss peaks at T = {big_T[j]} ({loss_map[i, j]:.2f})")
print(f"m = 2: dimensionality of features {fmt(big['feature_D'])}")
print(f"       of training examples      {fmt(big['data_D'])}")
print("(trained by scripts/memorization_sweep.py with the course's loop, mz.train_finite: not in this notebook)")
fig, ax = plt.subplots(figsize=(6, 2.6))
image = ax.imshow(np.log10(loss_map), aspect="auto", cmap="magma", origin="lower")
ax.set_xticks(range(len(big_T)), [str(T) for T in big_T])
ax.set_yticks(range(len(big_m)), [str(m) for m in big_m])
ax.set_xlabel("training-set size T")
ax.set_ylabel("hidden dimension m")
fig.colorbar(image, label="log₁₀ test loss")
plt.show()

# %% [markdown]
# **The peak shrinks.** It falls by two orders of magnitude as m grows: 146 at m = 2, 6.5 at
# m = 3, 3.5 at m = 4 and 1.13 at m = 6.
#
# **The peak moves, but not monotonically.** It sits at T = 100 for m = 2, 60 for m = 3, 100 for
# m = 4 and 200 for m = 6. So from m = 2 to m = 6 it moves to larger T, as in the paper, but m = 3
# breaks the order. The paper, too, warns that these runs are sensitive to hyperparameters at
# small m.
#
# **Longer training, bigger spike.** The committed m = 2 row trained 10,000 steps, and its peak
# (146 at T = 100) is far higher than the 2.29 this notebook's 3,000-step run found at T = 60:
# longer training lets the memorizing models stretch W further.
#
# **Weight decay.** The paper trains with a little weight decay (10⁻²), and its appendix (Adam
# Jermyn's replication) varies it. The committed sweep has one comparison, at m = 4: weight decay
# 10⁻² against 1.0.
#
# 🔮 **Predict.** What does a hundred times stronger weight decay do to the bump, and what does it
# cost at small T?
#
# <details><summary>Answer</summary>
#
# Weight decay pulls every weight towards zero at every step, and memorizing many examples
# needs a long W (you saw ‖W‖ peak at the crossover). Strong decay should **flatten the spike**.
# The price is at small T, where the model can no longer memorize freely. Memorizing does not
# help the test loss there anyway, but the model now stores less of anything.
# </details>

# %%
decays = big["weight_decay"]
by_decay = big["test_loss_weight_decay"]  # (weight decays, T), m = 4
print("m = 4, test loss            T = " + " ".join(f"{T:6d}" for T in big_T))
for wd, row in zip(decays, by_decay):
    print(f"  weight decay {wd:<8g}         " + " ".join(f"{v:6.2f}" for v in row))
for wd, row in zip(decays, by_decay):
    j = int(row.argmax())
    print(f"weight decay {wd:g}: highest test loss {row[j]:.2f} at T = {big_T[j]}")
print("(trained by scripts/memorization_sweep.py with the course's loop, mz.train_finite: not in this notebook)")

# %% [markdown]
# With weight decay 1.0 **the spike is gone**: the highest test loss at m = 4 is 1.12, at the
# smallest T, and at T = 100 the loss is 0.94 instead of 3.46. **The price** is at small T:
# 1.12 against 1.01 at T = 3, and 1.03 against 0.99 at T = 5. At large T the two runs agree
# (0.90 and 0.91 at T = 400). Adam Jermyn's comments on the paper vary weight decay too; this
# single comparison is ours.
#
# ## 7. Explore
#
# Slide through the training-set sizes of the sweep you trained in §3: the feature directions,
# the training examples' hidden vectors and the two dimensionalities (your
# `data_point_dimensionality`) at each T.

# %% tags=["nbval-ignore-output"]
widgets.memorization_explorer(sweep)

# %% [markdown]
# ## Summary
#
# - On a finite dataset the toy model can store **training examples** in superposition instead
#   of features: at small T their hidden vectors form regular polygons and the features form
#   none (memorization); at large T the features form the polygons of chapter 01 and the
#   training examples do not (generalization).
# - The **data-point dimensionality** D^t = ‖h_t‖² / Σ_s (ĥ_t · h_s)², chapter 02's measure
#   applied to the training examples, falls with T while the feature dimensionality rises;
#   they cross.
# - The test loss peaks near the crossover, where the model stores neither well: **double
#   descent** in the training-set size. With more hidden dimensions the peak shrinks (and, from
#   m = 2 to m = 6, moves to larger T); strong weight decay removes it.
#
# **Differences from the paper.** The paper uses n = 10,000 features with 1 − S = 0.001 and 50,000
# steps at learning rate 10⁻³. We use n = 100 with 1 − S = 0.05 and 3,000 steps at 10⁻² here
# (10,000 in the committed sweep), with T from 3 to 400 instead of up to tens of thousands
# (`scripts/memorization_sweep.py --paper` runs the paper's sizes on a GPU).
#
# - The regimes, the crossing dimensionalities and the spike at the crossover all reproduce.
# - Our T = 3 triangle is not regular (26° off); the paper's is.
# - The spike's position does not grow with m monotonically (m = 3 peaks before m = 2); its
#   height falls steadily.
# - Strong weight decay (1.0) removes the spike at m = 4; that comparison is ours.
