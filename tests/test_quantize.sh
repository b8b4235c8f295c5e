#!/usr/bin/env bash
# bitdown quantize end to end on the Fashion-MNIST ResNet: the table, the
# report, the compressed file checked by ONNX's own checker and run by ONNX
# Runtime, reloading, info and eval on it, --decoded, --set, and errors.
. "$(dirname "$0")/support/testlib.sh"

"$BIN" quantize $M -o "$TMP/q.onnx" --calib-n $N --iters 20 --eval fmnist:test --eval-n 500 \
  --report "$TMP/r.json" >"$TMP/out" 2>"$TMP/err" || fail "quantize failed: $(cat "$TMP/err")"
grep -qE '^conv1 .* first conv: kept in fp32' "$TMP/out" || fail "first conv not reported as kept"
grep -qE '^layer1\.0\.conv1 +\[16, 16, 3, 3\] +9 +32 ' "$TMP/out" || fail "layer1.0.conv1 row (d=9, k clamped to 32)"
grep -q 'k clamped from 256 to 32' "$TMP/out" || fail "the clamp is not reported"
grep -qE '^fc +\[10, 64\] +4 ' "$TMP/out" || fail "fc row"
grep -qE '^size: .* ratio [0-9.]+x$' "$TMP/out" || fail "size line"
grep -qE '^student +top1 [0-9.]+% top5' "$TMP/out" || fail "student accuracy"

cp "$TMP/out" "$TMP/first.out"
# the file's size on disk beside the payload, each with its ratio
disk_check() { # FILE ORIGINAL OUTPUT PREFIX [payload JSON]
  /usr/bin/python3 - "$@" <<'PY'
import json, os, re, sys
path, orig, out, prefix = sys.argv[1:5]
mb = lambda b: round(b / 2**20, 4)
size, osize = os.path.getsize(path), os.path.getsize(orig)
m = re.search(r"^%s(?:.*; )?([\d.]+) MB on disk, ratio ([\d.]+)x to the original file \(([\d.]+) MB\)(; payload ([\d.]+) MB, ratio ([\d.]+)x)?$"
              % re.escape(prefix), open(out).read(), re.M)
assert m, "no size on disk in %r" % open(out).read()
assert float(m[1]) == mb(size) and float(m[3]) == mb(osize), (m.groups(), size, osize)
assert float(m[2]) == round(osize / size, 2), (m.groups(), size, osize)
if len(sys.argv) > 5:
    t = json.load(open(sys.argv[5]))["totals"]
    assert float(m[5]) == mb(t["compressed_bytes"]) and float(m[6]) == round(t["ratio"], 2), (m.groups(), t)
PY
}
disk_check "$TMP/q.onnx" $M "$TMP/first.out" "wrote $TMP/q.onnx: " "$TMP/r.json" || fail "quantize's wrote line"

/usr/bin/python3 - "$TMP/r.json" "$TMP/q.onnx" <<'PY' || fail "report or file checks"
import json, os, sys
r = json.load(open(sys.argv[1]))
layers = {l["name"]: l for l in r["layers"]}
assert not layers["conv1"]["quantized"]
l = layers["layer1.0.conv1"]
assert l["d"] == 9 and l["k"] == 32 and l["shape"] == [16, 16, 3, 3], l
assert 0 < l["rel_error"] < 1, l
assert len(l["objective_history"]) >= 2
assert all(b <= a * (1 + 1e-6) for a, b in zip(l["objective_history"], l["objective_history"][1:]))
t = r["totals"]
assert t["compressed_bytes"] == t["code_bytes"] + t["codebook_bytes"] + t["other_fp32_bytes"]
assert abs(t["ratio"] - t["fp32_bytes"] / t["compressed_bytes"]) < 1e-9
# the tensors the file stores are the computed size: fp16 codebooks, fp32
# for the rest, the codes packed (one string, up to a byte a layer less than
# packed layer by layer, or less than 160 bytes a width more where narrow
# codes moved up a width), plus small int64 shapes and constants; the file
# is at most 5% + 4 KB more than the computed size (docs/format.md)
import onnx
m = onnx.load(sys.argv[2])
by = {}
for x in m.graph.initializer:
    by[x.data_type] = by.get(x.data_type, 0) + len(x.raw_data)
assert by.get(10, 0) == t["codebook_bytes"], (by, t)
assert by.get(1, 0) == t["other_fp32_bytes"], (by, t)
assert t["code_bytes"] - len(r["layers"]) <= by.get(2, 0) <= t["code_bytes"] + 160 * 15, (by, t)
size = os.path.getsize(sys.argv[2])
print("file %d bytes, computed compressed size %d bytes" % (size, t["compressed_bytes"]))
assert size <= t["compressed_bytes"] * 1.05 + 4096, (size, t)
assert t["student"]["images"] == 500 and t["teacher"]["top1"] > 85
PY

. "$(dirname "$0")/support/ort.sh"
runtimes_agree "$TMP/q.onnx"
cp "$TMP/rt.f32" "$TMP/ours.f32"

# int layers beside PQ ones: 4 bits per channel, 3 bits symmetric per tensor
# in layer3, the classifier in PQ; the file runs everywhere and loads back
# with every layer's format
"$BIN" quantize $M -o "$TMP/int.onnx" --calib-n 128 --regime int4 \
  --set 'layer3.*:int=3,per=tensor,sym=1' --set 'fc:d=4,k=16' --report "$TMP/int.json" \
  >"$TMP/out" 2>"$TMP/err" || fail "quantize --regime int4 failed: $(cat "$TMP/err")"
grep -qE '^layer1\.0\.conv1 .* - +int4 +4\.000 ' "$TMP/out" || fail "int4 row: $(cat "$TMP/out")"
/usr/bin/python3 - "$TMP/int.json" "$TMP/int.onnx" <<'PY' || fail "int report"
import json, os, sys
r = {l["name"]: l for l in json.load(open(sys.argv[1]))["layers"]}
assert r["layer1.0.conv1"]["format"] == "int" and r["layer1.0.conv1"]["bits"] == 4, r["layer1.0.conv1"]
assert r["layer1.0.conv1"]["per"] == "channel" and not r["layer1.0.conv1"]["symmetric"]
assert r["layer3.0.conv2"]["bits"] == 3 and r["layer3.0.conv2"]["per"] == "tensor"
assert r["fc"]["format"] == "pq" and r["fc"]["k"] == 16
# 3 bits of 36864 weights and one fp16 scale
assert r["layer3.0.conv2"]["bytes"] == 36864 * 3 // 8 + 2, r["layer3.0.conv2"]["bytes"]
t = json.load(open(sys.argv[1]))["totals"]
assert t["file_bytes"] == os.path.getsize(sys.argv[2]), t
PY
runtimes_agree "$TMP/int.onnx"
"$BIN" info "$TMP/int.onnx" >"$TMP/info" || fail "info on the int file"
grep -qE '^layer3\.0\.conv2 .* - +int3 +3\.000 ' "$TMP/info" || fail "info: int3 layer: $(cat "$TMP/info")"
grep -qE '^fc .* 4 +16 ' "$TMP/info" || fail "info: the pq classifier: $(cat "$TMP/info")"
"$BIN" quantize $M -o "$TMP/bad.onnx" --set 'fc:int=17' >/dev/null 2>"$TMP/err" && fail "int=17 accepted"
grep -q "int wants a whole number from 1 to 16, not '17'" "$TMP/err" || fail "int=17: $(cat "$TMP/err")"
[ ! -e "$TMP/bad.onnx" ] || fail "a refused plan wrote a file"
"$BIN" quantize $M -o "$TMP/bad.onnx" --set 'fc:int=4,k=8' >/dev/null 2>"$TMP/err" && fail "int= with k= accepted"
grep -q "layer 'fc': int= is a format of its own" "$TMP/err" || fail "int= with k=: $(cat "$TMP/err")"

# info shows d, k and sizes of the compressed file
"$BIN" info "$TMP/q.onnx" >"$TMP/info" || fail "info on the compressed file"
grep -qE '^layer1\.0\.conv1 .* 9 +32 +0\.556 ' "$TMP/info" || fail "info: d, k, bits/w of layer1.0.conv1"
grep -qE '^compressed: 9 layers quantized, .* ratio [0-9.]+x; ' "$TMP/info" || fail "info: compressed totals"
disk_check "$TMP/q.onnx" $M "$TMP/info" "compressed: 9 layers quantized, " || fail "info: the size on disk"

# --decoded writes a plain dense model with the same logits
"$BIN" quantize $M -o "$TMP/d.onnx" --calib-n $N --iters 20 --decoded >/dev/null 2>&1 || fail "--decoded"
"$BIN" eval "$TMP/d.onnx" --data fmnist:test --limit 64 --logits "$TMP/dec.f32" >/dev/null || fail "eval decoded"
cmp -s "$TMP/dec.f32" "$TMP/ours.f32" || fail "the decoded model's logits differ from the compressed one's"
[ "$(stat -c %s "$TMP/d.onnx")" -gt "$(stat -c %s "$TMP/q.onnx")" ] || fail "decoded is not larger"

# guidance: a "[i/n] layer" line with the time as each layer starts (in a log
# too); the student checked against the teacher on a sample of the model's
# test data; a collapse (MobileNet, small regime) is said with the command
# that fine-tunes it, which runs; a mild quantization (int8) is not
MB=examples/fmnist/mobilenet.onnx
"$BIN" quantize $MB -o "$TMP/mb.onnx" --regime small --calib-n 128 --iters 10 --check-n 200 \
  >"$TMP/out" 2>"$TMP/err" || fail "quantize of the MobileNet failed: $(cat "$TMP/err")"
grep -qx '\[1/20\] features\.1\.conv\.0\.0: [0-9.]\+ s elapsed, ETA -' "$TMP/err" &&
  grep -qE '^\[20/20\] classifier: [0-9].* s elapsed, ETA [0-9].* s$' "$TMP/err" ||
  fail "no [i/n] layer lines: $(cat "$TMP/err")"
grep -qx "checking the student against the teacher on the first 200 images of fmnist:test (--check-n; 0 skips it)" \
  "$TMP/out" && grep -qE '^student +top1 [0-9.]+% top5 [0-9.]+% \(200 images\)$' "$TMP/out" ||
  fail "no check of the student: $(cat "$TMP/out")"
grep -qE '^bitdown: WARNING: the student lost [0-9.]+ points of top-1 \([0-9.]+% against the teacher.s [0-9.]+% on 200 images of fmnist:test\)' "$TMP/err" ||
  fail "the collapse is not said: $(cat "$TMP/err")"
cmd=$(grep -x "  bitdown finetune $TMP/mb.onnx -o $TMP/mb.tuned.onnx --iters 500 --eval fmnist:test" "$TMP/err")
[ -n "$cmd" ] || fail "no finetune command: $(cat "$TMP/err")"
# the command as printed, cut short (a later --iters wins)
eval "\"$BIN\"${cmd#  bitdown} --iters 2 --eval-n 50" >"$TMP/ft" 2>&1 && [ -s "$TMP/mb.tuned.onnx" ] ||
  fail "the printed finetune command: $(cat "$TMP/ft")"
"$BIN" quantize $M -o "$TMP/i8.onnx" --regime int8 --calib-n 128 --check-n 200 >"$TMP/out" 2>"$TMP/err" ||
  fail "int8: $(cat "$TMP/err")"
grep -qE '^student +top1 [0-9.]+% .*\(200 images\)$' "$TMP/out" || fail "int8 was not checked: $(cat "$TMP/out")"
grep -q WARNING "$TMP/err" && fail "a mild quantization warns: $(cat "$TMP/err")"
"$BIN" quantize $M -o "$TMP/i8.onnx" --regime int8 --calib-n 128 --check-n 0 >"$TMP/out" 2>&1 || fail "--check-n 0"
grep -q 'top1' "$TMP/out" && fail "--check-n 0 still checked: $(cat "$TMP/out")"
# a dataset the check cannot open is said, and the work is done all the same
"$BIN" annotate $M -o "$TMP/nosuch.onnx" --dataset nosuch >/dev/null || fail "annotate --dataset"
"$BIN" quantize "$TMP/nosuch.onnx" -o "$TMP/ns.onnx" --calib fmnist:train --calib-n 64 --regime int8 \
  >/dev/null 2>"$TMP/err" && [ -s "$TMP/ns.onnx" ] || fail "an unknown dataset failed the work: $(cat "$TMP/err")"
grep -q "^bitdown: no check of the student: dataset 'nosuch:test'" "$TMP/err" || fail "no note: $(cat "$TMP/err")"

# --set, refusals with messages, and nothing written on failure
"$BIN" quantize $M -o "$TMP/s.onnx" --calib-n 64 --iters 5 --set 'layer3.0.conv*:d=18,k=64' --set 'fc:skip' >"$TMP/out" 2>&1 || fail "--set failed"
grep -qE '^layer3\.0\.conv2 +\[64, 64, 3, 3\] +18 +64 ' "$TMP/out" || fail "--set d=18,k=64 not applied"
grep -qE '^fc .* skipped by the plan' "$TMP/out" || fail "fc:skip"
"$BIN" quantize $M -o "$TMP/bad.onnx" --set 'layer1.0.conv1:d=7' >/dev/null 2>"$TMP/err" && fail "d=7 accepted"
grep -q "layer 'layer1.0.conv1': d=7 does not divide its row length 144" "$TMP/err" || fail "d=7 message: $(cat "$TMP/err")"
"$BIN" quantize $M -o "$TMP/bad.onnx" --set 'layer1.0.conv1:k=256' >/dev/null 2>"$TMP/err" && fail "k=256 accepted"
grep -q "may be at most 32" "$TMP/err" || fail "k message: $(cat "$TMP/err")"
"$BIN" quantize $M -o "$TMP/bad.onnx" --set 'nothing*:d=9' >/dev/null 2>"$TMP/err" && fail "empty glob accepted"
grep -q "no layer matches 'nothing\*'" "$TMP/err" || fail "glob message: $(cat "$TMP/err")"
[ ! -e "$TMP/bad.onnx" ] || fail "a failed quantize wrote its output"
finish
