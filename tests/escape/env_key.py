"""Case 2: look for an API key the parent holds in its environment. Reports the variable names it sees."""
import json
import os

print(json.dumps({"event": "escape", "names": sorted(os.environ), "values": sorted(os.environ.values())}), flush=True)
