"""Helpers for tests/system: boot a container with poold installed.

Kept apart from conftest.py so test modules can import it by a unique name.
The Box it returns is tests/lib/box.py's (shared with tests/package).
"""
import contextlib
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(REPO, "tests", "lib"))

from box import Box  # noqa: E402
from container import Container  # noqa: E402

CLIENT = "/root/client.py"  # tests/system/client.py, inside the container


def boot_box(stage, enable_socket=True, **container_kw):
    """A container with the staged install (staged_usr), /etc/poold, the JSON
    client at CLIENT and (by default) poold.socket enabled and started.
    container_kw go to Container() (name=, network_namespace=, ...)."""
    c = Container(usr_overlay=stage["usr"], **container_kw)
    c.start()
    try:
        src = os.path.join(stage["etc"], "poold")
        for dirpath, _dirs, files in os.walk(src):
            rel = os.path.relpath(dirpath, stage["etc"])
            c.run(["mkdir", "-p", "/etc/" + rel], check=True)
            for f in files:
                c.copy_in(os.path.join(dirpath, f), "/etc/%s/%s" % (rel, f))
        c.copy_in(os.path.join(HERE, "client.py"), CLIENT, mode=0o755)
        if enable_socket:
            c.run(["systemctl", "enable", "--now", "poold.socket"], check=True)
    except BaseException:
        c.stop()
        c.cleanup()
        raise
    return Box(c, client=CLIENT, stage=stage)


@contextlib.contextmanager
def booted_box(stage, **kw):
    """boot_box() for a with block: the container is stopped and removed at
    its end, whatever happened."""
    b = boot_box(stage, **kw)
    try:
        yield b
    finally:
        try:
            b.c.stop()
        finally:
            b.c.cleanup()
