"""Train chapter 02's uniform-superposition sweep and save its small result file.

Equal importance, n = 200 features in m = 20 dimensions (the paper uses n = 400, m = 30; this
size keeps the script near 6 minutes on one CPU thread), one instance per feature
probability, 1/(1 - S) log-spaced from 1 to 100, Adam lr 1e-3, batch 1024, 10,000 steps:
the chapter-01 recipe.  The result (W, b and the final loss per instance, about 0.7 MB) is
committed as ``course_utils/data/uniform_sweep.npz`` and loaded by the notebook beside a
smaller live sweep; ``tests/test_ch02_uniform_sweep.py`` proves this script reproduces it.

    python scripts/uniform_sweep.py [--out PATH] [--steps N] [--instances K]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from course_utils.device import configure_threads
from course_utils.toy_models import ToyModel, evaluate_loss, train

DEFAULT_OUT = Path(__file__).resolve().parents[1] / "course_utils" / "data" / "uniform_sweep.npz"
N_FEATURES, N_HIDDEN = 200, 20


def sweep_densities(instances: int, max_inverse_density: float = 100.0) -> torch.Tensor:
    """Feature probabilities 1 - S with 1/(1 - S) log-spaced from 1 to ``max_inverse_density``."""
    return 1.0 / torch.logspace(0, float(np.log10(max_inverse_density)), instances)


def train_uniform_sweep(instances: int = 32, steps: int = 10_000, seed: int = 0, progress: bool = True) -> dict:
    density = sweep_densities(instances)
    model = ToyModel(N_FEATURES, N_HIDDEN, instances, feature_probability=density[:, None], device="cpu",
                     generator=torch.Generator().manual_seed(seed))
    train(model, steps=steps, seed=seed, progress=progress, description="uniform sweep", fast=True)
    return dict(W=model.W.detach().numpy(), b=model.b.detach().numpy(), density=density.numpy(),
                loss=evaluate_loss(model, batch_size=20_000).numpy(), steps=np.array(steps), seed=np.array(seed))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--steps", type=int, default=10_000)
    parser.add_argument("--instances", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    configure_threads()
    result = train_uniform_sweep(args.instances, args.steps, args.seed)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(args.out, **result)
    print(f"wrote {args.out} ({args.out.stat().st_size / 1e6:.2f} MB)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
