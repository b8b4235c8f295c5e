#!/usr/bin/env bash
# record.sh NAME FILE: puts FILE's markdown into docs/benchmarks.md between
# the markers of section NAME (added at the end if missing).
set -euo pipefail
name=$1 body=$2
doc="$(cd "$(dirname "$0")/.." && pwd)/docs/benchmarks.md"
[ -f "$doc" ] || printf '# Benchmarks\n\nRecorded by `./bd bench`; each section says the command that made it.\n' >"$doc"
begin="<!-- bench:$name -->" end="<!-- /bench:$name -->"
if ! grep -qF "$begin" "$doc"; then
  printf '\n%s\n%s\n' "$begin" "$end" >>"$doc"
fi
tmp=$(mktemp)
awk -v b="$begin" -v e="$end" -v f="$body" '
  $0 == b { print; while ((getline line < f) > 0) print line; skip = 1; next }
  $0 == e { skip = 0 }
  !skip { print }' "$doc" >"$tmp"
mv "$tmp" "$doc"
