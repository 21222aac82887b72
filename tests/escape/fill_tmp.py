"""Case 8b: fill /tmp and $TMPDIR with FILE_MB files, up to TOTAL_MB each. argv: TOTAL_MB FILE_MB"""
import json
import os
import sys

total_mb, file_mb = int(sys.argv[1]), int(sys.argv[2])
chunk = b"\0" * (1024 * 1024)


def fill(directory):
    written = 0
    try:
        for i in range(total_mb // file_mb):
            with open(os.path.join(directory, f"fill-{os.getpid()}-{i}"), "wb") as f:
                for _ in range(file_mb):
                    f.write(chunk)
                    f.flush()
                    written += 1
    except OSError as e:
        return written, f"{type(e).__name__}:{e.errno}"
    return written, None


for name, directory in (("tmp", "/tmp"), ("tmpdir", os.environ.get("TMPDIR", "/tmp"))):
    written, error = fill(directory)
    print(json.dumps({"event": "escape", "dir": name, "path": directory, "written_mb": written, "error": error}),
          flush=True)
