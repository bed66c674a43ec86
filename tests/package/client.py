"""A plain-socket poold client, run *inside* the container by python3-minimal
(no json there). Prints one line per connection: `ok N` or `err WHY`.

    python3 client.py HOST [COUNT] [MESSAGE] [STOPFILE]
COUNT connections one after another (0 = until STOPFILE exists, at most 90 s);
each sends MESSAGE, half-closes, and reads until EOF. `ok` means the exact
26-byte tutorial payload came back.
"""
import os
import socket
import sys
import time

PAYLOAD = b"(lp0\nI1\naI2\naI7\naI9\naI0\na."


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
    host = sys.argv[1]
    count = int(sys.argv[2]) if len(sys.argv) > 2 else 1
    message = sys.argv[3].encode() if len(sys.argv) > 3 else b""
    stopfile = sys.argv[4] if len(sys.argv) > 4 else None
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
            if data == PAYLOAD:
                print("ok %d" % n, flush=True)
            else:
                print("err %d payload %r" % (n, data), flush=True)
        except OSError as e:
            print("err %d %s" % (n, e), flush=True)
        if not count:
            time.sleep(0.05)


main()
