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
# 5. **Polysemanticity without sparsity**: under cross-entropy, one neuron reading four
#    mutually exclusive tokens does better firing on two of them than on one (Towards
#    Monosemanticity's argument), while squared error has no preference.
#
# Exercises are marked ✏️; each has a check, and `checks.hint("name")` helps when you are stuck.
# Your code is **load-bearing**: each check hands the rest of the chapter the function to run,
# yours once it passes, the course's until then (said on the line under the check), and every
# result says whose code made it. The chapter runs to the end before you solve anything.
#
# | # | you build | the chapter runs it for |
# |---|---|---|
# | 1 | `autoencoder_loss` | every training run of your loop |
# | 2 ★ | **capstone:** `train_autoencoder`, the paper's training loop (initialisation, AdamW, the summed loss) | the two models of §3–4 |
# | 3 | `count_polysemantic_neurons` | every count, the sweeps' included |
# | 4 | `predicted_polysemantic`: the birthday problem, exactly | every prediction |
# | 5 | `initial_argmax_win_rate` | the winner-take-all table |
# | 6 | `ce_lower_bound`: one neuron, four tokens, in closed form | §8's comparison |
#
# 🔮 marks a **predict-then-see** question: write your prediction down before you run the next
# cell; the answer is folded under it.
#
# **Time:** about 2½ minutes of compute on a laptop CPU.

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
    # YOUR CODE HERE
    raise NotImplementedError("exercise: autoencoder_loss")


loss_fn = checks.check_autoencoder_loss(autoencoder_loss)

# %% [markdown]
# ## 2. ★ Capstone: the training loop
#
# The paper trains with full-batch **AdamW** (learning rate `1e-3`, PyTorch's default weight
# decay `0.01`), `λ = 1e-3`, for 7,500 steps, from `W ~ N(0, 1/m)`, which gives every
# feature's row a norm of about 1 from the start. Many seeds train at once as one batched
# tensor program: `W` is `(instances, n, m)`, and each instance has its own loss.
#
# ✏️ **Exercise 2 (capstone).** Write the loop, `train_autoencoder(n, m, instances, l1, loss_fn,
# ...) -> (W_init, W)`:
#
# - draw `W = torch.randn(instances, n, m, generator=g) / √m` from **one** generator
#   `g = torch.Generator().manual_seed(seed)`, move it to `device` and make it a leaf tensor
#   that requires grad;
# - keep a **copy** of the initial weights, `W_init`, on the CPU (careful: `.cpu()` of a CPU
#   tensor is the same tensor, and `W` is trained in place);
# - one `torch.optim.AdamW([W], lr=lr, weight_decay=weight_decay)`, and at every step the full
#   batch: `loss_fn(W, l1)` (one loss per instance; the chapter passes `loss_fn`, what
#   exercise 1's check returned), **summed** over the instances before `backward()`;
# - a progress bar (`tqdm(range(steps), disable=not progress)`);
# - return `(W_init, W)`, both detached and on the CPU.
#
# The check trains small autoencoders with your loop and with the course's for 150 steps
# (several sizes, `λ`, learning rates and weight decays) and compares `W_init` exactly and the
# trained `W`.

# %%
import math

from tqdm.auto import tqdm


def train_autoencoder(n: int, m: int, instances: int, l1: float, loss_fn, steps: int = 7_500,
                      lr: float = 1e-3, weight_decay: float = 0.01, seed: int = 0, device="cpu",
                      progress: bool = True) -> tuple[Tensor, Tensor]:
    """Full-batch AdamW on loss_fn(W, l1) summed over instances, from W ~ N(0, 1/m); returns (W_init, W)."""
    # YOUR CODE HERE
    raise NotImplementedError("exercise: train_autoencoder")


train_fn = checks.check_train_autoencoder(train_autoencoder)

# %% [markdown]
# ## 3. L1 makes the basis privileged
#
# Train 16 seeds with `n = 32` features and `m = 64` neurons with your loop, with and without
# L1 (7,500 steps each; about 10 seconds per run on a laptop CPU).

# %% tags=["nbval-ignore-output"]
W_l1_init, W_l1 = train_fn(32, 64, 16, 1e-3, loss_fn, device=device)
W_no_l1_init, W_no_l1 = train_fn(32, 64, 16, 0.0, loss_fn, device=device)

# %% [markdown]
# A weight is **active** when `|w| ∈ [0.8, 1.2]` (the authors' threshold). Measure how
# axis-aligned the two solutions are: the fraction of features with exactly one active
# weight, and the fraction of the other weights that are (nearly) zero.
#
# 🔮 **Predict.** Both models reconstruct their 32 inputs. In which of them does each feature
# end on exactly one neuron: with L1, without, or both?
#
# <details><summary>Answer</summary>
#
# Only with L1 (99.2 % of features there, none without). The reconstruction term alone is
# satisfied by any rows of norm 1 with nonpositive overlaps, whatever their direction; only
# the penalty on `|w|` prefers rows with one nonzero weight.
# </details>

# %% tags=["nbval-approx-0.005"]
for name, W in (("λ = 1e-3", W_l1), ("λ = 0   ", W_no_l1)):
    basis = poly.privileged_basis(W)
    loss = loss_fn(W, 0.0)
    print(f"{name}: one active weight {basis['one_active_weight']:.3f}, other weights |w| < 0.05 "
          f"{basis['others_near_zero']:.3f}, reconstruction error (max over seeds) {float(loss.max()):.4f}")
print(checks.made_with(loss_fn, train_fn))
plots.plot_polysemantic_weights([W_l1[0], W_no_l1[0]], titles=["λ = 1e-3 (seed 0)", "λ = 0 (seed 0)"])
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
# ## 4. Counting polysemantic neurons
#
# ✏️ **Exercise 3.** Count, per instance, the neurons on which two or more features have an
# active weight (`|w| ∈ [0.8, 1.2]`): `(instances, n, m) → (instances,)`.

# %%
def count_polysemantic_neurons(W: Tensor) -> Tensor:
    """Neurons with active weights (|w| in [0.8, 1.2]) from two or more features: (instances,)."""
    # YOUR CODE HERE
    raise NotImplementedError("exercise: count_polysemantic_neurons")


count_fn = checks.check_count_polysemantic_neurons(count_polysemantic_neurons)

# %% [markdown]
# Which features share a neuron? If features `i` and `j` both have weight `+1` on neuron `k`,
# then `W_i · W_j = 1 > 0` and input `e_i` produces output `j`: the ReLU passes the error on.
# With **opposite** signs `W_i · W_j = −1`, and the ReLU clips it to 0: a free collision.
# Count the polysemantic neurons of your 16 models with your function, and the shared pairs by
# sign.
#
# 🔮 **Predict.** Of the pairs of features that share a neuron at the end of training, how many
# have the same sign?
#
# <details><summary>Answer</summary>
#
# None: all 60 shared pairs have opposite signs. Same-sign pairs start out as often as
# opposite-sign ones, but their overlap `W_i · W_j > 0` leaks through the output ReLU as an
# error, and training pushes one of the two features off the neuron.
# </details>

# %%
signs = poly.shared_neuron_signs(W_l1)
print(f"polysemantic neurons per seed: {fmt(torch.as_tensor(count_fn(W_l1)).float(), 0)}")
print(f"pairs sharing a neuron: {signs['opposite_sign']} with opposite signs, {signs['same_sign']} with the same sign")
print(checks.made_with(train_fn, count_fn))

# %% [markdown]
# Every collision that survives training has opposite signs.
#
# ## 5. The birthday problem
#
# The paper's explanation: L1 makes each feature **winner-take-all**: one neuron gets it, and
# which one is decided by the random initialisation. If winners were uniformly random, then
# `n` features in `m` neurons collide like birthdays in a year: about `C(n, 2)/m ≈ n²/(2m)`
# pairs share a neuron. Half of them have opposite signs and survive, so about `n²/(4m)`
# neurons end polysemantic. That is the paper's line; for `m` not much larger than `n` the
# leading order is not accurate.
#
# ✏️ **Exercise 4.** Derive the expected number of polysemantic neurons exactly, under this
# model: each feature independently picks a uniformly random neuron and a random sign, and a
# neuron is polysemantic when it gets **at least one positive and at least one negative**
# feature (two features of the same sign cannot both stay). The check compares your formula
# with a Monte Carlo simulation of this model at several `(n, m)`.

# %%
def predicted_polysemantic(n: int, m: int) -> float:
    """Expected number of neurons that win at least one positive and one negative feature."""
    # YOUR CODE HERE
    raise NotImplementedError("exercise: predicted_polysemantic")


predict_fn = checks.check_predicted_polysemantic(predicted_polysemantic)

# %% [markdown]
# One more measurement before the sweep, for section 6: which neuron wins each feature.
#
# ✏️ **Exercise 5.** Per instance, the fraction of features whose final winning neuron
# (largest `|w|`) is the neuron of their largest initial `|w|`.

# %%
def initial_argmax_win_rate(W_init: Tensor, W: Tensor) -> Tensor:
    """Fraction of features won by the argmax of their initial |weights|: (instances,)."""
    # YOUR CODE HERE
    raise NotImplementedError("exercise: initial_argmax_win_rate")


win_rate_fn = checks.check_initial_argmax_win_rate(initial_argmax_win_rate)

# %% [markdown]
# Now test the prediction on trained models: 32 seeds at each of `m = 64, 128, 256, 512` for
# `n = 32` in the paper's setup (AdamW, `λ = 1e-3`, 7,500 steps), and again with plain
# **gradient descent** (`lr = 0.05`, `λ = 0.03`, 3,000 steps), the dynamics the paper's theory
# describes. The widths start at `m = 2n`: at `m = n` training converges poorly (with 32
# features, only 85 % of them end with a single active weight after 7,500 steps, against
# 99.2 % at `m = 2n` in section 3), so counts there mean little.
#
# That is 256 models of 7,500 steps: your loop would take minutes, so the sweeps use the
# course's **fast path**, `poly.train_autoencoders(..., fast=True)`: the same AdamW steps with
# the gradient of the loss in closed form (the inputs are the identity, so the forward pass is
# the Gram matrix `W Wᵀ` and its gradient two matrix products) instead of autograd. First,
# proof on a small case that it takes your loop's steps (8 features, 16 neurons, 4 seeds, 500
# steps):

# %% tags=["nbval-ignore-output"]
small_init, small_yours = train_fn(8, 16, 4, 1e-3, loss_fn, steps=500, device=device, progress=False)
small_fast = poly.train_autoencoders(8, 16, 4, l1=1e-3, steps=500, device=device, progress=False, fast=True)
fast_gap = float((small_fast.W - small_yours).abs().max())
print(checks.made_with(loss_fn, train_fn), "Against the course's fast path.")
print(f"W_init identical: {torch.equal(small_init, small_fast.W_init)}; max |ΔW| after 500 steps: {fast_gap:.1e} "
      f"(the weights are about {float(small_yours.abs().max()):.1f} at most)")

# %% [markdown]
# The two agree to float rounding (the closed form adds the same terms in another order).
# Over thousands of steps such rounding differences grow, because Adam divides each update
# by the weight's own small running gradient, but the steps are the same.

# %% [markdown]
# The sweeps count with your `count_polysemantic_neurons`, predict with your
# `predicted_polysemantic` and measure the winners with your `initial_argmax_win_rate`
# (about a minute in all).

# %% tags=["nbval-ignore-output"]
widths = [64, 128, 256, 512]
measures = dict(count=count_fn, predict=predict_fn, win_rate=win_rate_fn)
adamw_sweep = poly.collision_sweep(32, widths, 32, device=device, fast=True, **measures)
gd_sweep = poly.collision_sweep(32, widths, 32, optimizer="gd", l1=0.03, steps=3_000, device=device, fast=True,
                                **measures)

# %% [markdown]
# 🔮 **Predict.** Each doubling of `m` gives every feature twice as many neurons to land on.
# What happens to the number of polysemantic neurons per model: about the same, halved, or
# quartered?
#
# <details><summary>Answer</summary>
#
# About halved: pairs collide with probability about `1/m` each, so the count falls like
# `1/m` (measured log-log slopes −0.96 under AdamW and −0.83 under gradient descent: 3.75 and
# 2.91 per model at `m = 64`, 0.47 and 0.53 at `m = 512`; an AVX-512 CPU gives −0.91 and 0.53 under AdamW). More room makes polysemanticity
# rarer, not absent.
# </details>


# %% tags=["nbval-approx-0.2"]
def print_sweep(name: str, sweep: poly.CollisionSweep) -> None:
    print(f"{name}: m = {' '.join(f'{m:4d}' for m in sweep.widths)}")
    print(f"  measured (mean of {sweep.counts.shape[1]}) : {fmt(sweep.mean)}")
    print(f"  ± 1 standard error     : {fmt(sweep.standard_error)}")
    print(f"  measured / prediction  : {fmt(sweep.mean / sweep.prediction)}")
    # The fit needs a polysemantic neuron at every width (a smoke run's models may have none).
    slope = f"{sweep.slope():.2f}" if bool((sweep.mean > 0).all()) else "not fitted (no polysemantic neurons at some m)"
    print(f"  log-log slope {slope}; one active weight per feature: "
          f"{fmt([p['one_active_weight'] for p in sweep.privileged], 3)}")


print(f"prediction             : {fmt(adamw_sweep.prediction)}")
print(f"n²/(4m)                : {fmt(adamw_sweep.leading_order)}")
print_sweep("AdamW (the paper)", adamw_sweep)
print_sweep("gradient descent ", gd_sweep)
print(checks.made_with(count_fn, predict_fn), "Trained by the course's fast path.")
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
# > **Open question.** At a larger size (`python benchmarks/polysemanticity.py --workload
# > larger`: `n = 64`, 32 seeds, about 4 minutes) AdamW matches the prediction within 15 % at
# > `m = 128, 256, 512`, but at `m = 1024` it gives 0.41 against 0.95 (slope −1.27), and 16
# > more seeds or twice the steps give 0.50; gradient descent at that width gives 1.19. So at
# > large `m/n` Adam's winners seem not to be independent of each other. Why? A place to
# > start: which pairs of features end on one neuron under Adam, compared with their initial
# > overlaps, and whether the decoupled weight decay or the per-weight normalisation matters
# > (try `optimizer="adam"`).
#
# ## 6. Winner-take-all, and who wins
#
# Why are the winners random? The paper analyses gradient flow on one feature's row `w`
# (`m` weights): the reconstruction term keeps `‖w‖ ≈ 1`, and the L1 term subtracts the same
# amount `λ` from every `|w_j|` per unit time. Small weights hit zero first, the survivors
# are renormalised upwards, and the last survivor is the weight that was **largest at
# initialisation**. The number of surviving weights shrinks as `m′(t) ≈ 1/(1/√m + λt)²`.
#
# The sweeps measured this claim with your `initial_argmax_win_rate`: per instance, the
# fraction of features whose final winner is the neuron of their largest initial `|w|`.
#
# 🔮 **Predict.** Under which optimiser does the initially largest weight win its feature more
# often: gradient descent or AdamW? And more often than chance (`1/m`)?
#
# <details><summary>Answer</summary>
#
# Gradient descent: it wins 53–69 % of the features, against 4–19 % under AdamW; both far
# above chance (0.2–1.6 %). Read on for why.
# </details>

# %%
print(f"m                  : {' '.join(f'{m:5d}' for m in widths)}")
print(f"chance 1/m         : {fmt([1 / m for m in widths], 3)}")
print(f"GD wins (initial)  : {fmt(gd_sweep.win_rates.mean(dim=1), 3)}")
print(f"AdamW wins (initial): {fmt(adamw_sweep.win_rates.mean(dim=1), 3)}")
print(checks.made_with(win_rate_fn), "Trained by the course's fast path.")

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
def nearest_record(steps: list[int], step: int) -> int:
    """The index of the recorded step nearest ``step`` (a smoke run records fewer)."""
    return min(range(len(steps)), key=lambda k: abs(steps[k] - step))


predicted = poly.predicted_surviving(128, 0.01, flow.time)
surviving = flow.surviving_history.mean(dim=1)
l1_norm = flow.l1_history.mean(dim=1)
for step in (0, 500, 1000, 1500, 2000, 3000):
    k = nearest_record(flow.record_steps, step)
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
# ## 7. Noise as a source of sparsity
#
# L1 is not the only pressure towards a privileged basis. The paper's second mechanism has
# **no L1**: instead, noise is added to the hidden layer, `y = ReLU(W (Wᵀx + ε))`, a fresh
# draw every step. Compare Bernoulli noise (`ε_j = ±σ`, excess kurtosis −2) with Gaussian noise
# of the same variance (`N(0, σ²)`, excess kurtosis 0), and track each feature's **fourth
# norm** `Σ_j w_ij⁴`: 1 when the feature sits on one neuron, about `3/m` when it is spread out.
# The setup follows the authors' code: `n = 8`, `m = 16`, SGD with `lr = 0.02`, `σ = 0.15`; we
# train 30,000 steps (they train 100,000) on 16 seeds each (about 10 seconds, on the fast
# path).

# %% tags=["nbval-ignore-output"]
noise_runs = {
    kind: poly.train_autoencoders(8, 16, 16, l1=0.0, optimizer="gd", lr=0.02, steps=30_000, noise=kind,
                                  sigma=0.15, record_every=250, device=device, description=f"{kind} noise",
                                  fast=True)
    for kind in ("bernoulli", "gaussian")
}

# %% [markdown]
# 🔮 **Predict.** Both noises have the same variance. Which of them concentrates each feature on
# one neuron (fourth norm towards 1)?
#
# <details><summary>Answer</summary>
#
# Bernoulli only: its mean fourth norm climbs from 0.22 to 0.77, while under Gaussian noise
# it falls to 0.16–0.17. Gaussian noise looks the same in every rotated basis, so it cannot
# single out the neurons.
# </details>

# %%
for kind, run in noise_runs.items():
    history = run.fourth_norm_history.mean(dim=1)
    print(f"{kind:9s}: mean fourth norm at steps 0, 10k, 20k, 30k = "
          f"{fmt([history[nearest_record(run.record_steps, s)] for s in (0, 10_000, 20_000, 30_000)])}")
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
# the rows keep norm ≈ 1). Under Gaussian noise it does not rise: it falls from 0.22 to 0.16
# in the first 10,000 steps and stays near there (0.17 at 30,000), so the features end, if
# anything, more spread out than they started. A rotation of the
# hidden layer leaves Gaussian noise unchanged, so it cannot prefer the neuron basis; the
# Bernoulli distribution lives on the corners of a cube and, with its negative excess
# kurtosis, favours rows concentrated on few neurons. Noise whose distribution is not
# rotation-invariant is enough to make a basis privileged, and with it comes incidental
# polysemanticity.
#
# ## 8. Polysemanticity without sparsity: cross-entropy
#
# Everything so far needed a pressure towards a privileged basis (L1, or noise). Anthropic's
# *Towards Monosemanticity* (Bricken et al. 2023, "why not architectural approaches") points
# out that a **prediction** objective can make a neuron polysemantic with no superposition
# pressure at all. Their example: one neuron, four mutually exclusive, equally likely tokens
# A–D (one-hot inputs). The model is
#
# $$h_t = \mathrm{ReLU}(w_t), \qquad \text{logits} = u\,h_t + c \in \mathbb{R}^4,$$
#
# the neuron's activation `h_t` on token `t` and a linear readout of it, trained to predict
# which token came in (cross-entropy). A neuron that fires on A alone lets the readout
# recognise A and leaves B, C, D a three-way guess; a neuron that fires on A and B...?
#
# With an unbounded readout the best cross-entropy depends only on which tokens share an
# activation level. Tokens at **different** levels can be told apart perfectly in the limit:
# the logits `u_k h + c_k` are straight lines in `h`, and lines tangent to a parabola at each
# level make each token's logit the largest at its own level (scale them up and the softmax
# becomes certain). Tokens at the **same** level look identical: the best guess among them is
# uniform, costing `ln |g|` for a group of `|g|` tokens.
#
# ✏️ **Exercise 6.** Write the infimum over readouts of the cross-entropy (in nats), for `N`
# equally likely tokens given the neuron's activation on each, `activations: (N,)`:
# group the tokens by equal activation and sum over groups `(|g|/N) ln |g|`.

# %%
def ce_lower_bound(activations: Tensor) -> float:
    """Best cross-entropy of a linear readout of one neuron, N equally likely tokens: Σ_g (|g|/N) ln|g|."""
    # YOUR CODE HERE
    raise NotImplementedError("exercise: ce_lower_bound")


bound_fn = checks.check_ce_lower_bound(ce_lower_bound)

# %%
patterns = {"fires on A alone        ": [2.0, 0, 0, 0],
            "fires on A and B equally": [2.0, 2.0, 0, 0],
            "fires on A and B, A less": [1.0, 3.0, 0, 0],
            "never fires             ": [0.0, 0, 0, 0]}
for name, h in patterns.items():
    print(f"{name}: best cross-entropy {bound_fn(torch.tensor(h)):.3f} nats")
print(checks.made_with(bound_fn))

# %% [markdown]
# The monosemantic neuron (A alone) can do no better than `(3/4) ln 3 ≈ 0.82`; the
# polysemantic one that fires equally on A and B reaches `ln 2 ≈ 0.69`: *Towards
# Monosemanticity*'s "0.8 vs 0.7". Firing on A and B at **different** strengths is better
# still, `½ ln 2 ≈ 0.35`: the neuron then separates three groups, {A}, {B} and {C, D}.
#
# Now train the model: 16 seeds, `w` and `u` drawn from `N(0, 0.25)`, `c = 0`, full-batch
# AdamW (`lr = 0.01`) for 5,000 steps (`poly.train_token_neuron`, a few seconds).
#
# 🔮 **Predict.** On how many tokens will most trained neurons fire, and at what loss?
#
# <details><summary>Answer</summary>
#
# Two, at different strengths, at the loss `½ ln 2 ≈ 0.347`: 9 of the 16 seeds. Five fire on
# one token (0.824) and two never fire (`ln 4 ≈ 1.386`): their weights all started negative,
# and a ReLU that is off everywhere gets no gradient, so it never recovers. No seed keeps a
# neuron that fires equally on two tokens.
# </details>

# %%
ce_run = poly.train_token_neuron("ce", seeds=16, steps=5_000)
for k in range(16):
    h = ce_run.activations[k]
    print(f"seed {k:2d}: h = [{fmt(h)}]  fires on {int(ce_run.firing()[k])}  loss {float(ce_run.loss[k]):.3f}  "
          f"your bound {bound_fn(h):.3f}")
print(f"fires on two tokens: {int((ce_run.firing() == 2).sum())} seeds, one: {int((ce_run.firing() == 1).sum())}, "
      f"none: {int((ce_run.firing() == 0).sum())}")
print(checks.made_with(bound_fn), "Trained by the course's poly.train_token_neuron.")

# %% [markdown]
# Training finds the polysemantic solution whenever it can: every seed whose neuron fires on
# two tokens fires on them at clearly different strengths (one 2.5–3.9 times the other),
# and its loss sits just above your bound `½ ln 2` (the readout's weights are still growing).
# The seeds that fire on one token got stuck: the other tokens' weights started negative,
# where the ReLU passes no gradient.
#
# **The contrast: squared error.** Same model, but the readout now *reconstructs* the one-hot
# input, loss `Σ_k (u_k h_t + c_k − x_tk)²` averaged over tokens, as an autoencoder (or an
# SAE) is trained. The best affine readout of one number explains one direction of the four
# one-hot vectors' variance: `3/4 − 1/4 = 1/2`, **whatever the neuron fires on**, as long as it
# fires on something (`poly.mse_lower_bound`).

# %%
mse_run = poly.train_token_neuron("mse", seeds=16, steps=5_000)
for k in range(16):
    h = mse_run.activations[k]
    print(f"seed {k:2d}: h = [{fmt(h)}]  fires on {int(mse_run.firing()[k])}  loss {float(mse_run.loss[k]):.3f}  "
          f"closed form {poly.mse_lower_bound(h):.3f}")
print("Trained by the course's poly.train_token_neuron.")
plots.plot_token_neurons({"cross-entropy": (ce_run.activations, ce_run.loss),
                          "squared error": (mse_run.activations, mse_run.loss)})
plt.show()

# %% [markdown]
# Every live neuron ends at 0.500, firing on one token, two or three, at whatever strengths
# its initialisation suggested; squared error has **no preference**. So a small sparsity
# penalty on the activation (with a readout of fixed norm, as an SAE's decoder has) is enough to
# tip it to the neuron that fires on one token: this is why sparse autoencoders train on
# squared error plus a sparsity penalty (chapter 05). A model trained to **predict**, as a
# language model is, can instead pay to merge unrelated tokens on one neuron, polysemanticity
# with no superposition pressure at all.
#
# ## 9. Explore
#
# The sliders retrain 32 seeds of `n = 16` features (gradient descent, 3,000 steps, under a
# second) for a width ratio `m/n` and an L1 strength `λ`, and show seed 0's weights, sorted so
# that polysemantic neurons (triangles) stand out, with the count against your prediction. Try
# `λ = 0` (no privileged basis, nothing counts as active) and small `λ` (not yet sparse after
# 3,000 steps: the race takes time `≈ 1/λ`). It counts with your `count_polysemantic_neurons`
# and predicts with your `predicted_polysemantic`.

# %% tags=["nbval-ignore-output"]
from course_utils.widgets import polysemanticity_explorer

polysemanticity_explorer(count=count_fn, predict=predict_fn)

# %% [markdown]
# ## Summary
#
# - With more neurons than features and an L1 penalty (or non-Gaussian noise), each feature
#   ends up on exactly one neuron: the basis is **privileged**.
# - Which neuron wins is decided by the random initialisation, so features **collide by
#   chance**: about `n²/(4m)` neurons (your exact prediction of exercise 4 for small `m/n`)
#   hold two features of opposite signs, measured within a small factor across widths with
#   slope near −1.
# - Under gradient descent the initially largest weight usually wins; Adam weakens that link
#   but not the collision count.
# - Polysemanticity is therefore not proof of superposition: it can be an accident of
#   training, and widening a layer only makes it rarer, like `1/m`.
# - A prediction objective can make a neuron polysemantic with no sparsity and no
#   superposition: under cross-entropy one neuron does better firing on two of four tokens, at
#   different strengths, than on one, and training finds it; squared error has no preference,
#   which is why SAEs add a sparsity penalty to it.
#
# **Differences from the paper.** We use `n = 32` features (the paper `n = 256`) and 30,000
# noise-training steps (100,000) to fit the time budget; the measured sparsification runs
# about 1.5–2× slower than the theory's idealised prediction (section 6).
