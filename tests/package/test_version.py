"""One version, in one place: VERSION. The Makefile, `poold --version`, the
Debian changelog (upstream part of its top entry) and the RPM spec's Version:
must all say the same. Bump VERSION, then add a debian/changelog entry
(`dch -v X.Y.Z-1` in packaging/) and change Version: in packaging/rpm/poold.spec.
"""

import os
import re
import subprocess

from .conftest import REPO, read_version, skip_or_fail


def test_version_file_is_plain():
    v = read_version()
    assert re.fullmatch(r"\d+\.\d+\.\d+([~+][0-9A-Za-z.]+)?", v), v
    with open(os.path.join(REPO, "VERSION")) as f:
        assert f.read() == v + "\n"


def test_makefile_uses_version_file():
    p = subprocess.run(["make", "-C", REPO, "-np", "-q", "all"], timeout=60,
                       stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    m = re.search(r"^VERSION :?= (.*)$", p.stdout.decode(), re.M)
    assert m and m.group(1).strip() == read_version()


def test_binary_version():
    binary = os.environ.get("POOLD_BIN") or os.path.join(REPO, "poold")
    if not os.access(binary, os.X_OK):
        skip_or_fail("%s not built (run make first)" % binary)
    out = subprocess.run([binary, "--version"], timeout=10, check=True,
                         stdout=subprocess.PIPE).stdout.decode().strip()
    assert out == "poold " + read_version()


def test_debian_changelog_version():
    with open(os.path.join(REPO, "packaging", "debian", "changelog")) as f:
        first = f.readline()
    m = re.match(r"^poold \(([^)]+)\) [a-z-]+; urgency=\w+$", first.rstrip("\n"))
    assert m, first
    full = m.group(1)
    upstream = full.split(":", 1)[-1].rsplit("-", 1)[0]
    assert upstream == read_version(), full
    assert "-" in full  # 3.0 (quilt): a Debian revision


def test_rpm_spec_version():
    with open(os.path.join(REPO, "packaging", "rpm", "poold.spec")) as f:
        spec = f.read()
    versions = re.findall(r"^Version:\s*(\S+)\s*$", spec, re.M)
    assert versions == [read_version()]
    # the newest %changelog entry is for this version too
    m = re.search(r"^%changelog\n\* .* - (\S+)$", spec, re.M)
    assert m and m.group(1).rsplit("-", 1)[0] == read_version(), m and m.group(0)
