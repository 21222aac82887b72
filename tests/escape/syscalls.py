"""Case 13: unshare, ptrace, io_uring_setup, bpf and mount through libc. Each must fail with EPERM
(seccomp) rather than with an argument error that would mean the kernel looked at it."""
import ctypes
import json
import os
import platform

libc = ctypes.CDLL(None, use_errno=True)
NR = {"x86_64": {"io_uring_setup": 425, "bpf": 321}, "aarch64": {"io_uring_setup": 425, "bpf": 280}}
nr = NR.get(platform.machine(), NR["x86_64"])
CLONE_NEWUSER, CLONE_NEWNS, PTRACE_ATTACH = 0x10000000, 0x00020000, 16


def result(rc):
    return "OK" if rc == 0 or rc > 0 else os.strerror(ctypes.get_errno()) + f":{ctypes.get_errno()}"


params = ctypes.create_string_buffer(120)
attr = ctypes.create_string_buffer(128)
out = {
    "unshare_user": result(libc.unshare(CLONE_NEWUSER)),
    "unshare_mount": result(libc.unshare(CLONE_NEWNS)),
    "ptrace_attach_parent": result(libc.ptrace(PTRACE_ATTACH, os.getppid(), None, None)),
    "io_uring_setup": result(libc.syscall(nr["io_uring_setup"], 4, params)),
    "bpf": result(libc.syscall(nr["bpf"], 0, attr, 128)),  # BPF_MAP_CREATE with a zeroed attr
    "mount_tmpfs": result(libc.mount(b"none", b"/tmp", b"tmpfs", 0, None)),
}
print(json.dumps({"event": "escape", **out}), flush=True)
