"""Helpers for tests/system: a booted container with poold installed (Box).

Kept apart from conftest.py so test modules can import it by a unique name.
"""
import json
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(REPO, "tests", "lib"))

from container import Container  # noqa: E402

TUTORIAL_PAYLOAD = b"(lp0\nI1\naI2\naI7\naI9\naI0\na."
CLIENT = "/root/client.py"


class Box:
    """A booted container with poold installed, plus helpers for the tests."""

    def __init__(self, c, stage):
        self.c = c
        self.stage = stage

    def run(self, cmd, timeout=30, **kw):
        return self.c.run(cmd, timeout=timeout, **kw)

    def sh(self, script, timeout=30, check=True):
        rc, out, err = self.c.run(script, timeout=timeout)
        if check and rc != 0:
            raise AssertionError("%r exited %d\nstdout: %s\nstderr: %s" % (script, rc, out, err))
        return out

    def show(self, unit, *props):
        out = self.sh("systemctl show %s -p %s" % (unit, ",".join(props)))
        d = dict(line.split("=", 1) for line in out.splitlines() if "=" in line)
        return d if len(props) > 1 else d.get(props[0], "")

    def client(self, *args, timeout=30):
        rc, out, err = self.c.run(["/usr/bin/python3", CLIENT] + list(args), timeout=timeout)
        assert rc == 0, "client failed: %s %s" % (out, err)
        return json.loads(out.strip().splitlines()[-1])

    def get(self, *args, **kw):
        r = self.client("get", *args, **kw)
        r["bytes"] = bytes.fromhex(r["data"]) if r.get("data") else b""
        return r

    def hold(self, expect_len=len(TUTORIAL_PAYLOAD)):
        p = self.c.spawn(["/usr/bin/python3", CLIENT, "hold",
                          "--expect-len", str(expect_len), "--timeout", "30"])
        line = p.stdout.readline()
        assert line, "hold client printed nothing: %r" % p.stderr.read()
        first = json.loads(line)
        assert first["error"] is None, first
        return p, bytes.fromhex(first["data"])

    @staticmethod
    def finish_hold(p, message="late message", timeout=30):
        out, err = p.communicate((message + "\n").encode(), timeout=timeout)
        lines = [json.loads(x) for x in out.decode().splitlines() if x.strip()]
        assert lines and lines[-1]["phase"] == "done", (out, err)
        return lines[-1]

    def write_conf(self, text, path="/etc/poold/poold.conf"):
        self.c.write_file(path, text)

    def journal(self, *args):
        """journalctl -u poold -o json entries (list of dicts)."""
        out = self.sh("journalctl --no-pager -o json " + " ".join(args))
        return [json.loads(x) for x in out.splitlines() if x.startswith("{")]

    def wait_for(self, pred, timeout=10, interval=0.1, what="condition"):
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            last = pred()
            if last:
                return last
            time.sleep(interval)
        raise AssertionError("timed out after %ss waiting for %s (last %r)" % (timeout, what, last))

    def main_pid(self):
        return int(self.show("poold.service", "MainPID") or 0)


def boot_box(stage, enable_socket=True):
    c = Container(usr_overlay=stage["usr"])
    c.start()
    try:
        src = os.path.join(stage["etc"], "poold")
        for dirpath, _dirs, files in os.walk(src):
            rel = os.path.relpath(dirpath, stage["etc"])
            c.run(["mkdir", "-p", "/etc/" + rel], check=True)
            for f in files:
                c.copy_in(os.path.join(dirpath, f), "/etc/%s/%s" % (rel, f))
        c.copy_in(os.path.join(HERE, "client.py"), CLIENT, mode=0o755)
        if enable_socket:
            c.run(["systemctl", "enable", "--now", "poold.socket"], check=True)
    except BaseException:
        c.stop()
        c.cleanup()
        raise
    return Box(c, stage)
