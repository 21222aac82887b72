"""Case 7: allocate up to TOTAL_MB in CHUNK_MB chunks, each written to (so the pages are really used).
argv: TOTAL_MB CHUNK_MB"""
import json
import sys

total_mb, chunk_mb = int(sys.argv[1]), int(sys.argv[2])
held = []
for i in range(total_mb // chunk_mb):
    held.append(bytearray(b"\x01") * (chunk_mb * 1024 * 1024))  # repetition writes every byte
    print(json.dumps({"event": "escape", "allocated_mb": (i + 1) * chunk_mb}), flush=True)
print(json.dumps({"event": "escape", "done": True}), flush=True)
