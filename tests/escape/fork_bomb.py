"""Case 6: a fork bomb bounded by its own loop count; every child renames itself TOKEN and sleeps, so the
test can look for survivors after the run. argv: MAX_FORKS TOKEN"""
import ctypes
import json
import os
import sys
import time

max_forks, token = int(sys.argv[1]), sys.argv[2].encode()
libc = ctypes.CDLL(None)
forks, error = 0, None
for _ in range(max_forks):
    try:
        pid = os.fork()
    except OSError as e:
        error = f"{type(e).__name__}:{e.errno}"
        break
    if pid == 0:
        libc.prctl(15, ctypes.c_char_p(token), 0, 0, 0)  # PR_SET_NAME
        time.sleep(30)
        os._exit(0)
    forks += 1
print(json.dumps({"event": "escape", "forks": forks, "error": error}), flush=True)
