"""The PROXY protocol on a listener: a header from a trusted balancer names
the real client, who then drives access lists, per-source limits and the
log; anything else (untrusted sender, no header, a bad or truncated one, a
timeout) is closed without a payload, logged and counted."""
import socket
import struct
import time

import pytest

from harness import TUTORIAL_PAYLOAD, free_port, recv_all, recv_exact, slow_factor

SIG = b"\r\n\r\n\x00\r\nQUIT\n"


def v1(src="203.0.113.7", dst="192.0.2.1", sport=4242, dport=2727, fam="TCP4"):
    return f"PROXY {fam} {src} {dst} {sport} {dport}\r\n".encode()


def v2(src="203.0.113.7", dst="192.0.2.1", sport=4242, dport=2727, tlvs=b"", local=False):
    addrs = socket.inet_aton(src) + socket.inet_aton(dst) + struct.pack("!HH", sport, dport)
    if local:
        return SIG + bytes([0x20, 0x00]) + struct.pack("!H", 0)
    body = addrs + tlvs
    return SIG + bytes([0x21, 0x11]) + struct.pack("!H", len(body)) + body


def refused(s):
    """Closed without a payload: EOF, or a reset (poold closed with the
    refused bytes unread)."""
    try:
        return recv_all(s) == b""
    except ConnectionResetError:
        return True


def tlv(t, value):
    return bytes([t]) + struct.pack("!H", len(value)) + value


def ssl_tlv(version=b"TLSv1.3"):
    # client flags: PP2_CLIENT_SSL; verify 0; then the VERSION sub-TLV
    return tlv(0x20, bytes([0x01]) + struct.pack("!I", 0) + tlv(0x21, version))


def start(poold, mode="any", extra="", notify=False, timeout="500ms"):
    port = free_port()
    p = poold(f"[session]\nmax_messages = 1\n[listener lb]\nproxy_protocol = {mode}\nproxy_from = 127.0.0.1\n"
              f"proxy_timeout = {timeout}\naddress = 127.0.0.1:{port}\n{extra}", notify=notify)
    p.lb_port = port
    return p


def through(p, header, src="127.0.0.1", then=b""):
    """A connection as the balancer would make it: the header, maybe the
    client's first bytes in the same segment; returns (socket, payload)."""
    s = socket.socket()
    s.settimeout(5 * slow_factor())
    s.bind((src, 0))
    s.connect(("127.0.0.1", p.lb_port))
    s.sendall(header + then)
    return s


@pytest.mark.parametrize("header", [v1(), v2(), v1("2001:db8::7", "2001:db8::1", fam="TCP6")],
                         ids=["v1", "v2", "v1-tcp6"])
def test_header_names_the_real_client(poold, header):
    p = start(poold)
    with through(p, header, then=b"hello") as s:
        assert recv_exact(s, 26) == TUTORIAL_PAYLOAD
        assert recv_all(s) == b""
    real = "[2001:db8::7]:4242" if b"TCP6" in header else "203.0.113.7:4242"
    p.wait_log(rf"Received message 1 \(5 bytes\) from {re_escape(real)}: \"hello\"")
    p.wait_log(rf"Closed connection 1 from {re_escape(real)} \(via 127\.0\.0\.1:\d+\) on listener lb ")


def re_escape(s):
    import re
    return re.escape(s)


def test_a_header_that_trickles_in_is_served_without_spinning(poold):
    """Bytes of a header that has not ended are read off and kept: a partial
    header never makes poold spin on a socket that stays readable."""
    p = start(poold, timeout="5s")
    hdr = v2()
    with through(p, b"") as s:
        s.send(hdr[:5])
        cpu0 = cpu_ticks(p.pid)
        time.sleep(1.0)
        used = cpu_ticks(p.pid) - cpu0
        for b in hdr[5:]:
            s.send(bytes([b]))
            time.sleep(0.005)
        assert recv_exact(s, 26) == TUTORIAL_PAYLOAD
    assert used < 25, f"{used} CPU ticks in 1 s waiting for the rest of a header"  # a spin burns ~100
    p.wait_log(r"Closed connection 1 from 203\.0\.113\.7:4242 ")


def cpu_ticks(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


@pytest.mark.parametrize("sent, reason", [
    (b"GET / HTTP/1.0\r\n\r\n", r"bad PROXY header \(.+\)"),
    (b"PROXY TCP4 203.0.113.7 192.0.2.1 4242\r\n", r"bad PROXY header \(.+\)"),
    (b"PROXY TCP4 999.0.113.7 192.0.2.1 4242 2727\r\n", r"bad PROXY header \(.+\)"),
    (SIG + bytes([0x21, 0x11]) + struct.pack("!H", 4), r"bad PROXY header \(.+\)"),
])
def test_garbage_is_refused_at_once(poold, sent, reason):
    p = start(poold, notify=True)
    t0 = time.monotonic()
    with through(p, sent) as s:
        assert refused(s)
    assert time.monotonic() - t0 < 0.4 * slow_factor()  # not left to the timeout
    p.wait_log(rf"Refused connection from 127\.0\.0\.1:\d+ on listener lb: {reason}")
    p.notify.wait_for(r"refused \(proxy header 1\)")


def test_no_header_and_a_truncated_one_time_out(poold):
    p = start(poold, notify=True)
    with through(p, b"") as a, through(p, v1()[:20]) as b:
        t0 = time.monotonic()
        assert refused(a) and refused(b)
        assert 0.3 < time.monotonic() - t0 < 3 * slow_factor()
    p.wait_log(r"no complete PROXY header within proxy_timeout", count=2)
    p.notify.wait_for(r"refused \(proxy_timeout 2\)")


def test_closed_within_the_header(poold):
    p = start(poold)
    s = through(p, v2()[:10])
    s.close()
    p.wait_log(r"bad PROXY header \(connection closed within the header\)")


def test_untrusted_sender_is_refused(poold):
    p = start(poold)
    with through(p, v1(), src="127.0.0.2") as s:
        assert refused(s)
    p.wait_log(r"Refused connection from 127\.0\.0\.2:\d+ on listener lb: PROXY header sender not in proxy_from")


def test_wrong_version_is_refused(poold):
    p = start(poold, mode="v2")
    with through(p, v1()) as s:
        assert refused(s)
    p.wait_log(r"on listener lb: bad PROXY header")


def test_real_client_drives_allow_and_per_source(poold):
    p = start(poold, extra="allow = 203.0.113.0/24\nper_source = 1\nmax_messages = 5\n")
    with through(p, v1("198.51.100.9")) as s:
        assert refused(s)
    p.wait_log(r"Refused connection from 198\.51\.100\.9:4242 via 127\.0\.0\.1:\d+ on listener lb: address not "
               r"in the allow list")
    held = through(p, v1("203.0.113.5"))
    assert recv_exact(held, 26) == TUTORIAL_PAYLOAD
    with through(p, v1("203.0.113.5", sport=5555)) as s:  # same real client: over per_source
        assert refused(s)
    with through(p, v1("203.0.113.6")) as s:  # another real client, same balancer: served
        assert recv_exact(s, 26) == TUTORIAL_PAYLOAD
    p.wait_log(r"Refused connection from 203\.0\.113\.5:5555 via .*too many connections from this source")
    held.close()


def test_local_is_a_health_check(poold):
    p = start(poold, extra="allow = 203.0.113.0/24\n", notify=True)
    with through(p, v2(local=True)) as s:  # the balancer itself: not in allow, still served
        assert recv_exact(s, 26) == TUTORIAL_PAYLOAD
    p.notify.wait_for(r"health checks 1")
    time.sleep(0.2)
    assert not [l for l in p.log() if "Closed connection" in l]  # logged at debug only


def test_v2_tlvs_are_read(poold):
    p = start(poold, extra="max_messages = 0\n")
    hdr = v2(tlvs=tlv(0x02, b"example.com") + tlv(0x04, b"\x00" * 7) + ssl_tlv())
    with through(p, hdr) as s:
        assert recv_all(s) == TUTORIAL_PAYLOAD
    p.wait_log(r"Closed connection 1 from 203\.0\.113\.7:4242 \(via 127\.0\.0\.1:\d+, TLSv1\.3, authority "
               r"example\.com\) on listener lb ")


def test_proxy_protocol_needs_proxy_from(tmp_path):
    import subprocess
    from harness import poold_bin
    conf = tmp_path / "poold.conf"
    conf.write_text("[listen]\nproxy_protocol = v2\n")
    r = subprocess.run([poold_bin(), "--check-config", "--config", str(conf)], capture_output=True, text=True,
                       timeout=30)
    assert r.returncode == 78
    assert r.stderr.startswith(f"{conf}:2: proxy_protocol needs proxy_from"), r.stderr


def test_reload_turning_proxy_off_serves_silent_clients_at_once(poold):
    """poold defers accepts on a PROXY listener (the balancer speaks first);
    once a reload turns the PROXY protocol off, a client that waits for the
    payload must get it at once, not after the kernel's deferral."""
    p = start(poold)
    text = open(p.config_path).read()
    p.write_config(text.replace("proxy_protocol = any\nproxy_from = 127.0.0.1\n", ""))
    p.signal(1)
    p.wait_log(r"Reloaded configuration")
    t0 = time.monotonic()
    with through(p, b"") as s:
        assert recv_exact(s, 26) == TUTORIAL_PAYLOAD
    assert time.monotonic() - t0 < 0.5 * slow_factor()
