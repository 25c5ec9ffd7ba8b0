"""Benchmark: training the batched toy model on the fast path (course_utils.toy_models.train(fast=True)).

Workloads (issue #2):
  (a) n=5 -> m=2, 8 instances, batch 1024, 5,000 steps, feature probability 0.05;
  (b) n=200 -> m=20, 20 instances, batch 1024, 10,000 steps, feature probability
      log-spaced from 1 to 0.01 over the instances (a sparsity sweep in one model);
  (c) chapter 02's live uniform sweep: n=60 -> m=6, 10 instances, 4,000 steps, feature
      probability log-spaced from 1 to 0.1;
  (d) chapter 02's committed uniform sweep (scripts/uniform_sweep.py): n=200 -> m=20,
      32 instances, 10,000 steps, feature probability log-spaced from 1 to 0.01.

For each: seconds and steps/s on 1 and 2 CPU threads (and on CUDA when present), and the
achieved GFLOP/s of the step's five matrix products (10 · batch · n · m flops per instance
per step) against a matmul peak measured in the same run on the same threads.

    python benchmarks/toy_models.py                 # full run, writes benchmarks/results/toy_models.json
    python benchmarks/toy_models.py --quick         # 10% of the steps, extrapolated (marked as such)
    python benchmarks/toy_models.py --workload b --threads 1

The figures in docs/benchmarks.md come from this script.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch

from course_utils.toy_models import ToyModel, train

WORKLOADS = {
    "a": dict(n=5, m=2, instances=8, batch=1024, steps=5_000),
    "b": dict(n=200, m=20, instances=20, batch=1024, steps=10_000),
    "c": dict(n=60, m=6, instances=10, batch=1024, steps=4_000),
    "d": dict(n=200, m=20, instances=32, batch=1024, steps=10_000),
}
# One CPU thread: (a), (b) from issue 2; (c) is chapter 02's share of its 3-minute budget;
# (d) is the script the chapter's file comes from (no budget of its own, kept under 8 minutes).
TARGETS_S = {"a": 5.0, "b": 240.0, "c": 40.0, "d": 480.0}


def feature_probability(name: str, instances: int) -> torch.Tensor:
    if name == "a":
        return torch.full((instances, 1), 0.05)
    if name == "c":
        return torch.logspace(0, -1, instances)[:, None]
    return torch.logspace(0, -2, instances)[:, None]


def matmul_peak_gflops(device: torch.device, size: int = 1024, repeats: int = 10) -> float:
    """Measured float32 matmul throughput on this device and thread count."""
    a = torch.randn(size, size, device=device)
    b = torch.randn(size, size, device=device)
    for _ in range(2):
        a @ b
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    if device.type == "cuda":
        torch.cuda.synchronize()
    return 2 * size**3 * repeats / (time.perf_counter() - start) / 1e9


def run(name: str, device: torch.device, threads: int | None, fraction: float) -> dict:
    spec = WORKLOADS[name]
    if threads is not None:
        torch.set_num_threads(threads)
    steps = max(1, int(spec["steps"] * fraction))
    model = ToyModel(spec["n"], spec["m"], spec["instances"], feature_probability=feature_probability(name, spec["instances"]),
                     device=device, generator=torch.Generator().manual_seed(0))
    train(model, steps=min(50, steps), progress=False, fast=True)  # warm-up: allocator, MKL, CUDA context
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    train(model, steps=steps, progress=False, fast=True)
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = (time.perf_counter() - start) * spec["steps"] / steps
    flops = 10 * spec["batch"] * spec["n"] * spec["m"] * spec["instances"] * spec["steps"]
    peak = matmul_peak_gflops(device)
    return dict(workload=name, device=str(device), threads=threads, steps=spec["steps"],
                measured_steps=steps, extrapolated=steps != spec["steps"], seconds=round(seconds, 2),
                steps_per_s=round(spec["steps"] / seconds, 1), gflops=round(flops / seconds / 1e9, 2),
                matmul_peak_gflops=round(peak, 1), target_s=TARGETS_S[name] if device.type == "cpu" and threads == 1 else None)


def run_baseline(name: str, threads: int, fraction: float) -> dict:
    """The straightforward loop for comparison: einsum forward, autograd, torch.optim.Adam,
    two torch.rand calls per batch, loss.item() and a tqdm update every step."""
    from tqdm import tqdm

    from course_utils.toy_models import generate_batch

    spec = WORKLOADS[name]
    torch.set_num_threads(threads)
    steps = max(1, int(spec["steps"] * fraction))
    model = ToyModel(spec["n"], spec["m"], spec["instances"], feature_probability=feature_probability(name, spec["instances"]),
                     device="cpu", generator=torch.Generator().manual_seed(0))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    start = time.perf_counter()
    for _ in tqdm(range(steps), disable=True):
        optimizer.zero_grad()
        x = generate_batch(model.feature_probability, spec["batch"])
        out = torch.relu(torch.einsum("ihf,ihg,ibg->ibf", model.W, model.W, x) + model.b[:, None, :])
        loss = (model.importance[:, None, :] * (x - out) ** 2).mean(dim=(1, 2)).sum()
        loss.backward()
        optimizer.step()
        loss.item()
    seconds = (time.perf_counter() - start) * spec["steps"] / steps
    flops = 10 * spec["batch"] * spec["n"] * spec["m"] * spec["instances"] * spec["steps"]
    return dict(workload=name, device="cpu (naive baseline)", threads=threads, steps=spec["steps"], measured_steps=steps,
                extrapolated=steps != spec["steps"], seconds=round(seconds, 2), steps_per_s=round(spec["steps"] / seconds, 1),
                gflops=round(flops / seconds / 1e9, 2), matmul_peak_gflops=round(matmul_peak_gflops(torch.device("cpu")), 1),
                target_s=None)


def markdown(rows: list[dict]) -> str:
    lines = ["| workload | device | threads | seconds | steps/s | GFLOP/s | matmul peak GFLOP/s | target (1 thread) |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        target = f"< {r['target_s']:g} s: {'met' if r['seconds'] < r['target_s'] else 'MISSED'}" if r["target_s"] else ""
        seconds = f"{r['seconds']:.2f}" + (" (extrapolated)" if r["extrapolated"] else "")
        lines.append(f"| ({r['workload']}) | {r['device']} | {r['threads'] or '-'} | {seconds} | {r['steps_per_s']:.0f} | "
                     f"{r['gflops']:.1f} | {r['matmul_peak_gflops']:.0f} | {target} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workload", choices=sorted(WORKLOADS), action="append")
    parser.add_argument("--threads", type=int, action="append", help="CPU thread counts (default: 1 and 2)")
    parser.add_argument("--quick", action="store_true", help="run 10%% of the steps and extrapolate")
    parser.add_argument("--no-cuda", action="store_true")
    parser.add_argument("--cuda-only", action="store_true",
                        help="only the CUDA rows (on a GPU machine); the results file keeps its CPU rows")
    parser.add_argument("--baseline", action="store_true",
                        help="also time a straightforward einsum + autograd loop on 1 thread (10%% of the steps, extrapolated)")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "toy_models.json")
    args = parser.parse_args(argv)
    fraction = 0.1 if args.quick else 1.0
    if args.cuda_only and (args.no_cuda or not torch.cuda.is_available()):
        parser.error("--cuda-only needs a CUDA GPU (and no --no-cuda)")
    rows = []
    for name in args.workload or sorted(WORKLOADS):
        for threads in [] if args.cuda_only else args.threads or [1, 2]:
            rows.append(run(name, torch.device("cpu"), threads, fraction))
            print(markdown(rows[-1:]).splitlines()[-1], flush=True)
        if args.baseline and not args.cuda_only:
            rows.append(run_baseline(name, 1, 0.1))
            print(markdown(rows[-1:]).splitlines()[-1], flush=True)
        if torch.cuda.is_available() and not args.no_cuda:
            rows.append(run(name, torch.device("cuda"), None, fraction))
            print(markdown(rows[-1:]).splitlines()[-1], flush=True)
    previous = json.loads(args.out.read_text()) if args.out.exists() else {}
    cpu = platform.processor() or platform.machine()
    gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else "none"
    versions = dict(torch=torch.__version__, cpu=cpu, gpu=gpu)
    if args.cuda_only:  # the CPU rows and their machine stay; the GPU machine is recorded beside them
        versions = {**{k: previous.get(k) for k in ("torch", "cpu")}, "gpu": gpu, "gpu_torch": torch.__version__}
    print(f"\ntorch {torch.__version__}, CPU: {cpu}, {torch.get_num_threads()} threads max, GPU: {gpu}\n")
    print(markdown(rows))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    # keep the rows this run did not measure: other workloads, and the other kind of device
    measured = {(r["workload"], r["device"].startswith("cuda")) for r in rows}
    kept = [r for r in previous.get("rows", []) if (r["workload"], r["device"].startswith("cuda")) not in measured]
    rows = sorted(kept + rows, key=lambda r: (r["workload"], r["device"].startswith("cuda")))
    args.out.write_text(json.dumps(dict(**versions, rows=rows), indent=2) + "\n")
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
