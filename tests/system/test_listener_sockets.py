"""Named listeners under a real systemd: poold.socket and the example
packaging/systemd/poold-banner.socket (FileDescriptorName=banner,
Service=poold.service) feed one poold.service, which serves each socket with
its own settings: the global ones on 2727, [listener banner] on 2222.

What these tests settle about systemd 252 (poold.8 relies on it):
- Every socket unit whose Service= names poold.service passes its fd to it,
  whichever of them starts it: poold.service needs no Sockets= and no drop-in.
- systemd refuses to start such a socket while poold.service runs ("Socket
  service poold.service already active, refusing."): enabling the banner
  socket on a running system takes `systemctl stop poold.service` first.

Each test boots its own container (tests/system/conftest.py's staged install,
booted by sysbox.booted_box); clients run inside it on its own loopback.
"""
import os
import re

import pytest

from common import TUTORIAL_PAYLOAD, wait_until
from sysbox import REPO, booted_box

GLOBAL = b"global payload\n"
BANNER = b"SSH-2.0-poold\r\n"
MSGID_REFUSED = "62c96129d90242a683d946c8f0a13378"
BANNER_PORT = "2222"

# The banner listener: its own payload and message count, an allow list
# (127.0.0.0/30, less 127.0.0.2) that the global settings do not have.
CONF = r"""[payload]
text = global payload\n

[session]
max_messages = 1

[listener banner]
text = SSH-2.0-poold\r\n
max_messages = 0
allow = 127.0.0.0/30
deny = 127.0.0.2
"""


def started_line(box):
    es = box.journal("-u", "poold.service")
    lines = [e["MESSAGE"] for e in es if str(e.get("MESSAGE", "")).startswith("Started: ")]
    return lines[-1] if lines else None


@pytest.fixture
def two_sockets(staged_usr):
    """A container with CONF and both poold.socket and poold-banner.socket
    enabled and started (poold.service not started yet)."""
    with booted_box(staged_usr, enable_socket=False) as b:
        b.c.write_file("/etc/poold/poold.conf.d/50-banner.conf", CONF)
        b.sh("systemctl enable --now poold.socket poold-banner.socket")
        yield b


@pytest.fixture
def one_socket(staged_usr):
    """As shipped: poold.socket enabled, poold-banner.socket installed only."""
    with booted_box(staged_usr) as b:
        b.c.write_file("/etc/poold/poold.conf.d/50-banner.conf", CONF)
        yield b


def test_banner_socket_is_installed_but_not_enabled(one_socket):
    box = one_socket
    assert box.sh("systemctl is-enabled poold-banner.socket", check=False).strip() == "disabled"
    assert box.state("poold-banner.socket") == "inactive"
    assert box.show("poold-banner.socket", "Triggers") == "poold.service"
    assert box.get("--port", BANNER_PORT, "--timeout", "3")["error"].startswith("refused")
    assert box.get()["bytes"] == GLOBAL
    line = started_line(box)
    assert line.startswith("Started: 1 systemd socket, "), line
    # [listener banner] with no socket of that name: said once, at start.
    log = box.sh("journalctl -u poold.service --no-pager")
    assert "[listener banner] is not used: systemd passed no socket named banner" in log, log


def test_first_client_on_the_banner_socket_starts_poold_with_both(two_sockets):
    box = two_sockets
    assert sorted(box.show("poold.service", "TriggeredBy").split()) == ["poold-banner.socket", "poold.socket"]
    assert box.state("poold.service") == "inactive"
    r = box.get("--port", BANNER_PORT)
    assert r["ok"] and r["bytes"] == BANNER, r
    assert box.state("poold.service") == "active"
    line = started_line(box)
    assert re.match(r"Started: 2 systemd sockets, .*listeners: banner\.$", line), line
    for host in ("127.0.0.1", "::1"):
        r = box.get("--host", host)
        assert r["ok"] and r["bytes"] == GLOBAL, (host, r)
    assert box.show("poold.service", "NRestarts") == "0"


def test_each_port_its_payload_and_the_banner_allow_list(two_sockets):
    box = two_sockets
    assert box.get()["bytes"] == GLOBAL  # started by poold.socket this time
    assert re.match(r"Started: 2 systemd sockets, ", started_line(box))
    # Served on 2222: 127.0.0.1 (also as ::ffff:127.0.0.1) and 127.0.0.3.
    for src in ("127.0.0.1", "127.0.0.3"):
        r = box.get("--port", BANNER_PORT, "--bind", src)
        assert r["ok"] and r["bytes"] == BANNER, (src, r)
    # Refused on 2222 (accepted, then closed with nothing sent), served on 2727.
    refused = [("::1", "::1", "not in the allow list (not allowed)"),
               ("127.0.0.1", "127.0.0.5", "not in the allow list (not allowed)"),
               ("127.0.0.1", "127.0.0.2", "denied (deny)")]
    for host, src, _ in refused:
        r = box.get("--port", BANNER_PORT, "--host", host, "--bind", src)
        assert r["ok"] and r["bytes"] == b"", (src, r)
        r = box.get("--host", host, "--bind", src)
        assert r["ok"] and r["bytes"] == GLOBAL, (src, r)

    def refusals():
        es = box.journal("-u", "poold.service", "MESSAGE_ID=" + MSGID_REFUSED)
        return es if len(es) >= 3 else None

    es = wait_until(refusals, timeout=5, step=0.1, what="3 refusals in the journal")
    assert len(es) == 3, es
    for e, (_, src, why) in zip(es, refused):
        assert e["POOLD_LISTENER"] == "banner", e
        assert e["POOLD_REMOTE_ADDR"] == src, e
        assert re.fullmatch(r"Refused connection from \S+ on listener banner: address " + re.escape(why),
                            e["MESSAGE"]), e["MESSAGE"]
    # Served connections on the banner socket carry the listener's name too.
    closed = [e for e in box.journal("-u", "poold.service", "POOLD_LISTENER=banner")
              if e["MESSAGE"].startswith("Closed connection")]
    assert len(closed) == 2, closed

    # STATUS= counts refusals by reason (in poold's order of reasons).
    status_re = re.compile(r"; 6 served, 3 refused \(([^)]*)\)$")

    def status():
        m = status_re.search(box.show("poold.service", "StatusText"))
        return m if m and sorted(m.group(1).split(", ")) == ["deny 1", "not allowed 2"] else None

    m = wait_until(status, timeout=5, step=0.1, what="STATUS= with 6 served, 3 refused by reason")
    out = box.sh("systemctl status poold --no-pager")
    assert 'Status: "' in out and m.group(0) + '"' in out, out
    assert "TriggeredBy: " in out and "poold-banner.socket" in out, out
    # A restart keeps both sockets.
    box.sh("systemctl restart poold.service")
    assert box.get("--port", BANNER_PORT)["bytes"] == BANNER
    assert box.get()["bytes"] == GLOBAL


def header_steps():
    """The unit's own header: its drop-in example and its commands."""
    with open(os.path.join(REPO, "packaging", "systemd", "poold-banner.socket")) as f:
        steps = [line[len("#        "):].rstrip("\n") for line in f if line.startswith("#        ")]
    conf = [x for x in steps if not x.startswith("systemctl ")]
    cmds = [x for x in steps if x.startswith("systemctl ")]
    assert conf[0] == "[listener banner]" and cmds, steps
    return "\n".join(conf) + "\n", cmds


def test_enabling_the_banner_socket_while_poold_runs(one_socket):
    """The steps in poold-banner.socket's header, on a running poold.
    systemd will not start a socket whose service is running: stop poold
    first; the next client starts it with both sockets."""
    box = one_socket
    conf, cmds = header_steps()
    box.sh("rm /etc/poold/poold.conf.d/50-banner.conf")
    box.c.write_file("/etc/poold/poold.conf.d/banner.conf", conf)
    box.sh("/usr/sbin/poold --check-config")
    assert box.get()["bytes"] == TUTORIAL_PAYLOAD  # the shipped global payload
    pid = box.main_pid()
    # Without the stop: refused.
    rc, out, err = box.run("systemctl enable --now poold-banner.socket")
    assert rc != 0, (out, err)
    assert box.state("poold-banner.socket") == "inactive"
    log = box.sh("journalctl -u poold-banner.socket --no-pager")
    assert "Socket service poold.service already active, refusing." in log, log
    assert box.main_pid() == pid  # poold itself was left alone
    box.sh("systemctl disable poold-banner.socket")

    for cmd in cmds:
        box.sh(cmd)
    assert box.state("poold-banner.socket") == "active"
    assert box.sh("systemctl is-enabled poold-banner.socket").strip() == "enabled"
    r = box.get("--port", BANNER_PORT)
    assert r["ok"] and r["bytes"] == BANNER, r
    assert box.main_pid() not in (0, pid)
    assert re.match(r"Started: 2 systemd sockets, .*listeners: banner\.$", started_line(box))
    assert box.get()["bytes"] == TUTORIAL_PAYLOAD
    assert box.get("--port", BANNER_PORT, "--host", "::1")["bytes"] == BANNER  # no allow list here

    # The header's undo: poold serves what it was given until it restarts.
    box.sh("systemctl disable --now poold-banner.socket")
    assert box.get("--port", BANNER_PORT)["bytes"] == BANNER
    box.sh("systemctl restart poold.service")
    assert box.get("--port", BANNER_PORT, "--timeout", "3")["error"].startswith("refused")
    assert started_line(box).startswith("Started: 1 systemd socket, ")
    assert box.get()["bytes"] == TUTORIAL_PAYLOAD


def test_a_copy_under_another_name_is_a_third_listener(two_sockets):
    """The header's last advice: copy the unit, change port and name."""
    box = two_sockets
    box.sh("sed -e 's/^ListenStream=2222$/ListenStream=2525/' -e 's/^FileDescriptorName=banner$/"
           "FileDescriptorName=smtp/' /lib/systemd/system/poold-banner.socket "
           "> /etc/systemd/system/poold-smtp.socket")
    box.c.write_file("/etc/poold/poold.conf.d/60-smtp.conf",
                     "[listener smtp]\ntext = 220 poold ESMTP\\r\\n\nmax_messages = 0\n")
    box.sh("systemctl daemon-reload && systemctl enable --now poold-smtp.socket")
    assert box.get("--port", "2525")["bytes"] == b"220 poold ESMTP\r\n"
    assert box.get("--port", BANNER_PORT)["bytes"] == BANNER
    assert box.get()["bytes"] == GLOBAL
    line = started_line(box)
    assert re.match(r"Started: 3 systemd sockets, .*listeners: banner, smtp\.$", line), line


def test_banner_socket_passes_systemd_analyze_verify(one_socket):
    box = one_socket
    # verify runs `man` for Documentation=; give man-db its configuration.
    if os.path.exists("/etc/manpath.config"):
        box.c.copy_in("/etc/manpath.config", "/etc/manpath.config")
    rc, out, err = box.run("systemd-analyze verify /lib/systemd/system/poold-banner.socket "
                           "/lib/systemd/system/poold.service")
    assert rc == 0 and out.strip() == "" and err.strip() == "", (rc, out, err)
