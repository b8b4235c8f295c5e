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
GLOBAL_OPTS=${BD_TUNE_GLOBAL_OPTS:-loss=ce bn=train bias=1}
out=$TMP/section.md
# One session per model and regime: the 'eval' lines give, in order, the
# top-1 after quantization, after layer-wise tuning and after global tuning.
cat >"$TMP/session.txt" <<EOF2
data calib fmnist:train n=$CALIB
regime REGIME
quantize all
eval
undo
quantize all tune=$LAYER
eval
finetune iters=$GLOBAL step=$((GLOBAL * 2 / 3)) $GLOBAL_OPTS
eval
size
EOF2
{
  echo "Command: \`./bd bench finetune\` ($(date -u +%Y-%m-%d)). Each row is one \`bitdown repl MODEL\` session (one thread) on the script below, REGIME being small or large: the three \`eval\` lines give the top-1 after quantization, after layer-wise tuning ($LAYER steps of 64 images per layer, by distillation, right after each layer is quantized) and after global tuning ($GLOBAL steps of 64 images, lr 0.01 then 0.001; $GLOBAL_OPTS), on the 10 000 test images. Calibration: $CALIB images of the training set; tuning draws its batches from all 60 000; seed 0."
  echo
  echo '```'
  cat "$TMP/session.txt"
  echo '```'
  echo
  echo "| model | regime | ratio | teacher | quantized | layer-wise | global | gap to teacher | recovered |"
  echo "|---|---|---:|---:|---:|---:|---:|---:|---:|"
} >"$out"
# The four sessions are independent: they run two at a time, one thread
# each (the thread count changes only the order of float sums); the throughput
# comparison below runs alone, after them.
session() { # model regime
  { echo "threads 1"; sed "s/REGIME/$2/" "$TMP/session.txt"; } |
    "$BIN" repl examples/fmnist/$1.onnx --no-checkpoint >"$TMP/$1.$2.txt"
}
session resnet_bn small & session mobilenet_bn small & wait
session resnet_bn large & session mobilenet_bn large & wait
for m in resnet_bn mobilenet_bn; do
  for regime in small large; do
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
    sed -n '/^fp32 /,/^ratio /p' "$TMP/$m.$regime.txt" | tail -n +2 | sed "s/^/$m $regime: /" >>"$TMP/sizes.txt"
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
