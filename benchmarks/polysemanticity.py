"""Benchmark: chapter 03's batched training (course_utils.polysemanticity), on the fast path
(``fast=True``: the closed-form step) as the notebook runs it.

Workloads:
  adamw_sweep  the notebook's collision sweep in the paper's setup: n=32, m = 64, 128, 256, 512,
               32 seeds per width (one batched run each), AdamW lr 1e-3, λ = 1e-3, 7,500 steps
  gd_sweep     the notebook's gradient-descent sweep: same widths and seeds, lr 0.05, λ = 0.03,
               3,000 steps
  noise        the notebook's noise runs: n=8, m=16, 16 seeds, 30,000 SGD steps, Bernoulli and
               Gaussian σ = 0.15
  autograd     one width (m=512, 32 seeds, 500 AdamW steps) on the fast path against the default
               path (autograd and torch.optim.AdamW): the speed-up of the closed-form step
  larger       (only with --workload larger) n=64, m = 128 … 1024, 32 seeds, 7,500 steps

For each: seconds on 1 and 2 CPU threads, model-steps per second (seeds × steps / s), and the
measured counts against the prediction.

    python benchmarks/polysemanticity.py            # adamw_sweep, gd_sweep, noise, autograd on 1 and 2 threads
    python benchmarks/polysemanticity.py --quick    # 1 thread only
    python benchmarks/polysemanticity.py --workload larger --threads 1
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import time
from pathlib import Path

import torch
from _results import kept_rows, write_rows

from course_utils import polysemanticity as poly

RESULTS = Path(__file__).parent / "results" / "polysemanticity.json"
WIDTHS = [64, 128, 256, 512]
SWEEPS = {
    "adamw_sweep": dict(n=32, widths=WIDTHS, instances=32),
    "gd_sweep": dict(n=32, widths=WIDTHS, instances=32, optimizer="gd", l1=0.03, steps=3000),
    "larger": dict(n=64, widths=[128, 256, 512, 1024], instances=32),
}
NOTE = ("threads=2 rows mean something only on an otherwise idle machine; the notebook trains on one thread. "
        "load_average_1min shows how busy the machine was around each row.")


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def sweep_row(name: str, threads: int) -> dict:
    torch.set_num_threads(threads)
    spec = dict(SWEEPS[name])
    n, widths, instances = spec.pop("n"), spec.pop("widths"), spec.pop("instances")
    load = os.getloadavg()[0]
    start = time.perf_counter()
    sweep = poly.collision_sweep(n, widths, instances, device="cpu", progress=False, fast=True, **spec)
    seconds = time.perf_counter() - start
    steps = spec.get("steps", 7500)
    return dict(
        workload=name, threads=threads, seconds=round(seconds, 2),
        seconds_per_width={m: round(s, 2) for m, s in zip(widths, sweep.seconds)},
        model_steps_per_second={m: round(instances * steps / s) for m, s in zip(widths, sweep.seconds)},
        n=n, widths=widths, instances=instances, steps=steps,
        mean_polysemantic=[round(float(v), 3) for v in sweep.mean],
        prediction=[round(float(v), 3) for v in sweep.prediction],
        ratio=[round(float(v), 3) for v in sweep.mean / sweep.prediction],
        slope=round(sweep.slope(), 3),
        initial_argmax_wins=[round(float(v), 3) for v in sweep.win_rates.mean(dim=1)],
        load_average_1min=round(load, 2), peak_rss_mb=round(peak_rss_mb(), 1),
    )


def noise_row(threads: int) -> dict:
    torch.set_num_threads(threads)
    load = os.getloadavg()[0]
    start = time.perf_counter()
    final = {}
    for kind in ("bernoulli", "gaussian"):
        run = poly.train_autoencoders(8, 16, 16, l1=0.0, optimizer="gd", lr=0.02, steps=30_000, noise=kind,
                                      sigma=0.15, record_every=250, device="cpu", progress=False, fast=True)
        final[kind] = round(float(run.fourth_norm_history[-1].mean()), 3)
    seconds = time.perf_counter() - start
    return dict(workload="noise", threads=threads, seconds=round(seconds, 2),
                steps_per_second=round(2 * 30_000 / seconds), final_fourth_norm=final,
                load_average_1min=round(load, 2), peak_rss_mb=round(peak_rss_mb(), 1))


def autograd_row(threads: int, m: int = 512, instances: int = 32, steps: int = 500) -> dict:
    """train_autoencoders' fast path (the closed-form step) against its default path (autograd +
    torch.optim.AdamW), from one seed."""
    torch.set_num_threads(threads)
    n = 32
    options = dict(steps=steps, device="cpu", progress=False, record_every=steps)
    fused = poly.train_autoencoders(n, m, instances, fast=True, **options)
    plain = poly.train_autoencoders(n, m, instances, fast=False, **options)
    autograd_seconds = plain.seconds
    difference = float((plain.W - fused.W).abs().max())
    return dict(workload="autograd", threads=threads, m=m, instances=instances, steps=steps,
                fused_seconds=round(fused.seconds, 2), autograd_seconds=round(autograd_seconds, 2),
                speedup=round(autograd_seconds / fused.seconds, 2), max_abs_weight_difference=float(f"{difference:.2g}"),
                same_polysemantic_counts=bool(torch.equal(poly.polysemantic_neurons(plain.W),
                                                          poly.polysemantic_neurons(fused.W))))


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="one thread only")
    parser.add_argument("--threads", type=int, nargs="*", default=None)
    parser.add_argument("--workload", choices=["adamw_sweep", "gd_sweep", "noise", "autograd", "larger"],
                        nargs="*", default=None)
    args = parser.parse_args(argv)
    threads = args.threads or ([1] if args.quick else [1, 2])
    workloads = args.workload or ["adamw_sweep", "gd_sweep", "noise", "autograd"]
    rows = kept_rows(RESULTS, workloads, threads)  # a partial run keeps the rest
    for name in workloads:
        for t in threads:
            if name in SWEEPS:
                row = sweep_row(name, t)
            elif name == "noise":
                row = noise_row(t)
            else:
                row = autograd_row(t)
            print(json.dumps(row))
            rows.append(row)
    write_rows(RESULTS, rows, ["adamw_sweep", "gd_sweep", "noise", "autograd", "larger"], NOTE)
    assert all(math.isfinite(r.get("seconds", r.get("fused_seconds", 0))) for r in rows)


if __name__ == "__main__":
    main()
