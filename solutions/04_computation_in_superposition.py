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
# A check returns the implementation the rest of the chapter runs: yours once it passes, the
# course's until then (a line under the check says which), and every result says which it used
# (`[made with] ...`). Two ★ capstones assemble your pieces: the abs(x) model class, which
# trains the models of section 2, and the U-AND construction, which runs all of section 3.
# 🔮 marks a **predict-then-see** question: write your prediction down before you run the next
# cell, then open the answer.

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
    ### BEGIN SOLUTION
    h = torch.relu(torch.einsum("ihf,ibf->ibh", W, x))
    return torch.relu(torch.einsum("ihf,ibh->ibf", W, h) + b[:, None, :])
    ### END SOLUTION


forward_fn = checks.check_neuron_forward(neuron_forward)

# %% [markdown]
# The paper's experiment: `n = 10` features with importance `0.75^i` in `m = 5` neurons, at
# feature densities `1 − S` from 1 (dense) to 0.01 (sparse). `comp.NeuronModel` is chapter
# 01's `ToyModel` with your forward pass (`forward_fn=forward_fn`); each density trains two
# seeds (10,000 steps of Adam, batch 256; about 10 seconds) and keeps the one with the lower
# loss.
#
# 🔮 **Predict.** With **dense** features (`1 − S = 1`), how many of the 5 neurons will be
# monosemantic, and which features will they carry? And at `1 − S = 0.01`?
#
# <details><summary>Answer</summary>
#
# Dense: all five are monosemantic, one neuron each for the five most important features, and
# the other five features are dropped. Every feature is on in every input, so two features
# sharing a neuron would interfere all the time; as in chapter 01, the model stores the top
# `m` features exactly. Sparse: the model stores (nearly) all ten features and no neuron is
# monosemantic any more: with rare features, sharing a neuron costs little interference.
# </details>

# %% tags=["nbval-ignore-output"]
densities = torch.tensor([1.0, 0.3, 0.1, 0.03, 0.01])
seeds = 2
neuron_model = comp.NeuronModel(10, 5, n_instances=len(densities) * seeds,
                                feature_probability=densities.repeat_interleave(seeds)[:, None],
                                importance=importance_decay(10, 0.75), device=device,
                                generator=torch.Generator().manual_seed(0), forward_fn=forward_fn)
neuron_run = train(neuron_model, steps=10_000, batch_size=256, description="privileged basis")

# %% [markdown]
# A neuron is **monosemantic** when one feature holds nearly all of its input weights' squared
# norm; `comp.neuron_monosemanticity` gives that share per neuron (1 = a single feature).

# %%
best = select_best(neuron_model, evaluate_loss(neuron_model), seeds)
W_neurons = neuron_model.W.detach().cpu()[best]  # (densities, hidden, features)
share = comp.neuron_monosemanticity(W_neurons)
print(checks.made_with(forward_fn))
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
    ### BEGIN SOLUTION
    p = feature_probability[:, None, :]
    shape = (feature_probability.shape[0], batch_size, feature_probability.shape[1])
    values = torch.rand(shape, generator=generator, device=p.device) * 2 - 1
    active = torch.rand(shape, generator=generator, device=p.device) < p
    return torch.where(active, values, torch.zeros_like(values))
    ### END SOLUTION


batch_fn = checks.check_abs_batch(abs_batch)


# %% [markdown]
# ✏️ **Exercise 3.** The loss: the importance-weighted squared error of the output `y`
# against the target `|x|`, averaged over the batch and the features, one number per instance.

# %%
def abs_loss(y: Tensor, x: Tensor, importance: Tensor) -> Tensor:
    """mean over batch and features of importance · (y − |x|)²: (instances,)."""
    ### BEGIN SOLUTION
    return (importance[:, None, :] * (y - x.abs()) ** 2).mean(dim=(1, 2))
    ### END SOLUTION


abs_loss_fn = checks.check_abs_loss(abs_loss)

# %% [markdown]
# ### ★ Capstone: the abs(x) model
#
# ✏️ Assemble the model that the rest of this section trains, as a class like chapter 01's
# `ToyModel`, with the constructor of `comp.AbsModel`:
#
# - keep `n_features`, `n_hidden` and `n_instances`; broadcast `feature_probability` and
#   `importance` to `(instances, features)` with `per_instance(value, n_instances, n_features)`
#   and keep them with `register_buffer`;
# - three `nn.Parameter`s: `W1` of shape `(instances, hidden, features)`, **then** `W2` of
#   shape `(instances, features, hidden)` (untied: `W2` is not `W1ᵀ`), each Xavier-normal for
#   one instance times `init_scale`, i.e. `torch.randn(..., generator=generator)` times
#   `init_scale · √(2 / (n_hidden + n_features))`, drawn in that order so that a seed gives
#   the course's model, then moved to `device`; and `b` of shape `(instances, features)`, zero;
# - `forward(x)`: `h = ReLU(W1 x)`, `y = ReLU(W2 h + b)`, batched over instances;
# - `loss(x)` and `generate_batch(batch_size, generator)` with **`abs_loss_fn` and `batch_fn`**,
#   what the checks of exercises 2 and 3 returned.
#
# The check builds your class on several shapes, initial scales and devices and compares it
# with the reference: the parameters and their draws, `forward` and `loss` on the same weights,
# the gradients, and the batches.

# %%
from torch import nn

from course_utils.toy_models import per_instance


class AbsModel(nn.Module):
    """h = ReLU(W1 x), y = ReLU(W2 h + b), trained on |x|, for n_instances models at once."""

    def __init__(self, n_features: int, n_hidden: int, n_instances: int = 1, feature_probability=1.0,
                 importance=1.0, init_scale: float = 1.0, device="cpu", generator=None):
        super().__init__()
        ### BEGIN SOLUTION
        self.n_features, self.n_hidden, self.n_instances = n_features, n_hidden, n_instances
        self.register_buffer("feature_probability",
                             per_instance(feature_probability, n_instances, n_features).to(device))
        self.register_buffer("importance", per_instance(importance, n_instances, n_features).to(device))
        std = init_scale * (2 / (n_hidden + n_features)) ** 0.5
        W1 = torch.randn(n_instances, n_hidden, n_features, generator=generator) * std
        W2 = torch.randn(n_instances, n_features, n_hidden, generator=generator) * std
        self.W1, self.W2 = nn.Parameter(W1.to(device)), nn.Parameter(W2.to(device))
        self.b = nn.Parameter(torch.zeros(n_instances, n_features, device=device))
        ### END SOLUTION

    def forward(self, x: Tensor) -> Tensor:
        """(instances, batch, features) -> (instances, batch, features)."""
        ### BEGIN SOLUTION
        h = torch.relu(torch.einsum("ihf,ibf->ibh", self.W1, x))
        return torch.relu(torch.einsum("ifh,ibh->ibf", self.W2, h) + self.b[:, None, :])
        ### END SOLUTION

    def loss(self, x: Tensor) -> Tensor:
        """(instances,): the importance-weighted squared error against |x|."""
        ### BEGIN SOLUTION
        return abs_loss_fn(self(x), x, self.importance)
        ### END SOLUTION

    def generate_batch(self, batch_size: int, generator=None) -> Tensor:
        """(instances, batch_size, features) from the model's feature probabilities."""
        ### BEGIN SOLUTION
        return batch_fn(self.feature_probability, batch_size, generator)
        ### END SOLUTION


Abs = checks.check_abs_model(AbsModel)

# %% [markdown]
# With room to spare, `|x| = ReLU(x) + ReLU(−x)`: two neurons per feature, one for each sign.
# Train `n = 3` features in `m = 6` neurons (dense, four seeds; a few seconds) with your model
# and look at the best seed's `W1` (rows are neurons).
#
# 🔮 **Predict.** Six neurons for three features: how many neurons will each feature use, with
# which signs, and how many features will each neuron read?
#
# <details><summary>Answer</summary>
#
# Two neurons per feature, one with a positive weight (`ReLU(x_i)`) and one with a negative
# weight (`ReLU(−x_i)`), and each neuron reads a single feature: `|x_i| = ReLU(x_i) +
# ReLU(−x_i)` exactly, so the loss goes to (nearly) zero. One neuron cannot do it: a ReLU of a
# single weighted input is zero on one side.
# </details>

# %% tags=["nbval-ignore-output"]
small_abs = Abs(3, 6, n_instances=4, device=device, generator=torch.Generator().manual_seed(0))
small_run = train(small_abs, steps=10_000, description="abs, n = 3, m = 6")

# %%
with torch.no_grad():
    small_losses = small_abs.loss(small_abs.generate_batch(10_000, torch.Generator(device=device).manual_seed(5))).cpu()
winner = int(small_losses.argmin())
W1 = small_abs.W1.detach().cpu()[winner]
print(checks.made_with(Abs, batch_fn, abs_loss_fn))
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
abs_model = Abs(100, 40, n_instances=len(sweep_S), feature_probability=(1 - sweep_S)[:, None],
                          importance=importance_decay(100, 0.8), init_scale=0.1, device=device,
                          generator=torch.Generator().manual_seed(0))
abs_run = train(abs_model, steps=5_000, batch_size=256, lr=3e-3, schedule="cosine", description="abs, n = 100, m = 40")

# %% [markdown]
# Two yardsticks for the loss: a model that outputs 0 (it computes nothing), and the best
# model **without** superposition (`comp.abs_monosemantic_loss`): it gives the 20 most
# important features two neurons each and computes them exactly; each of the other 80 gets
# no neuron and outputs the best constant, its mean `E|x| = p/2` through the bias, missing
# the variance of `|x|`, `p/3 − p²/4`. We also count, among the 20 most important features,
# those the model leaves **dead** (their loss is that of outputting 0) and those it
# computes on **one side** only (`ReLU(x)` without `ReLU(−x)` or the reverse: half that loss).

# %% tags=["nbval-approx-2"]
W1s, W2s, bs = (t.detach().cpu() for t in (abs_model.W1, abs_model.W2, abs_model.b))
abs_share = comp.neuron_monosemanticity(W1s)
mono_fraction = (abs_share > 0.9).float().mean(dim=1)
with torch.no_grad():
    x_eval = abs_model.generate_batch(20_000, torch.Generator(device=device).manual_seed(3))
    abs_losses = abs_model.loss(x_eval).cpu()
    feature_losses = ((abs_model(x_eval) - x_eval.abs()) ** 2).mean(dim=1).cpu()  # (instances, features)
importance, probability = abs_model.importance.cpu(), abs_model.feature_probability.cpu()
no_superposition = comp.abs_monosemantic_loss(importance, probability, 40)
outputs_zero = (importance * probability / 3).mean(dim=1)
relative = feature_losses[:, :20] / (probability[:, :20] / 3)  # 1 = outputs 0, 0 = exact
dead, one_sided = (relative > 0.9).sum(dim=1), ((relative > 0.3) & (relative < 0.7)).sum(dim=1)
print(checks.made_with(Abs, batch_fn, abs_loss_fn))
for k, S in enumerate(sweep_S):
    print(f"S = {float(S):4.2f}: monosemantic neurons {int((abs_share[k] > 0.9).sum()):2d}/40, mean share "
          f"{float(abs_share[k].mean()):.2f} | loss / (outputs 0) {float(abs_losses[k] / outputs_zero[k]):.3f}, "
          f"loss / (no superposition) {float(abs_losses[k] / no_superposition[k]):5.2f} | top 20: "
          f"{int(dead[k])} dead, {int(one_sided[k])} one-sided")
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
# Does superposition **pay**, though? Against the best model without superposition, no
# model of this sweep shows it: every one ends above that yardstick, even the dense ones
# that should find it. The reason is in the importances. With `0.8^i`, the 80 features
# beyond the first 20 carry only 1.2 % of the total importance (`0.8^20 ≈ 0.0115`), so
# superposition can win at most 1.2 % of the zero-output loss, and our trained models lose
# more than that elsewhere: imprecision on the important features (minibatch Adam, 5,000
# steps), and local minima where an important feature's output is dead or one-sided, which
# no gradient repairs (the counts above: at `S = 0.99` five of the 20 most important outputs
# are dead, and 31 % of the zero-output loss is left). We tried (outside the notebook) 20,000 steps,
# batch 1,024 with warmup, a lower learning rate, a positive or a tied initialisation: the
# sparse models came closer (1.6–2.4× at best, seed-dependent) but none reached it within
# minutes of CPU. The paper shows the move to superposed neurons, not a loss comparison.
#
# The claim itself can be tested where there is something to win. Give all 100 features the
# **same** importance: now the 80 features without a neuron are 80 % of the stakes. Train the
# same model, with the same recipe, at four sparsities.
#
# 🔮 **Predict.** With equal importances, how will the dense model (`S = 0`) and the sparse
# ones (`S = 0.9 … 0.99`) compare with the best model without superposition?
#
# <details><summary>Answer</summary>
#
# The dense model lands on the yardstick: with every feature on in every input, sharing
# neurons costs more than it saves, so it computes 20 features exactly and gives up the rest.
# The sparse models end **below** it, the more so the sparser the features: they compute
# many more than 20 features in superposition, and the interference they pay is rare.
# </details>

# %% tags=["nbval-ignore-output"]
equal_S = torch.tensor([0.0, 0.9, 0.97, 0.99])
equal_model = Abs(100, 40, n_instances=len(equal_S), feature_probability=(1 - equal_S)[:, None],
                  importance=1.0, init_scale=0.1, device=device, generator=torch.Generator().manual_seed(1))
equal_run = train(equal_model, steps=5_000, batch_size=256, lr=3e-3, schedule="cosine",
                  description="abs, equal importance")

# %%
with torch.no_grad():
    equal_losses = equal_model.loss(equal_model.generate_batch(20_000, torch.Generator(device=device).manual_seed(3))).cpu()
equal_p = equal_model.feature_probability.cpu()
equal_yardstick = comp.abs_monosemantic_loss(equal_model.importance.cpu(), equal_p, 40)
equal_share = comp.neuron_monosemanticity(equal_model.W1.detach().cpu())
print(checks.made_with(Abs, batch_fn, abs_loss_fn))
for k, S in enumerate(equal_S):
    print(f"S = {float(S):4.2f}, equal importance: loss / (no superposition) "
          f"{float(equal_losses[k] / equal_yardstick[k]):.2f}, monosemantic neurons "
          f"{int((equal_share[k] > 0.9).sum()):2d}/40")

# %% [markdown]
# There it is: the dense model lands on the yardstick (within a few percent), and every
# sparse model beats it, by more the sparser the features. Where features are rarely on
# together, computing `|x|` on more features than there are neuron pairs is the better
# solution, and the trained models find it.
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

# %% tags=["nbval-approx-1"]
motifs = {round(float(S), 2): comp.asymmetric_motifs(W1s[i], W2s[i], bs[i]) for i, S in enumerate(sweep_S)}
print("motifs per S:", {S: len(found) for S, found in motifs.items()})
S_found, motif = max(((S, found_motif) for S, found in motifs.items() for found_motif in found),
                     key=lambda pair: pair[1].interference, default=(None, None))
if motif is None:  # the sparse models find the motif after about 700 steps
    print("no motif in any model: not trained long enough (a smoke run)")
else:
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
    ### BEGIN SOLUTION
    return torch.relu(x @ W.T - 1)
    ### END SOLUTION


layer_fn = checks.check_u_and_layer(u_and_layer)


# %% [markdown]
# ✏️ **Exercise 5.** The read-off of every pair: `(batch, d)` → `(batch, m, m)`, entry
# `(i, j)` the mean of `h_k` over the neurons wired to both `i` and `j`, and `NaN` where no
# neuron is (the pair is *uncovered*). Hint: the number of neurons wired to both is `(WᵀW)_ij`.

# %%
def u_and_readoff(W: Tensor, h: Tensor) -> Tensor:
    """AND(i, j) ≈ mean of h_k over neurons wired to both i and j; NaN if there are none."""
    ### BEGIN SOLUTION
    coverage = W.T @ W
    total = torch.einsum("bk,ki,kj->bij", h, W, W)
    return torch.where(coverage > 0, total / coverage.clamp(min=1), torch.full_like(total, float("nan")))
    ### END SOLUTION


readoff_fn = checks.check_u_and_readoff(u_and_readoff)

# %% [markdown]
# ### ★ Capstone: U-AND end to end
#
# ✏️ **The wiring.** Write `u_and_wiring(m, d, p, generator)`: a `(d, m)` float tensor of 0s
# and 1s, each entry 1 with probability `p`, independently, drawn as
# `torch.rand(d, m, generator=generator) < p` so that a seed gives the course's wiring.
#
# ✏️ **The construction.** Then assemble the whole construction as a class, `UAnd(m, d, p,
# generator)`:
#
# - `__init__` keeps `m`, `d` and `p` and draws the wiring `self.W` with **`wiring_fn`** (what
#   the check of `u_and_wiring` returns) from the generator, and nothing from torch's global
#   random state;
# - `hidden(x)`: `(batch, m)` → `(batch, d)`, with **`layer_fn`** (exercise 4);
# - `readoff(h)`: `(batch, d)` → `(batch, m, m)`, with **`readoff_fn`** (exercise 5): `NaN`
#   for an uncovered pair;
# - calling it, `construction(x)`: every pair's read-off at once, `(batch, m, m)`;
# - `coverage()`: `(m, m)`, how many neurons are wired to both features of each pair.
#
# Everything in the rest of this section (the `m = 200` construction, the error laws, the sweep
# over `p`, the `m = 500` scale-up and the explorer) runs on your class.

# %%
def u_and_wiring(m: int, d: int, p: float, generator: torch.Generator | None = None) -> Tensor:
    """(d, m) floats: W[k, i] = 1 with probability p (neuron k wired to feature i)."""
    ### BEGIN SOLUTION
    return (torch.rand(d, m, generator=generator) < p).float()
    ### END SOLUTION


wiring_fn = checks.check_u_and_wiring(u_and_wiring)


class UAnd:
    """d ReLU neurons, randomly wired to m boolean features, computing every pairwise AND."""

    def __init__(self, m: int, d: int, p: float, generator: torch.Generator | None = None):
        ### BEGIN SOLUTION
        self.m, self.d, self.p = m, d, p
        self.W = wiring_fn(m, d, p, generator)
        ### END SOLUTION

    def hidden(self, x: Tensor) -> Tensor:
        """(batch, m) -> (batch, d)."""
        ### BEGIN SOLUTION
        return layer_fn(self.W, x)
        ### END SOLUTION

    def readoff(self, h: Tensor) -> Tensor:
        """(batch, d) -> (batch, m, m); NaN for uncovered pairs."""
        ### BEGIN SOLUTION
        return readoff_fn(self.W, h)
        ### END SOLUTION

    def __call__(self, x: Tensor) -> Tensor:
        """(batch, m) -> (batch, m, m): every pair's AND read-off."""
        ### BEGIN SOLUTION
        return self.readoff(self.hidden(x))
        ### END SOLUTION

    def coverage(self) -> Tensor:
        """(m, m): the number of neurons wired to both features of each pair."""
        ### BEGIN SOLUTION
        return self.W.T @ self.W
        ### END SOLUTION


Construction = checks.check_u_and(UAnd)

# %% [markdown]
# Build one: `m = 200` features, so `C(200, 2) = 19,900` ANDs, with `d = 1,000` neurons and
# `p = 0.1`. A pair is covered by about `d p² = 10` neurons; it is uncovered with
# probability `(1 − p²)^d ≈ e^{−d p²}`.
#
# 🔮 **Predict.** Switch on exactly features 3 and 17. What will the read-off of AND(3, 17) be?
# And, on average, the read-off of a pair with only one of its features on, such as (3, 50)?
#
# <details><summary>Answer</summary>
#
# AND(3, 17) reads exactly 1: every neuron wired to both sees `2 − 1 = 1`, and the mean of ones
# is one. A pair such as (3, 50) is not 0: its neurons are wired to 3, and each is also wired to
# 17 with probability `p`, in which case it fires with 1; so its read-off is about `p = 0.1`.
# Here the half-on pairs all lean on the same few neurons wired to both 3 and 17, so their
# average lands somewhat above `p` (0.14 below).
# </details>

# %%
m, d, p = 200, 1_000, 0.1
and_net = Construction(m, d, p, torch.Generator().manual_seed(0))
coverage = and_net.coverage()
pairs = torch.triu(torch.ones(m, m, dtype=torch.bool), diagonal=1)
print(checks.made_with(Construction, wiring_fn, layer_fn, readoff_fn))
print(f"{math.comb(m, 2):,} ANDs from {d:,} neurons; neurons per pair: mean {float(coverage[pairs].float().mean()):.2f} "
      f"(d p² = {d * p * p:.1f}), min {int(coverage[pairs].min())}; uncovered pairs {comp.uncovered_fraction(and_net):.4f}")
x = torch.zeros(1, m)
x[0, [3, 17]] = 1.0
readoff = and_net(x)[0]
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
# ✏️ **Exercise 6.** Derive the expected read-off of AND(i, j) with `l` features on, in the
# three cases: both `i` and `j` on, exactly one on, neither on, each to **leading order** in
# `p`. (For a neuron wired to both: count how many *other* active features it also sees, then
# apply `ReLU(· − 1)`. With neither on, the neuron needs two leaks to fire, so that case starts
# at second order, `p²`.) Return a dict with keys `"both"`, `"one"`, `"none"`.

# %%
def predicted_u_and_readoffs(p: float, l: int) -> dict[str, float]:
    """Expected read-off with l features on, for pairs with both/one/none on (leading order in p)."""
    ### BEGIN SOLUTION
    return {"both": 1 + (l - 2) * p, "one": (l - 1) * p, "none": math.comb(l, 2) * p * p}
    ### END SOLUTION


laws_fn = checks.check_predicted_u_and_readoffs(predicted_u_and_readoffs)

# %% [markdown]
# Test the laws on the construction above for `l = 2, …, 8` (256 random inputs each):

# %%
ls = list(range(2, 9))
measured = {case: [] for case in ("both", "one", "none")}
predicted = {case: [] for case in ("both", "one", "none")}
for l in ls:
    got = comp.measure_u_and_readoffs(and_net, l, batch=256, generator=torch.Generator().manual_seed(l))
    law = laws_fn(p, l)
    for case in measured:
        measured[case].append(got[case])
        predicted[case].append(law[case])
print(checks.made_with(Construction, laws_fn))
for case in measured:
    print(f"{case:4s}: measured {fmt(measured[case], 3)}")
    print(f"      predicted {fmt(predicted[case], 3)}")
plots.plot_u_and_errors(ls, measured, predicted)
plt.show()

# %% [markdown]
# The measured read-offs follow the laws: both on reads `1 + (l − 2)p`, one on `(l − 1)p`,
# none on `C(l, 2)p²`. The first two are exact (the leaks add linearly once the neuron is
# already at threshold); the third is only the leading term, of second order in `p`, of the
# exact `lp − 1 + (1 − p)^l` (its expansion continues with `−C(l, 3)p³ + …`), and it
# overestimates as `lp` grows (at `l = 8`: 0.28 against 0.23 exactly). The AND is
# read correctly while `1 + (l − 2)p` stays well above `(l − 1)p`, i.e. while `lp` is small:
# sparsity is what makes superposition computable.
#
# **Where it fails.** Coverage needs `d p²` large. Keep `d = 1,000` and shrink `p`: count the
# uncovered pairs against `e^{−d p²}` and the fraction of all 19,900 ANDs classified right
# (read-off above 0.5 exactly when both features are on; an uncovered pair counts as wrong)
# with `l = 3`. The middle setting, `p = 1/√1000 ≈ 0.032`, has `d p² = 1`.
#
# 🔮 **Predict.** At `d p² = 1`, what fraction of the pairs will no neuron cover? Roughly what
# fraction of the ANDs will be right?
#
# <details><summary>Answer</summary>
#
# A pair is missed by each neuron with probability `1 − p²`, so by all `d` with probability
# `(1 − p²)^d ≈ e^{−d p²} = e^{−1} ≈ 0.37`: more than a third of the ANDs cannot be computed
# at all. The covered pairs are nearly all right (the leaks are small at `l = 3`), so about
# `1 − 0.37 ≈ 0.63` of the ANDs are right.
# </details>

# %%
print(checks.made_with(Construction))
for p_small in (0.01, 0.02, 1 / math.sqrt(d), 0.05, 0.1):
    net_p = Construction(m, d, p_small, torch.Generator().manual_seed(1))
    accuracy = comp.u_and_accuracy(net_p, 3, batch=128, generator=torch.Generator().manual_seed(2))
    print(f"p = {p_small:5.3f}: d p² = {d * p_small ** 2:5.2f}, uncovered {comp.uncovered_fraction(net_p):.3f} "
          f"(e^(−d p²) = {math.exp(-d * p_small ** 2):.3f}), ANDs right {accuracy:.3f}")

# %% [markdown]
# At `d p² = 10`, 1,000 neurons compute all 19,900 ANDs with 99.9 % of them right on inputs
# with three features on. Scale it up: `m = 500` features have 124,750 ANDs; with
# `p = 0.05`, `d = 4,000` neurons keep `d p² = 10`.

# %%
large_net = Construction(500, 4_000, 0.05, torch.Generator().manual_seed(3))
large_accuracy = comp.u_and_accuracy(large_net, 3, batch=32, generator=torch.Generator().manual_seed(4))
print(checks.made_with(Construction))
print(f"{math.comb(500, 2):,} ANDs from 4,000 neurons ({math.comb(500, 2) / 4_000:.0f} per neuron): uncovered "
      f"{comp.uncovered_fraction(large_net):.4f}, ANDs right {large_accuracy:.4f}")

# %% [markdown]
# The number of ANDs grows like `m²`, and the neurons needed are set by `p`, not by `m`:
# `d ≈ 10/p²` here. That is only half of the story, though: the construction computes **every**
# AND only if every one of the `C(m, 2)` pairs is covered, and the expected number of
# uncovered pairs is `C(m, 2) e^{−d p²}`. Making it below one needs `d p² ≳ ln C(m, 2) ≈
# 2 ln m`: the coverage condition. So the neurons needed grow like `2 ln(m)/p²`: like `1/p²`
# at a fixed `m`, and only logarithmically in `m`. (With `d p² = 10` and `m = 500` that is
# not quite met: `C(500, 2) e^{−10} ≈ 6` pairs are expected to be uncovered, and the
# construction above leaves a handful of its 124,750 pairs uncovered, the 0.0001 printed.) Below `d p² ≈ 1` most pairs have no neuron at all and the construction
# collapses. A wiring that is too dense fails the other way: the leak `(l − 1)p` of a half-on
# pair reaches the threshold. Between the two, `d p² ≳ 2 ln m` and `l p ≪ 1`, `d ≪ C(m, 2)`
# neurons compute all `C(m, 2)` functions; the construction's cost is set by sparsity, not by
# the number of functions.
#
# **Explore.** The sliders rebuild your construction for `m = 100` features: move `d`, `p`
# and `l` and compare the measured read-offs with the laws; push `d p²` below 1 to watch pairs
# go uncovered.

# %% tags=["nbval-ignore-output"]
from course_utils.widgets import u_and_explorer

print(checks.made_with(Construction))
u_and_explorer(construction=Construction)

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
    ### BEGIN SOLUTION
    unserved = max(n_features - d_mlp, 0)
    return feature_probability * unserved / (6 * n_features)  # E[ReLU(x)²] = 1/6 for x ~ U[−1, 1]
    ### END SOLUTION


naive_fn = checks.check_naive_loss(naive_loss)

# %% [markdown]
# So the naive baseline has `L/p = 1/12 ≈ 0.083` (your `naive_loss(100, 50, 0.01) / 0.01`,
# printed below). Train the model in Braun et al.'s setup (AdamW with weight decay 0.01, lr
# `3e-3` with cosine decay, batch 2,048) twice: with a **random** embedding, as in the paper,
# and with an **orthonormal** one (`W_Eᵀ W_E = I` exactly), the control of Bhagat et al.
# (2025). Braun et al.'s training script for this model (`train_resid_mlp.py` in
# ApolloResearch/apd) runs 1,000 steps; we train 2,000 (about 15 seconds each), which
# measured 0.0672 against 0.0664 after 5,000.
#
# 🔮 **Predict.** With the orthonormal embedding there is no mixing matrix. Will the trained
# model still beat the naive `1/12`?
#
# <details><summary>Answer</summary>
#
# No: it lands at about `1/12`, the naive baseline's loss. Without overlaps between the
# embedded features there is nothing in the residual stream for the MLP to exploit, and 50
# neurons serve about 50 features' worth of `ReLU(x)`, however they share them out.
# </details>

# %% tags=["nbval-ignore-output"]
residual_models = {}
for embedding in ("random", "orthonormal"):
    model = comp.ResidualMLP(embedding=embedding, device=device, generator=torch.Generator().manual_seed(0))
    train(model, steps=2_000, batch_size=2048, lr=3e-3, schedule="cosine", weight_decay=0.01,
          description=f"{embedding} embedding")
    residual_models[embedding] = model

# %% tags=["nbval-approx-0.005"]
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
          f"embedding {summary[embedding][1]:.4f}, naive without mixing {naive_fn(100, 50, 0.01) / 0.01:.4f}")
    print(f"    trained, per feature: {int((trained_err < 0.01).sum())} features below 0.01, "
          f"{int(((trained_err >= 0.01) & (trained_err <= 0.15)).sum())} between, "
          f"{int((trained_err > 0.15).sum())} above 0.15; min {float(trained_err.min()):.3f}, "
          f"median {float(trained_err.median()):.3f}, max {float(trained_err.max()):.3f}")
print(checks.made_with(naive_fn))
plots.plot_compressed_computation(per_feature, reference=1 / 12, reference_label="naive, no mixing (1/12)")
plt.show()

# %% [markdown]
# With the **random** embedding the trained model reaches `L/p ≈ 0.067`, well below 1/12: 50
# neurons do better than serving 50 features, and the per-feature profile shows how: the loss
# is spread evenly over all 100 features (from 0.05 to 0.08) instead of 0 for half and 1/6 for
# the rest. That looked like computation in superposition. With the **orthonormal** embedding
# the same training lands at 1/12, no better than the naive baseline, but its profile is not
# the naive one's step either: it is a smooth ramp, from features served almost exactly (about
# a fifth of them below 0.01) through about half that are served partly, up to features
# served hardly at all (at or a little above 1/6). The model shares its 50 neurons
# unevenly among the 100 features, and on average gains nothing from the sharing.
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
# - **U-AND**: `d` random neurons compute all `C(m, 2)` ANDs when every pair is covered,
#   `d p² ≳ 2 ln m`, and `l p ≪ 1`, with read-offs `1 + (l − 2)p`, `(l − 1)p` and, to leading
#   (second) order, `C(l, 2)p²`, that you derived and measured on your own construction.
# - **Compressed computation** beats the naive baseline only through the embedding's mixing
#   matrix: with `W_Eᵀ W_E = I` the advantage disappears.
#
# **Differences from the papers.** We train the residual MLP for 2,000 steps, twice the 1,000
# of Braun et al.'s training script, and the abs(x) sweep for 5,000 steps from a small
# initialisation, to fit the time budget. With the paper's importances `0.8^i` our sparse
# abs(x) models are superposed and compute `|x|` well, but none beats the best solution
# without superposition on the loss (the stakes are 1.2 % of the loss, less than what
# training leaves on the table); with equal importances the sparse models do (section 2).
