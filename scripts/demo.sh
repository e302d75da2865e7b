#!/usr/bin/env bash
# The main job on built-in default data: synthetic ScanNet-format scene -> map -> metrics + pictures.
set -euo pipefail
VENV=${1:-.venv}; SCENE_ROOT=${2:-data/demo_scene}; OUT=${3:-out/demo}
SEED=${DEMO_SEED:-2000}; FRAMES=${DEMO_FRAMES:-300}; MODE=${DEMO_MODE:-rgbd}
BIN="$VENV/bin"
SCENE="$SCENE_ROOT/scene$(printf %04d "$SEED")_00"
mkdir -p "$OUT"
if [ ! -f "$SCENE/.complete" ]; then
  "$BIN/gnesf-synth" --seed "$SEED" --frames "$FRAMES" --size 640x480 --out "$SCENE_ROOT"
  touch "$SCENE/.complete"
fi
# RGB | depth | ground-truth labels | the shipped segmenter's 2D prediction
"$BIN/gnesf-view" sheet "$SCENE" --out "$OUT/contact_sheet.png" --segmenter models/segmenter
"$BIN/gnesf-view" mesh "$SCENE/$(basename "$SCENE")_vh_clean_2.labels.ply" --out "$OUT/gt_mesh.png"
"$BIN/gnesf-map" "$SCENE" --out "$OUT" --config config/demo.yaml --mode "$MODE"
# The Kimera-style Bayesian baseline (depth TSDF + label fusion) on the same scene, for comparison.
"$BIN/gnesf-map" "$SCENE" --out "$OUT/baseline_bayesian" --config config/demo.yaml --mode baseline_bayesian \
  --heldout-every 0 > /dev/null
# RGB only: the same scene without its depth images (multi-view stereo geometry, model.geometry: mvs).
"$BIN/gnesf-map" "$SCENE" --out "$OUT/rgb" --config config/demo.yaml --mode rgb --heldout-every 0 > /dev/null
"$VENV/bin/python" - "$OUT" "$MODE" <<'PY'
import json, sys
import numpy as np
from PIL import Image
from gnesf_ros.viz import save_png
out, mode = sys.argv[1], sys.argv[2]
print("\n| method | 3D mIoU | F-score @ 5 cm | keyframes/s | x real time |\n|---|---|---|---|---|")
for name, path in ((f"mode {mode}", f"{out}/metrics.json"), ("rgb (RGB only, MVS geometry)", f"{out}/rgb/metrics.json"),
                   ("baseline_bayesian (depth + Kimera fusion)", f"{out}/baseline_bayesian/metrics.json")):
    m = json.load(open(path))
    t = m['throughput']
    print(f"| {name} | {m['semantic']['miou']:.3f} | {m['mesh']['f_score']:.3f} | {t['keyframes_per_s']:.1f} "
          f"| {t['speedup_vs_realtime']:.2f} |")
# the RGB-only map beside the depth one (perspective overviews, same framing rule)
pair = [np.asarray(Image.open(f"{d}/overview_perspective.png").convert("RGB")) for d in (out, f"{out}/rgb")]
h = min(p.shape[0] for p in pair)
save_png(f"{out}/rgbd_vs_rgb_only.png", np.concatenate([p[:h] for p in pair], 1))
PY
echo "demo outputs in $OUT:"; ls -1 "$OUT"
