#!/usr/bin/env bash
# Reproduces the bundled default model, rgmp_model/weights/default.pt, from scratch:
#   scripts/train_default.sh DAVIS_ROOT [key=value overrides for both stages, e.g. device=cuda]
# DAVIS_ROOT holds JPEGImages/480p and Annotations/480p with the sequences blackswan,
# car-roundabout, cows, dance-twirl, goat, paragliding-launch (training) and libby, scooter-black
# (validation only). Both stages resume from runs/default/*/checkpoints/last.pt, so an interrupted
# run (or a CPU run spread over several sessions) continues where it stopped when started again.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ $# -lt 1 ] || [ ! -d "$1/JPEGImages" ]; then
    echo "usage: scripts/train_default.sh DAVIS_ROOT [key=value ...]  (DAVIS_ROOT/JPEGImages must exist)" >&2
    exit 2
fi
export DAVIS_ROOT="$(cd "$1" && pwd)"
shift
PY="${PYTHON:-.venv/bin/python}"
[ -x "$PY" ] || PY=python3
"$PY" -m training.cli pretrain --config training/configs/default_pretrain.yaml "$@"
"$PY" -m training.cli video --config training/configs/default_video.yaml "$@"
"$PY" scripts/export_default.py runs/default/video/model.pt --davis "$DAVIS_ROOT"
