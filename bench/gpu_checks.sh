#!/usr/bin/env bash
# Every GPU check of issue 5 in one invocation, for one device call (bench/NOTES.md has the
# figures so far):
#   1. bench/throughput.py: DSM and TIW-DSM training steps and the 18-step Heun sampler per
#      precision (ddpmpp32, batch 256, compiled; the sampler also under CUDA graphs), one table;
#   2. bf16 against fp32: tiw_dsm on shapes32 at ref 0.05, seeds 0,1,2 in each precision, one
#      table whose rows are the two precisions (tables never pool different settings).
# Output goes to $OUT (the device tool's folder) or bench/gpu-out. SMALL=1 runs tiny settings on
# the CPU, to test this script here. PART=throughput or PART=quality runs one half (the whole is
# estimated at 8–12 min on one H100/H200, compilation included: split it if a call's limit is near).
#
# The GPU image lacks clean-fid (shapes32's metrics use its Fréchet distance): before the call,
#   echo /.whl/ >> .git/info/exclude
#   pip download --no-deps --only-binary=:all: -d .whl clean-fid==0.1.35
# and carry `.whl`; this script installs what it finds there, then tiwbench itself (no deps).
set -euo pipefail
out=${OUT:-bench/gpu-out}
py=${PYTHON:-python3}
mkdir -p "$out"
if ! $py -c "import cleanfid.fid" 2>/dev/null && [ -d .whl ]; then
  $py -m pip install -q --no-index --no-deps --no-cache-dir --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
if ! $py -c "from importlib.metadata import entry_points as e; assert e(group='tiwbench.methods')" 2>/dev/null; then
  $py -m pip install -q --no-deps --no-build-isolation --no-index -e .
fi
if [ "${SMALL:-0}" = 1 ]; then
  throughput=(--device cpu --net tiny --batch 4 --iters 1 --warmup 1 --precisions fp32,bf16 --sample-steps 3)
  run=(--device cpu --steps 30 --ratio-steps 30 --num-samples 64 --sample-steps 4)
  seeds=0,1
else
  throughput=(--sampler-graphs)
  run=(--no-compile)  # short runs: compilation would cost more than it saves
  seeds=0,1,2
fi
{ date -u; nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>/dev/null || echo "no nvidia-smi";
  $py -c "import torch; print('torch', torch.__version__)"; } | tee "$out/machine.txt"
part=${PART:-all}
if [ "$part" != quality ]; then
  $py bench/throughput.py "${throughput[@]}" | tee "$out/throughput.md"
fi
[ "$part" = throughput ] && exit 0
for precision in bf16 fp32; do
  $py -m tiwbench sweep --dataset shapes32 --methods tiw_dsm --refs 0.05 --seeds "$seeds" \
      --precision "$precision" --results "$out/runs" "${run[@]}"
done
$py -m tiwbench table --dataset shapes32 --results "$out/runs" | tee "$out/quality.md"
