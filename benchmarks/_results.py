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


def write_rows(path: Path, rows: list[dict], order: list[str], note: str) -> None:
    rows.sort(key=lambda r: (order.index(r["workload"]), r["threads"]))
    path.parent.mkdir(exist_ok=True)
    path.write_text(json.dumps({
        "machine": {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
                    "cpus": os.cpu_count(), "torch": torch.__version__},
        "note": note, "rows": rows,
    }, indent=1) + "\n")
    print(f"wrote {path}")
