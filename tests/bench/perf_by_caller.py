#!/usr/bin/python3
"""Groups `perf script -F comm,tid,ip,sym` samples (with call graphs) by the
libc entry point they are in (a syscall wrapper, a lock, printf) and by the
nearest poold function above it, so a profile reads as "close() from
conn_close: 30%". usage: perf_by_caller.py perf.txt"""
import collections
import sys

POOLD = {
    "worker_main", "reactor_work", "session_step", "conn_close", "conn_park", "session_log_end",
    "log_event_at", "log_stderr", "accept_one", "on_listener", "on_conn", "reactor_run",
    "pool_submit", "describe_peer", "step_send", "step_read", "refuse", "timers", "sweep",
    "update_status", "log_message", "payload_escape",
}
# First match walking from the leaf up names the sample's category.
CATEGORIES = [
    ("__GI___lll_lock_wait", "mutex wait (contended)"),
    ("__GI___lll_lock_wake", "mutex wake (contended)"),
    ("pthread_cond_signal", "cond_signal"),
    ("__futex_abstimed_wait", "futex wait (idle worker/cond)"),
    ("pthread_cond_wait", "cond_wait"),
    ("__close", "close()"), ("__GI___close", "close()"),
    ("__send", "send()"), ("__libc_send", "send()"),
    ("__libc_recv", "recv()"), ("__recv", "recv()"),
    ("accept4", "accept4()"),
    ("epoll_ctl", "epoll_ctl()"), ("epoll_wait", "epoll_wait()"),
    ("__GI___libc_write", "write() (log)"), ("__libc_write", "write() (log)"),
    ("sd_journal", "sd_journal_sendv()"), ("sendmsg", "sendmsg() (journal)"),
    ("__vfprintf_internal", "printf family"), ("__vsnprintf_internal", "printf family"),
    ("inet_ntop", "inet_ntop"),
    ("_int_malloc", "malloc/free"), ("_int_free", "malloc/free"), ("__libc_calloc", "malloc/free"),
    ("clock_gettime", "clock_gettime"),
]


def samples(path):
    cur = None
    with open(path, errors="replace") as f:
        for line in f:
            if not line.strip():
                if cur is not None:
                    yield cur
                cur = None
                continue
            if not line[0].isspace():
                if cur is not None:
                    yield cur
                cur = []
                continue
            parts = line.split(None, 1)
            sym = parts[1].strip().split("+")[0] if len(parts) > 1 else "?"
            if cur is not None:
                cur.append(sym.split(" ")[0])
    if cur is not None:
        yield cur


def main():
    cat, pair, n = collections.Counter(), collections.Counter(), 0
    for stack in samples(sys.argv[1]):
        n += 1
        c = next((name for s in stack for key, name in CATEGORIES if s.startswith(key)), "other kernel/user")
        fn = next((s for s in stack if s in POOLD), "-")
        cat[c] += 1
        pair[(c, fn)] += 1
    if not n:
        print("no samples")
        return
    print("%d samples" % n)
    for k, v in cat.most_common(25):
        print("%6.2f%%  %s" % (100.0 * v / n, k))
    print("-- by the poold function that made the call")
    for (c, fn), v in pair.most_common(40):
        print("%6.2f%%  %-32s %s" % (100.0 * v / n, c, fn))


if __name__ == "__main__":
    main()
