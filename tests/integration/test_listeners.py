"""Named listeners: each socket systemd passes by name (LISTEN_FDNAMES), or
each standalone listener `address`, is served with its [listener NAME]
section, inheriting what the section leaves unset; access lists and rates
per listener and globally."""
import os
import socket
import subprocess
import time

import pytest

from harness import TUTORIAL_PAYLOAD, free_port, poold_bin, recv_all, recv_exact, slow_factor


def fetch(port, src="127.0.0.1", host="127.0.0.1"):
    """What a client gets before poold closes; b"" when refused."""
    fam = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(fam) as s:
        s.settimeout(5 * slow_factor())
        if src:
            s.bind((src, 0))
        s.connect((host, port))
        try:
            return recv_all(s)
        except ConnectionResetError:
            return b"<reset>"


LISTENERS = """
[payload]
text = global\\n
[session]
max_messages = 0
[listener banner]
text = SSH-2.0-poold\\r\\n
[listener blob]
text = blob\\n
max_messages = 1
"""


def test_sockets_passed_by_name_serve_their_own_sections(poold):
    ports = [free_port() for _ in range(3)]
    p = poold(LISTENERS, activate=True, listen=[f"127.0.0.1:{x}" for x in ports],
              fdnames=["banner", "blob", "other"])
    assert fetch(ports[0]) == b"SSH-2.0-poold\r\n"
    p.wait_log(r"Started: 3 systemd sockets, .*listeners: banner, blob\.")
    assert fetch(ports[2]) == b"global\n"  # a name with no section: the global settings
    with socket.create_connection(("127.0.0.1", ports[1]), timeout=5) as s:
        assert recv_exact(s, 5) == b"blob\n"
        s.sendall(b"hi")  # max_messages = 1 here, inherited 0 elsewhere
        assert recv_all(s) == b""
    p.wait_log(r"Received message 1 \(2 bytes\) from 127\.0\.0\.1:\d+: \"hi\"")
    p.wait_log(r"Closed connection \d+ from 127\.0\.0\.1:\d+ on listener blob after .*all messages read")


def test_section_without_a_socket_is_warned_about(poold):
    port = free_port()
    p = poold(LISTENERS, activate=True, listen=[f"127.0.0.1:{port}"], fdnames=["banner"])
    assert fetch(port) == b"SSH-2.0-poold\r\n"
    p.wait_log(r"\[listener blob\] is not used: systemd passed no socket named blob")


def test_standalone_listener_binds_its_own_addresses(poold):
    port_a, port_b, port_g = free_port(), free_port(), free_port()
    p = poold(LISTENERS + f"address = 127.0.0.1:{port_a}\naddress = [::1]:{port_b}\n"
              f"[listen]\naddress = 127.0.0.1:{port_g}\n")
    for host, port in (("127.0.0.1", port_a), ("::1", port_b)):
        with socket.create_connection((host, port), timeout=5) as s:
            assert recv_exact(s, 5) == b"blob\n"
    assert fetch(port_g) == b"global\n"
    p.wait_log(r"Started: 3 bound sockets")
    p.wait_log(r"\[listener banner\] is not used: poold listens on none of its addresses \(it has no address =\)")


def test_check_config_warns_about_sections_without_an_address(tmp_path):
    conf = tmp_path / "poold.conf"
    conf.write_text(LISTENERS)
    r = subprocess.run([poold_bin(), "--check-config", "--config", str(conf)], capture_output=True, text=True,
                       timeout=30)
    assert r.returncode == 0, r.stderr
    assert "[listener banner] has no address =: it serves only a socket that systemd passes with " \
           "FileDescriptorName=banner" in r.stderr


@pytest.mark.parametrize("body, message", [
    ("[listener x]\nthreads = 2\n", "threads is a global setting: set it in [pool], not in a [listener] section"),
    ("[listener x]\nmax_connections = 2\n", "max_connections is a global setting"),
    ("[listener x]\nlevel = debug\n", "level is a global setting: set it in [log]"),
    ("[listener x]\nbogus = 1\n", "unknown key \"bogus\" in section [listener x]"),
    ("[listener]\ntext = a\n", "[listener] needs a name"),
    ("[listener a:b]\ntext = a\n", "a listener name is 1 to 64 letters"),
    ("[listener x]\nallow = 10.0.0.1/8\n", "allow: 10.0.0.1/8 has bits set past its prefix length (did you mean "
                                           "10.0.0.0/8?)"),
    ("[limits]\ndeny = example.com\n", "deny: \"example.com\" is not an IPv4 or IPv6 address or prefix"),
    ("[listener x]\nrate = 5\n", "rate: \"5\" is not a rate (N/s, or 0 for no limit)"),
    ("[listener x]\nper_source_rate = 0/s\n", "per_source_rate: 0/s is out of range"),
    ("[listener x]\ntext = a\nfile = /etc/hostname\n", "duplicate payload source"),
    ("[listener x]\nper_source = 1\nper_source = 2\n", "per_source: duplicate key (already set at line 2)"),
])
def test_bad_listener_configs_are_file_line_errors(tmp_path, body, message):
    conf = tmp_path / "poold.conf"
    conf.write_text(body)
    r = subprocess.run([poold_bin(), "--check-config", "--config", str(conf)], capture_output=True, text=True,
                       timeout=30)
    assert r.returncode == 78, r.stderr
    assert r.stderr.startswith(f"{conf}:"), r.stderr
    assert message in r.stderr, r.stderr


def test_print_config_with_listeners_reads_back_identically(tmp_path):
    conf = tmp_path / "poold.conf"
    conf.write_text("[limits]\ndeny = 192.0.2.0/24\nallow = 127.0.0.0/8 ::1\nper_source_rate = 5/s\n"
                    "[listener a]\ntext = A\\n\n  continued\nallow = 10.0.0.0/8\naddress = 127.0.0.1:1\n"
                    "[listener b]\ndeny =\nrate = 100/s\n")
    os.makedirs(str(conf) + ".d")
    (tmp_path / "poold.conf.d" / "50-late.conf").write_text("[session]\nidle_timeout = 3s\n"
                                                           "[listener a]\nmax_messages = 2\n")
    first = subprocess.run([poold_bin(), "--print-config", "--config", str(conf)], capture_output=True,
                           text=True, timeout=30, check=True).stdout
    # The drop-in's global idle_timeout reaches both listeners.
    assert first.count("idle_timeout = 3s") == 3, first
    back = tmp_path / "back.conf"
    back.write_text(first)
    second = subprocess.run([poold_bin(), "--print-config", "--config", str(back)], capture_output=True,
                            text=True, timeout=30, check=True).stdout
    strip = lambda t: [l for l in t.splitlines() if not l.startswith("#   ")]  # noqa: E731
    assert strip(second) == strip(first)


def test_allow_and_deny_per_listener_and_globally(poold):
    ports = [free_port() for _ in range(3)]
    p = poold("[session]\nmax_messages = 0\n"
              "[limits]\ndeny = 127.0.0.66\n"  # global: every listener that does not set deny
              "[listener strict]\nallow = 127.0.0.0/8\ndeny = 127.0.0.0/16\nallow = 127.0.9.0/24\n"
              "[listener open]\ndeny =\n",
              activate=True, listen=[f"127.0.0.1:{x}" for x in ports], fdnames=["strict", "open", "plain"],
              notify=True)
    # strict: allow /8, deny /16, allow /24 (more specific than the deny).
    assert fetch(ports[0], "127.1.0.1") == TUTORIAL_PAYLOAD
    assert fetch(ports[0], "127.0.0.1") == b""
    assert fetch(ports[0], "127.0.9.9") == TUTORIAL_PAYLOAD
    assert fetch(ports[0], "127.0.0.66") == b""  # the global deny is inherited
    # open: its own empty deny list, so 127.0.0.66 gets in there...
    assert fetch(ports[1], "127.0.0.66") == TUTORIAL_PAYLOAD
    # ...and not on a socket with no section of its own.
    assert fetch(ports[2], "127.0.0.66") == b""
    assert fetch(ports[2], "127.0.0.67") == TUTORIAL_PAYLOAD
    # IPv6 clients are not in strict's IPv4 allow list.
    p.wait_log(r"Refused connection from 127\.0\.0\.1:\d+ on listener strict: address denied \(deny\)")
    p.wait_log(r"Refused connection from 127\.0\.0\.66:\d+ on listener strict: address denied")
    p.wait_log(r"Refused connection from 127\.0\.0\.66:\d+: address denied \(deny\)")
    p.notify.wait_for(r"; 4 served, 3 refused \(deny 3\)")


def test_ipv4_mapped_clients_match_ipv4_rules(poold):
    port = free_port(socket.AF_INET6, "::")
    p = poold(f"[session]\nmax_messages = 0\n[limits]\nallow = 127.0.0.2\n[listen]\naddress = [::]:{port}\n")
    assert fetch(port, "127.0.0.2") == TUTORIAL_PAYLOAD  # arrives as ::ffff:127.0.0.2
    assert fetch(port, "127.0.0.3") == b""
    assert fetch(port, "::1", host="::1") == b""
    p.wait_log(r"Refused connection from 127\.0\.0\.3:\d+: address not in the allow list \(not allowed\)")


def test_per_source_rate_refuses_then_serves_again_when_the_bucket_refills(poold):
    p = poold("[session]\nmax_messages = 0\n[limits]\nper_source_rate = 3/s\noverload = busy\n", notify=True)
    got = [fetch(p.port, "127.0.0.5") for _ in range(5)]
    assert got[:3] == [TUTORIAL_PAYLOAD] * 3 and got[3:] == [b"busy\n"] * 2, got
    assert fetch(p.port, "127.0.0.6") == TUTORIAL_PAYLOAD  # another source has its own bucket
    time.sleep(1.1)  # one second refills the bucket: nothing stays disabled
    assert fetch(p.port, "127.0.0.5") == TUTORIAL_PAYLOAD
    p.wait_log(r"Refused connection from 127\.0\.0\.5:\d+: too many new connections from this source "
               r"\(per_source_rate\)")
    p.notify.wait_for(r"refused \(per_source_rate 2\)")


def test_listener_rate_counts_every_source_together(poold):
    port = free_port()
    p = poold(f"[session]\nmax_messages = 0\n[listener capped]\nrate = 2/s\naddress = 127.0.0.1:{port}\n",
              notify=True)
    got = [fetch(port, f"127.0.1.{i}") for i in range(1, 5)]
    assert got == [TUTORIAL_PAYLOAD] * 2 + [b""] * 2, got
    assert fetch(p.port) == TUTORIAL_PAYLOAD  # the global socket is not capped
    p.notify.wait_for(r"refused \(rate 2\)")
    p.wait_log(r"Refused connection from 127\.0\.1\.3:\d+ on listener capped: too many new connections on "
               r"this listener \(rate\)")


def test_per_source_counts_each_listener_apart(poold):
    port = free_port()
    p = poold(f"[session]\nmax_messages = 5\n[limits]\nper_source = 1\n[listener b]\naddress = 127.0.0.1:{port}\n")
    a = socket.create_connection((p.host, p.port), timeout=5)
    recv_exact(a, 26)
    b = socket.create_connection((p.host, port), timeout=5)  # same source, other listener
    assert recv_exact(b, 26) == TUTORIAL_PAYLOAD
    assert fetch(p.port) == b""  # same source, same listener: over per_source
    a.close(), b.close()


def test_reload_applies_listener_settings_to_new_clients(poold):
    port = free_port()
    p = poold(f"[session]\nmax_messages = 0\n[listener x]\ntext = one\\n\naddress = 127.0.0.1:{port}\n")
    assert fetch(port) == b"one\n"
    p.write_config(p.config_path and open(p.config_path).read().replace("text = one", "text = two")
                   + f"[listener y]\ntext = y\naddress = 127.0.0.1:{free_port()}\n")
    p.signal(1)
    p.wait_log(r"Reloaded configuration: .*listeners: x, y\.")
    p.wait_log(r"Listen addresses changed: restart poold to listen there")
    p.wait_log(r"\[listener y\] is not used: poold listens on none of its addresses \(new addresses need a "
               r"restart\)")
    assert fetch(port) == b"two\n"


@pytest.fixture
def v6_netns():
    """A network namespace of our own whose loopback holds a /64 and a second
    /64, so IPv6 sources can differ (the host's loopback has only ::1)."""
    if os.geteuid() != 0:
        pytest.skip("needs root for a network namespace")
    name = f"poold-v6-{os.getpid()}"
    subprocess.run(["ip", "netns", "add", name], check=True, timeout=30)
    try:
        for cmd in (["ip", "link", "set", "lo", "up"],
                    ["ip", "-6", "addr", "add", "2001:db8:1::1/64", "dev", "lo", "nodad"],
                    ["ip", "-6", "addr", "add", "2001:db8:1::2/64", "dev", "lo", "nodad"],
                    ["ip", "-6", "addr", "add", "2001:db8:2::1/64", "dev", "lo", "nodad"]):
            subprocess.run(["ip", "netns", "exec", name] + cmd, check=True, timeout=30)
        yield name
    finally:
        subprocess.run(["ip", "netns", "delete", name], timeout=30)


def fetch_in(ns, port, src):
    code = ("import socket,sys; s=socket.socket(socket.AF_INET6); s.settimeout(5); s.bind((sys.argv[1],0)); "
            "s.connect(('2001:db8:1::1',int(sys.argv[2]))); d=b''\n"
            "while True:\n c=s.recv(4096)\n if not c: break\n d+=c\n"
            "sys.stdout.write(d.hex())")
    out = subprocess.run(["ip", "netns", "exec", ns, "/usr/bin/python3", "-c", code, src, str(port)],
                         capture_output=True, text=True, timeout=30, check=True)
    return bytes.fromhex(out.stdout)


@pytest.mark.parametrize("prefix, other_64_served", [(64, False), (128, True)])
def test_ipv6_prefix_counts_a_whole_64_as_one_source(poold, v6_netns, prefix, other_64_served):
    port = 2727
    p = poold(f"[session]\nmax_messages = 0\n[limits]\nper_source_rate = 1/s\nipv6_prefix = {prefix}\n"
              f"[listen]\naddress = [2001:db8:1::1]:{port}\n", wrap=["ip", "netns", "exec", v6_netns])
    assert fetch_in(v6_netns, port, "2001:db8:1::1") == TUTORIAL_PAYLOAD
    # Another address in the same /64: the same source at /64, its own at /128.
    assert (fetch_in(v6_netns, port, "2001:db8:1::2") == TUTORIAL_PAYLOAD) == other_64_served
    assert fetch_in(v6_netns, port, "2001:db8:2::1") == TUTORIAL_PAYLOAD  # another /64
