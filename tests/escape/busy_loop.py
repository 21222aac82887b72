"""Case 9a: burn CPU for at most SECONDS of wall time. argv: SECONDS"""
import sys
import time

end = time.monotonic() + float(sys.argv[1])
n = 0
while time.monotonic() < end:
    n += 1
