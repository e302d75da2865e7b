#!/usr/bin/env bash
# The main job on built-in default data: synthetic ScanNet-format scene -> map -> metrics + pictures.
set -euo pipefail
VENV=${1:-.venv}; SCENE_ROOT=${2:-data/demo_scene}; OUT=${3:-out/demo}
SEED=${DEMO_SEED:-2000}; FRAMES=${DEMO_FRAMES:-300}
BIN="$VENV/bin"
SCENE="$SCENE_ROOT/scene$(printf %04d "$SEED")_00"
mkdir -p "$OUT"
if [ ! -f "$SCENE/.complete" ]; then
  "$BIN/gnesf-synth" --seed "$SEED" --frames "$FRAMES" --size 640x480 --out "$SCENE_ROOT"
  touch "$SCENE/.complete"
fi
"$BIN/gnesf-view" sheet "$SCENE" --out "$OUT/contact_sheet.png"
"$BIN/gnesf-view" mesh "$SCENE/$(basename "$SCENE")_vh_clean_2.labels.ply" --out "$OUT/gt_mesh.png"
if [ -x "$BIN/gnesf-map" ]; then
  "$BIN/gnesf-map" "$SCENE" --out "$OUT"
else
  "$BIN/gnesf-eval" --pred "$SCENE/$(basename "$SCENE")_vh_clean_2.labels.ply" \
    --gt "$SCENE/$(basename "$SCENE")_vh_clean_2.labels.ply" --json "$OUT/metrics_gt_vs_gt.json"
fi
echo "demo outputs in $OUT:"; ls -1 "$OUT"
