#!/usr/bin/env bash
# Runs the benchmarks in bench/: ./bd bench [NAME...] (default: all).
# Each bench/NAME/run.sh prints a table of ratios against a reference
# measured in the same run and records it in docs/benchmarks.md.
set -euo pipefail
BIN=$1; shift
cd "$(dirname "$0")"
names=("$@")
if ((${#names[@]} == 0)); then
  for d in */run.sh; do names+=("${d%/run.sh}"); done
fi
for n in "${names[@]}"; do
  [ -x "$n/run.sh" ] || { echo "no benchmark '$n' (have: $(ls -d */ | tr -d / | tr '\n' ' '))" >&2; exit 2; }
  echo "== bench/$n"
  "$n/run.sh" "$BIN"
done
