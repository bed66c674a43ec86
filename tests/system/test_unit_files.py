"""The unit files say what issue 3 and poold(8) promise (no root needed).

The behaviour behind each setting is proven under a real systemd in
test_systemd_poold.py; this catches an edit that drops one.
"""
import os
import re

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def settings(unit):
    """{(section, key): [values]} of a unit file, comments dropped."""
    out, section = {}, None
    with open(os.path.join(REPO, "packaging", "systemd", unit)) as f:
        for line in f:
            line = line.strip()
            if not line or line[0] in "#;":
                continue
            m = re.fullmatch(r"\[(\w+)\]", line)
            if m:
                section = m.group(1)
                continue
            k, v = line.split("=", 1)
            out.setdefault((section, k.strip()), []).append(v.strip())
    return out


SOCKET = {
    ("Socket", "ListenStream"): ["2727"],
    ("Socket", "BindIPv6Only"): ["both"],
    ("Socket", "Accept"): ["no"],
    ("Socket", "FileDescriptorName"): ["poold"],
    ("Install", "WantedBy"): ["sockets.target"],
}
SERVICE = {
    ("Unit", "Requires"): ["poold.socket"],
    ("Unit", "After"): ["poold.socket"],
    ("Unit", "Documentation"): ["man:poold(8) man:poold.conf(5)"],
    ("Service", "Type"): ["notify"],
    ("Service", "ExecStart"): ["/usr/sbin/poold"],
    ("Service", "ExecReload"): ["/usr/sbin/poold --check-config", "/bin/kill -HUP $MAINPID"],
    ("Service", "Restart"): ["on-failure"],
    ("Service", "RestartPreventExitStatus"): ["78"],
    ("Service", "DynamicUser"): ["yes"],
    ("Service", "PrivateNetwork"): ["yes"],
    ("Service", "ProtectSystem"): ["strict"],
    ("Service", "ProtectHome"): ["yes"],
    ("Service", "PrivateDevices"): ["yes"],
    ("Service", "CapabilityBoundingSet"): [""],
    ("Service", "NoNewPrivileges"): ["yes"],
    ("Service", "RestrictAddressFamilies"): ["AF_UNIX"],
    ("Service", "MemoryDenyWriteExecute"): ["yes"],
    ("Service", "CPUSchedulingPolicy"): ["batch"],
}


@pytest.mark.parametrize("key,want", sorted(SOCKET.items()), ids=lambda v: "/".join(v) if isinstance(v, tuple) else None)
def test_socket_setting(key, want):
    assert settings("poold.socket").get(key) == want


@pytest.mark.parametrize("key,want", sorted(SERVICE.items()), ids=lambda v: "/".join(v) if isinstance(v, tuple) else None)
def test_service_setting(key, want):
    assert settings("poold.service").get(key) == want


def test_service_has_watchdog_backlog_and_start_limits():
    sv, so = settings("poold.service"), settings("poold.socket")
    assert int(so[("Socket", "Backlog")][0]) >= 128
    assert sv[("Service", "WatchdogSec")][0].endswith("s")
    assert sv[("Service", "SystemCallFilter")][0] == "@system-service"
    assert ("Unit", "StartLimitBurst") in sv and ("Unit", "StartLimitIntervalSec") in sv


# The example second socket (issue 12): the same listening settings as
# poold.socket on its own port and name, feeding poold.service. Enabling it is
# the administrator's choice: the packages install it and leave it disabled
# (tests/package), and its header says how (test_listener_sockets.py runs
# those steps under systemd).
BANNER = {
    ("Socket", "ListenStream"): ["2222"],
    ("Socket", "FileDescriptorName"): ["banner"],
    ("Socket", "Service"): ["poold.service"],
    ("Install", "WantedBy"): ["sockets.target"],
}


@pytest.mark.parametrize("key,want", sorted(BANNER.items()), ids=lambda v: "/".join(v) if isinstance(v, tuple) else None)
def test_banner_socket_setting(key, want):
    assert settings("poold-banner.socket").get(key) == want


def test_banner_socket_listens_like_poold_socket():
    so, banner = settings("poold.socket"), settings("poold-banner.socket")
    for key in (("Socket", "BindIPv6Only"), ("Socket", "Accept"), ("Socket", "Backlog"),
                ("Unit", "Documentation")):
        assert banner.get(key) == so.get(key), key
    assert set(k for k in banner if k[0] == "Socket") == set(k for k in so if k[0] == "Socket") | {
        ("Socket", "Service")}


def test_banner_socket_header_says_how_to_enable_it():
    with open(os.path.join(REPO, "packaging", "systemd", "poold-banner.socket")) as f:
        header = "".join(line[1:] for line in f if line.startswith("#"))
    for want in ("[listener banner]", "/etc/poold/poold.conf.d/", "systemctl stop poold.service",
                 "systemctl enable --now poold-banner.socket"):
        assert want in header, want
