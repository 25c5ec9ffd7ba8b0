"""Shared by the benchmark scripts: keep the rows a partial run does not redo, and write the
results file with the machine's description."""

from __future__ import annotations

import json
import os
import platform
from pathlib import Path

import torch


def kept_rows(path: Path, workloads: list[str], threads: list[int]) -> list[dict]:
    """The rows of an earlier run that this run (these workloads × threads) does not replace."""
    previous = json.loads(path.read_text()) if path.exists() else {}
    return [r for r in previous.get("rows", []) if not (r["workload"] in workloads and r["threads"] in threads)]


def machine() -> dict:
    return {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
            "cpus": os.cpu_count(), "torch": torch.__version__}


def write_rows(path: Path, rows: list[dict], order: list[str], note: str, cuda_only: bool = False) -> None:
    """Write ``rows``.  ``cuda_only``: this run measured only CUDA rows (threads 0) on a GPU
    machine, so the file keeps the CPU machine's description and records the GPU's beside it."""
    rows.sort(key=lambda r: (order.index(r["workload"]), r["threads"]))
    path.parent.mkdir(exist_ok=True)
    previous = json.loads(path.read_text()) if path.exists() else {}
    described = {"machine": previous.get("machine", machine()), "cuda_machine": {
        **machine(), "gpu": torch.cuda.get_device_name()}} if cuda_only else {
        "machine": machine(), **({"cuda_machine": previous["cuda_machine"]} if "cuda_machine" in previous else {})}
    path.write_text(json.dumps({**described, "note": note, "rows": rows}, indent=1) + "\n")
    print(f"wrote {path}")
