"""Universality: do two language models trained from different seeds learn the same SAE
latents?  Lan et al. 2024 ("Sparse autoencoders reveal universal feature spaces across large
language models") pair the latents of an SAE on model A with those of an SAE on model B by how
well their activations correlate over the same tokens, then ask whether the paired decoder
directions span the same space, up to a rotation, by SVCCA (Raghu et al. 2017) against the
SVCCA of random pairings.

    activation_correlations   Pearson correlation of every latent of A with every latent of B
    match_latents             each live latent of A paired with its best-correlated latent of B
    svcca                     mean canonical correlation of two sets of paired vectors
    svcca_baseline            the same for random pairings: the null a match must beat

Activations are (n_tokens, n_latents), as ``sae.encode`` gives them for the rows of
``lm.collect_activations``; the vectors SVCCA compares are rows (e.g. decoder rows ``W_dec[a]``).
"""

from __future__ import annotations

import torch
from torch import Tensor


def activation_correlations(acts_a: Tensor, acts_b: Tensor) -> Tensor:
    """Pearson correlations between every latent of A and every latent of B over the same
    tokens: acts_a (n_tokens, n_a), acts_b (n_tokens, n_b) -> (n_a, n_b).  A latent that is
    constant on these tokens (dead) correlates 0 with everything."""
    if acts_a.dim() != 2 or acts_b.dim() != 2 or len(acts_a) != len(acts_b):
        raise ValueError(f"acts_a and acts_b must be (n_tokens, latents) over the same tokens, got "
                         f"{tuple(acts_a.shape)} and {tuple(acts_b.shape)}")
    if len(acts_a) < 2:
        raise ValueError("correlations need at least 2 tokens")

    def standardise(a):
        a = a.double() - a.double().mean(dim=0)
        std = a.square().mean(dim=0).sqrt()
        return torch.where(std > 0, a / std.clamp_min(1e-300), torch.zeros_like(a))

    return standardise(acts_a).T @ standardise(acts_b).to(acts_a.device) / len(acts_a)


def match_latents(acts_a: Tensor, acts_b: Tensor) -> dict[str, Tensor]:
    """Pair each live latent of A with the latent of B whose activations correlate most with it
    (Lan et al.'s activation-correlation pairing; several A latents may share a B partner).
    Returns dict(a (n_pairs,), b (n_pairs,), correlation (n_pairs,)); dead latents of A (never
    firing on these tokens) are left out."""
    corr = activation_correlations(acts_a, acts_b)
    alive = (acts_a != 0).any(dim=0).to(corr.device)
    best = corr.max(dim=1)
    a = alive.nonzero().squeeze(1)
    return dict(a=a.cpu(), b=best.indices[a].cpu(), correlation=best.values[a].cpu())


def svcca(A: Tensor, B: Tensor, keep: float = 0.99) -> float:
    """Singular-vector canonical correlation analysis (Raghu et al. 2017) between two sets of
    paired vectors, rows of A (n, d_a) and B (n, d_b): each is centred and cut to the top
    singular directions that hold ``keep`` of its variance, then the mean canonical
    correlation between the two reduced spaces is returned (1: the same space up to a linear
    map; about √(r/n)-ish for unrelated ones, so compare with shuffled pairings)."""
    if A.dim() != 2 or B.dim() != 2 or len(A) != len(B):
        raise ValueError(f"A and B must be (n, d) with the same n, got {tuple(A.shape)} and {tuple(B.shape)}")
    if not 0 < keep <= 1:
        raise ValueError(f"keep must lie in (0, 1], got {keep!r}")

    def reduce(X):
        X = X.detach().double().cpu()
        X = X - X.mean(dim=0)
        U, S, _ = torch.linalg.svd(X, full_matrices=False)
        share = torch.cumsum(S.square(), 0) / S.square().sum()
        r = int((share < keep).sum()) + 1
        return torch.linalg.qr(U[:, :r])[0]

    return float(torch.linalg.svdvals(reduce(A).T @ reduce(B)).mean())


def svcca_baseline(A: Tensor, B_all: Tensor, n_pairs: int | None = None, samples: int = 50, seed: int = 0,
                   keep: float = 0.99) -> Tensor:
    """SVCCA of A against rows of B_all drawn at random (random pairings), ``samples`` times:
    the null distribution a matched SVCCA must beat.  Returns (samples,)."""
    if isinstance(samples, bool) or int(samples) != samples or samples < 1:
        raise ValueError(f"samples must be a positive integer, got {samples!r}")
    gen = torch.Generator().manual_seed(seed)
    n = len(A) if n_pairs is None else n_pairs
    return torch.tensor([svcca(A, B_all[torch.randint(0, len(B_all), (n,), generator=gen)], keep)
                         for _ in range(int(samples))])
