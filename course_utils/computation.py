"""Computation in superposition (chapter 04).

The privileged-basis model of Elhage et al. (2022), h = ReLU(W x), x' = ReLU(Wᵀ h + b), whose
hidden neurons can be monosemantic or polysemantic (``NeuronModel``); the abs(x) model
(``AbsModel``); the compressed-computation residual MLP of Braun et al. (2025)
(``ResidualMLP``); and the universal-AND (U-AND) construction of Hänni, Mendel, Vaintrob et al. (2024),
*Mathematical Models of Computation in Superposition* (arXiv 2408.05451).  A layer of d ReLU
neurons computes the AND of every pair of m boolean features at once, with d far below the
C(m, 2) pairs, provided the inputs are sparse:

- wiring: each neuron k is connected to each feature i independently with probability p,
  ``W[k, i] ∈ {0, 1}`` (d, m);
- neurons: h_k = ReLU(Σ_i W[k, i] x_i − 1), so a neuron fires only when two or more of its
  features are on;
- read-off: AND(i, j) ≈ the mean of h_k over the neurons wired to both i and j.

With exactly features i and j on, each neuron wired to both reads 2 − 1 = 1, the others 0: the
read-off is exact.  With l features on, the other l − 2 leak in through shared wiring, giving
the error laws the chapter derives (``predicted_u_and_readoffs``).  ``UAnd`` is the whole
construction as one object (wiring, layer, read-off, coverage); the measurements
(``measure_u_and_readoffs``, ``u_and_accuracy``, ``uncovered_fraction``) take it, the
learner's class of the same shape, or a bare wiring W.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import Tensor

from .toy_models import ToyModel


def _check_positive_ints(**sizes) -> None:
    for name, value in sizes.items():
        if int(value) != value or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")


def signed_sparse_features(shape, p: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """Each entry 0 with probability 1 − p, else U[−1, 1]; ``p`` broadcasts against ``shape``
    and sets the device."""
    values = torch.rand(shape, device=p.device, generator=generator) * 2 - 1
    active = torch.rand(shape, device=p.device, generator=generator) < p
    return torch.where(active, values, torch.zeros_like(values))


def neuron_forward(W: Tensor, b: Tensor, x: Tensor) -> Tensor:
    """The privileged-basis model x' = ReLU(Wᵀ ReLU(W x) + b), batched over instances.

    W: (instances, hidden, features), b: (instances, features), x: (instances, batch, features)
    -> (instances, batch, features)."""
    h = torch.relu(torch.einsum("ihf,ibf->ibh", W, x))
    return torch.relu(torch.einsum("ihf,ibh->ibf", W, h) + b[:, None, :])


def abs_batch(feature_probability: Tensor, batch_size: int, generator: torch.Generator | None = None) -> Tensor:
    """The abs(x) model's data: (instances, batch, features), each entry 0 with probability
    1 − p, else U[−1, 1]; ``feature_probability`` is (instances, features)."""
    p = feature_probability
    return signed_sparse_features((p.shape[0], batch_size, p.shape[1]), p[:, None, :], generator)


def abs_loss(y: Tensor, x: Tensor, importance: Tensor) -> Tensor:
    """(instances,): the importance-weighted squared error of y against the target |x|, the mean
    over batch and features.  y, x: (instances, batch, features); importance: (instances, features)."""
    return (importance[:, None, :] * (y - x.abs()) ** 2).mean(dim=(1, 2))


class NeuronModel(ToyModel):
    """The toy model with a privileged basis: h = ReLU(W x), x' = ReLU(Wᵀ h + b).

    The same parameters, data and importance-weighted loss as ``ToyModel`` (W is
    (instances, hidden, features)); only the ReLU on the hidden layer is new, which makes the
    m hidden neurons a basis that can be read one neuron at a time.  ``train`` trains it
    through autograd (``fast=True`` refuses it: the fast path's gradients are ToyModel's).

    ``forward_fn(W, b, x)`` replaces ``neuron_forward`` (the chapter passes the learner's)."""

    def __init__(self, *args, forward_fn=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.forward_fn = neuron_forward if forward_fn is None else forward_fn

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_fn(self.W, self.b, x)


class AbsModel(torch.nn.Module):
    """The toy model that computes abs(x) (Elhage et al. 2022, "computation in superposition"):
    h = ReLU(W1 x), y = ReLU(W2 h + b), untied, batched over instances.

    W1: (instances, hidden, features), W2: (instances, features, hidden), b: (instances, features).
    Data: each feature is 0 with probability 1 − p, else U[−1, 1]; the target is |x|, and the
    loss is the importance-weighted squared error (mean over batch and features).

    ``init_scale`` multiplies the Xavier-normal initial weights.  With sparse features the
    full-scale start often ends on a plateau where important features' output ReLUs are dead
    (their output never turns on, so they never get a gradient); a small start (0.1) avoids it."""

    def __init__(self, n_features: int, n_hidden: int, n_instances: int = 1, feature_probability=1.0,
                 importance=1.0, init_scale: float = 1.0, device=None, generator: torch.Generator | None = None):
        super().__init__()
        from .device import get_device
        from .toy_models import _per_instance

        _check_positive_ints(n_features=n_features, n_hidden=n_hidden, n_instances=n_instances)
        device = get_device() if device is None else torch.device(device)
        self.n_features, self.n_hidden, self.n_instances = n_features, n_hidden, n_instances
        p = _per_instance(feature_probability, n_instances, n_features, "feature_probability")
        if (p < 0).any() or (p > 1).any():
            raise ValueError("feature_probability must lie in [0, 1]")
        if not init_scale > 0:
            raise ValueError(f"init_scale must be positive, got {init_scale!r}")
        std = init_scale * math.sqrt(2.0 / (n_hidden + n_features))  # Xavier-normal, as ToyModel
        self.W1 = torch.nn.Parameter((torch.randn(n_instances, n_hidden, n_features, generator=generator) * std).to(device))
        self.W2 = torch.nn.Parameter((torch.randn(n_instances, n_features, n_hidden, generator=generator) * std).to(device))
        self.b = torch.nn.Parameter(torch.zeros(n_instances, n_features, device=device))
        self.register_buffer("feature_probability", p.to(device))
        self.register_buffer("importance", _per_instance(importance, n_instances, n_features, "importance").to(device))

    def hidden(self, x: Tensor) -> Tensor:
        """(instances, batch, features) -> (instances, batch, hidden)."""
        return torch.relu(torch.einsum("ihf,ibf->ibh", self.W1, x))

    def forward(self, x: Tensor) -> Tensor:
        return torch.relu(torch.einsum("ifh,ibh->ibf", self.W2, self.hidden(x)) + self.b[:, None, :])

    def loss(self, x: Tensor) -> Tensor:
        """(instances,): mean over batch and features of importance · (y − |x|)²."""
        return abs_loss(self(x), x, self.importance)

    def generate_batch(self, batch_size: int, generator: torch.Generator | None = None) -> Tensor:
        """(instances, batch, features): 0 with probability 1 − p, else U[−1, 1]."""
        return abs_batch(self.feature_probability, batch_size, generator)


@dataclass
class AsymmetricMotif:
    """One neuron of an abs(x) model in asymmetric superposition (Elhage et al. 2022).

    Neuron ``neuron`` reads a ``strong`` feature with a large input weight and a ``weak`` one
    with a small weight, and writes them back with the reciprocal output weights, so each
    feature comes out at about the right size.  Its interference is lopsided: the weak
    feature barely moves the strong one's output, while the strong feature writes a large
    positive ``interference`` into the weak one's output, which other neurons (``inhibitors``)
    and the bias cancel: the weak output's pre-activation ``total`` stays at or below zero, so
    the output ReLU shows nothing."""

    neuron: int
    strong: int
    weak: int
    input_ratio: float  # |W1[k, strong]| / |W1[k, weak]|
    output_ratio: float  # W2[weak, k] / W2[strong, k]
    interference: float  # what neuron k writes into the weak output when the strong feature is ±1
    total: float  # the weak output's pre-activation then: all neurons plus the bias
    reverse_interference: float  # what neuron k writes into the strong output when the weak feature is ±1
    inhibitors: list[int] = field(default_factory=list)  # neurons writing < −0.05 into the weak output then
    contributions: Tensor | None = None  # (hidden,) every neuron's write into the weak output then


def asymmetric_motifs(W1: Tensor, W2: Tensor, b: Tensor, ratio: float = 1.5, min_interference: float = 0.25,
                      min_share: float = 0.15) -> list[AsymmetricMotif]:
    """The neurons of one abs(x) model (W1: (hidden, features), W2: (features, hidden),
    b: (features,)) that show the asymmetric superposition motif.

    For each neuron k, its two largest input weights name the strong and the weak feature (the
    weak one at least ``min_share`` of the strong one); it is a motif when both output weights
    are positive (the neuron serves |x| of both), the input weights differ by ``ratio`` or more
    and the output weights by ``ratio`` or more the other way, the strong feature (at ±1, the
    sign that fires k) makes k write at least ``min_interference`` into the weak output, and
    the weak output's total pre-activation is then still ≤ 0 (inhibited)."""
    W1, W2, b = (t.detach().float().cpu() for t in (W1, W2, b))
    if W1.dim() != 2 or W2.shape != W1.T.shape or b.shape != (W1.shape[1],):
        raise ValueError("pass one instance: W1 (hidden, features), W2 (features, hidden), b (features,)")
    motifs = []
    for k in range(W1.shape[0]):
        w = W1[k]
        strong, weak = (int(i) for i in w.abs().argsort(descending=True)[:2])
        if w[weak].abs() < min_share * w[strong].abs() or w[weak].abs() == 0:
            continue
        if W2[strong, k] <= 0 or W2[weak, k] <= 0:
            continue
        input_ratio = float(w[strong].abs() / w[weak].abs())
        output_ratio = float(W2[weak, k] / W2[strong, k])
        h_strong = torch.relu(W1[:, strong] * torch.sign(w[strong]))  # hidden layer with x_strong = ±1
        contributions = W2[weak] * h_strong
        interference = float(contributions[k])
        total = float(contributions.sum() + b[weak])
        reverse = float(W2[strong, k] * torch.relu(w[weak] * torch.sign(w[weak])))
        if input_ratio >= ratio and output_ratio >= ratio and interference >= min_interference and total <= 0:
            inhibitors = [int(j) for j in torch.nonzero(contributions < -0.05).flatten()]
            motifs.append(AsymmetricMotif(k, strong, weak, input_ratio, output_ratio, interference, total,
                                          reverse, inhibitors, contributions))
    return motifs


def abs_monosemantic_loss(importance: Tensor, feature_probability: Tensor, n_hidden: int) -> Tensor:
    """The abs(x) loss of the best solution without superposition: the n_hidden // 2 most
    important features get a ReLU(x) and a ReLU(−x) neuron each (exact); every other feature
    gets no neuron and outputs its best constant, the bias b_i = E|x_i| = p/2, missing the
    variance of |x_i|, E[x²] − E[|x|]² = p/3 − p²/4.  importance, feature_probability:
    (instances, features) or broadcastable; -> (instances,) (features ranked by importance
    within each instance)."""
    importance, p = torch.broadcast_tensors(torch.as_tensor(importance, dtype=torch.float32),
                                            torch.as_tensor(feature_probability, dtype=torch.float32))
    importance, p = importance.reshape(-1, importance.shape[-1]), p.reshape(-1, p.shape[-1])
    order = importance.argsort(dim=-1, descending=True)
    missed = torch.ones_like(importance)
    missed.scatter_(-1, order[:, : n_hidden // 2], 0.0)
    return (missed * importance * (p / 3 - p**2 / 4)).mean(dim=-1)


def neuron_monosemanticity(W: Tensor, min_norm: float = 0.1) -> Tensor:
    """(instances, hidden): the share of each neuron's squared input weights that goes to its
    largest feature, max_i W[k, i]² / Σ_i W[k, i]²; 1 for a monosemantic neuron, NaN for a
    neuron whose weights are all below ``min_norm`` in norm (a dead neuron)."""
    squared = W.square()
    total = squared.sum(dim=-1)
    share = squared.max(dim=-1).values / total.clamp(min=1e-12)
    return torch.where(total.sqrt() >= min_norm, share, torch.full_like(share, float("nan")))


def _check_u_and(m: int, d: int, p: float) -> None:
    _check_positive_ints(m=m, d=d)
    if m < 2:
        raise ValueError(f"U-AND needs at least two features, got m={m}")
    if not 0 < p <= 1:
        raise ValueError(f"the wiring probability p must be in (0, 1], got {p!r}")


def u_and_wiring(m: int, d: int, p: float, generator: torch.Generator | None = None) -> Tensor:
    """The random wiring W: (d, m) float tensor of 0s and 1s, each entry 1 with probability p."""
    _check_u_and(m, d, p)
    return (torch.rand(d, m, generator=generator) < p).float()


def u_and_hidden(W: Tensor, x: Tensor) -> Tensor:
    """h = ReLU(x Wᵀ − 1): x is (batch, m) booleans as floats, h is (batch, d)."""
    return torch.relu(x @ W.T - 1)


def pair_coverage(W: Tensor) -> Tensor:
    """(m, m): how many neurons are wired to both features i and j (the diagonal counts one)."""
    return W.T @ W


def u_and_readoff(W: Tensor, h: Tensor) -> Tensor:
    """AND(i, j) for every pair: the mean of h_k over the neurons wired to both i and j.

    h: (batch, d) -> (batch, m, m), symmetric; NaN where no neuron covers the pair."""
    coverage = pair_coverage(W)
    d, m = W.shape
    chunk = max(1, 2**22 // (d * m))  # inputs per chunk: the (chunk, d, m) product stays ≤ 16 MB
    total = torch.cat([(h[start:start + chunk, :, None] * W).transpose(1, 2) @ W
                       for start in range(0, h.shape[0], chunk)]) if h.shape[0] else h.new_zeros(0, m, m)
    return torch.where(coverage > 0, total / coverage.clamp(min=1), torch.full_like(total, float("nan")))


def sparse_boolean_inputs(m: int, l: int, batch: int, generator: torch.Generator | None = None) -> Tensor:
    """(batch, m) inputs with exactly l features on (a uniformly random set each)."""
    if not 0 <= l <= m:
        raise ValueError(f"l must be between 0 and m={m}, got {l!r}")
    order = torch.rand(batch, m, generator=generator).argsort(dim=-1)
    x = torch.zeros(batch, m)
    x.scatter_(1, order[:, :l], 1.0)
    return x


def predicted_u_and_readoffs(p: float, l: int, exact: bool = False) -> dict[str, float]:
    """Expected read-off of AND(i, j) with l features on, by how many of i, j are on.

    A neuron wired to both i and j also sees each other active feature with probability p, so
    with B ~ Binomial(k, p) leaks:
    - both on: 1 + B over the l − 2 others: 1 + (l − 2) p;
    - one on: ReLU(1 + B − 1) = B over the l − 1 others: (l − 1) p;
    - none on: ReLU(B − 1) over all l: C(l, 2) p² to leading order, which is second order in
      p (two leaks are needed);
      exactly l p − 1 + (1 − p)^l, which ``exact=True`` returns (the other two are exact already).
    """
    none = l * p - 1 + (1 - p) ** l if exact else math.comb(l, 2) * p * p
    return {"both": 1 + (l - 2) * p, "one": (l - 1) * p, "none": none}


class UAnd:
    """The U-AND construction as one object: m features, d neurons, wiring probability p.

    ``W`` is the (d, m) wiring drawn by ``u_and_wiring(m, d, p, generator)``;
    ``hidden(x)``: (batch, m) -> (batch, d); ``readoff(h)``: (batch, d) -> (batch, m, m);
    calling it, ``construction(x)``, gives every pair's AND read-off, (batch, m, m), NaN for
    an uncovered pair; ``coverage()``: (m, m) neurons wired to both features of each pair.
    ``UAnd.from_wiring(W)`` wraps a wiring that is already drawn.  The chapter's learner
    writes the same class; ``measure_u_and_readoffs``, ``u_and_accuracy`` and
    ``uncovered_fraction`` take either."""

    def __init__(self, m: int, d: int, p: float, generator: torch.Generator | None = None):
        self.m, self.d, self.p = m, d, p
        self.W = u_and_wiring(m, d, p, generator)

    @classmethod
    def from_wiring(cls, W: Tensor) -> "UAnd":
        construction = cls.__new__(cls)
        construction.d, construction.m = W.shape
        construction.p = float(W.mean()) if W.numel() else 0.0
        construction.W = W
        return construction

    def hidden(self, x: Tensor) -> Tensor:
        return u_and_hidden(self.W, x)

    def readoff(self, h: Tensor) -> Tensor:
        return u_and_readoff(self.W, h)

    def __call__(self, x: Tensor) -> Tensor:
        return self.readoff(self.hidden(x))

    def coverage(self) -> Tensor:
        return pair_coverage(self.W)


def as_construction(construction) -> "UAnd":
    """A wiring W (a (d, m) tensor) as the reference ``UAnd``; a construction (the learner's
    class or the reference's) as it is."""
    return UAnd.from_wiring(construction) if isinstance(construction, Tensor) else construction


def _features(construction) -> int:
    """m, the number of features, of a construction."""
    m = getattr(construction, "m", None)
    return int(m) if m is not None else int(construction.coverage().shape[-1])


def _readoffs(construction, x: Tensor, chunk: int = 32) -> Tensor:
    """``construction(x)`` in chunks of inputs (a learner's read-off may hold a (batch, d, m)
    product in memory): (batch, m, m)."""
    return torch.cat([construction(x[start:start + chunk]) for start in range(0, x.shape[0], chunk)])


def measure_u_and_readoffs(construction, l: int, batch: int = 256,
                           generator: torch.Generator | None = None) -> dict[str, float]:
    """Mean read-off over random inputs with l features on, for covered pairs with both, one and
    none of their two features on (the averages the error laws predict).  ``construction``: a
    wiring W (d, m), or a U-AND construction (``UAnd``, or the learner's class with the same
    methods)."""
    construction = as_construction(construction)
    m = _features(construction)
    x = sparse_boolean_inputs(m, l, batch, generator)
    readoff = _readoffs(construction, x)
    on = x[:, :, None] + x[:, None, :]  # 0, 1 or 2 of the pair on
    off_diagonal = ~torch.eye(m, dtype=torch.bool)
    covered = (construction.coverage() > 0) & off_diagonal
    result = {}
    for name, count in (("both", 2), ("one", 1), ("none", 0)):
        mask = (on == count) & covered
        result[name] = float(readoff[mask].mean()) if mask.any() else float("nan")
    return result


def u_and_accuracy(construction, l: int, batch: int = 256, threshold: float = 0.5,
                   generator: torch.Generator | None = None) -> float:
    """The fraction of all C(m, 2) pairwise ANDs that the read-off gets right on random inputs
    with l features on: read-off above ``threshold`` exactly when both features are on.  An
    uncovered pair (NaN read-off) counts as wrong.  ``construction``: a wiring W (d, m) or a
    U-AND construction."""
    construction = as_construction(construction)
    m = _features(construction)
    x = sparse_boolean_inputs(m, l, batch, generator)
    readoff = _readoffs(construction, x)
    truth = (x[:, :, None] * x[:, None, :]) > 0
    correct = (readoff > threshold) == truth  # NaN compares False: wrong when the AND is true
    correct &= ~readoff.isnan()
    pairs = torch.triu(torch.ones(m, m, dtype=torch.bool), diagonal=1)
    return float(correct[:, pairs].float().mean())


def uncovered_fraction(construction) -> float:
    """The fraction of the C(m, 2) pairs no neuron is wired to; ≈ (1 − p²)^d ≈ exp(−d p²).
    ``construction``: a wiring W (d, m) or a U-AND construction."""
    coverage = as_construction(construction).coverage()
    m = coverage.shape[-1]
    pairs = torch.triu(torch.ones(m, m, dtype=torch.bool), diagonal=1)
    return float((coverage[pairs] == 0).float().mean())


# --------------------------------------------------------------------------------------
# Compressed computation: the residual MLP of Braun et al. 2025 (APD)
# --------------------------------------------------------------------------------------

EMBEDDINGS = ("random", "orthonormal")


def embedding_matrix(n_features: int, d_embed: int, kind: str = "random",
                     generator: torch.Generator | None = None) -> Tensor:
    """W_E: (d_embed, n_features) with unit-norm columns.  ``"random"``: independent Gaussian
    directions, so W_Eᵀ W_E = I + a mixing matrix of small overlaps; ``"orthonormal"``:
    orthonormal columns, W_Eᵀ W_E = I exactly (no mixing)."""
    if kind not in EMBEDDINGS:
        raise ValueError(f"embedding must be one of {EMBEDDINGS}, got {kind!r}")
    if d_embed < n_features and kind == "orthonormal":
        raise ValueError(f"an orthonormal embedding needs d_embed >= n_features, got {d_embed} < {n_features}")
    G = torch.randn(d_embed, n_features, generator=generator, dtype=torch.float64)
    W_E = torch.linalg.qr(G)[0] if kind == "orthonormal" else G / G.norm(dim=0, keepdim=True)
    return W_E.float()


class ResidualMLP(torch.nn.Module):
    """Braun et al. 2025's compressed-computation toy model, batched over instances.

    Features x (n) are embedded into a residual stream r = W_E x (d_embed), one MLP of d_mlp
    ReLU neurons adds W_out ReLU(W_in r + b_in), and the output is read with W_U = W_Eᵀ:
    y = W_Eᵀ (r + W_out ReLU(W_in r + b_in)).  W_E is fixed; the labels are x + ReLU(x), so
    the residual carries x and the MLP must compute ReLU(x) of 100 features with 50 neurons.
    As in the paper the MLP has no bias unless ``bias=True`` (b_in stays a frozen zero).

    The forward pass computes the same function (and autograd the same gradients) through
    W_in W_E (d_mlp × n) and W_Eᵀ W_out (n × d_mlp), so that no (batch, d_embed) tensor is
    formed: about 7× faster than the literal order on a CPU.
    """

    def __init__(self, n_features: int = 100, d_embed: int = 1000, d_mlp: int = 50, n_instances: int = 1,
                 feature_probability: float = 0.01, embedding: str = "random", bias: bool = False,
                 device=None, generator: torch.Generator | None = None):
        super().__init__()
        from .device import get_device

        _check_positive_ints(n_features=n_features, d_embed=d_embed, d_mlp=d_mlp, n_instances=n_instances)
        if not 0 < feature_probability <= 1:
            raise ValueError(f"feature_probability must be in (0, 1], got {feature_probability!r}")
        device = get_device() if device is None else torch.device(device)
        self.n_features, self.d_embed, self.d_mlp, self.n_instances = n_features, d_embed, d_mlp, n_instances
        self.feature_probability, self.embedding = float(feature_probability), embedding
        W_E = torch.stack([embedding_matrix(n_features, d_embed, embedding, generator) for _ in range(n_instances)])
        std = math.sqrt(2.0 / (d_embed + d_mlp))
        self.register_buffer("W_E", W_E.to(device))  # (instances, d_embed, n)
        self.W_in = torch.nn.Parameter((torch.randn(n_instances, d_mlp, d_embed, generator=generator) * std).to(device))
        # Braun et al. train without biases (in_bias=False); bias=True adds a trainable b_in.
        self.b_in = torch.nn.Parameter(torch.zeros(n_instances, d_mlp, device=device), requires_grad=bias)
        self.W_out = torch.nn.Parameter((torch.randn(n_instances, d_embed, d_mlp, generator=generator) * std).to(device))

    def mixing(self) -> Tensor:
        """W_Eᵀ W_E − I: (instances, n, n), the overlaps of the embedded features."""
        eye = torch.eye(self.n_features, device=self.W_E.device)
        return self.W_E.transpose(1, 2) @ self.W_E - eye

    def forward(self, x: Tensor) -> Tensor:
        """x: (instances, batch, n) -> y: (instances, batch, n)."""
        reads = self.W_in @ self.W_E  # (instances, d_mlp, n): neuron k's input from feature i
        writes = self.W_E.transpose(1, 2) @ self.W_out  # (instances, n, d_mlp)
        residual = x @ (self.W_E.transpose(1, 2) @ self.W_E)  # W_Eᵀ W_E x, symmetric
        hidden = torch.relu(x @ reads.transpose(1, 2) + self.b_in[:, None, :])
        return residual + hidden @ writes.transpose(1, 2)

    @staticmethod
    def labels(x: Tensor) -> Tensor:
        return x + torch.relu(x)

    def loss(self, x: Tensor) -> Tensor:
        """(instances,): mean squared error over batch and features."""
        return (self(x) - self.labels(x)).square().mean(dim=(1, 2))

    def generate_batch(self, batch_size: int, generator: torch.Generator | None = None) -> Tensor:
        """(instances, batch, n): each feature 0 with probability 1 − p, else U[−1, 1]."""
        p = torch.tensor(self.feature_probability, device=self.W_E.device)
        return signed_sparse_features((self.n_instances, batch_size, self.n_features), p, generator)

    def naive_baseline(self) -> "ResidualMLP":
        """A copy whose MLP gives each of the first d_mlp features one neuron: neuron k reads
        W_E[:, k] and writes W_E[:, k] back, computing ReLU(x_k) (plus the mixing's leak)."""
        import copy

        naive = copy.deepcopy(self)  # same embedding; the MLP is overwritten below
        k = min(self.d_mlp, self.n_features)
        with torch.no_grad():
            naive.W_in.zero_()
            naive.W_out.zero_()
            naive.b_in.zero_()
            naive.W_in[:, :k, :] = self.W_E[:, :, :k].transpose(1, 2)
            naive.W_out[:, :, :k] = self.W_E[:, :, :k]
        return naive


def naive_loss_without_mixing(n_features: int, d_mlp: int, feature_probability: float) -> float:
    """The naive baseline's loss with W_Eᵀ W_E = I: the n − d_mlp unserved features miss
    ReLU(x), E[ReLU(x)²] = p/6 each for x ~ U[−1, 1] active with probability p, averaged
    over all n features: p (n − d_mlp) / (6 n), i.e. L/p = 1/12 for 100 features, 50 neurons."""
    unserved = max(n_features - d_mlp, 0)
    return feature_probability * unserved / (6 * n_features)
