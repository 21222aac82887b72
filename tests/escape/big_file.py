"""Case 8a: write one file of up to TOTAL_MB (10 GB in the case) in 1 MB chunks. argv: PATH TOTAL_MB"""
import json
import sys

path, total_mb = sys.argv[1], int(sys.argv[2])
chunk = b"\0" * (1024 * 1024)
written = 0
try:
    with open(path, "wb") as f:
        for _ in range(total_mb):
            f.write(chunk)
            f.flush()
            written += 1
except OSError as e:
    print(json.dumps({"event": "escape", "written_mb": written, "error": f"{type(e).__name__}:{e.errno}"}), flush=True)
    raise
print(json.dumps({"event": "escape", "written_mb": written, "error": None}), flush=True)
