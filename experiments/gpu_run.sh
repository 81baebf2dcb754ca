#!/usr/bin/env bash
# One full GPU session (run on the device machine from the repo root, with .offline/ carried):
# installs the offline bundle, runs the GPU tests, the benchmarks, the reports and the notebook, and
# writes everything under $OUT (at most 8 files come back).
#   bash experiments/gpu_run.sh [tests|bench|notebook|all ...]      (default: all)
set -uo pipefail
OUT=${OUT:-/tmp/posefuse_out}; mkdir -p "$OUT"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .offline/whl/*.whl \
  >"$OUT/install.log" 2>&1 || { cat "$OUT/install.log"; exit 1; }
export PYTHONPATH=/tmp/site:$PWD POSEFUSE_DATA=$PWD/.offline/data PYTHONUNBUFFERED=1 YOLO_OFFLINE=1 MPLBACKEND=Agg
steps=${*:-all}
rc=0
{ nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv; python3 -c "import torch,cupy,numba,cv2;print('torch',torch.__version__,'cupy',cupy.__version__,'numba',numba.__version__,'cv2',cv2.__version__)"; } >"$OUT/env.txt" 2>&1
if [[ $steps == *tests* || $steps == all ]]; then
  python3 -m pytest -m gpu -q -p no:cacheprovider --timeout=300 tests --ignore=tests/benchmarks 2>&1 | tee "$OUT/gpu_tests.log" | tail -40
  rc=$((rc | ${PIPESTATUS[0]}))
fi
if [[ $steps == *bench* || $steps == all ]]; then
  cmd="pytest tests/benchmarks/test_bench_kernels.py --benchmark-only --benchmark-json=bench_kernels.json"
  python3 -m pytest tests/benchmarks/test_bench_kernels.py --benchmark-only -p no:cacheprovider --timeout=600 \
    --benchmark-json="$OUT/bench_kernels.json" --benchmark-columns=median,rounds 2>&1 | tee "$OUT/bench.log" | tail -15
  rc=$((rc | ${PIPESTATUS[0]}))
  python3 experiments/bench_report.py "$OUT/bench_kernels.json" --name kernels --command "$cmd" --out-dir results && cp results/kernels.json results/kernels.md "$OUT/"
fi
if [[ $steps == *notebook* || $steps == all ]]; then
  python3 experiments/run_notebook.py experiments/compare_kernels.ipynb --out "$OUT/compare_kernels.ipynb" 2>&1 | tail -30
  rc=$((rc | ${PIPESTATUS[0]}))
fi
exit $rc
