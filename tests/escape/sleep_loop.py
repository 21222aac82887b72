"""Case 9b: sleep in a loop for at most SECONDS. argv: SECONDS"""
import sys
import time

end = time.monotonic() + float(sys.argv[1])
while time.monotonic() < end:
    time.sleep(0.1)
