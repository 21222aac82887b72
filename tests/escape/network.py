"""Case 4: TCP to a server the parent started on 127.0.0.1, and a UDP connect() to 192.0.2.1 (a route
lookup: no packet is sent). argv: PORT"""
import json
import socket
import sys

port = int(sys.argv[1])
out = {}
try:
    s = socket.create_connection(("127.0.0.1", port), timeout=2)
    s.sendall(b"escaped\n")
    out["tcp"] = "CONNECTED"
    s.close()
except OSError as e:
    out["tcp"] = f"denied:{type(e).__name__}:{e.errno}"
try:
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    u.connect(("192.0.2.1", 9))
    out["udp"] = "CONNECTED"
    u.close()
except OSError as e:
    out["udp"] = f"denied:{type(e).__name__}:{e.errno}"
print(json.dumps({"event": "escape", **out}), flush=True)
