#!/usr/bin/env bash
# The batch demo (examples/scripts/demo.lua, what ./bd demo runs into a pipe):
# the Fashion-MNIST part, then the paper's ResNet-18 from ../shared/models/
# quantized again and naming the photos of examples/images/photos/ by their
# ImageNet classes, teacher and student alike; without that model the demo
# says what it skipped, and this test skips the rest.
. "$(dirname "$0")/support/testlib.sh"
R18=../shared/models/resnet18_bgd_small.onnx

# Told of a model that is not there. Under the sanitizers a run of the demo
# takes minutes, so there only where the shared model is missing anyway.
if [ ! -f "$R18" ] || [ -z "${BD_SANITIZED:-}" ]; then
  "$BIN" run examples/scripts/demo.lua "$M" "$TMP/none/r18.onnx" >"$TMP/out" 2>"$TMP/err" ||
    fail "the demo without the ImageNet model failed: $(cat "$TMP/err")"
  grep -qE '^student +top1 [0-9.]+% ' "$TMP/out" || fail "the demo has no Fashion-MNIST accuracy"
  grep -q "^skipped: $TMP/none/r18.onnx or $TMP/none/imagenet_classes.txt is not there" \
    "$TMP/out" || fail "the demo did not say what it skipped: $(tail -3 "$TMP/out")"
fi

if [ ! -f "$R18" ] || [ ! -f "${R18%/*}/imagenet_classes.txt" ]; then
  echo "$R18 is not there: skipping the demo's ImageNet part"
  [ $failures = 0 ] && exit 77
  finish
fi
"$BIN" run examples/scripts/demo.lua >"$TMP/out" 2>"$TMP/err" ||
  fail "the demo failed: $(cat "$TMP/err")"
grep -q "^the largest rel error 0\.0000: the codebooks come back" "$TMP/out" ||
  fail "the ResNet-18's small blocks did not come back: $(grep 'rel error' "$TMP/out")"
for p in "camera tripod" "chelsea tiger cat" "coffee espresso"; do
  photo=${p%% *} class=${p#* }
  grep -qE "^$photo\.jpg +$class +$class \([0-9]+%\) +$class \([0-9]+%\)$" "$TMP/out" ||
    fail "the demo does not name $photo.jpg '$class': $(grep "^$photo" "$TMP/out")"
done
# the names end the demo
tail -1 "$TMP/out" | grep -q '^coffee\.jpg ' || fail "the demo ends on: $(tail -1 "$TMP/out")"
finish
