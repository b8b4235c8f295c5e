#!/usr/bin/env bash
# One option grammar: the operations with an option table (quantize,
# finetune, train, bitprune) offer the same keys with the same defaults on
# the command line (--help), in the command language ('help OP') and in Lua
# (bd.options); an unknown key is refused naming it and listing the valid
# ones, a value out of range naming the range, in all three. And quantize's
# size targets (--target-ratio, --target-mb, --target-bpw, and the same keys
# in the REPL and Lua) land within their budget on the written file, while
# bad ones are refused with nothing written.
. "$(dirname "$0")/support/testlib.sh"
R=examples/fmnist/resnet.onnx

# ---- the same keys and defaults in the three front-ends ----
# key=default lines, sorted: from the help's "[range, default X]" (flags: on
# or off, as false or true), from bd.options
help_defaults() { # FILE CLI(0|1)
  /usr/bin/python3 - "$1" "$2" <<'PY'
import re, sys
text, cli = open(sys.argv[1]).read(), sys.argv[2] == "1"
key = r"--([a-z0-9-]+)" if cli else r"([a-z0-9_]+)="
out = {}
# an entry: its head, its help, and the bracket on the same or the next line
for m in re.finditer(r"^  " + key + r"[^\n]*?(?:\n {27})?\[(?:[^\]]*?, )?default ([^\]]*)\]$",
                     text, re.M):
    name = m.group(1).replace("-", "_")
    out[name] = {"off": "false", "on": "true"}.get(m.group(2), m.group(2))
for k in sorted(out):
    print("%s=%s" % (k, out[k]))
PY
}
for op in quantize finetune train bitprune; do
  "$BIN" $op --help >"$TMP/cli.help" || fail "$op --help"
  help_defaults "$TMP/cli.help" 1 >"$TMP/$op.cli"
  printf 'help %s\n' $op | "$BIN" repl --no-checkpoint >"$TMP/repl.help" 2>&1 ||
    fail "help $op: $(cat "$TMP/repl.help")"
  help_defaults "$TMP/repl.help" 0 >"$TMP/$op.repl"
  "$BIN" run -e "for k, v in pairs(bd.options('$op')) do print(k .. '=' .. tostring(v)) end" |
    sort >"$TMP/$op.lua" || fail "bd.options('$op')"
  [ -s "$TMP/$op.lua" ] || fail "bd.options('$op') is empty"
  cmp -s "$TMP/$op.cli" "$TMP/$op.lua" ||
    fail "$op: --help and bd.options differ: $(diff "$TMP/$op.cli" "$TMP/$op.lua" | head -5)"
  cmp -s "$TMP/$op.repl" "$TMP/$op.lua" ||
    fail "$op: help $op and bd.options differ: $(diff "$TMP/$op.repl" "$TMP/$op.lua" | head -5)"
done
# what they agree on is the tables' (a few, by value)
for kv in iters=100 restarts=4 tol=0.0001 tune=0 target_mb=0; do
  grep -qx "$kv" "$TMP/quantize.lua" || fail "quantize's defaults lack $kv"
done
for kv in mode=global iters=200 batch=64 lr=0.01 momentum=0.9 wd=0.0001 loss=kl bn=frozen \
  bias=false seed=0; do
  grep -qx "$kv" "$TMP/finetune.lua" || fail "finetune's defaults lack $kv"
done
grep -qx "lr=0.01" "$TMP/bitprune.lua" && grep -qx "lr=0.1" "$TMP/train.lua" ||
  fail "bitprune's lr default is its own: $(grep '^lr=' "$TMP/bitprune.lua" "$TMP/train.lua")"
# bd.options applies and checks given values
o=$("$BIN" run -e "local o = bd.options('finetune', {lr = 0.5, bias = true, mode = 'layer'})
print(o.lr, o.bias, o.mode, o.iters)")
[ "$o" = "$(printf '0.5\ttrue\tlayer\t200')" ] || fail "bd.options with values: $o"

# ---- an unknown key names it and lists every key; a bad value names the range ----
keys() { cut -d= -f1 "$TMP/$1.lua"; }
"$BIN" quantize $R -o "$TMP/x.onnx" --bogus 3 >/dev/null 2>"$TMP/cli.quantize.err"
[ $? = 2 ] || fail "quantize --bogus is not a usage error"
"$BIN" finetune $R -o "$TMP/x.onnx" --bogus 3 >/dev/null 2>"$TMP/cli.finetune.err"
printf 'quantize bogus=1\nfinetune bogus=1\n' |
  "$BIN" repl $R --keep-going --no-checkpoint >/dev/null 2>"$TMP/repl.err"
"$BIN" run --model $R -e "
for _, f in ipairs{bd.quantize, bd.finetune} do
  local ok, msg = pcall(f, {bogus = 1})
  io.stderr:write(msg, '\n')
end" 2>"$TMP/lua.err" >/dev/null
grep -q "^bitdown quantize: unknown option '--bogus' (it takes " "$TMP/cli.quantize.err" ||
  fail "quantize --bogus: $(cat "$TMP/cli.quantize.err")"
grep -q "^bitdown finetune: unknown option '--bogus' (it takes " "$TMP/cli.finetune.err" ||
  fail "finetune --bogus: $(cat "$TMP/cli.finetune.err")"
grep -q "line 1: quantize: unknown option 'bogus' (it takes " "$TMP/repl.err" &&
  grep -q "line 2: finetune: unknown option 'bogus' (it takes " "$TMP/repl.err" ||
  fail "REPL bogus=1: $(cat "$TMP/repl.err")"
grep -q "^bd.quantize: unknown option 'bogus' (it takes " "$TMP/lua.err" &&
  grep -q "^bd.finetune: unknown option 'bogus' (it takes " "$TMP/lua.err" ||
  fail "Lua bogus=1: $(cat "$TMP/lua.err")"
listed() { # KEY FILE PATTERN: KEY is in the list of FILE's line matching PATTERN
  grep "$3" "$2" | grep -qE "[ (]$1(,| or |\))"
}
for op in quantize finetune; do
  for k in $(keys $op); do
    listed "--${k//_/-}" "$TMP/cli.$op.err" "unknown option" ||
      fail "$op --bogus does not list --${k//_/-}"
    listed "$k" "$TMP/repl.err" "$op: unknown" || fail "REPL $op bogus=1 does not list $k"
    listed "$k" "$TMP/lua.err" "bd.$op: unknown" || fail "bd.$op{bogus=1} does not list $k"
  done
done
# out of range: refused with the range, the same in each
"$BIN" quantize $R -o "$TMP/x.onnx" --iters 0 >/dev/null 2>"$TMP/cli.err"
[ $? = 2 ] &&
  grep -qx "bitdown quantize: --iters must lie in \[1, 100000\], not 0" "$TMP/cli.err" ||
  fail "quantize --iters 0: $(cat "$TMP/cli.err")"
"$BIN" finetune $R -o "$TMP/x.onnx" --momentum 1.5 >/dev/null 2>"$TMP/cli.err"
[ $? = 2 ] &&
  grep -qx "bitdown finetune: --momentum must lie in \[0, 0.9999\], not 1.5" "$TMP/cli.err" ||
  fail "finetune --momentum 1.5: $(cat "$TMP/cli.err")"
printf 'quantize iters=0\nfinetune momentum=1.5\n' |
  "$BIN" repl $R --keep-going --no-checkpoint >/dev/null 2>"$TMP/repl.err"
grep -q "line 1: quantize: iters must lie in \[1, 100000\], not 0$" "$TMP/repl.err" &&
  grep -q "line 2: finetune: momentum must lie in \[0, 0.9999\], not 1.5$" "$TMP/repl.err" ||
  fail "REPL out of range: $(cat "$TMP/repl.err")"
"$BIN" run --model $R -e "
local ok, a = pcall(bd.quantize, {iters = 0})
local ok2, b = pcall(bd.finetune, {momentum = 1.5})
print(a) print(b)" >"$TMP/lua.out" 2>&1
grep -qx "bd.quantize: iters must lie in \[1, 100000\], not 0" "$TMP/lua.out" &&
  grep -qx "bd.finetune: momentum must lie in \[0, 0.9999\], not 1.5" "$TMP/lua.out" ||
  fail "Lua out of range: $(cat "$TMP/lua.out")"
[ ! -e "$TMP/x.onnx" ] || fail "a refused option wrote a file"

# ---- size targets land within the budget on the written file ----
# payload.lua KIND VALUE, on the written model: its payload is at most the
# target (mb: MiB; ratio: fp32 / R; bpw: the fp32 rest plus B/8 a weight
# of the quantizable layers) and not far below
cat >"$TMP/payload.lua" <<'LUA'
local kind, value = arg[1], tonumber(arg[2])
local z, weights, quantized = bd.size(), 0, 0
for _, l in ipairs(bd.layers()) do
  weights = weights + l.params
  if l.state ~= "float" then quantized = quantized + 1 end
end
local target = kind == "mb" and value * 2 ^ 20 or kind == "ratio" and z.fp32_bytes / value
               or z.fp32_bytes - 4 * weights + value * weights / 8
assert(quantized > 0, "nothing quantized")
assert(z.compressed_bytes <= target and z.compressed_bytes >= 0.9 * target,
       ("%d bytes for a target of %.0f"):format(z.compressed_bytes, target))
print(("payload ok: %d bytes, target %.0f"):format(z.compressed_bytes, target))
LUA
# each target once, each through another front-end (the three share the
# policy and its arguments; tests/test_policies.sh has the policy's own)
Q=(--calib-n 64 --iters 2 --restarts 1)
"$BIN" quantize $R -o "$TMP/t.mb.onnx" "${Q[@]}" --target-mb 0.04 >"$TMP/out" 2>&1 ||
  fail "quantize --target-mb 0.04: $(cat "$TMP/out")"
grep -q "^size_budget: target 0.0400 MB, reached " "$TMP/out" ||
  fail "--target-mb ran no size_budget: $(cat "$TMP/out")"
"$BIN" run --model "$TMP/t.mb.onnx" "$TMP/payload.lua" mb 0.04 >"$TMP/pay" 2>&1 ||
  fail "--target-mb 0.04: $(cat "$TMP/pay")"
printf 'data calib n=64\nquantize target_ratio=6 iters=2 restarts=1\nsave %s\n' "$TMP/t.repl.onnx" |
  "$BIN" repl $R --no-checkpoint >"$TMP/out" 2>&1 ||
  fail "REPL quantize target_ratio=6: $(cat "$TMP/out")"
"$BIN" run --model "$TMP/t.repl.onnx" "$TMP/payload.lua" ratio 6 >"$TMP/pay" 2>&1 ||
  fail "REPL target_ratio=6: $(cat "$TMP/pay")"
"$BIN" run --model $R -e "
bd.data('calib', nil, {n = 64})
local q = bd.quantize{target_bpw = 3, iters = 2, restarts = 1}
assert(#q > 0 and q[1].state ~= 'float', 'bd.quantize returned no quantized layer')
assert(bd.options('quantize').restarts == 4, 'restarts stayed set after the call')
bd.save('$TMP/t.lua.onnx')" >"$TMP/out" 2>&1 || fail "bd.quantize{target_bpw=3}: $(cat "$TMP/out")"
"$BIN" run --model "$TMP/t.lua.onnx" "$TMP/payload.lua" bpw 3 >"$TMP/pay" 2>&1 ||
  fail "bd.quantize{target_bpw=3}: $(cat "$TMP/pay")"

# ---- bad targets: refused, nothing written ----
bad() { # EXIT PATTERN ARGS...
  local code=$1 pattern=$2; shift 2
  rm -f "$TMP/bad.onnx"
  "$BIN" quantize $R -o "$TMP/bad.onnx" "${Q[@]}" "$@" >"$TMP/out" 2>"$TMP/err"
  local rc=$?
  [ $rc = "$code" ] || fail "quantize $* exited $rc, not $code: $(cat "$TMP/err")"
  grep -qF -- "$pattern" "$TMP/err" ||
    fail "quantize $*: stderr lacks '$pattern': $(cat "$TMP/err")"
  [ ! -e "$TMP/bad.onnx" ] || fail "quantize $* wrote its output"
}
bad 2 "--target-mb must lie in [1e-06, 1e+06], not 0" --target-mb 0
bad 2 "--target-ratio is a number, not 'big'" --target-ratio big
bad 2 "--target-bpw must lie in [0.01, 32], not 40" --target-bpw 40
bad 2 "--target-mb and --target-bpw exclude each other: give one size target" \
  --target-mb 0.04 --target-bpw 3
bad 2 "--target-ratio does not combine with --policy" --target-ratio 4 --policy small_blocks
bad 2 "--tune does not combine with --target-mb" --target-mb 0.04 --tune 5
bad 2 "--set does not combine with --target-bpw" --target-bpw 3 --set fc:skip
bad 1 "size_budget: target 0.0010 MB is below what the parameters it does not decide take" \
  --target-mb 0.001
printf 'quantize target_mb=0.04 target_ratio=4\nquantize fc target_mb=0.04\nlayers\n' |
  "$BIN" repl $R --keep-going --no-checkpoint >"$TMP/out" 2>"$TMP/err"
grep -q "line 1: quantize: target_ratio and target_mb exclude each other" "$TMP/err" &&
  grep -q "line 2: quantize: target_mb=0.04 plans every layer the plan takes: give no GLOB" \
    "$TMP/err" ||
  fail "REPL bad targets: $(cat "$TMP/err")"
grep -q "^10 layers: 10 float, 0 quantized" "$TMP/out" ||
  fail "a refused target changed layers: $(cat "$TMP/out")"

finish
