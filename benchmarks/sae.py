"""Benchmark: SAE training throughput (course_utils.sae), one row per architecture.

Workload: d_in = 64, 512 latents, one pass over 200,000 inputs in batches of 4,096 (49 Adam
steps, the last of 3,392 inputs), lr 1e-3, through ``train_sae(..., fast=True)``, the fast
path the chapters train with (progress bar off, loss pieces logged every step); the plain
path, ``train_sae(..., fast=False)`` (each loss built on decode(encode(x))), is timed the same
way into plain_seconds.  The inputs are drawn once beforehand from ``SyntheticFeatures(256, 64)``
(256 true features, 5 active on average; the draw is timed separately as data_seconds).
Architectures and their settings:

  relu       ReLUSAE, l1_coefficient 0.3          target: <= 1.5 s on 1 thread
  topk       TopKSAE, k = 8 (AuxK on)             target: <= 1.5 s on 1 thread
  batchtopk  BatchTopKSAE, k = 8
  jumprelu   JumpReLUSAE, the course defaults
  gated      GatedSAE, the course defaults

Each row is the best of ``--repeats`` timed runs (all listed in seconds_runs), each on a fresh
SAE after one untimed warm-up pass over 8,192 inputs; plain_seconds likewise (``--no-plain``
skips it).  CPU rows on 1 and 2 threads; a CUDA row (threads 0) is added when a GPU is
present.

    python benchmarks/sae.py                      # every architecture, 1 and 2 threads (+ CUDA)
    python benchmarks/sae.py --quick              # 1 thread only
    python benchmarks/sae.py --workload relu topk --threads 1
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

from course_utils.sae import SyntheticFeatures, make_sae, train_sae

RESULTS = Path(__file__).parent / "results" / "sae.json"
WORKLOADS = ["relu", "topk", "batchtopk", "jumprelu", "gated"]
SETTINGS = {"relu": dict(l1_coefficient=0.3), "topk": dict(k=8), "batchtopk": dict(k=8), "jumprelu": {}, "gated": {}}
TARGET_S = {"relu": 1.5, "topk": 1.5}  # on one CPU thread
D_IN, N_LATENTS, SAMPLES, BATCH, LR = 64, 512, 200_000, 4_096, 1e-3
NOTE = ("seconds: the best of the timed runs of train_sae(fast=True) over 200,000 inputs (d_in 64, 512 latents, "
        "batch 4,096); plain_seconds: the same with fast=False (the paper's code, decode(encode(x))); "
        "threads=0 is the CUDA row.  threads=2 rows mean something only on an otherwise idle machine; the "
        "notebooks train on one thread.  load_average_1min shows how busy the machine was around each row.")


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def inputs(device: torch.device) -> tuple[torch.Tensor, float]:
    data = SyntheticFeatures(256, D_IN, device="cpu", generator=torch.Generator().manual_seed(0))
    start = time.perf_counter()
    x = data.sample(SAMPLES, torch.Generator().manual_seed(1))
    return x.to(device), time.perf_counter() - start


def time_runs(name: str, x: torch.Tensor, device: torch.device, repeats: int, fast: bool):
    """(seconds of each timed run, the last run's result), after one untimed warm-up."""
    def fresh():
        return make_sae(name, D_IN, N_LATENTS, device=device, generator=torch.Generator().manual_seed(0),
                        **SETTINGS[name])

    train_sae(fresh(), x[:8_192], samples=8_192, batch_size=BATCH, lr=LR, progress=False, fast=fast)  # warm-up
    runs, result = [], None
    for _ in range(repeats):
        result = train_sae(fresh(), x, samples=SAMPLES, batch_size=BATCH, lr=LR, progress=False, fast=fast)
        runs.append(result.seconds)
    return runs, result


def time_training(name: str, x: torch.Tensor, device: torch.device, repeats: int, plain: bool = True) -> dict:
    runs, result = time_runs(name, x, device, repeats, fast=True)
    best = min(runs)
    steps = len(result.steps)
    row = dict(seconds=round(best, 3), seconds_runs=[round(s, 3) for s in runs], steps=steps,
               ms_per_step=round(1000 * best / steps, 2), samples_per_second=round(SAMPLES / best),
               final_mse=round(result.final["mse"], 4), final_l0=round(result.final["l0"], 2))
    if plain:
        plain_runs, plain_result = time_runs(name, x, device, repeats, fast=False)
        row.update(plain_seconds=round(min(plain_runs), 3), plain_seconds_runs=[round(s, 3) for s in plain_runs],
                   plain_final_mse=round(plain_result.final["mse"], 4))
    return row


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="one thread only")
    parser.add_argument("--threads", type=int, nargs="*", default=None)
    parser.add_argument("--workload", choices=WORKLOADS, nargs="*", default=None)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-cuda", action="store_true")
    parser.add_argument("--cuda-only", action="store_true",
                        help="only the CUDA rows (on a GPU machine); the results file keeps its CPU rows")
    parser.add_argument("--no-plain", action="store_true", help="time only the fast path")
    args = parser.parse_args(argv)
    threads = [] if args.cuda_only else args.threads or ([1] if args.quick else [1, 2])
    workloads = args.workload or WORKLOADS
    cuda = torch.cuda.is_available() and not args.no_cuda
    if args.cuda_only and (args.no_cuda or not torch.cuda.is_available()):
        parser.error("--cuda-only needs a CUDA GPU (and no --no-cuda)")
    rows = kept_rows(RESULTS, workloads, threads + ([0] if cuda else []))  # a partial run keeps the rest
    cpu_x, data_seconds = inputs(torch.device("cpu"))
    for name in workloads:
        for t in threads:
            torch.set_num_threads(t)
            load = os.getloadavg()[0]
            row = dict(workload=name, threads=t, device="cpu", **time_training(name, cpu_x, torch.device("cpu"),
                                                                              args.repeats, not args.no_plain))
            if name in TARGET_S and t == 1:
                row.update(target_s=TARGET_S[name], target_met=row["seconds"] <= TARGET_S[name])
            row.update(data_seconds=round(data_seconds, 3), load_average_1min=round(load, 2),
                       peak_rss_mb=round(peak_rss_mb(), 1))
            print(json.dumps(row), flush=True)
            rows.append(row)
        if cuda:
            gpu_x = cpu_x.to("cuda")
            row = dict(workload=name, threads=0, device=f"cuda ({torch.cuda.get_device_name()})",
                       **time_training(name, gpu_x, torch.device("cuda"), args.repeats, not args.no_plain))
            print(json.dumps(row), flush=True)
            rows.append(row)
    write_rows(RESULTS, rows, WORKLOADS, NOTE, cuda_only=args.cuda_only)
    assert all(math.isfinite(r["seconds"]) for r in rows)


if __name__ == "__main__":
    main()
