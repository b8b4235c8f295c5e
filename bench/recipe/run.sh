#!/usr/bin/env bash
# bench/recipe: the trainer against PyTorch on the same recipe. Both
# Fashion-MNIST examples are trained from scratch by `bitdown train` with
# the recipe of examples/fmnist/train.py (batch 128, SGD with Nesterov
# momentum, one-cycle to the peak lr over 25 % of the steps, div 10, final
# div 100, weight decay on weights only, crop with 2 pixels of padding and
# flips); their top-1 on the 10 000 test images is set against the top-1
# PyTorch reached with that script (examples/fmnist/fixtures/NAME.json).
set -euo pipefail
BIN=$1
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cd "$ROOT"
THREADS=${BD_BENCH_THREADS:-2}
SEED=${BD_RECIPE_SEED:-20240601}
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
unset OPENBLAS_CORETYPE
out=$TMP/section.md
{
  echo "Command: \`./bd bench recipe\` ($(date -u +%Y-%m-%d)). From scratch (\`--init scratch --seed $SEED\`), $THREADS threads, with train.py's recipe: \`bitdown train MODEL --init scratch --epochs E --batch 128 --lr LR --wd WD --nesterov --schedule onecycle --warmup 0.25 --div 10 --final-div 100 --augment crop=2,flip\`. PyTorch: the top-1 recorded by examples/fmnist/train.py (torch 1.13, the same recipe, its own seed)."
  echo
  echo "| model | epochs | lr | wd | PyTorch top-1 | bitdown top-1 | difference | bitdown s/epoch |"
  echo "|---|---:|---:|---:|---:|---:|---:|---:|"
} >"$out"
recipe() { # name epochs lr wd
  "$BIN" train "examples/fmnist/$1.onnx" -o "$TMP/$1.onnx" --init scratch --epochs "$2" \
    --batch 128 --lr "$3" --wd "$4" --nesterov --schedule onecycle --warmup 0.25 --div 10 \
    --final-div 100 --augment crop=2,flip --seed "$SEED" --threads "$THREADS" \
    --checkpoint "$TMP/ckpt" >"$TMP/$1.log"
  local torch ours secs
  torch=$(sed -n 's/.*"top1": \([0-9.]*\).*/\1/p' "examples/fmnist/fixtures/$1.json")
  ours=$(sed -n 's/.*eval top1 \([0-9.]*\)%.*/\1/p' "$TMP/$1.log" | tail -1)
  secs=$(sed -n 's/.*, \([0-9.]*\) s$/\1/p' "$TMP/$1.log" | awk '{ s += $1 } END { printf "%.0f", s / NR }')
  echo "| $1 | $2 | $3 | $4 | $torch | $ours | $(echo "$ours $torch" | awk '{printf "%+.2f", $1 - $2}') | $secs |" >>"$out"
}
recipe resnet_bn 15 0.2 5e-4
recipe mobilenet_bn 6 0.2 4e-5
{
  echo
  echo "Target: the ResNet within 0.5 point of PyTorch's top-1."
} >>"$out"
cat "$out"
"$ROOT/bench/record.sh" recipe "$out"
