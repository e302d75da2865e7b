"""Isolated ROS 2 environments for tests that talk over real DDS.

Each test gets its own ``ROS_DOMAIN_ID`` (reserved machine-wide with a lock file, so tests of
parallel pytest runs never hear each other), discovery limited to this host
(``ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST``) and the project's Fast DDS shared-memory profile
(``config/fastdds_shm.xml``). Use :func:`ros_domain` as a context manager around in-process rclpy
work and pass its environment to subprocesses started with :func:`spawn_python`.
"""
from __future__ import annotations

import contextlib
import fcntl
import os
import random
import subprocess
import sys
import textwrap
from collections.abc import Iterator, Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FASTDDS_PROFILE = ROOT / "config" / "fastdds_shm.xml"
# Domain ids 1..100: valid on Linux with default port mapping; 0 (the default) stays untouched.
_DOMAIN_RANGE = range(1, 101)
_LOCK_DIR = Path(os.environ.get("TMPDIR", "/tmp"))


@contextlib.contextmanager
def _reserve_domain() -> Iterator[int]:
    """Hold an exclusive lock on a free domain id for the duration of the block."""
    ids = list(_DOMAIN_RANGE)
    random.shuffle(ids)
    for domain in ids:
        fd = os.open(_LOCK_DIR / f"gnesf_ros_domain_{domain}.lock", os.O_CREAT | os.O_RDWR, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            continue
        try:
            yield domain
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)
        return
    raise RuntimeError("no free ROS_DOMAIN_ID in 1..100 (too many DDS tests running at once?)")


def ros_env(domain: int, base: dict[str, str] | None = None) -> dict[str, str]:
    """A copy of ``base`` (default os.environ) set up for an isolated, host-local ROS 2 graph."""
    env = dict(os.environ if base is None else base)
    env.update({
        "ROS_DOMAIN_ID": str(domain),
        "ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST",
        "FASTDDS_DEFAULT_PROFILES_FILE": str(FASTDDS_PROFILE),
        "PYTHONUNBUFFERED": "1",
    })
    env.pop("ROS_STATIC_PEERS", None)
    env.pop("ROS_LOCALHOST_ONLY", None)  # deprecated; conflicts with the discovery range
    return env


_ROS_KEYS = ("ROS_DOMAIN_ID", "ROS_AUTOMATIC_DISCOVERY_RANGE", "FASTDDS_DEFAULT_PROFILES_FILE",
             "ROS_STATIC_PEERS", "ROS_LOCALHOST_ONLY")


@contextlib.contextmanager
def ros_domain() -> Iterator[dict[str, str]]:
    """Reserve a unique domain and apply its environment to this process for the block.

    rcl reads these variables at ``rclpy.init`` / node creation, so create the context inside
    the block. Yields the environment to hand to subprocesses.
    """
    with _reserve_domain() as domain:
        env = ros_env(domain)
        saved = {k: os.environ.get(k) for k in _ROS_KEYS}
        os.environ.update({k: env[k] for k in _ROS_KEYS if k in env})
        for k in _ROS_KEYS:
            if k not in env:
                os.environ.pop(k, None)
        try:
            yield env
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v


def spawn_python(code: str, env: dict[str, str], args: Sequence[str] = (),
                 **popen_kw) -> subprocess.Popen:
    """Start ``python -c code args...`` (this interpreter) in ``env``; stdout/stderr piped, text mode."""
    popen_kw.setdefault("stdout", subprocess.PIPE)
    popen_kw.setdefault("stderr", subprocess.PIPE)
    popen_kw.setdefault("cwd", str(ROOT))
    return subprocess.Popen([sys.executable, "-c", textwrap.dedent(code), *args], env=env,
                            text=True, **popen_kw)


def spawn(cmd: Sequence[str], env: dict[str, str], **popen_kw) -> subprocess.Popen:
    """Start an arbitrary command in ``env`` from the repository root; stdout/stderr piped, text mode."""
    popen_kw.setdefault("stdout", subprocess.PIPE)
    popen_kw.setdefault("stderr", subprocess.PIPE)
    popen_kw.setdefault("cwd", str(ROOT))
    return subprocess.Popen(list(cmd), env=env, text=True, **popen_kw)


def stop(proc: subprocess.Popen, timeout: float = 5.0) -> tuple[str, str]:
    """SIGINT (what launch sends), then kill after ``timeout``; returns (stdout, stderr)."""
    if proc.poll() is None:
        proc.send_signal(2)
    try:
        return proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.communicate()
