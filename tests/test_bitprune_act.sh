#!/usr/bin/env bash
# BitPruning with learned activation bit lengths (--activations) on the
# example ResNet: the table and the JSON report give every layer's input
# bits; the file carries them as Div -> Round -> Clip -> Mul before each
# quantized layer, of the reported bits, which ONNX's checker accepts, which
# info, eval and finetune (through Round, straight through) run and whose
# logits ONNX Runtime reproduces; in a workspace one undo takes the
# quantizers out again; bad ranges are refused.
. "$(dirname "$0")/support/testlib.sh"
. "$(dirname "$0")/support/ort.sh"

RUN=(--target-bits 4 --steps 3 --batch 32 --epochs 1 --finetune-epochs 1 --eval-n 64)
"$BIN" bitprune "$M" -o "$TMP/bp.onnx" --activations "${RUN[@]}" --report "$TMP/bp.json" \
  >"$TMP/out" 2>&1 || fail "bitprune --activations: $(cat "$TMP/out")"
grep -q 'act bits' "$TMP/out" || fail "the table has no input bits: $(cat "$TMP/out")"
grep -q '^mean activation bits ' "$TMP/out" || fail "no mean input bits: $(cat "$TMP/out")"

# every quantized layer reads the chain, of the bits the report gives it
/usr/bin/python3 - "$TMP/bp.onnx" "$TMP/bp.json" <<'PY' || fail "the quantizers in the file"
import json, math, sys
import onnx
from onnx import numpy_helper as nh
m = onnx.load(sys.argv[1])
onnx.checker.check_model(m, full_check=True)
report = {l["name"]: l for l in json.load(open(sys.argv[2]))["layers"]}
g = m.graph
made = {o: n for n in g.node for o in n.output}
inits = {t.name: nh.to_array(t) for t in g.initializer}
bits = []
for n in g.node:
    if n.op_type not in ("Conv", "Gemm"):
        continue
    chain, v = [], n.input[0]
    for op in ("Mul", "Clip", "Round", "Div"):
        p = made.get(v)
        if p is None or p.op_type != op:
            break
        chain.append(p)
        v = p.input[0]
    if len(chain) < 4:
        continue
    mul, clip, _, div = chain
    scale = float(inits[mul.input[1]])
    assert scale == float(inits[div.input[1]]) and scale > 0
    lo, hi = float(inits[clip.input[1]]), float(inits[clip.input[2]])
    b = math.log2(hi - lo + 1)
    assert lo <= 0 <= hi and b == int(b), (lo, hi)
    bits.append(int(b))
quantized = [l for l in report.values() if l["quantized"]]
assert len(bits) == len(quantized) == 9, (bits, len(quantized))
assert sorted(bits) == sorted(l["act_bits"] for l in quantized), bits
assert all(1 <= b <= 8 for b in bits), bits
assert "mean_act_bits" in json.load(open(sys.argv[2]))["totals"]
PY
"$BIN" info "$TMP/bp.onnx" >"$TMP/info" 2>&1 || fail "info: $(cat "$TMP/info")"
runtimes_agree "$TMP/bp.onnx" 16
"$BIN" finetune "$TMP/bp.onnx" -o "$TMP/ft.onnx" --iters 2 --batch 16 >"$TMP/out" 2>&1 ||
  fail "finetune through the quantizers: $(cat "$TMP/out")"

# the workspace: the student gets the quantizers, undo takes them out
cat >"$TMP/undo.lua" <<LUA
local r = bd.bitprune{target_bits=4, activations=true, steps=2, batch=32, finetune_epochs=0,
                      eval_n=64}
assert(r.act_mean >= 1 and r.bitops > 0, "no input bits in the result")
for _, l in ipairs(r.layers) do assert(l.act_bits >= 1, l.name) end
bd.save("$TMP/with.onnx", {decoded=true})
assert(bd.undo() == "bitprune")
bd.save("$TMP/without.onnx", {decoded=true})
LUA
"$BIN" run --model "$M" "$TMP/undo.lua" >"$TMP/out" 2>&1 || fail "bd.bitprune: $(cat "$TMP/out")"
/usr/bin/python3 - "$TMP/with.onnx" "$TMP/without.onnx" "$M" <<'PY' || fail "undo of the quantizers"
import sys
import onnx
rounds = [sum(n.op_type == "Round" for n in onnx.load(p).graph.node) for p in sys.argv[1:]]
assert rounds == [9, 0, 0], rounds
assert len(onnx.load(sys.argv[2]).graph.node) == len(onnx.load(sys.argv[3]).graph.node)
PY

# bad input: a range outside 1..16, the activations' settings without them
"$BIN" bitprune "$M" -o "$TMP/x.onnx" --activations --act-max-bits 17 "${RUN[@]}" \
  >"$TMP/out" 2>&1
[ $? -eq 2 ] || fail "--act-max-bits 17 is not a usage error: $(cat "$TMP/out")"
grep -q 'act-max-bits' "$TMP/out" || fail "no message naming --act-max-bits: $(cat "$TMP/out")"
"$BIN" bitprune "$M" -o "$TMP/x.onnx" --act-max-bits 6 "${RUN[@]}" >"$TMP/out" 2>&1 &&
  fail "--act-max-bits without --activations ran"
grep -q 'activations=1' "$TMP/out" || fail "no message asking for activations: $(cat "$TMP/out")"
[ -e "$TMP/x.onnx" ] && fail "a refused run wrote its output"
finish
