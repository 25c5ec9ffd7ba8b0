"""Nearly orthogonal: the geometry and compressed sensing behind superposition (chapter 00).

A space of d dimensions holds far more than d nearly orthogonal directions, and a sparse
combination of them can still be decoded.  One screen per idea:

    how many directions fit    random unit vectors, their coherence μ = max_{i≠j} |cos(v_i, v_j)|
                               against the concentration prediction, the Welch bound
                               μ ≥ sqrt((N − d) / (d (N − 1))) (Welch 1974) as the floor, and an
                               arrangement optimised by gradient descent (the Thomson problem)
    Johnson–Lindenstrauss      a Gaussian projection to k ≥ 4 ln N / (ε²/2 − ε³/3) dimensions
                               keeps every squared pairwise distance within a factor 1 ± ε
                               (Dasgupta & Gupta 2003's constant)
    identifiability            a k-sparse f is the unique sparsest solution of x = W f when
                               k < (1 + 1/μ) / 2 (Donoho & Elad 2003)
    compressed sensing         ISTA (Daubechies, Defrise & De Mol 2004), the L1 route, against the
                               toy model's one-step decoder f̂ = ReLU(Wᵀ x + b) (Elhage et al. 2022);
                               the success rate over a (ρ = k/d, δ = d/n) grid and the
                               Donoho–Tanner curve from the statistical dimension (Amelunxen,
                               Lotz, McCoy & Tropp 2014, "Living on the edge")
    Bloom filter               m bits, k hashes, n items: false positives against (1 − e^{−kn/m})^k

Shapes.  A set of N vectors in R^d is V (N, d), one vector per row.  A sensing matrix is
W (d, n), one column per feature as in the toy model (h = W f), or a batch of them
(trials, d, n); signals are rows: f (trials, n), measurements x (trials, d), so x = f Wᵀ.
"""

from __future__ import annotations

import hashlib
import math
from typing import Sequence

import torch
from torch import Tensor

_EPS = 1e-12


# --------------------------------------------------------------------------------------
# How many nearly orthogonal directions fit in d dimensions
# --------------------------------------------------------------------------------------


def random_unit_vectors(N: int, d: int, generator: torch.Generator | None = None,
                        dtype: torch.dtype = torch.float32) -> Tensor:
    """N directions drawn uniformly on the unit sphere of R^d (normalised Gaussians): (N, d)."""
    V = torch.randn(N, d, generator=generator, dtype=dtype)
    return V / V.norm(dim=-1, keepdim=True).clamp_min(_EPS)


def cosines(V: Tensor) -> Tensor:
    """cos(v_i, v_j) for every pair: V (..., N, d) -> (..., N, N), ones on the diagonal."""
    U = V / V.norm(dim=-1, keepdim=True).clamp_min(_EPS)
    return U @ U.transpose(-1, -2)


def coherence(V: Tensor) -> Tensor:
    """The mutual coherence μ = max_{i≠j} |cos(v_i, v_j)|: V (..., N, d) -> (...,).

    Lines, not arrows: v and −v count as the same direction (|cos|)."""
    C = cosines(V).abs()
    off = ~torch.eye(V.shape[-2], dtype=torch.bool, device=V.device)
    return C[..., off].amax(dim=-1)


def coherence_concentration(N: int, d: int) -> float:
    """The concentration-of-measure estimate of a random set's coherence, sqrt(2 ln M / d) with
    M = N (N − 1) / 2 pairs: each cosine is about N(0, 1/d), and the largest of M such is about
    sqrt(2 ln M) standard deviations.  Good to the leading order only (see
    ``coherence_prediction``)."""
    return math.sqrt(2 * math.log(N * (N - 1) / 2) / d)


def _cosine_tail(t: Tensor, d: int, points: int = 4001) -> Tensor:
    """P(|cos| > t) for two independent uniform directions in R^d, t in [0, 1] (a tensor).

    With θ the angle between them, the density of θ is ∝ sin^{d−2} θ, so
    P(|cos| > t) = ∫_0^{arccos t} sin^{d−2} θ dθ / ∫_0^{π/2} sin^{d−2} θ dθ (Simpson's rule)."""
    def integral(upper: Tensor) -> Tensor:
        s = torch.linspace(0, 1, points, dtype=torch.float64)
        theta = upper[..., None] * s
        weights = torch.ones(points, dtype=torch.float64)
        weights[1:-1:2], weights[2:-1:2] = 4.0, 2.0
        return (torch.sin(theta) ** (d - 2) * weights).sum(-1) * upper / (3 * (points - 1))

    return integral(torch.arccos(t.double().clamp(0, 1))) / integral(torch.tensor(math.pi / 2, dtype=torch.float64))


def coherence_prediction(N: int, d: int, quantile: float = 0.5) -> float:
    """The median (or another ``quantile``) of the coherence of N random directions in R^d,
    treating the M = N (N − 1) / 2 pairwise cosines as independent draws of the exact law of
    one cosine: P(μ ≤ t) = (1 − P(|cos| > t))^M, solved for t by bisection.

    Accurate at small d, where sqrt(2 ln M / d) (``coherence_concentration``) is not: the exact
    cosine is bounded by 1 and lighter-tailed than its Gaussian approximation."""
    target = 1 - quantile ** (2 / (N * (N - 1)))  # the tail P(|cos| > t) that each pair may have
    low, high = 0.0, 1.0
    for _ in range(50):
        mid = (low + high) / 2
        low, high = (mid, high) if float(_cosine_tail(torch.tensor(mid), d)) > target else (low, mid)
    return (low + high) / 2


def welch_bound(N: int, d: int) -> float:
    """The Welch bound, the smallest coherence N unit vectors in R^d can have:
    μ ≥ sqrt((N − d) / (d (N − 1))) for N > d; 0 for N ≤ d (an orthonormal set)."""
    return math.sqrt((N - d) / (d * (N - 1))) if N > d else 0.0


def arrangement_loss(V: Tensor, beta: float, signed: bool = False) -> Tensor:
    """A smooth maximum of the pairwise overlaps: (1/β) log Σ_{i<j} exp(β c_ij), with
    c_ij = cos²(v_i, v_j) (lines: v and −v are the same) or, ``signed``, c_ij = cos(v_i, v_j)
    (points on the sphere, as in the Thomson problem).  Tends to max c_ij as β grows.
    V (..., N, d) -> (...,)."""
    C = cosines(V)
    i, j = torch.triu_indices(V.shape[-2], V.shape[-2], offset=1)
    overlaps = C[..., i, j] if signed else C[..., i, j].square()
    return torch.logsumexp(beta * overlaps, dim=-1) / beta


def optimise_arrangement(N: int, d: int, steps: int = 1000, lr: float = 0.02, beta: tuple[float, float] = (10.0, 1000.0),
                         signed: bool = False, restarts: int = 4,
                         generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
    """Gradient descent on ``arrangement_loss`` from random directions, ``restarts`` runs at
    once (one batch): Adam on V with the learning rate decayed geometrically from lr to lr/100,
    each row put back on the unit sphere after every step, β raised geometrically from beta[0]
    to beta[1] (a soft maximum first, so that every overlap is pushed; a near-hard one last).

    Returns the best run's V (N, d) in float64 and its coherence after each step (steps,)
    (for ``signed``, the largest cosine instead of |cos|).  Unsigned (lines), the optimum for
    d = 2 is N lines 180/N degrees apart; signed (points), N points 360/N degrees apart."""
    V = torch.stack([random_unit_vectors(N, d, generator, torch.float64) for _ in range(restarts)])
    V.requires_grad_(True)
    optimiser = torch.optim.Adam([V], lr=lr)
    off = ~torch.eye(N, dtype=torch.bool)
    history = torch.zeros(steps, restarts, dtype=torch.float64)
    for step in range(steps):
        progress = step / max(1, steps - 1)
        optimiser.param_groups[0]["lr"] = lr * 0.01 ** progress
        loss = arrangement_loss(V, beta[0] * (beta[1] / beta[0]) ** progress, signed).sum()
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        with torch.no_grad():
            V /= V.norm(dim=-1, keepdim=True)
            C = cosines(V)[:, off]
            history[step] = C.amax(dim=-1) if signed else C.abs().amax(dim=-1)
    best = int(history[-1].argmin())
    return V[best].detach(), history[:, best]


# --------------------------------------------------------------------------------------
# Johnson–Lindenstrauss
# --------------------------------------------------------------------------------------


def jl_dimension(N: int, eps: float) -> int:
    """The JL dimension k = ⌈4 ln N / (ε²/2 − ε³/3)⌉ (Dasgupta & Gupta 2003): a Gaussian
    projection of N points to k dimensions keeps every squared distance within 1 ± ε with
    probability at least 1/N."""
    return math.ceil(4 * math.log(N) / (eps ** 2 / 2 - eps ** 3 / 3))


def random_projection(n: int, k: int, generator: torch.Generator | None = None,
                      dtype: torch.dtype = torch.float32) -> Tensor:
    """A Gaussian projection R^n -> R^k with entries N(0, 1/k), so E‖P x‖² = ‖x‖²: (n, k)."""
    return torch.randn(n, k, generator=generator, dtype=dtype) / math.sqrt(k)


def pairwise_sq_distances(X: Tensor) -> Tensor:
    """‖x_i − x_j‖² for the pairs i < j of the rows of X (N, n), in the order of
    ``torch.triu_indices(N, N, 1)``: (N (N − 1) / 2,).  ``torch.pdist`` forms each difference
    without storing all of them (N (N − 1) / 2 × n numbers)."""
    return torch.pdist(X).square()


def max_distortion(X: Tensor, k: int, generator: torch.Generator | None = None) -> float:
    """The worst distortion of a random Gaussian projection of the points X (N, n) to k dims:
    max_{i<j} |‖P x_i − P x_j‖² / ‖x_i − x_j‖² − 1| (squared distances, as in the JL lemma)."""
    P = random_projection(X.shape[1], k, generator, X.dtype)
    ratio = pairwise_sq_distances(X @ P) / pairwise_sq_distances(X).clamp_min(_EPS)
    return float((ratio - 1).abs().max())


# --------------------------------------------------------------------------------------
# Mutual coherence and identifiability
# --------------------------------------------------------------------------------------


def identifiable_sparsity(mu: float) -> int:
    """The largest k with k < (1 + 1/μ) / 2 (Donoho & Elad 2003): every k-sparse f is the
    unique sparsest solution of x = W f when W's columns have coherence μ (and L1 and
    greedy decoders find it)."""
    bound = (1 + 1 / mu) / 2
    return math.ceil(bound) - 1


# --------------------------------------------------------------------------------------
# Compressed sensing: ISTA and the one-step decoder
# --------------------------------------------------------------------------------------


def sensing_matrix(d: int, n: int, generator: torch.Generator | None = None,
                   dtype: torch.dtype = torch.float64) -> Tensor:
    """W (d, n) with n random unit columns in R^d: the toy model's W with unit feature norms."""
    W = torch.randn(d, n, generator=generator, dtype=dtype)
    return W / W.norm(dim=0, keepdim=True).clamp_min(_EPS)


def sparse_signals(trials: int, n: int, k: int | Tensor, generator: torch.Generator | None = None,
                   nonnegative: bool = True, dtype: torch.dtype = torch.float64) -> Tensor:
    """k-sparse signals f (trials, n): k random entries uniform on [1, 2] (times a random sign
    unless ``nonnegative``), the rest 0.  ``k`` may differ per trial (a (trials,) tensor)."""
    k = torch.as_tensor(k).expand(trials)
    support = torch.rand(trials, n, generator=generator).argsort(dim=-1) < k[:, None]
    values = 1 + torch.rand(trials, n, generator=generator, dtype=dtype)
    if not nonnegative:
        values = values * (2 * torch.randint(0, 2, (trials, n), generator=generator) - 1).to(dtype)
    return torch.where(support, values, torch.zeros((), dtype=dtype))


def measure(W: Tensor, f: Tensor) -> Tensor:
    """x = W f for every row of f: W (d, n), f (trials, n) -> x (trials, d)."""
    return f @ W.T


def soft_threshold(x: Tensor, t: float | Tensor) -> Tensor:
    """S_t(x) = sign(x) · max(|x| − t, 0), entrywise: the proximal map of t‖·‖₁."""
    return x.sign() * (x.abs() - t).clamp_min(0)


def ista(W: Tensor, x: Tensor, lam: float, steps: int) -> Tensor:
    """ISTA for min_f ½‖x − W f‖² + λ‖f‖₁ (Daubechies, Defrise & De Mol 2004), from f = 0:

        f ← S_{λ/L}(f + (1/L) Wᵀ (x − W f)),     L = ‖W‖₂² (the largest singular value, squared)

    a gradient step of size 1/L on the squared error (L is the Lipschitz constant of its
    gradient), then soft-thresholding at λ/L.  W (d, n); x (trials, d) -> f (trials, n), the
    iterate after ``steps`` steps, every trial at once."""
    L = torch.linalg.matrix_norm(W, ord=2) ** 2
    f = torch.zeros(x.shape[0], W.shape[1], dtype=x.dtype, device=x.device)
    for _ in range(steps):
        f = soft_threshold(f + (x - f @ W.T) @ W / L, lam / L)
    return f


def support(f_hat: Tensor, tol: float = 1e-2) -> Tensor:
    """The support a decoder found: the entries with |f̂_i| > tol · max_j |f̂_j| (an iterative
    decoder leaves tiny entries it has not yet driven to 0).  (trials, n) -> bool (trials, n)."""
    size = f_hat.abs()
    return size > tol * size.amax(dim=-1, keepdim=True)


def debias(W: Tensor, x: Tensor, f_hat: Tensor, tol: float = 1e-2) -> Tensor:
    """Least squares on the ``support`` that a decoder found (at most d entries, the largest):
    those entries are refitted to x, every other entry is set to 0.  This removes an L1
    estimate's shrinkage (λ pulls every entry towards 0); on the true support the refit is
    exact.  W (d, n); x (trials, d); f_hat (trials, n) -> (trials, n).

    Solved as one (trials, s, s) batch, s the largest support (each trial's own columns
    gathered, padded with an identity where its support is smaller)."""
    order = f_hat.abs().argsort(dim=-1, descending=True)
    keep = support(f_hat, tol).gather(-1, order)
    s = min(W.shape[0], max(1, int(keep.sum(-1).max())))
    order, mask = order[:, :s], keep[:, :s].to(x.dtype)  # the s largest entries, those kept
    Ws = W.T[order] * mask[..., None]  # (trials, s, d): the kept columns, the others zeroed
    gram = Ws @ Ws.transpose(-1, -2) + torch.diag_embed(1 - mask)
    values = torch.linalg.solve(gram, Ws @ x[..., None])[..., 0] * mask
    return torch.zeros_like(f_hat).scatter(-1, order, values)


def one_step_decode(W: Tensor, x: Tensor, b: float | Tensor) -> Tensor:
    """The toy model's decoder, f̂ = ReLU(Wᵀ x + b) (Elhage et al. 2022), for nonnegative
    signals: project onto every feature direction and threshold with a negative bias b.
    W (d, n); x (trials, d); b a number or (n,) -> f̂ (trials, n)."""
    return torch.relu(x @ W + b)


def relative_error(f_hat: Tensor, f: Tensor) -> Tensor:
    """‖f̂ − f‖ / ‖f‖ per row: (trials, n) -> (trials,)."""
    return (f_hat - f).norm(dim=-1) / f.norm(dim=-1).clamp_min(_EPS)


SUCCESS = 1e-2  # a decoded signal counts as recovered when its relative error is below this
ISTA_DEFAULTS = dict(lam=0.05, steps=300)
ONE_STEP_BIAS = -0.5  # half the smallest active value: between 0 and the active entries


def decode(method, W: Tensor, x: Tensor, **options) -> Tensor:
    """The raw estimate f̂ (trials, n) of ``method``: "ista" (options lam, steps), "one_step"
    (option b), or a function ``method(W, x) -> f̂`` (e.g. a learner's ISTA with its λ and
    number of steps fixed)."""
    if callable(method):
        return method(W, x)
    if method == "ista":
        return ista(W, x, options.get("lam", ISTA_DEFAULTS["lam"]), options.get("steps", ISTA_DEFAULTS["steps"]))
    if method == "one_step":
        return one_step_decode(W, x, options.get("b", ONE_STEP_BIAS))
    raise ValueError(f"unknown method {method!r}: use 'ista' or 'one_step'")


def recovered(W: Tensor, x: Tensor, f_hat: Tensor, f: Tensor) -> Tensor:
    """Success per trial: the least-squares refit (``debias``) on the support the decoder found
    has relative error below ``SUCCESS``.  Both decoders get the same refit: it succeeds
    exactly when the support found holds the true one (and W's columns on it are independent),
    so it judges which features a decoder keeps, not the values it gives them (the one-step
    decoder's are off by its bias b, never within 1e-2; ISTA's are shrunk by λ).
    -> bool (trials,)."""
    return relative_error(debias(W, x, f_hat), f) < SUCCESS


def recovery_rate(method, n: int, d: int, k: int | Sequence[int], trials: int,
                  generator: torch.Generator | None = None, **options) -> Tensor:
    """The fraction of ``trials`` k-sparse nonnegative signals (``sparse_signals``) that
    ``method`` recovers (``recovered``: a refit on the support it found is within ``SUCCESS``) from x = W f, with one
    W (d, n) shared by every trial of the call (the Donoho–Tanner threshold is a statement about
    most signals for one Gaussian matrix).  ``k`` one sparsity, or a list: one rate per k, all
    decoded in one batch.  Returns a () tensor for one k, else (len(k),)."""
    ks = [int(k)] if isinstance(k, int) else [int(v) for v in k]
    W = sensing_matrix(d, n, generator)
    f = sparse_signals(trials * len(ks), n, torch.tensor(ks).repeat_interleave(trials), generator)
    x = measure(W, f)
    success = recovered(W, x, decode(method, W, x, **options), f)
    rates = success.double().reshape(len(ks), trials).mean(dim=-1)
    return rates[0] if isinstance(k, int) else rates


def phase_grid(method, n: int, deltas: Sequence[float], rhos: Sequence[float], trials: int,
               generator: torch.Generator | None = None, **options) -> Tensor:
    """The success rate of ``method`` over the Donoho–Tanner plane: d = round(δ n) measurements,
    k = max(1, round(ρ d)) nonzeros.  Returns (len(deltas), len(rhos)); each δ is one batch of
    len(rhos) × trials problems with its own W."""
    rows = []
    for delta in deltas:
        d = max(1, round(delta * n))
        rows.append(recovery_rate(method, n, d, [max(1, round(rho * d)) for rho in rhos], trials, generator,
                                  **options))
    return torch.stack(rows)


def transition_point(rhos: Sequence[float], rates: Sequence[float], level: float = 0.5) -> float:
    """Where a success rate, measured at increasing ρ, first falls through ``level``: linear
    interpolation between the last ρ at or above it and the next one below (nan if it never
    does)."""
    for (r0, s0), (r1, s1) in zip(zip(rhos, rates), zip(rhos[1:], rates[1:])):
        if s0 >= level > s1:
            return float(r0 + (s0 - level) / (s0 - s1) * (r1 - r0))
    return math.nan


# --------------------------------------------------------------------------------------
# The Donoho–Tanner phase transition from the statistical dimension
# --------------------------------------------------------------------------------------


def _Q(t: Tensor) -> Tensor:
    """The standard normal upper tail P(g > t)."""
    return 0.5 * torch.special.erfc(t / math.sqrt(2))


def _phi(t: Tensor) -> Tensor:
    """The standard normal density."""
    return torch.exp(-t.square() / 2) / math.sqrt(2 * math.pi)


def statistical_dimension(s: float | Tensor, n: int) -> Tensor:
    """D(s, n), the statistical dimension of the L1 descent cone at an s-sparse point of R^n
    (Amelunxen, Lotz, McCoy & Tropp 2014, "Living on the edge", Prop. 4.5):

        D = inf_{τ ≥ 0}  s (1 + τ²) + (n − s) E(|g| − τ)₊²,
        E(|g| − τ)₊² = 2 [(1 + τ²) Q(τ) − τ φ(τ)]

    The objective is convex in τ; its derivative is 2 s τ − 4 (n − s)(φ(τ) − τ Q(τ)), whose root
    is found by bisection.  L1 recovers the s-sparse point from d Gaussian measurements with
    high probability when d > D, and fails when d < D.  ``s`` a number or a tensor."""
    s = torch.as_tensor(s, dtype=torch.float64)
    low, high = torch.zeros_like(s), torch.full_like(s, 40.0)
    for _ in range(60):
        tau = (low + high) / 2
        rising = s * tau - 2 * (n - s) * (_phi(tau) - tau * _Q(tau)) > 0
        low, high = torch.where(rising, low, tau), torch.where(rising, tau, high)
    tau = (low + high) / 2
    tail = 2 * ((1 + tau.square()) * _Q(tau) - tau * _phi(tau))
    return torch.where(s > 0, s * (1 + tau.square()) + (n - s) * tail, torch.zeros_like(s))


def dt_curve(deltas: Sequence[float] | Tensor) -> Tensor:
    """ρ_DT(δ), the Donoho–Tanner weak threshold of L1 (signed signals): for each δ = d/n the
    sparsity ratio ρ = k/d at which D(ρ δ n, n) / n = δ, found by bisection on ε = s/n (D/n
    depends on s/n only and increases with it).  Recovery succeeds w.h.p. below the curve."""
    deltas = torch.as_tensor(deltas, dtype=torch.float64)
    low, high = torch.zeros_like(deltas), deltas.clone()
    for _ in range(40):
        eps = (low + high) / 2
        above = statistical_dimension(eps, 1) > deltas
        low, high = torch.where(above, low, eps), torch.where(above, eps, high)
    return (low + high) / 2 / deltas


# --------------------------------------------------------------------------------------
# The Bloom filter
# --------------------------------------------------------------------------------------


def bloom_positions(item: str, m: int, k: int, salt: bytes = b"") -> list[int]:
    """The k bit positions of ``item`` in a filter of m bits: one BLAKE2b digest of the item
    (keyed by ``salt``), cut into k 4-byte numbers, each taken mod m.  k ≤ 16."""
    digest = hashlib.blake2b(item.encode(), digest_size=4 * k, key=salt).digest()
    return [int.from_bytes(digest[4 * i:4 * i + 4], "little") % m for i in range(k)]


def bloom_false_positive_rate(m: int, k: int, n: int, generator: torch.Generator | None = None,
                              queries: int = 20_000) -> float:
    """Insert n items into a Bloom filter of m bits with k hash functions (``bloom_positions``,
    salted with a key drawn from ``generator``), then query ``queries`` items never inserted:
    the fraction whose k bits are all set (false positives)."""
    salt = bytes(torch.randint(0, 256, (16,), generator=generator).tolist())
    bits = torch.zeros(m, dtype=torch.bool)
    bits[torch.tensor([bloom_positions(f"item {i}", m, k, salt) for i in range(n)]).flatten()] = True
    asked = torch.tensor([bloom_positions(f"query {q}", m, k, salt) for q in range(queries)])
    return float(bits[asked].all(dim=-1).double().mean())


def bloom_prediction(m: int, k: int, n: int) -> float:
    """The false-positive rate (1 − e^{−k n / m})^k: after n insertions a bit is still 0 with
    probability (1 − 1/m)^{k n} ≈ e^{−k n / m}, and a new item needs all k of its bits set."""
    return (1 - math.exp(-k * n / m)) ** k


def bloom_best_k(m: int, n: int) -> float:
    """The k that minimises ``bloom_prediction``: (m / n) ln 2 (then half the bits are set)."""
    return m / n * math.log(2)
