#!/usr/bin/env bash
# bench/zoo: the 17 CNNs of torchvision's classification zoo (random
# weights, exported by examples/imagenet/export.py --zoo on demand), each
# side on THREADS threads in the same run:
#   inference, batch 1 and 16: `bitdown bench` against ONNX Runtime
#     (bench/ort_bench.js) on the same file;
#   training, batch 16: `bitdown bench --train` (forward and backward,
#     BatchNorm in train mode, every parameter's gradient) against
#     bench/finetune/torch_train.py (the same step in PyTorch).
# Inference passes: about a second's worth (passes, below), the same count
# for both sides. The two sides alternate, ROUNDS rounds, each keeping its
# best median; the geometric means of the ratios close the table.
# BD_ZOO_MODELS picks models.
set -euo pipefail
BIN=$1
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cd "$ROOT"
THREADS=${BD_BENCH_THREADS:-2}
ROUNDS=${BD_BENCH_ROUNDS:-2}
export NODE_PATH=$ROOT/.deps/node_modules
if [ -n "${OPENBLAS_CORETYPE:-}" ]; then
  echo "note: unsetting OPENBLAS_CORETYPE=$OPENBLAS_CORETYPE for bitdown" >&2
  unset OPENBLAS_CORETYPE
fi
DIR=examples/imagenet/models
ZOO=$(/usr/bin/python3 -c 'import sys; sys.path.insert(0, "examples/imagenet"); import export; print(" ".join(export.ZOO))')
MODELS=${BD_ZOO_MODELS:-$ZOO}
/usr/bin/python3 examples/imagenet/export.py --zoo >/dev/null

max() { echo "$1 $2" | awk '{print ($1 > $2) ? $1 : $2}'; }
bd_infer() { "$BIN" bench "$1" --batch "$2" --threads "$THREADS" --iters "$3" |
  sed -n 's/.*passes: \([0-9.]*\) images\/s.*/\1/p'; }
ort_infer() { node bench/ort_bench.js "$1" "$2" "$3" "$THREADS" | cut -d' ' -f1; }
bd_train() { "$BIN" bench "$1" --train --batch "$2" --threads "$THREADS" --iters "$3" |
  sed -n 's/.*passes: \([0-9.]*\) images\/s.*/\1/p'; }
pt_train() { /usr/bin/python3 bench/finetune/torch_train.py "$1" "$2" "$3" "$THREADS" 2>/dev/null |
  cut -d' ' -f1; }

# passes FILE BATCH LEAST: enough for about a second of bitdown's time, from
# LEAST up to 400. A fixed 10 at batch 1 had measured MobileNetV3-Small for
# 12 ms a side, which one burst of the machine's other work could fill
# (0.51 in one run, 1.17 in the next with these passes).
passes() {
  awk -v ips="$(bd_infer "$1" "$2" 3)" -v b="$2" -v least="$3" \
    'BEGIN { n = int(ips / b); print (n < least) ? least : (n > 400) ? 400 : n }'
}

out=$(mktemp)
res=$(mktemp)
trap 'rm -f "$out" "$res"' EXIT
printf '%-20s %9s %9s %6s %9s %9s %6s %9s %9s %6s\n' model bd1 ort1 r1 bd16 ort16 r16 \
  bdtrain pttrain rt
for m in $MODELS; do
  f=$DIR/$m.onnx
  # one side at a time, alternating within each round; each keeps its best
  # (a run that fails stops the benchmark: set -e sees the assignment)
  b1=0 o1=0 b16=0 o16=0 bt=0 pt=0
  n1=$(passes "$f" 1 10)
  n16=$(passes "$f" 16 3)
  for ((r = 0; r < ROUNDS; r++)); do
    v=$(bd_infer "$f" 1 "$n1"); b1=$(max "$v" "$b1")
    v=$(ort_infer "$f" 1 "$n1"); o1=$(max "$v" "$o1")
    v=$(bd_infer "$f" 16 "$n16"); b16=$(max "$v" "$b16")
    v=$(ort_infer "$f" 16 "$n16"); o16=$(max "$v" "$o16")
    v=$(bd_train "$f" 16 3); bt=$(max "$v" "$bt")
    v=$(pt_train "$m" 16 3); pt=$(max "$v" "$pt")
  done
  line=$(echo "$m $b1 $o1 $b16 $o16 $bt $pt" |
    awk '{printf "%s %s %s %.2f %s %s %.2f %s %s %.2f", $1, $2, $3, $2 / $3, $4, $5, $4 / $5, $6, $7, $6 / $7}')
  echo "$line" >>"$res"
  # shellcheck disable=SC2086
  printf '%-20s %9s %9s %6s %9s %9s %6s %9s %9s %6s\n' $line
done
{
  echo "Command: \`./bd bench zoo\` ($(date -u +%Y-%m-%d), $(nproc) cores: $(lscpu | sed -n 's/^Model name: *//p'), $THREADS threads each side). Images/s at 224x224 of the torchvision models exported by \`examples/imagenet/export.py --zoo\` (random weights, opset 13). Inference: \`bitdown bench MODEL --batch B\` against ONNX Runtime (\`bench/ort_bench.js\`, all graph optimisations) on the same file, the median of as many passes as take bitdown about a second (10 to 400 at batch 1, 3 to 400 at batch 16), the same count on both sides. Training at batch 16: \`bitdown bench MODEL --train --batch 16\` (forward and backward, BatchNorm in train mode, every parameter's gradient) against \`bench/finetune/torch_train.py\` (PyTorch's same step), median of 3 passes. The sides alternate; each keeps its best of $ROUNDS rounds."
  echo
  echo "| model | bitdown b1 | ORT b1 | ratio | bitdown b16 | ORT b16 | ratio | bitdown train | PyTorch train | ratio |"
  echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
  awk '{printf "| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n", $1, $2, $3, $4, $5, $6, $7, $8, $9, $10}' "$res"
  awk '{a += log($4); b += log($7); c += log($10); n++; if (min1 == "" || $4 < min1) {min1 = $4; m1 = $1}}
       END {printf "| geometric mean | | | %.2f | | | %.2f | | | %.2f |\n\nLowest inference ratio at batch 1: %s (%.2f).\n", exp(a / n), exp(b / n), exp(c / n), m1, min1}' "$res"
} >"$out"
tail -3 "$out"
"$ROOT/bench/record.sh" zoo "$out"
