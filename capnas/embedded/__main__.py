"""`python -m capnas.embedded [0.5b|1.5b] [--serve]`, and `python -m capnas.embedded serve ...` (the server process)."""

from __future__ import annotations

import contextlib
import sys
import time

from capnas.embedded.front import _serve
from capnas.embedded.server import EmbeddedLLM
from capnas.embedded.weights import DEFAULT_MODEL, ensure_model


def _main(argv: list[str] | None = None) -> int:
    """`python -m capnas.embedded [0.5b|1.5b] [--serve]`: assemble the model(s), or serve one until Ctrl-C.
    (`python -m capnas.embedded serve ...` is the server process itself; see `_serve`.)"""
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["serve"]:
        return _serve(args[1:])
    serve = "--serve" in args
    names = [a for a in args if not a.startswith("--")] or [DEFAULT_MODEL]
    for name in names:
        began = time.monotonic()
        path = ensure_model(name, progress=print)
        print(f"{path}  {path.stat().st_size} bytes  ({time.monotonic() - began:.1f} s)")
    if serve:
        with EmbeddedLLM(names[0], progress=print) as local:
            print(f"serving {local.model.served_name} at {local.base_url} (started in {local.startup_s:.1f} s); Ctrl-C stops")
            with contextlib.suppress(KeyboardInterrupt):
                while local.running:
                    time.sleep(1)
    return 0


if __name__ == "__main__":
    raise SystemExit(_main())
