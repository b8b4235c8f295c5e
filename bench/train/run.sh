#!/usr/bin/env bash
# bench/train: training throughput of `bitdown train` (forward, backward and
# the SGD update, batch 128, data read from Fashion-MNIST, no augmentation)
# against PyTorch's same step (torch_step.py, Debian's python3-torch), on the
# same threads, in the same run; and the cost of Quant-Noise (pq block drop,
# pq-centroid, int8, p = 0.1) against training without it.
set -euo pipefail
BIN=$1
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cd "$ROOT"
THREADS=${BD_BENCH_THREADS:-2}
STEPS=${BD_TRAIN_STEPS:-30}
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
unset OPENBLAS_CORETYPE
out=$TMP/section.md
rate() { # model [noise]: images/s of one bitdown train run
  "$BIN" train "examples/fmnist/$1.onnx" -o "$TMP/t.onnx" --steps "$STEPS" --batch 128 \
    --augment none --eval none --lr 0.01 --threads "$THREADS" ${2:+--quant-noise "$2"} 2>/dev/null |
    sed -n 's/.*, \([0-9.]*\) images\/s$/\1/p'
}
best() { awk '{ if ($1 > b) b = $1 } END { printf "%.1f", b }'; }
{
  echo "Command: \`./bd bench train\` ($(date -u +%Y-%m-%d)). Training throughput, images/s, batch 128, $THREADS threads, BatchNorm in train mode: \`bitdown train MODEL --steps $STEPS --batch 128 --augment none --eval none\` (its images/s: data, forward, backward, update) against \`bench/train/torch_step.py\` (the same step in PyTorch: batch indexed from the same images, forward, backward, SGD with momentum and decay, median of $STEPS steps), alternating, best of 3 rounds. Quant-Noise columns: the same bitdown run with \`--quant-noise KIND:p=0.1\` (regime small for PQ)."
  echo
  echo "| model | PyTorch | bitdown | ratio | pq | pq-centroid | int8 | slowest noise / none |"
  echo "|---|---:|---:|---:|---:|---:|---:|---:|"
} >"$out"
for m in resnet mobilenet; do
  : >"$TMP/pt" ; : >"$TMP/bd"; : >"$TMP/pq"; : >"$TMP/pc"; : >"$TMP/i8"
  for r in 1 2 3; do
    /usr/bin/python3 bench/train/torch_step.py $m 128 "$STEPS" "$THREADS" | cut -d' ' -f1 >>"$TMP/pt"
    rate ${m}_bn >>"$TMP/bd"
    rate ${m}_bn pq:p=0.1 >>"$TMP/pq"
    rate ${m}_bn pq-centroid:p=0.1 >>"$TMP/pc"
    rate ${m}_bn int8:p=0.1 >>"$TMP/i8"
  done
  pt=$(best <"$TMP/pt") bd=$(best <"$TMP/bd") pq=$(best <"$TMP/pq") pc=$(best <"$TMP/pc") i8=$(best <"$TMP/i8")
  echo "| ${m}_bn | $pt | $bd | $(echo "$bd $pt" | awk '{printf "%.2f", $1 / $2}') | $pq | $pc | $i8 | $(echo "$bd $pq $pc $i8" | awk '{m = $2; if ($3 < m) m = $3; if ($4 < m) m = $4; printf "%.2f", m / $1}') |" >>"$out"
done
{
  echo
  echo "Targets: bitdown at least 0.9x PyTorch; with noise on, within 10 % of without (the last column at least 0.90)."
} >>"$out"
cat "$out"
"$ROOT/bench/record.sh" train "$out"
