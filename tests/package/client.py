"""A plain-socket poold client, run *inside* the container by python3-minimal
(no json there). Prints one line per connection: `ok N` or `err WHY`.

    python3 client.py PAYLOAD_HEX HOST [COUNT] [MESSAGE] [STOPFILE]
COUNT connections one after another (0 = until STOPFILE exists, at most 90 s);
each sends MESSAGE, half-closes, and reads until EOF. `ok` means exactly the
payload PAYLOAD_HEX (hex) came back: test_deb.py passes the tutorial payload
from tests/lib/common.py, which is not in the container. Self-contained on
purpose: it is copied alone to /root/client.py, and imports nothing but the
standard library of python3-minimal.
"""
import os
import socket
import sys
import time


def once(host, message):
    s = socket.create_connection((host, 2727), timeout=15)
    try:
        s.settimeout(15)
        if message:
            s.sendall(message)
        s.shutdown(socket.SHUT_WR)
        data = b""
        while len(data) < 4096:
            chunk = s.recv(4096)
            if not chunk:
                break
            data += chunk
        return data
    finally:
        s.close()


def main():
    payload = bytes.fromhex(sys.argv[1])
    host = sys.argv[2]
    count = int(sys.argv[3]) if len(sys.argv) > 3 else 1
    message = sys.argv[4].encode() if len(sys.argv) > 4 else b""
    stopfile = sys.argv[5] if len(sys.argv) > 5 else None
    deadline = time.monotonic() + 90
    n = 0
    while time.monotonic() < deadline:
        if count and n >= count:
            break
        if not count and stopfile and os.path.exists(stopfile):
            break
        n += 1
        try:
            data = once(host, message)
            if data == payload:
                print("ok %d" % n, flush=True)
            else:
                print("err %d payload %r" % (n, data), flush=True)
        except OSError as e:
            print("err %d %s" % (n, e), flush=True)
        if not count:
            time.sleep(0.05)


main()
