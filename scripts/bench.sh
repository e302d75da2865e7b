#!/usr/bin/env bash
# Run the benchmarks in benchmarks/ (make bench). Each prints a markdown table and writes a JSON.
#   usage: scripts/bench.sh [VENV]                       (default .venv)
#   BENCH_PROFILE=quick (default)  CPU-friendly: one or two test scenes, fewer frames and repeats
#                                  (10-15 minutes on 2 cores)
#                 full             each script's own defaults (README.md gives the exact commands
#                                  behind its figures); an hour or more on 2 cores
#   BENCH_OUT=DIR   where the JSON results go (default out/bench/<profile>; the committed
#                   benchmarks/results/*.json are only overwritten with BENCH_OUT=benchmarks/results)
#   BENCH_ONLY="mapping segmentation.py"   run only these (names below or benchmarks/ file names;
#                   model_speed_rgbd is model_speed.py --pruning depth)
# A benchmark that fails does not stop the others; the script exits 1 at the end if any failed.
set -euo pipefail
VENV=${1:-.venv}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
PY="$VENV/bin/python"
[ -x "$PY" ] || { echo "[bench] $PY not found (make venv)" >&2; exit 1; }
PROFILE=${BENCH_PROFILE:-quick}
case "$PROFILE" in quick|full) ;; *) echo "[bench] BENCH_PROFILE must be quick or full, got '$PROFILE'" >&2; exit 2;; esac
OUT=${BENCH_OUT:-out/bench/$PROFILE}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
WEIGHTS=models/gnesf_synthetic.pt

# name -> arguments (besides --out) per profile
declare -A QUICK=(
  [sparse_conv]="--threads 2 --repeats 3"
  [segmentation]="--scenes 2 --views 4 --repeats 2"
  [oracle_calibration]="--seeds 2000 --frames 8"
  [model_speed]="--weights $WEIGHTS --threads 2 --repeats 3"
  [model_speed_rgbd]="--weights $WEIGHTS --pruning depth --threads 2 --repeats 3"
  [photo_consistency]="--seeds 2000 2001 --windows 2 --pixels 2000"
  [mapping]="--seeds 2000 --frames 150 --rooms 1 2 --weights $WEIGHTS"
  [ablation]="--seeds 2000 --frames 100 --heldout 6 --weights $WEIGHTS"
  [node_replay]="--frames 150"
)
declare -A FULL=(
  [sparse_conv]=""
  [segmentation]=""
  [oracle_calibration]=""
  [model_speed]="--weights $WEIGHTS"
  [model_speed_rgbd]="--weights $WEIGHTS --pruning depth"
  [photo_consistency]=""
  [mapping]="--weights $WEIGHTS"
  [ablation]="--weights $WEIGHTS"
  [node_replay]=""
)
ORDER=(sparse_conv segmentation oracle_calibration model_speed model_speed_rgbd photo_consistency mapping ablation node_replay)

script_of() { case "$1" in model_speed_rgbd) echo benchmarks/model_speed.py;; *) echo "benchmarks/$1.py";; esac; }

matches() { [ "$1" = "$2" ] || [ "$1" = "$(basename "$(script_of "$2")")" ]; }  # WANT NAME
selected() {
  [ -z "${BENCH_ONLY:-}" ] && return 0
  local want
  for want in $BENCH_ONLY; do matches "$want" "$1" && return 0; done
  return 1
}
for want in ${BENCH_ONLY:-}; do
  known=no
  for name in "${ORDER[@]}"; do matches "$want" "$name" && known=yes; done
  [ $known = yes ] || { echo "[bench] BENCH_ONLY: unknown benchmark '$want' (one of: ${ORDER[*]})" >&2; exit 2; }
done

failed=()
ran=()
echo "[bench] profile $PROFILE, results in $OUT"
for name in "${ORDER[@]}"; do
  selected "$name" || continue
  script=$(script_of "$name")
  if [ ! -f "$script" ]; then
    echo "[bench] $script not present, skipped"
    continue
  fi
  if [ "$PROFILE" = quick ]; then args=${QUICK[$name]}; else args=${FULL[$name]}; fi
  # Pass the output option a script has (--out, or --out-json in node_replay.py); none: its own place.
  help=$("$PY" "$script" --help 2>/dev/null || true)
  out_args=()
  if grep -qE -- '--out-json([ =]|$)' <<<"$help"; then out_args=(--out-json "$OUT/$name.json")
  elif grep -qE -- '--out([ =]|$)' <<<"$help"; then out_args=(--out "$OUT/$name.json"); fi
  echo
  echo "[bench] === $name: $PY $script $args ${out_args[*]}"
  t0=$(date +%s)
  # shellcheck disable=SC2086  # $args is a word list
  if "$PY" "$script" $args "${out_args[@]}"; then
    ran+=("$name ($(( $(date +%s) - t0 )) s)")
    echo "[bench] $name done in $(( $(date +%s) - t0 )) s"
  else
    echo "[bench] $name FAILED (exit $?)" >&2
    failed+=("$name")
  fi
done

echo
echo "[bench] done (${PROFILE}): ${ran[*]:-nothing ran}"
echo "[bench] results: $OUT/*.json (scripts without --out write where their --help says, e.g. benchmarks/results/)"
ls -1 "$OUT"
if [ ${#failed[@]} -gt 0 ]; then
  echo "[bench] FAILED: ${failed[*]}" >&2
  exit 1
fi
