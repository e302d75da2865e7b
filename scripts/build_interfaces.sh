#!/usr/bin/env bash
# Generate the ROS 2 interface packages PyPI has no wheel for (tf2_msgs, vision_msgs) from the
# upstream-identical sources in ros_interfaces/ with the rosidl wheels + cmake, and install them
# into the venv (Python modules in site-packages, libraries in $VENV/lib where the wheels'
# bootstrapper puts LD_LIBRARY_PATH, share/ + ament index like a colcon install).
#   usage: scripts/build_interfaces.sh VENV [--force | --dry-run]
#   --force rebuilds even when up to date; --dry-run only reports what it would do.
# Idempotent: a stamp keyed on the sources' hash makes a re-run a no-op (well under a second).
# A package a real ROS 2 install already provides (importable from outside the venv) is skipped.
set -euo pipefail
VENV=${1:?usage: build_interfaces.sh VENV [--force | --dry-run]}
MODE=${2:-}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
VENV=$(cd "$VENV" && pwd)
VPY="$VENV/bin/python"
SRC="$ROOT/ros_interfaces"
BUILD="$VENV/.build/ros_interfaces"
PACKAGES=(tf2_msgs vision_msgs)

log() { echo "[interfaces] $*"; }

# Where does the venv's Python import a package from? Prints the path or nothing.
origin_of() {
  "$VPY" - "$1" <<'EOF' 2>/dev/null || true
import importlib.util, os, sys
try:
    spec = importlib.util.find_spec(sys.argv[1] + ".msg")
except ImportError:
    spec = None
print(os.path.realpath(spec.origin) if spec and spec.origin else "")
EOF
}

# Hash of everything that determines the build output.
sources_hash() {
  (cd "$ROOT" && find ros_interfaces -type f ! -name "*.md" -print0 | sort -z | xargs -0 sha256sum
   sha256sum scripts/build_interfaces.sh; echo "$VPY"; "$VPY" -V) | sha256sum | cut -d' ' -f1
}

command -v cmake >/dev/null || { echo "[interfaces] error: cmake not found (apt-get install cmake g++)" >&2; exit 1; }
HASH=$(sources_hash)
mkdir -p "$BUILD"

for pkg in "${PACKAGES[@]}"; do
  stamp="$BUILD/$pkg.stamp"
  origin=$(origin_of "$pkg")
  if [ -n "$origin" ] && [[ "$origin" != "$VENV"/* ]]; then
    log "$pkg provided by the ROS 2 install at $origin: not generating"
    continue
  fi
  if [ "$MODE" != --force ] && [ -n "$origin" ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$HASH" ]; then
    log "$pkg up to date"
    continue
  fi
  if [ "$MODE" = --dry-run ]; then log "$pkg would be generated"; continue; fi
  log "generating $pkg (cmake + rosidl, ~10-20 s)"
  t0=$(date +%s)
  bdir="$BUILD/$pkg"
  rm -rf "$bdir"
  mkdir -p "$bdir"
  # ament_index_get_resources (used to enumerate typesupports) reads AMENT_PREFIX_PATH.
  if ! AMENT_PREFIX_PATH="$VENV${AMENT_PREFIX_PATH:+:$AMENT_PREFIX_PATH}" bash -c '
      set -e
      cmake -S "$1" -B "$2" -DPython3_EXECUTABLE="$3" -DCMAKE_PREFIX_PATH="$4" \
            -DCMAKE_INSTALL_PREFIX="$4" -DBUILD_TESTING=OFF -DCMAKE_BUILD_TYPE=Release
      cmake --build "$2" -j "$(nproc)"
      cmake --install "$2"' _ "$SRC/$pkg" "$bdir" "$VPY" "$VENV" >"$bdir/build.log" 2>&1; then
    tail -40 "$bdir/build.log" >&2
    echo "[interfaces] error: building $pkg failed; full log: $bdir/build.log" >&2
    exit 1
  fi
  if ! "$VPY" -c "import $pkg.msg" 2>"$bdir/import.log"; then
    cat "$bdir/import.log" >&2
    echo "[interfaces] error: $pkg built but does not import" >&2
    exit 1
  fi
  echo "$HASH" >"$stamp"
  log "$pkg installed into $VENV in $(( $(date +%s) - t0 )) s"
done
