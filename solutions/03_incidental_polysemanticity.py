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
# # Chapter 03 — Incidental polysemanticity
#
# Chapters 01 and 02 explained polysemantic neurons by **superposition**: more features than
# dimensions force features to share. This chapter shows a second origin, with *more* neurons
# than features: random initialisation assigns two features to the same neuron by chance, and
# training locks the coincidence in. It reproduces Lecomte, Thaman, Schaeffer, Bashkansky,
# Chow & Koyejo (2023), *What Causes Polysemanticity? An Alternative Origin Story of Mixed
# Selectivity from Incidental Causes* (arXiv 2312.03096).
#
# **You will reproduce**
# 1. **A privileged basis from L1**: with an L1 penalty every feature ends on exactly one
#    neuron, and all other weights go to zero; without it, nothing lines up with the neurons.
# 2. **The birthday problem**: with `m` neurons and `n` features, about `n²/(4m)` neurons end
#    up polysemantic. You derive the exact prediction and test it on trained models.
# 3. **Winner-take-all**: under gradient descent the neuron where a feature's initial weight
#    is largest usually wins it; under Adam much less often.
# 4. **Noise as a sparsity pressure**: Bernoulli hidden noise makes features sparse, Gaussian
#    noise of the same variance does not.
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
import matplotlib.pyplot as plt
import torch
from torch import Tensor

from course_utils import checks, plots
from course_utils import polysemanticity as poly
from course_utils.device import set_seed

torch.set_printoptions(precision=3, sci_mode=False)
set_seed(0)


def fmt(values, digits: int = 2) -> str:
    """A row of numbers at a fixed precision (stable output for the notebook tests)."""
    return " ".join(f"{float(v):.{digits}f}" for v in values)


# %% [markdown]
# ## 1. The model: an autoencoder with room to spare
#
# The paper's model is the simplest that can show the effect: a tied ReLU autoencoder
#
# $$y = \mathrm{ReLU}(W W^\top x), \qquad W \in \mathbb{R}^{n \times m},\ m \ge n,$$
#
# with **rows of `W` for features and columns for neurons** (the transpose of chapter 01's
# convention). The data are the `n` standard basis vectors `e_i`: one feature at a time, so
# features never co-occur and there is no need for any superposition. The loss is the *sum*
# of squared errors over the `n` inputs plus an L1 penalty on the weights,
#
# $$L = \sum_{i=1}^{n} \lVert \mathrm{ReLU}(W W^\top e_i) - e_i \rVert^2 + \lambda \lVert W \rVert_1 .$$
#
# Because the inputs are the identity, the whole batch of outputs before the ReLU is the Gram
# matrix `W Wᵀ` (`n × n`): entry `(i, k)` is output `k` for input `e_i`.
#
# ✏️ **Exercise 1.** Implement the loss, batched over instances:
# `W: (instances, n, m) → (instances,)`.

# %%
def autoencoder_loss(W: Tensor, l1: float) -> Tensor:
    """Σ_i ‖ReLU(W Wᵀ e_i) − e_i‖² + λ Σ|W| per instance: (instances, n, m) -> (instances,)."""
    ### BEGIN SOLUTION
    n = W.shape[-2]
    x = torch.eye(n, dtype=W.dtype, device=W.device).expand(W.shape[0], n, n)
    y = torch.relu(x @ W @ W.transpose(-1, -2))
    return (y - x).square().sum(dim=(-1, -2)) + l1 * W.abs().sum(dim=(-1, -2))
    ### END SOLUTION


checks.check_autoencoder_loss(autoencoder_loss)

# %% [markdown]
# ## 2. L1 makes the basis privileged
#
# The paper trains with full-batch **AdamW** (learning rate `1e-3`, PyTorch's default weight
# decay `0.01`), `λ = 1e-3`, for 7,500 steps, from `W ~ N(0, 1/m)`, which gives every
# feature's row a norm of about 1 from the start. The library's `poly.train_autoencoders` runs
# many seeds as one batched tensor program; by default it is the paper's autograd loop, and with
# `fast=True`, as in every run of this chapter, a closed-form gradient tested equal to autograd.
# Train 16 seeds with `n = 32` features and `m = 64` neurons, with and without L1.

# %% tags=["nbval-ignore-output"]
with_l1 = poly.train_autoencoders(32, 64, 16, l1=1e-3, device=device, description="λ = 1e-3", fast=True)
without_l1 = poly.train_autoencoders(32, 64, 16, l1=0.0, device=device, description="λ = 0", fast=True)

# %% [markdown]
# A weight is **active** when `|w| ∈ [0.8, 1.2]` (the authors' threshold). Measure how
# axis-aligned the two solutions are: the fraction of features with exactly one active
# weight, and the fraction of the other weights that are (nearly) zero.

# %%
for name, run in (("λ = 1e-3", with_l1), ("λ = 0   ", without_l1)):
    basis = poly.privileged_basis(run.W)
    loss = poly.autoencoder_loss(run.W, 0.0)
    print(f"{name}: one active weight {basis['one_active_weight']:.3f}, other weights |w| < 0.05 "
          f"{basis['others_near_zero']:.3f}, reconstruction error (max over seeds) {float(loss.max()):.4f}")
plots.plot_polysemantic_weights([with_l1.W[0], without_l1.W[0]], titles=["λ = 1e-3 (seed 0)", "λ = 0 (seed 0)"])
plt.show()

# %% [markdown]
# Both models reconstruct their inputs almost perfectly, but only the L1 model is
# **axis-aligned**: each feature lives on one neuron, so
# "what does neuron `j` represent?" has an answer. Without L1 every neuron carries a bit of
# every feature: the solution is any set of rows with nonpositive overlaps, and the neuron
# basis is not special. (The heatmaps sort the neurons so that each feature's winner comes
# first; a triangle marks a neuron with two active weights.)
#
# Look at the left matrix: some columns hold **two** features although half the neurons are
# unused. These are the incidentally polysemantic neurons.
#
# ## 3. Counting polysemantic neurons
#
# ✏️ **Exercise 2.** Count, per instance, the neurons on which two or more features have an
# active weight (`|w| ∈ [0.8, 1.2]`): `(instances, n, m) → (instances,)`.

# %%
def count_polysemantic_neurons(W: Tensor) -> Tensor:
    """Neurons with active weights (|w| in [0.8, 1.2]) from two or more features: (instances,)."""
    ### BEGIN SOLUTION
    active = (W.abs() >= 0.8) & (W.abs() <= 1.2)
    return (active.sum(dim=-2) >= 2).sum(dim=-1)
    ### END SOLUTION


checks.check_count_polysemantic_neurons(count_polysemantic_neurons)

# %% [markdown]
# Which features share a neuron? If features `i` and `j` both have weight `+1` on neuron `k`,
# then `W_i · W_j = 1 > 0` and input `e_i` produces output `j`: the ReLU passes the error on.
# With **opposite** signs `W_i · W_j = −1`, and the ReLU clips it to 0: a free collision.
# Count the shared pairs by sign over the 16 seeds (the library's reference versions of your
# functions are used from here on):

# %%
signs = poly.shared_neuron_signs(with_l1.W)
print(f"polysemantic neurons per seed: {fmt(poly.polysemantic_neurons(with_l1.W).float(), 0)}")
print(f"pairs sharing a neuron: {signs['opposite_sign']} with opposite signs, {signs['same_sign']} with the same sign")

# %% [markdown]
# Every collision that survives training has opposite signs.
#
# ## 4. The birthday problem
#
# The paper's explanation: L1 makes each feature **winner-take-all**: one neuron gets it, and
# which one is decided by the random initialisation. If winners were uniformly random, then
# `n` features in `m` neurons collide like birthdays in a year: about `C(n, 2)/m ≈ n²/(2m)`
# pairs share a neuron. Half of them have opposite signs and survive, so about `n²/(4m)`
# neurons end polysemantic. That is the paper's line; for `m` not much larger than `n` the
# leading order is not accurate.
#
# ✏️ **Exercise 3.** Derive the expected number of polysemantic neurons exactly, under this
# model: each feature independently picks a uniformly random neuron and a random sign, and a
# neuron is polysemantic when it gets **at least one positive and at least one negative**
# feature (two features of the same sign cannot both stay). The check compares your formula
# with a Monte Carlo simulation of this model at several `(n, m)`.

# %%
def predicted_polysemantic(n: int, m: int) -> float:
    """Expected number of neurons that win at least one positive and one negative feature."""
    ### BEGIN SOLUTION
    no_positive = (1 - 1 / (2 * m)) ** n  # the same for no negative
    neither = (1 - 1 / m) ** n
    return m * (1 - 2 * no_positive + neither)
    ### END SOLUTION


checks.check_predicted_polysemantic(predicted_polysemantic)

# %% [markdown]
# Now test the prediction on trained models. Train 32 seeds at each of `m = 64, 128, 256,
# 512` for `n = 32` in the paper's setup (AdamW, `λ = 1e-3`, 7,500 steps; about 45 seconds),
# and again with plain **gradient descent** (`lr = 0.05`, `λ = 0.03`, 3,000 steps; about 10
# seconds), the dynamics the paper's theory describes. The widths start at `m = 2n`: at
# `m = n` training converges poorly (with 32 features, only 85 % of them end with a single
# active weight after 7,500 steps, against 99.4 % at `m = 2n`), so counts there mean little.
# Both sweeps take the fast path (`fast=True`).

# %% tags=["nbval-ignore-output"]
widths = [64, 128, 256, 512]
adamw_sweep = poly.collision_sweep(32, widths, 32, device=device, fast=True)
gd_sweep = poly.collision_sweep(32, widths, 32, optimizer="gd", l1=0.03, steps=3_000, device=device, fast=True)


# %%
def print_sweep(name: str, sweep: poly.CollisionSweep) -> None:
    print(f"{name}: m = {' '.join(f'{m:4d}' for m in sweep.widths)}")
    print(f"  measured (mean of {sweep.counts.shape[1]}) : {fmt(sweep.mean)}")
    print(f"  ± 1 standard error     : {fmt(sweep.standard_error)}")
    print(f"  measured / prediction  : {fmt(sweep.mean / sweep.prediction)}")
    print(f"  log-log slope {sweep.slope():.2f}; one active weight per feature: "
          f"{fmt([p['one_active_weight'] for p in sweep.privileged], 3)}")


print(f"prediction             : {fmt(adamw_sweep.prediction)}")
print(f"n²/(4m)                : {fmt(adamw_sweep.leading_order)}")
print_sweep("AdamW (the paper)", adamw_sweep)
print_sweep("gradient descent ", gd_sweep)
plots.plot_collision_sweep({"AdamW, λ = 1e-3": adamw_sweep, "GD, λ = 0.03": gd_sweep})
plt.show()

# %% [markdown]
# Both optimisers land on the birthday prediction, well within a factor of 2 at every width
# (seed-to-seed noise is large: compare the standard errors), and the count falls like `1/m`
# (the exact prediction's own slope over this range is −0.90, the leading order's −1).
# **More neurons do not remove polysemanticity; they only make it rarer**, at a rate the
# birthday problem predicts. The paper shows the same plot for `n = 256` and `m` up to 4,096
# (`n²/(4m)` from 64 down to 4); we use `n = 32` so it runs in a minute, and the exact
# prediction because at `m = 2n` the leading order is 30 % too high.
#
# One caveat we measured at a larger size (`python benchmarks/polysemanticity.py --workload
# larger`, `n = 64`, 32 seeds, about 4 minutes): AdamW matches the prediction within 15 % at
# `m = 128, 256, 512`, but at `m = 1024` it gives 0.41 against 0.95 (slope −1.27), and 16 more
# seeds or twice the steps give 0.50. Gradient descent at that width gives 1.19. So at large
# `m/n` Adam's winners are not quite independent of each other; we have not found out why.
#
# ## 5. Winner-take-all, and who wins
#
# Why are the winners random? The paper analyses gradient flow on one feature's row `w`
# (`m` weights): the reconstruction term keeps `‖w‖ ≈ 1`, and the L1 term subtracts the same
# amount `λ` from every `|w_j|` per unit time. Small weights hit zero first, the survivors
# are renormalised upwards, and the last survivor is the weight that was **largest at
# initialisation**. The number of surviving weights shrinks as `m′(t) ≈ 1/(1/√m + λt)²`.
#
# ✏️ **Exercise 4.** Measure the winner-take-all claim: per instance, the fraction of features
# whose final winning neuron (largest `|w|`) is the neuron of their largest initial `|w|`.

# %%
def initial_argmax_win_rate(W_init: Tensor, W: Tensor) -> Tensor:
    """Fraction of features won by the argmax of their initial |weights|: (instances,)."""
    ### BEGIN SOLUTION
    return (W_init.abs().argmax(dim=-1) == W.abs().argmax(dim=-1)).float().mean(dim=-1)
    ### END SOLUTION


checks.check_initial_argmax_win_rate(initial_argmax_win_rate)

# %%
print(f"m                  : {' '.join(f'{m:5d}' for m in widths)}")
print(f"chance 1/m         : {fmt([1 / m for m in widths], 3)}")
print(f"GD wins (initial)  : {fmt(gd_sweep.win_rates.mean(dim=1), 3)}")
print(f"AdamW wins (initial): {fmt(adamw_sweep.win_rates.mean(dim=1), 3)}")

# %% [markdown]
# Under **gradient descent** the initial argmax wins most features, 30–300 times more often
# than chance; it does not win all of them, because the interference between features also
# pushes weights during the first steps. Under **AdamW** it wins far less often (still far
# above chance). Adam divides each weight's update by the running size of its own gradient,
# so small and large weights move at similar speeds, and the head start of the largest
# weight, which decides the race under gradient descent, mostly disappears. Yet the collision
# counts agree with the prediction under both: what the birthday argument needs is that
# winners are *random and independent*, not *which* neuron wins.
#
# Watch the sparsification happen under gradient descent: one run with `n = 32`, `m = 128`,
# `λ = 0.01`, recording the number of surviving weights per feature (`|w| > 0.02`) and the
# row's ℓ1 norm, against the paper's prediction.

# %% tags=["nbval-ignore-output"]
flow = poly.train_autoencoders(32, 128, 8, l1=0.01, optimizer="gd", steps=3_000, record_every=10,
                               device=device, description="gradient descent, λ = 0.01", fast=True)

# %%
predicted = poly.predicted_surviving(128, 0.01, flow.time)
surviving = flow.surviving_history.mean(dim=1)
l1_norm = flow.l1_history.mean(dim=1)
for step in (0, 500, 1000, 1500, 2000, 3000):
    k = flow.record_steps.index(step)
    print(f"t = {float(flow.time[k]):5.1f}: m' measured {float(surviving[k]):6.1f}, predicted "
          f"{float(predicted[k]):6.1f} | ℓ1 measured {float(l1_norm[k]):5.2f}, predicted {float(predicted[k].sqrt()):5.2f}")
early = flow.time <= 50  # before the floor of one weight: the theory says 1/ℓ1 = 1/√m + λt
t_early, inverse = flow.time[early], 1 / l1_norm[early].double()
rate = float(((t_early - t_early.mean()) * (inverse - inverse.mean())).sum() / (t_early - t_early.mean()).square().sum())
print(f"1/ℓ1 grows at {rate / 0.01:.2f} λ per unit time for t <= 50 (theory: 1.00 λ)")
plots.plot_sparsification(flow.time, surviving, l1_norm, predicted,
                          title="n = 32, m = 128, λ = 0.01, gradient descent")
plt.show()

# %% [markdown]
# The measured curves have the predicted shape: a plateau, a power-law fall and a floor at
# one weight per feature. They lag the prediction by a factor of about 1.5–2 in time: the
# ℓ1 norm's inverse grows linearly in `t`, as the theory says, but at about two thirds of
# the rate `λ` it predicts. The prediction idealises the row as renormalised instantly and the weights as
# independent of the other features; in the trained model the norm lags and the
# interference between features slows the race down.
#
# ## 6. Noise as a source of sparsity
#
# L1 is not the only pressure towards a privileged basis. The paper's second mechanism has
# **no L1**: instead, noise is added to the hidden layer, `y = ReLU(W (Wᵀx + ε))`, a fresh
# draw every step. Compare Bernoulli noise (`ε_j = ±σ`, excess kurtosis −2) with Gaussian noise
# of the same variance (`N(0, σ²)`, excess kurtosis 0), and track each feature's **fourth
# norm** `Σ_j w_ij⁴`: 1 when the feature sits on one neuron, about `3/m` when it is spread out.
# The setup follows the authors' code: `n = 8`, `m = 16`, SGD with `lr = 0.02`, `σ = 0.15`; we
# train 30,000 steps (they train 100,000) on 16 seeds each (about 10 seconds).

# %% tags=["nbval-ignore-output"]
noise_runs = {
    kind: poly.train_autoencoders(8, 16, 16, l1=0.0, optimizer="gd", lr=0.02, steps=30_000, noise=kind,
                                  sigma=0.15, record_every=250, device=device, description=f"{kind} noise",
                                  fast=True)
    for kind in ("bernoulli", "gaussian")
}

# %%
for kind, run in noise_runs.items():
    history = run.fourth_norm_history.mean(dim=1)
    print(f"{kind:9s}: mean fourth norm at steps 0, 10k, 20k, 30k = "
          f"{fmt([history[run.record_steps.index(s)] for s in (0, 10_000, 20_000, 30_000)])}")
plots.plot_fourth_norms(noise_runs["bernoulli"].record_steps,
                        {f"{k}, σ = 0.15": r.fourth_norm_history for k, r in noise_runs.items()},
                        title="n = 8, m = 16, no L1")
plt.show()
plots.plot_polysemantic_weights([noise_runs["bernoulli"].W[0], noise_runs["gaussian"].W[0]],
                                titles=["Bernoulli noise (seed 0)", "Gaussian noise (seed 0)"])
plt.show()

# %% [markdown]
# Bernoulli noise drives the fourth norm up towards 1: it levels off near 0.8, where each
# feature has one dominant weight (about 0.9, the rest spread thinly over the other neurons;
# the rows keep norm ≈ 1). Gaussian noise leaves it where it started. A rotation of the
# hidden layer leaves Gaussian noise unchanged, so it cannot prefer the neuron basis; the
# Bernoulli distribution lives on the corners of a cube and, with its negative excess
# kurtosis, favours rows concentrated on few neurons. Noise whose distribution is not
# rotation-invariant is enough to make a basis privileged, and with it comes incidental
# polysemanticity.
#
# ## 7. Explore
#
# The sliders retrain 32 seeds of `n = 16` features (gradient descent, 3,000 steps, under a
# second) for a width ratio `m/n` and an L1 strength `λ`, and show seed 0's weights, sorted so
# that polysemantic neurons (triangles) stand out, with the count against your prediction. Try
# `λ = 0` (no privileged basis, nothing counts as active) and small `λ` (not yet sparse after
# 3,000 steps: the race takes time `≈ 1/λ`).

# %% tags=["nbval-ignore-output"]
from course_utils.widgets import polysemanticity_explorer

polysemanticity_explorer()

# %% [markdown]
# ## Summary
#
# - With more neurons than features and an L1 penalty (or non-Gaussian noise), each feature
#   ends up on exactly one neuron: the basis is **privileged**.
# - Which neuron wins is decided by the random initialisation, so features **collide by
#   chance**: about `n²/(4m)` neurons (exactly `m[1 − 2(1 − 1/(2m))ⁿ + (1 − 1/m)ⁿ]`) hold two
#   features of opposite signs, measured within a small factor across widths with slope near −1.
# - Under gradient descent the initially largest weight usually wins; Adam weakens that link
#   but not the collision count.
# - Polysemanticity is therefore not proof of superposition: it can be an accident of
#   training, and widening a layer only makes it rarer, like `1/m`.
#
# **Differences from the paper.** We use `n = 32` features (the paper `n = 256`) and 30,000
# noise-training steps (100,000) to fit the time budget; the measured sparsification runs
# about 1.5–2× slower than the theory's idealised prediction (section 5).
