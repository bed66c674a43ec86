#!/bin/bash
# copy-tree.sh DEST -- copy poold's source tree into DEST (used by mkdeb.sh and
# mkrpm.sh). In a git work tree: the files git tracks or would track
# (`git ls-files -co --exclude-standard`, so ignored build outputs stay out),
# that exist; otherwise everything but .git. Never copies dist/ (built packages)
# nor packaging/debian (mkdeb.sh puts it at the top as debian/).
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
dest=${1:?usage: copy-tree.sh DEST}
mkdir -p "$dest"
if git -C "$top" rev-parse --is-inside-work-tree >/dev/null 2>&1; then
	(cd "$top" && git ls-files -z -co --exclude-standard) |
		while IFS= read -r -d '' f; do
			case "$f" in packaging/debian/* | dist/* | debian/*) continue ;; esac
			[ -f "$top/$f" ] || [ -L "$top/$f" ] || continue
			printf '%s\0' "$f"
		done | tar -C "$top" --null -T - -cf - | tar -C "$dest" -xf -
else
	tar -C "$top" --exclude=./.git --exclude=./dist --exclude=./packaging/debian \
		--exclude=./debian -cf - . | tar -C "$dest" -xf -
fi
