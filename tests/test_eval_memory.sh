#!/usr/bin/env bash
# bitdown eval of a compressed model runs from its stored form: its peak
# resident memory stays below the dense model's by at least the dense
# weights' size (the paper's ResNet-18 compressed with PQ small holds its
# codes, one decoded layer and the activations, never every dense weight),
# and its logits are the dense-decoded file's; an int4 one (a code per
# weight) too. Skipped under the sanitizers
# (their shadow memory is most of any peak), or without the model or
# /usr/bin/time.
. "$(dirname "$0")/support/testlib.sh"
R=../shared/models/resnet18_bgd_small.onnx
[ -e "$R" ] || { echo "SKIP: no $R"; exit 77; }
[ -z "${BD_SANITIZED:-}" ] || { echo "SKIP: peaks under the sanitizers mean nothing"; exit 77; }
[ -x /usr/bin/time ] || { echo "SKIP: no /usr/bin/time"; exit 77; }
mkdir -p "$TMP/img/all"
for f in examples/images/*.png; do ln -s "$PWD/$f" "$TMP/img/all/"; done
PRE=(--rgb --resize 256 --crop 224 --mean 0.485,0.456,0.406 --std 0.229,0.224,0.225)
"$BIN" quantize "$R" -o "$TMP/q.onnx" --regime small --calib "dir:$TMP/img" --calib-n 8 --iters 5 \
  --restarts 1 "${PRE[@]}" --report "$TMP/r.json" >/dev/null 2>"$TMP/err" ||
  fail "quantize: $(cat "$TMP/err")"
"$BIN" quantize "$R" -o "$TMP/d.onnx" --regime small --calib "dir:$TMP/img" --calib-n 8 --iters 5 \
  --restarts 1 "${PRE[@]}" --decoded >/dev/null 2>"$TMP/err" || fail "quantize --decoded: $(cat "$TMP/err")"
# peak MODEL NAME [BATCH]: the eval's peak resident KB (batch 8 unless
# given); its logits in $TMP/NAME.f32
peak() {
  /usr/bin/time -f %M -o "$TMP/$2.kb" "$BIN" eval "$1" --data "dir:$TMP/img" "${PRE[@]}" --batch "${3:-8}" \
    --logits "$TMP/$2.f32" >/dev/null 2>"$TMP/err" || fail "eval $1: $(cat "$TMP/err")"
  tail -1 "$TMP/$2.kb"
}
dense=$(peak "$TMP/d.onnx" dense)
packed=$(peak "$TMP/q.onnx" packed)
weights=$(/usr/bin/python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))["totals"]["fp32_bytes"] // 1024)' "$TMP/r.json")
echo "eval peak: dense $dense KB, compressed $packed KB; dense weights $weights KB"
((packed + weights <= dense)) ||
  fail "the compressed eval peaked at $packed KB, not $weights KB (the dense weights) below the dense one's $dense KB"
cmp -s "$TMP/dense.f32" "$TMP/packed.f32" || fail "the compressed eval's logits differ from the decoded file's"

# int4, a code per weight: its load keeps each layer's codes packed from the
# moment it has them (it held a 4-byte code per weight: 130 MB, and before
# that unpacked every layer at once: 194 MB, against the dense 147), so it
# too stays below the dense eval by the dense weights
"$BIN" quantize "$R" -o "$TMP/i4.onnx" --regime int4 --set 'all:objective=weight' \
  --calib "dir:$TMP/img" --calib-n 8 "${PRE[@]}" --report "$TMP/i4.json" >/dev/null 2>"$TMP/err" ||
  fail "quantize int4: $(cat "$TMP/err")"
int4=$(peak "$TMP/i4.onnx" int4)
echo "eval peak: int4 $int4 KB"
((int4 + weights <= dense)) ||
  fail "the int4 eval peaked at $int4 KB, not $weights KB (the dense weights) below the dense one's $dense KB"
# ... and at batch 1, where the load's peak shows, it holds what the PQ eval
# holds, its larger payload, and at most one more decoded layer: the int
# expression's Sub and Mul, where PQ's has one Gather. Its load held the
# codes as int64 beside their floats, the file's code string beside its
# packed copy, and a resident scratch: 67.7 MB against PQ's 44.5 for a
# payload 4.2 MB larger.
int4=$(peak "$TMP/i4.onnx" int4.b1 1)
packed=$(peak "$TMP/q.onnx" packed.b1 1)
echo "eval peak at batch 1: int4 $int4 KB, PQ $packed KB"
read -r payloads largest <<<"$(/usr/bin/python3 -c '
import json, sys
pq, i4 = (json.load(open(f)) for f in sys.argv[1:])
print((i4["totals"]["compressed_bytes"] - pq["totals"]["compressed_bytes"]) // 1024,
      max(4 * eval("*".join(map(str, l["shape"]))) for l in i4["layers"] if l["quantized"]) // 1024)
' "$TMP/r.json" "$TMP/i4.json")"
((int4 <= packed + payloads + largest)) ||
  fail "the int4 eval at batch 1 peaked at $int4 KB: more than the PQ eval's $packed KB + the payloads' difference $payloads KB + the largest layer's $largest KB"
finish
