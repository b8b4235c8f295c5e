#!/usr/bin/env bash
# bench/quantize: what activation-aware PQ gives on the Fashion-MNIST
# examples with the paper's small regime, against the weight-only baseline
# (plain k-means on weights, G = I), in the same run: top-1 before and after,
# compression ratio, and every layer's relative output error. Two weight-only
# numbers per layer: fitted on the same inputs as the activation-aware fit
# (--compare: the objectives alone differ), and a whole weight-only run.
set -euo pipefail
BIN=$1
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cd "$ROOT"
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
out=$TMP/section.md
{
  echo "Command: \`./bd bench quantize\` ($(date -u +%Y-%m-%d)). Each model: \`bitdown quantize MODEL -o OUT --regime small --compare --eval fmnist:test --report act.json\` and the same with \`--objective weight\`; 1024 calibration images from the training set, seed 0, no fine-tuning."
} >"$out"
for m in resnet_bn mobilenet_bn; do
  "$BIN" quantize examples/fmnist/$m.onnx -o "$TMP/act.onnx" --regime small --compare \
    --eval fmnist:test --report "$TMP/act.json" >"$TMP/act.txt"
  "$BIN" quantize examples/fmnist/$m.onnx -o "$TMP/w.onnx" --regime small --objective weight \
    --eval fmnist:test --report "$TMP/w.json" >"$TMP/w.txt"
  /usr/bin/python3 - "$m" "$TMP/act.json" "$TMP/w.json" "$TMP/act.onnx" >>"$out" <<'PY'
import json, os, sys
name, act, weight, path = sys.argv[1], json.load(open(sys.argv[2])), json.load(open(sys.argv[3])), sys.argv[4]
wl = {l["name"]: l for l in weight["layers"]}
t, tw = act["totals"], weight["totals"]
print()
print("### %s" % name)
print()
print("| | top-1 | top-5 |")
print("|---|---:|---:|")
print("| teacher (fp32) | %.2f%% | %.2f%% |" % (t["teacher"]["top1"], t["teacher"]["top5"]))
print("| activation-aware | %.2f%% | %.2f%% |" % (t["student"]["top1"], t["student"]["top5"]))
print("| weight-only | %.2f%% | %.2f%% |" % (tw["student"]["top1"], tw["student"]["top5"]))
print()
print("Size: %.4f MB fp32 -> %.4f MB (codes %.4f + codebooks %.4f + fp32 rest %.4f), ratio %.2fx; the file is %d bytes."
      % (t["fp32_bytes"] / 2**20, t["compressed_bytes"] / 2**20, t["code_bytes"] / 2**20,
         t["codebook_bytes"] / 2**20, t["other_fp32_bytes"] / 2**20, t["ratio"], os.path.getsize(path)))
print()
print("| layer | d | k | bits/w | rel. error, act | weight-only, same inputs | weight-only run | act lower |")
print("|---|---:|---:|---:|---:|---:|---:|:---:|")
better = True
for l in act["layers"]:
    if not l["quantized"]:
        print("| %s | fp32 | | | | | | |" % l["name"])
        continue
    same = l.get("rel_error_other_objective")
    run = wl[l["name"]]["rel_error"]
    ok = l["rel_error"] < same
    better &= ok
    print("| %s | %d | %d | %.3f | %.4f | %.4f | %.4f | %s |" % (l["name"], l["d"], l["k"],
          l["bits_per_weight"], l["rel_error"], same, run, "yes" if ok else "**no**"))
print()
print("Activation-aware error lower than weight-only on every layer (same inputs): %s. "
      "Top-1 at least as high: %s." % ("yes" if better else "**no**",
      "yes" if t["student"]["top1"] >= tw["student"]["top1"] else "**no**"))
PY
done
cat "$out"
"$ROOT/bench/record.sh" quantize "$out"
