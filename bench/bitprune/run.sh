#!/usr/bin/env bash
# bench/bitprune: BitPruning on both Fashion-MNIST examples, and what the
# other ways of storing the model give at the size it reached.
#
# For each model: the teacher's top-1; `bitdown bitprune --target-bits B`
# with cost memory and ops, granularity layer and channel (top-1, mean weight
# bits memory-weighted and unweighted, size, ratio, the learned bits per
# layer); then, at the size the memory/layer run reached:
#   PTQ  uniform int of the nearest bit length, fitted after training
#        (`quantize --regime intN --quantize-first`, the default feedback fit);
#   QAT  the same after as many training epochs with intN fake quantization
#        (`train --quant-noise intN:p=1`, then the weight fit it trained for);
#   PQ   `--policy size_budget:formats=pq` at that size, then global
#        fine-tuning of the codebooks;
#   any  the same with every format a candidate (`formats=all`).
# Every training gets the same data and epochs: BitPruning's learning and
# fine-tuning epochs, QAT's epochs, PQ's fine-tuning steps.
set -euo pipefail
BIN=$1
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cd "$ROOT"
THREADS=${BD_BENCH_THREADS:-2}
MODELS=${BD_BP_MODELS:-"resnet_bn mobilenet_bn"}
TARGET=${BD_BP_TARGET:-4}
EPOCHS=${BD_BP_EPOCHS:-1}  # learning epochs; as many again of fine-tuning at the rounded bits
LR=${BD_BP_LR:-0.01}
CONFIGS=${BD_BP_CONFIGS:-"memory:layer memory:channel ops:layer ops:channel"}
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
unset OPENBLAS_CORETYPE
out=$TMP/section.md
res=$TMP/results.jsonl
: >"$res"

common=(--data fmnist:train --eval fmnist:test --threads "$THREADS" --seed 0)
json() { /usr/bin/python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); print(eval(sys.argv[2], {"d": d}))' "$@"; }
record() { # model method config report.json
  /usr/bin/python3 - "$@" >>"$res" <<'PY'
import json, sys
m, method, config, path = sys.argv[1:5]
d = json.load(open(path))
t = d["totals"]
layers = [{"name": l["name"], "bits": l.get("bits_per_weight"), "params": l.get("params")}
          for l in d.get("layers", []) if l.get("format") == "int" or l.get("bits_per_weight")]
print(json.dumps({"model": m, "method": method, "config": config,
                  "top1": t.get("student", {}).get("top1"), "teacher": t.get("teacher", {}).get("top1"),
                  "mean_bits": t.get("mean_bits"), "bytes": t["compressed_bytes"],
                  "fp32": t["fp32_bytes"], "layers": d.get("layers", [])}))
PY
}

for m in $MODELS; do
  model=examples/fmnist/$m.onnx
  for c in $CONFIGS; do
    cost=${c%%:*} gran=${c##*:}
    "$BIN" bitprune "$model" -o "$TMP/bp.onnx" "${common[@]}" --target-bits "$TARGET" \
      --cost "$cost" --granularity "$gran" --epochs "$EPOCHS" --finetune-epochs "$EPOCHS" \
      --lr "$LR" --report "$TMP/bp.json" >"$TMP/bp.log"
    record "$m" bitprune "$c" "$TMP/bp.json"
    if [ "$c" = memory:layer ]; then cp "$TMP/bp.json" "$TMP/ref.json"; fi
  done
  # the others at the size of memory:layer
  bytes=$(json "$TMP/ref.json" 'd["totals"]["compressed_bytes"]')
  mb=$(/usr/bin/python3 -c "print($bytes / 2**20)")
  nb=$(json "$TMP/ref.json" 'max(1, min(16, int(d["totals"]["mean_bits"] + 0.5)))')
  "$BIN" quantize "$model" -o "$TMP/ptq.onnx" --calib fmnist:train --regime "int$nb" \
    --quantize-first --eval fmnist:test --threads "$THREADS" --report "$TMP/ptq.json" >/dev/null
  record "$m" "PTQ int$nb" "" "$TMP/ptq.json"
  "$BIN" train "$model" -o "$TMP/qat_f.onnx" --data fmnist:train --eval none --threads "$THREADS" \
    --seed 0 --epochs $((2 * EPOCHS)) --lr "$LR" --quant-noise "int$nb:p=1" \
    --checkpoint "$TMP/ckpt" >/dev/null
  "$BIN" quantize "$TMP/qat_f.onnx" -o "$TMP/qat.onnx" --calib fmnist:train --regime "int$nb" \
    --objective weight --quantize-first --eval fmnist:test --threads "$THREADS" \
    --report "$TMP/qat.json" >/dev/null
  record "$m" "QAT int$nb" "" "$TMP/qat.json"
  tune=$((2 * EPOCHS * 60000 / 128))
  for f in pq all; do
    "$BIN" quantize "$model" -o "$TMP/sb.onnx" --calib fmnist:train --threads "$THREADS" \
      --policy "size_budget:target_mb=$mb,formats=$f,first=true" >/dev/null
    "$BIN" finetune "$TMP/sb.onnx" -o "$TMP/sbt.onnx" --data fmnist:train --eval fmnist:test \
      --iters "$tune" --threads "$THREADS" --report "$TMP/sb.json" >/dev/null
    record "$m" "size_budget $f" "" "$TMP/sb.json"
  done
done

{
  echo "Command: \`BD_BP_TARGET=$TARGET BD_BP_EPOCHS=$EPOCHS BD_BP_LR=$LR ./bd bench bitprune\` ($(date -u +%Y-%m-%d), $THREADS threads). Top-1 (%) on the 10 000 Fashion-MNIST test images. BitPruning: \`bitdown bitprune MODEL --target-bits $TARGET --cost C --granularity G --epochs $EPOCHS --finetune-epochs $EPOCHS --lr $LR --seed 0\` ($EPOCHS epoch(s) learning the bit lengths, $EPOCHS at the rounded bits). At the size BitPruning reached with memory cost per layer: PTQ, uniform int of the nearest bit length (\`quantize --regime intN --quantize-first\`); QAT, \`train --quant-noise intN:p=1 --epochs $((2 * EPOCHS))\` then \`quantize --regime intN --objective weight\`; size_budget (\`--policy size_budget:target_mb=S,formats=pq|all,first=true\`), then \`finetune\` for as many steps as BitPruning's epochs. *mean bits*: memory-weighted mean code bits per weight of the quantized layers (*layers*: unweighted mean over layers). Bits per layer are drawn in [bitprune_bits.svg](bitprune_bits.svg)."
  echo
  /usr/bin/python3 - "$res" "$ROOT/docs/bitprune_bits.svg" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
print("| model | method | top-1 | teacher | Δ | mean bits | layers | size (bytes) | ratio |")
print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
for r in rows:
    ls = [l for l in r["layers"] if l.get("bits_per_weight")]
    un = sum(l["bits_per_weight"] for l in ls) / len(ls) if ls else float("nan")
    name = r["method"] + (" " + r["config"] if r["config"] else "")
    t, s = r["teacher"], r["top1"]
    print("| %s | %s | %.2f | %.2f | %+.2f | %.3f | %.2f | %d | %.1fx |" % (
        r["model"], name, s, t, s - t, r["mean_bits"] or float("nan"), un, r["bytes"],
        r["fp32"] / r["bytes"]))
print()
print("Learned bits per layer (BitPruning; per channel: the layer's mean):")
print()
for r in rows:
    if r["method"] != "bitprune":
        continue
    print("* %s %s: %s" % (r["model"], r["config"], ", ".join(
        "%s %.2f" % (l["name"], l["bits_per_weight"]) for l in r["layers"] if l.get("bits_per_weight"))))
# the SVG: one panel per model, a polyline of bits per layer for each config
W, H, PAD = 520, 240, 40
models = list(dict.fromkeys(r["model"] for r in rows))
colors = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e"]
parts = []
for mi, m in enumerate(models):
    x0 = mi * W
    runs = [r for r in rows if r["model"] == m and r["method"] == "bitprune"]
    if not runs:
        continue
    names = [l["name"] for l in runs[0]["layers"] if l.get("bits_per_weight")]
    n = max(1, len(names) - 1)
    top = 9
    def px(i): return x0 + PAD + i * (W - 2 * PAD) / n
    def py(b): return PAD + (H - 2 * PAD) * (1 - b / top)
    parts.append('<text x="%d" y="20" font-size="13">%s: learned bits per layer</text>' % (x0 + PAD, m))
    for b in range(0, top + 1, 2):
        parts.append('<line x1="%d" x2="%d" y1="%.1f" y2="%.1f" stroke="#ddd"/><text x="%d" y="%.1f" font-size="10" text-anchor="end">%d</text>' % (x0 + PAD, x0 + W - PAD, py(b), py(b), x0 + PAD - 4, py(b) + 3, b))
    for ci, r in enumerate(runs):
        bits = [l["bits_per_weight"] for l in r["layers"] if l.get("bits_per_weight")]
        pts = " ".join("%.1f,%.1f" % (px(i), py(b)) for i, b in enumerate(bits))
        parts.append('<polyline fill="none" stroke="%s" stroke-width="1.5" points="%s"/>' % (colors[ci % 5], pts))
        parts.append('<text x="%d" y="%d" font-size="10" fill="%s">%s (%.2f bits, %.2f%%)</text>' % (x0 + PAD + 4, H - PAD + 24 + 11 * ci, colors[ci % 5], r["config"], r["mean_bits"], r["top1"]))
with open(sys.argv[2], "w") as f:
    f.write('<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" font-family="sans-serif">\n' % (W * len(models), H + 60))
    f.write("\n".join(parts))
    f.write("\n</svg>\n")
PY
} >"$out"
cat "$out"
"$ROOT/bench/record.sh" bitprune "$out"
