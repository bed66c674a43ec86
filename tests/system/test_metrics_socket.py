"""poold-metrics.socket under a real systemd (issue 15): installed but not
enabled; enabled the way poold(8) says ("Enabling the metrics socket", on a
running poold), it hands poold a socket named metrics on 127.0.0.1:9727 that
serves GET /metrics and never clients, survives poold restarts (systemd
keeps the socket, poold must not shut it down), keeps the sandbox score at
0.2 or better, and the undo closes it.

Each test boots its own container (tests/system/conftest.py's staged
install); clients and curl run inside it, on its own loopback.
"""
import os
import re

from common import TUTORIAL_PAYLOAD, wait_until
from sysbox import REPO

URL = "http://127.0.0.1:9727/metrics"


def man_commands():
    """The command blocks of poold(8)'s "Enabling the metrics socket":
    (enable, undo), each a list of command lines."""
    with open(os.path.join(REPO, "man", "poold.8")) as f:
        text = f.read()
    sec = text.split(".SS Enabling the metrics socket\n", 1)[1].split("\n.SS ", 1)[0]
    blocks = re.findall(r"^\.EX\n(.*?)\n\.EE$", sec, re.M | re.S)
    assert len(blocks) >= 2, sec
    deroff = lambda s: s.replace("\\-", "-").replace("\\(aq", "'")  # noqa: E731
    return [[deroff(x) for x in b.splitlines()] for b in blocks[:2]]


def curl(box, *args, check=True):
    return box.sh(["curl", "-sS", "--max-time", "10"] + list(args) + [URL], check=check)


def sample(text, name_and_labels):
    m = re.search(r"^%s (\S+)$" % re.escape(name_and_labels), text, re.M)
    return float(m.group(1)) if m else None


def started_lines(box):
    return [e["MESSAGE"] for e in box.journal("-u", "poold.service")
            if str(e.get("MESSAGE", "")).startswith("Started: ")]


def test_metrics_socket_as_poold8_says(box, figures):
    enable, undo = man_commands()
    assert enable[:2] == ["systemctl stop poold.service", "systemctl enable --now poold-metrics.socket"], enable
    assert box.sh("systemctl is-enabled poold-metrics.socket", check=False).strip() == "disabled"
    assert box.state("poold-metrics.socket") == "inactive"
    assert box.show("poold-metrics.socket", "Triggers") == "poold.service"
    rc, _, _ = box.run(["curl", "-sS", "--max-time", "5", URL])
    assert rc == 7, rc  # connection refused: nothing listens on 9727 as shipped

    assert box.get()["bytes"] == TUTORIAL_PAYLOAD  # poold runs
    for cmd in enable:
        if cmd.startswith("curl "):
            continue
        box.sh(cmd)
    assert box.state("poold-metrics.socket") == "active"
    assert box.sh("systemctl is-enabled poold-metrics.socket").strip() == "enabled"
    assert box.state("poold.service") == "inactive"
    # The scrape starts poold; the man page's curl line, as written.
    out = box.sh([c for c in enable if c.startswith("curl ")][0])
    assert "poold_build_info{version=" in out, out
    assert box.state("poold.service") == "active"
    headers = curl(box, "-o", "/dev/null", "-D", "-")
    assert re.search(r"^HTTP/1.1 200 OK\r?$", headers, re.M), headers
    assert re.search(r"^Content-Type: text/plain; version=0\.0\.4\r?$", headers, re.M | re.I), headers
    # Two sockets, one of them for clients.
    assert started_lines(box)[-1].startswith("Started: 1 systemd socket, "), started_lines(box)
    log = box.sh("journalctl -u poold.service --no-pager")
    assert "Serving metrics on 127.0.0.1:9727 (GET /metrics)." in log, log

    for _ in range(3):
        assert box.get()["bytes"] == TUTORIAL_PAYLOAD
    text = curl(box)
    assert sample(text, 'poold_connections_accepted_total{listener="poold"}') == 3, text
    assert 'listener="metrics"' not in text
    assert sample(text, "poold_threads{state=\"idle\"}") + sample(text, "poold_threads{state=\"busy\"}") == 4

    # A restart: systemd keeps the socket and hands it to the new poold.
    pid = box.main_pid()
    box.sh("systemctl restart poold.service")
    assert box.main_pid() not in (0, pid)
    text = curl(box)
    assert sample(text, 'poold_connections_accepted_total{listener="poold"}') == 0, text
    # ... and when poold stops, the next scrape starts it again.
    box.sh("systemctl stop poold.service")
    assert box.state("poold-metrics.socket") == "active"
    assert "poold_build_info" in curl(box)
    assert box.state("poold.service") == "active"

    # The sandbox with the metrics socket in use.
    out = box.sh("systemd-analyze security --no-pager poold.service")
    m = re.search(r"Overall exposure level for poold\.service: (\d+\.\d+)", out)
    assert m, out
    figures("systemd-analyze security poold.service with poold-metrics.socket", m.group(1))
    assert float(m.group(1)) <= 0.2, out
    assert box.show("poold.service", "PrivateNetwork") == "yes"

    # The undo: poold serves the socket it has until it restarts.
    for cmd in undo:
        box.sh(cmd)
    assert box.state("poold-metrics.socket") == "inactive"
    rc, _, _ = box.run(["curl", "-sS", "--max-time", "5", URL])
    assert rc == 7, rc
    assert box.get()["bytes"] == TUTORIAL_PAYLOAD
    assert box.show("poold.service", "NRestarts") == "0"


def test_a_silent_scraper_leaves_clients_unharmed(box):
    """Under the real sandbox: 20 connections to the metrics socket that never
    send, then 30 clients, served at once; the poold process is the same."""
    box.sh("systemctl stop poold.service")
    box.sh("systemctl enable --now poold-metrics.socket")
    assert "poold_build_info" in curl(box)
    pid = box.main_pid()
    hold = box.c.spawn(["/usr/bin/python3", "-c",
                        "import socket, sys, time\n"
                        "s = [socket.create_connection(('127.0.0.1', 9727), 5) for _ in range(20)]\n"
                        "print('held', flush=True)\n"
                        "sys.stdin.read()\n"])
    try:
        assert hold.stdout.readline().strip() == b"held"
        r = box.client("loop", "--count", "30", "--expect-hex", TUTORIAL_PAYLOAD.hex(), "--deadline", "10")
        assert r["ok"] == 30 and not r["errors"], r
    finally:
        hold.communicate(b"", timeout=30)
    text = wait_until(lambda: curl(box, check=False) or None, 20, step=0.5,
                      what="a scrape once the silent connections are gone")
    assert sample(text, 'poold_connections_accepted_total{listener="poold"}') == 30, text
    assert box.main_pid() == pid
