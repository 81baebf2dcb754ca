#!/usr/bin/env bash
# One full GPU session on the device machine (repo root, .offline/ carried): installs the offline bundle
# (built with: EXTRA_PKGS="lap==0.5.12" bash ../shared/tools/offline-bundle.sh; RAY=1 adds Ray for the ray step;
# the clips made from the sample with: POSEFUSE_DATA=.offline/data python3 experiments/crowd_clip.py --make-all),
# then runs the steps asked for, in the order given (default: all, in this order):
#   tests     pytest -m gpu (kernels, pipeline)           -> results/gpu_tests.md (a line appended)
#   bench     kernel + pipeline (+ runners, track) benchmarks -> results/{kernels,pipeline,runner_benchmarks,track}.{json,md}
#   accuracy  experiments/accuracy.py                     -> results/accuracy.json
#   ncu       experiments/profile.sh (ncu by NVTX range)  -> results/ncu_nvtx.txt
#   notebook  experiments/run_notebook.py                 -> experiments/compare_kernels.ipynb (executed)
#   probe     experiments/nvdec_probe.py (decoder buffer reuse)  -> logs/nvdec_probe.json
#   nvdecmem  experiments/nvdec_memory.py [NVDECMEM_ARGS] (the card's memory per NVDEC decoder and per decode host)
#             -> results/nvdec_memory.{json,md}
#   gilprobe  experiments/decode_gil_probe.py (decoders' GIL share, ThreadedDecoder)  -> logs/decode_gil_probe.json
#   regress   experiments/regression.py --old .old [REGRESS_ARGS] (an old checkout, carried as .old/, beside this one)
#             -> results/regression.{json,md}
#   startup   experiments/startup.py [STARTUP_ARGS, shell-quoted] (user jobs as processes, beside Ultralytics) -> results/startup.{json,md}
#   probe0    experiments/startup_probe.py [PROBE_ARGS] (start-up step by step) -> results/startup_probe.{json,md}
#   intake    experiments/paced_intake.py [INTAKE_ARGS] (a live run's paced CPU decode hosts alone, no model, by the
#             number of hosts) -> results/paced_intake.{json,md}
#   ray       experiments/ray_bench.py --gpu [RAY_ARGS] (needs .offline/ray.tar.xz: RAY=1 offline-bundle.sh) -> results/ray.{json,md}
#   runners   experiments/runners_bench.py [RUNNERS_ARGS]  -> results/runners.{json,md}
#   oldrunners  the same on the old checkout carried as .old/ (regress) -> logs/old/runners.{json,md}
#   mps       experiments/context_probe.py (the pipeline beside other processes' copies), then with every CUDA
#             process a client of one MPS server (a control daemon started here, as this user, in /tmp/mps; quit
#             after) the probe again and runners_bench [MPS_ARGS] (default: --only e2e): whether e2e's loss is the
#             GPU's time slicing between the run's and the decode hosts' contexts
#             -> results/{context_probe,runners}.{json,md}
#   abab      runners_bench [RUNNERS_ARGS] on this checkout and on .old in turn, one run each, ABAB_ROUNDS (2)
#             rounds (hosts drift within a call) -> logs/abab/{new,old}N/runners.{json,md}
#   hostprobe experiments/decode_host_probe.py, 8 NVDEC streams through the decode machinery alone, the old checkout
#             (.old) and this one in turn, HOSTPROBE_ROUNDS (3) rounds per clip (HOSTPROBE_ARGS: e.g. "--per 0")
#             -> logs/hostprobe.log
#   phase     experiments/phase_table.py                   -> results/phase_table.{json,md,png}
#   trackids  experiments/track_ids.py [TRACKIDS_ARGS] (track ids vs Ultralytics on every sample frame) -> results/track_ids.{json,md}
#   track     experiments/track_bench.py [TRACK_ARGS] (e2e with and without tracking, sample and crowded clips; the
#             tracker on crowds vs Ultralytics; cold and warm start) -> results/track_e2e.{json,md}
#   oldtrack  the same on the old checkout carried as .old/ (--checkout OLD_LABEL) -> results/track_e2e.{json,md}
#   heads     experiments/heads.py [HEADS_ARGS] (YOLOv8/YOLO11/YOLO26 against predict; post-processing, pipeline and e2e
#             figures beside each other) -> results/heads.{json,md}
#   compile   experiments/compile_bench.py [COMPILE_ARGS] (the Inductor-compiled backbone beside today's) -> results/compile.{json,md}
#   serve     experiments/serve_bench.py [SERVE_ARGS] (default --only wall jobs; "--only live" needs ffmpeg: the
#             imageio-ffmpeg wheel in WHEELS; "--profile-dir $OUT/logs" needs py-spy's wheel in WHEELS: pip download
#             py-spy) -> results/serve.{json,md}
#   soak      experiments/soak.py [SOAK_ARGS]             -> results/soak.{json,png}
# WHEELS=DIR installs DIR/*.whl instead of .offline/whl: a Ray call carries .offline/whl-ray, the same wheels with
# PyNvVideoCodec's slimmed (experiments/slim_wheel.py: 27 -> 9 MB), so that they, Ray's 30 MB and the data fit in
# the 64 MiB a call carries; with imageio-ffmpeg's wheel (29.5 MB, ffmpeg for the loopback cameras) in place of
# Ray's archive, a call can serve cameras (runners_bench --realtime-network, soak --cameras).
# Everything it writes comes back as $OUT/run.tgz (results/, the executed notebook, logs), packed before each step,
# every 20 s and at its end.
#   [TESTS="tests/test_x.py ..."] [BENCH="kernels pipeline runners track"] bash experiments/gpu_run.sh [tests] [bench] [accuracy] [ncu] [notebook]
set -uo pipefail
OUT=${OUT:-/tmp/posefuse_out}; mkdir -p "$OUT/logs"
LOG=$OUT/logs
[[ -f /tmp/site/.installed ]] ||  # once per machine: a second gpu_run.sh in the same call reuses it
  { python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site ${WHEELS:-.offline/whl}/*.whl \
    >"$LOG/install.log" 2>&1 && touch /tmp/site/.installed; } || { cat "$LOG/install.log"; exit 1; }
# posefuse itself: the checkout is the package (setup.py's package_dir), linked in as /tmp/pkg/posefuse
mkdir -p /tmp/pkg && ln -sfn "$PWD" /tmp/pkg/posefuse
export PYTHONPATH=/tmp/site:/tmp/pkg POSEFUSE_DATA=$PWD/.offline/data PYTHONUNBUFFERED=1 YOLO_OFFLINE=1 MPLBACKEND=Agg
# Bytecode cached as on a machine where pip installed the packages (pip compiles them; the image and the
# --no-compile install above keep none): each module compiles once per machine, in the first process that
# imports it (the line below, once per machine, for what a run imports), not in every process a start-up
# figure times.
unset PYTHONDONTWRITEBYTECODE; export PYTHONPYCACHEPREFIX=/tmp/pycache
[[ -f /tmp/pycache/.warm ]] || { python3 -c "import torch, torch._dynamo, torch._inductor, cupy, numba.cuda, cv2, ultralytics, \
  posefuse.runners.cli, posefuse.runners.run, posefuse.fusion.compiled" >/dev/null 2>&1; mkdir -p /tmp/pycache && touch /tmp/pycache/.warm; }
rc=0
{ nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv
  python3 -c "import torch,cupy,numba,cv2;print('torch',torch.__version__,'cupy',cupy.__version__,'numba',numba.__version__,'cv2',cv2.__version__)"
  env | grep -E "^PYTHON" | sort; } >"$LOG/env.txt" 2>&1
card=$(nvidia-smi --query-gpu=name --format=csv,noheader | head -1); driver=$(nvidia-smi --query-gpu=driver_version --format=csv,noheader | head -1)
pack() { local t; t=$(mktemp /tmp/run.XXXXXX.tgz) && tar czf "$t" results experiments/*.ipynb -C "$OUT" logs 2>/dev/null \
  && mv "$t" "$OUT/run.tgz" || rm -f "$t"; }
step() { pack; echo "== $1 $(date -u +%H:%M:%S)"; }  # pack before each step: a run cut short still returns the rest
# and every 20 s meanwhile: a step cut short by the call's limit returns what it recorded as it went
( while sleep 20; do pack; done ) & packer=$!
trap 'kill $packer 2>/dev/null; pack' EXIT
do_tests() {
  step tests
  python3 -m pytest -m gpu -q -p no:cacheprovider --timeout=300 ${TESTS:-tests} --ignore=tests/benchmarks >"$LOG/gpu_tests.log" 2>&1
  r=$?; rc=$((rc | r)); tail -3 "$LOG/gpu_tests.log"; grep -E "^(FAILED|ERROR)" "$LOG/gpu_tests.log" | head -20
  [[ -f results/gpu_tests.md ]] && echo "| $(date -u +%Y-%m-%dT%H:%M) | $card | $driver | \`bash experiments/gpu_run.sh tests\` (python3 -m pytest -m gpu ${TESTS:-tests} --ignore=tests/benchmarks) | $(grep -E '(passed|failed)' "$LOG/gpu_tests.log" | tail -1) |" >> results/gpu_tests.md
}
do_bench() {
  for b in ${BENCH:-kernels pipeline}; do
    step "bench $b"
    cmd="python3 -m pytest tests/benchmarks/test_bench_$b.py --benchmark-only --benchmark-json=bench_$b.json"
    python3 -m pytest tests/benchmarks/test_bench_$b.py --benchmark-only -p no:cacheprovider --timeout=600 \
      --benchmark-json="$LOG/bench_$b.json" --benchmark-columns=median,rounds >"$LOG/bench_$b.log" 2>&1
    r=$?; rc=$((rc | r)); tail -2 "$LOG/bench_$b.log"
    name=$b; [[ $b == runners ]] && name=runner_benchmarks  # results/runners.json is runners_bench.py's
    python3 experiments/bench_report.py "$LOG/bench_$b.json" --name $name --command "$cmd" --out-dir results
  done
}
do_accuracy() {
  step accuracy
  python3 experiments/accuracy.py >"$LOG/accuracy.log" 2>&1; r=$?; rc=$((rc | r)); grep -E "^fp" "$LOG/accuracy.log"; tail -3 "$LOG/accuracy.log"
}
do_ncu() {
  step ncu
  bash experiments/profile.sh results/ncu_nvtx.txt >"$LOG/ncu.log" 2>&1; tail -25 "$LOG/ncu.log"
}
do_notebook() {
  step notebook
  python3 experiments/run_notebook.py experiments/compare_kernels.ipynb >"$LOG/notebook.log" 2>&1; r=$?; rc=$((rc | r)); tail -12 "$LOG/notebook.log"
}
do_probe() {
  step probe
  python3 experiments/nvdec_probe.py >"$LOG/nvdec_probe.json" 2>"$LOG/nvdec_probe.err"; r=$?; rc=$((rc | r)); tail -5 "$LOG/nvdec_probe.json"; tail -3 "$LOG/nvdec_probe.err"
}
do_nvdecmem() {
  step nvdecmem
  timeout 300 python3 experiments/nvdec_memory.py ${NVDECMEM_ARGS:-} >"$LOG/nvdec_memory.json" 2>"$LOG/nvdec_memory.err"; r=$?; rc=$((rc | r)); tail -2 "$LOG/nvdec_memory.json"; tail -3 "$LOG/nvdec_memory.err"
}
do_gilprobe() {
  step gilprobe
  timeout 240 python3 experiments/decode_gil_probe.py >"$LOG/decode_gil_probe.json" 2>"$LOG/decode_gil_probe.err"; r=$?; rc=$((rc | r)); cat "$LOG/decode_gil_probe.err" | tail -8
}
do_regress() {
  step regress
  timeout 560 python3 experiments/regression.py --old .old ${REGRESS_ARGS:-} >"$LOG/regress.log" 2>&1; r=$?; rc=$((rc | r)); grep -vE "WARNING|^YOLO" "$LOG/regress.log" | tail -30
}
do_startup() {
  step startup
  eval "timeout 560 python3 experiments/startup.py ${STARTUP_ARGS:-}" >"$LOG/startup.log" 2>&1; r=$?; rc=$((rc | r)); grep -vE "WARNING|^YOLO" "$LOG/startup.log" | tail -20
}
do_probe0() {
  step probe0
  timeout 560 python3 experiments/startup_probe.py ${PROBE_ARGS:-} >"$LOG/startup_probe.log" 2>&1; r=$?; rc=$((rc | r)); cut -c1-400 "$LOG/startup_probe.log" | tail -12
}
do_intake() {
  step intake
  timeout 560 python3 experiments/paced_intake.py ${INTAKE_ARGS:-} >"$LOG/paced_intake.log" 2>&1; r=$?; rc=$((rc | r)); tail -12 "$LOG/paced_intake.log"
}
do_ray() {
  step ray
  [[ -f .offline/ray.tar.xz ]] && tar xJf .offline/ray.tar.xz -C /tmp/site
  timeout 560 python3 experiments/ray_bench.py --gpu ${RAY_ARGS:-} >"$LOG/ray.log" 2>&1; r=$?; rc=$((rc | r)); grep -vE "WARNING|^YOLO|INFO" "$LOG/ray.log" | tail -12
}
do_runners() {
  step runners
  log=$LOG/runners${RUNNERS_TAG:-}.log  # RUNNERS_TAG: a second runners step in one call keeps its own log
  python3 experiments/runners_bench.py ${RUNNERS_ARGS:-} >"$log" 2>&1; r=$?; rc=$((rc | r)); grep -vE "WARNING|^YOLO" "$log" | grep -v "WARN:\|tcp @" | tail -25
}
do_oldrunners() {  # the same benchmark on the old checkout (.old/posefuse, imported first), to logs/old/
  step oldrunners
  PYTHONPATH=$PWD/.old:$PYTHONPATH python3 experiments/runners_bench.py ${RUNNERS_ARGS:-} --checkout "${OLD_LABEL:-old}" \
    --out-dir "$LOG/old" >"$LOG/oldrunners.log" 2>&1
  r=$?; rc=$((rc | r)); grep -vE "WARNING|^YOLO" "$LOG/oldrunners.log" | tail -25
}
do_abab() {  # this checkout and the old one (.old) in turn, one run each per round: hosts drift within a call
  for i in $(seq "${ABAB_ROUNDS:-2}"); do
    step "abab round $i"
    python3 experiments/runners_bench.py ${RUNNERS_ARGS:-} --realtime-repeats 1 --out-dir "$LOG/abab/new$i" \
      >"$LOG/abab_new$i.log" 2>&1; r=$?; rc=$((rc | r)); grep -E "^(realtime|opencv alone)" "$LOG/abab_new$i.log"
    PYTHONPATH=$PWD/.old:$PYTHONPATH python3 experiments/runners_bench.py ${RUNNERS_ARGS:-} --realtime-repeats 1 \
      --checkout "${OLD_LABEL:-old}" --out-dir "$LOG/abab/old$i" >"$LOG/abab_old$i.log" 2>&1
    r=$?; rc=$((rc | r)); grep -E "^(realtime|opencv alone)" "$LOG/abab_old$i.log"
  done
}
do_hostprobe() {  # the decode machinery alone, this checkout and the old one (.old) in turn, HOSTPROBE_ROUNDS (3)
  for clip in ${HOSTPROBE_CLIPS:-one-by-one-person-1080p.mp4 one-by-one-person-detection.mp4}; do
    step "hostprobe $clip"
    for i in $(seq "${HOSTPROBE_ROUNDS:-3}"); do
      PYTHONPATH=$PWD/.old:$PYTHONPATH timeout 60 python3 experiments/decode_host_probe.py old ".offline/data/$clip" \
        --chunk 16 2>&1 | grep -vE "WARNING|^YOLO" | tee -a "$LOG/hostprobe.log"
      timeout 60 python3 experiments/decode_host_probe.py new ".offline/data/$clip" --chunk 16 ${HOSTPROBE_ARGS:-} \
        2>&1 | grep -vE "WARNING|^YOLO" | tee -a "$LOG/hostprobe.log"
    done
  done
}
do_phase() {
  step phase
  python3 experiments/phase_table.py ${PHASE_ARGS:-} >"$LOG/phase.log" 2>&1; r=$?; rc=$((rc | r)); grep -vE "WARNING|^YOLO" "$LOG/phase.log" | tail -12
}
do_trackids() {
  step trackids
  timeout 560 python3 experiments/track_ids.py ${TRACKIDS_ARGS:-} >"$LOG/track_ids.log" 2>&1; r=$?; rc=$((rc | r)); grep -vE "WARNING|^YOLO" "$LOG/track_ids.log" | tail -6
}
do_compile() {
  step compile
  timeout ${COMPILE_TIMEOUT:-560} python3 experiments/compile_bench.py ${COMPILE_ARGS:-} >"$LOG/compile.log" 2>&1; r=$?; rc=$((rc | r)); grep -vE "WARNING|^YOLO" "$LOG/compile.log" | cut -c1-300 | tail -16
}
do_serve() {
  step serve
  timeout ${SERVE_TIMEOUT:-560} python3 experiments/serve_bench.py ${SERVE_ARGS:---only wall jobs} >"$LOG/serve.log" 2>&1
  r=$?; rc=$((rc | r)); grep -vE "WARNING|^YOLO" "$LOG/serve.log" | cut -c1-400 | tail -8
}
do_soak() {
  step soak
  MALLOC_ARENA_MAX=2 MALLOC_MMAP_THRESHOLD_=65536 python3 experiments/soak.py ${SOAK_ARGS:---duration 480 --streams 16 --decoder nvdec --plot} >"$LOG/soak.log" 2>&1; r=$?; rc=$((rc | r)); tail -20 "$LOG/soak.log"
}
do_mps() {
  step mps
  python3 experiments/context_probe.py >"$LOG/mps.log" 2>&1; r=$?; rc=$((rc | r))
  command -v nvidia-cuda-mps-control >/dev/null || { echo "mps: no nvidia-cuda-mps-control on this machine" | tee -a "$LOG/mps.log"; rc=$((rc | 1)); return; }
  export CUDA_MPS_PIPE_DIRECTORY=/tmp/mps/pipe CUDA_MPS_LOG_DIRECTORY=/tmp/mps/log
  mkdir -p $CUDA_MPS_PIPE_DIRECTORY $CUDA_MPS_LOG_DIRECTORY
  if nvidia-cuda-mps-control -d; then
    sleep 1; ls -l $CUDA_MPS_PIPE_DIRECTORY >>"$LOG/mps.log"  # harness.under_mps looks for its 'control' pipe
    python3 experiments/context_probe.py >>"$LOG/mps.log" 2>&1; r=$?; rc=$((rc | r))
    timeout ${MPS_TIMEOUT:-560} python3 experiments/runners_bench.py ${MPS_ARGS:---only e2e} >>"$LOG/mps.log" 2>&1; r=$?; rc=$((rc | r))
    echo get_server_list | nvidia-cuda-mps-control >>"$LOG/mps.log" 2>&1
    echo quit | nvidia-cuda-mps-control
  else
    echo "mps: the control daemon did not start" | tee -a "$LOG/mps.log"; rc=$((rc | 1))
  fi
  cp $CUDA_MPS_LOG_DIRECTORY/*.log "$LOG/" 2>/dev/null
  unset CUDA_MPS_PIPE_DIRECTORY CUDA_MPS_LOG_DIRECTORY
  grep -vE "WARNING|^YOLO" "$LOG/mps.log" | cut -c1-300 | tail -24
}
do_track() {
  step track
  timeout ${TRACK_TIMEOUT:-560} python3 experiments/track_bench.py ${TRACK_ARGS:-} >"$LOG/track.log" 2>&1; r=$?; rc=$((rc | r)); grep -vE "WARNING|^YOLO" "$LOG/track.log" | cut -c1-300 | tail -24
}
do_oldtrack() {
  step oldtrack
  PYTHONPATH=$PWD/.old:$PYTHONPATH timeout ${TRACK_TIMEOUT:-560} python3 experiments/track_bench.py ${TRACK_ARGS:-} \
    --checkout "${OLD_LABEL:-old}" >"$LOG/oldtrack.log" 2>&1; r=$?; rc=$((rc | r)); grep -vE "WARNING|^YOLO" "$LOG/oldtrack.log" | cut -c1-300 | tail -24
}
do_heads() {
  step heads
  timeout 560 python3 experiments/heads.py ${HEADS_ARGS:-} >"$LOG/heads.log" 2>&1; r=$?; rc=$((rc | r)); grep -vE "WARNING|^Overriding" "$LOG/heads.log" | tail -16
}
for s in ${*:-tests bench accuracy ncu notebook probe gilprobe regress startup probe0 ray runners phase trackids heads soak}; do
  declare -F "do_$s" >/dev/null || { echo "gpu_run.sh: no step $s"; rc=2; continue; }
  "do_$s"
done
step done
exit $rc
