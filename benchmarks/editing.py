"""Benchmark: knowledge editing on the shipped fact models (course_utils.rome, chapter 06).

Workloads, each on the "roomy" (d_mlp 512) and "superposed" (d_mlp 64) model, layer 0:

  covariance   estimate_key_covariance over the whole training text
  trace        average_trace: 40 known prompts × 5 noise samples (the chapter's setting)
  single_edit  rome_edit_model + edit_metrics + undo, 10 requests (seconds per edit)
  lifelong     lifelong_edit: the chapter's 100 edits in a row, ROME (kl_factor 0.5),
               recorded every 25 edits with 300 untouched prompts   target: <= 30 s on 1 thread
  memit        the same 100 requests in one MEMIT solve (lam 10)

CPU rows on one thread (the notebooks' setting); a CUDA row (threads 0) when a GPU is present.
The lifelong rows also record the chapter's outcome numbers (edits held, untouched facts, the
std of p(i, j)), so a slower or different run shows up here.

    python benchmarks/editing.py                      # every workload, both models
    python benchmarks/editing.py --workload lifelong
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

from course_utils import facts, rome

RESULTS = Path(__file__).parent / "results" / "editing.json"
WORKLOADS = ["covariance", "trace", "single_edit", "lifelong", "memit"]
TARGET_S = {"lifelong": 30.0}
NOTE = ("seconds: wall time of one run of each workload on one model (single_edit: per edit); threads=0 is the "
        "CUDA row.  load_average_1min shows how busy the machine was around each row.")


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run(workload: str, name: str, device: str) -> dict:
    model, fs, vocab = facts.load_fact_model(name, device=device)
    model.eval()
    start = time.perf_counter()
    C = rome.estimate_key_covariance(model, facts.EDIT_LAYER, fs.training_tokens(), pad_id=vocab.index["."])
    if workload == "covariance":
        return dict(seconds=round(time.perf_counter() - start, 3))
    if workload == "trace":
        start = time.perf_counter()
        avg = facts.average_trace(model, fs.prompts("all"), n=40, samples=5, seed=0)
        effect = float(avg["effects"]["mlp"][facts.EDIT_LAYER, facts.TRACE_CATEGORIES.index("last subject")])
        return dict(seconds=round(time.perf_counter() - start, 3), subject_mlp_effect=round(effect, 3))
    requests = rome.lifelong_requests(fs, 100, seed=0)
    untouched = rome.untouched_prompts(fs, requests, n=300)
    if workload == "single_edit":
        start = time.perf_counter()
        scores = []
        for q in rome.lifelong_requests(fs, 10, seed=1):
            out = rome.rome_edit_model(model, facts.EDIT_LAYER, q, C)
            scores.append(rome.edit_metrics(model, q)["efficacy"])
            rome.undo_edit(model, facts.EDIT_LAYER, out["delta_W"])
        return dict(seconds=round((time.perf_counter() - start) / 10, 3), efficacy=sum(scores) / 10)
    method = {"lifelong": dict(method="rome", record_every=25), "memit": dict(method="memit", lam=10.0,
                                                                               record_every=100)}[workload]
    res = rome.lifelong_edit(model, requests, facts.EDIT_LAYER, C, untouched=untouched, **method)
    row = dict(seconds=round(res["seconds"], 3), edits_held=res["retention"][-1],
               untouched_accuracy=res["untouched_accuracy"][-1], p_std=round(res["p_stats"]["std"], 4))
    if workload == "lifelong":
        row["edits_taken"] = sum(res["efficacy_when_made"]) / len(requests)
    return row


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workload", choices=WORKLOADS, nargs="*", default=None)
    parser.add_argument("--no-cuda", action="store_true")
    parser.add_argument("--cuda-only", action="store_true",
                        help="only the CUDA rows (on a GPU machine); the results file keeps its CPU rows")
    args = parser.parse_args(argv)
    workloads = args.workload or WORKLOADS
    cuda = torch.cuda.is_available() and not args.no_cuda
    if args.cuda_only and (args.no_cuda or not torch.cuda.is_available()):
        parser.error("--cuda-only needs a CUDA GPU (and no --no-cuda)")
    rows = [r for r in kept_rows(RESULTS, workloads, ([] if args.cuda_only else [1]) + ([0] if cuda else []))]
    for workload in workloads:
        for name in ("roomy", "superposed"):
            for threads, device in ([] if args.cuda_only else [(1, "cpu")]) + ([(0, "cuda")] if cuda else []):
                if threads:
                    torch.set_num_threads(threads)
                load = os.getloadavg()[0]
                row = dict(workload=workload, model=name, threads=threads,
                           device=device if device == "cpu" else f"cuda ({torch.cuda.get_device_name()})",
                           **run(workload, name, device))
                if workload in TARGET_S and threads == 1:
                    row.update(target_s=TARGET_S[workload], target_met=row["seconds"] <= TARGET_S[workload])
                row.update(load_average_1min=round(load, 2), peak_rss_mb=round(peak_rss_mb(), 1))
                print(json.dumps(row), flush=True)
                rows.append(row)
    rows = [r for r in rows if "model" in r]
    rows.sort(key=lambda r: (WORKLOADS.index(r["workload"]), r["model"], r["threads"]))
    write_rows(RESULTS, rows, WORKLOADS, NOTE, cuda_only=args.cuda_only)
    assert all(math.isfinite(r["seconds"]) for r in rows)


if __name__ == "__main__":
    main()
