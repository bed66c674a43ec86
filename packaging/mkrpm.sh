#!/bin/bash
# Build the poold .rpm from the work tree with rpmbuild, on a Debian host, and
# check it with rpmlint.
#
#   packaging/mkrpm.sh            -> dist/poold-<VERSION>-<rel>.<arch>.rpm
#
# Building a Fedora-style RPM on Debian needs these workarounds (see also
# packaging/rpm/README.md):
#  1. Debian's rpm package has no systemd-rpm-macros: %systemd_post,
#     %systemd_preun, %systemd_postun_with_restart and %{_unitdir} are not
#     defined. packaging/rpm/macros.debian-host defines them as Fedora's do
#     (Fedora paths: /usr/lib/systemd/system, systemd-update-helper) and is
#     passed with `rpmbuild --load`. It also sets Fedora's unversioned doc
#     directories and fixes the post-install steps (brp-compress needs bash;
#     strip what find-debuginfo would).
#  2. rpm's database on Debian is empty, so every BuildRequires would be
#     "missing": build with --nodeps. The real build dependencies are Debian
#     packages here (gcc, make, pkg-config, libsystemd-dev, libinih-dev).
#  3. Fedora's find-debuginfo (debugedit) is not on Debian: debug_package is
#     defined empty, so no -debuginfo subpackage is made.
#  4. %_buildshell is bash (Fedora's /bin/sh is bash; Debian's is dash).
# rpmlint runs with packaging/rpm/rpmlint.toml: Fedora's settings where
# Debian's rpmlint has upstream's generic defaults, each filter justified there.
#
# Environment: DIST=dir (default <repo>/dist), MKRPM_RPMLINT=0 skips rpmlint,
# MKRPM_KEEP=1 keeps the temporary build directory. The last line on stdout is
# the path of the built .rpm.
set -euo pipefail

top=$(cd "$(dirname "$0")/.." && pwd)
dist=${DIST:-$top/dist}
spec="$top/packaging/rpm/poold.spec"
macros="$top/packaging/rpm/macros.debian-host"
version=$(tr -d ' \n' <"$top/VERSION")
spec_version=$(sed -n 's/^Version:[[:space:]]*//p' "$spec" | tr -d ' ')
if [ "$spec_version" != "$version" ]; then
	echo "mkrpm: $spec has Version: $spec_version but VERSION is $version" >&2
	exit 1
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/poold-rpm.XXXXXX")
cleanup() {
	if [ "${MKRPM_KEEP:-0}" = 1 ]; then echo "mkrpm: kept $work" >&2; else rm -rf "$work"; fi
}
trap cleanup EXIT
mkdir -p "$work"/{BUILD,BUILDROOT,RPMS,SOURCES,SPECS,SRPMS}

# Source0: poold-VERSION.tar.gz holding poold-VERSION/ (the tree, no dist/).
"$top/packaging/copy-tree.sh" "$work/src/poold-$version"
tar -C "$work/src" --owner=0 --group=0 --numeric-owner -czf \
	"$work/SOURCES/poold-$version.tar.gz" "poold-$version"
cp "$spec" "$work/SPECS/poold.spec"

echo "mkrpm: rpmbuild -bb poold $version (Debian host: --load $(basename "$macros") --nodeps)" >&2
timeout 900 rpmbuild -bb --nodeps \
	--load "$macros" \
	--define "_topdir $work" \
	--define "debug_package %{nil}" \
	--define "_buildshell /bin/bash" \
	"$work/SPECS/poold.spec" >"$work/build.log" 2>&1 || {
	tail -n 60 "$work/build.log" >&2
	echo "mkrpm: rpmbuild failed (log: $work/build.log)" >&2
	MKRPM_KEEP=1
	exit 1
}

shopt -s nullglob
rpms=("$work"/RPMS/*/poold-*.rpm)
[ ${#rpms[@]} -eq 1 ] || { echo "mkrpm: expected one .rpm, got: ${rpms[*]}" >&2; exit 1; }
mkdir -p "$dist"
cp -f "${rpms[0]}" "$dist/"
out="$dist/$(basename "${rpms[0]}")"

if [ "${MKRPM_RPMLINT:-1}" != 0 ]; then
	echo "mkrpm: rpmlint -c rpmlint.toml $(basename "$out") poold.spec" >&2
	# rpmlint exits non-zero on errors only; warnings fail here too (as
	# lintian's do in mkdeb.sh). Those caused by building on Debian are
	# filtered, each with its reason, in rpmlint.toml.
	timeout 300 rpmlint -c "$top/packaging/rpm/rpmlint.toml" "$out" "$spec" \
		>"$work/rpmlint.log" 2>&1 || { cat "$work/rpmlint.log" >&2; exit 1; }
	cat "$work/rpmlint.log" >&2
	grep -q ' 0 errors, 0 warnings' "$work/rpmlint.log" || {
		echo "mkrpm: rpmlint reported warnings" >&2
		exit 1
	}
	echo "mkrpm: rpmlint clean (no errors, no warnings)" >&2
fi
echo "$out"
