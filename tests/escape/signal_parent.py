"""Case 11: signal the launcher (its pid is passed in; the test installs a SIGUSR1 handler, so a signal
that gets through is counted, not fatal) and the process that started us. argv: PARENT_PID"""
import json
import os
import signal
import sys

parent = int(sys.argv[1])
out = {}
for name, pid, sig in (("probe_parent", parent, 0), ("usr1_parent", parent, signal.SIGUSR1),
                       ("probe_ppid", os.getppid(), 0)):
    try:
        os.kill(pid, sig)
        out[name] = "SENT"
    except OSError as e:
        out[name] = f"denied:{type(e).__name__}"
out["ppid"] = os.getppid()
print(json.dumps({"event": "escape", **out}), flush=True)
