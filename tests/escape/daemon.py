"""Case 10: a double-forked setsid daemon named TOKEN that tries to outlive the run (for at most 60 s).
The job itself exits 0 as soon as the daemon is up. argv: TOKEN"""
import ctypes
import json
import os
import sys
import time

token = sys.argv[1].encode()
r, w = os.pipe()
if os.fork() == 0:
    os.setsid()
    if os.fork() == 0:
        ctypes.CDLL(None).prctl(15, ctypes.c_char_p(token), 0, 0, 0)  # PR_SET_NAME
        os.write(w, str(os.getpid()).encode())
        os.close(w)
        for _ in range(600):
            time.sleep(0.1)
        os._exit(0)
    os._exit(0)
os.close(w)
daemon_pid = os.read(r, 32).decode()
print(json.dumps({"event": "escape", "daemon_pid": daemon_pid}), flush=True)
