"""Box: a booted Container (container.py) plus the helpers tests use on it.

The one Box behind tests/system (a host-root container with `make install`
laid over /usr, booted by tests/system/sysbox.boot_box) and tests/package (a
debootstrapped bookworm with the .debs bind-mounted, booted by the `box`
fixture in tests/package/conftest.py). The fixture that boots the container
builds the Box and stops the container.

API
---
    from box import Box

Box(c, *, client=None, env=None, **attrs)
  c        the started Container; box.c, for run/spawn/write_file/copy_in/...
  client   path INSIDE the container of tests/system/client.py (the JSON
           client), for client()/get()/hold(); None where it was not copied in
  env      environment added to every command run by sh() (e.g.
           DEBIAN_FRONTEND=noninteractive for the package tests)
  attrs    whatever the fixture wants tests to reach as box.NAME
           (tests/system: stage; tests/package: deb1, deb2)

Methods
  run(cmd, timeout=30, **kw)    Container.run: (rc, stdout, stderr), no check
  sh(cmd, timeout=30, check=True, input=None, env=None) -> stdout
                                cmd: argv list, or a str run by sh -c; raises
                                AssertionError on a non-zero exit if check
  apt(*args, timeout=180)       apt-get -q -y ARGS, noninteractive -> stdout
  show(unit, *props)            systemctl show: one prop -> its value ("" if
                                none; a repeated one's values joined by
                                newlines), several -> {prop: value}
  state(unit)                   systemctl is-active (no check): "active", ...
  main_pid()                    poold.service's MainPID as an int (0: none)
  journal(*args)                journalctl -o json ARGS entries (list of dicts)
  write_conf(text, path="/etc/poold/poold.conf")
  client(*args, timeout=30)     run the JSON client with ARGS -> its last object
  get(*args, **kw)              client("get", ...) plus r["bytes"] (the data)
  hold(expect_len=26)           a held connection: (Popen, first bytes read)
  finish_hold(p, message="late message", timeout=30) -> the "done" object

Polling for a state is common.wait_until(pred, timeout, step, what=...).
"""
import json

from common import TUTORIAL_PAYLOAD


class Box:
    """A booted container plus helpers for the tests (see the module docstring)."""

    def __init__(self, c, *, client=None, env=None, **attrs):
        self.c = c
        self.client_path = client
        self.env = dict(env or {})
        for name, value in attrs.items():
            setattr(self, name, value)

    # ---- commands ------------------------------------------------------------

    def run(self, cmd, timeout=30, **kw):
        return self.c.run(cmd, timeout=timeout, **kw)

    def sh(self, cmd, timeout=30, check=True, input=None, env=None):
        e = dict(self.env)
        e.update(env or {})
        rc, out, err = self.c.run(cmd, timeout=timeout, input=input, env=e)
        if check and rc != 0:
            raise AssertionError("%r exited %d\nstdout:\n%s\nstderr:\n%s" % (cmd, rc, out, err))
        return out

    def apt(self, *args, timeout=180):
        return self.sh(["apt-get", "-q", "-y"] + list(args), timeout=timeout,
                       env={"DEBIAN_FRONTEND": "noninteractive"})

    # ---- systemd -------------------------------------------------------------

    def show(self, unit, *props):
        out = self.sh(["systemctl", "show", unit, "-p", ",".join(props)])
        d = {}
        for line in out.splitlines():
            if "=" in line:
                k, v = line.split("=", 1)
                d[k] = d[k] + "\n" + v if k in d else v
        return d if len(props) > 1 else d.get(props[0], "")

    def state(self, unit):
        return self.sh(["systemctl", "is-active", unit], check=False).strip()

    def main_pid(self):
        return int(self.show("poold.service", "MainPID") or 0)

    def journal(self, *args):
        """journalctl -o json entries (list of dicts)."""
        out = self.sh("journalctl --no-pager -o json " + " ".join(args))
        return [json.loads(x) for x in out.splitlines() if x.startswith("{")]

    def write_conf(self, text, path="/etc/poold/poold.conf"):
        self.c.write_file(path, text)

    # ---- the JSON client (tests/system/client.py) ---------------------------------

    def _client_argv(self, *args):
        assert self.client_path, "no client in this container (Box(client=...))"
        return ["/usr/bin/python3", self.client_path] + list(args)

    def client(self, *args, timeout=30):
        rc, out, err = self.c.run(self._client_argv(*args), timeout=timeout)
        assert rc == 0, "client failed: %s %s" % (out, err)
        return json.loads(out.strip().splitlines()[-1])

    def get(self, *args, **kw):
        r = self.client("get", *args, **kw)
        r["bytes"] = bytes.fromhex(r["data"]) if r.get("data") else b""
        return r

    def hold(self, expect_len=len(TUTORIAL_PAYLOAD)):
        p = self.c.spawn(self._client_argv("hold", "--expect-len", str(expect_len),
                                           "--timeout", "30"))
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
