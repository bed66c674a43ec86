"""Cached minimal Debian bookworm root for the package tests.

Builds (once) a `debootstrap --variant=minbase` root with systemd, dbus,
python3-minimal and man-db under /var/tmp, plus the apt lists and the .debs of
poold's runtime dependencies in its apt cache, so that inside a container with
no network `apt-get install ./poold_*.deb` resolves everything locally.

The root is never written after it is built: tests boot it with
`systemd-nspawn --volatile=overlay`, so each boot starts from the same state.
It is reused while its stamp file matches a hash of everything that went into
it (suite, mirror, include list, extra packages, this file's recipe version);
otherwise it is rebuilt next to the old one and swapped in atomically.

CLI:  /usr/bin/python3 tests/package/bookworm_root.py [--force]
"""

import fcntl
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time

ROOT = os.environ.get("POOLD_BOOKWORM_ROOT", "/var/tmp/poold-bookworm-root")
SUITE = "bookworm"
INCLUDE = ["systemd", "systemd-sysv", "dbus", "python3-minimal", "man-db"]
# Runtime dependencies of the poold .deb that minbase + INCLUDE lack
# (dpkg-deb -f poold_*.deb Depends: libc6, libinih1, libmicrohttpd12, libsystemd0).
EXTRA_DEBS = ["libinih1", "libmicrohttpd12"]
RECIPE = 7  # bump when the build steps below change
STAMP = ".poold-root-stamp"
DEBOOTSTRAP_TIMEOUT = 600
APT_TIMEOUT = 300


def log(msg):
    print("[bookworm-root] %s" % msg, file=sys.stderr, flush=True)


def host_mirror():
    """The Debian mirror this machine's apt uses for `bookworm` main."""
    override = os.environ.get("POOLD_DEBIAN_MIRROR")
    if override:
        return override
    files = []
    if os.path.exists("/etc/apt/sources.list"):
        files.append("/etc/apt/sources.list")
    d = "/etc/apt/sources.list.d"
    if os.path.isdir(d):
        files += [os.path.join(d, f) for f in sorted(os.listdir(d))
                  if f.endswith((".list", ".sources"))]
    for path in files:
        try:
            text = open(path, encoding="utf-8", errors="replace").read()
        except OSError:
            continue
        if path.endswith(".sources"):
            for stanza in re.split(r"\n\s*\n", text):
                fields = {}
                for line in stanza.splitlines():
                    m = re.match(r"^([A-Za-z-]+):\s*(.*)$", line)
                    if m:
                        fields[m.group(1).lower()] = m.group(2).split()
                if ("deb" in fields.get("types", [])
                        and SUITE in fields.get("suites", [])
                        and "main" in fields.get("components", [])):
                    for uri in fields.get("uris", []):
                        if uri.startswith(("http://", "https://", "file:")):
                            return uri.rstrip("/")
        else:
            for line in text.splitlines():
                line = re.sub(r"\[[^]]*\]", "", line.split("#", 1)[0]).split()
                if (len(line) >= 4 and line[0] == "deb" and line[2] == SUITE
                        and "main" in line[3:]):
                    return line[1].rstrip("/")
    return "http://deb.debian.org/debian"


def recipe_hash(mirror):
    blob = json.dumps({"suite": SUITE, "mirror": mirror, "include": INCLUDE,
                       "extra": EXTRA_DEBS, "recipe": RECIPE}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


def is_valid(root, digest):
    try:
        with open(os.path.join(root, STAMP)) as f:
            if f.read().strip() != digest:
                return False
    except OSError:
        return False
    if not os.path.exists(os.path.join(root, "lib/systemd/systemd")):
        return False
    archives = os.path.join(root, "var/cache/apt/archives")
    for pkg in EXTRA_DEBS:
        if not any(n.startswith(pkg + "_") and n.endswith(".deb")
                   for n in os.listdir(archives)):
            return False
    return True


def _run(cmd, timeout, **kw):
    log("+ " + " ".join(cmd))
    subprocess.run(cmd, check=True, timeout=timeout, stdin=subprocess.DEVNULL, **kw)


def _chroot(root, args, timeout):
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL": "C.UTF-8",
           "DEBIAN_FRONTEND": "noninteractive"}
    _run(["chroot", root] + args, timeout, env=env)


def _umount_under(path):
    """Unmount what an interrupted build left mounted below path (its /proc)."""
    prefix = os.path.realpath(path) + "/"
    with open("/proc/self/mounts") as f:
        points = [line.split()[1] for line in f]
    for point in sorted((p for p in points if p.startswith(prefix)), reverse=True):
        subprocess.run(["umount", "-l", point], timeout=30)


def _rmtree(path):
    if os.path.lexists(path):
        _umount_under(path)
        shutil.rmtree(path)


def build(root, mirror, digest):
    tmp = root + ".new"
    _rmtree(tmp)
    t0 = time.monotonic()
    _run(["debootstrap", "--variant=minbase", "--include=" + ",".join(INCLUDE),
          SUITE, tmp, mirror], DEBOOTSTRAP_TIMEOUT)
    log("debootstrap done in %.0f s" % (time.monotonic() - t0))
    # Package lists + the runtime dependency .debs, fetched through the host's
    # network from the chroot (the container later has no network at all).
    with open(os.path.join(tmp, "etc/apt/sources.list"), "w") as f:
        f.write("deb %s %s main\n" % (mirror, SUITE))
    shutil.copy("/etc/resolv.conf", os.path.join(tmp, "etc/resolv.conf"))
    mounted = []
    try:
        for fs, target in (("proc", "proc"),):
            path = os.path.join(tmp, target)
            _run(["mount", "-t", fs, fs, path], 30)
            mounted.append(path)
        _chroot(tmp, ["apt-get", "-q", "update"], APT_TIMEOUT)
        # debootstrap leaves every base .deb in the cache (~90 MB): drop them.
        _chroot(tmp, ["apt-get", "clean"], APT_TIMEOUT)
        _chroot(tmp, ["apt-get", "-q", "-y", "--download-only", "install"] + EXTRA_DEBS,
                APT_TIMEOUT)
    finally:
        for path in reversed(mounted):
            subprocess.run(["umount", path], timeout=30)
    os.unlink(os.path.join(tmp, "etc/resolv.conf"))
    # /etc/machine-id stays as systemd's postinst wrote it: an empty one would
    # make every boot a "first boot" that applies presets to all units.
    # Some minimal images drop manual pages (dpkg path-exclude=/usr/share/man/*,
    # as Docker's debian images do); `man poold` must work here, so keep none.
    # (debootstrap's minbase adds no such file today: this is a guard.)
    cfgdir = os.path.join(tmp, "etc/dpkg/dpkg.cfg.d")
    for name in sorted(os.listdir(cfgdir)) if os.path.isdir(cfgdir) else []:
        path = os.path.join(cfgdir, name)
        with open(path) as f:
            lines = f.readlines()
        kept = ["# " + l if l.startswith("path-exclude") and "/man" in l else l
                for l in lines]
        if kept != lines:
            log("re-enabling manual pages excluded by %s" % path)
            with open(path, "w") as f:
                f.writelines(kept)
    # Periodic jobs (apt's daily update/upgrade would contend for the dpkg lock
    # during a test; man-db and the rest are noise) never run in test boots.
    for timer in ("apt-daily.timer", "apt-daily-upgrade.timer", "man-db.timer",
                  "dpkg-db-backup.timer", "e2scrub_all.timer", "fstrim.timer"):
        link = os.path.join(tmp, "etc/systemd/system", timer)
        if os.path.lexists(link):
            os.unlink(link)
        os.symlink("/dev/null", link)
    with open(os.path.join(tmp, STAMP), "w") as f:
        f.write(digest + "\n")
    old = root + ".old"
    _rmtree(old)
    if os.path.lexists(root):
        os.rename(root, old)
    os.rename(tmp, root)
    _rmtree(old)
    log("root ready at %s in %.0f s" % (root, time.monotonic() - t0))


def ensure_root(force=False):
    """Return the path of a valid cached root, building it if needed."""
    mirror = host_mirror()
    digest = recipe_hash(mirror)
    if not force and is_valid(ROOT, digest):
        return ROOT
    os.makedirs(os.path.dirname(ROOT), exist_ok=True)
    with open(ROOT + ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another run may be building it
        if not force and is_valid(ROOT, digest):
            return ROOT
        build(ROOT, mirror, digest)
    return ROOT


if __name__ == "__main__":
    print(ensure_root(force="--force" in sys.argv[1:]))
