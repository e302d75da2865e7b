#!/usr/bin/env bash
# Make the venv a valid ament prefix for gnesf_ros, so that with AMENT_PREFIX_PATH=$VENV
# `ros2 run gnesf_ros mapping_node` / `ros2 launch gnesf_ros mapping.launch.py` and
# ament_index_python find the package (pip ignores setup.cfg's install_scripts and, for an
# editable install, setup.py's data_files):
#   share/ament_index/resource_index/packages/gnesf_ros   (marker)
#   share/gnesf_ros/package.xml
#   share/gnesf_ros/{launch,config,models}/...             real folders (ros2launch finds launch
#                                                           files with os.walk, which does not enter
#                                                           folder links), holding per-file symlinks into
#                                                           the checkout when gnesf_ros is installed
#                                                           editable (like colcon --symlink-install),
#                                                           copies otherwise
#   lib/gnesf_ros/mapping_node                             (launcher: venv python -m gnesf_ros.ros.node)
# Entries whose source is gone (and whole-folder links of older installs) are removed.
# Skipped like setup.py's data_files skips them: dot files, __pycache__/, *.pyc, training states (train_state.pt, *.state.pt).
#   usage: scripts/install_ament_prefix.sh VENV            Idempotent.
set -euo pipefail
VENV=${1:?usage: install_ament_prefix.sh VENV}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
VENV=$(cd "$VENV" && pwd)
PKG=gnesf_ros
SHARE="$VENV/share/$PKG"

# Editable install <=> the venv imports gnesf_ros from this checkout (asked from /: `python -c`
# would otherwise find the checkout's gnesf_ros through the working directory).
pkg_dir=$(cd / && "$VENV/bin/python" -c "import os, $PKG; print(os.path.realpath(os.path.dirname($PKG.__file__)))")
if [ "$pkg_dir" = "$(realpath "$ROOT/$PKG")" ]; then mode=link; else mode=copy; fi

mkdir -p "$VENV/share/ament_index/resource_index/packages" "$SHARE" "$VENV/lib/$PKG"
: >"$VENV/share/ament_index/resource_index/packages/$PKG"

"$VENV/bin/python" - "$mode" "$ROOT" "$SHARE" package.xml launch config models <<'PY'
"""Mirror checkout items into share/<pkg>: real folders, per-file links (link) or copies (copy)."""
import filecmp
import os
import shutil
import sys

mode, root, share, items = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:]


def skipped(name: str) -> bool:
    return (name.startswith(".") or name == "__pycache__" or name.endswith(".pyc") or name == "train_state.pt"
            or name.endswith(".state.pt"))


def remove(path: str) -> None:
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path)
    elif os.path.lexists(path):
        os.unlink(path)


def sync_file(src: str, dst: str) -> None:
    if mode == "link":
        if os.path.islink(dst) and os.readlink(dst) == src:
            return
        remove(dst)
        os.symlink(src, dst)
    else:
        if (os.path.isfile(dst) and not os.path.islink(dst)
                and filecmp.cmp(src, dst, shallow=True)):
            return
        remove(dst)
        shutil.copy2(src, dst)


def sync_dir(src: str, dst: str) -> None:
    if os.path.islink(dst) or (os.path.lexists(dst) and not os.path.isdir(dst)):
        os.unlink(dst)  # e.g. the whole-folder link of an older install: never follow it
    os.makedirs(dst, exist_ok=True)
    wanted = set()
    with os.scandir(src) as it:
        for e in it:
            if skipped(e.name):
                continue
            wanted.add(e.name)
            s, d = os.path.join(src, e.name), os.path.join(dst, e.name)
            if e.is_dir():  # follows links: a linked source folder becomes a real folder too
                sync_dir(s, d)
            elif e.is_file():
                sync_file(s, d)
            else:
                wanted.discard(e.name)  # dangling link, socket, ...
    with os.scandir(dst) as it:
        stale = [e.path for e in it if e.name not in wanted]
    for path in stale:
        remove(path)


for item in items:
    src, dst = os.path.join(root, item), os.path.join(share, item)
    if os.path.isdir(src):
        sync_dir(src, dst)
    elif os.path.isfile(src):
        sync_file(src, dst)
    else:
        print(f"[ament] warning: {src} missing, skipped", file=sys.stderr)
PY

launcher="$VENV/lib/$PKG/mapping_node"
cat >"$launcher.tmp" <<EOF2
#!/bin/sh
# gnesf_ros mapping node launcher (found by ros2 run / launch_ros through the ament index).
exec "$VENV/bin/python" -m gnesf_ros.ros.node "\$@"
EOF2
chmod 755 "$launcher.tmp"
mv -f "$launcher.tmp" "$launcher"
echo "[ament] $VENV is an ament prefix for $PKG ($mode mode)"
