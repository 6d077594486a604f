#!/usr/bin/env bash
# One prepared check for a lent GPU (issue 22), under 8 minutes on one GPU; one report file.
#
#   scripts/gpu_check.sh                 # report: runs/gpu_check/report.md (OUT=... to change)
#   PYTHON=/path/to/python scripts/gpu_check.sh
#
# Steps, each timed and its output copied into the report:
#   1. the GPU tests (pytest --run-gpu -m gpu, on the modules that need neither napari nor dask);
#   2. speed: benchmarks/overhead.py per configuration (default model at 854x480 full size, 1 and
#      5 objects, fp32 and bf16, with and without CUDA graphs; ResNet-50; region mode with 40
#      nuclei in 1024x1024 frames): frames/s and the engine's time outside the network;
#   3. benchmarks/propagate.py: the encoder table and the procedure table (authors' / official /
#      default);
#   4. benchmarks/microscopy.py: region mode against full-frame mode;
#   5. benchmarks/accuracy.py on the samples and the fluorescence set, on the GPU and on the CPU,
#      and the largest J&F difference (it should be under 0.01);
#   6. benchmarks/train.py: iterations/s and GPU utilisation (kernel time over wall time).
# Without CUDA it runs the same steps on the CPU with small sizes (the report says so at the
# top), so that the script itself is checked anywhere. It needs torch, not napari, dask, zarr or
# imagecodecs. A failing step (or one over STEP_TIMEOUT seconds, default 300) is reported and the
# next one runs; the exit status is the number of failed steps.
set -u
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
OUT=${OUT:-runs/gpu_check}
mkdir -p "$OUT"
REPORT="$OUT/report.md"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
START=$(date +%s)
FAILED=0

if "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
    GPU=1; DEV=cuda
    DEVICE_NAME=$("$PY" -c "import torch; print(torch.cuda.get_device_name(0))")
else
    GPU=0; DEV=cpu
    DEVICE_NAME="no CUDA device: the CPU path (small sizes), to check the script itself"
fi
THREADS=$("$PY" -c "import os; print(len(os.sched_getaffinity(0)))" 2>/dev/null || echo 1)
if [ "$GPU" = 0 ]; then  # the CPU path: one torch thread (two collapse on a shared 2-core machine)
    THREADS=1
    export OMP_NUM_THREADS=1
fi
{
    echo "# GPU check (issue 22)"
    echo
    echo "- device: $DEVICE_NAME"
    echo "- $("$PY" -c "import torch, platform; print(f'torch {torch.__version__}, CUDA {torch.version.cuda}, Python {platform.python_version()}')")"
    echo "- torch threads: $THREADS; commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown); $(date -u +%Y-%m-%dT%H:%M:%SZ)"
    [ "$GPU" = 1 ] || echo "- **No GPU here**: every step ran on the CPU with small sizes; the figures are not GPU figures."
    echo
} > "$REPORT"

step() {  # step TITLE COMMAND...: run, time, copy the output into the report
    local title=$1; shift
    local log="$OUT/step-$(echo "$title" | tr -c 'a-zA-Z0-9' '-' | tr -s '-').log"
    local begin=$(date +%s)
    echo "== $title" >&2
    timeout "${STEP_TIMEOUT:-300}" "$@" > "$log" 2>&1
    local status=$?
    local seconds=$(( $(date +%s) - begin ))
    {
        echo "## $title ($seconds s$( [ $status = 0 ] || echo ", FAILED with status $status"))"
        echo
        echo '```'
        echo "\$ $*"
        grep -v -e "^USDT" -e "gpuGetDeviceCount" "$log" | tail -n 60
        echo '```'
        echo
    } >> "$REPORT"
    [ $status = 0 ] || FAILED=$((FAILED + 1))
}

# 1. tests
step "GPU tests" "$PY" -m pytest -q --run-gpu -m gpu -p no:cacheprovider \
    tests/nn/test_inference_network.py tests/inference/test_region_batch.py

# 2. speed of the engine (frames/s, time outside the network)
if [ "$GPU" = 1 ]; then
    FRAMES=40; REGION_FRAMES=14; VIDEO="--max-size 0"
else
    FRAMES=5; REGION_FRAMES=4; VIDEO=""
fi
OVERHEAD=("$PY" benchmarks/overhead.py --device "$DEV" --threads "$THREADS")
step "speed: default model, 1 object, fp32" "${OVERHEAD[@]}" --cases video $VIDEO --frames $FRAMES --precision fp32
if [ "$GPU" = 1 ]; then
    step "speed: default model, 1 object, bf16" "${OVERHEAD[@]}" --cases video $VIDEO --frames $FRAMES --precision bf16
    step "speed: default model, 1 object, bf16, no CUDA graphs" "${OVERHEAD[@]}" --cases video $VIDEO --frames $FRAMES --precision bf16 --no-graphs
    step "speed: default model, 5 objects, bf16" "${OVERHEAD[@]}" --cases video $VIDEO --frames $FRAMES --precision bf16 --objects 5
    step "speed: ResNet-50/256, 1 object, fp32" "${OVERHEAD[@]}" --cases video $VIDEO --frames $FRAMES --precision fp32 --backbone resnet50
    step "speed: ResNet-50/256, 1 object, bf16" "${OVERHEAD[@]}" --cases video $VIDEO --frames $FRAMES --precision bf16 --backbone resnet50
    step "speed: region mode, 40 nuclei, bf16" "${OVERHEAD[@]}" --cases region --frames $REGION_FRAMES --precision bf16
else
    step "speed: region mode, 40 nuclei" "${OVERHEAD[@]}" --cases region --frames $REGION_FRAMES
fi

# 3. encoders and procedures
if [ "$GPU" = 1 ]; then
    step "propagate: encoder table" "$PY" benchmarks/propagate.py --device cuda --encoders-only --frames 20
    step "propagate: procedure table" "$PY" benchmarks/propagate.py --device cuda --skip-long --frames 6
else
    step "propagate: encoder table" "$PY" benchmarks/propagate.py --device cpu --encoders-only --frames 2 --working-sizes 384
fi

# 4. microscopy: region mode against full frames
if [ "$GPU" = 1 ]; then
    step "microscopy: region vs full frames" "$PY" benchmarks/microscopy.py --device cuda --long-frames 0
else
    step "microscopy: region vs full frames" "$PY" benchmarks/microscopy.py --device cpu --long-frames 0 \
        --frames 3 --size 320 --cells 8
fi

# 5. accuracy, GPU against CPU
FLUORESCENCE=(fluorescence)
[ "$GPU" = 1 ] || FLUORESCENCE=(fluorescence sparse-uint8)
WHERE=(cpu)
[ "$GPU" = 1 ] && WHERE=(cuda cpu)
for where in "${WHERE[@]}"; do
    step "accuracy: samples ($where)" "$PY" benchmarks/accuracy.py samples --methods model --device "$where" \
        --threads "$THREADS"
    step "accuracy: fluorescence ($where)" "$PY" benchmarks/accuracy.py "${FLUORESCENCE[@]}" --methods model \
        --device "$where" --threads "$THREADS"
done
if [ "$GPU" = 1 ]; then
    step "accuracy: GPU against CPU" "$PY" - "$OUT" <<'EOF'
import re, sys
from pathlib import Path
out = Path(sys.argv[1])
def scores(log: Path) -> dict:
    rows = re.findall(r"^model\s+(\S+)\s+[\d.]+\s+[\d.]+\s+([\d.]+)", log.read_text(), re.M)
    return {name: float(jf) for name, jf in rows}
worst = 0.0
for kind in ("samples", "fluorescence"):
    gpu, cpu = (scores(next(out.glob(f"step-accuracy-{kind}-{w}-*.log"))) for w in ("cuda", "cpu"))
    for name in sorted(gpu):
        if name in cpu:
            worst = max(worst, abs(gpu[name] - cpu[name]))
            print(f"{kind} {name}: GPU {gpu[name]:.3f} CPU {cpu[name]:.3f} difference {gpu[name] - cpu[name]:+.3f}")
print(f"largest J&F difference {worst:.3f}: {'PASS' if worst < 0.01 else 'FAIL'} (under 0.01)")
sys.exit(0 if worst < 0.01 else 1)
EOF
fi

# 6. training speed and GPU utilisation
if [ "$GPU" = 1 ]; then
    WORKERS=$(( THREADS > 2 ? THREADS - 2 : 1 ))
    step "training speed" "$PY" benchmarks/train.py --device cuda --iterations 30 --warmup 10 \
        --stages pretrain video --workers "$WORKERS" --cache "$OUT/decoded"
else
    step "training speed" "$PY" benchmarks/train.py --device cpu --iterations 2 --warmup 1 --stages finetune
fi

SECONDS_ALL=$(( $(date +%s) - START ))
{
    echo "## Summary"
    echo
    echo "$FAILED failed step(s); $SECONDS_ALL s in all on $DEVICE_NAME."
} >> "$REPORT"
echo "report: $REPORT ($FAILED failed step(s), $SECONDS_ALL s)" >&2
exit "$FAILED"
