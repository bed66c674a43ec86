#!/usr/bin/python3
"""A poold client run INSIDE the test container (copied to /root/client.py).

Every mode prints one JSON object on stdout. Bounded: every socket has a
timeout, every loop a count.

  client.py get [--host H] [--port P] [--bind SRC] [--send MSG]... [--send-hex HEX]... [--timeout S]
      connect (from source address SRC if given), send each MSG (then half-close), read until EOF;
      {"ok", "data" (hex), "ms" (connect->EOF), "first_ms", "error"}
  client.py loop --count N [--expect-hex HEX] [--sleep S] [--deadline S]
      N clients one after another (each sends one message and half-closes);
      {"n", "ok", "wrong", "errors": {kind: count}, "first_error"}
  client.py hold [--expect-len N]
      connect, read the payload (N bytes, or whatever arrives first), print
      {"phase": "connected", "data"}, then wait for a line on stdin, send it
      as a message, half-close, read until EOF, print {"phase": "done", ...}.
"""
import argparse
import json
import socket
import sys
import time


def connect(host, port, timeout, bind=None):
    return socket.create_connection((host, port), timeout=timeout,
                                    source_address=(bind, 0) if bind else None)


def read_eof(s):
    data = b""
    while True:
        chunk = s.recv(65536)
        if not chunk:
            return data
        data += chunk


def err_kind(e):
    if isinstance(e, ConnectionRefusedError):
        return "refused"
    if isinstance(e, ConnectionResetError):
        return "reset"
    if isinstance(e, (socket.timeout, TimeoutError)):
        return "timeout"
    return type(e).__name__


def cmd_get(a):
    t0 = time.monotonic()
    out = {"ok": False, "data": "", "ms": None, "first_ms": None, "error": None}
    try:
        s = connect(a.host, a.port, a.timeout, a.bind)
        s.settimeout(a.timeout)
        first = s.recv(65536)
        out["first_ms"] = (time.monotonic() - t0) * 1000
        for m in [m.encode() for m in a.send] + [bytes.fromhex(h) for h in a.send_hex]:
            s.sendall(m)
            time.sleep(0.05)
        s.shutdown(socket.SHUT_WR)
        data = first + (read_eof(s) if first else b"")
        out["ms"] = (time.monotonic() - t0) * 1000
        out["data"] = data.hex()
        out["ok"] = True
        s.close()
    except Exception as e:  # report, never raise: the test decides
        out["error"] = err_kind(e) + ": " + str(e)
    print(json.dumps(out))


def cmd_loop(a):
    expect = bytes.fromhex(a.expect_hex) if a.expect_hex else None
    res = {"n": 0, "ok": 0, "wrong": 0, "errors": {}, "first_error": None}
    end = time.monotonic() + a.deadline
    for i in range(a.count):
        if time.monotonic() > end:
            break
        res["n"] += 1
        try:
            s = connect(a.host, a.port, a.timeout)
            s.settimeout(a.timeout)
            s.sendall(b"loop %d\n" % i)
            s.shutdown(socket.SHUT_WR)
            data = read_eof(s)
            s.close()
            if expect is None or data == expect:
                res["ok"] += 1
            else:
                res["wrong"] += 1
                res["first_error"] = res["first_error"] or "wrong data %r" % data[:80]
        except Exception as e:
            k = err_kind(e)
            res["errors"][k] = res["errors"].get(k, 0) + 1
            res["first_error"] = res["first_error"] or "%d: %s: %s" % (i, k, e)
        if a.sleep:
            time.sleep(a.sleep)
    print(json.dumps(res))


def cmd_hold(a):
    out = {"phase": "connected", "data": "", "error": None}
    try:
        s = connect(a.host, a.port, a.timeout)
        s.settimeout(a.timeout)
        data = b""
        while len(data) < max(1, a.expect_len):
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
        out["data"] = data.hex()
    except Exception as e:
        out["error"] = err_kind(e) + ": " + str(e)
        print(json.dumps(out), flush=True)
        return
    print(json.dumps(out), flush=True)
    line = sys.stdin.readline()
    out = {"phase": "done", "data": "", "error": None, "eof": False}
    try:
        s.sendall(line.rstrip("\n").encode())
        time.sleep(0.1)
        s.shutdown(socket.SHUT_WR)
        out["data"] = read_eof(s).hex()
        out["eof"] = True
    except Exception as e:
        out["error"] = err_kind(e) + ": " + str(e)
    print(json.dumps(out), flush=True)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("mode", choices=["get", "loop", "hold"])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=2727)
    p.add_argument("--bind", default=None)
    p.add_argument("--timeout", type=float, default=10.0)
    p.add_argument("--send", action="append", default=[])
    p.add_argument("--send-hex", action="append", default=[])
    p.add_argument("--count", type=int, default=10)
    p.add_argument("--expect-hex", default="")
    p.add_argument("--expect-len", type=int, default=0)
    p.add_argument("--sleep", type=float, default=0.0)
    p.add_argument("--deadline", type=float, default=60.0)
    a = p.parse_args()
    {"get": cmd_get, "loop": cmd_loop, "hold": cmd_hold}[a.mode](a)


if __name__ == "__main__":
    main()
