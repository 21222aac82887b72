"""The bubblewrap command line for tier A: a root file system built from a whitelist of mounts.

Inside, paths are the same as outside (scratch, dataset, venv, Python prefix), so job.json needs no
translation. Directories bwrap creates on the way to a mount point get mode 0755 (its default is 0700,
which a per-run uid could not cross).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import PurePosixPath

from capnas.sandbox.tiers import bwrap_namespace_args

# Top-level names that merged-/usr systems make symlinks into /usr (and older ones keep as directories).
_USR_LINKS = ("bin", "sbin", "lib", "lib32", "lib64", "libx32")
_ETC_FILES = ("/etc/ld.so.cache",)


@dataclass
class BwrapMounts:
    read_only: list[str]  # host dirs or files mounted read-only at the same path
    read_write: list[str]  # the scratch dir
    tmp_mb: int
    gpu_devices: list[str] = field(default_factory=list)


def _under(path: str, roots: list[str]) -> bool:
    p = PurePosixPath(path)
    return any(p == PurePosixPath(r) or PurePosixPath(r) in p.parents for r in roots)


def bwrap_argv(bwrap: str, mounts: BwrapMounts, *, is_root: bool, env: dict[str, str], chdir: str) -> list[str]:
    argv = [bwrap, *bwrap_namespace_args(is_root), "--die-with-parent", "--new-session", "--clearenv",
            "--cap-drop", "ALL"]
    if is_root:
        # Just enough for the harness to read job.json in a scratch dir that already belongs to the per-run
        # uid, drop to that uid and empty its bounding set; the uid change clears them all, before any
        # untrusted code runs.
        argv += ["--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID", "--cap-add", "CAP_SETPCAP",
                 "--cap-add", "CAP_DAC_READ_SEARCH"]
    argv += ["--ro-bind", "/usr", "/usr", "--perms", "0755", "--dir", "/etc"]
    for name in _USR_LINKS:
        host = f"/{name}"
        if os.path.islink(host):
            argv += ["--symlink", os.readlink(host), host]
        elif os.path.isdir(host):
            argv += ["--ro-bind", host, host]
    for f in _ETC_FILES:
        argv += ["--ro-bind-try", f, f]
    tmp_bytes = str(mounts.tmp_mb * 1024 * 1024)
    argv += ["--proc", "/proc", "--dev", "/dev",
             "--perms", "1777", "--size", tmp_bytes, "--tmpfs", "/tmp",
             "--perms", "1777", "--size", tmp_bytes, "--tmpfs", "/dev/shm"]

    mounted = ["/usr", "/proc", "/dev"]
    read_only_mounted = ["/usr"]
    created = {"/", "/tmp", "/etc"}
    binds = sorted({(p, False) for p in mounts.read_only} | {(p, True) for p in mounts.read_write},
                   key=lambda b: len(PurePosixPath(b[0]).parts))
    for path, writable in binds:
        if not writable and _under(path, read_only_mounted):
            continue  # already visible through an enclosing read-only mount
        for parent in reversed(PurePosixPath(path).parents):
            parent_s = str(parent)
            if parent_s in created or _under(parent_s, mounted):
                continue
            argv += ["--perms", "0755", "--dir", parent_s]
            created.add(parent_s)
        argv += ["--bind" if writable else "--ro-bind", path, path]
        mounted.append(path)
        if not writable:
            read_only_mounted.append(path)
    if mounts.gpu_devices:
        for dev in mounts.gpu_devices:
            argv += ["--dev-bind", dev, dev]
        argv += ["--ro-bind-try", "/proc/driver/nvidia", "/proc/driver/nvidia", "--ro-bind", "/sys", "/sys"]
    for key, value in env.items():
        argv += ["--setenv", key, value]
    argv += ["--chdir", chdir, "--"]
    return argv
