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
# # Chapter 04 — Computation in superposition
#
# Chapters 01–03 were about how a network **stores** features. Networks also **compute**
# with them: a layer of neurons reads features, applies a nonlinearity and writes new ones.
# Can it compute on more features than it has neurons? This chapter goes from the toy-model
# paper's experiments to an explicit construction with error laws you derive, and ends with a
# current debate.
#
# **You will reproduce**
# 1. **A privileged basis** (Elhage et al. 2022, *Toy Models of Superposition*): with a ReLU
#    on the hidden layer, neurons are monosemantic when features are dense and polysemantic
#    when they are sparse.
# 2. **Computing abs(x)** (same paper): the exact two-neurons-per-feature solution, the slide
#    into superposition as features get sparse, and the *asymmetric superposition motif*.
# 3. **Universal AND** (Hänni, Mendel, Vaintrob et al. 2024, *Mathematical Models of
#    Computation in Superposition*): `d` random neurons compute all `C(m, 2)` pairwise ANDs
#    of `m` sparse boolean features, with errors that follow laws you derive.
# 4. **Compressed computation** (Braun et al. 2025) and its critique (Bhagat et al. 2025,
#    *Compressed computation is (probably) not computation in superposition*): 50 neurons
#    beat the obvious baseline on 100 features, but only thanks to noise in the embedding.
#
# **Time:** about 2 minutes of compute on a laptop CPU.
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
import math

import matplotlib.pyplot as plt
import torch
from torch import Tensor

from course_utils import checks, plots
from course_utils import computation as comp
from course_utils.device import set_seed
from course_utils.toy_models import evaluate_loss, importance_decay, select_best, train

torch.set_printoptions(precision=2, sci_mode=False)
set_seed(0)


def fmt(values, digits: int = 2) -> str:
    """A row of numbers at a fixed precision (stable output for the notebook tests)."""
    return " ".join(f"{float(v):.{digits}f}" for v in values)


# %% [markdown]
# ## 1. A privileged basis
#
# Chapter 01's model `x' = ReLU(Wᵀ W x + b)` has no preferred directions in its hidden
# layer: rotate `W` and nothing changes. Put a ReLU on the hidden layer,
#
# $$h = \mathrm{ReLU}(W x), \qquad x' = \mathrm{ReLU}(W^\top h + b),$$
#
# and the `m` hidden neurons become a **privileged basis**: each neuron is a unit whose
# activity can be read on its own, as in a real network's MLP. Now "which features does
# neuron `k` respond to?" has an answer, row `k` of `W`.
#
# ✏️ **Exercise 1.** Implement the forward pass, batched over instances like chapter 01's
# model: `W: (instances, hidden, features)`, `b: (instances, features)`,
# `x: (instances, batch, features)` → `(instances, batch, features)`.

# %%
def neuron_forward(W: Tensor, b: Tensor, x: Tensor) -> Tensor:
    """x' = ReLU(Wᵀ ReLU(W x) + b), batched over instances."""
    # YOUR CODE HERE
    raise NotImplementedError("exercise: neuron_forward")


checks.check_neuron_forward(neuron_forward)

# %% [markdown]
# The paper's experiment: `n = 10` features with importance `0.75^i` in `m = 5` neurons, at
# feature densities `1 − S` from 1 (dense) to 0.01 (sparse). `comp.NeuronModel` is chapter
# 01's `ToyModel` with this forward pass; each density trains two seeds (10,000 steps of
# Adam, batch 256; about 10 seconds) and keeps the one with the lower loss.

# %% tags=["nbval-ignore-output"]
densities = torch.tensor([1.0, 0.3, 0.1, 0.03, 0.01])
seeds = 2
neuron_model = comp.NeuronModel(10, 5, n_instances=len(densities) * seeds,
                                feature_probability=densities.repeat_interleave(seeds)[:, None],
                                importance=importance_decay(10, 0.75), device=device,
                                generator=torch.Generator().manual_seed(0))
neuron_run = train(neuron_model, steps=10_000, batch_size=256, description="privileged basis")

# %% [markdown]
# A neuron is **monosemantic** when one feature holds nearly all of its input weights' squared
# norm; `comp.neuron_monosemanticity` gives that share per neuron (1 = a single feature).

# %%
best = select_best(neuron_model, evaluate_loss(neuron_model), seeds)
W_neurons = neuron_model.W.detach().cpu()[best]  # (densities, hidden, features)
share = comp.neuron_monosemanticity(W_neurons)
for density, s, W in zip(densities, share, W_neurons):
    represented = int((W.norm(dim=0) > 0.5).sum())
    print(f"1 − S = {float(density):4.2f}: features represented {represented:2d}/10, "
          f"monosemantic neurons (share > 0.9) {int((s > 0.9).sum())}/5, shares {fmt(s)}")
plots.plot_neuron_features(list(W_neurons), titles=[f"1 − S = {float(d):g}" for d in densities])
plt.show()

# %% [markdown]
# Each column is a neuron, each coloured block a feature's weight into it (dark = important).
# With **dense** features the model gives the five most important features one neuron each
# and drops the rest: every neuron is monosemantic. As features get **sparser** it packs in
# more features than neurons, and the neurons become **polysemantic**: several features per
# column, with one often much larger than the others. That is the paper's picture, and
# the mixture of clean and messy neurons seen in real networks.
#
# ## 2. Computing abs(x)
#
# Chapter 01's models only copy their inputs; the ReLUs filter interference. A model that
# **computes** must use its nonlinearity. The paper's task is `y = |x|` for features
# `x_i ∈ U[−1, 1]` (0 with probability `S`), with an untied model
#
# $$h = \mathrm{ReLU}(W_1 x), \qquad y = \mathrm{ReLU}(W_2 h + b),$$
#
# and the importance-weighted squared error against `|x|`.
#
# ✏️ **Exercise 2.** Generate a batch: `feature_probability` is `(instances, features)`; return
# `(instances, batch_size, features)`, each entry 0 with probability `1 − p`, else uniform on
# `[−1, 1]`.

# %%
def abs_batch(feature_probability: Tensor, batch_size: int, generator: torch.Generator | None = None) -> Tensor:
    """Sparse signed features: 0 with probability 1 − p, else U[−1, 1]."""
    # YOUR CODE HERE
    raise NotImplementedError("exercise: abs_batch")


checks.check_abs_batch(abs_batch)


# %% [markdown]
# ✏️ **Exercise 3.** The loss: the importance-weighted squared error of the output `y`
# against the target `|x|`, averaged over the batch and the features, one number per instance.

# %%
def abs_loss(y: Tensor, x: Tensor, importance: Tensor) -> Tensor:
    """mean over batch and features of importance · (y − |x|)²: (instances,)."""
    # YOUR CODE HERE
    raise NotImplementedError("exercise: abs_loss")


checks.check_abs_loss(abs_loss)

# %% [markdown]
# With room to spare, `|x| = ReLU(x) + ReLU(−x)`: two neurons per feature, one for each sign.
# Train `n = 3` features in `m = 6` neurons (dense, four seeds; a few seconds) and look at the
# best seed's `W1` (rows are neurons).

# %% tags=["nbval-ignore-output"]
small_abs = comp.AbsModel(3, 6, n_instances=4, device=device, generator=torch.Generator().manual_seed(0))
small_run = train(small_abs, steps=10_000, description="abs, n = 3, m = 6")

# %%
with torch.no_grad():
    small_losses = small_abs.loss(small_abs.generate_batch(10_000, torch.Generator(device=device).manual_seed(5))).cpu()
winner = int(small_losses.argmin())
W1 = small_abs.W1.detach().cpu()[winner]
print("losses of the 4 seeds:", " ".join(f"{float(v):.1e}" for v in small_losses))
print("W1 of the best seed, rounded (neuron × feature):")
print(W1.round(decimals=1) + 0.0)
for feature in range(3):
    weights = W1[:, feature][W1[:, feature].abs() > 0.5]
    print(f"feature {feature}: neurons with |w| > 0.5: {len(weights)}, signs {fmt(weights.sign(), 0)}")

# %% [markdown]
# Each feature has exactly one positive neuron (`ReLU(x_i)`) and one negative one
# (`ReLU(−x_i)`), and each neuron reads one feature: the exact solution, loss ≈ 0.
#
# Now the paper's larger model: `n = 100` features with importance `0.8^i` in `m = 40`
# neurons, at sparsities `S` from 0 (dense) to 0.99. One batched run trains all six (5,000
# steps of Adam, lr `3e-3` with cosine decay, batch 256; about 20 seconds). We start from
# small weights (`init_scale=0.1`, a tenth of the usual Xavier scale): from the full scale,
# sparse models often stall on a plateau where the outputs of some important features are
# dead (their output ReLU never turns on, so they never get a gradient).

# %% tags=["nbval-ignore-output"]
sweep_S = torch.tensor([0.0, 0.5, 0.8, 0.9, 0.97, 0.99])
abs_model = comp.AbsModel(100, 40, n_instances=len(sweep_S), feature_probability=(1 - sweep_S)[:, None],
                          importance=importance_decay(100, 0.8), init_scale=0.1, device=device,
                          generator=torch.Generator().manual_seed(0))
abs_run = train(abs_model, steps=5_000, batch_size=256, lr=3e-3, schedule="cosine", description="abs, n = 100, m = 40")

# %% [markdown]
# Two yardsticks for the loss: a model that outputs 0 (it computes nothing), and the best
# model **without** superposition, which gives the 20 most important features two neurons
# each and drops the other 80 (`comp.abs_monosemantic_loss`).

# %%
W1s, W2s, bs = (t.detach().cpu() for t in (abs_model.W1, abs_model.W2, abs_model.b))
abs_share = comp.neuron_monosemanticity(W1s)
mono_fraction = (abs_share > 0.9).float().mean(dim=1)
with torch.no_grad():
    abs_losses = abs_model.loss(abs_model.generate_batch(20_000, torch.Generator(device=device).manual_seed(3))).cpu()
importance, probability = abs_model.importance.cpu(), abs_model.feature_probability.cpu()
no_superposition = comp.abs_monosemantic_loss(importance, probability, 40)
outputs_zero = (importance * probability / 3).mean(dim=1)
for k, S in enumerate(sweep_S):
    print(f"S = {float(S):4.2f}: monosemantic neurons {int((abs_share[k] > 0.9).sum()):2d}/40, mean share "
          f"{float(abs_share[k].mean()):.2f} | loss / (outputs 0) {float(abs_losses[k] / outputs_zero[k]):.3f}, "
          f"loss / (no superposition) {float(abs_losses[k] / no_superposition[k]):5.2f}")
plots.plot_abs_sweep(1 - sweep_S, mono_fraction)
plt.show()
plots.plot_neuron_features([W1s[0, :, :30], W1s[4, :, :30]], titles=["S = 0 (first 30 features)", "S = 0.97 (first 30 features)"])
plt.show()

# %% [markdown]
# Up to `S = 0.9` nearly every neuron is monosemantic: the important features each take a
# `ReLU(x)` and a `ReLU(−x)` neuron. At `S = 0.97` almost none is: the model computes `|x|` on
# more features than it could give two neurons each, **in superposition**, and still removes
# 97 % of the loss of a model that outputs nothing.
#
# Our models are not at the optimum, though: their loss is 1.6–2.8 times that of the best
# model without superposition, and at `S = 0.99` (where each feature is on in one input of a
# hundred) 5,000 steps are far too few (30 % of the zero-output loss left). The paper's
# figures show the same move from monosemantic to superposed neurons; we do not reproduce a
# claim that the superposed solution has the lower loss.
#
# ### The asymmetric superposition motif
#
# How can one neuron serve two features' `|x|` without wrecking both? Output interference
# is only harmful when it is **positive**: the output ReLU removes negative interference for
# free. The paper found a motif that exploits this. A neuron `k` reads a **strong** feature
# `a` with a large weight and a **weak** feature `b` with a small one, and writes them back
# with the **reciprocal** output weights (small to `a`, large to `b`), so each comes out at
# about the right size. The interference is lopsided:
#
# - when `b` is on, `k` fires weakly and writes little into `a`'s output (the bias absorbs it);
# - when `a` is on, `k` fires strongly and writes a **large** positive value into `b`'s
#   output, which other neurons that also fire for `a` **cancel** with negative output
#   weights into `b`.
#
# `comp.asymmetric_motifs(W1, W2, b)` looks for exactly this in one trained model: input
# weights that differ by 1.5× or more, output weights that differ by 1.5× the other way,
# interference of 0.25 or more from `a` into `b` through `k`, and `b`'s total output
# pre-activation still ≤ 0 when `a` is on.

# %%
motifs = {round(float(S), 2): comp.asymmetric_motifs(W1s[i], W2s[i], bs[i]) for i, S in enumerate(sweep_S)}
print("motifs per S:", {S: len(found) for S, found in motifs.items()})
S_found, motif = max(((S, found_motif) for S, found in motifs.items() for found_motif in found),
                     key=lambda pair: pair[1].interference)
i = int((sweep_S - S_found).abs().argmin())
print(f"strongest example: S = {S_found}, neuron {motif.neuron}, strong feature {motif.strong}, weak feature {motif.weak}")
print(f"  input weights  {float(W1s[i, motif.neuron, motif.strong]):+.2f} (strong) {float(W1s[i, motif.neuron, motif.weak]):+.2f} (weak): ratio {motif.input_ratio:.2f}")
print(f"  output weights {float(W2s[i, motif.strong, motif.neuron]):+.2f} (strong) {float(W2s[i, motif.weak, motif.neuron]):+.2f} (weak): ratio {motif.output_ratio:.2f}")
print(f"  strong on: neuron {motif.neuron} writes {motif.interference:+.2f} into the weak output; all neurons + bias: {motif.total:+.2f}")
print(f"  weak on:   neuron {motif.neuron} writes {motif.reverse_interference:+.2f} into the strong output")
print(f"  inhibiting neurons: {motif.inhibitors}")

contributions = motif.contributions
order = contributions.abs().argsort(descending=True)[:8]
fig, ax = plt.subplots(figsize=(6, 2.8))
labels = [f"neuron {int(j)}" for j in order] + ["bias", "total"]
values = contributions[order].tolist() + [float(bs[i, motif.weak]), motif.total]
ax.bar(labels, values, color=["tab:red" if v > 0 else "tab:blue" for v in values[:-1]] + ["black"])
ax.axhline(0, color="grey", lw=0.8)
ax.set_ylabel(f"into output {motif.weak}")
sign = "+1" if float(W1s[i, motif.neuron, motif.strong]) > 0 else "−1"
ax.set_title(f"feature {motif.strong} = {sign}: who writes into feature {motif.weak}'s output")
ax.tick_params(axis="x", rotation=60)
fig.tight_layout()
plt.show()

# %% [markdown]
# The motif neuron's large positive write (red) is cancelled by inhibiting neurons and the
# bias (blue): the weak feature's output pre-activation stays below zero, so the output ReLU
# shows nothing. In the other direction the interference is small to begin with. This is the
# paper's explanation of how a ReLU network computes a nonlinear function of more features
# than it has neurons: **asymmetric** weights make one direction of interference small, and
# **inhibition** removes the other. In our sweep the motif appears exactly where the neurons
# turn polysemantic (`S = 0.97`), in several neurons of that model, and nowhere in the dense
# ones.
#
# ## 3. Universal AND: an explicit construction
#
# Trained models show that computation in superposition *happens*. Hänni, Mendel, Vaintrob
# et al. (2024) show how it *can* happen, with a construction whose errors can be
# calculated. Take `m` boolean features, sparse: only `l` are on at a time. Wire each of `d`
# ReLU neurons to each feature independently with probability `p`, and give it bias −1:
#
# $$h_k = \mathrm{ReLU}\Big(\sum_i W_{ki}\, x_i - 1\Big), \qquad W_{ki} \in \{0, 1\}.$$
#
# A neuron fires only when two or more of its features are on. To read **AND(i, j)**, average
# `h_k` over the neurons wired to both `i` and `j`. With only `i` and `j` on, each of those
# neurons reads `2 − 1 = 1` and every other neuron reads 0: the read-off of AND(i, j) is
# exactly 1. One random layer computes **every** pairwise AND at once.
#
# ✏️ **Exercise 4.** The layer: `W` is `(d, m)` of 0s and 1s, `x` is `(batch, m)`; return `h`,
# `(batch, d)`.

# %%
def u_and_layer(W: Tensor, x: Tensor) -> Tensor:
    """h = ReLU(x Wᵀ − 1)."""
    # YOUR CODE HERE
    raise NotImplementedError("exercise: u_and_layer")


checks.check_u_and_layer(u_and_layer)


# %% [markdown]
# ✏️ **Exercise 5.** The read-off of every pair: `(batch, d)` → `(batch, m, m)`, entry
# `(i, j)` the mean of `h_k` over the neurons wired to both `i` and `j`, and `NaN` where no
# neuron is (the pair is *uncovered*). Hint: the number of neurons wired to both is `(WᵀW)_ij`.

# %%
def u_and_readoff(W: Tensor, h: Tensor) -> Tensor:
    """AND(i, j) ≈ mean of h_k over neurons wired to both i and j; NaN if there are none."""
    # YOUR CODE HERE
    raise NotImplementedError("exercise: u_and_readoff")


checks.check_u_and_readoff(u_and_readoff)

# %% [markdown]
# Build one: `m = 200` features, so `C(200, 2) = 19,900` ANDs, with `d = 1,000` neurons and
# `p = 0.1`. A pair is covered by about `d p² = 10` neurons; it is uncovered with
# probability `(1 − p²)^d ≈ e^{−d p²}`.

# %%
m, d, p = 200, 1_000, 0.1
generator = torch.Generator().manual_seed(0)
W_and = comp.u_and_wiring(m, d, p, generator)
coverage = comp.pair_coverage(W_and)
pairs = torch.triu(torch.ones(m, m, dtype=torch.bool), diagonal=1)
print(f"{math.comb(m, 2):,} ANDs from {d:,} neurons; neurons per pair: mean {float(coverage[pairs].float().mean()):.2f} "
      f"(d p² = {d * p * p:.1f}), min {int(coverage[pairs].min())}; uncovered pairs {comp.uncovered_fraction(W_and):.4f}")
x = torch.zeros(1, m)
x[0, [3, 17]] = 1.0
readoff = comp.u_and_readoff(W_and, comp.u_and_hidden(W_and, x))[0]
others = pairs.clone()
others[3, 17] = False
half_on = others & ((x[0][:, None] + x[0][None, :]) == 1)
print(f"only features 3 and 17 on: AND(3, 17) = {float(readoff[3, 17]):.3f}; pairs with one feature on: mean "
      f"{float(readoff[half_on].mean()):.3f}, max {float(readoff[half_on].max()):.3f}; pairs with none on: "
      f"max {float(readoff[others & ~half_on].max()):.3f}")

# %% [markdown]
# AND(3, 17) is exact. A pair with only one of its features on does not read 0 (0.14 on
# average here): its neurons fire when they happen to be wired to the other active feature
# too, about a fraction `p` of them. In general, with `l` features on, the other active features leak in: a
# neuron wired to `i` and `j` is also wired to each other active feature with probability `p`.
#
# ✏️ **Exercise 6.** Derive the expected read-off of AND(i, j) with `l` features on, to first
# order in `p`, in the three cases: both `i` and `j` on, exactly one on, neither on. (For a
# neuron wired to both: count how many *other* active features it also sees, then apply
# `ReLU(· − 1)`. With neither on, the neuron needs two leaks to fire.) Return a dict with
# keys `"both"`, `"one"`, `"none"`.

# %%
def predicted_u_and_readoffs(p: float, l: int) -> dict[str, float]:
    """First-order expected read-off with l features on, for pairs with both/one/none on."""
    # YOUR CODE HERE
    raise NotImplementedError("exercise: predicted_u_and_readoffs")


checks.check_predicted_u_and_readoffs(predicted_u_and_readoffs)

# %% [markdown]
# Test the laws on the construction above for `l = 2, …, 8` (256 random inputs each):

# %%
ls = list(range(2, 9))
measured = {case: [] for case in ("both", "one", "none")}
predicted = {case: [] for case in ("both", "one", "none")}
for l in ls:
    got = comp.measure_u_and_readoffs(W_and, l, batch=256, generator=torch.Generator().manual_seed(l))
    law = comp.predicted_u_and_readoffs(p, l)
    for case in measured:
        measured[case].append(got[case])
        predicted[case].append(law[case])
for case in measured:
    print(f"{case:4s}: measured {fmt(measured[case], 3)}")
    print(f"      predicted {fmt(predicted[case], 3)}")
plots.plot_u_and_errors(ls, measured, predicted)
plt.show()

# %% [markdown]
# The measured read-offs follow the laws: both on reads `1 + (l − 2)p`, one on `(l − 1)p`,
# none on `C(l, 2)p²`. The first two are exact (the leaks add linearly once the neuron is
# already at threshold); the third is a first-order approximation of `lp − 1 + (1 − p)^l`,
# which it overestimates as `lp` grows (at `l = 8`: 0.28 against 0.23 exactly). The AND is
# read correctly while `1 + (l − 2)p` stays well above `(l − 1)p`, i.e. while `lp` is small:
# sparsity is what makes superposition computable.
#
# **Where it fails.** Coverage needs `d p²` large. Keep `d = 1,000` and shrink `p`: count the
# uncovered pairs against `e^{−d p²}` and the fraction of all 19,900 ANDs classified right
# (read-off above 0.5 exactly when both features are on) with `l = 3`.

# %%
for p_small in (0.01, 0.02, 0.03, 0.05, 0.1):
    W_p = comp.u_and_wiring(m, d, p_small, torch.Generator().manual_seed(1))
    accuracy = comp.u_and_accuracy(W_p, 3, batch=128, generator=torch.Generator().manual_seed(2))
    print(f"p = {p_small:4.2f}: d p² = {d * p_small ** 2:5.2f}, uncovered {comp.uncovered_fraction(W_p):.3f} "
          f"(e^(−d p²) = {math.exp(-d * p_small ** 2):.3f}), ANDs right {accuracy:.3f}")

# %% [markdown]
# At `d p² = 10`, 1,000 neurons compute all 19,900 ANDs with 99.9 % of them right on inputs
# with three features on. Scale it up: `m = 500` features have 124,750 ANDs; with
# `p = 0.05`, `d = 4,000` neurons keep `d p² = 10`.

# %%
W_large = comp.u_and_wiring(500, 4_000, 0.05, torch.Generator().manual_seed(3))
large_accuracy = comp.u_and_accuracy(W_large, 3, batch=32, generator=torch.Generator().manual_seed(4))
print(f"{math.comb(500, 2):,} ANDs from 4,000 neurons ({math.comb(500, 2) / 4_000:.0f} per neuron): uncovered "
      f"{comp.uncovered_fraction(W_large):.4f}, ANDs right {large_accuracy:.4f}")

# %% [markdown]
# The number of ANDs grows like `m²` and the neurons needed only like `1/p²`; the
# construction's cost is set by sparsity, not by the number of functions. Below `d p² ≈ 1` most pairs have no neuron at all and the
# construction collapses. A wiring that is too dense fails the other way: the leak
# `(l − 1)p` of a half-on pair reaches the threshold. Between the two, `d p² ≫ 1` and
# `l p ≪ 1`, `d ≪ C(m, 2)` neurons compute all `C(m, 2)` functions.
#
# **Explore.** The sliders rebuild the construction for `m = 100` features: move `d`, `p` and
# `l` and compare the measured read-offs with your laws; push `d p²` below 1 to watch pairs go
# uncovered.

# %% tags=["nbval-ignore-output"]
from course_utils.widgets import u_and_explorer

u_and_explorer()

# %% [markdown]
# ## 4. Compressed computation, and a debate
#
# Braun et al. (2025) trained a toy model that seemed to compute in superposition: 100
# features `x_i ∈ U[−1, 1]` (each on with probability `p = 0.01`) are embedded into a
# 1,000-dimensional residual stream by a fixed random `W_E` with unit-norm columns; one MLP
# of **50** ReLU neurons (no bias) adds its output; the readout is `W_Eᵀ`. The label is
# `x + ReLU(x)`: the residual stream carries `x`, and the MLP must compute `ReLU(x_i)` for 100
# features with 50 neurons.
#
# The obvious baseline, the **naive** one, gives 50 features a neuron each and ignores the
# other 50.
#
# ✏️ **Exercise 7.** With an embedding that has no overlaps (`W_Eᵀ W_E = I`), the naive
# baseline is exact on its 50 features and outputs only `x` for the others. Derive its loss:
# the squared error averaged over all `n` features (and the batch), as a function of
# `n_features`, `d_mlp` and `p`.

# %%
def naive_loss(n_features: int, d_mlp: int, feature_probability: float) -> float:
    """The naive baseline's mean squared error with no mixing."""
    # YOUR CODE HERE
    raise NotImplementedError("exercise: naive_loss")


checks.check_naive_loss(naive_loss)

# %% [markdown]
# So the naive baseline has `L/p = 1/12 ≈ 0.083`. Train the model in Braun et al.'s setup
# (AdamW with weight decay 0.01, lr `3e-3` with cosine decay, batch 2,048) twice: with a
# **random** embedding, as in the paper, and with an **orthonormal** one (`W_Eᵀ W_E = I`
# exactly), the control of Bhagat et al. (2025). Braun et al. train 10,000 steps; we train
# 2,000 (about 15 seconds each), which measured 0.0672 against 0.0664 after 5,000.

# %% tags=["nbval-ignore-output"]
residual_models = {}
for embedding in ("random", "orthonormal"):
    model = comp.ResidualMLP(embedding=embedding, device=device, generator=torch.Generator().manual_seed(0))
    train(model, steps=2_000, batch_size=2048, lr=3e-3, schedule="cosine", weight_decay=0.01,
          description=f"{embedding} embedding")
    residual_models[embedding] = model

# %%
per_feature, summary = {}, {}
for embedding, model in residual_models.items():
    x = model.generate_batch(100_000, torch.Generator(device=device).manual_seed(2))
    with torch.no_grad():
        naive = model.naive_baseline()
        trained_err = ((model(x) - model.labels(x)) ** 2).mean(dim=1)[0].cpu() / 0.01
        naive_err = ((naive(x) - naive.labels(x)) ** 2).mean(dim=1)[0].cpu() / 0.01
    per_feature[f"{embedding} embedding"] = {"trained": trained_err, "naive baseline": naive_err}
    summary[embedding] = (float(trained_err.mean()), float(naive_err.mean()))
    print(f"{embedding:11s} embedding: L/p trained {summary[embedding][0]:.4f}, naive baseline on the same "
          f"embedding {summary[embedding][1]:.4f}, naive without mixing 1/12 = {1 / 12:.4f}")
plots.plot_compressed_computation(per_feature, reference=1 / 12, reference_label="naive, no mixing (1/12)")
plt.show()

# %% [markdown]
# With the **random** embedding the trained model reaches `L/p ≈ 0.067`, well below 1/12: 50
# neurons do better than serving 50 features, and the per-feature profile shows how: the loss
# is spread evenly over all 100 features instead of 0 for half and 1/6 for the rest. That
# looked like computation in superposition. With the **orthonormal** embedding the same
# training lands at 1/12, no better than the naive baseline, and its profile is close to the
# naive one: about half the features served almost exactly, the rest not at all.
#
# The difference is the **mixing matrix** `W_Eᵀ W_E − I`. With random unit vectors in 1,000
# dimensions, feature overlaps are about `±1/√1000 ≈ ±0.03`, so the residual stream hands the
# output `x + (W_Eᵀ W_E − I)x`: every label carries a little of the other features. That hurts
# the naive baseline (its loss on the random embedding is twice 1/12), and the trained model
# learns to exploit it: its MLP can use the overlaps, which act like noise correlated with
# the inputs, to lower the loss on the features it cannot serve. Bhagat et al. argue that this,
# and not computing many ReLUs in superposition, is what the model does: take the mixing
# matrix away and nothing is left to exploit. A model that computed in superposition would
# keep its advantage with a clean embedding. Whether trained networks use constructions like
# U-AND at all is an open question.
#
# ## Summary
#
# - A ReLU on the hidden layer makes neurons a **privileged basis**: monosemantic when
#   features are dense, polysemantic when they are sparse.
# - A ReLU network computes `|x|` exactly with two neurons per feature, and in superposition
#   when features are sparse, with **asymmetric** weights and **inhibition** making the
#   interference harmless.
# - **U-AND**: `d` random neurons compute all `C(m, 2)` ANDs when `d p² ≫ 1` and `l p ≪ 1`,
#   with read-offs `1 + (l − 2)p`, `(l − 1)p` and `C(l, 2)p²` that you derived and measured.
# - **Compressed computation** beats the naive baseline only through the embedding's mixing
#   matrix: with `W_Eᵀ W_E = I` the advantage disappears.
#
# **Differences from the papers.** We train the residual MLP for 2,000 steps (Braun et al.
# 10,000) and the abs(x) sweep for 5,000 steps from a small initialisation, to fit the time
# budget. Our sparse abs(x) models are superposed and compute `|x|` well, but their loss stays
# 1.6–2.8× above the best solution without superposition, and the `S = 0.99` model is
# undertrained (section 2).
