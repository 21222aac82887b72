"""The walls the harness puts up around itself, inside the sandbox, before any untrusted code is loaded.

Order matters: capabilities and uid first (they need privileges the later steps take away), then rlimits,
then Landlock (file system, TCP, signals and abstract sockets) and last seccomp (socket families and the
syscalls that reach the kernel's attack surface). Every step is all-or-nothing: a wall the launcher asked
for that cannot be built raises `ConfinementError`, and the harness exits before running the job.

Everything here must be called while the process has a single thread: Landlock and seccomp apply to the
calling thread and the threads and children it creates afterwards.
"""

from __future__ import annotations

import ctypes
import errno
import os
import resource
import stat

from capnas.sandbox.job import Confinement

# prctl(2) and capability constants from <linux/prctl.h>, <linux/capability.h>, <linux/securebits.h>.
PR_CAPBSET_DROP = 24
PR_SET_SECUREBITS = 28
PR_CAP_AMBIENT = 47
PR_CAP_AMBIENT_CLEAR_ALL = 4
# SECBIT_NOROOT, SECBIT_NO_SETUID_FIXUP, SECBIT_KEEP_CAPS_LOCKED, SECBIT_NO_CAP_AMBIENT_RAISE and their locks:
# uid 0 gains no capability back through execve, setuid or ambient raising.
SECUREBITS_LOCKED_DOWN = 0x01 | 0x02 | 0x04 | 0x08 | 0x20 | 0x40 | 0x80
_LINUX_CAPABILITY_VERSION_3 = 0x20080522

_libc = ctypes.CDLL(None, use_errno=True)


class ConfinementError(RuntimeError):
    """A wall the launcher asked for could not be put up."""


def _prctl(option: int, arg2: int = 0, arg3: int = 0) -> int:
    res = _libc.prctl(ctypes.c_int(option), ctypes.c_ulong(arg2), ctypes.c_ulong(arg3), ctypes.c_ulong(0),
                      ctypes.c_ulong(0))
    if res < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"prctl({option}): {os.strerror(err)}")
    return res


def _last_cap() -> int:
    try:
        with open("/proc/sys/kernel/cap_last_cap") as f:
            return int(f.read())
    except OSError:
        return 40  # CAP_CHECKPOINT_RESTORE, the last one in Linux 6.x


def _drop_bounding_set() -> bool:
    """Remove every capability from the bounding set (needs CAP_SETPCAP); False where not permitted."""
    try:
        for cap in range(_last_cap() + 1):
            _prctl(PR_CAPBSET_DROP, cap)
    except OSError as e:
        if e.errno == errno.EPERM:
            return False
        raise
    return True


def _clear_capabilities() -> None:
    """capset(2) with empty effective, permitted and inheritable sets for this thread."""

    class Header(ctypes.Structure):
        _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]

    class Data(ctypes.Structure):
        _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32),
                    ("inheritable", ctypes.c_uint32)]

    header = Header(_LINUX_CAPABILITY_VERSION_3, 0)
    data = (Data * 2)()
    if _libc.capset(ctypes.byref(header), ctypes.byref(data)) != 0:
        err = ctypes.get_errno()
        raise ConfinementError(f"capset: {os.strerror(err)}")


def effective_capabilities() -> int:
    """This process's effective capability mask, from /proc/self/status."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("CapEff:"):
                return int(line.split()[1], 16)
    return 0


def drop_privileges(conf: Confinement) -> list[str]:
    layers: list[str] = []
    if conf.run_as_uid is None and not conf.drop_caps:
        return layers
    if os.getuid() == 0:
        bounding_dropped = _drop_bounding_set()
        _prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL)
        if conf.drop_caps and conf.run_as_uid is None:
            _prctl(PR_SET_SECUREBITS, SECUREBITS_LOCKED_DOWN)
        if bounding_dropped:
            layers.append("cap-bounding-empty")
    if conf.run_as_uid is not None:
        gid = conf.run_as_gid if conf.run_as_gid is not None else conf.run_as_uid
        os.setgroups([])
        os.setresgid(gid, gid, gid)
        os.setresuid(conf.run_as_uid, conf.run_as_uid, conf.run_as_uid)
        if os.getresuid() != (conf.run_as_uid,) * 3:
            raise ConfinementError(f"could not switch to uid {conf.run_as_uid}")
        layers.append("per-run-uid")
    else:
        _clear_capabilities()
    if effective_capabilities() != 0:
        raise ConfinementError(f"capabilities left after the drop: {effective_capabilities():#x}")
    layers.append("no-capabilities")
    return layers


def set_rlimits(rlimits: dict[str, tuple[int, int]]) -> list[str]:
    for name, (soft, hard) in rlimits.items():
        which = getattr(resource, name, None)
        if which is None:
            raise ConfinementError(f"unknown rlimit {name!r}")
        resource.setrlimit(which, (soft, hard))
    return ["rlimits:" + ",".join(sorted(n.removeprefix("RLIMIT_").lower() for n in rlimits))] if rlimits else []


def apply_landlock(read_paths: list[str], write_paths: list[str]) -> list[str]:
    """Deny every file access outside the listed paths, every TCP bind/connect, signals to and abstract
    unix sockets of processes outside this sandbox."""
    try:
        import landlockpy
        from landlockpy import AccessFS, AccessNet, Ruleset, Scope
    except ImportError as e:
        raise ConfinementError(f"Landlock requested but the landlockpy package is missing: {e}") from e
    abi = landlockpy.abi_version()
    if abi < 1:
        raise ConfinementError("Landlock requested but the kernel does not offer it")
    # Device ioctls stay allowed (CUDA lives on them); everything else on the file system is handled.
    handled_fs = landlockpy.fs_for_abi(abi) & ~AccessFS.IOCTL_DEV
    read = AccessFS.READ_FILE | AccessFS.READ_DIR | AccessFS.EXECUTE
    file_only = AccessFS.READ_FILE | AccessFS.WRITE_FILE | AccessFS.EXECUTE | AccessFS.TRUNCATE
    layers = ["landlock-fs"]
    with Ruleset(handled_fs=handled_fs, handled_net=AccessNet.BIND_TCP | AccessNet.CONNECT_TCP,
                 scoped=Scope.ABSTRACT_UNIX_SOCKET | Scope.SIGNAL) as ruleset:
        for paths, access in ((read_paths, read), (write_paths, handled_fs)):
            for path in paths:
                try:
                    is_dir = stat.S_ISDIR(os.stat(path).st_mode)
                except FileNotFoundError:
                    continue  # optional paths (a GPU device, /dev/shm) that this host lacks
                ruleset.allow_path(path, access if is_dir else access & file_only)
        if ruleset.handled_net:
            layers.append("landlock-net-tcp")
        if ruleset.scoped:
            layers.append("landlock-scope-signal-abstract-unix")
        ruleset.restrict()
    return layers


# Syscalls that no training job needs and that sandbox escapes are made of. EPERM, not kill: code that
# probes for a feature (io_uring in a library, ptrace in a debugger helper) gets an error it can handle.
DENIED_SYSCALLS = (
    "ptrace", "process_vm_readv", "process_vm_writev", "bpf", "unshare", "setns", "mount", "umount2",
    "pivot_root", "chroot", "move_mount", "open_tree", "fsopen", "fsmount", "fsconfig", "fspick",
    "mount_setattr", "io_uring_setup", "io_uring_enter", "io_uring_register", "keyctl", "add_key",
    "request_key", "perf_event_open", "userfaultfd", "kexec_load", "kexec_file_load", "init_module",
    "finit_module", "delete_module", "reboot", "swapon", "swapoff", "open_by_handle_at", "acct",
    "quotactl", "syslog", "lookup_dcookie", "fanotify_init",
)
# clone(2) flags that would create namespaces.
NAMESPACE_CLONE_FLAGS = (0x00020000, 0x02000000, 0x04000000, 0x08000000, 0x10000000, 0x20000000, 0x40000000,
                         0x00000080)  # NEWNS, NEWCGROUP, NEWUTS, NEWIPC, NEWUSER, NEWPID, NEWNET, NEWTIME
TIOCSTI = 0x5412


def apply_seccomp() -> list[str]:
    """Allow everything except: sockets of any family but AF_UNIX, the syscalls in DENIED_SYSCALLS,
    namespace-creating clone flags, clone3 (its flags hide behind a pointer: ENOSYS makes libc fall back
    to clone, which is filtered) and terminal input injection."""
    try:
        import pyseccomp as sc
    except ImportError as e:
        raise ConfinementError(f"seccomp requested but the pyseccomp package is missing: {e}") from e
    f = sc.SyscallFilter(sc.ALLOW)
    eperm, eacces = sc.ERRNO(errno.EPERM), sc.ERRNO(errno.EACCES)
    f.add_rule(eacces, "socket", sc.Arg(0, sc.NE, 1))  # AF_UNIX == 1
    f.add_rule(eacces, "socketpair", sc.Arg(0, sc.NE, 1))
    for name in DENIED_SYSCALLS:
        try:
            f.add_rule(eperm, name)
        except (RuntimeError, ValueError, OSError):
            pass  # a syscall this architecture does not have
    for flag in NAMESPACE_CLONE_FLAGS:
        f.add_rule(eperm, "clone", sc.Arg(0, sc.MASKED_EQ, flag, flag))
    f.add_rule(sc.ERRNO(errno.ENOSYS), "clone3")
    f.add_rule(eperm, "ioctl", sc.Arg(1, sc.MASKED_EQ, 0xFFFFFFFF, TIOCSTI))
    f.load()
    return ["seccomp"]


def confine(conf: Confinement) -> list[str]:
    """Apply `conf` to this process; returns the names of the layers now in force."""
    try:
        layers = drop_privileges(conf)
        layers += set_rlimits(conf.rlimits)
        if conf.landlock:
            layers += apply_landlock(conf.read_paths, conf.write_paths)
        if conf.seccomp:
            layers += apply_seccomp()
    except ConfinementError:
        raise
    except OSError as e:
        raise ConfinementError(f"{type(e).__name__}: {e}") from e
    return layers
