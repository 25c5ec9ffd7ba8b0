"""Benchmark: chapter 04's heaviest experiments (course_utils.computation), with the
notebook's settings.

Workloads:
  privileged   NeuronModel n=10, m=5, 5 densities × 2 seeds, 10,000 Adam steps, batch 256
  abs_sweep    AbsModel n=100, m=40, 6 sparsities, 5,000 Adam steps, batch 256, lr 3e-3 cosine,
               init_scale 0.1; monosemantic neurons and asymmetric motifs per sparsity
  residual     ResidualMLP (Braun et al.) with a random and an orthonormal embedding, 2,000 AdamW
               steps each, batch 2048; L/p trained and naive
  forward      the residual MLP's training step (batch 2048) with the associated forward pass
               (W_in W_E, W_Eᵀ W_out) against the literal residual stream: ms per step
  u_and        the notebook's U-AND measurements (m=200, d=1,000: error laws for l = 2…8 and the
               p sweep) and a larger construction (m=500, d=4,000: 124,750 ANDs)

    python benchmarks/computation.py            # all workloads on 1 and 2 threads
    python benchmarks/computation.py --quick    # 1 thread only
    python benchmarks/computation.py --workload residual forward --threads 1
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

from course_utils import computation as comp
from course_utils.toy_models import evaluate_loss, importance_decay, select_best, train

RESULTS = Path(__file__).parent / "results" / "computation.json"
WORKLOADS = ["privileged", "abs_sweep", "residual", "forward", "u_and"]
NOTE = ("threads=2 rows mean something only on an otherwise idle machine; the notebook trains on one thread. "
        "load_average_1min shows how busy the machine was around each row.")


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def privileged_row() -> dict:
    densities, seeds = torch.tensor([1.0, 0.3, 0.1, 0.03, 0.01]), 2
    model = comp.NeuronModel(10, 5, n_instances=len(densities) * seeds,
                             feature_probability=densities.repeat_interleave(seeds)[:, None],
                             importance=importance_decay(10, 0.75), device="cpu",
                             generator=torch.Generator().manual_seed(0))
    result = train(model, steps=10_000, batch_size=256, progress=False)
    W = model.W.detach()[select_best(model, evaluate_loss(model), seeds)]
    share = comp.neuron_monosemanticity(W)
    return dict(seconds=round(result.seconds, 2), model_steps_per_second=round(10 * 10_000 / result.seconds),
                density=[round(float(d), 3) for d in densities], monosemantic_neurons=(share > 0.9).sum(dim=1).tolist())


def abs_sweep_row() -> dict:
    S = torch.tensor([0.0, 0.5, 0.8, 0.9, 0.97, 0.99])
    model = comp.AbsModel(100, 40, n_instances=len(S), feature_probability=(1 - S)[:, None],
                          importance=importance_decay(100, 0.8), init_scale=0.1, device="cpu",
                          generator=torch.Generator().manual_seed(0))
    result = train(model, steps=5_000, batch_size=256, lr=3e-3, schedule="cosine", progress=False)
    share = comp.neuron_monosemanticity(model.W1.detach())
    W1, W2, b = (t.detach() for t in (model.W1, model.W2, model.b))
    return dict(seconds=round(result.seconds, 2), model_steps_per_second=round(len(S) * 5_000 / result.seconds),
                sparsity=[round(float(s), 2) for s in S], monosemantic_neurons=(share > 0.9).sum(dim=1).tolist(),
                asymmetric_motifs=[len(comp.asymmetric_motifs(W1[i], W2[i], b[i])) for i in range(len(S))])


def residual_row() -> dict:
    row = {}
    for embedding in ("random", "orthonormal"):
        model = comp.ResidualMLP(embedding=embedding, device="cpu", generator=torch.Generator().manual_seed(0))
        result = train(model, steps=2_000, batch_size=2048, lr=3e-3, schedule="cosine", weight_decay=0.01,
                       progress=False)
        x = model.generate_batch(100_000, torch.Generator().manual_seed(2))
        with torch.no_grad():
            row[embedding] = dict(seconds=round(result.seconds, 2), ms_per_step=round(1000 * result.seconds / 2_000, 2),
                                  trained_loss_over_p=round(float(model.loss(x)) / 0.01, 4),
                                  naive_loss_over_p=round(float(model.naive_baseline().loss(x)) / 0.01, 4))
    row["seconds"] = round(sum(r["seconds"] for r in row.values()), 2)
    return row


def literal_loss(model: comp.ResidualMLP, x: torch.Tensor) -> torch.Tensor:
    """The same model through the (batch, d_embed) residual stream, as the paper writes it."""
    r = torch.einsum("idn,ibn->ibd", model.W_E, x)
    r = r + torch.einsum("idh,ibh->ibd", model.W_out, torch.relu(torch.einsum("ihd,ibd->ibh", model.W_in, r)))
    return (torch.einsum("idn,ibd->ibn", model.W_E, r) - model.labels(x)).square().mean(dim=(1, 2))


def forward_row(steps: int = 100) -> dict:
    model = comp.ResidualMLP(device="cpu", generator=torch.Generator().manual_seed(0))
    optimizer = torch.optim.AdamW([model.W_in, model.W_out], lr=3e-3, weight_decay=0.01)
    gen = torch.Generator().manual_seed(1)
    timings = {}
    for name, loss_fn in (("associated", lambda x: model.loss(x)), ("literal", lambda x: literal_loss(model, x))):
        start = time.perf_counter()
        for _ in range(steps):
            optimizer.zero_grad(set_to_none=True)
            loss_fn(model.generate_batch(2048, gen)).sum().backward()
            optimizer.step()
        timings[name] = 1000 * (time.perf_counter() - start) / steps
    x = model.generate_batch(512, gen)
    with torch.no_grad():
        difference = float((model.loss(x) - literal_loss(model, x)).abs().max())
    return dict(seconds=round(sum(timings.values()) * steps / 1000, 2), steps=steps,
                ms_per_step_associated=round(timings["associated"], 2), ms_per_step_literal=round(timings["literal"], 2),
                speedup=round(timings["literal"] / timings["associated"], 2), max_loss_difference=float(f"{difference:.2g}"))


def u_and_row() -> dict:
    start = time.perf_counter()
    W = comp.u_and_wiring(200, 1_000, 0.1, torch.Generator().manual_seed(0))
    for l in range(2, 9):
        comp.measure_u_and_readoffs(W, l, batch=256, generator=torch.Generator().manual_seed(l))
    for p in (0.01, 0.02, 0.03, 0.05, 0.1):
        W_p = comp.u_and_wiring(200, 1_000, p, torch.Generator().manual_seed(1))
        comp.u_and_accuracy(W_p, 3, batch=128, generator=torch.Generator().manual_seed(2))
    notebook_seconds = time.perf_counter() - start
    m, d, p = 500, 4_000, 0.05
    start = time.perf_counter()
    W = comp.u_and_wiring(m, d, p, torch.Generator().manual_seed(3))
    accuracy = comp.u_and_accuracy(W, 3, batch=32, generator=torch.Generator().manual_seed(4))
    large_seconds = time.perf_counter() - start
    return dict(seconds=round(notebook_seconds + large_seconds, 2), notebook_seconds=round(notebook_seconds, 2),
                large=dict(m=m, d=d, p=p, ands=math.comb(m, 2), d_p2=round(d * p * p, 2), l=3,
                           uncovered=round(comp.uncovered_fraction(W), 4), accuracy=round(accuracy, 4),
                           seconds=round(large_seconds, 2)))


ROWS = {"privileged": privileged_row, "abs_sweep": abs_sweep_row, "residual": residual_row,
        "forward": forward_row, "u_and": u_and_row}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="one thread only")
    parser.add_argument("--threads", type=int, nargs="*", default=None)
    parser.add_argument("--workload", choices=WORKLOADS, nargs="*", default=None)
    args = parser.parse_args(argv)
    threads = args.threads or ([1] if args.quick else [1, 2])
    workloads = args.workload or WORKLOADS
    rows = kept_rows(RESULTS, workloads, threads)  # a partial run keeps the rest
    for name in workloads:
        for t in threads:
            torch.set_num_threads(t)
            load = os.getloadavg()[0]
            row = dict(workload=name, threads=t, **ROWS[name]())
            row.update(load_average_1min=round(load, 2), peak_rss_mb=round(peak_rss_mb(), 1))
            print(json.dumps(row))
            rows.append(row)
    write_rows(RESULTS, rows, WORKLOADS, NOTE)
    assert all(math.isfinite(r["seconds"]) for r in rows)


if __name__ == "__main__":
    main()
