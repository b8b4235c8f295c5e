#!/usr/bin/env bash
# bench/infer: forward throughput of bitdown against ONNX Runtime (npm
# onnxruntime-node) on the same ONNX files, 2 threads each, in the same run.
# The two alternate, three rounds, and each keeps its best median, so a
# burst of load on this shared machine hurts neither side alone.
set -euo pipefail
BIN=$1
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cd "$ROOT"
THREADS=${BD_BENCH_THREADS:-2}
ROUNDS=${BD_BENCH_ROUNDS:-3}
export NODE_PATH=$ROOT/.deps/node_modules
# This machine's environment pins OpenBLAS to its AVX2 (Haswell) kernels;
# left alone, bitdown picks the AVX-512 ones itself (docs/architecture.md).
# The benchmark measures bitdown as it runs by default on this CPU.
if [ -n "${OPENBLAS_CORETYPE:-}" ]; then
  echo "note: unsetting OPENBLAS_CORETYPE=$OPENBLAS_CORETYPE for bitdown" >&2
  unset OPENBLAS_CORETYPE
fi
MODELS=examples/imagenet/models
if [ ! -f $MODELS/resnet50.onnx ] || [ ! -f $MODELS/resnet18.onnx ]; then
  if /usr/bin/python3 -c 'import torch, torchvision' 2>/dev/null; then
    /usr/bin/python3 examples/imagenet/export.py resnet18 resnet50 >/dev/null
  else
    echo "PyTorch (python3-torch) is missing: only the Fashion-MNIST rows run" >&2
  fi
fi
rows=("examples/fmnist/resnet_bn.onnx 256 20")
for m in resnet18 resnet50; do
  [ -f $MODELS/$m.onnx ] && rows+=("$MODELS/$m.onnx 1 20" "$MODELS/$m.onnx 16 4")
done
out=$(mktemp)
{
  echo "Command: \`./bd bench infer\` ($(date -u +%Y-%m-%d), $(nproc) cores: $(lscpu | sed -n 's/^Model name: *//p'), $THREADS threads each, best of $ROUNDS rounds of the median of N passes)."
  echo
  echo "| model | batch | bitdown img/s | ONNX Runtime img/s | ratio |"
  echo "|---|---:|---:|---:|---:|"
} >"$out"
printf '%-40s %6s %14s %14s %7s\n' model batch bitdown onnxruntime ratio
for row in "${rows[@]}"; do
  read -r model batch iters <<<"$row"
  best_bd=0 best_ort=0
  for ((r = 0; r < ROUNDS; r++)); do
    bd=$("$BIN" bench "$model" --batch "$batch" --threads "$THREADS" --iters "$iters" |
      sed -n 's/.*passes: \([0-9.]*\) images\/s.*/\1/p')
    ort=$(node bench/ort_bench.js "$model" "$batch" "$iters" "$THREADS" | cut -d' ' -f1)
    best_bd=$(echo "$bd $best_bd" | awk '{print ($1 > $2) ? $1 : $2}')
    best_ort=$(echo "$ort $best_ort" | awk '{print ($1 > $2) ? $1 : $2}')
  done
  ratio=$(echo "$best_bd $best_ort" | awk '{printf "%.2f", $1 / $2}')
  printf '%-40s %6s %14s %14s %7s\n' "$model" "$batch" "$best_bd" "$best_ort" "$ratio"
  echo "| $(basename "$model") | $batch | $best_bd | $best_ort | $ratio |" >>"$out"
done
"$ROOT/bench/record.sh" infer "$out"
rm -f "$out"
