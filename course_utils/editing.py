"""Knowledge editing in closed form (chapter 06): a linear associative memory, ROME's rank-one
update, and why lifelong (sequential) editing fails when keys are in superposition.

Column-vector convention, as in the papers: a key k ∈ R^{d_k} is mapped to a value
v = W k ∈ R^{d_v} by W (d_v, d_k); a batch of n keys is K (d_k, n), its values V (d_v, n).

Linear associative memory (Kohonen 1972; Anderson 1972; the view ROME takes of an MLP's
output projection): the W that stores the pairs (K, V) best in the least-squares sense is
W = V Kᵀ (K Kᵀ)⁻¹ (``associative_memory``).  The keys' uncentred second moment
C = K Kᵀ / n (``key_covariance``) is the statistic ROME keeps of everything the layer already
stores.

ROME (Meng et al. 2022, "Locating and Editing Factual Associations in GPT"): to make the memory
map a new key k* to a new value v* while disturbing the stored keys as little as possible,
minimise ‖ΔW K‖²_F = n tr(ΔW C ΔWᵀ) subject to (W + ΔW) k* = v*.  The solution is rank one
(``rome_update``):

    ΔW = (v* − W k*) (C⁻¹ k*)ᵀ / ((C⁻¹ k*)ᵀ k*)

Lifelong editing (Hu et al. 2024, "Knowledge in Superposition", arXiv 2408.07413): apply n such
edits in turn, W_i = W_{i−1} + ΔW_i with the same C.  Edit i is exact when it is made, but each
later edit i > j moves edit j's output:

    W_n k_j − v_j = Σ_{i>j} p(i, j) (v_i − W_{i−1} k_i),
    p(i, j) = (C⁻¹ k_i)ᵀ k_j / ((C⁻¹ k_i)ᵀ k_i)                ("the interference term")

In the whitened space k̃ = C^{-1/2} k, p(i, j) = k̃_iᵀ k̃_j / ‖k̃_i‖²: it vanishes exactly when the
keys are orthogonal after whitening, and then lifelong editing is lossless.  Keys that are not
(keys in superposition, more of them than dimensions) make every edit erode the earlier ones.
``sequential_edits`` runs the edits and records every earlier edit's error after each one;
``lifelong_editing_curve`` is the chapter's headline experiment.

The same closed form applied to a transformer's MLP (ROME, AlphaEdit and MEMIT on the fact
models of ``course_utils.facts``) is ``course_utils.rome``.

Everything is computed in float64 unless said otherwise: the identities above hold to ~1e-12
there, and C is often badly conditioned.  C⁻¹ is never formed; ``torch.linalg.solve`` is used.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import Tensor

# --------------------------------------------------------------------------------------
# Validation
# --------------------------------------------------------------------------------------


def _matrix(name: str, value, rows: int | None = None, cols: int | None = None) -> Tensor:
    if not isinstance(value, Tensor) or value.dim() != 2:
        got = tuple(value.shape) if isinstance(value, Tensor) else type(value).__name__
        raise ValueError(f"{name} must be a 2-D tensor, got {got}")
    if (rows is not None and value.shape[0] != rows) or (cols is not None and value.shape[1] != cols):
        want = f"({'?' if rows is None else rows}, {'?' if cols is None else cols})"
        raise ValueError(f"{name} must have shape {want}, got {tuple(value.shape)}")
    return value


def _vector(name: str, value, size: int) -> Tensor:
    if not isinstance(value, Tensor) or value.dim() != 1 or value.shape[0] != size:
        got = tuple(value.shape) if isinstance(value, Tensor) else type(value).__name__
        raise ValueError(f"{name} must be a 1-D tensor of size {size}, got {got}")
    return value


def _square(name: str, value, size: int | None = None) -> Tensor:
    value = _matrix(name, value, size, size)
    if value.shape[0] != value.shape[1]:
        raise ValueError(f"{name} must be square, got shape {tuple(value.shape)}")
    return value


def _nonnegative(name: str, value) -> float:
    value = float(value)
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
    return value


def _f64(t: Tensor) -> Tensor:
    return t.to(torch.float64)


# --------------------------------------------------------------------------------------
# The linear associative memory
# --------------------------------------------------------------------------------------


def associative_memory(K: Tensor, V: Tensor, ridge: float = 0.0) -> Tensor:
    """The least-squares memory W (d_v, d_k) that maps keys K (d_k, n) to values V (d_v, n).

    - ``ridge = 0`` and n ≥ d_k keys spanning R^{d_k}: W = V Kᵀ (K Kᵀ)⁻¹, the unique minimiser of
      ‖W K − V‖_F.  Every key is stored exactly only when n ≤ d_k; with more keys than
      dimensions the memory is a compromise.
    - ``ridge = 0`` otherwise (n < d_k, or keys that do not span): W = V K⁺ with the
      Moore–Penrose pseudo-inverse, the minimum-norm W among the minimisers.  With n ≤ d_k
      independent keys it stores every pair exactly and maps directions orthogonal to the keys
      to 0.
    - ``ridge = λ > 0``: W = V Kᵀ (K Kᵀ + λ I)⁻¹, which minimises ‖W K − V‖²_F + λ ‖W‖²_F.

    Computed in float64 and returned in V's dtype."""
    K = _matrix("K", K)
    V = _matrix("V", V, cols=K.shape[1])
    ridge = _nonnegative("ridge", ridge)
    K64, V64 = _f64(K), _f64(V)
    if ridge > 0:
        A = K64 @ K64.T + ridge * torch.eye(K.shape[0], dtype=torch.float64, device=K.device)
        W = torch.linalg.solve(A, K64 @ V64.T).T  # A symmetric: (V Kᵀ A⁻¹)ᵀ = A⁻¹ K Vᵀ
    else:
        W = V64 @ torch.linalg.pinv(K64)
    return W.to(V.dtype)


def key_covariance(K: Tensor, ridge: float = 0.0) -> Tensor:
    """C = K Kᵀ / n + ridge · I (d_k, d_k): the keys' uncentred second moment, K (d_k, n).

    ROME calls this the key covariance (estimated from many keys the layer has seen); it is not
    centred, because the memory maps k, not k − mean, to v.  With n < d_k keys it is singular;
    a small ``ridge`` (e.g. 1e-6 times its mean eigenvalue) keeps it invertible."""
    K = _matrix("K", K)
    ridge = _nonnegative("ridge", ridge)
    n = K.shape[1]
    if n < 1:
        raise ValueError("K must hold at least one key (a column)")
    C = K @ K.T / n
    if ridge > 0:
        C = C + ridge * torch.eye(K.shape[0], dtype=C.dtype, device=C.device)
    return C


def covariance_norm(delta_W: Tensor, C: Tensor) -> Tensor:
    """‖ΔW C^{1/2}‖_F = sqrt(tr(ΔW C ΔWᵀ)), a 0-d tensor: how much ΔW changes the memory's outputs
    on keys with second moment C (the root-mean-square of ‖ΔW k‖ over keys with E[k kᵀ] = C).
    ROME's update is the smallest change in this norm that makes W' k* = v*."""
    delta_W = _matrix("delta_W", delta_W)
    C = _square("C", C, delta_W.shape[1])
    return torch.einsum("vd,de,ve->", delta_W, C, delta_W).clamp_min(0).sqrt()


# --------------------------------------------------------------------------------------
# ROME's rank-one update
# --------------------------------------------------------------------------------------


def rome_update(W: Tensor, C: Tensor, k_star: Tensor, v_star: Tensor) -> Tensor:
    """ΔW (d_v, d_k) = (v* − W k*) (C⁻¹ k*)ᵀ / ((C⁻¹ k*)ᵀ k*), ROME's closed-form edit.

    W (d_v, d_k), C (d_k, d_k) symmetric positive definite, k* (d_k,), v* (d_v,).  After it,
    (W + ΔW) k* = v* exactly; among all such ΔW it changes the outputs on the stored keys least
    (it minimises tr(ΔW C ΔWᵀ)); and a key k with kᵀ C⁻¹ k* = 0 keeps its output.  Without C
    (C = I) it is the minimum-Frobenius-norm update (v* − W k*) k*ᵀ / (k*ᵀ k*).

    Computed in float64 (``torch.linalg.solve``, never an inverse); returned in W's dtype.
    W is not modified."""
    W = _matrix("W", W)
    d_v, d_k = W.shape
    C = _square("C", C, d_k)
    k_star, v_star = _vector("k_star", k_star, d_k), _vector("v_star", v_star, d_v)
    W64, k64 = _f64(W), _f64(k_star)
    u = torch.linalg.solve(_f64(C), k64)  # C⁻¹ k*
    denominator = u @ k64
    if not denominator > 0:
        raise ValueError("(C⁻¹ k*)ᵀ k* must be positive: C must be positive definite and k* nonzero")
    residual = _f64(v_star) - W64 @ k64  # v* − W k*
    return (torch.outer(residual, u) / denominator).to(W.dtype)


def rome_edit(W: Tensor, C: Tensor, k_star: Tensor, v_star: Tensor) -> Tensor:
    """W' = W + ΔW (d_v, d_k), the memory after ROME's edit k* ↦ v* (see ``rome_update``);
    W itself is not modified."""
    return W + rome_update(W, C, k_star, v_star)


# --------------------------------------------------------------------------------------
# Whitening and the interference coefficients p(i, j)
# --------------------------------------------------------------------------------------


def _symmetric_power(C: Tensor, power: float) -> Tensor:
    C = _square("C", C)
    eigenvalues, Q = torch.linalg.eigh(_f64(C))
    if not (eigenvalues > 0).all():
        raise ValueError("C must be positive definite (an eigenvalue is <= 0); add a ridge")
    return ((Q * eigenvalues.pow(power)) @ Q.T).to(C.dtype)


def sqrtm(C: Tensor) -> Tensor:
    """C^{1/2} (d_k, d_k), the symmetric square root of a positive definite C."""
    return _symmetric_power(C, 0.5)


def whiten(C: Tensor, K: Tensor) -> Tensor:
    """k̃ = C^{-1/2} k for every key: K (d_k, n) -> (d_k, n).  After whitening, keys with second
    moment C have second moment I, and (C⁻¹ k_i)ᵀ k_j = k̃_iᵀ k̃_j."""
    C = _square("C", C)
    K = _matrix("K", K, rows=C.shape[0])
    return _symmetric_power(C, -0.5) @ K


def whitened_cosine(C: Tensor, k_i: Tensor, k_j: Tensor) -> float:
    """cos(C^{-1/2} k_i, C^{-1/2} k_j) = k_iᵀ C⁻¹ k_j / sqrt(k_iᵀ C⁻¹ k_i · k_jᵀ C⁻¹ k_j), in [−1, 1].

    The cosine of two keys in the whitened space where Hu et al. measure superposition:
    0 means the keys do not interfere (p(i, j) = p(j, i) = 0).  Any whitening A with
    AᵀA = C⁻¹ gives the same number.  C (d_k, d_k), k_i and k_j (d_k,)."""
    C = _square("C", C)
    d_k = C.shape[0]
    k_i, k_j = _f64(_vector("k_i", k_i, d_k)), _f64(_vector("k_j", k_j, d_k))
    U = torch.linalg.solve(_f64(C), torch.stack([k_i, k_j], dim=1))  # C⁻¹ [k_i k_j]
    ii, jj, ij = U[:, 0] @ k_i, U[:, 1] @ k_j, U[:, 0] @ k_j
    return float(ij / (ii * jj).sqrt())


def whitened_cosines(C: Tensor, K: Tensor) -> Tensor:
    """(n, n): the whitened cosine of every pair of keys K (d_k, n) (``whitened_cosine``); 1 on
    the diagonal."""
    C = _square("C", C)
    K = _matrix("K", K, rows=C.shape[0])
    G = _f64(K).T @ torch.linalg.solve(_f64(C), _f64(K))  # G[i, j] = k_iᵀ C⁻¹ k_j
    norms = G.diagonal().sqrt()
    return (G / norms[:, None] / norms[None, :]).to(K.dtype)


def interference_coefficients(C: Tensor, K: Tensor) -> Tensor:
    """P (n, n) with P[i, j] = p(i, j) = (C⁻¹ k_i)ᵀ k_j / ((C⁻¹ k_i)ᵀ k_i), for keys K (d_k, n).

    p(i, j) is how much of edit i's correction lands on key j: after ROME's edit of k_i, the
    output on k_j moves by p(i, j) (v_i − W k_i).  The diagonal is 1.  In whitened coordinates
    p(i, j) = k̃_iᵀ k̃_j / ‖k̃_i‖² = (‖k̃_j‖ / ‖k̃_i‖) · whitened_cosine(i, j); P is not symmetric."""
    C = _square("C", C)
    K = _matrix("K", K, rows=C.shape[0])
    G = torch.linalg.solve(_f64(C), _f64(K)).T @ _f64(K)  # G[i, j] = (C⁻¹ k_i)ᵀ k_j
    return (G / G.diagonal()[:, None]).to(K.dtype)


def interference_term(P: Tensor, residuals: Tensor) -> Tensor:
    """(d_v, n): column j is Σ_{i>j} p(i, j) r_i, Hu et al.'s interference term, given
    P (n, n) from ``interference_coefficients`` and the residuals r_i = v_i − W_{i−1} k_i
    (d_v, n) that the edits corrected (``sequential_edits(...)["residuals"]``).  After all n
    edits, W_n k_j − v_j equals this column exactly."""
    P = _square("P", P)
    residuals = _matrix("residuals", residuals, cols=P.shape[0])
    return residuals @ torch.tril(P, diagonal=-1)  # Σ_i r_i P[i, j] over i > j


def p_statistics(P: Tensor) -> dict[str, float]:
    """Mean, standard deviation and kurtosis of the off-diagonal entries of P (n, n), n ≥ 2.

    The kurtosis is Pearson's, E[(p − mean)⁴] / std⁴, 3 for a Gaussian; Hu et al. find the
    degree of superposition in real language models to be zero-mean with high kurtosis (heavy
    tails).  When the entries do not spread (std ≤ 1e-12, e.g. whitened-orthogonal keys, where
    they are rounding noise around 0) the kurtosis is NaN."""
    P = _square("P", P)
    n = P.shape[0]
    if n < 2:
        raise ValueError(f"P must be at least 2 x 2 to have off-diagonal entries, got {n} x {n}")
    off = _f64(P)[~torch.eye(n, dtype=torch.bool, device=P.device)]
    centred = off - off.mean()
    variance = centred.square().mean()
    kurtosis = float(centred.pow(4).mean() / variance.square()) if variance > 1e-24 else float("nan")
    return {"mean": float(off.mean()), "std": float(variance.sqrt()), "kurtosis": kurtosis}


# --------------------------------------------------------------------------------------
# Lifelong editing
# --------------------------------------------------------------------------------------


def recalled(outputs: Tensor, values: Tensor) -> Tensor:
    """(n,) bool: is output j (column j of ``outputs`` (d_v, n)) nearer to value j than to every
    other value in ``values`` (d_v, n)?  The success criterion of lifelong editing here: a
    stored fact counts as retained when nearest-value decoding among the edited values gives
    it back (as a language model's argmax over its vocabulary would)."""
    outputs, values = _f64(_matrix("outputs", outputs)), _f64(_matrix("values", values))
    if outputs.shape != values.shape:
        raise ValueError(f"outputs and values must have the same shape, got {tuple(outputs.shape)} "
                         f"and {tuple(values.shape)}")
    n = values.shape[1]
    # ‖o_j − v_i‖² up to the term ‖o_j‖², which is the same for every candidate i
    distances = values.square().sum(dim=0)[None, :] - 2 * outputs.T @ values  # (n outputs, n values)
    return distances.argmin(dim=1) == torch.arange(n, device=values.device)


def sequential_edits(W0: Tensor, C: Tensor, keys: Tensor, values: Tensor) -> dict[str, Tensor]:
    """Apply n ROME edits k_i ↦ v_i in order, W_i = W_{i−1} + ΔW_i, all with the same C, and
    record how every earlier edit fares after each one.

    W0 (d_v, d_k), C (d_k, d_k), keys (d_k, n), values (d_v, n).  Returns, in float64:

    - ``"W"`` (d_v, d_k): W_n, the memory after all n edits;
    - ``"residuals"`` (d_v, n): r_i = v_i − W_{i−1} k_i, what edit i corrected;
    - ``"errors"`` (n, n): errors[t, j] = ‖W_t k_j − v_j‖ / ‖v_j‖ after edit t (0-based) for
      j ≤ t, NaN for j > t; the diagonal is 0 (to rounding), since each edit is exact when made;
    - ``"recalled"`` (n, n) bool: after edit t, whether edit j ≤ t is still recalled by
      nearest-value decoding among v_0 … v_t (``recalled``); False for j > t;
    - ``"retention"`` (n,): the fraction of edits 0 … t recalled after edit t.
    """
    W0 = _matrix("W0", W0)
    d_v, d_k = W0.shape
    C = _square("C", C, d_k)
    keys = _matrix("keys", keys, rows=d_k)
    values = _matrix("values", values, d_v, keys.shape[1])
    n = keys.shape[1]
    if n < 1:
        raise ValueError("keys must hold at least one key (a column)")
    K, V = _f64(keys), _f64(values)
    U = torch.linalg.solve(_f64(C), K)  # column i is C⁻¹ k_i
    denominators = (U * K).sum(dim=0)  # (C⁻¹ k_i)ᵀ k_i
    if not (denominators > 0).all():
        raise ValueError("(C⁻¹ k_i)ᵀ k_i must be positive: C must be positive definite and every key nonzero")
    value_norms = V.norm(dim=0)
    W = _f64(W0).clone()
    residuals = torch.empty_like(V)
    errors = torch.full((n, n), float("nan"), dtype=torch.float64, device=K.device)
    recall = torch.zeros((n, n), dtype=torch.bool, device=K.device)
    for t in range(n):
        residuals[:, t] = V[:, t] - W @ K[:, t]
        W = W + torch.outer(residuals[:, t], U[:, t]) / denominators[t]
        outputs = W @ K[:, : t + 1]
        errors[t, : t + 1] = (outputs - V[:, : t + 1]).norm(dim=0) / value_norms[: t + 1]
        recall[t, : t + 1] = recalled(outputs, V[:, : t + 1])
    retention = recall.sum(dim=1) / torch.arange(1, n + 1, device=K.device)
    return {"W": W, "residuals": residuals, "errors": errors, "recalled": recall,
            "retention": retention.to(torch.float64)}


# --------------------------------------------------------------------------------------
# Keys with a given covariance, and the headline experiment
# --------------------------------------------------------------------------------------


def random_covariance(d_k: int, condition: float = 100.0, generator: torch.Generator | None = None) -> Tensor:
    """A random symmetric positive definite (d_k, d_k) matrix in float64: eigenvalues spaced
    log-uniformly from 1 down to 1 / ``condition``, in a random orthonormal eigenbasis.  Keys
    with this second moment are far from isotropic, so whitening matters."""
    if int(d_k) != d_k or d_k < 1:
        raise ValueError(f"d_k must be a positive integer, got {d_k!r}")
    if not condition >= 1:
        raise ValueError(f"condition must be >= 1, got {condition!r}")
    Q, _ = torch.linalg.qr(torch.randn(d_k, d_k, dtype=torch.float64, generator=generator))
    eigenvalues = torch.logspace(0, -math.log10(condition), d_k, dtype=torch.float64)
    return (Q * eigenvalues) @ Q.T


def sample_keys(C: Tensor, n: int, generator: torch.Generator | None = None) -> Tensor:
    """(d_k, n) Gaussian keys k = C^{1/2} z, z ~ N(0, I): generic keys with second moment C."""
    C = _square("C", C)
    z = torch.randn(C.shape[0], n, dtype=C.dtype, generator=generator)
    return sqrtm(C) @ z


def whitened_orthogonal_keys(C: Tensor, n: int, generator: torch.Generator | None = None) -> Tensor:
    """(d_k, n) keys C^{1/2} q_i with q_1 … q_n random orthonormal vectors: keys that are exactly
    orthogonal after whitening (p(i, j) = 0 for i ≠ j), so that editing them is lossless.
    At most d_k such keys exist."""
    C = _square("C", C)
    d_k = C.shape[0]
    if n > d_k:
        raise ValueError(f"at most d_k = {d_k} keys can be orthogonal after whitening, asked for n = {n}")
    Q, _ = torch.linalg.qr(torch.randn(d_k, n, dtype=C.dtype, generator=generator))
    return sqrtm(C) @ Q


def lifelong_editing_curve(d_k: int = 64, d_v: int = 64, n_edits: Sequence[int] = (16, 32, 64, 128, 256),
                           n_trials: int = 5, seed: int = 0, orthogonal: bool = False,
                           condition: float = 100.0, memory_size: int | None = None, update_fn=None,
                           interference_fn=None) -> dict:
    """Retention of earlier edits as a function of the number of lifelong ROME edits.

    Each trial: a random key second moment Σ (``random_covariance``); a memory W0 =
    ``associative_memory`` of ``memory_size`` (default 4 d_k) Gaussian keys with second moment Σ
    and random values, and C = ``key_covariance`` of those keys, as ROME estimates it; then
    max(n_edits) edits k_i ↦ v_i with new Gaussian keys from Σ (``orthogonal=False``) or
    whitened-orthogonal keys C^{1/2} q_i (``orthogonal=True``, needs max(n_edits) ≤ d_k) and
    values v_i ~ N(0, I).  After the first n edits (for each n in ``n_edits``) it measures the
    edits so far.  Returns lists over ``n_edits`` (means over trials), plus per-trial tensors:

    - ``"retention"``: fraction of the n edits recalled (``recalled``, decoding among their n
      values); ``"retention_trials"`` (n_trials, len(n_edits));
    - ``"mean_error"``, ``"max_error"``: relative error ‖W_n k_j − v_j‖ / ‖v_j‖ over the n edits;
    - ``"p_mean"``, ``"p_std"``, ``"p_kurtosis"``: ``p_statistics`` of the n keys' P;
    - ``"n_edits"``: the edit counts.

    ``update_fn`` (``rome_update``'s signature) and ``interference_fn``
    (``interference_coefficients``') replace the closed forms written inline here (chapter 06
    passes the learner's).
    """
    n_edits = [int(n) for n in n_edits]
    if not n_edits or min(n_edits) < 2:
        raise ValueError(f"n_edits must be a non-empty list of edit counts >= 2, got {n_edits!r}")
    if int(n_trials) != n_trials or n_trials < 1:
        raise ValueError(f"n_trials must be a positive integer, got {n_trials!r}")
    n_max = max(n_edits)
    if orthogonal and n_max > d_k:
        raise ValueError(f"at most d_k = {d_k} keys can be orthogonal after whitening; "
                         f"n_edits goes up to {n_max}")
    memory_size = 4 * d_k if memory_size is None else int(memory_size)
    generator = torch.Generator().manual_seed(seed)
    keys_of = {"retention": [], "mean_error": [], "max_error": [], "p_mean": [], "p_std": [], "p_kurtosis": []}
    per_trial = {key: torch.empty(n_trials, len(n_edits), dtype=torch.float64) for key in keys_of}
    for trial in range(n_trials):
        sigma = random_covariance(d_k, condition, generator)
        K0 = sample_keys(sigma, memory_size, generator)
        V0 = torch.randn(d_v, memory_size, dtype=torch.float64, generator=generator)
        W0, C = associative_memory(K0, V0), key_covariance(K0)
        if orthogonal:
            keys = whitened_orthogonal_keys(C, n_max, generator)
        else:
            keys = sample_keys(sigma, n_max, generator)
        values = torch.randn(d_v, n_max, dtype=torch.float64, generator=generator)
        U = torch.linalg.solve(C, keys)
        denominators = (U * keys).sum(dim=0)
        P_all = (U.T @ keys) / denominators[:, None] if interference_fn is None else \
            _f64(torch.as_tensor(interference_fn(C, keys)))
        W, done = W0.clone(), 0
        for column, n in sorted(enumerate(n_edits), key=lambda item: item[1]):
            for i in range(done, n):
                if update_fn is None:
                    W = W + torch.outer(values[:, i] - W @ keys[:, i], U[:, i]) / denominators[i]
                else:
                    W = W + _f64(torch.as_tensor(update_fn(W, C, keys[:, i], values[:, i])))
            done = n
            outputs = W @ keys[:, :n]
            errors = (outputs - values[:, :n]).norm(dim=0) / values[:, :n].norm(dim=0)
            stats = p_statistics(P_all[:n, :n])
            row = {"retention": float(recalled(outputs, values[:, :n]).double().mean()),
                   "mean_error": float(errors.mean()), "max_error": float(errors.max()),
                   "p_mean": stats["mean"], "p_std": stats["std"], "p_kurtosis": stats["kurtosis"]}
            for key, value in row.items():
                per_trial[key][trial, column] = value
    result = {"n_edits": n_edits}
    for key in keys_of:
        result[key] = per_trial[key].mean(dim=0).tolist()
    result["retention_trials"] = per_trial["retention"]
    return result
