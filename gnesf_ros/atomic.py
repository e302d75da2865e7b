"""Atomic writes: a file (or folder) is written beside its target under a hidden temporary name,
flushed and fsynced, then renamed onto the target (``os.replace``) and the folder fsynced. A reader,
or the next start after a crash or SIGKILL, sees the previous version or the new one, never a
0-byte or half-written file. Temporary names are hidden and never end in the target's name:
``.map.npz.tmp-1a2b3c4d.npz`` beside ``map.npz`` (the suffix is kept for writers that choose the
format from it: cv2.imwrite, np.savez, matplotlib). A failed write removes its temporary file;
one left by a killed writer is removed by a later write of the same target once it is
``STALE_S`` old.

    write_bytes(path, data) / write_text(path, text) / write_json(path, obj)
    with atomic_open(path, "wb") as f: ...            # a file object
    with atomic_path(path) as tmp: np.savez(tmp, ...)  # a path, for writers that need one
    with atomic_dir(folder) as tmp: model.save_pretrained(tmp)   # a whole folder, swapped in

``check_output_dir`` / ``check_output_file`` tell at start, with one line, that an output path
cannot be written (it is a file where a folder is needed, or lies under a file), instead of
failing after the work is done.
"""
from __future__ import annotations

import contextlib
import ctypes
import errno
import json
import os
import secrets
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from gnesf_ros.errors import DataError

TMP_TAG = ".tmp-"
STALE_S = 600.0  # a temporary file of the same target untouched this long was left by a killed writer


def temp_name(target: Path) -> Path:
    """A fresh hidden name beside ``target`` (same folder, so that the rename is atomic)."""
    return target.parent / f".{target.name}{TMP_TAG}{secrets.token_hex(4)}{target.suffix}"


def is_temp_name(name: str) -> bool:
    """Whether ``name`` is one of the temporary names this module writes."""
    return name.startswith(".") and TMP_TAG in name


def fsync_dir(folder: str | Path) -> None:
    """Make a rename inside ``folder`` durable (no-op where folders cannot be opened)."""
    try:
        fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def fsync_path(path: Path) -> None:
    """Flush a file or folder (its entries) to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_tree(folder: str | Path) -> None:
    """Flush every file below ``folder`` and the folders themselves to disk (before a rename)."""
    for root, _, files in os.walk(folder):
        for name in files:
            p = Path(root, name)
            if not p.is_symlink():
                fsync_path(p)
        fsync_dir(root)


def _make_parent(target: Path) -> None:
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise DataError(f"cannot write {target}: {_blocking_file(target.parent)} is a file, not a folder") from None


def _unlink(path: Path) -> None:
    with contextlib.suppress(OSError):
        os.unlink(path)


def remove_stale_temps(target: str | Path, max_age_s: float = STALE_S) -> int:
    """Remove temporary files/folders of ``target`` that a killed writer left behind (not
    modified for ``max_age_s``; a writer still at work keeps touching its own). -> how many."""
    target = Path(target)
    prefixes = (f".{target.name}{TMP_TAG}", f".{target.name}.old{TMP_TAG}")
    now, removed = time.time(), 0
    try:
        entries = list(os.scandir(target.parent))
    except OSError:
        return 0
    for entry in entries:
        if not entry.name.startswith(prefixes):
            continue
        try:
            if now - entry.stat(follow_symlinks=False).st_mtime < max_age_s:
                continue
            if entry.is_dir(follow_symlinks=False):
                shutil.rmtree(entry.path)
            else:
                os.unlink(entry.path)
            removed += 1
        except OSError:
            pass
    return removed


@contextlib.contextmanager
def atomic_path(target: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``target`` (an empty file exists there); when the block ends
    without an exception the file is fsynced and renamed onto ``target``, else it is removed."""
    target = Path(target)
    _make_parent(target)
    tmp = temp_name(target)
    os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))  # the umask applies
    try:
        yield tmp
        fsync_path(tmp)
        os.replace(tmp, target)
    except BaseException:
        _unlink(tmp)
        raise
    fsync_dir(target.parent)
    remove_stale_temps(target)


@contextlib.contextmanager
def atomic_open(target: str | Path, mode: str = "wb", **kwargs: Any) -> Iterator[IO]:
    """``open(temp, mode)`` beside ``target``; renamed onto ``target`` when the block succeeds."""
    if not mode.startswith("w"):
        raise ValueError(f"atomic_open writes a new file: mode must start with 'w', got {mode!r}")
    with atomic_path(target) as tmp, open(tmp, mode, **kwargs) as f:
        yield f


def write_bytes(target: str | Path, data: bytes) -> Path:
    """Atomically replace ``target`` with ``data``; returns the path."""
    with atomic_open(target, "wb") as f:
        f.write(data)
    return Path(target)


def write_text(target: str | Path, text: str, encoding: str = "utf-8") -> Path:
    """Atomically replace ``target`` with ``text``; returns the path."""
    return write_bytes(target, text.encode(encoding))


def write_json(target: str | Path, obj: Any, **dumps_kwargs: Any) -> Path:
    """Atomically replace ``target`` with ``json.dumps(obj, **dumps_kwargs)``; returns the path."""
    return write_text(target, json.dumps(obj, **dumps_kwargs))


# --------------------------------------------------------------------------------- folders
_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def _exchange(a: Path, b: Path) -> bool:
    """Swap two existing paths in one step (Linux renameat2 RENAME_EXCHANGE); False where the
    system cannot (then the caller renames in two steps)."""
    try:
        fn = ctypes.CDLL(None, use_errno=True).renameat2
    except (AttributeError, OSError):
        return False
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    if fn(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EPERM):
        return False
    raise OSError(err, os.strerror(err), str(b))


def _link_or_copy(src: str, dst: str) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


@contextlib.contextmanager
def atomic_dir(target: str | Path, keep_others: bool = False) -> Iterator[Path]:
    """Yield an empty temporary folder beside ``target``; when the block succeeds its files are
    fsynced and it replaces ``target`` (an atomic exchange on Linux; elsewhere two renames, the
    old folder kept under a hidden name in between). ``keep_others``: entries of the old folder
    that the new one lacks are carried over (hard links), e.g. a log written at the end of a run."""
    target = Path(target)
    _make_parent(target)
    if target.exists() and not target.is_dir():
        raise DataError(f"cannot write the folder {target}: it is a file")
    tmp = target.parent / f".{target.name}{TMP_TAG}{secrets.token_hex(4)}"
    os.mkdir(tmp, 0o777)  # the umask applies
    old: Path | None = None
    try:
        yield tmp
        if keep_others and target.is_dir():
            for entry in os.scandir(target):
                dst = tmp / entry.name
                if os.path.lexists(dst) or is_temp_name(entry.name):
                    continue
                if entry.is_dir(follow_symlinks=False):
                    shutil.copytree(entry.path, dst, symlinks=True, copy_function=_link_or_copy)
                else:
                    _link_or_copy(entry.path, str(dst))
        fsync_tree(tmp)
        if target.is_dir():
            if _exchange(tmp, target):
                old = tmp  # now holds the previous folder
            else:
                old = target.parent / f".{target.name}.old{TMP_TAG}{secrets.token_hex(4)}"
                os.rename(target, old)
                os.rename(tmp, target)
        else:
            os.rename(tmp, target)
        fsync_dir(target.parent)
    except BaseException:
        if old is None or old == tmp:
            shutil.rmtree(tmp, ignore_errors=True)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    remove_stale_temps(target)


# --------------------------------------------------------------------------------- checks
def _blocking_file(path: Path) -> Path:
    """The nearest existing ancestor of ``path`` (or ``path`` itself) that is not a folder."""
    for p in (path, *path.parents):
        if p.exists() or p.is_symlink():
            return p
    return path


def _check_parents(path: Path, what: str) -> None:
    """The nearest existing ancestor of ``path`` (which does not exist) must be a writable folder."""
    for p in path.parents:
        if p.is_dir():
            if not os.access(p, os.W_OK | os.X_OK):
                raise DataError(f"{what} {path}: the folder {p} is not writable")
            return
        if p.exists() or p.is_symlink():
            raise DataError(f"{what} {path}: {p} is a file, not a folder")


def check_output_dir(path: str | Path, what: str = "output folder") -> Path:
    """Raise DataError (one line) when ``path`` cannot become an output folder: it is a file or
    lies under a file, or the folder that would hold it is not writable. Creates nothing."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise DataError(f"{what} {path}: is a file, not a folder")
    if path.is_dir():
        if not os.access(path, os.W_OK | os.X_OK):
            raise DataError(f"{what} {path}: the folder is not writable")
        return path
    _check_parents(path, what)
    return path


def check_output_file(path: str | Path, what: str = "output file") -> Path:
    """Raise DataError (one line) when ``path`` cannot be written as a file: it is a folder, lies
    under a file, or its folder is not writable. Creates nothing."""
    path = Path(path)
    if path.is_dir():
        raise DataError(f"{what} {path}: is a folder, not a file")
    if path.parent.is_dir():
        if not os.access(path.parent, os.W_OK | os.X_OK):
            raise DataError(f"{what} {path}: the folder {path.parent} is not writable")
        return path
    _check_parents(path, what)
    return path
