#!/bin/sh
# Installs what building and testing poold needs (make deps). Debian/Ubuntu
# via apt-get, Fedora via dnf; without root it only says what to install.
set -eu

DEBIAN_PKGS="gcc make pkg-config libsystemd-dev libinih-dev python3 python3-pytest
systemd systemd-container util-linux iproute2 procps file binutils
debhelper dpkg-dev fakeroot lintian debootstrap rpm rpmlint
mandoc groff-base man-db
nginx-light libnginx-mod-stream haproxy openssl systemd-journal-remote
libmicrohttpd-dev prometheus curl python3-matplotlib
clang clang-format libclang-rt-dev valgrind linux-perf"
FEDORA_PKGS="gcc make pkgconf systemd-devel inih-devel python3 python3-pytest
systemd systemd-container util-linux iproute procps-ng rpm-build rpmlint
mandoc groff-base man-db nginx nginx-mod-stream haproxy openssl systemd-journal-remote clang clang-tools-extra
compiler-rt valgrind libmicrohttpd-devel golang-github-prometheus curl python3-matplotlib"

if command -v apt-get >/dev/null 2>&1; then
	pkgs=$DEBIAN_PKGS
	cmd="apt-get install -y --no-install-recommends"
elif command -v dnf >/dev/null 2>&1; then
	pkgs=$FEDORA_PKGS
	cmd="dnf install -y"
else
	echo "poold: unknown distribution; install the equivalents of: $DEBIAN_PKGS" >&2
	exit 1
fi

if [ "$(id -u)" != 0 ]; then
	echo "poold: 'make deps' needs root. Install the dependencies with:" >&2
	echo "  sudo $cmd $(echo $pkgs)" >&2
	exit 1
fi

if command -v apt-get >/dev/null 2>&1; then
	# Quietly skip the network round trip when everything is there already.
	missing=$(dpkg-query -W -f='${db:Status-Abbrev} ${Package}\n' $pkgs 2>/dev/null |
		awk '$1 != "ii" {print $2}')
	for p in $pkgs; do
		dpkg-query -W "$p" >/dev/null 2>&1 || missing="$missing $p"
	done
	if [ -z "$(echo $missing)" ]; then
		echo "poold: all build and test dependencies are installed"
		exit 0
	fi
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -q
fi
$cmd $pkgs
