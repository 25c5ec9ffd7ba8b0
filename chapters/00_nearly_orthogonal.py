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
# # Chapter 00 — Nearly orthogonal
#
# Every later chapter leans on one fact: a space of d dimensions holds **far more than d nearly
# orthogonal directions**, and a **sparse** combination of them can still be taken apart. A
# model with m hidden dimensions that stores n > m features gives each feature a direction; the
# directions cannot all be orthogonal, but they can all be *nearly* orthogonal, and as long as
# only a few features are active at once, the small overlaps between them (the **interference**)
# stay small enough to ignore. This chapter is the mathematics under that sentence, measured:
#
# - how many directions fit in R^d with every pairwise |cos| below a given level, for random
#   directions and for the best arrangement (the Welch bound, the Thomson problem, and the
#   regular polygons of chapter 01 when d = 2);
# - the Johnson–Lindenstrauss lemma: a random projection to k ≈ log N / ε² dimensions keeps N
#   points' distances within a factor 1 ± ε;
# - mutual coherence, and what it does and does not guarantee;
# - compressed sensing: recovering a sparse f from x = W f with fewer measurements than
#   features, by iterative soft-thresholding (ISTA) and by the toy model's one-step decoder
#   ReLU(Wᵀx + b); the Donoho–Tanner phase transition;
# - the Bloom filter, the same trade between capacity and interference with bits.
#
# **You will**
# 1. Write the **coherence** of a set of directions (✏️) and measure it for random sets against
#    the concentration-of-measure prediction, and for optimised sets against the Welch bound.
# 2. Measure the Johnson–Lindenstrauss distortion against the dimension k.
# 3. Write **soft-thresholding** (✏️), the toy model's **one-step decoder** (✏️) and **ISTA**
#    (★ capstone), and draw the Donoho–Tanner phase diagram with your ISTA.
# 4. See where the one-step decoder fails first, and why.
# 5. Measure a Bloom filter's false positives, then explore everything in a widget.
#
# | # | you build | the chapter runs it for | about |
# |---|---|---|---|
# | 1 | `coherence`: the largest \|cos\| between two directions of a set | §1–3 and the widget | 10 min |
# | 2 | `soft_threshold`: the proximal map of the L1 norm | your ISTA | 5 min |
# | 3 | `one_step_decode`: the toy model's decoder ReLU(Wᵀx + b) | §4–5 | 5 min |
# | 4 ★ | **capstone:** `ista`, iterative soft-thresholding | the phase diagram (§5) and the widget | 20 min |
#
# Each check tells you *what* is wrong without giving the answer (`checks.hint("name")` when you
# are stuck) and returns what the rest of the chapter runs: yours once it passes, the course's
# until then (a `→` line says which); every result says what it was `[made with]`. 🔮 marks a
# **predict-then-see** question: write your prediction down before you run the next cell.
#
# **Time:** under a minute of compute on a laptop CPU.

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

from course_utils import checks, widgets
from course_utils import orthogonality as ortho
from course_utils.device import set_seed

torch.set_printoptions(precision=3, sci_mode=False)
set_seed(0)


def gen(seed: int) -> torch.Generator:
    """A seeded random-number generator: every experiment below draws from its own."""
    return torch.Generator().manual_seed(seed)


# %% [markdown]
# Everything in this chapter runs on the CPU in a fraction of a second per cell: these are
# matrices of a few hundred columns, not trained models.
#
# ## 1. How many nearly orthogonal directions fit?
#
# In R^d at most d directions are **exactly** orthogonal. Relax "orthogonal" to "the angle
# between any two is within a few degrees of 90°", that is |cos| ≤ μ for a small μ, and the
# count explodes. The number that measures a set of directions v_1, …, v_N is its **mutual
# coherence**, the largest overlap between two of them:
#
# $$\mu = \max_{i \ne j} \frac{|v_i \cdot v_j|}{\lVert v_i \rVert\,\lVert v_j \rVert} .$$
#
# (The absolute value: v and −v are the same *line*; a feature stored along −v interferes as
# much as one along v.) A model that stores N features along these directions and reads feature
# i back by projecting onto v_i picks up at most μ of every other active feature.
#
# ✏️ **Exercise 1.** Compute μ for the rows of V (N, d), and for each set of a batch
# (..., N, d) → (...,). The rows need not have unit length.

# %%
def coherence(V: Tensor) -> Tensor:
    """μ = max_{i≠j} |cos(v_i, v_j)| over the rows of V: (..., N, d) -> (...,)."""
    # YOUR CODE HERE
    raise NotImplementedError("exercise: coherence")


coherence_ = checks.check_coherence(coherence)

# %% [markdown]
# ### Random directions
#
# Draw N directions uniformly on the unit sphere of R^d (normalised Gaussian vectors,
# `ortho.random_unit_vectors`). The cosine of two of them is about Gaussian with variance 1/d:
# nearly every pair is nearly orthogonal, and the more dimensions, the more so. The coherence
# is the **largest** of the M = N(N − 1)/2 pairwise |cos|. The largest of M Gaussians of
# standard deviation σ is about σ·sqrt(2 ln M), so
#
# $$\mu_{\text{random}} \approx \sqrt{\frac{2 \ln M}{d}} \approx \sqrt{\frac{4 \ln N}{d}} .$$
#
# (The often-quoted sqrt(2 ln N / d) is the largest overlap of **one** direction with N others;
# over all pairs the logarithm doubles.) It grows only like the square root of the *logarithm*
# of N. Turned around: keeping every overlap below μ allows N ≈ exp(d μ² / 4) random
# directions, exponentially many in d. At small d the Gaussian estimate runs high, because a
# cosine cannot exceed 1; `ortho.coherence_prediction` uses the exact law of one cosine instead
# and gives the median of μ.
#
# The **Welch bound** (Welch 1974) is the floor that *no* arrangement of N > d lines beats:
#
# $$\mu \ge \sqrt{\frac{N - d}{d\,(N - 1)}} .$$
#
# 🔮 **Predict.** In d = 100 dimensions, 100 random directions have a coherence of about 0.39.
# What will 3,000 random directions (thirty times as many as the dimensions) have: about 0.5,
# about 0.9, or about 1?
#
# <details><summary>Answer</summary>
#
# **About 0.5.** The coherence grows like sqrt(ln M): thirty times more directions make about
# 900 times more pairs, so ln M grows from 8.5 to 15.3, and μ by a factor sqrt(15.3/8.5) ≈ 1.34.
# Every one of the 4.5 million pairs is still within 30° of orthogonal.
# </details>

# %% tags=["nbval-approx-0.01"]
D = 100
NS = (10, 30, 100, 300, 1000, 3000)
SETS = 5
random_mu = torch.stack([torch.stack([coherence_(ortho.random_unit_vectors(N, D, gen(10 * N + s)))
                                      for s in range(SETS)]) for N in NS])  # (len(NS), SETS)
print(f"d = {D}: coherence of N random directions (median of {SETS} sets)")
print("     N   measured   sqrt(2 ln M / d)   exact-law median   Welch bound   smallest angle")
for N, mus in zip(NS, random_mu):
    mu = float(mus.median())
    print(f"{N:6d}    {mu:.3f}          {ortho.coherence_concentration(N, D):.3f}              "
          f"{ortho.coherence_prediction(N, D):.3f}           {ortho.welch_bound(N, D):.3f}        "
          f"{math.degrees(math.acos(mu)):5.1f}°")
print(checks.made_with(coherence_))

# %%
dims = (25, 100, 400)
N_FIXED = 1000
by_dim = [float(torch.stack([coherence_(ortho.random_unit_vectors(N_FIXED, d, gen(d + s))) for s in range(SETS)]).median())
          for d in dims]
fig, (ax_N, ax_d) = plt.subplots(1, 2, figsize=(10, 3.3))
Ns = torch.logspace(1, 3.5, 30).round().int().tolist()
ax_N.plot(NS, random_mu.median(dim=1).values, "o", color="k", label="measured (median of 5)")
ax_N.plot(Ns, [ortho.coherence_concentration(N, D) for N in Ns], "--", color="C0", label="sqrt(2 ln M / d)")
ax_N.plot(Ns, [ortho.coherence_prediction(N, D) for N in Ns], "-", color="C0", label="exact-law median")
ax_N.plot(Ns, [ortho.welch_bound(N, D) for N in Ns], "-", color="C3", label="Welch bound")
ax_N.set_xscale("log")
ax_N.set_xlabel("number of directions N")
ax_N.set_ylabel("coherence μ")
ax_N.set_title(f"d = {D}", fontsize=9)
ax_N.legend(fontsize=7)
ax_d.plot(dims, by_dim, "o", color="k", label="measured")
ds = torch.linspace(20, 420, 40).round().int().tolist()
ax_d.plot(ds, [ortho.coherence_prediction(N_FIXED, d) for d in ds], "-", color="C0", label="exact-law median")
ax_d.plot(ds, [ortho.welch_bound(N_FIXED, d) for d in ds], "-", color="C3", label="Welch bound")
ax_d.set_xscale("log")
ax_d.set_xticks([25, 50, 100, 200, 400], ["25", "50", "100", "200", "400"])
ax_d.minorticks_off()
ax_d.set_xlabel("dimension d")
ax_d.set_title(f"N = {N_FIXED}", fontsize=9)
ax_d.legend(fontsize=7)
plt.tight_layout()
plt.show()
print(f"N = {N_FIXED}: median coherence " + ", ".join(f"{mu:.2f} at d = {d}" for d, mu in zip(dims, by_dim)))
print(checks.made_with(coherence_))

# %% [markdown]
# At d = 100 the measured coherence grows from 0.22 (N = 10) to only 0.50 (N = 3,000): thirty
# times more directions than dimensions, and no two of them closer than 60° to each other. The
# exact-law median is within 0.025 of every measurement (0.459 against 0.459 at N = 1,000);
# sqrt(2 ln M / d) runs 0.02 to 0.06 high, because a cosine cannot exceed 1 while its Gaussian
# stand-in can. The Welch floor, 0.10 at N = 3,000, is five times lower than what random
# directions reach: random is far from the best arrangement. At fixed N = 1,000 the coherence
# halves each time d quadruples (0.78 at d = 25, 0.46 at d = 100, 0.25 at d = 400): μ falls like
# 1/sqrt(d).
#
# ### The best arrangement: the Welch bound and the Thomson problem
#
# Random directions are far from the best. How low can μ go? Finding the N lines in R^d with
# the smallest largest overlap is a **Thomson-type problem** (Thomson asked how N electrons
# arrange themselves on a sphere). `ortho.optimise_arrangement` solves it by gradient descent:
# it pushes down a smooth maximum of the squared overlaps, (1/β) log Σ_{i<j} exp(β cos²(v_i, v_j)),
# sharpening β towards a hard maximum as it goes, and puts each vector back on the unit sphere
# after every step. The Welch bound is reached exactly when the lines form an **equiangular tight
# frame**: every pair at the same angle. Those exist only for some (N, d): N = d + 1 (the
# simplex), 6 lines in R³ (the icosahedron's diagonals), 10 in R⁵, 16 in R⁶, …

# %% tags=["nbval-approx-0.01"]
CASES = ((3, 2), (4, 3), (6, 3), (10, 5), (16, 6), (20, 5), (40, 10))
arranged = {}
print("  N   d   random    optimised   Welch bound   optimised / Welch")
for N, d in CASES:
    V, history = ortho.optimise_arrangement(N, d, steps=1000, generator=gen(N * d))
    arranged[N, d] = float(coherence_(V))
    random_ = float(torch.stack([coherence_(ortho.random_unit_vectors(N, d, gen(s))) for s in range(20)]).median())
    welch = ortho.welch_bound(N, d)
    print(f"{N:3d} {d:3d}    {random_:.3f}     {arranged[N, d]:.3f}       {welch:.3f}         {arranged[N, d] / welch:.3f}")
print(checks.made_with(coherence_))

# %% [markdown]
# Gradient descent reaches the Welch bound to three digits wherever an equiangular tight frame
# exists in this list: 3 lines in the plane (60° apart), 4 in R³ (the directions of a
# tetrahedron's vertices), 6 in R³ (the icosahedron's diagonals), 10 in R⁵ and 16 in R⁶. For
# 20 lines in R⁵ it stops at 0.500, 26 % above the bound, and no arrangement can do much better
# there: equiangular lines in R^d number at most d(d + 1)/2 = 15 (Gerzon's bound), so the Welch
# bound cannot be met. For 40 lines in R¹⁰ it stops 19 % above. Random sets of the same sizes
# are 2 to 2.7 times worse (0.84 to 0.98).
#
# ### Two dimensions: the regular polygons of chapter 01
#
# In the plane the answer is known exactly. N **lines** (v and −v the same) are best spread
# 180°/N apart. Chapter 01's toy model, though, stores features as **arrows**: its output ReLU
# cuts off negative interference, so a feature at −v costs nothing, while one at a small angle
# costs a lot. Minimising the largest **signed** cosine (`signed=True`: the Thomson problem
# itself, points on the circle) spreads N arrows 360°/N apart.
#
# 🔮 **Predict.** Five lines in the plane, arranged for the smallest largest |cos|: how many
# degrees apart? And five arrows, arranged for the smallest largest cos?
#
# <details><summary>Answer</summary>
#
# Five lines: **36°** apart (180°/5), with coherence cos 36° ≈ 0.81, above the Welch bound
# sqrt(3/8) ≈ 0.61, which no set of five lines in the plane reaches. Five arrows: **72°** apart,
# the regular **pentagon** that chapter 01's toy model learns for five sparse features in two
# dimensions, whose largest cosine is cos 72° ≈ 0.31.
# </details>

# %% tags=["nbval-approx-0.05"]
def polygon_gaps(V: Tensor, period: float) -> Tensor:
    """The angles (degrees) between neighbouring directions of the 2-D rows of V, around a
    circle of `period` degrees (180 for lines, 360 for arrows)."""
    angles = torch.rad2deg(torch.atan2(V[:, 1], V[:, 0])) % period
    angles = angles.sort().values
    return torch.diff(torch.cat([angles, angles[:1] + period]))


lines, _ = ortho.optimise_arrangement(5, 2, steps=300, generator=gen(5))
arrows, _ = ortho.optimise_arrangement(5, 2, steps=300, signed=True, generator=gen(5))
line_gaps, arrow_gaps = polygon_gaps(lines, 180.0), polygon_gaps(arrows, 360.0)
print("5 lines, gaps (degrees): ", " ".join(f"{g:.1f}" for g in line_gaps.tolist()),
      f"  coherence {float(coherence_(lines)):.3f} (cos 36° = {math.cos(math.pi / 5):.3f})")
print("5 arrows, gaps (degrees):", " ".join(f"{g:.1f}" for g in arrow_gaps.tolist()),
      f"  largest cos {float(ortho.cosines(arrows).fill_diagonal_(-1).max()):.3f} (cos 72° = {math.cos(2 * math.pi / 5):.3f})")
print(checks.made_with(coherence_))
fig, axes = plt.subplots(1, 2, figsize=(6, 3))
for ax, V, title in ((axes[0], torch.cat([lines, -lines]), "5 lines (v and −v)"), (axes[1], arrows, "5 arrows: the pentagon")):
    for x_, y_ in V.tolist():
        ax.plot([0, x_], [0, y_], color="C0")
    ax.set_xlim(-1.1, 1.1)
    ax.set_ylim(-1.1, 1.1)
    ax.set_aspect("equal")
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(title, fontsize=9)
plt.show()

# %% [markdown]
# Both come out exact to the printed 0.1°: the five lines are 36.0° apart (coherence 0.809 =
# cos 36°) and the five arrows 72.0° apart (largest cosine 0.309 = cos 72°): the regular
# pentagon that chapter 01's toy model learns for five sparse features in two dimensions. As
# *lines* the pentagon is no better than the five lines: its arrows two steps apart are 144°
# apart, and |cos 144°| = 0.809. The toy model can afford that large a negative overlap because
# its output ReLU removes negative interference.
#
# ## 2. Johnson–Lindenstrauss: few dimensions keep many distances
#
# The same concentration has a second face. Take N points in a space of any dimension n and
# project them with a random Gaussian matrix P (n, k), entries N(0, 1/k). The
# **Johnson–Lindenstrauss lemma** (1984) says that every squared pairwise distance survives
# within a factor 1 ± ε once
#
# $$k \ge \frac{4 \ln N}{\varepsilon^2/2 - \varepsilon^3/3}$$
#
# (Dasgupta & Gupta 2003's constant, `ortho.jl_dimension`). The dimension k needed grows with
# the **logarithm** of the number of points and does not depend on n at all. For a model, the
# points are its features: a hidden space of k ≈ log N / ε² dimensions can keep N features
# apart with errors of order ε.
#
# `ortho.max_distortion(X, k)` projects the rows of X once and returns the worst distortion
# max_{i<j} |‖P x_i − P x_j‖² / ‖x_i − x_j‖² − 1|.
#
# 🔮 **Predict.** 100 random points in R^1,000 need k = 222 for ε = 0.5 by the formula. If the
# same 100 points lived in R^10,000 instead, would they need a larger k?
#
# <details><summary>Answer</summary>
#
# **No.** The lemma's k depends on N and ε only: a random projection's error on one distance
# is an average over k independent directions, whatever n is. The measurement below projects
# 100 points from R^10,000 to the same k and gets the same distortion.
# </details>

# %% tags=["nbval-approx-0.02"]
N_POINTS, N_AMBIENT = 100, 1000
X = torch.randn(N_POINTS, N_AMBIENT, generator=gen(1))
X_wide = torch.randn(N_POINTS, 10 * N_AMBIENT, generator=gen(2))
KS = (10, 25, 50, 100, 222, 512, 1000)
PROJECTIONS = 5
g = gen(3)
distortion = torch.tensor([[ortho.max_distortion(X, k, g) for _ in range(PROJECTIONS)] for k in KS])
distortion_wide = torch.tensor([[ortho.max_distortion(X_wide, k, g) for _ in range(PROJECTIONS)] for k in KS])
median, median_wide = distortion.median(dim=1).values, distortion_wide.median(dim=1).values
print(f"{N_POINTS} points; the worst squared-distance distortion of a random projection to k dims "
      f"(median of {PROJECTIONS} projections)")
print("     k   from R^1,000   from R^10,000   × sqrt(k)")
for k, m, w in zip(KS, median.tolist(), median_wide.tolist()):
    print(f"{k:6d}      {m:.3f}          {w:.3f}         {m * math.sqrt(k):.2f}")
for eps in (0.5, 0.3):
    k = ortho.jl_dimension(N_POINTS, eps)
    row = distortion[KS.index(k)]
    print(f"ε = {eps}: the lemma's k = {k}; worst distortion below ε in {int((row < eps).sum())} of {PROJECTIONS} "
          f"projections (largest {float(row.max()):.3f})")
fig, ax = plt.subplots(figsize=(5, 3))
ax.plot(KS, median, "o-", color="k", label="from R^1,000")
ax.plot(KS, median_wide, "s--", color="C1", label="from R^10,000")
for eps, colour in ((0.5, "C0"), (0.3, "C2")):
    ax.plot([ortho.jl_dimension(N_POINTS, eps)], [eps], "*", color=colour, ms=12, label=f"lemma's k for ε = {eps}")
ax.set_xscale("log")
ax.set_yscale("log")
ax.set_xlabel("target dimension k")
ax.set_ylabel("worst distortion")
ax.legend(fontsize=7)
plt.show()

# %% [markdown]
# The worst distortion falls like 1/sqrt(k): multiplied by sqrt(k) it stays between 5.1 and 7.4
# from k = 10 to k = 1,000. At the lemma's k it is below ε in all five projections (at most
# 0.365 for ε = 0.5 at k = 222, and 0.290 for ε = 0.3 at k = 512). The lemma is conservative
# here: the median at k = 222 is 0.34, well inside 0.5. And 100 points from R^10,000 distort the
# same as from R^1,000 (0.36 against 0.34 at k = 222, 0.171 both at k = 1,000): the ambient
# dimension n does not enter.
#
# ## 3. Mutual coherence: what it guarantees
#
# Now read the directions as a **dictionary**. A sensing matrix W (d, n) has n unit columns in
# R^d, one per feature, exactly like the toy model's W; a signal f ∈ R^n with k nonzero entries
# (k-sparse) is measured as x = W f, d numbers for n unknowns. When does x determine f?
#
# Donoho & Elad (2003): if W's columns have coherence μ, every k-sparse f with
#
# $$k < \frac{1}{2}\left(1 + \frac{1}{\mu}\right)$$
#
# is the **unique** sparsest solution of x = W f (and L1 minimisation finds it). The guarantee
# holds for every support and every sign pattern at once, the worst case.
#
# 🔮 **Predict.** W has n = 400 random unit columns in d = 100 dimensions. How large a k does the
# coherence guarantee cover? And the best possible W, one that reaches the Welch bound?
#
# <details><summary>Answer</summary>
#
# Random columns have μ ≈ 0.4 (§1), so the bound is about (1 + 2.5)/2 ≈ 1.7: **k = 1**, a single
# feature. Even a W at the Welch bound, μ ≈ 0.087, covers only k ≤ 6. Yet you will see ISTA
# recover **dozens** of nonzeros from the same 100 measurements: coherence is a worst-case
# guarantee, and the typical case is far better.
# </details>

# %% tags=["nbval-approx-0.01"]
d_cs, n_cs = 100, 400
W = ortho.sensing_matrix(d_cs, n_cs, gen(4))
mu_W = float(coherence_(W.T))  # the columns of W are the directions
welch_W = ortho.welch_bound(n_cs, d_cs)
print(f"W: n = {n_cs} random unit columns in d = {d_cs}: coherence μ = {mu_W:.3f}, guarantees "
      f"k < (1 + 1/μ)/2 = {(1 + 1 / mu_W) / 2:.2f}, so k ≤ {ortho.identifiable_sparsity(mu_W)}")
print(f"the best possible W (Welch bound μ = {welch_W:.3f}): k < {(1 + 1 / welch_W) / 2:.2f}, "
      f"so k ≤ {ortho.identifiable_sparsity(welch_W)}")
print(f"the Donoho–Tanner edge at δ = d/n = {d_cs / n_cs}: k ≈ ρ_DT · d = "
      f"{float(ortho.dt_curve([d_cs / n_cs])[0]) * d_cs:.0f} nonzeros (typical signals; §5)")
print(checks.made_with(coherence_))

# %% [markdown]
# ## 4. Compressed sensing: decoding a sparse signal
#
# Recovering a sparse f from x = W f, with d < n, is **compressed sensing** (Candès & Tao 2005,
# Donoho 2006). The classic route replaces "the sparsest f" (a combinatorial search) with
# the L1 problem
#
# $$\min_f \; \tfrac12 \lVert x - W f \rVert^2 + \lambda \lVert f \rVert_1 ,$$
#
# which a simple iteration solves: **ISTA**, iterative soft-thresholding (Daubechies, Defrise &
# De Mol 2004). Its one nonlinearity is the proximal map of the L1 norm, **soft-thresholding**:
#
# $$S_t(v) = \operatorname{sign}(v)\,\max(|v| - t,\ 0) \quad\text{entrywise.}$$
#
# ✏️ **Exercise 2.** Write S_t. `t` is a number or a tensor that broadcasts against `x`.

# %%
def soft_threshold(x: Tensor, t) -> Tensor:
    """S_t(x) = sign(x) · max(|x| − t, 0), entrywise."""
    # YOUR CODE HERE
    raise NotImplementedError("exercise: soft_threshold")


shrink = checks.check_soft_threshold(soft_threshold)

# %% [markdown]
# ### The toy model's decoder, in one step
#
# Chapter 01's toy model reads its features back in **one** step: x' = ReLU(WᵀW f + b), with a
# negative bias. In the language of compressed sensing, h = W f is the measurement x, and the
# decoder projects x onto every feature direction, Wᵀx, and thresholds:
#
# $$\hat f = \operatorname{ReLU}(W^\top x + b) .$$
#
# Feature i's projection is f_i plus the **interference** Σ_{j≠i} (W_i · W_j) f_j of the other
# active features; the negative bias b removes interference smaller than |b|, and the ReLU
# sets the rest to zero (the toy model's features are nonnegative). This is soft-thresholding's
# one-sided cousin, applied once.
#
# ✏️ **Exercise 3.** Write the one-step decoder for every row of x (trials, d), with W (d, n)
# and b a number or an (n,) tensor.

# %%
def one_step_decode(W: Tensor, x: Tensor, b) -> Tensor:
    """f̂ = ReLU(Wᵀ x + b) for every row of x: W (d, n), x (trials, d) -> (trials, n)."""
    # YOUR CODE HERE
    raise NotImplementedError("exercise: one_step_decode")


one_step = checks.check_one_step_decode(one_step_decode)

# %% [markdown]
# ### ★ Capstone: ISTA
#
# ISTA alternates a gradient step on the squared error with soft-thresholding. From f = 0,
# repeat `steps` times:
#
# $$f \leftarrow S_{\lambda/L}\!\left(f + \tfrac{1}{L}\, W^\top (x - W f)\right), \qquad L = \lVert W \rVert_2^2 ,$$
#
# where L, the largest singular value of W squared, is the Lipschitz constant of the squared
# error's gradient (so 1/L is a safe step size), and the threshold is λ/L because the step has
# size 1/L. Signals are rows: f (trials, n), x (trials, d); W f for every trial is `f @ W.T` and
# Wᵀr is `r @ W`. Use `shrink`, the soft-thresholding the check above handed back (yours once
# it passed).
#
# Compare the first step from f = 0 with the one-step decoder: f ← S_{λ/L}(Wᵀx / L). It is the
# same projection and threshold; ISTA then **subtracts what its estimate explains** and
# projects the residual again, so the interference shrinks at every step.
#
# The check runs your ISTA on small problems for 1 to 100 steps and compares every iterate.

# %%
def ista(W: Tensor, x: Tensor, lam: float, steps: int) -> Tensor:
    """`steps` ISTA iterations for min ½‖x − W f‖² + λ‖f‖₁ from f = 0: W (d, n), x (trials, d) -> f (trials, n)."""
    # YOUR CODE HERE
    raise NotImplementedError("exercise: ista")


ista_ = checks.check_ista(ista)

# %% [markdown]
# ### One signal, both decoders
#
# W is §3's matrix: n = 400 features in d = 100 dimensions. Take a nonnegative signal with
# k = 10 active features, values uniform on [1, 2] (`ortho.sparse_signals`), and decode it with
# the one-step decoder (b = −0.5, half the smallest active value) and with your ISTA (λ = 0.05,
# 300 steps).
#
# How to score a decoder: both leave the values a little off (the one-step decoder keeps the
# interference and its bias; ISTA shrinks every value by about λ). What matters is **which
# features it keeps**. `ortho.recovered` refits the values by least squares on the support a
# decoder found (its entries above 1 % of its largest, at most d of them) and counts the signal
# recovered when the refit is within 1 % of f: the kept support contains the true one.
#
# 🔮 **Predict.** The interference on an inactive feature is a sum of k terms (W_i · W_j) f_j,
# each cosine about N(0, 1/d). How large is it, for k = 10 and d = 100, next to the bias 0.5?
#
# <details><summary>Answer</summary>
#
# Its standard deviation is sqrt(k · E[f_j²] / d) = sqrt(10 · (7/3) / 100) ≈ **0.48**, about the
# bias itself: with 390 inactive features, dozens of them have interference above 0.5 and the
# one-step decoder turns them on. ISTA explains the signal away step by step and keeps exactly
# the 10.
# </details>

# %% tags=["nbval-approx-0.01"]
K_DEMO, LAM, STEPS, BIAS = 10, 0.05, 300, ortho.ONE_STEP_BIAS
f = ortho.sparse_signals(200, n_cs, K_DEMO, gen(5))  # 200 signals; the figure shows the first
x = ortho.measure(W, f)
projection = x @ W
interference = (projection - f)[f == 0]
f_one, f_ista = one_step(W, x, BIAS), ista_(W, x, LAM, STEPS)
demo = {}  # decoder -> the fraction of the 200 signals recovered
print(f"n = {n_cs}, d = {d_cs}, k = {K_DEMO}: interference on the inactive features: std {float(interference.std()):.3f} "
      f"(predicted sqrt(k·E[f²]/d) = {math.sqrt(K_DEMO * 7 / 3 / d_cs):.3f}); "
      f"{float((interference > -BIAS).double().mean()):.1%} of them above |b| = {-BIAS}")
for name, estimate in (("one-step", f_one), ("ISTA", f_ista)):
    kept = ortho.support(estimate)
    print(f"{name:9s}: keeps {float(kept.sum(-1).double().mean()):5.1f} features per signal on average "
          f"({float((kept & (f > 0)).sum(-1).double().mean()):.1f} of the {K_DEMO} true ones); "
          f"recovered {demo.setdefault(name, float(ortho.recovered(W, x, estimate, f).double().mean())):.2f} "
          f"of {f.shape[0]} signals; "
          f"raw relative error {float(ortho.relative_error(estimate, f).median()):.3f} (median)")
print(checks.made_with(one_step, ista_, shrink))
fig, ax = plt.subplots(figsize=(9, 3))
index = torch.arange(n_cs)
ax.plot(index, projection[0], ".", color="grey", ms=3, label="Wᵀx: true value + interference")
ax.axhline(-BIAS, color="C1", ls="--", lw=1, label="one-step threshold −b")
active = f[0] > 0
ax.plot(index[active], f[0][active], "o", color="k", mfc="none", ms=8, label="true f")
kept = ortho.support(f_ista[:1])[0]
ax.plot(index[kept], f_ista[0][kept], "x", color="C2", label="your ISTA (entries over 1 % of its largest)")
ax.set_xlabel("feature i")
ax.legend(fontsize=7, ncol=2)
plt.show()

# %% [markdown]
# The interference has a standard deviation of 0.478 (predicted 0.483), and 14.6 % of the 390
# inactive features (about 57 per signal) are pushed above |b| = 0.5. The one-step decoder
# keeps 63 features per signal, and 9.6 of the 10 true ones on average: a true feature with
# enough negative interference falls under the threshold. The refit on the kept support
# recovers 64 % of the signals; the raw one-step values are 66 % off (median relative error).
# Your ISTA keeps all 10 true features of every signal, plus about 9.5 tiny entries it has
# not yet driven to zero in 300 steps, and recovers all 200 signals; its raw estimate is 5.3 %
# off, the shrinkage by λ.
#
# ## 5. The Donoho–Tanner phase transition
#
# Now vary the two ratios that matter: the **undersampling** δ = d/n (measurements per
# feature) and the **sparsity** ρ = k/d (nonzeros per measurement). Donoho & Tanner (2009)
# found that L1 recovery of a k-sparse signal from Gaussian measurements has a **sharp phase
# transition**: as n grows, the success rate jumps from 1 to 0 across a curve ρ_DT(δ). The curve
# can be computed from the *statistical dimension* of the L1 descent cone (Amelunxen, Lotz,
# McCoy & Tropp 2014): `ortho.dt_curve`. At δ = 0.5, ρ_DT = 0.386: half as many measurements
# as features recover most signals with up to 38 % as many nonzeros as measurements.
#
# We draw the success rate of **your ISTA** on a 10 × 19 grid of (δ, ρ), n = 200, 20 signals a
# cell (one W per δ), and the one-step decoder's on the same grid.
#
# 🔮 **Predict.** Where does the one-step decoder ReLU(Wᵀx + b) fail first: at small δ (few
# measurements), at large ρ (many nonzeros), or both? Will its success region lie inside ISTA's?
#
# <details><summary>Answer</summary>
#
# It fails first along the **sparsity** axis: its interference grows like sqrt(k/d) = sqrt(ρ)
# at every δ, and it never explains any of it away, so it needs far sparser signals than ISTA.
# Its region lies **inside** ISTA's: wherever it succeeds ISTA does too (its first step is the
# one-step decoder with a threshold), and ISTA keeps succeeding up to the Donoho–Tanner curve.
# </details>

# %% tags=["nbval-approx-0.1"]
N_GRID, TRIALS = 200, 20
deltas = [round(0.1 * i, 1) for i in range(1, 11)]
rhos = [round(0.05 * i, 2) for i in range(1, 20)]
your_ista = lambda W_, x_: ista_(W_, x_, LAM, STEPS)  # noqa: E731
ista_grid = ortho.phase_grid(your_ista, N_GRID, deltas, rhos, TRIALS, gen(6))
one_step_grid = ortho.phase_grid(lambda W_, x_: one_step(W_, x_, BIAS), N_GRID, deltas, rhos, TRIALS, gen(6))
rho_dt = ortho.dt_curve(deltas)
print(f"n = {N_GRID}, {TRIALS} signals a cell; the 50 % crossing of the success rate along ρ, at each δ")
print("  δ     ρ_DT    ISTA    one-step")
crossings = {}
for i, delta in enumerate(deltas):
    crossings[delta] = [ortho.transition_point(rhos, grid[i].tolist()) for grid in (ista_grid, one_step_grid)]
    print(f"{delta:4.1f}   {float(rho_dt[i]):.3f}   " + "   ".join(
        f"{c:.3f}" if c == c else (" >0.95" if grid[i, -1] >= 0.5 else " <0.05") for c, grid in
        zip(crossings[delta], (ista_grid, one_step_grid))))
only_ista = int(((ista_grid > 0.5) & (one_step_grid <= 0.5)).sum())
only_one = int(((one_step_grid > 0.5) & (ista_grid <= 0.5)).sum())
print(f"cells where ISTA succeeds (> 50 %) and the one-step decoder does not: {only_ista}; the other way round: {only_one}")
print(f"cells where the one-step decoder succeeds: {int((one_step_grid > 0.5).sum())}, ISTA: {int((ista_grid > 0.5).sum())}, "
      f"of {ista_grid.numel()}")
print(checks.made_with(ista_, shrink, one_step))
fig, axes = plt.subplots(1, 2, figsize=(10, 3.6), sharey=True)
extent = (deltas[0] - 0.05, deltas[-1] + 0.05, rhos[0] - 0.025, rhos[-1] + 0.025)
fine = torch.linspace(0.02, 1, 60)
for ax, grid, title in ((axes[0], ista_grid, "your ISTA"), (axes[1], one_step_grid, "one-step ReLU(Wᵀx + b)")):
    image = ax.imshow(grid.T, origin="lower", extent=extent, aspect="auto", cmap="viridis", vmin=0, vmax=1)
    ax.plot(fine, ortho.dt_curve(fine), color="C3", lw=2, label="Donoho–Tanner ρ_DT(δ)")
    ax.set_xlabel("δ = d / n")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7, loc="upper left")
axes[0].set_ylabel("ρ = k / d")
fig.colorbar(image, ax=axes, label="success rate")
plt.show()

# %% [markdown]
# Your ISTA's 50 % crossing follows the Donoho–Tanner curve within 0.025 for δ ≤ 0.6 (0.379
# against 0.386 at δ = 0.5) and falls increasingly below it at larger δ: 0.438 against 0.499 at
# δ = 0.7, 0.586 against 0.678 at δ = 0.9, and 0.625 against 1 at δ = 1, where W is square and
# every signal is determined. Dense signals need more than our fixed 300 steps at λ = 0.05,
# and the curve is the n → ∞ limit of the exact L1 solution.
#
# The one-step decoder's crossing stays between ρ = 0.09 and 0.19 at every δ: more
# measurements barely help it, because its interference, sqrt(k E[f²]/d) = sqrt(ρ E[f²]),
# depends on ρ alone. Its success region lies inside ISTA's. It succeeds (over 50 %) in 22
# cells, each of them an ISTA success too; ISTA succeeds in 52 more where the one-step decoder
# does not, and there is no cell the other way round. This is why the toy model of chapter 01
# needs very sparse features to superpose: it decodes in one step.
#
# ## 6. The Bloom filter: superposition with bits
#
# A **Bloom filter** stores a set in m bits: each item sets k bits chosen by k hash functions,
# and a query answers "present" when all k of its bits are set. Each item is a k-sparse binary
# direction in m dimensions, the set is their superposition (OR instead of sum), and the query
# is a one-step decoder with a threshold. Items never inserted are sometimes reported present:
# a **false positive**, the bits' interference. After n insertions a bit is still 0 with
# probability about e^{−kn/m}, so
#
# $$P(\text{false positive}) \approx \left(1 - e^{-kn/m}\right)^k ,$$
#
# smallest at k = (m/n) ln 2 (then half the bits are set). `ortho.bloom_false_positive_rate`
# builds one filter (BLAKE2b as the hash, salted by the generator) and queries items never
# inserted; we average five filters of 4,000 queries each (one filter's rate wanders by about
# 20 %: it goes as the k-th power of the fraction of bits set, which itself fluctuates).
#
# 🔮 **Predict.** m = 1,000 bits, n = 100 items. More hash bits per item make each item's
# "direction" more distinctive, but fill the filter faster. Is k = 3, k = 7 or k = 12 best?
#
# <details><summary>Answer</summary>
#
# **k = 7**, close to (m/n) ln 2 = 6.9. Fewer bits leave each item too easy to imitate; more bits
# fill the filter, so that a random query finds all its bits set by other items. The same trade
# as superposition: more features (load) or less distinctive codes both raise the interference.
# </details>

# %% tags=["nbval-approx-0.005"]
M_BITS = 1000
bloom = {}  # (n items, k) -> the mean false-positive rate of 5 filters
print(f"m = {M_BITS} bits")
print("  n items    k   false positives (mean of 5 filters)   predicted (1 − e^(−kn/m))^k")
for n_items in (50, 100, 200):
    for k in (3, 7, 12):
        rate = bloom[n_items, k] = sum(ortho.bloom_false_positive_rate(M_BITS, k, n_items, gen(7 + s), queries=4_000)
                                       for s in range(5)) / 5
        print(f"{n_items:6d}    {k:3d}      {rate:.4f}                                {ortho.bloom_prediction(M_BITS, k, n_items):.4f}")
print(f"best k for n = 100: (m/n) ln 2 = {ortho.bloom_best_k(M_BITS, 100):.1f}")
ks = list(range(1, 16))
fig, ax = plt.subplots(figsize=(5, 3))
for n_items, colour in ((50, "C0"), (100, "C1"), (200, "C3")):
    ax.plot(ks, [ortho.bloom_prediction(M_BITS, k, n_items) for k in ks], color=colour, label=f"n = {n_items}")
    ax.plot(ks[::2], [ortho.bloom_false_positive_rate(M_BITS, k, n_items, gen(8), queries=5_000) for k in ks[::2]],
            "o", color=colour, ms=4)
ax.set_yscale("log")
ax.set_xlabel("hash bits per item k")
ax.set_ylabel("false-positive rate")
ax.set_title(f"m = {M_BITS} bits: prediction (lines), measured (dots)", fontsize=9)
ax.legend(fontsize=7)
plt.show()

# %% [markdown]
# Averaged over five filters, the measured rate is within 10 % of the prediction wherever it is
# above 0.01 (0.0085 against 0.0082 at n = 100, k = 7; 0.3108 against 0.3194 at n = 200,
# k = 12); the smallest rates, a few in 10,000, rest on a handful of hits. At n = 100, k = 7
# beats both k = 3 and k = 12 (0.0085 against 0.0161 and 0.0126). The best k falls as the load
# grows: at n = 50, k = 12 beats k = 7 (0.0001 against 0.0004), and at n = 200, k = 3 beats both.
#
# ## 7. Explore
#
# Three sliders: the dimension d, the number of directions n, and the nonzeros per signal k.
# Each setting draws a new W (d, n) and 20 signals and shows W's coherence against the random
# prediction and the Welch floor, the interference the one-step decoder sees against its bias,
# and how often your ISTA and the one-step decoder recover the signals, with the setting marked
# on the Donoho–Tanner plane. Try: d = 50, n = 200, then raise k until each decoder fails; or
# hold k and lower d.

# %% tags=["nbval-ignore-output"]
widgets.orthogonality_explorer(d=50, n=200, k=5, ista=ista_, coherence=coherence_)

# %% [markdown]
# ## Summary
#
# - In d dimensions, N random directions have coherence about sqrt(2 ln M / d) with
#   M = N(N − 1)/2 pairs: it grows only like sqrt(ln N), so exponentially many directions fit
#   with every overlap small. The Welch bound is the floor; optimised arrangements reach it
#   where equiangular tight frames exist, and in the plane they are the regular polygons of
#   chapter 01.
# - A random projection to k ≈ log N / ε² dimensions keeps N points' distances within 1 ± ε
#   (Johnson–Lindenstrauss), whatever their original dimension.
# - Coherence guarantees the recovery of k-sparse signals only for k < (1 + 1/μ)/2, a worst
#   case far below what decoders achieve on typical signals.
# - ISTA, iterating "project, subtract what is explained, soft-threshold", recovers sparse
#   signals up to the Donoho–Tanner curve. The toy model's one-step decoder ReLU(Wᵀx + b) is its
#   first step alone: its interference grows like sqrt(k/d), and it fails at much smaller
#   sparsity. That is why superposition in the toy model needs very sparse features.
# - A Bloom filter is the same trade between capacity and interference, with bits.
#
# **Where the numbers come from.** ISTA runs a fixed 300 steps at λ = 0.05 and the signals have
# n = 200 features, so its measured transition sits a little below the asymptotic curve where
# k is large; the curve is the n → ∞ limit.
