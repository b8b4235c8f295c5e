#!/usr/bin/env bash
# bench/finetune: what fine-tuning recovers on the Fashion-MNIST examples
# (top-1 of the teacher, after quantization, after layer-wise tuning, after
# global tuning; small and large regimes), and training throughput against
# PyTorch on the CPU (forward + backward, batch 128, same threads), in the
# same run.
set -euo pipefail
BIN=$1
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cd "$ROOT"
THREADS=${BD_BENCH_THREADS:-2}
LAYER=${BD_TUNE_LAYER:-200}      # layer-wise steps per layer
GLOBAL=${BD_TUNE_GLOBAL:-2000}   # global steps
CALIB=${BD_CALIB_N:-4096}
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
# the machine's environment pins OpenBLAS's AVX2 kernels; bitdown picks its own
unset OPENBLAS_CORETYPE
out=$TMP/section.md
cat >"$out" <<EOF2
Command: \`./bd bench finetune\` ($(date -u +%Y-%m-%d), $THREADS threads). Each row is one \`bitdown repl MODEL\` session on the script below; top-1 on the 10 000 test images; calibration and tuning images from the training set ($CALIB), seed 0.

\`\`\`
data calib fmnist:train n=$CALIB
regime REGIME
quantize all                      # -> after quantization
undo
quantize all tune=$LAYER            # -> after layer-wise tuning ($LAYER steps of 64 images per layer)
finetune iters=$GLOBAL step=$((GLOBAL * 2 / 3))     # -> after global tuning (KL to the teacher, lr 0.01 then 0.001)
\`\`\`

| model | regime | ratio | teacher | quantized | layer-wise | global | gap to teacher | recovered |
|---|---|---:|---:|---:|---:|---:|---:|---:|
EOF2
for m in resnet_bn mobilenet_bn; do
  for regime in small large; do
    printf 'data calib fmnist:train n=%s\nregime %s\nquantize all\neval\nundo\nquantize all tune=%s\neval\nfinetune iters=%s step=%s\neval\nsize\n' \
      "$CALIB" "$regime" "$LAYER" "$GLOBAL" "$((GLOBAL * 2 / 3))" |
      "$BIN" repl examples/fmnist/$m.onnx --no-checkpoint >"$TMP/$m.$regime.txt"
    /usr/bin/python3 - "$m" "$regime" "$TMP/$m.$regime.txt" >>"$out" <<'PY'
import re, sys
name, regime, text = sys.argv[1], sys.argv[2], open(sys.argv[3]).read()
teacher = float(re.search(r"^teacher top1 ([0-9.]+)%", text, re.M).group(1))
student = [float(x) for x in re.findall(r"^student top1 ([0-9.]+)%", text, re.M)]
ratio = re.findall(r"ratio ([0-9.]+)x", text)[-1]
q, lw, gl = student
lost = teacher - q
rec = (gl - q) / lost * 100 if lost > 0 else 100
print("| %s | %s | %sx | %.2f%% | %.2f%% | %.2f%% | %.2f%% | %.2f | %.0f%% |"
      % (name, regime, ratio, teacher, q, lw, gl, teacher - gl, rec))
PY
    grep -E '^size ' "$TMP/$m.$regime.txt" | tail -1 | sed "s/^/    $m $regime: /" >>"$TMP/sizes.txt"
  done
done
{
  echo
  echo "Targets: the small regime ends within 1.0 point of the teacher; the large regime recovers at least half of what quantization lost. The split of each final size (codes, fp16 codebooks, fp32 rest):"
  echo
  echo '```'
  cat "$TMP/sizes.txt"
  echo '```'
  echo
  echo "Training throughput, forward + backward, BatchNorm in train mode, batch 128, $THREADS threads: \`bitdown bench MODEL --train --batch 128\` against \`bench/finetune/torch_train.py\` (Debian's PyTorch), alternating, best of 3 rounds of the median of 10 passes."
  echo
  echo "| model | bitdown img/s | PyTorch img/s | ratio |"
  echo "|---|---:|---:|---:|"
} >>"$out"
for m in resnet mobilenet; do
  best_bd=0 best_pt=0
  for r in 1 2 3; do
    bd=$("$BIN" bench examples/fmnist/${m}_bn.onnx --train --batch 128 --iters 10 --threads "$THREADS" |
      sed -n 's/.*passes: \([0-9.]*\) images\/s.*/\1/p')
    pt=$(/usr/bin/python3 bench/finetune/torch_train.py $m 128 10 "$THREADS" | cut -d' ' -f1)
    best_bd=$(echo "$bd $best_bd" | awk '{print ($1 > $2) ? $1 : $2}')
    best_pt=$(echo "$pt $best_pt" | awk '{print ($1 > $2) ? $1 : $2}')
  done
  echo "| ${m}_bn | $best_bd | $best_pt | $(echo "$best_bd $best_pt" | awk '{printf "%.2f", $1 / $2}') |" >>"$out"
done
cat "$out"
"$ROOT/bench/record.sh" finetune "$out"
