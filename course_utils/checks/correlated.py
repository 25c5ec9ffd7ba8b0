"""Checks for chapter 02's data generators: correlated and anticorrelated feature sets.

Both are random, so the checks are statistical (at 5 standard errors, so the reference never
fails them) plus the exact rules of each kind of set: the features of a correlated set are
zero or nonzero together; at most one feature of an anticorrelated set is nonzero.  Every
case passes a seeded generator, and each check also asks that the batch come from it.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from .. import toy_models as ref
from ._framework import Case, CheckFailed, call_pure, exercise
from ._helpers import (
    BATCH_SIZE,
    Z,
    _correlation,
    _expect_batch,
    _expect_generator_argument,
    _expect_sparse_uniform,
    _expect_uses_generator,
    _generator,
    _randint,
)


def _set_text(members) -> str:
    """A set as {1, 3, 5} (brackets would read as a printed array)."""
    return "{" + ", ".join(str(i) for i in members) + "}"


def _sets_case(seed: int, kind: str) -> Case:
    """Random disjoint sets of 2 or 3 features among 4 to 8, some features left out; the
    probabilities differ per instance (and, for anticorrelated sets, per member)."""
    gen = _generator(seed + (0 if kind == "correlated" else 1000))
    instances = 1 if seed % 4 == 1 else _randint(gen, 2, 3)
    features = _randint(gen, 4, 8)
    order = torch.randperm(features, generator=gen).tolist()
    sets, taken = [], 0
    n_sets = 1 if seed % 4 == 2 else _randint(gen, 1, 3)
    for _ in range(n_sets):
        size = _randint(gen, 2, 3)
        if taken + size > features - (seed % 2):  # odd seeds leave at least one feature alone
            break
        sets.append(sorted(order[taken : taken + size]))
        taken += size
    if not sets:
        sets = [sorted(order[:2])]
    p = 0.05 + 0.4 * torch.rand(instances, features, generator=gen)
    for members in sets:
        if kind == "correlated":  # a correlated set shares one probability
            p[:, members] = p[:, members[:1]]
        else:  # keep Σ p <= 0.9 over an anticorrelated set
            p[:, members] = 0.03 + 0.27 * torch.rand(instances, len(members), generator=gen)
    label = (f"instances={instances}, features={features}, sets {' and '.join(_set_text(m) for m in sets)}, "
             f"batch_size={BATCH_SIZE}")
    return Case(label, feature_probability=p, batch_size=BATCH_SIZE, sets=sets, seed=seed)


def _draw(learner, case: Case, name: str) -> Tensor:
    """The learner's batch for this case, float64 (instances, batch_size, features), once it has
    passed the tests every feature passes alone (range, frequency, uniform values)."""
    _expect_generator_argument(learner, f"{name}(feature_probability, batch_size, sets, generator=None)")
    p = case.feature_probability
    x = _expect_batch(call_pure(learner, {"feature_probability": p, "batch_size": case.batch_size,
                                          "sets": [list(s) for s in case.sets]},
                                generator=_generator(case.seed)), case)
    _expect_sparse_uniform(x, p)
    return x


def _groups(case: Case) -> list[list[int]]:
    """The sets, then every feature in no set on its own."""
    inside = {i for members in case.sets for i in members}
    return [list(s) for s in case.sets] + [[i] for i in range(case.feature_probability.shape[1]) if i not in inside]


def _expect_groups_independent(x: Tensor, case: Case, kind: str) -> None:
    """Whether a group is active must not depend on whether another group is."""
    groups = _groups(case)
    active = torch.stack([(x[:, :, g] != 0).any(dim=2).double() for g in groups], dim=2)  # (inst, batch, groups)
    limit = Z / math.sqrt(x.shape[1])
    for a in range(len(groups)):
        for b in range(a + 1, len(groups)):
            r = _correlation(active[:, :, a], active[:, :, b])  # (instances,)
            if r.abs().max() > limit:
                what = lambda g: (f"{kind} set {_set_text(g)}" if len(g) > 1 else f"feature {g[0]} (in no set)")
                raise CheckFailed(
                    f"{what(groups[a])} and {what(groups[b])} are not independent (their activity is "
                    f"correlated, {float(r[r.abs().argmax()]):+.2f}): each set, and each feature in no "
                    "set, needs its own random numbers")


def _expect_sets_use_generator(learner, case: Case) -> None:
    """Batches for this case's sets come from the ``generator`` passed (``_expect_uses_generator``)."""
    sets = [list(s) for s in case.sets]
    _expect_uses_generator(lambda generator: learner(case.feature_probability, 64, sets, generator=generator))


_CASE_NOTE = ("feature_probability is (instances, features); sets is a list of lists of feature "
              "indices, e.g. [[0, 1], [2, 3, 5]]; features in no set are independent, as in "
              "chapter 01's generate_batch.")


@exercise(
    "correlated_batch",
    reference=ref.correlated_batch,
    cases=lambda seed: _sets_case(seed, "correlated"),
    seeds=range(8),
    passed="{n}/{n} cases have the right distribution.",
    hints=[
        "Start from independent features (chapter 01's batch: active with probability p, then "
        "U[0, 1]), then overwrite the columns of each set. " + _CASE_NOTE,
        "For one set: ONE random number per (instance, sample) decides whether the whole set is "
        "active, shape (instances, batch_size, 1), compared with the set's probability "
        "feature_probability[:, None, members[:1]]; it broadcasts over the set's features.",
        "The values stay independent: draw (instances, batch_size, len(members)) uniforms for the "
        "set and multiply them by the shared active mask; write them into x[:, :, members]. Pass "
        "generator= to every torch.rand.",
    ],
)
def check_correlated_batch(learner, case: Case) -> None:
    """Check your ``correlated_batch(feature_probability, batch_size, sets, generator=None)``:
    the features of each set are zero or nonzero together, each active with its
    feature_probability (shared by the set), with independent U[0, 1] values; other features
    are independent.  Statistical, deterministic (each case passes a seeded generator)."""
    x = _draw(learner, case, "correlated_batch")
    active = x != 0
    for members in case.sets:
        together = active[:, :, members].all(dim=2) | ~active[:, :, members].any(dim=2)
        apart = int((~together).sum())
        if apart > 2:  # torch.rand can return exactly 0.0, rarely
            raise CheckFailed(
                f"the features of correlated set {_set_text(members)} are not zero or nonzero together (in {apart} "
                f"of {together.numel()} samples only some of them are active): one random draw per "
                "sample must decide for the whole set")
        both = active[:, :, members[0]] & active[:, :, members[1]]
        a, b = x[:, :, members[0]][both], x[:, :, members[1]][both]
        if a.numel() > 100 and abs(float(_correlation(a[None], b[None])[0])) > Z / math.sqrt(a.numel()):
            raise CheckFailed(
                f"the values of correlated set {_set_text(members)} are not independent of each other (features "
                f"{members[0]} and {members[1]} are correlated when active): the set shares the decision "
                "to be active, but each feature draws its own value")
    _expect_groups_independent(x, case, "correlated")
    _expect_sets_use_generator(learner, case)


@exercise(
    "anticorrelated_batch",
    reference=ref.anticorrelated_batch,
    cases=lambda seed: _sets_case(seed, "anticorrelated"),
    seeds=range(8),
    passed="{n}/{n} cases have the right distribution.",
    hints=[
        "Start from independent features, then overwrite the columns of each set. At most one "
        "feature of a set is nonzero, and feature i of the set is still nonzero with its own "
        "probability p_i. " + _CASE_NOTE,
        "ONE uniform u per (instance, sample) and set picks the active member: cut [0, 1) into "
        "consecutive intervals of lengths p_0, p_1, ... (cumsum over the set's probabilities); "
        "member k is active when u falls in its interval, and nobody when u is past the last.",
        "With upper = p[:, members].cumsum(1)[:, None, :] and lower = upper - p[:, None, members], "
        "the mask (u >= lower) & (u < upper) has shape (instances, batch, k); multiply it by fresh "
        "uniform values and write them into x[:, :, members]. Pass generator= to every torch.rand.",
    ],
)
def check_anticorrelated_batch(learner, case: Case) -> None:
    """Check your ``anticorrelated_batch(feature_probability, batch_size, sets, generator=None)``:
    at most one feature of each set is nonzero in a sample, each feature is nonzero with its
    own feature_probability, values are U[0, 1], and sets and the other features are
    independent.  Statistical, deterministic (each case passes a seeded generator)."""
    x = _draw(learner, case, "anticorrelated_batch")
    for members in case.sets:
        crowded = int(((x[:, :, members] != 0).sum(dim=2) > 1).sum())
        if crowded:
            raise CheckFailed(
                f"in {crowded} samples two or more features of anticorrelated set {_set_text(members)} are nonzero "
                "together: at most one feature of the set may be active")
    _expect_groups_independent(x, case, "anticorrelated")
    _expect_sets_use_generator(learner, case)
