"""Which isolation this host can give, detected once per process.

- A, isolated: bubblewrap works (namespaces, a whitelist of mounts), with Landlock + seccomp inside.
- B, restricted: no usable bubblewrap, but Landlock + seccomp (plus rlimits, watchdog, cgroups if writable).
- C, unsandboxed: neither; refused unless CAPNAS_ALLOW_UNSANDBOXED=1.

`CAPNAS_SANDBOX_TIER=A|B|C` forces a tier (tests run the escape suite per tier); forcing one the host
cannot give is an error that says what is missing.
"""

from __future__ import annotations

import functools
import glob
import os
import shutil
import subprocess
from dataclasses import dataclass, field

from capnas.sandbox.cgroups import CgroupSupport, detect_cgroups

TIER_ENV = "CAPNAS_SANDBOX_TIER"
ALLOW_UNSANDBOXED_ENV = "CAPNAS_ALLOW_UNSANDBOXED"
CGROUPS_ENV = "CAPNAS_SANDBOX_CGROUPS"  # "0": do without cgroups (tests of the rlimit + watchdog fallback)
TIER_NAMES = {"A": "isolated", "B": "restricted", "C": "unsandboxed"}


class SandboxUnavailable(RuntimeError):
    """The requested tier cannot run on this host; the message says what is missing and how to get it."""


@dataclass(frozen=True)
class HostSupport:
    """What this host offers, probed once per process (`host_support()`)."""

    is_root: bool
    bwrap: str | None  # path of the bwrap binary
    bwrap_error: str  # why bwrap does not work here ("" when it does)
    landlock_abi: int
    landlock_error: str
    seccomp_error: str  # "" when seccomp filters can be loaded
    cgroups: CgroupSupport | None
    cgroups_error: str
    gpu_devices: tuple[str, ...]

    @property
    def usable_cgroups(self) -> CgroupSupport | None:
        """The cgroups runs use now: none where CAPNAS_SANDBOX_CGROUPS=0."""
        return None if os.environ.get(CGROUPS_ENV, "1") == "0" else self.cgroups

    @property
    def bwrap_ok(self) -> bool:
        return self.bwrap is not None and not self.bwrap_error

    @property
    def landlock_ok(self) -> bool:
        return self.landlock_abi >= 1 and not self.landlock_error

    @property
    def seccomp_ok(self) -> bool:
        return not self.seccomp_error


@dataclass(frozen=True)
class TierInfo:
    tier: str  # "A", "B" or "C"
    layers: tuple[str, ...]  # the layers a run in this tier gets on this host
    missing: tuple[tuple[str, str], ...] = field(default=())  # (layer, how to get it)
    forced: bool = False
    host: HostSupport | None = None

    def line(self) -> str:
        forced = ", forced by " + TIER_ENV if self.forced else ""
        return f"sandbox tier {self.tier} ({TIER_NAMES[self.tier]}{forced}): {' '.join(self.layers)}"

    def hints(self) -> list[str]:
        return [f"missing {layer}: {hint}" for layer, hint in self.missing]


def bwrap_namespace_args(is_root: bool) -> list[str]:
    """Namespaces for tier A. As root bwrap needs no user namespace: the harness drops to a per-run uid
    itself, which only works in the initial user namespace (a user namespace made by root maps uid 0 only)."""
    common = ["--unshare-ipc", "--unshare-pid", "--unshare-net", "--unshare-uts", "--unshare-cgroup-try"]
    return common if is_root else ["--unshare-user", *common]


def _probe_bwrap(is_root: bool) -> tuple[str | None, str]:
    path = shutil.which("bwrap")
    if path is None:
        return None, "bubblewrap is not installed: apt-get install bubblewrap (or `make setup` as root)"
    argv = [path, *bwrap_namespace_args(is_root), "--die-with-parent", "--clearenv", "--cap-drop", "ALL",
            "--ro-bind", "/usr", "/usr", "--symlink", "usr/lib", "/lib", "--symlink", "usr/lib64", "/lib64",
            "--symlink", "usr/bin", "/bin", "--proc", "/proc", "--dev", "/dev", "/usr/bin/true"]
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=20, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired) as e:
        return path, f"bwrap did not start: {e}"
    if proc.returncode == 0:
        return path, ""
    err = proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else f"exit {proc.returncode}"
    if "uid map" in err or "Permission denied" in err or "Operation not permitted" in err:
        hint = ("unprivileged user namespaces are blocked. On Ubuntu >= 23.10: sudo sysctl -w "
                "kernel.apparmor_restrict_unprivileged_userns=0 (or give bwrap an AppArmor profile); in Docker: "
                "the default seccomp profile blocks them (--security-opt seccomp=unconfined) - or run capnas as root")
    else:
        hint = "bubblewrap cannot create its namespaces here"
    return path, f"{err} ({hint})"


def _probe_landlock() -> tuple[int, str]:
    try:
        import landlockpy
    except ImportError:
        return 0, "the landlockpy package is missing: pip install landlockpy"
    abi = landlockpy.abi_version()
    if abi < 1:
        return 0, ("the kernel does not enable Landlock (Linux >= 5.13 with `landlock` in the lsm= boot "
                   "parameter / CONFIG_LSM)")
    return abi, ""


def _probe_seccomp() -> str:
    try:
        import pyseccomp

        pyseccomp.SyscallFilter(pyseccomp.ALLOW)  # loads libseccomp; building a filter installs nothing
    except ImportError:
        return "the pyseccomp package is missing: pip install pyseccomp"
    except Exception as e:  # noqa: BLE001 - libseccomp absent or unusable
        return f"libseccomp is unusable ({e}): apt-get install libseccomp2"
    return ""


@functools.cache
def host_support() -> HostSupport:
    is_root = os.geteuid() == 0
    bwrap, bwrap_error = _probe_bwrap(is_root)
    landlock_abi, landlock_error = _probe_landlock()
    cgroups, cgroups_error = detect_cgroups()
    return HostSupport(is_root=is_root, bwrap=bwrap, bwrap_error=bwrap_error, landlock_abi=landlock_abi,
                       landlock_error=landlock_error, seccomp_error=_probe_seccomp(), cgroups=cgroups,
                       cgroups_error=cgroups_error,
                       gpu_devices=tuple(sorted(glob.glob("/dev/nvidia*"))))


def _layers(tier: str, host: HostSupport) -> tuple[list[str], list[tuple[str, str]]]:
    layers: list[str] = []
    missing: list[tuple[str, str]] = []
    if tier == "A":
        layers += ["bwrap", "mount-whitelist", "clean-env", "net-ns", "pid-ns", "ipc-ns", "no-capabilities"]
        if host.is_root:
            layers.append("per-run-uid")
    if tier in ("A", "B"):
        if host.landlock_ok:
            layers += ["landlock-fs"] + (["landlock-net-tcp"] if host.landlock_abi >= 4 else [])
            layers += ["landlock-scope-signal"] if host.landlock_abi >= 6 else []
        else:
            missing.append(("landlock", host.landlock_error))
        if host.seccomp_ok:
            layers.append("seccomp")
        else:
            missing.append(("seccomp", host.seccomp_error))
        if tier == "B":
            layers += ["clean-env", "no-capabilities"] if host.is_root else ["clean-env"]
            missing.append(("bwrap", host.bwrap_error or "bubblewrap is usable but tier B was forced"))
    layers.append("rlimits")
    if host.usable_cgroups is not None:
        layers += [f"{host.usable_cgroups.describe()}-memory", f"{host.usable_cgroups.describe()}-pids"]
    else:
        layers.append("rss-watchdog")
        if tier != "C":
            missing.append(("cgroups", host.cgroups_error or f"disabled by {CGROUPS_ENV}=0"))
    layers += ["wall-timeout", "tree-kill", "subreaper", "parent-nondumpable"]
    return layers, missing


def detect_tier() -> TierInfo:
    """The tier runs get here: the best the host offers, or the one forced by CAPNAS_SANDBOX_TIER."""
    host = host_support()
    forced = os.environ.get(TIER_ENV, "").strip().upper()
    if forced and forced not in TIER_NAMES:
        raise SandboxUnavailable(f"{TIER_ENV}={forced!r} is not a tier: use A, B or C (or unset it)")
    if forced == "A" and not host.bwrap_ok:
        raise SandboxUnavailable(f"{TIER_ENV}=A but bubblewrap does not work here: {host.bwrap_error}")
    if forced == "B" and not (host.landlock_ok and host.seccomp_ok):
        raise SandboxUnavailable(f"{TIER_ENV}=B needs Landlock and seccomp: "
                                 f"{'; '.join(e for e in (host.landlock_error, host.seccomp_error) if e)}")
    if forced:
        tier = forced
    elif host.bwrap_ok:
        tier = "A"
    elif host.landlock_ok and host.seccomp_ok:
        tier = "B"
    else:
        tier = "C"
    layers, missing = _layers(tier, host)
    if tier == "C":
        missing = [("bwrap", host.bwrap_error or "tier C was forced"),
                   ("landlock", host.landlock_error or "tier C was forced"),
                   ("seccomp", host.seccomp_error or "tier C was forced")]
    return TierInfo(tier=tier, layers=tuple(layers), missing=tuple(missing), forced=bool(forced), host=host)


def require_runnable(info: TierInfo) -> None:
    """Refuse tier C unless the user opted in; say what is not protected."""
    if info.tier == "C" and os.environ.get(ALLOW_UNSANDBOXED_ENV) != "1":
        raise SandboxUnavailable(
            "no sandbox is available on this host (tier C): untrusted model code would run with your user's "
            "file, network and process access. Install bubblewrap or enable Landlock, or set "
            f"{ALLOW_UNSANDBOXED_ENV}=1 to run unprotected anyway.\n  " + "\n  ".join(TierInfo.hints(info)))
