#!/usr/bin/env bash
# The Lua policies of lua/policies/ end to end: size_budget within 5% of its
# target on both example models (PQ and int candidates on one, PQ alone on
# the other), error_budget's bound on every layer it quantized, the regimes
# as plans, their argument errors, bitdown quantize --policy, and ipq's
# stages with training between them.
. "$(dirname "$0")/support/testlib.sh"
MB=examples/fmnist/mobilenet_bn.onnx

# size_budget lands within 5% of a quarter of the fp32 size on both models:
# PQ and int candidates on one, PQ alone on the other (half the trials, and
# every layer then PQ or fp32)
cat >"$TMP/budget.lua" <<LUA
local target = bd.size().fp32_mb / 4
local formats = ...
arg = {[0] = "lua/policies/size_budget.lua", "target_mb=" .. target, "calib_n=$N",
       "iters=3", "trial_iters=2", "formats=" .. formats}
dofile(arg[0])
local got = bd.size().compressed_mb
assert(got <= target and got >= 0.95 * target, ("%.5f MB for a target of %.5f MB"):format(got, target))
for _, l in ipairs(bd.layers()) do
  assert(l.state == "float" or l.rel_error < 1, l.name)
  assert(formats == "all" or l.state == "float" or l.codebook.format == "pq", l.name)
end
print(("budget ok: %.5f of %.5f MB"):format(got, target))
LUA
for mf in "$M all" "$MB pq"; do
  read -r model formats <<<"$mf"
  "$BIN" run --model $model -e "loadfile('$TMP/budget.lua')('$formats')" >"$TMP/out" 2>&1 ||
    fail "size_budget on $model: $(cat "$TMP/out")"
  grep -q "budget ok" "$TMP/out" || fail "size_budget on $model ($formats): $(cat "$TMP/out")"
done

# error_budget: every layer it quantized is within the bound, and it compressed
cat >"$TMP/bound.lua" <<LUA
arg = {[0] = "lua/policies/error_budget.lua", "max_error=0.2", "calib_n=$N", "iters=5",
       "trial_iters=4", "formats=pq"}
dofile(arg[0])
local quantized = 0
for _, l in ipairs(bd.layers()) do
  if l.state ~= "float" then
    quantized = quantized + 1
    assert(l.rel_error <= 0.2, ("%s: %.4f"):format(l.name, l.rel_error))
  end
end
assert(quantized >= 5 and bd.size().ratio > 2, quantized)
print("bound ok")
LUA
"$BIN" run --model $M -e "dofile('$TMP/bound.lua')" >"$TMP/bound.out" 2>&1 ||
  fail "error_budget: $(cat "$TMP/bound.out")"
grep -q "bound ok" "$TMP/bound.out" || fail "error_budget: $(cat "$TMP/bound.out")"

# the regimes, as a plan only
"$BIN" run --model $M lua/policies/large_blocks.lua quantize=false first=true >"$TMP/out" 2>&1 || fail "large_blocks: $(cat "$TMP/out")"
grep -qE '^layer3\.0\.conv2 +18 +256 .* planned$' "$TMP/out" || fail "large_blocks plan: $(cat "$TMP/out")"
grep -qE '^conv1 +9 +2 .* planned$' "$TMP/out" || fail "large_blocks first=true: $(cat "$TMP/out")"
"$BIN" run --model $M lua/policies/small_blocks.lua bogus=1 >/dev/null 2>"$TMP/err" && fail "a bad policy argument exited 0"
grep -q "small_blocks: unknown argument 'bogus' (it takes first, " "$TMP/err" || fail "policy argument error: $(cat "$TMP/err")"
"$BIN" run --model $M lua/policies/size_budget.lua >/dev/null 2>"$TMP/err" && fail "size_budget without a target exited 0"
grep -q "size_budget: needs one of target_mb=M, target_ratio=R or target_bpw=B" "$TMP/err" ||
  fail "size_budget target: $(cat "$TMP/err")"

# bitdown quantize --policy writes a file whose size info agrees with the policy's
"$BIN" quantize $M -o "$TMP/p.onnx" --calib-n $N --iters 5 \
  --policy size_budget:target_mb=0.05,trial_iters=4,formats=pq --report "$TMP/p.json" >"$TMP/out" 2>&1 ||
  fail "quantize --policy: $(cat "$TMP/out")"
/usr/bin/python3 - "$TMP/p.json" "$TMP/p.onnx" <<'PY' || fail "the --policy report"
import json, os, sys
t = json.load(open(sys.argv[1]))["totals"]
assert t["file_bytes"] == os.path.getsize(sys.argv[2]), t
assert 0.0475 * 2**20 <= t["compressed_bytes"] <= 0.05 * 2**20, t
PY
reached=$(sed -n 's/.*reached \([0-9.]*\) MB.*/\1/p' "$TMP/out")
grep -q "^wrote $TMP/p.onnx" "$TMP/out" || fail "quantize --policy wrote nothing: $(cat "$TMP/out")"
"$BIN" info "$TMP/p.onnx" >"$TMP/info" || fail "info on the policy's file"
grep -qE "^compressed: [0-9]+ layers quantized, $reached MB " "$TMP/info" ||
  fail "info disagrees with the policy's $reached MB: $(grep compressed "$TMP/info")"
awk -v r="$reached" 'BEGIN { exit !(r <= 0.05 && r >= 0.0475) }' || fail "quantize --policy reached $reached MB"
"$BIN" quantize $M -o "$TMP/x.onnx" --policy nosuch >/dev/null 2>"$TMP/err"
[ $? = 2 ] || fail "an unknown policy is not a usage error"
grep -q "no policy 'nosuch' .*the policies are: bits_compare, error_budget, ipq, large_blocks, size_budget, small_blocks" "$TMP/err" ||
  fail "unknown policy message: $(cat "$TMP/err")"
"$BIN" quantize $M -o "$TMP/x.onnx" --policy small_blocks --set fc:skip >/dev/null 2>"$TMP/err"
[ $? = 2 ] && grep -q -- "--set does not combine with --policy" "$TMP/err" || fail "--policy with --set: $(cat "$TMP/err")"
[ ! -e "$TMP/x.onnx" ] || fail "a refused --policy wrote its output"

# ipq: every stage quantized, then trained (a few steps), the output naming
# each; the saved file is the student (same top-1 on the same images), its
# layers tuned; a stage glob matching nothing fails first and writes nothing
"$BIN" quantize $M -o "$TMP/ipq.onnx" --calib-n $N --iters 2 --eval fmnist:test --eval-n 50 \
  --policy 'ipq:stages=layer1.*,layer2.0.down*;layer2.*;layer3.*,fc,steps=3,batch=32' >"$TMP/out" 2>&1 ||
  fail "ipq: $(cat "$TMP/out")"
for i in 1 2 3; do
  grep -q "^stage $i/3: quantized " "$TMP/out" && grep -q "^stage $i/3: trained 1 epoch " "$TMP/out" ||
    fail "ipq stage $i: $(cat "$TMP/out")"
done
grep -q "^stage 1/3: quantized layer1.0.conv1 layer1.0.conv2 layer2.0.downsample.0$" "$TMP/out" &&
  grep -q "^stage 2/3: quantized layer2.0.conv1 layer2.0.conv2$" "$TMP/out" &&
  grep -q "^stage 1/3: trained 1 epoch (7 float layers with pq:p=0.1)" "$TMP/out" &&
  grep -q "^stage 3/3: trained 1 epoch (1 float layer)" "$TMP/out" || fail "ipq stages: $(cat "$TMP/out")"
[ "$(grep -cE ' tuned$' "$TMP/out")" = 9 ] || fail "ipq left layers untuned: $(cat "$TMP/out")"
top1=$(sed -n 's/^student  top1 \([0-9.]*\)% .*(50 images)$/\1/p' "$TMP/out")
[ -n "$top1" ] || fail "ipq evaluated nothing: $(cat "$TMP/out")"
"$BIN" eval "$TMP/ipq.onnx" --data fmnist:test --limit 50 >"$TMP/eval" 2>&1 || fail "eval of ipq's file: $(cat "$TMP/eval")"
grep -q "^top1 $top1% " "$TMP/eval" || fail "ipq's file: $(cat "$TMP/eval"), the student had $top1%"
"$BIN" quantize $M -o "$TMP/bad.onnx" --calib-n $N --policy 'ipq:stages=layer1.*;nope*,fc' >"$TMP/out" 2>&1 &&
  fail "ipq with a stage matching nothing exited 0"
grep -q "ipq: stage 2: 'nope\*' matches no layer the plan quantizes" "$TMP/out" || fail "ipq's bad stage: $(cat "$TMP/out")"
grep -q "quantized\|trained" "$TMP/out" && fail "ipq worked before refusing a stage: $(cat "$TMP/out")"
[ ! -e "$TMP/bad.onnx" ] || fail "ipq wrote a file after refusing a stage"

finish
