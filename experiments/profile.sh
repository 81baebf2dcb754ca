#!/usr/bin/env bash
# Profiling posefuse by stage (NVTX domain "posefuse": letterbox, backbone, head_decode, nms, rescale, d2h).
#
# Nsight Systems timeline (where nsys can write reports; it could not on the lent GPU machine):
#   nsys profile -t cuda,nvtx,osrt -s none -o posefuse python experiments/profile_stages.py
#
# Nsight Compute, one stage's kernels selected by NVTX range (what this script runs; output to $1):
#   ncu --nvtx --nvtx-include "posefuse@letterbox/" --section SpeedOfLight python experiments/profile_stages.py
set -uo pipefail
out=${1:-results/ncu_nvtx.txt}
: > "$out"
for stage in letterbox backbone head_decode nms rescale; do
  count=$([[ $stage == backbone ]] && echo 6 || echo 2)
  {
    echo "=================================================================================="
    echo "ncu --nvtx --nvtx-include \"posefuse@${stage}/\" --launch-count $count --section SpeedOfLight python experiments/profile_stages.py --batches 2"
    echo "=================================================================================="
  } >> "$out"
  ncu --nvtx --nvtx-include "posefuse@${stage}/" --launch-count "$count" --section SpeedOfLight \
    python3 experiments/profile_stages.py --batches 2 >> "$out" 2>&1
done
grep -E "^  [a-zA-Z_].*\(|==PROF==|Duration|DRAM Throughput" "$out" | head -60
