# poold - plain GNU make. CFLAGS/LDFLAGS from the environment pass through
# (dpkg-buildflags, rpm %optflags); our warnings live in WARNINGS.
#   make                 build ./poold
#   make check           unit + integration + system tests (system needs root)
#   make SANITIZE=address,undefined check   (or SANITIZE=thread)
#   make run             run poold in the foreground on etc/poold.conf
#   make install DESTDIR=... PREFIX=/usr

VERSION := $(shell cat VERSION)
PREFIX ?= /usr/local
SBINDIR ?= $(PREFIX)/sbin
MANDIR ?= $(PREFIX)/share/man
SYSCONFDIR ?= /etc
UNITDIR ?= $(shell pkg-config --variable=systemdsystemunitdir systemd 2>/dev/null || echo /lib/systemd/system)
PYTHON ?= /usr/bin/python3
PKG_CONFIG ?= pkg-config
CC ?= cc
INSTALL ?= install

CFLAGS ?= -O2 -g
WARNINGS = -Wall -Wextra -Wshadow -Wstrict-prototypes -Wmissing-prototypes \
	-Wformat=2 -Wwrite-strings -Wno-unused-parameter -Wno-format-nonliteral
ifneq ($(WERROR),)
WARNINGS += -Werror
endif

DEPS_CFLAGS := $(shell $(PKG_CONFIG) --cflags libsystemd inih libmicrohttpd 2>/dev/null)
DEPS_LIBS := $(shell $(PKG_CONFIG) --libs libsystemd inih libmicrohttpd 2>/dev/null)

comma := ,

# Each sanitizer build gets its own object directory and binary.
ifeq ($(SANITIZE),)
BUILD := build/release
BIN := poold
else
BUILD := build/$(subst $(comma),-,$(SANITIZE))
BIN := $(BUILD)/poold
SAN_FLAGS := -fsanitize=$(SANITIZE) -fno-omit-frame-pointer -fno-sanitize-recover=all
endif
ALL_CFLAGS = -std=gnu11 -D_GNU_SOURCE -DPOOLD_VERSION='"$(VERSION)"' -pthread -MMD -MP \
	$(WARNINGS) $(DEPS_CFLAGS) $(SAN_FLAGS) $(CFLAGS) $(CPPFLAGS)
ALL_LDFLAGS = -pthread $(SAN_FLAGS) $(LDFLAGS)

SRCS := $(wildcard src/*.c)
OBJS := $(SRCS:src/%.c=$(BUILD)/%.o)
LIB_OBJS := $(filter-out $(BUILD)/main.o,$(OBJS))

UNIT_SRCS := $(wildcard tests/unit/test_*.c)
UNIT_BINS := $(UNIT_SRCS:tests/unit/%.c=$(BUILD)/tests/%)

.PHONY: all check unit-check deps run install clean fuzz bench deb rpm package-check fleet-check soak valgrind-check bench-quick bench-ab bench-against bench-scale bench-scrape profile
all: $(BIN)

$(BIN): $(OBJS)
	$(CC) $(ALL_LDFLAGS) -o $@ $^ $(DEPS_LIBS)

$(BUILD)/%.o: src/%.c | $(BUILD)/.dir
	@$(PKG_CONFIG) --exists libsystemd inih libmicrohttpd || { echo "poold: libsystemd, inih or libmicrohttpd development files are missing; run 'make deps' (as root) or install libsystemd-dev libinih-dev libmicrohttpd-dev pkg-config (Fedora: systemd-devel inih-devel libmicrohttpd-devel pkgconf)" >&2; exit 1; }
	$(CC) $(ALL_CFLAGS) -c -o $@ $<

$(BUILD)/.dir:
	mkdir -p $(BUILD)/tests
	touch $@

# Unit tests link only the modules they test plus util; the list is in each
# test's first line: "/* modules: config payload util */".
$(BUILD)/tests/test_%: tests/unit/test_%.c tests/unit/tests.h $(LIB_OBJS)
	$(CC) $(ALL_CFLAGS) -Isrc -o $@ $< \
		$(addprefix $(BUILD)/,$(addsuffix .o,$(shell sed -n '1s|^/\* modules: \(.*\) \*/|\1|p' $<))) \
		$(ALL_LDFLAGS) $(DEPS_LIBS)

unit-check: $(UNIT_BINS)
	@set -e; for t in $(UNIT_BINS); do echo "== $$t"; (cd tests/unit && ../../$$t); done

# The whole suite: C unit tests, then every pytest folder (integration,
# system, bench smoke, ...). System tests need root; CI=true makes a skip there
# an error.
# Sanitizer builds run the tests that start the binary directly; the system
# and package tests install the release build into a hardened unit.
ifeq ($(SANITIZE),)
PYTEST_PATHS ?= tests --ignore=tests/package
else
PYTEST_PATHS ?= tests/unit tests/integration tests/reliability
endif
check: WERROR = 1
check: $(BIN) unit-check
	POOLD_BIN=$(abspath $(BIN)) SANITIZE=$(SANITIZE) $(PYTHON) -m pytest -q -rs $(PYTEST_ARGS) $(PYTEST_PATHS)

deps:
	@sh tests/deps.sh

run: $(BIN)
	./$(BIN) --config etc/poold.conf

install: $(BIN)
	$(INSTALL) -d $(DESTDIR)$(SBINDIR) $(DESTDIR)$(UNITDIR) $(DESTDIR)$(MANDIR)/man8 $(DESTDIR)$(MANDIR)/man5 \
		$(DESTDIR)$(SYSCONFDIR)/poold/poold.conf.d
	$(INSTALL) -m 755 $(BIN) $(DESTDIR)$(SBINDIR)/poold
	$(INSTALL) -m 644 packaging/systemd/poold.socket packaging/systemd/poold.service $(DESTDIR)$(UNITDIR)/
	$(INSTALL) -m 644 packaging/systemd/poold-banner.socket packaging/systemd/poold-metrics.socket $(DESTDIR)$(UNITDIR)/
	$(INSTALL) -m 644 man/poold.8 $(DESTDIR)$(MANDIR)/man8/poold.8
	$(INSTALL) -m 644 man/poold.conf.5 $(DESTDIR)$(MANDIR)/man5/poold.conf.5
	@if [ -e $(DESTDIR)$(SYSCONFDIR)/poold/poold.conf ]; then \
		echo "keeping existing $(DESTDIR)$(SYSCONFDIR)/poold/poold.conf"; \
	else \
		$(INSTALL) -m 644 etc/poold.conf $(DESTDIR)$(SYSCONFDIR)/poold/poold.conf; \
	fi

# Packages, from a copy of the tree; each runs its linter.
deb:
	packaging/mkdeb.sh
rpm:
	packaging/mkrpm.sh
package-check: $(BIN)
	POOLD_BIN=$(abspath $(BIN)) $(PYTHON) -m pytest -q -rs $(PYTEST_ARGS) tests/package
# The fleet test (tests/fleet, about 15 s, root): two poold hosts under systemd
# behind HAProxy, a log host and clients, in network namespaces of its own.
fleet-check: $(BIN)
	$(PYTHON) -m pytest -q -rs $(PYTEST_ARGS) tests/fleet

# Measurements and long runs: never part of make check.
bench: $(BIN)
	$(PYTHON) tests/bench/run $(BENCH_ARGS)
bench-quick: $(BIN)
	$(PYTHON) tests/bench/run --quick
# poold and nginx on k = 1, 2, 4, ... server cores, load on the other CPUs
# (issue 14): table, tests/bench/scale.json and scale.png (make bench-scale
# SCALE_ARGS="--reps 3 --duration 4"; see tests/bench/scale --help).
SCALE_OUT ?= tests/bench
bench-scale: $(BIN)
	$(PYTHON) tests/bench/scale --out $(SCALE_OUT)/scale.json --chart $(SCALE_OUT)/scale.png $(SCALE_ARGS)
# Two poold builds, interleaved under W1/W2 (make bench-ab BASE=/path/to/old/poold).
bench-ab: $(BIN)
	$(PYTHON) tests/bench/ab $(BENCH_AB_ARGS) $(BASE) $(abspath $(BIN))
# This build (and BASE, if given) against bare epoll and nginx, interleaved.
bench-against: $(BIN)
	$(PYTHON) tests/bench/ab --against $(BENCH_AB_ARGS) $(abspath $(BIN)) $(BASE)
# This build without and with a scraper polling GET /metrics every 100 ms,
# W1/W2, CPU per connection and the difference (issue 15).
bench-scrape: $(BIN)
	$(PYTHON) tests/bench/ab --scrape $(BENCH_SCRAPE_ARGS) $(abspath $(BIN))
# callgrind and perf profiles of poold under W1 and W2.
profile: $(BIN)
	POOLD_BIN=$(abspath $(BIN)) tests/bench/profile $(PROFILE_DIR)
FUZZ_SECONDS ?= 60
SOAK_SECONDS ?= 180
fuzz:
	tests/fuzz/run run $(FUZZ_SECONDS)
soak: $(BIN)
	POOLD_BIN=$(abspath $(BIN)) $(PYTHON) tests/soak/run --seconds $(SOAK_SECONDS)
# The integration tests with poold under valgrind memcheck.
valgrind-check: $(BIN)
	tests/reliability/valgrind-check

clean:
	rm -rf build poold dist

-include $(OBJS:.o=.d)
