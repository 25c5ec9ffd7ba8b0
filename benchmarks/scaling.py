"""Benchmark: the chapter-02 scaling sweep (course_utils.scaling.scaling_sweep) on its fast path
(``fast=True``: sparse batches, hand-derived gradients), as the notebook runs it.

Workloads:
  notebook  the notebook's run: n=512, m = 8, 11, 16, 23, 32, γ = -1 (strong) and +0.1
            (weak), α = 0.25, 1000 steps of 512 samples; budget 30 s on one CPU thread
  alpha1    the same at α = 1, where both regimes should scale as 1/m
  long      the notebook's run at the paper's peak lr 1e-2 and 4× the steps (4000)
  large     closer to the paper: n=1024, m = 8 … 64 (7 sizes), 2000 steps of 1024 samples

For each: seconds on 1 (and 2) CPU threads, the fitted log-log slopes of loss against m,
the fraction of features represented (‖W_i‖ > 0.5) per m, the mean squared overlap of the
represented features times m (1 for random directions), and the finite-n weak-superposition
prediction.  ``--seeds`` repeats the notebook run over seeds for the spread of the slopes.

    python benchmarks/scaling.py                  # notebook (1 and 2 threads), alpha1, long, large, 6 seeds
    python benchmarks/scaling.py --quick          # notebook and alpha1 on 1 thread only
    python benchmarks/scaling.py --workload large --threads 2
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
from pathlib import Path

import torch

from course_utils.scaling import scaling_sweep

WORKLOADS = {
    "notebook": dict(),
    "alpha1": dict(alpha=1.0),
    "long": dict(steps=4000, lr=1e-2),
    "large": dict(n_features=1024, n_hidden=(8, 11, 16, 23, 32, 45, 64), steps=2000, batch_size=1024),
}
TARGET_S = {"notebook": 30.0}  # one CPU thread
NOTE = ("threads=2 rows mean something only on an otherwise idle machine: with other work on one of the 2 cores, "
        "the two OpenMP threads wait for the descheduled one at every parallel op (many small ops per step here), "
        "so a run can take 10x longer than on one thread; the notebook sets one thread.  load_average_1min shows "
        "how busy the machine was around each row.")
IMPORT_RSS_MB = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)  # python + torch, before any run


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run(name: str, threads: int, seed: int = 0) -> dict:
    torch.set_num_threads(threads)
    load_before = os.getloadavg()[0]
    result = scaling_sweep(seed=seed, progress=False, fast=True, **WORKLOADS[name])
    per_m = torch.tensor(result.n_hidden, dtype=torch.float32)
    return dict(
        workload=name, threads=threads, seed=seed, seconds=round(result.seconds, 2),
        target_s=TARGET_S.get(name) if threads == 1 else None,
        n_features=result.n_features, alpha=result.alpha, n_hidden=result.n_hidden,
        weight_decay=result.weight_decay,
        slopes=[round(s, 3) for s in result.slopes],
        weak_theory_slope=round(result.weak_theory_slope, 3),
        represented_per_m=[[round(v, 2) for v in row] for row in
                           (result.represented * result.n_features / per_m).tolist()],
        overlap_times_m=[[round(v, 2) for v in row] for row in (result.overlap * per_m).tolist()],
        loss=[[float(f"{v:.4g}") for v in row] for row in result.loss.tolist()],
        peak_rss_mb=round(peak_rss_mb(), 1),
        load_average_1min=[round(load_before, 2), round(os.getloadavg()[0], 2)],  # before, after: other work on the machine
    )


def line(r: dict) -> str:
    target = f" (target < {r['target_s']:g} s: {'met' if r['seconds'] < r['target_s'] else 'MISSED'})" if r["target_s"] else ""
    slopes = ", ".join(f"γ={g:+g}: {s:+.2f}" for g, s in zip(r["weight_decay"], r["slopes"]))
    return (f"{r['workload']:8s} seed {r['seed']} threads {r['threads']}: {r['seconds']:6.2f} s{target}; slopes {slopes}; "
            f"weak theory {r['weak_theory_slope']:+.2f}; peak RSS {r['peak_rss_mb']:.0f} MB; load {r['load_average_1min']}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workload", choices=sorted(WORKLOADS), action="append")
    parser.add_argument("--threads", type=int, action="append", help="CPU thread counts for the notebook run (default: 1 and 2)")
    parser.add_argument("--seeds", type=int, default=6, help="seeds of the notebook run on 1 thread (default 6)")
    parser.add_argument("--quick", action="store_true", help="notebook and alpha1 on 1 thread, one seed")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "scaling.json")
    args = parser.parse_args(argv)
    workloads = args.workload or (["notebook", "alpha1"] if args.quick else ["notebook", "alpha1", "long", "large"])
    threads = args.threads or ([1] if args.quick else [1, 2])
    seeds = 1 if args.quick else args.seeds
    rows = []
    for name in workloads:
        for t in threads if name == "notebook" else threads[:1]:
            rows.append(run(name, t))
            print(line(rows[-1]), flush=True)
    if "notebook" in workloads:
        for seed in range(1, seeds):
            rows.append(run("notebook", 1, seed))
            print(line(rows[-1]), flush=True)
    spread = {}
    notebook = [r for r in rows if r["workload"] == "notebook" and r["threads"] == 1]
    if len(notebook) > 1:
        for k, gamma in enumerate(notebook[0]["weight_decay"]):
            slopes = [r["slopes"][k] for r in notebook]
            spread[f"{gamma:+g}"] = dict(min=min(slopes), max=max(slopes), mean=round(statistics.mean(slopes), 3),
                                         stdev=round(statistics.stdev(slopes), 3), seeds=len(slopes))
        print(f"notebook slopes over {len(notebook)} seeds: {spread}")
    cpu = platform.processor() or platform.machine()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(dict(torch=torch.__version__, cpu=cpu, cpus=os.cpu_count(), python=platform.python_version(),
                                        torch_import_rss_mb=IMPORT_RSS_MB, note=NOTE,
                                        notebook_slope_spread=spread, rows=rows), indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
