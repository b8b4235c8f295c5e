#!/usr/bin/env bash
# bench/distributed: data-parallel runs under mpirun (docs/distributed.md).
# 1. Throughput of train and finetune on the Fashion-MNIST ResNet: one
#    process on every core against 2 ranks of one core each, same global
#    batch, in the same run.
# 2. Communication per training step, measured (rank 0's summed bytes and
#    collectives, from two runs that differ by one step) on ResNet-18 and
#    ResNet-50, and what it would cost on 8 GPUs over NVLink and over
#    100 Gb/s Ethernet.
set -euo pipefail
BIN=$1
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cd "$ROOT"
STEPS=${BD_DIST_STEPS:-40}
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
unset OPENBLAS_CORETYPE
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
MPI=(mpirun --oversubscribe)
M=examples/fmnist/resnet_bn.onnx
out=$TMP/section.md

ips() { sed -n 's/.* \([0-9.]*\) images\/s.*/\1/p' "$1" | tail -1; }

T=(--data fmnist:train --batch 128 --steps "$STEPS" --eval none)
"$BIN" quantize $M -o "$TMP/q.onnx" --calib-n 1024 >/dev/null 2>&1
F=(--data fmnist:train --batch 128 --iters "$STEPS" --bn train --bias)
declare -A R
for how in one two; do
  run=(); [ $how = two ] && run=("${MPI[@]}" -np 2)
  "${run[@]}" "$BIN" train $M -o "$TMP/t.onnx" "${T[@]}" >"$TMP/train.$how" 2>&1
  "${run[@]}" "$BIN" finetune "$TMP/q.onnx" -o "$TMP/f.onnx" "${F[@]}" >"$TMP/ft.$how" 2>&1
  R[train.$how]=$(ips "$TMP/train.$how")
  R[ft.$how]=$(ips "$TMP/ft.$how")
done
cores=$(nproc)
{
  echo "Command: \`./bd bench distributed\` ($(date -u +%Y-%m-%d), $cores cores). Fashion-MNIST ResNet (BatchNorm), global batch 128, $STEPS steps: one process on all $cores cores against \`mpirun -np 2\` (Open MPI binds each rank to one core), in the same run. train: every parameter, BatchNorm in train mode (statistics over the global batch); finetune: the codebooks of the compressed model, biases and BatchNorm (\`--bn train --bias\`)."
  echo
  echo "On one machine ranks and threads share the same cores: a rank runs the whole step on its share of the batch (what a process runs on one thread too: loading and augmenting the batch, the loss, the bookkeeping between layers), against which it adds a sum of the gradients (0.3 MB here) and of BatchNorm's statistics per step. Expect about 1x; ranks pay on more machines. (A first run of this benchmark, with a compiler running beside it, measured 1.5x: threads suffer more than ranks from a busy machine.)"
  echo
  echo "| command | 1 process, images/s | 2 ranks, images/s | 2 ranks / 1 process |"
  echo "|---|---:|---:|---:|"
  for c in train ft; do
    name=$([ $c = ft ] && echo finetune || echo train)
    /usr/bin/python3 -c "import sys; a, b = float(sys.argv[2]), float(sys.argv[3]); print(f'| {sys.argv[1]} | {a:.0f} | {b:.0f} | {b / a:.2f}x |')" \
      "$name" "${R[$c.one]}" "${R[$c.two]}"
  done
  echo
} >"$out"

# ---- communication per step ----
PHOTOS=$(/usr/bin/python3 -c 'import skimage, os; print(os.path.join(os.path.dirname(skimage.__file__), "data"))' 2>/dev/null || true)
mkdir -p "$TMP/photos/0" "$TMP/photos/1"
i=0
for p in astronaut coffee chelsea rocket; do
  [ -f "$PHOTOS/$p.png" ] && ln -s "$PHOTOS/$p.png" "$TMP/photos/$((i % 2))/$p.png" && i=$((i + 1))
done
PRE=(--resize 256 --crop 224 --mean 0.485,0.456,0.406 --std 0.229,0.224,0.225)
traffic() { # model steps -> "bytes calls"
  "${MPI[@]}" -np 2 "$BIN" train "$1" -o "$TMP/x.onnx" --data "dir:$TMP/photos" "${PRE[@]}" \
    --batch 2 --steps "$2" --eval none --augment none 2>&1 >/dev/null |
    sed -n 's/.*rank 0 summed \([0-9.]*\) MB .* in \([0-9]*\) collectives/\1 \2/p'
}
{
  echo "Communication per training step, measured: rank 0's bytes summed with the other rank and its collectives (\`bitdown\` says both at the end of a job), from runs of 1 and 2 steps (global batch 2, 224x224), their difference. Every trained parameter's gradient goes in one float32 sum per step; BatchNorm in train mode adds two sums of C doubles in its forward and one of 2C in its backward; the loss and hits one more. The time on 8 GPUs is a ring all-reduce's 2(N-1)/N times the bytes over the bus bandwidth, plus each collective's latency: NVLink at 150 GB/s (NCCL's all-reduce bus bandwidth on 8 V100 with NVLink, the paper's machines) and 10 us per collective; 100 Gb/s Ethernet at 12.5 GB/s (the line rate, so a lower bound) and 50 us. The forward and backward on the same GPUs take tens to hundreds of milliseconds per step at the paper's batch, so the sums cost little on NVLink and a large share on Ethernet unless they overlap the backward (bitdown sums after it). The ResNet-50 is \`examples/imagenet/export.py\`'s, whose export folds BatchNorm into the convolutions, so its steps have no BatchNorm sums; its 53 BatchNorms in train mode would add 159 collectives, about 1.6 ms on NVLink and 8 ms on Ethernet of latency."
  echo
  echo "| model | all parameters, fp32 MB | MB per step | collectives per step | 8 GPUs, NVLink | 8 GPUs, 100 Gb/s Ethernet |"
  echo "|---|---:|---:|---:|---:|---:|"
} >>"$out"
for m in "ResNet-18 ../shared/models/resnet18_bgd_small.onnx" "ResNet-50 examples/imagenet/models/resnet50.onnx"; do
  set -- $m
  [ -f "$2" ] && [ "$i" -ge 2 ] || { echo "| $1 | (model or photos missing) | | | | |" >>"$out"; continue; }
  a=$(traffic "$2" 1) b=$(traffic "$2" 2)
  params=$("$BIN" info "$2" | sed -n 's/^all parameters: \([0-9.]*\) MB.*/\1/p' | head -1)
  /usr/bin/python3 - "$1" "$a" "$b" "${params:-0}" >>"$out" <<'PY'
import sys
name, a, b, params = sys.argv[1], sys.argv[2].split(), sys.argv[3].split(), float(sys.argv[4])
mb = float(b[0]) - float(a[0]); calls = int(b[1]) - int(a[1])
n = 8
def t(bw, lat):
    return (2 * (n - 1) / n * mb * 1e6 / bw + calls * lat) * 1e3
print(f"| {name} | {params:.1f} | {mb:.1f} | {calls} | {t(150e9, 10e-6):.2f} ms | {t(12.5e9, 50e-6):.1f} ms |")
PY
done
cat "$out"
[ "${BD_NO_RECORD:-}" ] || bench/record.sh distributed "$out"
