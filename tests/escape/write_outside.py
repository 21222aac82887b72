"""Case 12: write outside scratch: into the dataset, site-packages and the host /tmp. argv: PATH..."""
import json
import sys

out = {}
for path in sys.argv[1:]:
    try:
        with open(path, "w") as f:
            f.write("escaped")
        out[path] = "WRITTEN"
    except OSError as e:
        out[path] = f"denied:{type(e).__name__}"
print(json.dumps({"event": "escape", "results": out}), flush=True)
