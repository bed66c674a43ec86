"""The .rpm: built with rpmbuild on this Debian host (packaging/mkrpm.sh, with
the systemd macros from packaging/rpm/macros.debian-host) and rpmlint-clean;
its file list, config flags, dependencies and scriptlets; and an install into
a scratch root (`rpm --root`). Scriptlets are checked as text (rpm -qp
--scripts) and not run: they would call systemctl on this machine.
"""

import os
import re
import subprocess

from .conftest import need_root

UNITDIR = "/usr/lib/systemd/system"  # Fedora's %{_unitdir}
EXPECTED = {
    "/etc/poold",
    "/etc/poold/poold.conf",
    "/etc/poold/poold.conf.d",
    UNITDIR + "/poold-banner.socket",
    UNITDIR + "/poold-metrics.socket",
    UNITDIR + "/poold.service",
    UNITDIR + "/poold.socket",
    "/usr/sbin/poold",
    "/usr/share/doc/poold",
    "/usr/share/doc/poold/README.md",
    "/usr/share/licenses/poold",
    "/usr/share/licenses/poold/LICENSE",
    "/usr/share/man/man5/poold.conf.5.gz",
    "/usr/share/man/man8/poold.8.gz",
}
# rpm's build-id links for /usr/sbin/poold (as in any Fedora main package)
BUILD_ID = re.compile(r"^/usr/lib/\.build-id(/[0-9a-f]{2}(/[0-9a-f]{38})?)?$")


def rpmq(*args, root=None):
    cmd = ["rpm"]
    if root:
        cmd += ["--root", root, "--dbpath", "/var/lib/rpm"]
    p = subprocess.run(cmd + list(args), timeout=60, stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE)
    assert p.returncode == 0, (cmd + list(args), p.stderr.decode())
    return p.stdout.decode()


def check_file_list(listing):
    files = set(listing.split())
    assert {f for f in files if not BUILD_ID.match(f)} == EXPECTED, listing
    assert any(BUILD_ID.match(f) and f.count("/") == 5 for f in files), listing


def test_rpm_builds_and_is_rpmlint_clean(rpm_build):
    assert "0 errors, 0 warnings" in rpm_build.log, rpm_build.log[-4000:]
    assert "rpmlint clean" in rpm_build.log
    print(rpm_build.log[-2000:])


def test_rpm_version(rpm_build, version):
    assert rpmq("-qp", "--qf", "%{NAME} %{VERSION}", rpm_build.path) == "poold " + version


def test_rpm_file_list(rpm_build):
    check_file_list(rpmq("-qlp", rpm_build.path))


def test_rpm_file_flags(rpm_build):
    flags = {}
    for line in rpmq("-qp", "--qf", "[%{FILENAMES}\t%{FILEFLAGS:fflags}\t%{FILEMODES:perms}\n]",
                     rpm_build.path).splitlines():
        name, ff, mode = line.split("\t")
        flags[name] = (ff, mode)
    assert flags["/etc/poold/poold.conf"] == ("cn", "-rw-r--r--")  # %config(noreplace)
    assert flags["/etc/poold/poold.conf.d"][1].startswith("d")
    assert flags["/usr/share/licenses/poold/LICENSE"][0] == "l"  # %license
    assert flags["/usr/share/doc/poold/README.md"][0] == "d"  # %doc
    assert flags["/usr/share/man/man8/poold.8.gz"][0] == "d"
    assert flags["/usr/sbin/poold"] == ("", "-rwxr-xr-x")
    assert rpmq("-qcp", rpm_build.path).split() == ["/etc/poold/poold.conf"]


def test_rpm_requires(rpm_build):
    req = rpmq("-qp", "--requires", rpm_build.path).split("\n")
    for r in ("libinih.so.1()(64bit)", "libsystemd.so.0()(64bit)", "libmicrohttpd.so.12()(64bit)", "systemd"):
        assert r in req, req


def test_rpm_scriptlets(rpm_build):
    scripts = rpmq("-qp", "--scripts", rpm_build.path)
    parts = re.split(r"^(\w+) scriptlet \(using /bin/sh\):$", scripts, flags=re.M)
    got = dict(zip(parts[1::2], parts[2::2]))
    assert sorted(got) == ["postinstall", "postuninstall", "preuninstall"], scripts
    helper = "/usr/lib/systemd/systemd-update-helper"
    # install: presets for both units; removal: disable --now all three
    assert "[ $1 -eq 1 ]" in got["postinstall"]
    assert helper + " install-system-units poold.socket poold.service" in got["postinstall"]
    assert "[ $1 -eq 0 ]" in got["preuninstall"]
    assert (helper + " remove-system-units poold.socket poold.service poold-banner.socket poold-metrics.socket"
            in got["preuninstall"])
    # the example second socket and the metrics socket: no preset on install
    # (they stay disabled), but removal disables and stops them where an
    # administrator enabled them
    units = re.search(r"install-system-units (.*) \|\| :", got["postinstall"]).group(1)
    assert units.split() == ["poold.socket", "poold.service"], got["postinstall"]
    # upgrade: restart the service only; the socket keeps its queued clients
    assert "[ $1 -ge 1 ]" in got["postuninstall"]
    assert helper + " mark-restart-system-units poold.service" in got["postuninstall"]
    assert "poold.socket" not in got["postuninstall"].replace(
        "# Upgrade: restart a running poold onto the new binary, but never the socket:", "")
    assert "%" not in scripts  # every macro expanded


def test_rpm_installs_into_scratch_root(rpm_build, tmp_path):
    need_root("rpm --root chroots into the scratch root")
    root = str(tmp_path / "root")
    os.makedirs(root)
    rpmq("--initdb", root=root)
    # --nodeps: the scratch root has no glibc/systemd/inih packages in its rpm
    # database; --noscripts: the scriptlets would run systemctl (checked above)
    rpmq("-i", "--nodeps", "--noscripts", rpm_build.path, root=root)
    assert rpmq("-qa", "--qf", "%{NAME}\n", root=root).split() == ["poold"]
    check_file_list(rpmq("-ql", "poold", root=root))
    for f in EXPECTED:
        assert os.path.lexists(root + f), f
    assert os.access(root + "/usr/sbin/poold", os.X_OK)
    # sizes, digests, modes as packaged (--nodeps: nothing provides libc here)
    assert rpmq("-V", "--nodeps", "poold", root=root) == ""
    with open(root + "/etc/poold/poold.conf") as f:
        assert "[payload]" in f.read()
    rpmq("-e", "--nodeps", "--noscripts", "poold", root=root)
    assert not os.path.exists(root + "/usr/sbin/poold")
    assert not os.path.exists(root + "/etc/poold/poold.conf")
