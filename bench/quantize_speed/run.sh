#!/usr/bin/env bash
# bench/quantize_speed: a whole ResNet-50 (torchvision's architecture, seeded
# random weights, exported by examples/imagenet/export.py) quantized with the
# small regime on 128 calibration images (skimage's photos, repeated), in the
# same run: this build's default (error feedback, best of 4 restarts), its
# block objective with one restart, and the fit before k-means++ and
# restarts (revision $BD_BENCH_OLD_REV, the build bench/quantize makes).
# Needs Debian's python3-torch and python3-torchvision for the export, and
# python3-skimage for the photos; says so and stops when they are missing.
set -euo pipefail
BIN=$1
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cd "$ROOT"
OLD=$ROOT/build-bench-old/bitdown
THREADS=${BD_BENCH_THREADS:-2}
MODELS=$ROOT/examples/imagenet/models
PHOTOS=${BD_PHOTOS:-$(/usr/bin/python3 -c 'import skimage, os; print(os.path.dirname(skimage.__file__) + "/data")' 2>/dev/null || true)}
if ! /usr/bin/python3 -c 'import torch, torchvision' 2>/dev/null || [ -z "$PHOTOS" ]; then
  echo "bench/quantize_speed: needs python3-torch, python3-torchvision and python3-skimage" >&2
  exit 1
fi
[ -x "$OLD" ] || { echo "bench/quantize_speed: run bench/quantize first (it builds the old fit)" >&2; exit 1; }
[ -f "$MODELS/resnet50.onnx" ] || /usr/bin/python3 examples/imagenet/export.py --out "$MODELS" resnet50 >/dev/null
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
for p in astronaut chelsea coffee motorcycle_left motorcycle_right camera page; do
  [ -f "$PHOTOS/$p.png" ] && echo "$PHOTOS/$p.png"
done >"$TMP/photos"
n=$(wc -l <"$TMP/photos")
for i in $(seq 0 127); do
  echo "$(sed -n "$((i % n + 1))p" "$TMP/photos") $((i % n))"
done >"$TMP/calib.txt"

run() { # label binary args...: seconds of one quantize
  local label=$1 bin=$2 t0 t1
  shift 2
  t0=$(date +%s.%N)
  OMP_NUM_THREADS=$THREADS "$bin" quantize "$MODELS/resnet50.onnx" -o "$TMP/$label.onnx" --regime small \
    --calib "list:$TMP/calib.txt" --calib-n 128 --threads "$THREADS" "$@" >"$TMP/$label.txt"
  t1=$(date +%s.%N)
  awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f", b - a }'
}
old=$(run old "$OLD" --objective act)
# the seconds are the quantization's: no check of the student after it
block=$(run block "$BIN" --objective act --restarts 1 --check-n 0)
default=$(run default "$BIN" --check-n 0)
fc() { awk '$1 == "fc" { print $NF }' "$TMP/$1.txt"; }
out=$TMP/section.md
cat >"$out" <<EOF
Command: \`./bd bench quantize_speed\` ($(date -u +%Y-%m-%d), $THREADS threads): \`bitdown quantize resnet50.onnx -o OUT --regime small --calib list:PHOTOS --calib-n 128 --threads $THREADS\` with the options below, one after the other in the same run. Seconds of the whole command (the model's calibration forward passes included); the fc column is the classifier's own time (k=2048 on 512,000 subvectors).

| fit | options | seconds | fc seconds | / old |
|---|---|---:|---:|---:|
| old (revision $(cat "$ROOT/build-bench-old/REV")) | \`--objective act\` | $old | $(fc old) | 1.00 |
| block, one restart | \`--objective act --restarts 1\` | $block | $(fc block) | $(awk -v a="$block" -v b="$old" 'BEGIN { printf "%.2f", a / b }') |
| default: feedback, best of 4 | | $default | $(fc default) | $(awk -v a="$default" -v b="$old" 'BEGIN { printf "%.2f", a / b }') |
EOF
cat "$out"
"$ROOT/bench/record.sh" quantize_speed "$out"
