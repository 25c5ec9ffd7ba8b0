"""Benchmark: each chapter notebook run top to bottom, as a learner (or nbval) runs it.

Prints and records wall seconds and the kernel's peak resident memory for every
solutions/NN_*.ipynb (the full chapter) and chapters/NN_*.ipynb (the learner version, with
stubs).  Budgets (issue #2): under 3 minutes and 2 GB on the 2-core course machine.

    python benchmarks/notebooks.py [NOTEBOOK ...]   # default: every chapter, both versions
                                                    # (named notebooks replace only their own rows)
    python benchmarks/notebooks.py --out F NB ...   # write the rows to F instead (the GPU check's
                                                    # rows, benchmarks/results/notebooks_cuda.json)
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from course_utils import CHAPTER_GLOB
from course_tools.build import measure_notebook

ROOT = Path(__file__).resolve().parents[1]
BUDGET_S, BUDGET_MB = 180, 2048


def main(argv: list[str]) -> int:
    out = ROOT / "benchmarks" / "results" / "notebooks.json"
    if argv[:1] == ["--out"]:
        out, argv = Path(argv[1]), argv[2:]
    import torch

    device = torch.cuda.get_device_name() if torch.cuda.is_available() else None  # what get_device() picks
    paths = [Path(p) for p in argv] or sorted(ROOT.glob(f"solutions/{CHAPTER_GLOB}.ipynb")) + sorted(
        ROOT.glob(f"chapters/{CHAPTER_GLOB}.ipynb"))
    rows = []
    print("| notebook | seconds | peak memory (MB) | within budget |\n|---|---|---|---|")
    for path in paths:
        nb, seconds, peak = measure_notebook(path)
        errors = sum(o.get("output_type") == "error" for c in nb.cells for o in c.get("outputs", []))
        ok = seconds < BUDGET_S and peak < BUDGET_MB and not errors
        name = str(path.resolve().relative_to(ROOT))
        rows.append(dict(notebook=name, seconds=round(seconds, 1), peak_mb=round(peak), errors=errors,
                         **({"device": f"cuda ({device})"} if device else {})))
        print(f"| {name} | {seconds:.1f} | {peak:.0f} | {'yes' if ok else 'NO'}{f' ({errors} errors)' if errors else ''} |",
              flush=True)
        for cell in nb.cells:  # the first error, so a failure on another machine can be read from the log
            error = next((o for o in cell.get("outputs", []) if o.get("output_type") == "error"), None)
            if error:
                print(f"  first error: {error['ename']}: {error['evalue']}\n  in cell: {cell.source[:300]!r}")
                break
    out.parent.mkdir(parents=True, exist_ok=True)
    measured = {row["notebook"] for row in rows}
    kept = [row for row in (json.loads(out.read_text()) if out.exists() else []) if row["notebook"] not in measured]
    rows = sorted(kept + rows, key=lambda row: (not row["notebook"].startswith("solutions"), row["notebook"]))
    out.write_text(json.dumps(rows, indent=2) + "\n")  # a partial run keeps the other notebooks' rows
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
