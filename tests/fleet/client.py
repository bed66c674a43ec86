#!/usr/bin/python3
"""The fleet's clients: run in the clients' network namespace
(`ip netns exec NS python3 client.py MODE ...`), each connection from one of
the namespace's source addresses. Every mode prints one JSON object on
stdout. Bounded: every socket has a timeout, every loop a count and a
deadline. Standard library only.

  client.py loop --to ADDR:PORT --sources A,B,.. --tag T --count N
                 [--concurrency K] [--rate R] [--deadline S] [--stop-file F]
      up to N clients (K at a time, at most R new ones a second), client i
      from source i % len(sources); each sends "fleet T i SRC", half-closes
      and reads until EOF; served = exactly --expect-hex came back. Stops
      early once F exists (it then finishes the clients it started).
      {"n", "served", "lost", "errors": {kind: n}, "lost_detail": [...],
       "served_seqs": [...], "max_ms" (the slowest client), "seconds"}
  client.py persource --to ADDR:PORT --src A --others B,C --limit L
      L connections from A held open (each has read the payload), then one
      more from A (expected: refused, no payload), then one from each other
      source while A's are held (expected: served), then A's held ones are
      finished. {"held": [...], "extra": {...}, "others": {...}, "finished": [...]}
  client.py hold --to ADDR:PORT --src A --tag T
      one connection held open: prints {"phase": "held", "data"} once the
      payload is in, waits for a line on stdin, then sends "fleet T 0 A",
      half-closes, reads until EOF: {"phase": "done", "rest", "eof", "error"}
  client.py tls --to ADDR:PORT --src A --ca CERT --name NAME --count N
      N clients one after another over TLS (CERT the trusted certificate,
      NAME the server name): each reads the payload, sends "fleet T i SRC"
      and closes. {"served", "lost", "errors", "version"}
  client.py direct --to ADDR:PORT --src A [--header-hex H]
      one connection straight to a host, sending H (a forged PROXY header, or
      nothing) and reading what comes back. {"data", "error"}
"""
import argparse
import json
import os
import socket
import ssl
import sys
import threading
import time

TIMEOUT = 10.0


def addr(s):
    host, port = s.rsplit(":", 1)
    return host, int(port)


def err_kind(e):
    if isinstance(e, ConnectionRefusedError):
        return "refused"
    if isinstance(e, ConnectionResetError):
        return "reset"
    if isinstance(e, (socket.timeout, TimeoutError)):
        return "timeout"
    return type(e).__name__


def read_eof(s, limit=1 << 20):
    data = b""
    while len(data) < limit:
        chunk = s.recv(65536)
        if not chunk:
            break
        data += chunk
    return data


def connect(to, src):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.settimeout(TIMEOUT)
    s.bind((src, 0))
    s.connect(to)
    return s


def session(to, src, message):
    """One client: connect, send message, half-close, read until EOF."""
    s = connect(to, src)
    try:
        s.sendall(message)
        s.shutdown(socket.SHUT_WR)
        return read_eof(s)
    finally:
        s.close()


def cmd_loop(a):
    to = addr(a.to)
    sources = a.sources.split(",")
    expect = bytes.fromhex(a.expect_hex)
    lock = threading.Lock()
    state = {"next": 0, "stop": False}
    res = {"n": 0, "served": 0, "lost": 0, "errors": {}, "lost_detail": [],
           "served_seqs": [], "max_ms": 0.0}
    t0 = time.monotonic()
    end = t0 + a.deadline
    gap = 1.0 / a.rate if a.rate else 0.0

    def take():
        with lock:
            now = time.monotonic()
            if (state["stop"] or state["next"] >= a.count or now > end
                    or (a.stop_file and os.path.exists(a.stop_file))):
                state["stop"] = True
                return None
            i = state["next"]
            state["next"] += 1
            return i

    def worker():
        while True:
            i = take()
            if i is None:
                return
            due = t0 + i * gap
            delay = due - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            src = sources[i % len(sources)]
            started = time.monotonic() - t0
            try:
                data = session(to, src, b"fleet %s %d %s" % (a.tag.encode(), i, src.encode()))
                kind = None if data == expect else "wrong data %r" % data[:60]
            except Exception as e:  # a lost client, whatever the cause
                kind = err_kind(e) + ": " + str(e)
            ms = (time.monotonic() - t0 - started) * 1000
            with lock:
                res["n"] += 1
                res["max_ms"] = max(res["max_ms"], round(ms, 1))
                if kind is None:
                    res["served"] += 1
                    res["served_seqs"].append(i)
                else:
                    res["lost"] += 1
                    k = kind.split(":")[0]
                    res["errors"][k] = res["errors"].get(k, 0) + 1
                    if len(res["lost_detail"]) < 50:
                        res["lost_detail"].append({"seq": i, "src": src, "at": round(started, 3),
                                                   "error": kind})

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(a.concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(a.deadline + 2 * TIMEOUT)
    res["served_seqs"].sort()
    res["seconds"] = round(time.monotonic() - t0, 3)
    print(json.dumps(res))


def hold(to, src):
    """Connect and read whatever comes first (the payload, or EOF)."""
    out = {"src": src, "data": "", "error": None, "sock": None}
    try:
        s = connect(to, src)
        data = b""
        while len(data) < 26:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
        out["data"] = data.hex()
        out["sock"] = s
    except Exception as e:
        out["error"] = err_kind(e) + ": " + str(e)
    return out


def finish(h, message):
    """Finish a held connection: send, half-close, read until EOF."""
    s = h.pop("sock")
    out = dict(h)
    if s is None:
        return out
    try:
        s.sendall(message)
        s.shutdown(socket.SHUT_WR)
        out["rest"] = read_eof(s).hex()
        out["eof"] = True
    except Exception as e:
        out["error"] = err_kind(e) + ": " + str(e)
    finally:
        s.close()
    return out


def cmd_persource(a):
    to = addr(a.to)
    held = [hold(to, a.src) for _ in range(a.limit)]
    extra = hold(to, a.src)
    if extra["sock"] is not None:
        # Refused: poold closed it without a payload; what HAProxy passed on.
        try:
            extra["rest"] = read_eof(extra["sock"]).hex()
        except Exception as e:
            extra["error"] = err_kind(e) + ": " + str(e)
        extra.pop("sock").close()
    others = {}
    for src in a.others.split(","):
        try:
            others[src] = {"data": session(to, src, b"fleet persource other %s" % src.encode()).hex(),
                           "error": None}
        except Exception as e:
            others[src] = {"data": "", "error": err_kind(e) + ": " + str(e)}
    finished = [finish(h, b"fleet persource held %d %s" % (i, a.src.encode()))
                for i, h in enumerate(held)]
    print(json.dumps({"held": finished, "extra": extra, "others": others}))


def cmd_hold(a):
    h = hold(addr(a.to), a.src)
    print(json.dumps({"phase": "held", "data": h["data"], "error": h["error"]}), flush=True)
    sys.stdin.readline()
    out = finish(h, b"fleet %s 0 %s" % (a.tag.encode(), a.src.encode()))
    out["phase"] = "done"
    print(json.dumps(out), flush=True)


def cmd_tls(a):
    expect = bytes.fromhex(a.expect_hex)
    res = {"served": 0, "lost": 0, "errors": [], "version": None}
    for i in range(a.count):
        try:
            ctx = ssl.create_default_context(cafile=a.ca)
            with ctx.wrap_socket(connect(addr(a.to), a.src), server_hostname=a.name) as s:
                res["version"] = s.version()
                data = b""
                while len(data) < len(expect):
                    chunk = s.recv(65536)
                    if not chunk:
                        break
                    data += chunk
                # No half-close over TLS: the message, then the close (HAProxy
                # passes it on to poold as the end of the session).
                s.sendall(b"fleet %s %d %s" % (a.tag.encode(), i, a.src.encode()))
            ok = data == expect
            res["served" if ok else "lost"] += 1
            if not ok:
                res["errors"].append("wrong data %r" % data[:60])
        except Exception as e:
            res["lost"] += 1
            res["errors"].append(err_kind(e) + ": " + str(e))
    print(json.dumps(res))


def cmd_direct(a):
    out = {"data": "", "error": None}
    try:
        s = connect(addr(a.to), a.src)
        try:
            if a.header_hex:
                s.sendall(bytes.fromhex(a.header_hex))
            s.sendall(b"fleet direct")
            s.shutdown(socket.SHUT_WR)
            out["data"] = read_eof(s).hex()
        finally:
            s.close()
    except Exception as e:
        out["error"] = err_kind(e) + ": " + str(e)
    print(json.dumps(out))


def main():
    p = argparse.ArgumentParser()
    p.add_argument("mode", choices=["loop", "persource", "hold", "tls", "direct"])
    p.add_argument("--to", required=True)
    p.add_argument("--sources", default="")
    p.add_argument("--src", default="")
    p.add_argument("--others", default="")
    p.add_argument("--limit", type=int, default=2)
    p.add_argument("--tag", default="t")
    p.add_argument("--count", type=int, default=10)
    p.add_argument("--concurrency", type=int, default=1)
    p.add_argument("--rate", type=float, default=0.0)
    p.add_argument("--deadline", type=float, default=60.0)
    p.add_argument("--stop-file", default="")
    p.add_argument("--expect-hex", default="")
    p.add_argument("--header-hex", default="")
    p.add_argument("--ca", default="")
    p.add_argument("--name", default="")
    a = p.parse_args()
    {"loop": cmd_loop, "persource": cmd_persource, "hold": cmd_hold, "tls": cmd_tls,
     "direct": cmd_direct}[a.mode](a)


if __name__ == "__main__":
    main()
