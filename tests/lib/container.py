"""Boot a throwaway systemd in systemd-nspawn and run commands inside it.

This is the helper behind tests/system/ (and reusable by tests/package/): a
real systemd as PID 1 on a machine whose own PID 1 is not systemd, booted the
way ../shared/DESIGN.md ("A real systemd on a machine without one") describes.

API
---
    from container import Container, container_support, skip_or_fail

    reason = container_support()        # None when we can boot one, else why not
    with Container(usr_overlay=STAGE + "/usr") as c:   # boots, waits for running
        print(c.boot_seconds)           # fork of nspawn -> is-system-running ok
        rc, out, err = c.run(["systemctl", "start", "poold.socket"])
        c.run("journalctl -u poold -o json", timeout=10)      # str: via sh -c
        c.write_file("/etc/poold/poold.conf", b"...", mode=0o644)
        c.copy_in(host_path, "/usr/local/bin/client")
        data = c.read_file("/etc/hostname")                   # -> bytes
        p = c.spawn(["python3", "-c", "..."])   # background Popen (bytes pipes)
    # leaving the block stops it (kill by PID, verify the cgroup is empty)

Container(root="/", *, name=None, usr_overlay=None, overlays=(), binds=(),
          binds_ro=(), presets=("disable *",), private_network=True,
          network_namespace=None, extra_args=(),
          kernel_args=("systemd.firstboot=off",), boot_timeout=30,
          log_path=None)
  root          "/" boots the host's own root with --volatile=yes (/ is a tmpfs,
                /usr the host's read-only, /etc starts empty); any other
                directory (e.g. a debootstrapped tree) is booted with
                --volatile=overlay: a tmpfs overlay on top, so the directory is
                never written and every container starts from the same state.
  usr_overlay   a host directory laid over the container's /usr, read-only
                (--overlay-ro=+/usr:DIR:/usr): stage `make install DESTDIR=S`
                output with usr_overlay=S+"/usr" (on merged-/usr systems /lib is
                /usr/lib, so S/lib/... must be merged into S/usr/lib first, see
                stage_merged_usr()).
  overlays      raw --overlay= / --overlay-ro= values: ("ro", spec) or ("rw", spec).
  binds, binds_ro  "SRC:DEST" strings (or (src, dest) tuples) for --bind/--bind-ro.
  presets       lines of a systemd.preset(5) file installed as
                /etc/systemd/system-preset/00-container.preset before boot (via a
                read-only bind); the default "disable *" keeps the host's
                installed services (nginx, rsyslog, ...) from starting inside.
  private_network  --private-network: the container has only its own lo.
  network_namespace  run the container in this existing network namespace
                instead: a path (/proc/PID/ns/net, /run/netns/NAME) or a name
                made by `ip netns add NAME` (--network-namespace-path=; nspawn
                takes no other network option with it, so it replaces
                --private-network). tests/fleet puts hosts on a bridge this way.

Methods and attributes
  start()                boot and wait for running/degraded; returns boot seconds
  wait_running(timeout)  poll `systemctl is-system-running` until running/degraded
  run(cmd, timeout=30, input=None, check=False, env=None, text=True)
                         -> (rc, stdout, stderr); cmd is argv list or a sh -c string;
                         runs as `nsenter -t LEADER -a` with a clean environment.
                         On timeout the whole process group is killed and
                         subprocess.TimeoutExpired is raised.
  spawn(cmd, **popen)    start a background process inside; returns Popen
                         (own session, so stop_spawned() can kill its group)
  write_file(path, data, mode=0o644), copy_in(src, dest, mode=None), read_file(path)
  stop(timeout=15)       orderly poweroff (SIGTERM to nspawn), then SIGKILL of
                         nspawn and the container's PID 1 if needed; then checks
                         that the container's cgroup holds no process and removes it.
                         Raises RuntimeError if something is left. Idempotent.
  leader_pid             host PID of the container's PID 1
  nspawn_pid             host PID of systemd-nspawn
  log()                  nspawn/console output so far (str), for failure messages
  boot_seconds           measured time from spawning nspawn to running
  failed_units           `systemctl --failed` output when the boot ended degraded

Each container gets its own cgroup (one per hierarchy mounted here: cgroup2
and v1 name=systemd), created before nspawn is exec'd: on a host whose PID 1 is
not systemd, nspawn --keep-unit nests "payload"/"supervisor" under the caller's
cgroup, so two containers sharing one would collide, and a private one is also
what lets stop() prove that nothing was left running.

pytest: `container_fixture` is a ready fixture factory:
    from container import container_fixture
    container = container_fixture(usr_overlay=lambda: STAGE + "/usr")
Call skip_or_fail(reason) where a test cannot run: skip, or fail under CI=true.
"""

import itertools
import os
import shutil
import signal
import subprocess
import tempfile
import time

NSPAWN = "/usr/bin/systemd-nspawn"
NSENTER = "/usr/bin/nsenter"
CGROOT = "/sys/fs/cgroup"
CLEAN_ENV = {
    "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "LANG": "C.UTF-8",
    "HOME": "/root",
    "TERM": "dumb",
    "SYSTEMD_PAGER": "",
    "SYSTEMD_COLORS": "0",
    "SYSTEMD_LESS": "",
}

_counter = itertools.count(1)


def container_support():
    """Return None if this process can boot a container, else the reason."""
    if os.geteuid() != 0:
        return "needs root (systemd-nspawn boots a real systemd as PID 1)"
    for tool in (NSPAWN, NSENTER):
        if not os.access(tool, os.X_OK):
            return "%s not installed (package systemd-container / util-linux)" % tool
    if not os.path.isdir(CGROOT):
        return "no cgroup file system at %s" % CGROOT
    return None


def skip_or_fail(reason):
    """Skip the current test, or fail it when CI=true (CI must never skip)."""
    import pytest

    if os.environ.get("CI") == "true":
        pytest.fail("cannot run under CI: " + reason, pytrace=False)
    pytest.skip(reason)


def _cgroup_hierarchies():
    """Mount points of the hierarchies nspawn uses: cgroup2 and name=systemd."""
    if os.path.exists(os.path.join(CGROOT, "cgroup.controllers")):
        return [CGROOT]  # pure cgroup2
    found = []
    for sub in ("unified", "systemd"):
        p = os.path.join(CGROOT, sub)
        if os.path.exists(os.path.join(p, "cgroup.procs")):
            found.append(p)
    return found


def _own_cgroup_path(mount):
    """Our cgroup path inside the hierarchy mounted at mount."""
    want = "name=systemd" if mount.endswith("/systemd") else ""
    with open("/proc/self/cgroup") as f:
        for line in f:
            _, ctrl, path = line.rstrip("\n").split(":", 2)
            if ctrl == want:
                return path
    return "/"


def _procs_in(tree):
    """All PIDs in a cgroup tree."""
    pids = []
    for dirpath, _dirs, files in os.walk(tree):
        if "cgroup.procs" in files:
            try:
                with open(os.path.join(dirpath, "cgroup.procs")) as f:
                    pids += [int(x) for x in f.read().split()]
            except OSError:
                pass
    return pids


def _rmtree_cgroup(tree):
    for dirpath, _dirs, _files in sorted(os.walk(tree), key=lambda t: -len(t[0])):
        try:
            os.rmdir(dirpath)
        except FileNotFoundError:
            pass


def _children(pid):
    try:
        with open("/proc/%d/task/%d/children" % (pid, pid)) as f:
            return [int(x) for x in f.read().split()]
    except OSError:
        return []


def _nspid(pid):
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                if line.startswith("NSpid:"):
                    return [int(x) for x in line.split()[1:]]
    except OSError:
        pass
    return []


def stage_merged_usr(destdir):
    """Make a `make install DESTDIR=destdir` tree fit a merged-/usr overlay.

    Moves destdir/lib, destdir/bin, destdir/sbin into destdir/usr/... so that
    destdir/usr can be laid over /usr (Debian 12: /lib -> usr/lib). Returns
    destdir + "/usr".
    """
    usr = os.path.join(destdir, "usr")
    os.makedirs(usr, exist_ok=True)
    for top in ("lib", "bin", "sbin", "lib64"):
        src = os.path.join(destdir, top)
        if os.path.isdir(src) and not os.path.islink(src):
            dst = os.path.join(usr, top)
            shutil.copytree(src, dst, symlinks=True, dirs_exist_ok=True)
            shutil.rmtree(src)
    return usr


class Container:
    def __init__(self, root="/", *, name=None, usr_overlay=None, overlays=(),
                 binds=(), binds_ro=(), presets=("disable *",),
                 private_network=True, network_namespace=None, extra_args=(),
                 kernel_args=("systemd.firstboot=off",), boot_timeout=30,
                 log_path=None):
        self.root = root
        self.name = name or "poold-t%d-%d" % (os.getpid(), next(_counter))
        self.usr_overlay = usr_overlay
        self.overlays = list(overlays)
        self.binds = [b if isinstance(b, str) else "%s:%s" % b for b in binds]
        self.binds_ro = [b if isinstance(b, str) else "%s:%s" % b for b in binds_ro]
        self.presets = list(presets) if presets else []
        self.private_network = private_network
        if network_namespace and "/" not in network_namespace:
            network_namespace = "/run/netns/" + network_namespace
        self.network_namespace = network_namespace
        self.extra_args = list(extra_args)
        self.kernel_args = list(kernel_args)
        self.boot_timeout = boot_timeout
        self.proc = None
        self.nspawn_pid = None
        self.leader_pid = None
        self.boot_seconds = None
        self.failed_units = ""
        self._spawned = []
        self._tmp = tempfile.mkdtemp(prefix=self.name + ".")
        self.log_path = log_path or os.path.join(self._tmp, "console.log")
        self._cgroups = []

    # ---- lifecycle -------------------------------------------------------

    def command(self):
        """The systemd-nspawn command line this container boots with."""
        args = [NSPAWN, "--quiet", "-D", self.root,
                "--volatile=" + ("yes" if self.root == "/" else "overlay"),
                "--register=no", "--keep-unit", "--machine=" + self.name,
                "--console=read-only", "--link-journal=no"]
        if self.network_namespace:
            args.append("--network-namespace-path=" + self.network_namespace)
        elif self.private_network:
            args.append("--private-network")
        if self.usr_overlay:
            args.append("--overlay-ro=+/usr:%s:/usr" % self.usr_overlay)
        for kind, spec in self.overlays:
            args.append(("--overlay-ro=" if kind == "ro" else "--overlay=") + spec)
        if self.presets:
            preset = os.path.join(self._tmp, "00-container.preset")
            with open(preset, "w") as f:
                f.write("\n".join(self.presets) + "\n")
            args.append("--bind-ro=%s:/etc/systemd/system-preset/00-container.preset"
                        % preset)
        args += ["--bind=" + b for b in self.binds]
        args += ["--bind-ro=" + b for b in self.binds_ro]
        args += self.extra_args
        args += ["-b"] + self.kernel_args
        return args

    def _make_cgroups(self):
        for mount in _cgroup_hierarchies():
            path = os.path.normpath(
                "%s/%s/%s" % (mount, _own_cgroup_path(mount), self.name))
            os.makedirs(path, exist_ok=True)
            self._cgroups.append(path)

    def _enter_cgroups(self):
        # Runs in the forked child before exec (preexec_fn): only plain writes.
        for path in self._cgroups:
            with open(os.path.join(path, "cgroup.procs"), "w") as f:
                f.write(str(os.getpid()))

    def start(self):
        reason = container_support()
        if reason:
            raise RuntimeError(reason)
        self._make_cgroups()
        log = open(self.log_path, "wb")
        t0 = time.monotonic()
        try:
            self.proc = subprocess.Popen(
                self.command(), stdin=subprocess.DEVNULL, stdout=log,
                stderr=subprocess.STDOUT, preexec_fn=self._enter_cgroups,
                start_new_session=True, env=dict(CLEAN_ENV))
        finally:
            log.close()
        self.nspawn_pid = self.proc.pid
        try:
            self._find_leader(t0 + self.boot_timeout)
            self.wait_running(max(1.0, t0 + self.boot_timeout - time.monotonic()))
        except BaseException:
            self.stop()
            raise
        self.boot_seconds = time.monotonic() - t0
        return self.boot_seconds

    def _find_leader(self, deadline):
        """Find the host PID of the container's PID 1 (a descendant of nspawn)."""
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("systemd-nspawn exited with %s:\n%s"
                                   % (self.proc.returncode, self.log()[-3000:]))
            todo = [self.nspawn_pid]
            for _ in range(4):  # nspawn -> (outer child) -> init; bounded depth
                nxt = []
                for pid in todo:
                    for child in _children(pid):
                        ns = _nspid(child)
                        if len(ns) > 1 and ns[-1] == 1:
                            self.leader_pid = child
                            return child
                        nxt.append(child)
                todo = nxt
            time.sleep(0.01)
        raise RuntimeError("container PID 1 not found in time:\n" + self.log()[-3000:])

    def wait_running(self, timeout=30):
        """Wait until `systemctl is-system-running` says running or degraded."""
        deadline = time.monotonic() + timeout
        state = ""
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("container exited during boot (%s):\n%s"
                                   % (self.proc.returncode, self.log()[-3000:]))
            try:
                _, state, _ = self.run(["systemctl", "is-system-running"], timeout=5)
            except subprocess.TimeoutExpired:
                state = "timeout"
            state = state.strip()
            if state in ("running", "degraded"):
                if state == "degraded":
                    self.failed_units = self.run(
                        ["systemctl", "--failed", "--no-legend"], timeout=10)[1]
                return state
            time.sleep(0.02)
        raise RuntimeError("container not running after %.0fs (last state %r):\n%s"
                           % (timeout, state, self.log()[-3000:]))

    def stop(self, timeout=15):
        """Power off (or kill) the container; verify nothing is left; clean up."""
        self.stop_spawned()
        if self.proc is not None and self.proc.poll() is None:
            try:
                os.kill(self.nspawn_pid, signal.SIGTERM)  # nspawn: orderly poweroff
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                for pid in (self.leader_pid, self.nspawn_pid):
                    if pid:
                        try:
                            os.kill(pid, signal.SIGKILL)
                        except ProcessLookupError:
                            pass
                self.proc.wait(timeout=10)
        left = []
        deadline = time.monotonic() + 5
        for path in self._cgroups:
            while _procs_in(path) and time.monotonic() < deadline:
                time.sleep(0.02)
            left += _procs_in(path)
        if left:
            # Only processes in this container's own cgroup: ours to end.
            for pid in set(left):
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            time.sleep(0.2)
        still = [p for path in self._cgroups for p in _procs_in(path)]
        for path in self._cgroups:
            if not _procs_in(path):
                _rmtree_cgroup(path)
        self._cgroups = [p for p in self._cgroups if os.path.exists(p)]
        if left or still:
            raise RuntimeError("container %s left processes %s (still %s)"
                               % (self.name, sorted(set(left)), still))

    def cleanup(self):
        """Remove the temporary directory (console log, preset file)."""
        shutil.rmtree(self._tmp, ignore_errors=True)

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc):
        try:
            self.stop()
        finally:
            self.cleanup()
        return False

    def log(self):
        try:
            with open(self.log_path, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""

    # ---- running things inside ---------------------------------------------

    def _argv(self, cmd, env=None):
        if self.leader_pid is None:
            raise RuntimeError("container not started")
        if isinstance(cmd, str):
            cmd = ["/bin/sh", "-c", cmd]
        e = dict(CLEAN_ENV)
        e.update(env or {})
        return [NSENTER, "-t", str(self.leader_pid), "-a", "--",
                "/usr/bin/env", "-i"] + ["%s=%s" % kv for kv in e.items()] + list(cmd)

    def run(self, cmd, timeout=30, input=None, check=False, env=None, text=True):
        """Run cmd inside; return (rc, stdout, stderr)."""
        if text and isinstance(input, str):
            input = input.encode()
        p = subprocess.Popen(self._argv(cmd, env), stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             start_new_session=True, env=dict(CLEAN_ENV))
        try:
            out, err = p.communicate(input, timeout=timeout)
        except subprocess.TimeoutExpired:
            self._kill_group(p)
            raise
        if text:
            out = out.decode("utf-8", "replace")
            err = err.decode("utf-8", "replace")
        if check and p.returncode != 0:
            raise RuntimeError("%r exited %d\nstdout: %s\nstderr: %s"
                               % (cmd, p.returncode, out, err))
        return p.returncode, out, err

    def spawn(self, cmd, env=None, **popen):
        """Start cmd inside in the background; returns its Popen."""
        popen.setdefault("stdin", subprocess.PIPE)
        popen.setdefault("stdout", subprocess.PIPE)
        popen.setdefault("stderr", subprocess.PIPE)
        p = subprocess.Popen(self._argv(cmd, env), start_new_session=True,
                             env=dict(CLEAN_ENV), **popen)
        self._spawned.append(p)
        return p

    @staticmethod
    def _kill_group(p):
        try:
            os.killpg(p.pid, signal.SIGKILL)  # the group of a process we started
        except ProcessLookupError:
            pass
        try:
            p.communicate(timeout=5)
        except (subprocess.TimeoutExpired, ValueError):
            pass

    def stop_spawned(self):
        for p in self._spawned:
            if p.poll() is None:
                self._kill_group(p)
        self._spawned = []

    def write_file(self, path, data, mode=0o644):
        if isinstance(data, str):
            data = data.encode()
        d = os.path.dirname(path) or "/"
        rc, _, err = self.run(["/bin/sh", "-c",
                               'mkdir -p "$1" && cat > "$2" && chmod "$3" "$2"',
                               "sh", d, path, "%o" % mode],
                              input=data, timeout=15)
        if rc != 0:
            raise RuntimeError("write_file %s failed: %s" % (path, err))

    def copy_in(self, src, dest, mode=None):
        with open(src, "rb") as f:
            data = f.read()
        self.write_file(dest, data, mode if mode is not None
                        else os.stat(src).st_mode & 0o7777)

    def read_file(self, path):
        rc, out, err = self.run(["/bin/cat", path], text=False, timeout=15)
        if rc != 0:
            raise FileNotFoundError("%s: %s" % (path, err.decode(errors="replace")))
        return out


def container_fixture(scope="function", **kwargs):
    """A pytest fixture yielding a booted Container; kwargs as Container().

    A kwarg value that is callable is called at set-up (e.g. to get a staging
    directory made by another fixture at run time). Skips (or fails under
    CI=true) when containers cannot run here.
    """
    import pytest

    @pytest.fixture(scope=scope)
    def _container():
        reason = container_support()
        if reason:
            skip_or_fail(reason)
        kw = {k: (v() if callable(v) else v) for k, v in kwargs.items()}
        c = Container(**kw)
        c.start()
        try:
            yield c
        finally:
            try:
                c.stop()
            finally:
                c.cleanup()

    return _container
