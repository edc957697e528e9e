#!/usr/bin/env bash
# Every GPU check in one invocation, for one device call (bench/NOTES.md has the
# figures). Ordered so that a call stopped at its limit still returns whole, paired results:
#   1. bench/throughput.py eager (fp32, tf32, bf16): DSM and TIW-DSM training steps and the
#      18-step Heun sampler (ddpmpp32, batch 256), img/s, peak GiB, the TIW/DSM step-time ratio;
#   2. the GPU preset's fit and its debiasing: dsm_obs, then tiw_dsm, on shapes32_ddpmpp (ddpmpp32,
#      bf16) at ref 0.05, seed 0, then seed 1 while time is left — dsm_obs's fit_gap says whether
#      the preset trains long enough; the records packed into records.tgz and the table rewritten
#      after each run;
#   3. throughput compiled, bf16 only, the sampler also under CUDA graphs, if DEADLINE allows.
# Output goes to $OUT (the device tool's folder: at most 8 files come back) or bench/gpu-out; the
# runs themselves go to $WORK. DEADLINE=S: seconds from the start after which part 3 is skipped
# and part 2 stops starting runs (0 = none). SMALL=1 runs tiny settings on the CPU, to test this
# script here. PART=throughput or PART=quality runs one half.
#
# The GPU image lacks clean-fid and prdc: before the call,
#   echo /.whl/ >> .git/info/exclude
#   pip download --no-deps --only-binary=:all: -d .whl clean-fid==0.1.35 prdc==0.2
# and carry `.whl`; this script installs what it finds there, then tiwbench itself (no deps).
set -euo pipefail
start=$SECONDS
out=${OUT:-bench/gpu-out}
work=${WORK:-/tmp/tiwbench-gpu}
py=${PYTHON:-python3}
deadline=${DEADLINE:-0}
mkdir -p "$out" "$work"
if ! $py -c "import cleanfid.fid, prdc" 2>/dev/null && [ -d .whl ]; then
  $py -m pip install -q --no-index --no-deps --no-cache-dir --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
if ! $py -c "from importlib.metadata import entry_points as e; assert e(group='tiwbench.methods')" 2>/dev/null; then
  $py -m pip install -q --no-deps --no-build-isolation --no-index -e .
fi
left() { [ "$deadline" = 0 ] && echo 100000 || echo $((deadline - (SECONDS - start))); }
if [ "${SMALL:-0}" = 1 ]; then
  eager=(--device cpu --net tiny --batch 4 --iters 1 --warmup 1 --precisions fp32,bf16 --sample-steps 3 --no-compile)
  compiled=(--device cpu --net tiny --batch 4 --iters 1 --warmup 1 --precisions bf16 --sample-steps 3 --no-compile)
  run=(--device cpu --net tiny --steps 30 --ratio-steps 30 --num-samples 64 --sample-steps 4 --batch-size 8)
  seeds="0 1"
else
  eager=(--no-compile)
  compiled=(--compile --precisions bf16 --sampler-graphs)
  run=(--no-compile)  # short runs: compilation would cost more than it saves
  seeds="0 1"
fi
{ date -u; nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>/dev/null || echo "no nvidia-smi";
  $py -c "import torch; print('torch', torch.__version__)"; git rev-parse HEAD 2>/dev/null || true; } | tee "$out/machine.txt"
part=${PART:-all}
if [ "$part" != quality ]; then
  $py bench/throughput.py "${eager[@]}" | tee "$out/throughput_eager.md"
fi
if [ "$part" != throughput ]; then
  for seed in $seeds; do
    for method in dsm_obs tiw_dsm; do  # about five minutes a run on an H200 (bench/NOTES.md)
      if [ "$(left)" -lt 360 ]; then echo "deadline: $method seed $seed not started"; break 2; fi
      $py -m tiwbench sweep --dataset shapes32_ddpmpp --methods $method --refs 0.05 --seeds "$seed" \
          --results "$work/runs" "${run[@]}"
      (cd "$work" && find runs -name metrics.json -print0 | tar czf - --null -T -) > "$out/records.tgz"
      $py -m tiwbench table --dataset shapes32_ddpmpp --results "$work/runs" > "$out/quality.md"
    done
  done
  cat "$out/quality.md"
fi
if [ "$part" != quality ]; then
  if [ "$(left)" -lt 150 ]; then echo "deadline: compiled throughput skipped"; exit 0; fi
  timeout "$(left)" $py bench/throughput.py "${compiled[@]}" | tee "$out/throughput_compiled.md"
fi
