#!/usr/bin/env bash
# bitdown annotate: a plain export (no metadata) gets the warning; annotated
# with a preset, it evaluates as the original with no warning; a compressed
# model stays compressed; the real ResNet-18 annotated with --preset
# imagenet names the photos; bad presets, class files and means are refused
# naming what was wrong, and nothing is written.
. "$(dirname "$0")/support/testlib.sh"

# the example without its metadata, as a plain PyTorch export would be
/usr/bin/python3 - "$M" "$TMP/plain.onnx" <<'PY' || fail "stripping the metadata"
import sys, onnx
m = onnx.load(sys.argv[1])
del m.metadata_props[:]
onnx.save(m, sys.argv[2])
PY
"$BIN" eval "$TMP/plain.onnx" --data fmnist:test --limit 500 >/dev/null 2>"$TMP/err"
grep -q "preprocessing metadata" "$TMP/err" || fail "no warning for a plain export: $(cat "$TMP/err")"
"$BIN" annotate "$TMP/plain.onnx" -o "$TMP/a.onnx" --preset fmnist >"$TMP/out" 2>&1 ||
  fail "annotate: $(cat "$TMP/out")"
"$BIN" eval "$TMP/a.onnx" --limit 500 >"$TMP/a.txt" 2>"$TMP/err" || fail "eval: $(cat "$TMP/err")"
[ -s "$TMP/err" ] && fail "warnings after annotating: $(cat "$TMP/err")"
"$BIN" eval "$M" --limit 500 >"$TMP/m.txt" 2>&1
# the same accuracy (the first line names each model)
[ "$(grep '^top1' "$TMP/a.txt")" = "$(grep '^top1' "$TMP/m.txt")" ] && grep -q '^top1' "$TMP/a.txt" ||
  fail "annotated: $(cat "$TMP/a.txt"), original: $(cat "$TMP/m.txt")"
"$BIN" predict "$TMP/a.onnx" examples/images/fmnist_test_0000_ankle_boot.png >"$TMP/out" 2>&1
grep -q "Ankle boot" "$TMP/out" || fail "the preset's class names: $(cat "$TMP/out")"

# a compressed model keeps its codes
"$BIN" quantize "$M" -o "$TMP/q.onnx" --calib-n $N --iters 10 >/dev/null 2>&1 || fail "quantize"
"$BIN" annotate "$TMP/q.onnx" -o "$TMP/qa.onnx" --crop 0 >/dev/null 2>"$TMP/err" ||
  fail "annotating a compressed model: $(cat "$TMP/err")"
"$BIN" info "$TMP/qa.onnx" >"$TMP/out" 2>&1
grep -qE "ratio [0-9.]+x" "$TMP/out" || fail "not compressed after annotating: $(cat "$TMP/out")"

# the real ImageNet ResNet-18 and the photos, where they are
R=../shared/models/resnet18_bgd_small.onnx
PHOTOS=$(/usr/bin/python3 -c 'import skimage, os; print(os.path.dirname(skimage.__file__) + "/data")' 2>/dev/null || true)
if [ -f "$R" ] && [ -f "$PHOTOS/chelsea.png" ]; then
  "$BIN" annotate "$R" -o "$TMP/r.onnx" --preset imagenet --classes ../shared/models/imagenet_classes.txt \
    >/dev/null 2>"$TMP/err" || fail "annotate imagenet: $(cat "$TMP/err")"
  "$BIN" predict "$TMP/r.onnx" "$PHOTOS/chelsea.png" >"$TMP/out" 2>"$TMP/err"
  [ -s "$TMP/err" ] && fail "warnings on the annotated ResNet-18: $(cat "$TMP/err")"
  sed -n 2p "$TMP/out" | grep -q "tiger cat" || fail "chelsea: $(cat "$TMP/out")"
fi

# bad input: a message naming what was wrong, no file written
"$BIN" annotate "$M" -o "$TMP/x.onnx" --preset nope >/dev/null 2>"$TMP/err" && fail "unknown preset"
grep -q "unknown preset 'nope' (the presets are imagenet, fmnist" "$TMP/err" || fail "preset message: $(cat "$TMP/err")"
printf 'a\nb\nc\n' >"$TMP/three.txt"
"$BIN" annotate "$M" -o "$TMP/x.onnx" --classes "$TMP/three.txt" >/dev/null 2>"$TMP/err" && fail "3 classes for 10"
grep -q "three.txt has 3 class names, but the model's output '.*' has 10 classes" "$TMP/err" ||
  fail "class count message: $(cat "$TMP/err")"
"$BIN" annotate "$M" -o "$TMP/x.onnx" --mean 0.1,0.2,0.3 >/dev/null 2>"$TMP/err" && fail "3 means for 1 channel"
grep -q "mean has 3 values, but the model's input has 1 channel" "$TMP/err" || fail "mean message: $(cat "$TMP/err")"
"$BIN" annotate "$M" -o "$TMP/x.onnx" --preset cifar10 >/dev/null 2>"$TMP/err" && fail "an RGB preset on a gray model"
grep -q "input '.*' has 1 channel" "$TMP/err" || fail "color message: $(cat "$TMP/err")"
"$BIN" annotate "$M" -o "$TMP/x.onnx" >/dev/null 2>"$TMP/err" && fail "annotate with nothing to write"
grep -q "nothing to write" "$TMP/err" || fail "nothing-to-write message: $(cat "$TMP/err")"
[ -e "$TMP/x.onnx" ] && fail "a refused annotate wrote its output"
finish
