"""The man pages: lint-clean roff, and in step with poold and the units.

No root needed. The binary is $POOLD_BIN or ./poold (built by `make` before
`make check` runs the tests).
"""
import os
import re
import subprocess

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PAGES = ["man/poold.8", "man/poold.conf.5"]
UNITS = ["packaging/systemd/poold.socket", "packaging/systemd/poold.service"]


def read(rel):
    with open(os.path.join(REPO, rel)) as f:
        return f.read()


def poold_bin():
    b = os.environ.get("POOLD_BIN") or os.path.join(REPO, "poold")
    if not os.access(b, os.X_OK):
        pytest.fail("%s not built: run make first" % b, pytrace=False)
    return b


def deroff(s):
    return s.replace("\\e", "\\").replace("\\-", "-").replace("\\(aq", "'").replace("\\&", "")


def usec(v):
    """A duration in poold's syntax as microseconds, or None if not one."""
    m = re.fullmatch(r"(\d+)(ms|s|m|h)?", v)
    if not m:
        return None
    mult = {"ms": 1000, "s": 10**6, "m": 60 * 10**6, "h": 3600 * 10**6, None: 10**6}
    return int(m.group(1)) * mult[m.group(2)]


def effective_defaults(tmp_path):
    """(section, key) -> value from `poold --print-config` of an empty file."""
    empty = tmp_path / "empty.conf"
    empty.write_text("")
    r = subprocess.run([poold_bin(), "--print-config", "--config", str(empty)],
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=10)
    assert r.returncode == 0, r.stderr
    out, section = {}, None
    for line in r.stdout.decode().splitlines():
        if line.startswith("#") or not line.strip():
            continue
        m = re.fullmatch(r"\[(\w+)\]", line)
        if m:
            section = m.group(1)
            continue
        m = re.fullmatch(r"(\w+) =(?: (.*))?", line)  # "allow =" is an empty list
        out[(section, m.group(1))] = m.group(2) or ""
    assert out, r.stdout
    return out


def man_entries():
    """(section, key) -> the roff text of its entry in poold.conf.5."""
    lines = read("man/poold.conf.5").splitlines()
    entries, section, cur = {}, None, None
    for i, line in enumerate(lines):
        if line.startswith(".SH") or line.startswith(".SS"):
            m = re.fullmatch(r'\.SS "\[(\w+)\]"', line)
            section, cur = (m.group(1) if m else None), None
            continue
        if line == ".TP":
            cur = None
            if section and i + 1 < len(lines):
                m = re.match(r'\.B[IR]? "?(\w+)', lines[i + 1])
                if m:
                    cur = (section, m.group(1))
                    entries[cur] = ""
            continue
        if cur:
            entries[cur] += line + "\n"
    return entries


@pytest.mark.parametrize("page", PAGES)
def test_mandoc_lint_clean(page):
    r = subprocess.run(["mandoc", "-T", "lint", "-W", "style", os.path.join(REPO, page)],
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=30)
    assert r.returncode == 0 and r.stdout == b"", r.stdout.decode()


@pytest.mark.parametrize("page", PAGES)
def test_groff_warnings_clean(page):
    r = subprocess.run(["groff", "-man", "-ww", "-z", os.path.join(REPO, page)],
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=30)
    assert r.returncode == 0 and r.stdout == b"", r.stdout.decode()


def test_every_key_documented_with_its_default(tmp_path):
    defaults = effective_defaults(tmp_path)
    entries = man_entries()
    missing = sorted(set(defaults) - set(entries))
    assert not missing, "keys poold knows but poold.conf.5 does not list: %s" % missing
    extra = sorted(set(entries) - set(defaults) - {("payload", "file")})
    assert not extra, "keys poold.conf.5 lists but poold does not print: %s" % extra
    assert ("payload", "file") in entries
    for (section, key), value in defaults.items():
        body = entries[(section, key)]
        if value == "":  # an empty list
            assert "Default: empty" in body, (section, key)
            continue
        m = re.search(r"Default:\n\.BR? (\S+?) ?[.,]?\n", body)
        assert m, "[%s] %s: no Default: in poold.conf.5" % (section, key)
        doc = deroff(m.group(1))
        if usec(value) is not None and usec(doc) is not None:
            assert usec(doc) == usec(value), (section, key, doc, value)
        else:
            assert doc == value, (section, key, doc, value)


def test_ranges_documented():
    entries = man_entries()
    for key, rng in [("threads", "1 to 1024"), ("queue_max", "1 to 1048576"),
                     ("max_messages", "0 to 1000000"), ("message_size", "1 to 1048576"),
                     ("idle_timeout", "10ms to 24h"), ("session_timeout", "10ms to 24h"),
                     ("shutdown_timeout", "0 to 1h"), ("max_connections", "1 to 1048576"),
                     ("per_source", "0 to 1048576")]:
        body = [v for (s, k), v in entries.items() if k == key]
        assert body and "Range: %s." % rng in body[0], key


def test_poold8_sections_and_exit_codes():
    text = read("man/poold.8")
    for sh in ("NAME", "SYNOPSIS", "DESCRIPTION", "OPTIONS", "SIGNALS", "SYSTEMD",
               "EXIT STATUS", "FILES", "EXAMPLES", "SEE ALSO"):
        assert re.search(r"^\.SH %s$" % sh, text, re.M), sh
    status = text.split(".SH EXIT STATUS", 1)[1].split(".SH", 1)[0]
    for code in ("0", "64", "71", "78"):
        assert ".B %s\n" % code in status, code
    for opt in ("config", "check\\-config", "print\\-config", "version", "help"):
        assert "\\-\\-" + opt in text, opt


def test_units_document_existing_pages_and_same_recovery_command():
    for unit in UNITS:
        docs = re.findall(r"^Documentation=(.*)$", read(unit), re.M)
        assert docs, unit
        for ref in " ".join(docs).split():
            m = re.fullmatch(r"man:([\w.]+)\((\d)\)", ref)
            assert m, ref
            assert os.path.exists(os.path.join(REPO, "man", "%s.%s" % m.groups())), ref
    man = deroff(read("man/poold.8"))
    m = re.search(r"this one command:\n\.PP\n\.in \+4n\n\.EX\n(.*?)\n\.EE", man)
    assert m, "poold.8 names no recovery command"
    assert m.group(1) in read("packaging/systemd/poold.service")


def test_poold_conf5_example_is_valid(tmp_path):
    blocks = re.findall(r"^\.EX\n(.*?)^\.EE$", read("man/poold.conf.5"), re.M | re.S)
    example = [b for b in blocks if "[pool]" in b]
    assert example, "poold.conf.5 has no example configuration"
    conf = tmp_path / "example.conf"
    conf.write_text(deroff(example[0]))
    r = subprocess.run([poold_bin(), "--print-config", "--config", str(conf)],
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=10)
    assert r.returncode == 0, r.stderr.decode()
    out = r.stdout.decode()
    assert "threads = 8" in out and "text = hello, world\\n" in out, out
