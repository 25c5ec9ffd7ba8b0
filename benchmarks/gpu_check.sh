#!/usr/bin/env bash
# The course's GPU path in one prepared run, for a machine with a CUDA GPU (CI has none):
#
#     bash benchmarks/gpu_check.sh OUTDIR
#
# 1. pytest -m gpu (tests/test_course_gpu.py and the SAE's CUDA tests);
# 2. the CUDA rows of the toy-model, SAE and editing benchmarks (--cuda-only: the results
#    files keep their CPU rows and record the GPU machine beside them);
# 3. three chapters top to bottom on the GPU (get_device() picks CUDA), timed, with chapter
#    07's committed sweep (scripts/memorization_sweep.py, 506 s of one CPU thread) re-trained
#    on CUDA beside them and compared with the committed file.
# Each step has its own time limit, so a slow step cannot cost the others their output.
# Everything written lands in OUTDIR: log.txt, the three results files, notebooks_cuda.json,
# memorization_sweep_cuda.npz.  docs/benchmarks.md ("The GPU path") reports the last run.
set -uo pipefail
out=$(realpath -m "${1:-build/gpu}")
mkdir -p "$out"
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
exec > >(tee "$out/log.txt") 2>&1
step() { echo; echo "==> $* ($(date +%T))"; }

step "machine"
nvidia-smi -L
python3 -c "import sys, torch; print(sys.version.split()[0], 'torch', torch.__version__, torch.cuda.get_device_name())"

step "pytest -m gpu"
timeout 200 python3 -m pytest -m gpu -q -p no:cacheprovider tests/test_course_gpu.py tests/test_ch05a_sae.py --durations=5

step "benchmarks, CUDA rows"
timeout 120 python3 benchmarks/toy_models.py --cuda-only
timeout 60 python3 benchmarks/sae.py --cuda-only
timeout 120 python3 benchmarks/editing.py --cuda-only
cp benchmarks/results/toy_models.json benchmarks/results/sae.json benchmarks/results/editing.json "$out/"

step "chapter 07's committed sweep on CUDA (in the background) and three chapters on the GPU"
( timeout 240 python3 scripts/memorization_sweep.py --quiet --out "$out/memorization_sweep_cuda.npz" \
  && python3 - "$out/memorization_sweep_cuda.npz" <<'EOF'
import sys
import numpy as np
new, old = np.load(sys.argv[1]), np.load("course_utils/data/memorization_sweep.npz")
print(f"sweep on CUDA: {float(new['seconds']):.1f} s (the committed CPU run: {float(old['seconds']):.1f} s)")
for key in ("test_loss", "data_D", "feature_D"):
    print(key, "CUDA", np.round(new[key], 3).tolist(), "\n", " " * len(key), "CPU ", np.round(old[key], 3).tolist())
print("T x m map peaks: CUDA", np.round(new["test_loss_map"].max(1), 2).tolist(),
      "CPU", np.round(old["test_loss_map"].max(1), 2).tolist())
EOF
) > "$out/sweep.log" 2>&1 &
sweep=$!
timeout 300 python3 benchmarks/notebooks.py --out "$out/notebooks_cuda.json" \
    solutions/01_toy_models.ipynb solutions/07_memorization.ipynb solutions/05a_sparse_autoencoders.ipynb
wait $sweep
cat "$out/sweep.log"; rm -f "$out/sweep.log"
step "done"
