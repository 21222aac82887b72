"""capnas.sandbox: how untrusted code runs. Isolation tiers, limits, launcher, in-sandbox harness.

    from capnas.sandbox import Job, Limits, run_sandboxed
    result = run_sandboxed(Job(entry="probe", scratch=workdir, args={...}), on_event=print)

The launcher side is imported lazily: the harness (`python -m capnas.sandbox.harness`) imports this
package too, and should load nothing it does not use before it has confined itself.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from capnas.sandbox.job import Job, Limits, SandboxResult

if TYPE_CHECKING:
    from capnas.sandbox.launcher import SandboxError, run_sandboxed
    from capnas.sandbox.tiers import SandboxUnavailable, TierInfo, detect_tier

_LAZY = {
    "run_sandboxed": "capnas.sandbox.launcher",
    "SandboxError": "capnas.sandbox.launcher",
    "detect_tier": "capnas.sandbox.tiers",
    "TierInfo": "capnas.sandbox.tiers",
    "SandboxUnavailable": "capnas.sandbox.tiers",
}

__all__ = ["Job", "Limits", "SandboxResult", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'capnas.sandbox' has no attribute {name!r}")
