"""Incidental polysemanticity (Lecomte, Thaman, Schaeffer, Bashkansky, Chow & Koyejo 2023).

The model is a tied ReLU autoencoder with *more* neurons than features,

    y = ReLU(W Wᵀ x),    W: (features n, neurons m), m >= n,

trained on the n standard basis vectors x = e_i, with the loss

    L = Σ_i ‖ReLU(W Wᵀ e_i) − e_i‖² + λ ‖W‖₁   (sum of squared errors, not a mean).

Rows of W are features, columns are neurons.  A weight is *active* when |w| ∈ [0.8, 1.2] and a
neuron is *polysemantic* when two or more features have an active weight on it (the authors'
code).  With L1 the basis becomes privileged: each feature ends with one active weight, on a
neuron that random initialisation happened to favour, so two features can land on the same
neuron by chance, a birthday problem.  Only pairs of opposite sign survive the output ReLU, so
about n²/(4m) neurons end polysemantic although there is room for every feature to have its own.

Everything is batched over a leading instance axis (independent seeds): W is
``(instances, n, m)``.  ``train_autoencoders`` trains the paper's way, full batch, autograd
through ``autoencoder_loss`` and a ``torch.optim`` optimiser.  Because the inputs are the
identity, the forward pass on the whole dataset is the Gram matrix G = W Wᵀ, and
``fast=True`` steps with its closed-form gradient instead (``course_utils/_fast/
polysemanticity.py``, tested equal to autograd); the notebook's sweeps use it.
``train_autoencoder`` is the same default path written out as one plain loop (the chapter's
capstone: its learners write it).

The last part is Towards Monosemanticity's argument (Bricken et al. 2023) that a prediction
objective alone can make a neuron polysemantic: one ReLU neuron reading N mutually exclusive
tokens (``token_neuron_loss``, ``train_token_neuron``), whose best cross-entropy has a closed
form (``ce_lower_bound``) that prefers firing on two tokens, while squared error
(``mse_lower_bound``) ties every firing pattern.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import Tensor

from .device import get_device
from .training import TrainingLoop, smoke_cap

ACTIVE_RANGE = (0.8, 1.2)  # |w| in this range counts as an active weight (the authors' code)
OPTIMIZERS = ("adamw", "adam", "gd")
NOISES = ("bernoulli", "gaussian")


# --------------------------------------------------------------------------------------
# The model and its loss
# --------------------------------------------------------------------------------------


def init_weights(instances: int, n: int, m: int, generator: torch.Generator | None = None,
                 device=None) -> Tensor:
    """W ~ N(0, 1/m), shape (instances, n, m): each feature row starts with norm ≈ 1."""
    _check_sizes(n, m)
    W = torch.randn(instances, n, m, generator=generator, dtype=torch.float32)
    return (W / math.sqrt(m)).to(device) if device is not None else W / math.sqrt(m)


def forward(W: Tensor, x: Tensor, noise: Tensor | None = None) -> Tensor:
    """y = ReLU(W Wᵀ x) for x: (instances, batch, n) -> (instances, batch, n).

    Row-vector convention: h = x W is (instances, batch, m), y = ReLU(h Wᵀ).  ``noise``
    (instances, m), if given, is added to every input's hidden layer: y = ReLU((h + ε) Wᵀ)."""
    h = x @ W
    if noise is not None:
        h = h + noise[:, None, :]
    return torch.relu(h @ W.transpose(-1, -2))


def autoencoder_loss(W: Tensor, l1: float = 0.0, noise: Tensor | None = None) -> Tensor:
    """Σ_i ‖ReLU(W Wᵀ e_i) − e_i‖² + λ ‖W‖₁ over the n basis inputs, per instance: (instances,).

    With ``noise`` (instances, m) on the hidden layer, the outputs are ReLU(W (Wᵀ e_i + ε))."""
    n = W.shape[-2]
    eye = torch.eye(n, dtype=W.dtype, device=W.device)
    x = eye.expand(W.shape[0], n, n)
    reconstruction = (forward(W, x, noise) - x).square().sum(dim=(-1, -2))
    return reconstruction + l1 * W.abs().sum(dim=(-1, -2))


def hidden_noise(kind: str, sigma: float, instances: int, m: int, generator=None,
                 device=None) -> Tensor:
    """One noise vector per instance, (instances, m): Bernoulli ±σ or Gaussian N(0, σ²).

    Both have variance σ²; Bernoulli ±σ has excess kurtosis −2, Gaussian 0."""
    if kind == "bernoulli":
        signs = torch.randint(0, 2, (instances, m), generator=generator).float() * 2 - 1
        noise = signs * sigma
    elif kind == "gaussian":
        noise = torch.randn(instances, m, generator=generator) * sigma
    else:
        raise ValueError(f"noise must be one of {NOISES}, got {kind!r}")
    return noise.to(device) if device is not None else noise


# --------------------------------------------------------------------------------------
# Training
# --------------------------------------------------------------------------------------


@dataclass
class IncidentalRun:
    """What ``train_autoencoders`` returns.  ``W_init`` and ``W``: (instances, n, m), on the CPU.

    The histories are recorded at ``record_steps`` (step 0 = initialisation) and have shape
    (records, instances): the loss (with hidden noise: the noisy training loss computed in that
    step, before its update, which costs no extra pass), the mean per-feature ℓ1 norm Σ_j |w_ij|, the mean number of
    surviving weights per feature (|w| > ``survival_threshold``) and the mean fourth norm
    Σ_j w_ij⁴."""

    n: int
    m: int
    l1: float
    optimizer: str
    lr: float
    steps: int
    noise: str | None
    sigma: float
    W_init: Tensor
    W: Tensor
    record_steps: list[int] = field(default_factory=list)
    loss_history: Tensor | None = None
    l1_history: Tensor | None = None
    surviving_history: Tensor | None = None
    fourth_norm_history: Tensor | None = None
    seconds: float = 0.0

    @property
    def instances(self) -> int:
        return self.W.shape[0]

    @property
    def time(self) -> Tensor:
        """Continuous training time t = lr · step of each record (meaningful for gradient descent)."""
        return torch.tensor(self.record_steps, dtype=torch.float64) * self.lr


def train_autoencoders(
    n: int,
    m: int,
    instances: int = 16,
    *,
    l1: float = 1e-3,
    optimizer: str = "adamw",
    lr: float | None = None,
    steps: int = 7500,
    weight_decay: float = 0.01,
    noise: str | None = None,
    sigma: float = 0.0,
    seed: int = 0,
    record_every: int | None = None,
    survival_threshold: float = 0.02,
    device=None,
    progress: bool = True,
    description: str | None = None,
    fast: bool = False,
) -> IncidentalRun:
    """Train ``instances`` independent autoencoders (one seed each) on the n basis vectors.

    The paper's setup is the default: W ~ N(0, 1/m), full-batch AdamW (lr 1e-3, PyTorch's
    default decoupled weight decay 0.01), λ = 1e-3, 7,500 steps.  ``optimizer="gd"`` is plain
    gradient descent (default lr 0.05), the dynamics the paper's winner-take-all theory
    analyses; ``"adam"`` is Adam without weight decay.  ``noise="bernoulli"`` or
    ``"gaussian"`` adds hidden-layer noise of standard deviation ``sigma``, a fresh draw each
    step (the noise-driven variant is run with ``l1=0``).

    Each step is autograd through ``autoencoder_loss`` summed over the instances and a
    ``torch.optim`` step (AdamW, Adam or SGD).  ``fast=True`` takes the same steps with the
    closed-form gradient and a foreach Adam (``course_utils._fast.polysemanticity``).
    """
    _check_sizes(n, m)
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {optimizer!r}")
    if noise is not None and noise not in NOISES:
        raise ValueError(f"noise must be None or one of {NOISES}, got {noise!r}")
    if noise is not None and not sigma > 0:
        raise ValueError(f"noise={noise!r} needs sigma > 0, got {sigma!r}")
    for name, value in (("instances", instances), ("steps", steps)):
        if int(value) != value or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    if l1 < 0 or not math.isfinite(l1):
        raise ValueError(f"l1 must be a finite number >= 0, got {l1!r}")
    lr = (0.05 if optimizer == "gd" else 1e-3) if lr is None else float(lr)
    if not lr > 0:
        raise ValueError(f"lr must be positive, got {lr!r}")
    record_every = record_every or max(1, steps // 100)
    device = torch.device(device) if device is not None else get_device()
    generator = torch.Generator().manual_seed(seed)
    W = init_weights(instances, n, m, generator).to(device)
    W_init = W.detach().cpu().clone()
    noise_generator = torch.Generator().manual_seed(seed + 1)

    def draw_noise() -> Tensor | None:
        """This step's hidden noise, (instances, m), or None."""
        return None if noise is None else hidden_noise(noise, sigma, instances, m, noise_generator, device)

    loop = TrainingLoop(steps, description or f"n={n}, m={m}, {optimizer}", progress, leave=False,
                        what="training diverged: the loss", advice=f"lower lr (now {lr})")

    def recorded(updates: int) -> bool:
        return updates % record_every == 0 or updates == loop.steps  # loop.steps: fewer in smoke mode

    @torch.no_grad()
    def record(updates: int, loss: Tensor) -> None:
        """The loss and how sparse the features are after ``updates`` steps, (instances,) each."""
        loop.log(updates, loss, l1=W.abs().sum(-1).mean(-1),
                 surviving=(W.abs() > survival_threshold).sum(-1).float().mean(-1),
                 fourth=fourth_norm(W).mean(-1))

    if fast:
        from ._fast.polysemanticity import train_closed_form

        train_closed_form(W, loop, record, recorded, draw_noise, l1, optimizer, lr, weight_decay)
    else:
        W.requires_grad_()
        torch_optimizer = (torch.optim.AdamW([W], lr=lr, weight_decay=weight_decay) if optimizer == "adamw"
                           else torch.optim.Adam([W], lr=lr) if optimizer == "adam"
                           else torch.optim.SGD([W], lr=lr))
        for step in loop:  # step: updates done so far
            noise_now = draw_noise()
            loss = autoencoder_loss(W, l1, noise_now)  # (instances,)
            if step == 0:
                record(0, loss.detach())
            torch_optimizer.zero_grad()
            loss.sum().backward()
            torch_optimizer.step()
            if recorded(step + 1):  # the noisy loss of this step, else the loss of the updated W
                record(step + 1, loss.detach() if noise_now is not None else autoencoder_loss(W.detach(), l1))
    history = {name: torch.stack(values) for name, values in loop.history.items()}
    return IncidentalRun(
        n=n, m=m, l1=float(l1), optimizer=optimizer, lr=lr, steps=int(steps), noise=noise,
        sigma=float(sigma), W_init=W_init, W=W.detach().cpu(), record_steps=loop.steps_logged,
        loss_history=history["loss"], l1_history=history["l1"], surviving_history=history["surviving"],
        fourth_norm_history=history["fourth"], seconds=loop.seconds,
    )


def train_autoencoder(n: int, m: int, instances: int, l1: float, loss_fn=None, steps: int = 7_500,
                      lr: float = 1e-3, weight_decay: float = 0.01, seed: int = 0, device="cpu",
                      progress: bool = True) -> tuple[Tensor, Tensor]:
    """The paper's training loop, written out (chapter 03's learners write it): W ~ N(0, 1/m)
    drawn from ``torch.Generator().manual_seed(seed)`` (as ``init_weights``), a leaf tensor
    (instances, n, m) on ``device``, full-batch AdamW on ``loss_fn(W, l1)`` (one loss per
    instance, default ``autoencoder_loss``) summed over the instances.

    Returns (W_init, W): a copy of the initial weights and the trained weights, both detached
    and on the CPU, (instances, n, m).  The same steps as ``train_autoencoders``' default path
    (fewer in smoke mode, ``training.SMOKE_STEPS_ENV``)."""
    from tqdm.auto import tqdm

    loss_fn = autoencoder_loss if loss_fn is None else loss_fn
    generator = torch.Generator().manual_seed(seed)
    W = (torch.randn(instances, n, m, generator=generator) / math.sqrt(m)).to(device).requires_grad_()
    W_init = W.detach().cpu().clone()
    optimizer = torch.optim.AdamW([W], lr=lr, weight_decay=weight_decay)
    run, description = smoke_cap(steps, f"n={n}, m={m}, λ={l1:g}")
    for _ in tqdm(range(run), desc=description, disable=not progress, leave=False, mininterval=0.5):
        loss = loss_fn(W, l1)  # (instances,)
        optimizer.zero_grad()
        loss.sum().backward()
        optimizer.step()
    return W_init, W.detach().cpu()


# --------------------------------------------------------------------------------------
# Measures
# --------------------------------------------------------------------------------------


def active_weights(W: Tensor, low: float = ACTIVE_RANGE[0], high: float = ACTIVE_RANGE[1]) -> Tensor:
    """Boolean (instances, n, m): |w| ∈ [low, high]."""
    magnitude = W.abs()
    return (magnitude >= low) & (magnitude <= high)


def features_per_neuron(W: Tensor) -> Tensor:
    """(instances, m): how many features have an active weight on each neuron."""
    return active_weights(W).sum(dim=-2)


def polysemantic_neurons(W: Tensor) -> Tensor:
    """(instances,): neurons on which two or more features have an active weight."""
    return (features_per_neuron(W) >= 2).sum(dim=-1)


def privileged_basis(W: Tensor, zero: float = 0.05) -> dict[str, float]:
    """How axis-aligned W is, over all instances: the fraction of features with exactly one
    active weight, and the fraction of the remaining weights with |w| < ``zero``."""
    active = active_weights(W)
    one_active = (active.sum(-1) == 1).float().mean()
    rest = W.abs()[~active]
    near_zero = (rest < zero).float().mean() if rest.numel() else torch.tensor(1.0)
    return {"one_active_weight": float(one_active), "others_near_zero": float(near_zero)}


def winning_neurons(W: Tensor) -> Tensor:
    """(instances, n): for each feature, the neuron with its largest |weight|."""
    return W.abs().argmax(dim=-1)


def initial_argmax_win_rate(W_init: Tensor, W: Tensor) -> Tensor:
    """(instances,): the fraction of features whose final winning neuron is the argmax of
    their initial |weights|.  Chance is 1/m."""
    if W_init.shape != W.shape:
        raise ValueError(f"W_init and W need the same shape, got {tuple(W_init.shape)} and {tuple(W.shape)}")
    return (winning_neurons(W_init) == winning_neurons(W)).float().mean(dim=-1)


def shared_neuron_signs(W: Tensor) -> dict[str, int]:
    """Count the pairs of features with active weights on the same neuron, by sign: same
    sign (they would interfere through the output ReLU) and opposite sign (harmless)."""
    active = active_weights(W).float()
    positive = active * (W > 0)
    negative = active * (W < 0)
    p, q = positive.sum(-2), negative.sum(-2)  # (instances, m)
    same = (p * (p - 1) / 2 + q * (q - 1) / 2).sum()
    opposite = (p * q).sum()
    return {"same_sign": int(same), "opposite_sign": int(opposite)}


def fourth_norm(W: Tensor) -> Tensor:
    """(instances, n): Σ_j w_ij⁴.  1 for a unit row with one nonzero weight, ≈ 3/m for a
    random row of norm 1: a measure of how concentrated each feature is."""
    return W.pow(4).sum(dim=-1)


# --------------------------------------------------------------------------------------
# Predictions
# --------------------------------------------------------------------------------------


def expected_collisions(n: int, m: int) -> float:
    """The birthday problem: the expected number of pairs of n features whose winning neurons,
    drawn uniformly from m, coincide: C(n, 2)/m ≈ n²/(2m)."""
    _check_sizes(n, m, need_more_neurons=False)
    return n * (n - 1) / 2 / m


def predicted_polysemantic(n: int, m: int) -> float:
    """Expected polysemantic neurons if every feature's winner is a uniformly random neuron and
    its sign a fair coin, and only opposite signs can share a neuron (two positive weights on
    one neuron make W_i · W_j > 0, an error the output ReLU passes on).  A neuron is
    polysemantic when it wins at least one positive and one negative feature:

        m · [1 − 2 (1 − 1/(2m))ⁿ + (1 − 1/m)ⁿ]  ≈  n²/(4m)  for m ≫ n.
    """
    _check_sizes(n, m, need_more_neurons=False)
    return m * (1 - 2 * (1 - 1 / (2 * m)) ** n + (1 - 1 / m) ** n)


def simulate_polysemantic(n: int, m: int, trials: int = 20_000, seed: int = 0) -> Tensor:
    """Monte Carlo of ``predicted_polysemantic``'s model: (trials,) counts of neurons that
    win at least one positive and at least one negative feature."""
    _check_sizes(n, m, need_more_neurons=False)
    generator = torch.Generator().manual_seed(seed)
    neuron = torch.randint(0, m, (trials, n), generator=generator)
    positive = torch.randint(0, 2, (trials, n), generator=generator).bool()
    counts = []
    chunk = max(1, 250_000 // n)  # trials at a time: sorting millions of ids at once costs 100s of MB
    for start in range(0, trials, chunk):
        sign = positive[start:start + chunk]
        key = torch.arange(sign.shape[0])[:, None] * m + neuron[start:start + chunk]  # (trial, neuron) id
        # a neuron is polysemantic when its id is among both the positive and the negative winners
        both = torch.cat([torch.unique(key[sign]), torch.unique(key[~sign])]).sort().values
        shared = both[1:][both[1:] == both[:-1]]
        counts.append(torch.bincount(shared // m, minlength=sign.shape[0]))
    return torch.cat(counts)


def predicted_surviving(m: int, l1: float, t) -> Tensor:
    """The paper's sparsification law for gradient flow: the number of surviving weights of a
    feature, m'(t) ≈ max(1, 1/(1/√m + λ t)²), with t = lr · steps; its ℓ1 norm is √m'."""
    t = torch.as_tensor(t, dtype=torch.float64)
    return (1 / (1 / math.sqrt(m) + l1 * t) ** 2).clamp(min=1.0)


# --------------------------------------------------------------------------------------
# The collision sweep
# --------------------------------------------------------------------------------------


@dataclass
class CollisionSweep:
    """Polysemantic-neuron counts for several widths: ``counts`` is (widths, instances)."""

    n: int
    widths: list[int]
    counts: Tensor
    win_rates: Tensor
    privileged: list[dict[str, float]]
    seconds: list[float]
    settings: dict
    predicted: Tensor | None = None  # the prediction per width, when the sweep was given one

    @property
    def mean(self) -> Tensor:
        return self.counts.double().mean(dim=1)

    @property
    def standard_error(self) -> Tensor:
        return self.counts.double().std(dim=1) / math.sqrt(self.counts.shape[1])

    @property
    def prediction(self) -> Tensor:
        """The expected count per width: what the sweep's ``predict`` gave, else
        ``predicted_polysemantic``."""
        if self.predicted is not None:
            return self.predicted
        return torch.tensor([predicted_polysemantic(self.n, m) for m in self.widths], dtype=torch.float64)

    @property
    def leading_order(self) -> Tensor:
        """n²/(4m), the paper's line."""
        return torch.tensor([self.n**2 / (4 * m) for m in self.widths], dtype=torch.float64)

    def slope(self) -> float:
        """The log-log slope of the mean count against m (needs every mean > 0)."""
        from .scaling import fit_power_law

        return fit_power_law(self.widths, self.mean).slope

    def summary(self) -> list[dict]:
        rows = []
        for k, m in enumerate(self.widths):
            rows.append({
                "m": m, "mean": float(self.mean[k]), "standard_error": float(self.standard_error[k]),
                "prediction": float(self.prediction[k]), "n2_over_4m": float(self.leading_order[k]),
                "ratio": float(self.mean[k] / self.prediction[k]),
                "initial_argmax_wins": float(self.win_rates[k].mean()), "chance": 1 / m,
                "one_active_weight": self.privileged[k]["one_active_weight"],
            })
        return rows


def collision_sweep(n: int, widths, instances: int = 32, *, seed: int = 0, progress: bool = True,
                    fast: bool = False, count=None, predict=None, win_rate=None,
                    **train_kwargs) -> CollisionSweep:
    """Train ``instances`` seeds at each width in ``widths`` (each width one batched run) and
    count polysemantic neurons.  ``fast`` and ``train_kwargs`` go to ``train_autoencoders``.

    ``count(W) -> (instances,)`` counts the polysemantic neurons (default
    ``polysemantic_neurons``) and ``predict(n, m) -> float`` gives the expected count (default
    ``predicted_polysemantic``) and ``win_rate(W_init, W) -> (instances,)`` the fraction of
    features won by their initial argmax (default ``initial_argmax_win_rate``): the chapter
    passes the learner's versions."""
    from tqdm.auto import tqdm

    widths = [int(m) for m in widths]
    if not widths:
        raise ValueError("widths is empty")
    for m in widths:
        _check_sizes(n, m)
    record_every = train_kwargs.pop("record_every", None) or 10**9  # only the end is needed
    counts, win_rates, privileged, seconds = [], [], [], []
    for k, m in enumerate(tqdm(widths, desc=f"collision sweep n={n}", disable=not progress, leave=False)):
        run = train_autoencoders(n, m, instances, seed=seed + 1000 * k, progress=progress,
                                 record_every=record_every, fast=fast, **train_kwargs)
        counts.append(torch.as_tensor((count or polysemantic_neurons)(run.W)).cpu())
        win_rates.append(torch.as_tensor((win_rate or initial_argmax_win_rate)(run.W_init, run.W)).cpu())
        privileged.append(privileged_basis(run.W))
        seconds.append(run.seconds)
    settings = {"instances": instances, "seed": seed, **train_kwargs}
    predicted = None if predict is None else torch.tensor([float(predict(n, m)) for m in widths], dtype=torch.float64)
    return CollisionSweep(n, widths, torch.stack(counts), torch.stack(win_rates), privileged, seconds, settings,
                          predicted)


# --------------------------------------------------------------------------------------
# Polysemanticity without sparsity: one neuron, N mutually exclusive tokens
# --------------------------------------------------------------------------------------
#
# Towards Monosemanticity (Bricken et al. 2023, "why not architectural approaches"): one ReLU
# neuron reads N equally likely one-hot tokens, h_t = ReLU(w_t), and a linear readout predicts
# the token from it, logits = u h_t + c.  Under cross-entropy the best the readout can do depends
# only on which tokens share an activation level; under squared error every firing pattern ties.

TOKEN_LOSSES = ("ce", "mse")


def ce_lower_bound(activations: Tensor, tol: float = 1e-6) -> float:
    """The infimum over linear readouts (u, c) of the cross-entropy of predicting N equally
    likely tokens from one neuron's activations, ``activations``: (N,).

    Tokens at distinct activation levels can be told apart with certainty in the limit of a
    large readout (the logits u_k h + c_k are tangent lines of a parabola, each the largest at
    its own level); tokens at the same level can only be guessed uniformly.  So the bound is
    Σ over groups g of equal activation (within ``tol``) of (|g|/N) ln |g|."""
    h = torch.as_tensor(activations, dtype=torch.float64).flatten().sort().values
    N = h.numel()
    boundaries = torch.nonzero(h.diff() > tol).flatten() + 1
    edges = [0, *boundaries.tolist(), N]
    sizes = [b - a for a, b in zip(edges[:-1], edges[1:])]
    return float(sum(size / N * math.log(size) for size in sizes))


def mse_lower_bound(activations: Tensor, tol: float = 1e-6) -> float:
    """The least squared error, Σ over the N outputs and mean over N equally likely one-hot
    tokens, of an affine readout u h_t + c of one neuron's activations (N,): (N − 2)/N when the
    activations are not all equal, (N − 1)/N when they are (per output, the variance of x_k
    left unexplained by a regression on h; Σ_k Cov(x_k, h)² = Var(h)/N)."""
    h = torch.as_tensor(activations, dtype=torch.float64).flatten()
    N = h.numel()
    constant = float(h.max() - h.min()) <= tol
    return (N - 1) / N if constant else (N - 2) / N


def token_neuron_loss(w: Tensor, u: Tensor, c: Tensor, loss: str = "ce") -> Tensor:
    """The loss of one neuron per seed on N one-hot tokens, (seeds,).

    w, u, c: (seeds, N).  The neuron's activation on token t is h_t = ReLU(w_t); the readout
    gives N outputs u h_t + c.  ``"ce"``: cross-entropy of predicting the token t, mean over
    tokens; ``"mse"``: squared error against the one-hot x_t, summed over outputs, mean over
    tokens."""
    if loss not in TOKEN_LOSSES:
        raise ValueError(f"loss must be one of {TOKEN_LOSSES}, got {loss!r}")
    seeds, N = w.shape
    h = torch.relu(w)  # (seeds, tokens)
    outputs = h[:, :, None] * u[:, None, :] + c[:, None, :]  # (seeds, tokens, outputs)
    if loss == "ce":
        return -torch.log_softmax(outputs, dim=-1).diagonal(dim1=-2, dim2=-1).mean(dim=-1)
    x = torch.eye(N, dtype=w.dtype, device=w.device)
    return (outputs - x).square().sum(dim=-1).mean(dim=-1)


@dataclass
class TokenNeuronRun:
    """What ``train_token_neuron`` returns: the activations h = ReLU(w), (seeds, N), the final
    losses (seeds,), and the readout u, c (seeds, N)."""

    loss_kind: str
    activations: Tensor
    loss: Tensor
    u: Tensor
    c: Tensor

    def firing(self, threshold: float = 1e-3) -> Tensor:
        """(seeds,): the number of tokens each seed's neuron fires on (h > threshold)."""
        return (self.activations > threshold).sum(dim=-1)


def train_token_neuron(loss: str = "ce", seeds: int = 16, tokens: int = 4, steps: int = 5_000,
                       lr: float = 0.01, init_std: float = 0.5, seed: int = 0,
                       progress: bool = False) -> TokenNeuronRun:
    """Train ``seeds`` one-neuron models (``token_neuron_loss``) at once with full-batch AdamW
    (PyTorch's default weight decay 0.01): w, u ~ N(0, init_std²) from one generator seeded with
    ``seed``, c = 0.  A neuron whose weights all start negative never fires (a dead ReLU gets no
    gradient)."""
    from tqdm.auto import tqdm

    generator = torch.Generator().manual_seed(seed)
    w = (torch.randn(seeds, tokens, generator=generator) * init_std).requires_grad_()
    u = (torch.randn(seeds, tokens, generator=generator) * init_std).requires_grad_()
    c = torch.zeros(seeds, tokens, requires_grad=True)
    optimizer = torch.optim.AdamW([w, u, c], lr=lr)
    run, description = smoke_cap(steps, f"one neuron, {loss}")  # fewer steps in smoke mode
    for _ in tqdm(range(run), desc=description, disable=not progress, leave=False, mininterval=0.5):
        optimizer.zero_grad()
        token_neuron_loss(w, u, c, loss).sum().backward()
        optimizer.step()
    with torch.no_grad():
        final = token_neuron_loss(w, u, c, loss)
    return TokenNeuronRun(loss, torch.relu(w).detach(), final, u.detach(), c.detach())


# --------------------------------------------------------------------------------------
# For the widget: one model, its weights sorted to show collisions
# --------------------------------------------------------------------------------------


def sort_for_display(W: Tensor) -> tuple[Tensor, Tensor]:
    """One instance's W (n, m) with its neurons reordered: the winners of features 0, 1, …
    first (in feature order, each neuron once), unused neurons last.  A polysemantic neuron
    shows as a column with two active weights.  Returns (W_sorted, neuron_order)."""
    if W.dim() != 2:
        raise ValueError(f"sort_for_display takes one instance's W (n, m), got shape {tuple(W.shape)}")
    order: list[int] = []
    for neuron in W.abs().argmax(dim=-1).tolist():
        if neuron not in order:
            order.append(neuron)
    order += [j for j in range(W.shape[1]) if j not in order]
    index = torch.tensor(order)
    return W[:, index], index


def _check_sizes(n: int, m: int, need_more_neurons: bool = True) -> None:
    for name, value in (("n", n), ("m", m)):
        if int(value) != value or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    if need_more_neurons and m < n:
        raise ValueError(f"this chapter's model has at least as many neurons as features; got n={n}, m={m}")
