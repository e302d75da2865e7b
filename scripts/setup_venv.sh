#!/usr/bin/env bash
# Create/refresh the project venv from the pinned lock, install the package, and build the
# ROS 2 interfaces PyPI lacks (tf2_msgs, vision_msgs) into it. Idempotent.
set -euo pipefail
PY=${1:-python3}
VENV=${2:-.venv}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
if [ ! -x "$VENV/bin/python" ]; then
  echo "[setup] creating venv $VENV"
  "$PY" -m venv "$VENV"
fi
# Some machines' pip config names local mirror folders that lack a package: pip warns per package.
quiet() { grep -v "is ignored: it is neither a file nor a directory" || true; }
echo "[setup] installing pinned dependencies (requirements.lock)"
"$VENV/bin/python" -m pip install -q --disable-pip-version-check -r requirements.lock 2>&1 | quiet
echo "[setup] installing gnesf_ros (editable)"
"$VENV/bin/python" -m pip install -q --no-deps --no-build-isolation -e . 2>&1 | quiet
bash scripts/build_interfaces.sh "$VENV"
bash scripts/install_ament_prefix.sh "$VENV"
echo "[setup] done: $VENV"
