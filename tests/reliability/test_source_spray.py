"""Per-source state stays bounded: a spray of 100,000 distinct source
addresses (127.0.0.0/8) against per_source and per_source_rate must not grow
poold's memory without bound. Entries with no connection are freed once their
rate bucket is full again (at most one second later), so the table holds at
most the sources of the last second."""
import os
import socket
import struct
import time

from harness import TUTORIAL_PAYLOAD, recv_exact, slow_factor
from reliability_helpers import figure

SOURCES = 100_000


def spray(p, start, n, deadline):
    """n connections, each from its own 127.x.y.z, closed with a reset (no
    TIME_WAIT left behind); returns how many connected."""
    linger = struct.pack("ii", 1, 0)
    done = 0
    for i in range(start, start + n):
        if time.monotonic() > deadline:
            break
        src = "127.%d.%d.%d" % (1 + (i >> 16) % 254, (i >> 8) & 255, 1 + (i & 255) % 254)
        with socket.socket() as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger)
            s.bind((src, 0))
            try:
                s.connect((p.host, p.port))
                done += 1
            except OSError:
                pass
    return done


def test_spray_of_distinct_sources_keeps_memory_bounded(poold):
    p = poold("[session]\nmax_messages = 0\n[limits]\nper_source = 2\nper_source_rate = 1/s\n"
              "max_connections = 10000\n[log]\nlevel = notice\n")
    with p.connect() as s:
        assert recv_exact(s, 26) == TUTORIAL_PAYLOAD
    base = p.status_kib("VmHWM")
    t0 = time.monotonic()
    deadline = t0 + 240 * slow_factor()
    first = spray(p, 0, SOURCES // 2, deadline)
    mid = p.status_kib("VmHWM")
    second = spray(p, SOURCES // 2, SOURCES // 2, deadline)
    elapsed = time.monotonic() - t0
    time.sleep(1.5)  # every bucket full again: the sweep frees the entries
    peak = p.status_kib("VmHWM")
    with p.connect() as s:  # still serving
        assert recv_exact(s, 26) == TUTORIAL_PAYLOAD
    figure("spray sources", first + second)
    figure("spray seconds", round(elapsed, 1))
    figure("spray rate per second", round((first + second) / elapsed))
    figure("HWM KiB before, after half, after all", f"{base}, {mid}, {peak}")
    assert first + second >= SOURCES * 0.99, (first, second)
    if os.environ.get("SANITIZE"):
        # ASan's quarantine and TSan's shadow keep freed memory by design:
        # there the spray checks for leaks, races and survival only.
        return
    # The table holds about one second of sources, whatever the total: the
    # second half (as many sources again) must not raise the peak much.
    assert peak - base < 32 * 1024, (base, mid, peak)
    assert peak - mid < max(4 * 1024, (mid - base) // 2), (base, mid, peak)
