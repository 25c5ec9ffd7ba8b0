"""Train chapter 07's memorization sweeps (Henighan et al. 2023) and save their small result file.

Three experiments, each one batched model per setting (``course_utils.memorization.sweep_T``):

    T sweep      m = 2, one instance per training-set size T: test loss, feature and data-point
                 dimensionality, the hidden vectors of the small-T training sets (the polygons)
    T × m map    the same Ts for m in ``--ms``: the test loss over (T, m)
    weight decay the Ts at m = 4 with weight decay 1e-2 and 1.0 (the paper's appendix), when 4 is in ms

Sizes.  The paper uses n = 10,000 features, 1 − S = 0.001, 50,000 full-batch AdamW steps at
lr 1e-3 (warmup 5 %, cosine decay), weight decay 1e-2, T up to tens of thousands: hours of CPU.
The default here is scaled down to minutes on one CPU thread: n = 100 features with 1 − S =
0.05 (5 active features per example, the paper has 10), T from 3 to 400, 10,000 steps at
lr 1e-2 (the paper's schedule shape and weight decay).  ``--paper`` selects the paper's n,
1 − S, steps and lr, T from 3 to 20,000 (a GPU's work, not run for the committed file: the
largest instance's dense output is 20,000 × 10,000; ``get_device()`` picks CUDA).

The result (a few kB of numbers, plus the m = 2 hidden vectors of the training sets with T <= 12)
is committed as ``course_utils/data/memorization_sweep.npz``;
``tests/test_ch07_memorization.py`` re-trains a few of its instances with the script and
compares (every instance's data and initial W come from its own seed, so a subset re-trains
alone to the same result).

    python scripts/memorization_sweep.py [--out PATH] [--steps N] [--Ts 3,5,8] [--ms 2,4] [--paper]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from course_utils.device import configure_threads, get_device
from course_utils.memorization import PAPER, sweep_T

DEFAULT_OUT = Path(__file__).resolve().parents[1] / "course_utils" / "data" / "memorization_sweep.npz"
SMALL = dict(n_features=100, feature_probability=0.05, steps=10_000, lr=1e-2,
             Ts=(3, 5, 8, 12, 20, 35, 60, 100, 200, 400), ms=(2, 3, 4, 6))
# --paper: T from 3 to 20,000 (the small default's 400 times the ratio of the feature probabilities)
PAPER_TS = tuple(sorted({int(round(T)) for T in np.geomspace(3, 20_000, 16)}))
KEEP_H_UP_TO = 12  # the hidden vectors of training sets up to this size are saved (m = 2)


def run(Ts, ms, n_features, feature_probability, steps, lr, weight_decays=(1e-2, 1.0), seed=0,
        progress=True) -> dict:
    """Every sweep of the module docstring; returns the arrays the .npz file holds."""
    out: dict[str, np.ndarray] = dict(T=np.array(Ts), m=np.array(ms), weight_decay=np.array(weight_decays),
                                      n_features=np.array(n_features), steps=np.array(steps), lr=np.array(lr),
                                      feature_probability=np.array(feature_probability), seed=np.array(seed))
    common = dict(n_features=n_features, feature_probability=feature_probability, steps=steps, lr=lr, seed=seed,
                  progress=progress)
    maps = {}
    for m in sorted(set(ms) | {2}):
        for wd in weight_decays if m == 4 else weight_decays[:1]:
            sweep = sweep_T(Ts, m, weight_decay=wd, **common)
            maps[m, wd] = sweep
            print(f"m={m} weight decay={wd:g}: {sweep.seconds:.1f} s; test loss "
                  + " ".join(f"{v:.3f}" for v in sweep.test_loss.tolist()))
    main = maps[2, weight_decays[0]]
    small = [k for k, T in enumerate(Ts) if T <= KEEP_H_UP_TO]
    out.update(test_loss=main.test_loss.numpy(), train_loss=main.train_loss.numpy(),
               feature_D=main.feature_D.numpy(), data_D=main.data_D.numpy(),
               H_small=main.H[small, :KEEP_H_UP_TO].numpy(), T_small=np.array([Ts[k] for k in small]),
               W_largest_T=main.W[-1].numpy())
    out["test_loss_map"] = np.stack([maps[m, weight_decays[0]].test_loss.numpy() for m in ms])  # (len(ms), len(Ts))
    if 4 in ms:
        out["test_loss_weight_decay"] = np.stack([maps[4, wd].test_loss.numpy() for wd in weight_decays])
    out["seconds"] = np.array(sum(s.seconds for s in maps.values()))
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--Ts", type=lambda s: tuple(int(t) for t in s.split(",")), default=None)
    parser.add_argument("--ms", type=lambda s: tuple(int(t) for t in s.split(",")), default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--paper", action="store_true", help="the paper's sizes (a GPU's work)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    args = parser.parse_args(argv)
    configure_threads()
    size = dict(SMALL)
    if args.paper:
        size.update(n_features=PAPER["n_features"], feature_probability=PAPER["feature_probability"],
                    steps=PAPER["steps"], lr=PAPER["lr"], Ts=PAPER_TS)
    size["steps"] = args.steps or size["steps"]
    size["Ts"] = args.Ts or size["Ts"]
    size["ms"] = args.ms or size["ms"]
    cpu_start, wall_start = time.process_time(), time.perf_counter()
    result = run(seed=args.seed, progress=not args.quiet, **size)
    cpu, wall = time.process_time() - cpu_start, time.perf_counter() - wall_start
    result.update(cpu_seconds=np.array(cpu), wall_seconds=np.array(wall), device=np.array(str(get_device())))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(args.out, **result)
    print(f"wrote {args.out} ({args.out.stat().st_size / 1e3:.1f} kB); CPU time {cpu:.1f} s, "
          f"wall {wall:.1f} s on {get_device()}, {torch.get_num_threads()} thread(s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
