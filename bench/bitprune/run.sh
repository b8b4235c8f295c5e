#!/usr/bin/env bash
# bench/bitprune: BitPruning on both Fashion-MNIST examples, and what the
# other ways of storing the model give at the size it reached.
#
# For each model, lua/policies/bits_compare.lua (one run): the teacher's
# top-1; BitPruning with memory cost per layer; then, at the size it
# reached, uniform int of the nearest bit length after training (PTQ),
# the same trained with that grid's fake quantization (QAT), and
# size_budget's plans with PQ or every format, fine-tuned. Then
# `bitdown bitprune` with the other three settings (memory cost per
# channel, ops cost per layer and per channel), and with the headline
# setting (memory cost per layer) learning the activations' bit lengths
# too (--activations; BD_BP_ACT_CONFIGS). Every method gets the same
# training: STEPS steps of 128 images to learn, as many at the rounded bits.
set -euo pipefail
BIN=$1
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cd "$ROOT"
THREADS=${BD_BENCH_THREADS:-2}
MODELS=${BD_BP_MODELS:-"resnet_bn mobilenet_bn"}
TARGET=${BD_BP_TARGET:-4}
STEPS=${BD_BP_STEPS:-150}  # learning steps; as many again at the rounded bits
LR=${BD_BP_LR:-0.01}
CONFIGS=${BD_BP_CONFIGS:-"memory:channel ops:layer ops:channel"}
ACT_CONFIGS=${BD_BP_ACT_CONFIGS:-"memory:layer"}  # these with --activations too
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
unset OPENBLAS_CORETYPE
out=$TMP/section.md
# BD_BP_RESULTS=FILE tabulates the lines of an earlier run instead of running
res=${BD_BP_RESULTS:-$TMP/results.txt}
[ -n "${BD_BP_RESULTS:-}" ] || { : >"$res"; run=1; }

for m in ${run:+$MODELS}; do
  model=examples/fmnist/$m.onnx
  # the policy's lines: "bits_compare: METHOD top1 X%, B bits per weight, S MB (Rx)",
  # the teacher's and BitPruning's bits per layer
  "$BIN" run --model "$model" lua/policies/bits_compare.lua "target_bits=$TARGET" \
    "steps=$STEPS" epochs=1 finetune_epochs=1 "lr=$LR" seed=1 "tune_iters=$((2 * STEPS))" \
    >"$TMP/compare.log" 2>&1 || { cat "$TMP/compare.log" >&2; exit 1; }
  teacher=$(sed -n 's/^bits_compare: teacher top1 \([0-9.]*\)%.*/\1/p' "$TMP/compare.log")
  sed -n 's/^bits_compare: \(.*[^ ]\) *top1 \([0-9.]*\)%, \([0-9.]*\) bits per weight, \([0-9.]*\) MB (\([0-9.]*\)x)$/\1|\2|\3|\4|\5/p' \
    "$TMP/compare.log" | while IFS='|' read -r method top1 bits mb ratio; do
    echo "row|$m|$method|$top1|$teacher|$bits|$mb|$ratio" >>"$res"
  done
  sed -n "s/^bits_compare: BitPruning's bits per layer: /layers|$m|memory\/layer|/p" \
    "$TMP/compare.log" >>"$res"
  # COST:GRAIN, or COST:GRAIN:act with --activations
  for c in $CONFIGS $(for a in $ACT_CONFIGS; do echo "$a:act"; done); do
    cost=${c%%:*} rest=${c#*:}
    gran=${rest%%:*} acts="" label=""
    [ "$rest" = "$gran" ] || { acts=--activations; label=+act; }
    "$BIN" bitprune "$model" -o "$TMP/bp.onnx" --data fmnist:train --eval fmnist:test \
      --threads "$THREADS" --seed 1 --target-bits "$TARGET" --cost "$cost" \
      --granularity "$gran" --epochs 1 --steps "$STEPS" --finetune-epochs 1 --lr "$LR" \
      $acts --report "$TMP/bp.json" >"$TMP/bp.log"
    /usr/bin/python3 - "$m" "$cost/$gran$label" "$TMP/bp.json" >>"$res" <<'PY'
import json, sys
m, config, path = sys.argv[1:]
d = json.load(open(path))
t = d["totals"]
acts = "%.2f" % t["mean_act_bits"] if "mean_act_bits" in t else "-"
print("row|%s|bitprune %s|%.2f|%.2f|%.3f|%.4f|%.1f|%s" % (m, config, t["student"]["top1"],
      t["teacher"]["top1"], t["mean_bits"], t["compressed_bytes"] / 2**20, t["ratio"], acts))
print("layers|%s|%s|%s" % (m, config, ", ".join("%s %.2f" % (l["name"], l["bits_per_weight"])
      for l in d["layers"] if l.get("format") == "int")))
if "mean_act_bits" in t:
    print("acts|%s|%s|%s" % (m, config, ", ".join("%s %d" % (l["name"], l["act_bits"])
          for l in d["layers"] if "act_bits" in l)))
PY
  done
done

{
  echo "Command: \`BD_BP_TARGET=$TARGET BD_BP_STEPS=$STEPS BD_BP_LR=$LR ./bd bench bitprune\` ($(date -u +%Y-%m-%d), $THREADS threads). Top-1 (%) on the 10 000 Fashion-MNIST test images. Each model: \`bitdown run --model M lua/policies/bits_compare.lua target_bits=$TARGET steps=$STEPS epochs=1 finetune_epochs=1 lr=$LR seed=1 tune_iters=$((2 * STEPS))\` (BitPruning with memory cost per layer: $STEPS steps of 128 images learning the bit lengths, $STEPS at the rounded bits; then at its size: PTQ, uniform int of the nearest bit length, every layer; QAT, $((2 * STEPS)) steps with that grid's fake quantization, then its weight fit; size_budget with PQ or every format as candidates, every layer, then $((2 * STEPS)) steps of codebook fine-tuning where PQ layers exist), then \`bitdown bitprune M --target-bits $TARGET --cost C --granularity G --epochs 1 --steps $STEPS --finetune-epochs 1 --lr $LR --seed 1\` for the other settings, and with \`--activations\` for ${ACT_CONFIGS// /, } (+act: each quantized layer's input learns its bit length too). *bits*: mean code bits per weight of the quantized layers, weighted by weights (the report's \`totals.mean_bits\`); *bits per layer*: the unweighted mean over BitPruning's layers; *activation bits*: the mean over the layers of their inputs' bits (the report's \`totals.mean_act_bits\`); the policy quantizes every layer in every method (the first conv too), \`bitdown bitprune\` keeps the first conv float (the plan's default). Bits per layer are drawn in [bitprune_bits.svg](bitprune_bits.svg)."
  echo
  /usr/bin/python3 - "$res" "$ROOT/docs/bitprune_bits.svg" <<'PY'
import sys
rows, layers, acts = [], [], []
for line in open(sys.argv[1]):
    f = line.rstrip("\n").split("|")
    if f[0] == "row":  # the policy's rows have no activation bits
        rows.append(f[1:8] + [f[8] if len(f) > 8 else "-"])
    elif f[0] in ("layers", "acts"):
        (layers if f[0] == "layers" else acts).append(
            (f[1], f[2], [(p.rsplit(" ", 1)[0], float(p.rsplit(" ", 1)[1]))
                          for p in f[3].split(", ") if p]))
per_layer = {(m, c): sum(b for _, b in ls) / len(ls) for m, c, ls in layers if ls}
print("| model | method | top-1 | teacher | Δ | bits | bits per layer | activation bits "
      "| size (MB) | ratio |")
print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
for m, method, top1, teacher, bits, mb, ratio, act_bits in rows:
    config = method.split(" ")[1] if method.startswith("bitprune ") else None
    unweighted = per_layer.get((m, config))
    print("| %s | %s | %s | %s | %+.2f | %s | %s | %s | %s | %sx |" % (m, method, top1, teacher,
          float(top1) - float(teacher), bits, "%.2f" % unweighted if unweighted else "-",
          act_bits, mb, ratio))
print()
print("Learned bits per layer (per channel: the layer's mean):")
print()
for m, config, ls in layers:
    print("* %s %s: %s" % (m, config, ", ".join("%s %.2f" % x for x in ls)))
if acts:
    print()
    print("Learned bits of each layer's input (+act):")
    print()
    for m, config, ls in acts:
        print("* %s %s: %s" % (m, config, ", ".join("%s %d" % x for x in ls)))
# the SVG: a panel per model, a line of bits per layer for each setting
W, H, PAD = 560, 260, 44
models = list(dict.fromkeys(m for m, _, _ in layers))
colors = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd"]
parts = []
for mi, m in enumerate(models):
    x0 = mi * W
    runs = [(c, ls) for mm, c, ls in layers if mm == m]
    n = max(1, max(len(ls) for _, ls in runs) - 1)
    def px(i): return x0 + PAD + i * (W - 2 * PAD) / n
    def py(b): return PAD + (H - 2 * PAD) * (1 - b / 9.0)
    parts.append('<text x="%d" y="20" font-size="13">%s: learned bits per layer (input to output)</text>' % (x0 + PAD, m))
    for b in range(0, 10, 2):
        parts.append('<line x1="%d" x2="%d" y1="%.1f" y2="%.1f" stroke="#ddd"/>' % (x0 + PAD, x0 + W - PAD, py(b), py(b)))
        parts.append('<text x="%d" y="%.1f" font-size="10" text-anchor="end">%d</text>' % (x0 + PAD - 4, py(b) + 3, b))
    for ci, (c, ls) in enumerate(runs):
        pts = " ".join("%.1f,%.1f" % (px(i), py(b)) for i, (_, b) in enumerate(ls))
        parts.append('<polyline fill="none" stroke="%s" stroke-width="1.5" points="%s"/>' % (colors[ci % 4], pts))
        parts.append('<text x="%d" y="%d" font-size="11" fill="%s">%s</text>' % (x0 + PAD + 4, H - PAD + 26 + 12 * ci, colors[ci % 4], c))
with open(sys.argv[2], "w") as f:
    f.write('<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" font-family="sans-serif">\n' % (W * max(1, len(models)), H + 40))
    f.write("\n".join(parts))
    f.write("\n</svg>\n")
PY
} >"$out"
cat "$out"
"$ROOT/bench/record.sh" bitprune "$out"
