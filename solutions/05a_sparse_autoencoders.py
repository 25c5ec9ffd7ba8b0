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
# # Chapter 05a — Sparse autoencoders that recover known features
#
# Chapters 01–04 showed that networks store more features than they have dimensions, as
# nearly orthogonal directions. If we only see the activations, can we get the features
# back? A **sparse autoencoder** (SAE) learns an overcomplete dictionary: it writes each
# activation vector as a sparse, non-negative combination of learned directions. Real
# networks never tell us their true features, so here we first build data whose features
# we know and grade the SAEs against them. Chapter 05b applies SAEs to a small language model.
#
# **You will reproduce**
# 1. **Dictionary recovery** (Sharkey, Braun & Millidge 2022, *Taking features out of
#    superposition with sparse autoencoders*): an L1 SAE recovers 64 random feature directions
#    hidden in 32 dimensions, with a mean max cosine similarity (MMCS) above 0.99.
# 2. **The Goldilocks zone** of the L1 coefficient: too little and the latents are dense and
#    unaligned; too much and latents die and activations shrink.
# 3. **How many features?** Three signals of the true dictionary size from a sweep over SAE
#    sizes.
# 4. **Architectures at matched sparsity**: ReLU + L1 (Bricken et al. 2023), TopK (Gao et al.
#    2024), BatchTopK (Bussmann et al. 2024), JumpReLU and Gated (Rajamanoharan et al. 2024);
#    only the L1 SAE shrinks its activations.
# 5. **Dead latents** and how resampling revives them (Bricken et al. 2023).
# 6. **Chapter 01's pentagon**: an SAE on the 2-D hidden layer recovers all five features.
#
# **Time:** about 1.5 minutes of compute on a laptop CPU.
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
from course_utils import sae as saelib
from course_utils.device import set_seed
from course_utils.toy_models import ToyModel, evaluate_loss, train

torch.set_printoptions(precision=3, sci_mode=False)
set_seed(0)


def fmt(values, digits: int = 2) -> str:
    """A row of numbers at a fixed precision (stable output for the notebook tests)."""
    return " ".join(f"{float(v):.{digits}f}" for v in values)


def row(name: str, metrics: dict) -> str:
    """One line of an SAE's scores (``saelib.evaluate``) at a fixed precision."""
    keys = [k for k in ("l0", "fve", "dead", "dense", "shrinkage", "mmcs", "recovered") if k in metrics]
    return f"{name:>16}: " + "  ".join(f"{k} {metrics[k]:.3f}" if k != "l0" else f"L0 {metrics[k]:5.2f}"
                                       for k in keys)


# %% [markdown]
# ## 1. Data whose features we know
#
# Sharkey et al. hide `n` random unit directions `g_i` in `d < n` dimensions. Feature `i`
# fires with probability `p_i ∝ 0.99^i` (a power law: a few common features, a long tail of
# rare ones), scaled so that 5 features fire per input on average, with a magnitude drawn
# from `U[0, 1]`:
#
# $$x = \sum_i c_i\, g_i, \qquad c_i = \begin{cases} u_i \sim U[0,1] & \text{with probability } p_i \\ 0 & \text{otherwise.}\end{cases}$$
#
# The paper uses 512 features in 256 dimensions; we use **64 features in 32 dimensions**
# (the same decay and mean activity), so each SAE trains in about a second.

# %%
data = saelib.SyntheticFeatures(n_features=64, d=32, mean_active=5.0, decay=0.99, device=device,
                                generator=torch.Generator().manual_seed(0))
x_eval, c_eval = data.sample(20_000, torch.Generator(device=device).manual_seed(5), return_coefficients=True)
G = data.directions  # (64, 32): the ground truth
overlaps = (G @ G.T - torch.eye(64, device=G.device)).abs()
print(data)
print(f"firing probabilities from {data.feature_probability.min():.3f} to {data.feature_probability.max():.3f}")
print(f"active features per input: {(c_eval > 0).sum(dim=1).double().mean():.2f} on average")
print(f"largest |cosine| between two true directions: {overlaps.max():.2f} (they are not orthogonal)")

# %% [markdown]
# ## 2. The sparse autoencoder
#
# An SAE with `n_latents` latents has an encoder and a decoder (row vectors, `x` is
# `(batch, d_in)`):
#
# $$f = \mathrm{ReLU}\big((x - b_{dec})\, W_{enc} + b_{enc}\big), \qquad \hat x = f\, W_{dec} + b_{dec},$$
#
# with `W_enc: (d_in, n_latents)`, `W_dec: (n_latents, d_in)`. Row `i` of `W_dec` is latent
# `i`'s **direction**; if the SAE works, each true `g_i` is one of these rows. The decoder
# bias is subtracted before encoding (the "pre-encoder bias"), so the SAE encodes deviations
# from a learned centre.
#
# ✏️ **Exercise 1.** The encoder.

# %%
def sae_encode(x: Tensor, W_enc: Tensor, b_enc: Tensor, b_dec: Tensor) -> Tensor:
    """f = ReLU((x − b_dec) W_enc + b_enc): (batch, d_in) -> (batch, n_latents)."""
    ### BEGIN SOLUTION
    return torch.relu((x - b_dec) @ W_enc + b_enc)
    ### END SOLUTION


checks.check_sae_encode(sae_encode)


# %% [markdown]
# ✏️ **Exercise 2.** The decoder.

# %%
def sae_decode(f: Tensor, W_dec: Tensor, b_dec: Tensor) -> Tensor:
    """x̂ = f W_dec + b_dec: (batch, n_latents) -> (batch, d_in)."""
    ### BEGIN SOLUTION
    return f @ W_dec + b_dec
    ### END SOLUTION


checks.check_sae_decode(sae_decode)


# %% [markdown]
# ## 3. The loss, and why the decoder rows have unit norm
#
# The SAE minimises reconstruction error plus an **L1 penalty** on the latents, which pushes
# most of them to exactly zero:
#
# $$L = \frac{1}{B}\sum_{b} \Big( \lVert x_b - \hat x_b \rVert^2 + \lambda \sum_i |f_{b,i}| \Big).$$
#
# The penalty alone can be cheated: halve every `f_i` and double every decoder row, and the
# reconstruction is unchanged while the penalty halves. So the decoder rows are held at **unit
# norm**: after each step they are rescaled, and before each step the part of the gradient
# that would only change a row's length is removed.
#
# ✏️ **Exercise 3.** The loss (squared error summed over `d_in`, L1 summed over latents, both
# averaged over the batch).

# %%
def l1_sae_loss(x: Tensor, x_hat: Tensor, f: Tensor, l1_coefficient: float) -> Tensor:
    """mean over the batch of ‖x − x̂‖² + λ Σ_i |f_i|, a scalar."""
    ### BEGIN SOLUTION
    return (x - x_hat).square().sum(dim=1).mean() + l1_coefficient * f.abs().sum(dim=1).mean()
    ### END SOLUTION


checks.check_l1_sae_loss(l1_sae_loss)


# %% [markdown]
# ✏️ **Exercise 4.** Remove from each row of the decoder's gradient its component along
# that (unit) row, `g ← g − (g · w) w`, without changing either input in place.

# %%
def project_decoder_grad(W_dec: Tensor, grad: Tensor) -> Tensor:
    """Each row of grad minus its projection on the same row of W_dec (rows of W_dec are unit)."""
    ### BEGIN SOLUTION
    return grad - (grad * W_dec).sum(dim=1, keepdim=True) * W_dec
    ### END SOLUTION


checks.check_project_decoder_grad(project_decoder_grad)


# %% [markdown]
# ✏️ **Exercise 5.** And the rescaling after the step: every row of `W_dec` to unit norm
# (return a new tensor).

# %%
def normalise_decoder(W_dec: Tensor) -> Tensor:
    """W_dec with each row divided by its norm: (n_latents, d_in) -> same shape."""
    ### BEGIN SOLUTION
    return W_dec / W_dec.norm(dim=1, keepdim=True)
    ### END SOLUTION


checks.check_normalise_decoder(normalise_decoder)

# %% [markdown]
# `saelib.ReLUSAE` is this SAE (your encoder, decoder and loss), and `saelib.train_sae` the
# training loop: Adam, the gradient projection, the renormalisation, a progress bar. This
# chapter trains every SAE with its fast path, `fast=True`: the same loss with fewer passes
# over the batch (`course_utils/_fast/sae.py`), equal up to float rounding. Check
# that your functions compute what the library's SAE computes, then train one with 128 latents
# (twice the true number), `λ = 0.3`, on 1,000 batches of 1,024 fresh inputs.

# %%
sae = saelib.ReLUSAE(32, 128, l1_coefficient=0.3, device=device, generator=torch.Generator().manual_seed(100))
try:
    with torch.no_grad():
        f_yours = sae_encode(x_eval[:100], sae.W_enc, sae.b_enc, sae.b_dec)
        x_hat_yours = sae_decode(f_yours, sae.W_dec, sae.b_dec)
        x_hat_lib, f_lib = sae(x_eval[:100])
    print("your encoder and decoder match the library's:",
          torch.allclose(f_yours, f_lib, atol=1e-5) and torch.allclose(x_hat_yours, x_hat_lib, atol=1e-5))
except NotImplementedError:
    print("(finish exercises 1 and 2 to compare your encoder and decoder with the library's)")

# %% tags=["nbval-ignore-output"]
run = saelib.train_sae(sae, data, steps=1_000, batch_size=1_024, lr=1e-2, fast=True, description="ReLU SAE, λ = 0.3")

# %% [markdown]
# ## 4. Grading an SAE against the truth
#
# For each true direction `g_i`, find the decoder row most similar to it: its **max cosine
# similarity**. Their mean over true features is the **MMCS** (Sharkey et al.); a feature is
# **recovered** when its max cosine is above 0.9.
#
# ✏️ **Exercise 6.** MMCS. Neither matrix's rows need be unit vectors.

# %%
def mmcs(true_directions: Tensor, learned_directions: Tensor) -> float:
    """Mean over true directions (n_true, d) of their max cosine with a learned one (n_learned, d)."""
    ### BEGIN SOLUTION
    t = true_directions / true_directions.norm(dim=1, keepdim=True)
    s = learned_directions / learned_directions.norm(dim=1, keepdim=True)
    return float((t @ s.T).max(dim=1).values.mean())
    ### END SOLUTION


checks.check_mmcs(mmcs)


# %% [markdown]
# Without the truth, SAEs are judged by four numbers. **L0**: latents active per input.
# **Fraction of variance explained** (FVE): `1 − Σ‖x − x̂‖² / Σ‖x − x̄‖²`. **Dead**: the
# fraction of latents that never fire. **Shrinkage** `γ = Σ‖x̂‖² / Σ⟨x̂, x⟩`: the factor by
# which the reconstruction is too short on average (1 is unbiased; Rajamanoharan et al.'s
# relative reconstruction bias).
#
# ✏️ **Exercise 7.** Return them as a dict with keys `"l0"`, `"fve"`, `"dead"`, `"shrinkage"`.

# %%
def sae_metrics(x: Tensor, x_hat: Tensor, f: Tensor) -> dict:
    """L0, fraction of variance explained, dead fraction and shrinkage on one batch."""
    ### BEGIN SOLUTION
    return {
        "l0": float((f != 0).sum(dim=1).double().mean()),
        "fve": float(1 - (x - x_hat).square().sum() / (x - x.mean(dim=0)).square().sum()),
        "dead": float(((f != 0).sum(dim=0) == 0).double().mean()),
        "shrinkage": float(x_hat.square().sum() / (x_hat * x).sum()),
    }
    ### END SOLUTION


checks.check_sae_metrics(sae_metrics)

# %%
with torch.no_grad():
    x_hat, f = sae(x_eval)
try:
    yours = sae_metrics(x_eval, x_hat, f)
    print("your metrics:", "  ".join(f"{k} {v:.3f}" for k, v in yours.items()),
          f"  MMCS {mmcs(G, sae.W_dec.detach()):.3f}")
except NotImplementedError:
    print("(finish exercises 6 and 7 to see your metrics here)")
relu_scores = saelib.evaluate(sae, x_eval, G)
print(row("ReLU, λ = 0.3", relu_scores))
cosines = saelib.max_cosine_similarity(G, sae.W_dec)
print(f"worst-recovered feature: max cosine {cosines.min():.3f} (firing probability "
      f"{data.feature_probability[cosines.argmin()]:.4f})")
plots.plot_max_cosines(cosines, data.feature_probability)
plt.show()

# %% [markdown]
# The SAE finds the dictionary: MMCS above 0.99 and every one of the 64 features recovered, a
# latent lined up with each true direction, although the directions overlap and several fire
# together in every input. This is Sharkey et al.'s result (they report MMCS near 1 with a
# dictionary at least as large as the truth); even the worst-recovered feature is at cosine
# 0.98. Note the **shrinkage**: about 0.82. The L1 penalty makes every activation a little
# smaller than the truth, and the reconstruction with it. And L0 is about 8 against a true 5:
# the SAE spends a few small extra activations to patch up the shrunken reconstruction.
#
# ## 5. The Goldilocks zone
#
# Everything depends on `λ`. Train the same SAE at six coefficients (about 12 s).

# %% tags=["nbval-ignore-output"]
l1_coefficients = [0.01, 0.03, 0.1, 0.3, 1.0, 3.0]
goldilocks = {}
for lam in l1_coefficients:
    model = saelib.ReLUSAE(32, 128, l1_coefficient=lam, device=device, generator=torch.Generator().manual_seed(100))
    saelib.train_sae(model, data, steps=1_000, batch_size=1_024, lr=1e-2, fast=True, description=f"λ = {lam}")
    goldilocks[lam] = saelib.evaluate(model, x_eval, G)

# %%
for lam, scores in goldilocks.items():
    print(row(f"λ = {lam}", scores))
plots.plot_sae_sweep(l1_coefficients, {name: [goldilocks[lam][key] for lam in l1_coefficients]
                                       for name, key in [("MMCS", "mmcs"), ("L0", "l0"), ("dead fraction", "dead"),
                                                         ("dense fraction", "dense"), ("shrinkage", "shrinkage")]},
                     xlabel="L1 coefficient λ")
plt.show()

# %% [markdown]
# - **Too little L1** (`λ ≤ 0.03`): the reconstruction is nearly perfect, but about 45 latents
#   fire per input (the truth is 5) and most latents are **dense** (firing on more than 10 %
#   of inputs). The dictionary is an arbitrary basis, not the features: MMCS 0.57–0.75.
# - **Just right** (`λ ≈ 0.1–1`): MMCS above 0.96, peaking near `λ = 0.3`.
# - **Too much L1** (`λ ≥ 1`): activations **shrink** (γ = 0.50 at `λ = 1`), latents **die**
#   (8 % at `λ = 1`), and at `λ = 3` almost nothing fires: 69 % dead, L0 near 0.
#
# Sharkey et al. found the same window, at the coefficient where the dictionary matched the
# truth best. On real data there is no MMCS to read off, which is why the next section's
# signals matter.
#
# ## 6. How many features are there?
#
# Sweep the dictionary size at `λ = 0.3`, from half the true number to four times it, and
# watch three signals (about 12 s):
# - **Reconstruction stops improving** once there is a latent for every feature.
# - **Dead latents appear**: the extra latents have nothing to do. We count the latents that
#   fire on fewer than 1 in 1,000 inputs (the rarest true feature fires on 5.6 % of them).
# - **Successive dictionaries stop agreeing**: the MMCS of a dictionary against the next larger
#   one is highest when the smaller one has found the true features, which the larger one
#   finds too; below the true size latents are mixtures, above it the extra latents differ.

# %% tags=["nbval-ignore-output"]
sizes = [32, 48, 64, 96, 128, 256]
by_size, dictionaries = {}, {}
for n in sizes:
    model = saelib.ReLUSAE(32, n, l1_coefficient=0.3, device=device, generator=torch.Generator().manual_seed(100))
    saelib.train_sae(model, data, steps=1_000, batch_size=1_024, lr=1e-2, fast=True, description=f"{n} latents")
    by_size[n] = saelib.evaluate(model, x_eval, G)
    with torch.no_grad():
        by_size[n]["rare"] = float((saelib.firing_rates(model.encode(x_eval)) < 1e-3).double().mean())
    dictionaries[n] = model.W_dec.detach()

# %%
agreement = [saelib.mmcs(dictionaries[a], dictionaries[b]) for a, b in zip(sizes, sizes[1:])]
for n in sizes:
    print(row(f"{n} latents", by_size[n]) + f"  mse {by_size[n]['mse']:.3f}  rare {by_size[n]['rare']:.3f}")
print("MMCS of each dictionary against the next larger:",
      "  ".join(f"{a}→{b} {v:.3f}" for a, b, v in zip(sizes, sizes[1:], agreement)))
plots.plot_sae_sweep(sizes, {"reconstruction error ‖x − x̂‖²": [by_size[n]["mse"] for n in sizes],
                             "fires on < 0.1 % of inputs": [by_size[n]["rare"] for n in sizes],
                             "MMCS vs next larger": agreement + [float("nan")]},
                     xlabel="latents", logx=True, mark=64, mark_label="true features")
plt.show()

# %% [markdown]
# All three signals point at 64. The error drops until 64 latents and then stays flat; nearly
# dead latents appear only above 96; and the agreement between successive dictionaries peaks
# at 64 → 96 and falls on both sides. Sharkey et al. used the same kind of evidence to
# estimate a dictionary's true size. On real models the picture is less clean, since features
# are not a fixed finite set: larger SAEs split features into finer ones.
#
# ## 7. Other architectures
#
# The L1 penalty does two jobs at once: it decides **which** latents fire and it makes
# **how strongly** they fire smaller. Newer SAEs separate the two.
#
# - **TopK** (Gao et al. 2024): keep each input's `k` largest pre-activations, zero the rest.
#   No penalty at all; L0 is exactly `k`. An auxiliary loss (AuxK) lets dead latents learn
#   from the error.
# - **BatchTopK** (Bussmann et al. 2024): keep the `k · batch` largest pre-activations over
#   the whole batch, so busy inputs can use more latents than quiet ones. At inference a single
#   learned threshold replaces the batch.
#
# ✏️ **Exercise 8.** TopK: each row's `k` largest pre-activations, through a ReLU, zeros
# elsewhere.

# %%
def topk_activation(pre: Tensor, k: int) -> Tensor:
    """ReLU of each row's k largest entries, 0 elsewhere: (batch, n_latents) -> same shape."""
    ### BEGIN SOLUTION
    top = pre.topk(k, dim=1)
    return torch.zeros_like(pre).scatter(1, top.indices, torch.relu(top.values))
    ### END SOLUTION


checks.check_topk_activation(topk_activation)


# %% [markdown]
# ✏️ **Exercise 9.** BatchTopK: the `k · batch` largest ReLU'd pre-activations over the whole
# batch, 0 elsewhere.

# %%
def batch_topk_activation(pre: Tensor, k: int) -> Tensor:
    """The k·batch largest entries of ReLU(pre) over the whole batch, 0 elsewhere."""
    ### BEGIN SOLUTION
    a = torch.relu(pre).flatten()
    top = a.topk(k * pre.shape[0])
    return torch.zeros_like(a).scatter(0, top.indices, top.values).view_as(pre)
    ### END SOLUTION


checks.check_batch_topk_activation(batch_topk_activation)

# %% [markdown]
# - **JumpReLU** (Rajamanoharan et al. 2024, *Jumping Ahead*): `f_i = z_i · H(z_i − θ_i)`, a
#   ReLU with a learned jump: below the threshold `θ_i` nothing, above it the full value. The
#   penalty is the L0 count `Σ_i H(z_i − θ_i)` itself.
# - **Gated** (Rajamanoharan et al. 2024, *Improving Dictionary Learning with Gated SAEs*):
#   one path (with an L1 penalty) decides which latents fire, a second path sharing its
#   directions decides their size.
#
# The JumpReLU's threshold gets no gradient: `H` is flat almost everywhere. The paper uses a
# **straight-through estimator**: the backward pass pretends the jump is smoothed over a
# window of width `ε` (the rectangle kernel `K(u) = 1[|u| < 1/2]`):
#
# $$\frac{\partial f}{\partial z} = H(z - \theta), \qquad \frac{\partial f}{\partial \theta} \approx -\frac{\theta}{\varepsilon}\, K\!\Big(\frac{z - \theta}{\varepsilon}\Big).$$
#
# ✏️ **Exercise 10.** Given the upstream gradient `grad_output = ∂L/∂f` (batch, n_latents),
# return `∂L/∂z` (batch, n_latents) and `∂L/∂θ` (n_latents,), summed over the batch.

# %%
def jumprelu_grads(z: Tensor, threshold: Tensor, bandwidth: float, grad_output: Tensor) -> tuple[Tensor, Tensor]:
    """The straight-through gradients of JumpReLU_θ(z) = z · H(z − θ)."""
    ### BEGIN SOLUTION
    above = (z > threshold).to(z.dtype)
    window = ((z - threshold).abs() < bandwidth / 2).to(z.dtype)
    grad_z = grad_output * above
    grad_threshold = -(threshold / bandwidth) * (window * grad_output).sum(dim=0)
    return grad_z, grad_threshold
    ### END SOLUTION


checks.check_jumprelu_grads(jumprelu_grads)

# %% [markdown]
# Why is this a sensible gradient? The *expected* loss is smooth in `θ` even though each
# sample's loss is not. Take the L0 term: `E[H(z − θ)] = P(z > θ)`, whose derivative is
# `−p_z(θ)`, minus the density of `z` at the threshold. The straight-through estimate
# `−(1/ε) E[K((z − θ)/ε)]` is a kernel density estimate of exactly that. Compare it with a
# finite difference of the expected L0 on a million samples:

# %%
z = torch.randn(1_000_000, 1, generator=torch.Generator().manual_seed(0))
theta, eps, delta = torch.tensor([0.5]), 0.05, 0.01
finite_difference = float(((z > theta + delta).double().mean() - (z > theta - delta).double().mean()) / (2 * delta))
straight_through = float(-(1 / eps) * ((z - theta).abs() < eps / 2).double().mean())
exact = -float(torch.exp(-theta ** 2 / 2) / (2 * torch.pi) ** 0.5)
print(f"d P(z > θ) / dθ at θ = 0.5, z ~ N(0, 1): finite difference {finite_difference:.3f}, "
      f"straight-through {straight_through:.3f}, exact {exact:.3f}")

# %% [markdown]
# Now train all five at **matched sparsity**, about 5 active latents per input (the truth is
# 5), 128 latents each. The coefficients below were chosen for that (about 20 s).

# %% tags=["nbval-ignore-output"]
settings = {
    "ReLU + L1": ("relu", dict(l1_coefficient=0.5)),
    "TopK": ("topk", dict(k=5)),
    "BatchTopK": ("batchtopk", dict(k=5)),
    "JumpReLU": ("jumprelu", dict(l0_coefficient=0.02)),
    "Gated": ("gated", dict(l1_coefficient=0.4)),
}
architectures = {}
for name, (kind, kwargs) in settings.items():
    model = saelib.make_sae(kind, 32, 128, device=device, generator=torch.Generator().manual_seed(100), **kwargs)
    saelib.train_sae(model, data, steps=1_000, batch_size=1_024, lr=1e-2, fast=True, description=name)
    architectures[name] = saelib.evaluate(model, x_eval, G)

# %%
for name, scores in architectures.items():
    print(row(name, scores))
plots.plot_architectures(architectures)
plt.show()

# %% [markdown]
# At the same L0 all five find the dictionary (MMCS 0.99 or very close), but only the L1 SAE
# **shrinks**: `γ ≈ 0.71` against 1.00–1.01 for the other four, whose sparsity mechanism
# (a top-k, a threshold, a gate) does not pull on the magnitudes. Because they do not shrink,
# they also explain more variance at the same L0: about 0.88–0.91 against 0.76. This is the
# improvement each of these papers reports on language models. (The L1 SAE at `λ = 0.3`
# recovered the features as well, with L0 near 8 and less shrinkage; the L1 coefficient
# trades the two against each other.) TopK, BatchTopK and JumpReLU leave 27–31 % of their
# 128 latents dead: with about 5 slots per input and 64 features, the rest have nothing to do.
#
# ## 8. Dead latents and resampling
#
# A latent that stops firing gets no gradient and never comes back. Bricken et al. 2023
# **resample** them: every few hundred steps, each dead latent is re-initialised toward an
# input the SAE reconstructs badly (drawn with probability ∝ its squared loss): decoder row
# `(v − b_dec)/‖v − b_dec‖`, encoder column the same direction scaled to 0.2 × the living
# latents' mean encoder norm, encoder bias 0, and Adam's moments for it reset.
#
# ✏️ **Exercise 11.** The deterministic part: given the chosen inputs `inputs`
# `(n_dead, d_in)`, one per dead latent in index order, return new `W_enc, b_enc, W_dec`
# (do not modify the arguments).

# %%
def resample_dead(W_enc: Tensor, b_enc: Tensor, W_dec: Tensor, b_dec: Tensor, dead: Tensor, inputs: Tensor,
                  encoder_scale: float = 0.2) -> tuple[Tensor, Tensor, Tensor]:
    """Point each dead latent at (input − b_dec), normalised; the rest unchanged."""
    ### BEGIN SOLUTION
    W_enc, b_enc, W_dec = W_enc.clone(), b_enc.clone(), W_dec.clone()
    index = dead.nonzero().squeeze(1)
    d = inputs - b_dec
    d = d / d.norm(dim=1, keepdim=True)
    scale = encoder_scale * W_enc[:, ~dead].norm(dim=0).mean()
    W_dec[index] = d
    W_enc[:, index] = (d * scale).T
    b_enc[index] = 0.0
    return W_enc, b_enc, W_dec
    ### END SOLUTION


checks.check_resample_dead(resample_dead)

# %% [markdown]
# A learning rate ten times too high (0.1) kills many latents of a 64-latent SAE early in
# training. Train it with and without resampling every 100 steps (about 10 s):

# %% tags=["nbval-ignore-output"]
resampling = {}
for every in [None, 100]:
    model = saelib.ReLUSAE(32, 64, l1_coefficient=0.3, device=device, generator=torch.Generator().manual_seed(100))
    run = saelib.train_sae(model, data, steps=1_500, batch_size=1_024, lr=0.1, schedule="cosine",
                           resample_every=every, fast=True, description=f"resample every {every}")
    resampling[every] = (saelib.evaluate(model, x_eval, G), sum(count for _, count in run.resampled))

# %%
for every, (scores, count) in resampling.items():
    label = "no resampling" if every is None else f"every {every} steps"
    print(row(label, scores) + f"  (latents resampled: {count})")

# %% [markdown]
# Without resampling over a third of the latents end up dead and only about 40 % of the
# features are recovered. Resampling revives most of them: dead latents drop to a few
# percent and more features are found, though not all, as later resamplings land on
# directions other latents already cover. The clean fix is the learning rate; resampling
# is the safety net. (TopK's AuxK loss and a JumpReLU's threshold are other answers to the
# same problem.)
#
# ## 9. An SAE on chapter 01's pentagon
#
# Chapter 01's toy model stores 5 features in 2 dimensions as a pentagon. Its hidden layer
# `h = W x` is exactly the kind of superposed activation an SAE is for: 5 directions in a
# 2-D space. Train the pentagon again (4 seeds, keep the best; about 5 s), then an SAE with
# 5 latents on its hidden activations, without telling it the directions.

# %% tags=["nbval-ignore-output"]
pentagon = ToyModel(5, 2, n_instances=4, feature_probability=0.05, device=device,
                    generator=torch.Generator().manual_seed(0))
run = train(pentagon, steps=10_000, description="pentagon", fast=True)  # chapter 01's fast path

# %%
best = int(evaluate_loss(pentagon).argmin())
W_toy = pentagon.W.detach()[best]  # (hidden 2, features 5): the true directions are its columns
x_toy = pentagon.generate_batch(100_000, torch.Generator(device=device).manual_seed(1))[best]
h_toy = x_toy @ W_toy.T  # (batch, 2): the hidden activations
print(f"feature norms ‖W_i‖: {fmt(W_toy.norm(dim=0))}; inputs with a feature active: "
      f"{(x_toy.sum(dim=1) > 0).double().mean():.3f}")

# %% tags=["nbval-ignore-output"]
toy_saes = {}
for name, kind, kwargs in [("ReLU + L1, λ = 0.1", "relu", dict(l1_coefficient=0.1)), ("TopK, k = 1", "topk", dict(k=1))]:
    model = saelib.make_sae(kind, 2, 5, device=device, generator=torch.Generator().manual_seed(3), **kwargs)
    saelib.train_sae(model, h_toy[:80_000], steps=2_000, batch_size=1_024, lr=3e-3, fast=True, description=name)
    toy_saes[name] = model

# %%
for name, model in toy_saes.items():
    scores = saelib.evaluate(model, h_toy[80_000:], W_toy.T)
    print(row(name, scores) + "   max cosines " + fmt(saelib.max_cosine_similarity(W_toy.T, model.W_dec), 3))
plots.plot_sae_directions(W_toy.T, [m.W_dec.detach() for m in toy_saes.values()], titles=list(toy_saes))
plt.show()

# %% [markdown]
# Both SAEs put one latent on each side of the pentagon (grey: the model's five feature
# directions; arrows: the SAE's decoder rows). TopK with `k = 1` is exact here, because
# only one feature is active in almost every input that has any (each fires 5 % of the time);
# the L1 SAE is a few degrees off (max cosines 0.93–0.99): with neighbouring directions at 72°,
# a little of a neighbour's direction lowers the L1 cost of inputs that lie between them.
#
# ## Summary
#
# - An SAE writes activations as sparse non-negative combinations of unit decoder rows; with
#   enough latents and the right sparsity it **recovers known features** (MMCS > 0.99).
# - The **L1 coefficient** has a Goldilocks zone between dense, unaligned latents and dead,
#   shrunken ones; **dictionary size** shows the true feature count in the reconstruction
#   error, the appearance of nearly dead latents, and the agreement of successive dictionaries.
# - **TopK, BatchTopK, JumpReLU and Gated** SAEs separate which latents fire from how strongly:
#   no shrinkage and more variance explained at the same L0.
# - **Resampling** revives dead latents; it is a repair, not a cure.
#
# **Differences from the papers.** Our data is 8× smaller than Sharkey et al.'s (64 features
# in 32 dimensions instead of 512 in 256) and each SAE trains for 1,000 steps. Our JumpReLU
# starts from threshold 0.1 and bandwidth 0.05 instead of the paper's 0.001, which suits
# language-model activations normalised to `E‖x‖² = d` but learned nothing useful in 1,000
# steps on this data (MMCS 0.48). Resampling here recovers 66 % of the features, not all.
#
# **Next:** chapter 05b trains SAEs on the residual stream of a small language model that
# ships with the course, where the features are not handed to us.
