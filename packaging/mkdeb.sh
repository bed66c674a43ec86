#!/bin/bash
# Build the poold .deb from the work tree and check it with lintian.
#
#   packaging/mkdeb.sh            -> dist/poold_<VERSION>-<rev>_<arch>.deb (+ -dbgsym)
#
# The tree (files git tracks or would track: `git ls-files -co --exclude-standard`,
# so build outputs and dist/ stay out) is copied into a temporary build directory
# with packaging/debian/ at its top as debian/, built there with
# `dpkg-buildpackage -us -uc -b` (binary only: no orig tarball needed), and the
# resulting .deb files are copied to dist/. lintian then checks the build's
# .changes (the .deb and its .buildinfo) and fails on any error or warning.
#
# Environment:
#   DIST=dir               output directory (default: <repo>/dist)
#   MKDEB_VERSION=x.y.z    build as this upstream version instead of VERSION: the
#                          copy's VERSION is rewritten and a changelog entry
#                          x.y.z-1 is added on top, in the build copy only (used by
#                          tests/package to make a newer build for upgrade tests)
#   MKDEB_SOURCE=1         also build the source package (.dsc, orig and debian
#                          tarballs; format 3.0 (quilt)), copied to DIST too
#   MKDEB_LINTIAN=0        skip lintian
#   MKDEB_KEEP=1           keep the temporary build directory (path is printed)
# The last line on stdout is the path of the built poold .deb.
set -euo pipefail

top=$(cd "$(dirname "$0")/.." && pwd)
dist=${DIST:-$top/dist}
version=$(tr -d ' \n' <"$top/VERSION")
deb_version=$(dpkg-parsechangelog -l "$top/packaging/debian/changelog" -S Version)
if [ "${deb_version%-*}" != "$version" ]; then
	echo "mkdeb: packaging/debian/changelog is at $deb_version but VERSION is $version;" \
		"add a changelog entry for $version" >&2
	exit 1
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/poold-deb.XXXXXX")
cleanup() {
	if [ "${MKDEB_KEEP:-0}" = 1 ]; then echo "mkdeb: kept $work" >&2; else rm -rf "$work"; fi
}
trap cleanup EXIT

new_version=${MKDEB_VERSION:-$version}
src="$work/poold-$new_version"
mkdir -p "$src"

# Copy the source tree (tracked + untracked-but-not-ignored files, no dist/).
"$top/packaging/copy-tree.sh" "$src"
cp -a "$top/packaging/debian" "$src/debian"

if [ "$new_version" != "$version" ]; then
	printf '%s\n' "$new_version" >"$src/VERSION"
	maint=$(dpkg-parsechangelog -l "$src/debian/changelog" -S Maintainer)
	{
		printf 'poold (%s-1) unstable; urgency=medium\n\n' "$new_version"
		printf '  * Test build of upstream version %s.\n\n' "$new_version"
		printf ' -- %s  %s\n\n' "$maint" "$(date -R)"
		cat "$top/packaging/debian/changelog"
	} >"$src/debian/changelog"
fi

build_opts=(-us -uc -b)
if [ "${MKDEB_SOURCE:-0}" = 1 ]; then
	# A full build (source + binary) needs the upstream tarball of the
	# 3.0 (quilt) format: the tree without debian/.
	tar -C "$work" --exclude="poold-$new_version/debian" --owner=0 --group=0 \
		--numeric-owner -czf "$work/poold_$new_version.orig.tar.gz" "poold-$new_version"
	build_opts=(-us -uc)
fi

echo "mkdeb: building poold $new_version in $src (dpkg-buildpackage ${build_opts[*]})" >&2
(cd "$src" && timeout 900 dpkg-buildpackage "${build_opts[@]}") >"$work/build.log" 2>&1 || {
	tail -n 60 "$work/build.log" >&2
	echo "mkdeb: dpkg-buildpackage failed (full log above: $work/build.log)" >&2
	MKDEB_KEEP=1
	exit 1
}

mkdir -p "$dist"
shopt -s nullglob
debs=("$work"/*.deb)
[ ${#debs[@]} -gt 0 ] || { echo "mkdeb: no .deb produced" >&2; exit 1; }
cp -f "${debs[@]}" "$dist/"
if [ "${MKDEB_SOURCE:-0}" = 1 ]; then
	cp -f "$work"/*.dsc "$work"/*.orig.tar.* "$work"/*.debian.tar.* "$dist/"
fi
changes=("$work"/*.changes)

main_deb=""
for d in "${debs[@]}"; do
	case "$(basename "$d")" in poold_*.deb) main_deb="$dist/$(basename "$d")" ;; esac
done

if [ "${MKDEB_LINTIAN:-1}" != 0 ]; then
	echo "mkdeb: lintian --fail-on error,warning ${changes[*]##*/}" >&2
	# -I shows info tags too (for the record); only errors and warnings fail.
	timeout 600 lintian -I --fail-on error,warning "${changes[@]}" >&2
	echo "mkdeb: lintian clean (no errors, no warnings)" >&2
fi
echo "$main_deb"
