"""Before and after in one run: the same benchmark workloads at two commits, interleaved.

Checks each commit out into a temporary git worktree, then runs each commit's own benchmark
scripts (so an API that changed between the two is still measured as it is called) on the
workloads below, one CPU thread.  Each workload runs on the two commits back to back, the
order alternating every round, so that a machine whose speed drifts during the run (this
one's varies by a quarter over minutes) does not favour either.  Every
timed quantity (each JSON field named ``*seconds``) is reported as the best over rounds,
with the change from the base commit; a change above ``--tolerance`` (5 %) is flagged.

    python benchmarks/compare.py BASE [HEAD] [--rounds 3] [--json benchmarks/results/compare.json]

Workloads (a few minutes per commit and round, on 1 thread):
  toy_models   (a) with the naive baseline, and (c): the fused toy-model trainer
  scaling      the chapter-02 notebook sweep
  polysemanticity  gradient-descent sweep, noise runs, fast step against autograd
  sae          every SAE architecture, best of 3
  computation  privileged basis and the residual MLP
  editing      single ROME edits and 100 lifelong edits
  lm           ``train_lm``: 150 steps of the chapter-05 GPT on a generated corpus
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

# (name, script args, the results file it writes, relative to the tree)
SCRIPTS = [
    ("toy_models", ["benchmarks/toy_models.py", "--workload", "a", "--threads", "1", "--no-cuda", "--baseline",
                    "--out", "{out}/toy_models_a.json"], "{out}/toy_models_a.json"),
    ("toy_models", ["benchmarks/toy_models.py", "--workload", "c", "--threads", "1", "--no-cuda",
                    "--out", "{out}/toy_models_c.json"], "{out}/toy_models_c.json"),
    ("scaling", ["benchmarks/scaling.py", "--workload", "notebook", "--threads", "1", "--seeds", "1",
                 "--out", "{out}/scaling.json"], "{out}/scaling.json"),
    ("polysemanticity", ["benchmarks/polysemanticity.py", "--threads", "1", "--workload", "gd_sweep", "noise",
                         "autograd"], "benchmarks/results/polysemanticity.json"),
    ("sae", ["benchmarks/sae.py", "--threads", "1", "--no-cuda"], "benchmarks/results/sae.json"),
    ("computation", ["benchmarks/computation.py", "--threads", "1", "--workload", "privileged", "residual"],
     "benchmarks/results/computation.json"),
    ("editing", ["benchmarks/editing.py", "--no-cuda", "--workload", "single_edit", "lifelong"],
     "benchmarks/results/editing.json"),
]

LM_SNIPPET = """
import json, sys, time, torch
from course_utils import lm
generate_corpus = getattr(lm, "generate_corpus", None)  # before course_utils.language existed
if generate_corpus is None:
    from course_utils.language import generate_corpus
corpus = generate_corpus(2_000, seed=0)
torch.manual_seed(0)
model = lm.GPT(lm.GPTConfig(vocab_size=len(corpus.vocab), n_ctx=corpus.tokens.shape[1]))
start = time.perf_counter()
result = lm.train_lm(model, corpus, steps=150, progress=False)
seconds = time.perf_counter() - start
json.dump({"rows": [{"workload": "train_lm_150", "threads": 1, "seconds": round(seconds, 3),
                     "final_loss": result.loss[-1]}]}, open(sys.argv[1], "w"))
"""

KEY_FIELDS = ("workload", "architecture", "model", "trainer", "threads", "device", "seed")


def _env(tree: Path) -> dict:
    env = dict(os.environ, PYTHONPATH=str(tree), SUPERPOSITION_THREADS="1", OMP_NUM_THREADS="1",
               MKL_NUM_THREADS="1", CUDA_VISIBLE_DEVICES="")
    return env


def _rows(path: Path) -> list[dict]:
    return json.loads(path.read_text()).get("rows", []) if path.exists() else []


def _timings(script: str, rows: list[dict], workloads: set[str] | None) -> dict[str, float]:
    """{'script / key / field': seconds} for every *seconds field of every row."""
    found = {}
    for row in rows:
        if workloads and str(row.get("workload")) not in workloads:
            continue
        key = ", ".join(f"{k}={row[k]}" for k in KEY_FIELDS if k in row and not isinstance(row[k], (list, dict)))
        for field, value in row.items():
            if field.endswith("seconds") and isinstance(value, (int, float)) and field != "data_seconds":
                found[f"{script} | {key} | {field}"] = float(value)
    return found


def run_workload(tree: Path, out: Path, workload) -> dict[str, float]:
    """One workload (an entry of SCRIPTS, or "lm") once on ``tree``; returns its timings."""
    out.mkdir(parents=True, exist_ok=True)
    if workload == "lm":
        lm_out = out / "lm.json"
        done = subprocess.run([sys.executable, "-c", LM_SNIPPET, str(lm_out)], cwd=tree, env=_env(tree),
                              capture_output=True, text=True)
        if done.returncode:
            print(f"  lm failed in {tree}:\n{done.stderr[-3000:]}", file=sys.stderr)
            return {}
        return _timings("lm", _rows(lm_out), None)
    name, args, results = workload
    results_path = tree / results.format(out=out)
    if results_path.exists():
        results_path.unlink()  # read back only this run's rows
    command = [sys.executable] + [a.format(out=out) for a in args]
    done = subprocess.run(command, cwd=tree, env=_env(tree), capture_output=True, text=True)
    if done.returncode:
        print(f"  {name} failed in {tree}:\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}", file=sys.stderr)
        return {}
    wanted = {args[j + 1] for j, a in enumerate(args) if a == "--workload"}
    if "--workload" in args:  # nargs="*" style: every value after the flag
        i = args.index("--workload")
        for a in args[i + 1:]:
            if a.startswith("--"):
                break
            wanted.add(a)
    return _timings(name, _rows(results_path), wanted or None)


def worktree(commit: str, where: Path) -> Path:
    path = where / commit
    subprocess.run(["git", "worktree", "add", "--detach", "-f", str(path), commit], cwd=REPO, check=True,
                   capture_output=True)
    return path


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("base")
    parser.add_argument("head", nargs="?", default="HEAD")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--tolerance", type=float, default=0.05)
    parser.add_argument("--json", type=Path, default=REPO / "benchmarks" / "results" / "compare.json")
    args = parser.parse_args(argv)
    commits = [subprocess.run(["git", "rev-parse", "--short", c], cwd=REPO, check=True, capture_output=True,
                              text=True).stdout.strip() for c in (args.base, args.head)]
    best: dict[str, dict[str, float]] = {c: {} for c in commits}
    with tempfile.TemporaryDirectory(prefix="bench-compare-") as tmp:
        trees = {c: worktree(c, Path(tmp)) for c in commits}
        try:
            for r in range(args.rounds):
                for w, workload in enumerate(SCRIPTS + ["lm"]):
                    for c in (commits if (r + w) % 2 == 0 else commits[::-1]):
                        found = run_workload(trees[c], Path(tmp) / f"out-{c}-{r}-{w}", workload)
                        for key, value in found.items():
                            best[c][key] = min(value, best[c].get(key, float("inf")))
                    print(f"round {r + 1}: {workload if workload == 'lm' else workload[0]} done", flush=True)
        finally:
            for tree in trees.values():
                subprocess.run(["git", "worktree", "remove", "--force", str(tree)], cwd=REPO, capture_output=True)
    base, head = commits
    lines = [f"| workload | {base} (s) | {head} (s) | change |", "|---|---|---|---|"]
    rows, slower = [], []
    for key in sorted(set(best[base]) | set(best[head])):
        a, b = best[base].get(key), best[head].get(key)
        change = (b - a) / a if a and b is not None else None
        flag = change is not None and change > args.tolerance
        if flag:
            slower.append(key)
        rows.append(dict(workload=key, base=a, head=b, change=change))
        fmt = lambda v: "—" if v is None else f"{v:.3g}"  # noqa: E731
        lines.append(f"| {key} | {fmt(a)} | {fmt(b)} | "
                     f"{'—' if change is None else f'{change:+.1%}'}{' **slower**' if flag else ''} |")
    print("\n".join(lines))
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(dict(base=base, head=head, rounds=args.rounds, tolerance=args.tolerance,
                                         rows=rows), indent=1) + "\n")
    print(f"wrote {args.json}; {len(slower)} timing(s) more than {args.tolerance:.0%} slower")
    return 0


if __name__ == "__main__":
    sys.exit(main())
