"""Case 3: scan /proc/*/environ (and cmdline) of every visible process for a key. argv: KEY"""
import json
import os
import sys

key = sys.argv[1].encode()
read, hits = 0, []
try:
    pids = [p for p in os.listdir("/proc") if p.isdigit()]
except OSError as e:
    pids = []
    print(json.dumps({"event": "escape", "proc_listing": f"denied:{type(e).__name__}"}), flush=True)
for pid in pids[:5000]:
    for name in ("environ", "cmdline"):
        try:
            with open(f"/proc/{pid}/{name}", "rb") as f:
                data = f.read(1 << 20)
        except OSError:
            continue
        read += 1
        if key in data:
            hits.append(f"{pid}/{name}")
print(json.dumps({"event": "escape", "visible_pids": len(pids), "files_read": read, "hits": hits}), flush=True)
