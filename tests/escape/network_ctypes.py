"""Case 5: case 4 through libc directly (socket(2)/connect(2) via ctypes), bypassing Python's socket
module and any audit hook. argv: PORT"""
import ctypes
import json
import socket
import struct
import sys

libc = ctypes.CDLL(None, use_errno=True)
port = int(sys.argv[1])


def sockaddr_in(host, port):
    return struct.pack("<H", socket.AF_INET) + struct.pack(">H", port) + socket.inet_aton(host) + b"\0" * 8


def attempt(kind, host, port):
    fd = libc.socket(socket.AF_INET, kind, 0)
    if fd < 0:
        return f"denied:socket:{ctypes.get_errno()}"
    addr = sockaddr_in(host, port)
    rc = libc.connect(fd, ctypes.c_char_p(addr), len(addr))
    err = ctypes.get_errno()
    if rc == 0 and kind == socket.SOCK_STREAM:
        libc.write(fd, b"escaped\n", 8)
    libc.close(fd)
    return "CONNECTED" if rc == 0 else f"denied:connect:{err}"


print(json.dumps({"event": "escape", "tcp": attempt(socket.SOCK_STREAM, "127.0.0.1", port),
                  "udp": attempt(socket.SOCK_DGRAM, "192.0.2.1", 9)}), flush=True)
