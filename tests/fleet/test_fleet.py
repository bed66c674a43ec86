"""A fleet with real parts (issue 13): two poold hosts under the real systemd
behind HAProxy with send-proxy-v2, clients from four addresses, a log host
collecting both hosts' journals. The topology and every address are in
fleetbox.py; the tests run in file order on one fleet (conftest.py).

Each client sends "fleet TAG SEQ SRC" as its one message: poold logs it
(POOLD_MESSAGE), so the journals say which host served which client and
under which address, and every figure below is checked against them.
"""
import json
import re
import struct
import threading
import time

from common import TUTORIAL_PAYLOAD, wait_until
from fleetbox import CLIENTS, HOSTS, LB, PORT, TLS_NAME, TLS_PORT

MSGID_REFUSED = "62c96129d90242a683d946c8f0a13378"
FRONT = "%s:%d" % (LB, PORT)
# The clients' loop through HAProxy: two at a time, so no client address
# ever has more than per_source = 2 connections open (the loop measures
# losses, not the limit); at most RATE new clients a second, and bounded by
# a count and a deadline whatever happens.
HELD = 1.0  # seconds each host's held session lasts into its restart
LOOP = ("--concurrency", "2", "--rate", "200", "--count", "20000", "--deadline", "60")


def text(v):
    """A journal JSON value as str (binary-safe fields come as byte arrays)."""
    if isinstance(v, list):
        return bytes(v).decode(errors="replace")
    return v if v is not None else ""


def sessions(box, tag):
    """{seq: entry} of the 'Received message' entries of clients tagged TAG;
    entry["_closed"]: the same connection's 'Closed connection' entry."""
    out = {}
    closed = {}
    for e in box.journal("-u", "poold.service"):
        if "POOLD_DURATION_USEC" in e:
            closed[(e.get("_PID"), e.get("POOLD_CONN"))] = e
        m = text(e.get("POOLD_MESSAGE"))
        parts = m.split()
        if len(parts) == 4 and parts[0] == "fleet" and parts[1] == tag:
            e["_seq"], e["_src"] = int(parts[2]), parts[3]
            out[e["_seq"]] = e
    for e in out.values():
        e["_closed"] = closed.get((e.get("_PID"), e.get("POOLD_CONN")), {})
    return out


def check_journals(fleet, tag, served_seqs, closed=False):
    """Every client served is in exactly one host's journal, under its real
    address with HAProxy as POOLD_PROXY; returns {host: sessions}. closed:
    wait for the connections' 'Closed connection' entries too."""
    def logged():  # journald takes the last entries a moment after the client is done
        per_host = {name: sessions(box, tag) for name, box in fleet.hosts.items()}
        got = {seq for ss in per_host.values() for seq, e in ss.items() if e["_closed"] or not closed}
        return per_host if set(served_seqs) <= got else None
    per_host = wait_until(logged, timeout=10) or {n: sessions(b, tag) for n, b in fleet.hosts.items()}
    seen = {}
    for name, ss in per_host.items():
        for seq, e in ss.items():
            assert seq not in seen, "client %s %d logged by %s and %s" % (tag, seq, seen[seq], name)
            seen[seq] = name
            assert e.get("POOLD_REMOTE_ADDR") == e["_src"], e
            assert text(e.get("POOLD_PROXY")).split(":")[0] == LB, e
    missing = sorted(set(served_seqs) - set(seen))
    assert not missing, "served clients not in any journal: %s" % missing[:20]
    return per_host


def loop(fleet, tag, *args):
    return fleet.client("loop", "--to", FRONT, "--tag", tag, *args)


def summary(r):
    return "served %d, lost %d (%s) in %.1f s" % (r["served"], r["lost"], r["errors"] or "no errors",
                                                  r["seconds"])


def assert_no_crash(fleet):
    """No poold died of a signal on any host (systemd's own lines in the
    unit's journal: "Main process exited, code=killed, status=11/SEGV")."""
    for name, box in fleet.hosts.items():
        bad = [line for line in box.sh("journalctl -u poold.service --no-pager -o cat").splitlines()
               if "code=killed" in line or "code=dumped" in line]
        assert not bad, "poold on %s: %s" % (name, bad)


def diagnose(fleet, client, holds):
    """What the hosts and HAProxy say about CLIENT's connections and poold's
    starts and stops (for a failure message)."""
    out = ["holds: %s" % {n: p.poll() for n, p in holds.items()}]
    for name, box in fleet.hosts.items():
        out.append("== %s" % name)
        out += [line for line in box.sh("journalctl -u poold.service --no-pager -o short-precise").splitlines()
                if client + ":" in line or not ("Received message" in line or "Closed connection" in line)]
    out.append("== haproxy")
    out += [line for line in fleet.lb_log().splitlines() if client + ":" in line or "Server" in line]
    out.append(fleet.lb("show sess"))
    return "\n".join(out)


def restart(box, timeout=30):
    """systemctl restart poold; returns (old MainPID, new MainPID, seconds)."""
    old = box.main_pid()
    t = time.monotonic()
    box.sh("systemctl restart poold.service", timeout=timeout)
    wait_until(lambda: box.state("poold.service") == "active" and box.main_pid() not in (0, old),
               timeout=timeout, what="poold restarted")
    return old, box.main_pid(), time.monotonic() - t


def test_every_client_served_under_its_real_address(fleet, figures):
    # One at a time, each address twice in a row: HAProxy's round robin sends
    # every client address to both hosts.
    sources = ",".join(a for a in CLIENTS for _ in (0, 1))
    r = loop(fleet, "first", "--sources", sources, "--count", "40", "--concurrency", "1")
    assert (r["served"], r["lost"]) == (40, 0), r
    per_host = check_journals(fleet, "first", r["served_seqs"])
    for name, ss in per_host.items():
        assert sorted({e["_src"] for e in ss.values()}) == CLIENTS, (name, ss)
        assert len(ss) == 20, (name, len(ss))
    # The balancer itself is never a client: HAProxy's health checks (v2
    # LOCAL) are served, not refused, and no session is logged under its address.
    checks = {}
    for name, box in fleet.hosts.items():
        assert box.journal("POOLD_REMOTE_ADDR=" + LB) == [], name
        # ... and counted apart in poold's status line.
        def counted(box=box):
            # STATUS= is refreshed about once a second: wait for the one
            # written after this host's 20 clients.
            m = re.search(r"PROXY headers (\d+), health checks (\d+)", box.show("poold.service", "StatusText"))
            return m if m and int(m.group(1)) >= 20 else None
        m = wait_until(counted, timeout=5, what="%s's status line counts the PROXY headers" % name)
        assert int(m.group(1)) >= 20 and int(m.group(2)) > 0, m.group(0)
        checks[name] = m.group(0)
    servers = fleet.servers()
    for name in HOSTS:
        assert servers[name]["status"] == "UP", servers[name]
        assert servers[name]["check_status"].lstrip("* ") == "L7OK", servers[name]  # the payload came
    figures("first: clients through HAProxy", "%s; %s" % (summary(r), checks))


def test_per_source_counts_each_real_client(fleet, figures):
    # h2 out of the backend for a moment: all of this goes to h1.
    fleet.set_state("h2", "maint", wait="MAINT")
    try:
        r = fleet.client("persource", "--to", FRONT, "--src", CLIENTS[0],
                         "--others", ",".join(CLIENTS[1:3]), "--limit", "2")
    finally:
        fleet.set_state("h2", "ready", wait="UP")
    payload = TUTORIAL_PAYLOAD.hex()
    for h in r["held"]:
        assert h["error"] is None and h["data"] == payload and h.get("eof"), h
    # The third connection from 10.77.0.11 while two are open: poold closed
    # it without a payload, and HAProxy passed the close on.
    assert r["extra"]["data"] == "" and r["extra"].get("rest", "") == "", r["extra"]
    # Two other clients, through the same balancer address at the same time: served.
    for src, o in r["others"].items():
        assert o["error"] is None and o["data"] == payload, (src, o)
    h1 = fleet.hosts["h1"]
    refused = wait_until(lambda: h1.journal("MESSAGE_ID=" + MSGID_REFUSED,
                                            "POOLD_REMOTE_ADDR=" + CLIENTS[0]),
                         timeout=5, what="h1 logs the refusal")
    assert len(refused) == 1, refused
    for other in r["others"]:
        assert h1.journal("MESSAGE_ID=" + MSGID_REFUSED, "POOLD_REMOTE_ADDR=" + other) == []
    e = refused[0]
    assert e.get("POOLD_REMOTE_ADDR") == CLIENTS[0], e
    assert text(e.get("POOLD_PROXY")).split(":")[0] == LB, e
    figures("per_source = 2 behind HAProxy",
            "3rd connection of %s refused on h1 (%r), %s served meanwhile"
            % (CLIENTS[0], e.get("MESSAGE"), " and ".join(r["others"])))


def test_a_client_that_bypasses_the_balancer_gets_nothing(fleet):
    # Straight to h1, with a forged header naming 10.77.0.99, and with none:
    # the sender is not in proxy_from; closed without a payload.
    sig = b"\r\n\r\n\x00\r\nQUIT\n"
    body = bytes([10, 77, 0, 99, 10, 77, 0, 21]) + struct.pack("!HH", 4242, PORT)
    forged = sig + bytes([0x21, 0x11]) + struct.pack("!H", len(body)) + body
    h1 = fleet.hosts["h1"]
    before = len(h1.journal("MESSAGE_ID=" + MSGID_REFUSED))
    for header in (forged, b""):
        r = fleet.client("direct", "--to", "%s:%d" % (HOSTS["h1"], PORT), "--src", CLIENTS[3],
                         "--header-hex", header.hex())
        assert r["data"] == "", r
    refused = wait_until(lambda: h1.journal("MESSAGE_ID=" + MSGID_REFUSED)[before:], timeout=5,
                         what="h1 logs the direct connection's refusal")
    assert all(e.get("POOLD_REMOTE_ADDR") == CLIENTS[3] for e in refused), refused
    assert h1.journal("POOLD_REMOTE_ADDR=10.77.0.99") == []


def test_rolling_restart_loses_no_client(fleet, figures, tmp_path):
    """systemctl restart poold on h1, then on h2, while clients keep coming
    through HAProxy, and while each host is in the middle of a session (a
    held client, released HELD seconds into its host's restart): the old
    poold stops accepting and finishes that session; clients arriving
    meanwhile wait in poold.socket's queue and the new poold serves them."""
    held_client = CLIENTS[3]
    holds = {}
    for _ in HOSTS:  # one held session on each host (round robin: one, then the other)
        before = {n: s["scur"] for n, s in fleet.servers().items()}
        p = fleet.spawn_client("hold", "--to", FRONT, "--src", held_client, "--tag", "rollheld")
        first = json.loads(p.stdout.readline())
        assert first["error"] is None and first["data"] == TUTORIAL_PAYLOAD.hex(), first
        now = fleet.servers()
        holds[[n for n in HOSTS if now[n]["scur"] > before[n]][0]] = p
    assert sorted(holds) == sorted(HOSTS), holds
    stop = str(tmp_path / "stop")
    p = fleet.spawn_client("loop", "--to", FRONT, "--tag", "roll", "--sources", ",".join(CLIENTS[:3]),
                           "--stop-file", stop, *LOOP)
    restarts, released = [], {}

    def release(h, name):
        released[name] = h
        h.stdin.write(b"go\n")
        h.stdin.flush()
    try:
        time.sleep(0.5)
        for name in ("h1", "h2"):
            box, result = fleet.hosts[name], {}

            def run():
                result["r"] = restart(box)
            t = threading.Thread(target=run)
            t.start()
            time.sleep(HELD)
            if not t.is_alive():
                assert_no_crash(fleet)
            assert t.is_alive(), "the restart of %s did not wait for the session in progress:\n%s" % (
                name, diagnose(fleet, held_client, holds))
            release(holds.pop(name), name)
            t.join(30)
            restarts.append((name,) + result["r"])
            time.sleep(0.5)
    finally:
        open(stop, "w").close()
        for name in list(holds):  # a step above failed: let the client go
            release(holds.pop(name), name)
    r = fleet.result(p)
    assert_no_crash(fleet)
    for name, h in released.items():
        done = json.loads(h.communicate(timeout=30)[0].decode().strip().splitlines()[-1])
        assert done.get("eof") and done["error"] is None, (name, done)
    per_host = check_journals(fleet, "roll", r["served_seqs"])
    for name, old, new, secs in restarts:
        # The loop spanned the restart: the old poold and the new one both
        # served some of its clients.
        pids = {int(e["_PID"]) for e in per_host[name].values()}
        assert {old, new} <= pids, (name, old, new, pids)
    for name in HOSTS:  # each held session ended on its host's old poold, as the client asked
        held = list(sessions(fleet.hosts[name], "rollheld").values())
        assert [(e.get("POOLD_REMOTE_ADDR"), int(e["_PID"])) for e in held] == \
            [(held_client, [o for n, o, _, _ in restarts if n == name][0])], held
    downs = [line for line in fleet.lb_log().splitlines() if " is DOWN" in line]
    figures("rolling restart (systemctl restart poold on h1, then h2, each with a session in progress)",
            "%s; restarts took %s; slowest client %.0f ms (queued in poold.socket); "
            "HAProxy marked a host DOWN %d times"
            % (summary(r), ", ".join("%s %.2f s" % (n, s) for n, _, _, s in restarts),
               r["max_ms"], len(downs)))
    assert r["lost"] == 0, r
    assert r["served"] > 100, r
    assert r["max_ms"] > HELD * 1000 * 0.5, "no client waited for a restart: %r" % r["max_ms"]
    assert not downs, downs  # the socket never closed: HAProxy's checks never failed


def test_drain_loses_no_client_and_sends_new_ones_to_h2(fleet, figures, tmp_path):
    stop = str(tmp_path / "stop")
    p = fleet.spawn_client("loop", "--to", FRONT, "--tag", "drain", "--sources", ",".join(CLIENTS),
                           "--stop-file", stop, *LOOP)
    try:
        time.sleep(0.7)
        fleet.set_state("h1", "drain")
        time.sleep(0.1)
        at_drain = {n: s["stot"] for n, s in fleet.servers().items()}
        time.sleep(1.5)
    finally:
        open(stop, "w").close()
    r = fleet.result(p)
    end = fleet.servers()
    try:
        assert end["h1"]["status"] == "DRAIN", end["h1"]
        # bk_tls/h1 tracks bk/h1: drained with it.
        assert fleet.servers("bk_tls")["h1"]["status"] == "DRAIN", fleet.servers("bk_tls")["h1"]
        # h1 took no new client once drained, h2 took all of them.
        assert end["h1"]["stot"] == at_drain["h1"], (at_drain, end)
        after = end["h2"]["stot"] - at_drain["h2"]
        per_host = check_journals(fleet, "drain", r["served_seqs"])
        figures("drain (set server bk/h1 state drain) under a client loop",
                "%s; h1 served %d (all before the drain), h2 %d, of them %d after the drain"
                % (summary(r), len(per_host["h1"]), len(per_host["h2"]), after))
        assert r["lost"] == 0, r
        assert after > 100, (at_drain, end)
        assert len(per_host["h1"]) > 0, "the loop ran on both hosts before the drain"
    finally:
        fleet.set_state("h1", "ready", wait="UP")


def test_host_maintenance_drain_then_stop_loses_no_client(fleet, figures, tmp_path):
    """Taking a host down (an upgrade, a reboot) the operator's way: drain
    it, wait until HAProxy has no session on it, stop it; start it, wait for
    the checks, put it back."""
    stop = str(tmp_path / "stop")
    h1 = fleet.hosts["h1"]
    p = fleet.spawn_client("loop", "--to", FRONT, "--tag", "maint", "--sources", ",".join(CLIENTS),
                           "--stop-file", stop, *LOOP)
    try:
        time.sleep(0.5)
        t = time.monotonic()
        fleet.set_state("h1", "drain")
        wait_until(lambda: fleet.servers()["h1"]["scur"] == 0, timeout=10,
                   what="h1's sessions finish")
        h1.sh("systemctl stop poold.socket poold.service")
        wait_until(lambda: fleet.servers()["h1"]["status"].startswith("DOWN"), timeout=10,
                   what="HAProxy's checks see h1 DOWN")
        h1.sh("systemctl start poold.socket")
        wait_until(lambda: fleet.servers()["h1"]["status"] == "DRAIN", timeout=10,
                   what="HAProxy's checks see h1 back (still drained)")
        fleet.set_state("h1", "ready", wait="UP")
        secs = time.monotonic() - t
        time.sleep(0.5)
    finally:
        open(stop, "w").close()
    r = fleet.result(p)
    assert_no_crash(fleet)
    per_host = check_journals(fleet, "maint", r["served_seqs"])
    figures("h1 drained, stopped, started, put back under a client loop",
            "%s; h1 out for %.1f s; h1 served %d, h2 %d"
            % (summary(r), secs, len(per_host["h1"]), len(per_host["h2"])))
    assert r["lost"] == 0, r


def test_a_host_stopped_without_a_drain(fleet, figures, tmp_path):
    """What retries 3 + option redispatch are for: h1's socket closed with
    no drain. A connection HAProxy has already made to h1 (queued in its
    socket while poold stops, before systemd closes the socket) is lost:
    HAProxy was connected, so it cannot retry; the client gets a close
    without a payload (a few, at the moment of the stop). Every later
    connection to h1 is refused until the checks mark it DOWN, and HAProxy
    sends each of those to h2 instead. Hence: drain first (the test above)."""
    stop = str(tmp_path / "stop")
    h1 = fleet.hosts["h1"]
    redispatched0 = int(fleet.servers()["h1"]["wredis"] or 0)
    p = fleet.spawn_client("loop", "--to", FRONT, "--tag", "gone", "--sources", ",".join(CLIENTS),
                           "--stop-file", stop, *LOOP)
    try:
        time.sleep(0.5)
        h1.sh("systemctl stop poold.socket poold.service")
        wait_until(lambda: fleet.servers()["h1"]["status"] == "DOWN", timeout=10,
                   what="HAProxy marks h1 DOWN")
        time.sleep(0.3)
        h1.sh("systemctl start poold.socket")
        wait_until(lambda: fleet.servers()["h1"]["status"] == "UP", timeout=10,
                   what="HAProxy marks h1 UP again")
        time.sleep(0.5)
    finally:
        open(stop, "w").close()
    r = fleet.result(p)
    assert_no_crash(fleet)
    check_journals(fleet, "gone", r["served_seqs"])
    redispatched = int(fleet.servers()["h1"]["wredis"] or 0) - redispatched0
    figures("h1 stopped without a drain (poold.socket and poold.service), then started",
            "%s; HAProxy redispatched %d refused connections to h2" % (summary(r), redispatched))
    # A lost client got a close or a reset without a payload, never a hang;
    # the retries saved many more than the stop lost.
    assert "timeout" not in r["errors"], r
    assert redispatched > max(r["lost"], 5), (redispatched, r)


def test_central_logs_find_a_client_on_both_hosts(fleet, figures):
    client = CLIENTS[1]
    # One at a time from one address: round robin alternates h1, h2.
    r = loop(fleet, "central", "--sources", client, "--count", "4", "--concurrency", "1")
    assert (r["served"], r["lost"]) == (4, 0), r
    check_journals(fleet, "central", r["served_seqs"])
    local = sum(len(fleet.hosts[n].journal("POOLD_REMOTE_ADDR=" + client)) for n in HOSTS)

    def uploaded():
        es = fleet.remote_journal("POOLD_REMOTE_ADDR=" + client)
        return es if len(es) >= local else None
    es = wait_until(uploaded, timeout=30, what="the log host has all of %s's entries" % client)
    assert len(es) == local, (len(es), local)
    central = [e for e in es if text(e.get("POOLD_MESSAGE")).startswith("fleet central ")]
    assert len(central) == 4, central
    hostnames = {e["_HOSTNAME"] for e in central}
    machines = {e["_MACHINE_ID"] for e in central}
    assert hostnames == {fleet.hosts[n].c.name for n in HOSTS}, hostnames
    assert len(machines) == 2, machines
    assert all(e.get("POOLD_REMOTE_ADDR") == client for e in es)
    figures("central logs (journalctl -D /var/log/journal/remote POOLD_REMOTE_ADDR=%s)" % client,
            "%d entries from %s, as many as both hosts' own journals hold" % (len(es), ", ".join(sorted(hostnames))))


def test_tls_terminated_at_haproxy(fleet, figures):
    """fe_tls: HAProxy terminates TLS (bind ... ssl crt) and tells poold with
    send-proxy-v2-ssl; poold logs the TLS version with the real client."""
    r = fleet.client("tls", "--to", "%s:%d" % (LB, TLS_PORT), "--src", CLIENTS[2], "--tag", "tls",
                     "--ca", fleet.tls_cert, "--name", TLS_NAME, "--count", "4")
    assert (r["served"], r["lost"]) == (4, 0), r
    per_host = check_journals(fleet, "tls", range(4), closed=True)
    versions = set()
    for name, ss in per_host.items():
        assert len(ss) == 2, (name, ss)  # round robin over both hosts
        for e in ss.values():
            assert e.get("POOLD_REMOTE_ADDR") == CLIENTS[2], e
            assert e["_closed"].get("POOLD_REMOTE_ADDR") == CLIENTS[2], e
            versions.add(e["_closed"].get("POOLD_TLS_VERSION"))
    assert versions == {r["version"]}, (versions, r["version"])
    figures("TLS at HAProxy (send-proxy-v2-ssl)",
            "4 of 4 served; poold logged POOLD_TLS_VERSION=%s" % r["version"])
