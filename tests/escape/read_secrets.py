"""Case 1: read a planted secret in the host home and /etc/shadow. argv: SECRET_FILE"""
import json
import os
import sys


def report(**kw):
    print(json.dumps({"event": "escape", **kw}), flush=True)


def attempt(path):
    try:
        if os.path.isdir(path):
            return "LISTED:" + ",".join(sorted(os.listdir(path))[:50])
        with open(path, "rb") as f:
            return "READ:" + f.read(200).decode(errors="replace")
    except OSError as e:
        return f"denied:{type(e).__name__}"


secret = sys.argv[1]
report(results={p: attempt(p) for p in (secret, os.path.dirname(secret), "/etc/shadow", "/root")})
