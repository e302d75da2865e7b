#!/usr/bin/env bash
# Make the venv a valid ament prefix for gnesf_ros, so that with AMENT_PREFIX_PATH=$VENV
# `ros2 run gnesf_ros mapping_node` / `ros2 launch gnesf_ros mapping.launch.py` and
# ament_index_python find the package (pip ignores setup.cfg's install_scripts and, for an
# editable install, setup.py's data_files):
#   share/ament_index/resource_index/packages/gnesf_ros   (marker)
#   share/gnesf_ros/{package.xml,launch,config,models}     (symlinks into the checkout when
#                                                           gnesf_ros is installed editable, copies otherwise)
#   lib/gnesf_ros/mapping_node                             (launcher: venv python -m gnesf_ros.ros.node)
#   usage: scripts/install_ament_prefix.sh VENV            Idempotent.
set -euo pipefail
VENV=${1:?usage: install_ament_prefix.sh VENV}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
VENV=$(cd "$VENV" && pwd)
PKG=gnesf_ros
SHARE="$VENV/share/$PKG"

# Editable install <=> the venv imports gnesf_ros from this checkout.
pkg_dir=$("$VENV/bin/python" -c "import os, $PKG; print(os.path.realpath(os.path.dirname($PKG.__file__)))")
if [ "$pkg_dir" = "$(realpath "$ROOT/$PKG")" ]; then mode=link; else mode=copy; fi

mkdir -p "$VENV/share/ament_index/resource_index/packages" "$SHARE" "$VENV/lib/$PKG"
: >"$VENV/share/ament_index/resource_index/packages/$PKG"

for item in package.xml launch config models; do
  src="$ROOT/$item"
  dst="$SHARE/$item"
  [ -e "$src" ] || { echo "[ament] warning: $src missing, skipped" >&2; continue; }
  if [ "$mode" = link ]; then
    [ -L "$dst" ] && [ "$(readlink "$dst")" = "$src" ] && continue
    rm -rf "$dst"
    ln -s "$src" "$dst"
  else
    rm -rf "$dst"
    cp -R "$src" "$dst"
  fi
done

launcher="$VENV/lib/$PKG/mapping_node"
cat >"$launcher.tmp" <<EOF
#!/bin/sh
# gnesf_ros mapping node launcher (found by ros2 run / launch_ros through the ament index).
exec "$VENV/bin/python" -m gnesf_ros.ros.node "\$@"
EOF
chmod 755 "$launcher.tmp"
mv -f "$launcher.tmp" "$launcher"
echo "[ament] $VENV is an ament prefix for $PKG ($mode mode)"
