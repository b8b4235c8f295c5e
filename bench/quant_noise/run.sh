#!/usr/bin/env bash
# bench/quant_noise: does training with Quant-Noise make a model quantize
# better? On both Fashion-MNIST examples, at equal compressed size (the same
# regime) and equal training steps, the top-1 after quantization and the same
# fine-tuning of:
#   (a) the teacher as shipped;
#   (b) the teacher trained STEPS more steps without noise;
#   (c) the same with Quant-Noise p = 0.05, 0.1, 0.2 (pq block drop with the
#       regime's blocks for PQ, intB noise for intB);
#   (d) p = 1: QAT (pq-centroid at p = 1 for PQ: every block its centroid);
#   (e) for PQ, iPQ (lua/policies/ipq.lua): the teacher quantized in 4
#       stages, STEPS/4 steps of training after each (the float layers with
#       Quant-Noise p = 0.1, the quantized ones' centroids, distilling the
#       teacher), so the same STEPS in all;
# for PQ small, PQ large, int4 and int8, over SEEDS seeds.
set -euo pipefail
BIN=$1
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cd "$ROOT"
THREADS=${BD_BENCH_THREADS:-2}
STEPS=${BD_QN_STEPS:-200}     # training steps of 128 images
TUNE=${BD_QN_TUNE:-200}       # global fine-tuning steps after quantization
SEEDS=${BD_QN_SEEDS:-"0 1"}
MODELS=${BD_QN_MODELS:-"resnet_bn mobilenet_bn"}
FORMATS="small large int4 int8"
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
unset OPENBLAS_CORETYPE
out=$TMP/section.md
train() { # model seed noise out
  "$BIN" train "examples/fmnist/$1.onnx" -o "$4" --steps "$STEPS" --lr 0.01 --nesterov \
    --schedule cosine --seed "$2" --eval none --threads "$THREADS" \
    ${3:+--quant-noise "$3"} --checkpoint "$TMP/ckpt" >/dev/null
}
# session model seed formats...: for each format, one REPL session on model
# that runs the commands `step FORMAT` prints (which make the student), then
# the same fine-tuning and evaluation; prints "FORMAT TOP1" lines
session() {
  local model=$1 seed=$2 f; shift 2
  for f in "$@"; do
    {
      echo "threads $THREADS"
      echo "seed $seed"
      echo "data calib fmnist:train n=1024"
      step "$f"
      # PQ layers tune their codebooks, int layers their grids
      echo "finetune iters=$TUNE loss=ce bn=train bias=1"
      echo "eval"
    } | "$BIN" repl "$model" --no-checkpoint 2>/dev/null |
      sed -n "s/^student top1 \([0-9.]*\)%.*/$f \1/p"
  done
}
quantize() { step() { echo "regime $1"; echo "quantize all restarts=1"; }; session "$@"; }
ipq() {
  step() { echo "run lua/policies/ipq.lua regime=$1 groups=4 steps=$((STEPS / 4)) p=0.1"; }
  session "$@"
}
noise_for() { # format p
  case $1 in
    small | large) [ "$2" = 1 ] && echo "pq-centroid:p=1,regime=$1" || echo "pq:p=$2,regime=$1" ;;
    int*) echo "$1:p=$2" ;;
  esac
}
# BD_QN_RESULTS=FILE keeps the result lines in FILE, appending this run's to
# those already there, and tabulates them all: a run stopped part way, or run
# seed by seed, adds up (BD_QN_MODELS="" only tabulates FILE)
results=${BD_QN_RESULTS:-$TMP/results}
touch "$results"
for m in $MODELS; do
  for s in $SEEDS; do
    quantize "examples/fmnist/$m.onnx" "$s" $FORMATS | sed "s/^/$m $s a /" >>"$results"
    ipq "examples/fmnist/$m.onnx" "$s" small large | sed "s/^/$m $s e /" >>"$results"
    train "$m" "$s" "" "$TMP/plain.onnx"
    quantize "$TMP/plain.onnx" "$s" $FORMATS | sed "s/^/$m $s b /" >>"$results"
    for f in $FORMATS; do
      for p in 0.05 0.1 0.2 1; do
        train "$m" "$s" "$(noise_for "$f" "$p")" "$TMP/noisy.onnx"
        quantize "$TMP/noisy.onnx" "$s" "$f" | sed "s/^/$m $s p=$p /" >>"$results"
      done
    done
  done
done
seeds=$(awk '{print $2}' "$results" | sort -un | paste -sd' ')
{
  echo "Command: \`BD_QN_STEPS=$STEPS BD_QN_TUNE=$TUNE BD_QN_SEEDS=\"$seeds\" BD_QN_MODELS=\"$MODELS\" ./bd bench quant_noise\` ($(date -u +%Y-%m-%d), $THREADS threads). Top-1 (%) on the 10 000 test images after quantizing with the regime (\`quantize all restarts=1\`, 1024 calibration images) and $TUNE steps of global fine-tuning (\`finetune loss=ce bn=train bias=1\`: PQ codebooks, int scales and zero points), so every column of a row has the same compressed size. Columns: (a) the shipped teacher; (b) the teacher trained $STEPS more steps of 128 images (\`bitdown train --steps $STEPS --lr 0.01 --nesterov --schedule cosine\`) without noise; p=…: the same training with Quant-Noise at that rate (\`pq:p=P,regime=R\` for PQ, \`intB:p=P\` for int); p=1: QAT (\`pq-centroid:p=1\` for PQ); (e) iPQ, PQ only: the teacher quantized in 4 stages of about equal parameter count by \`run lua/policies/ipq.lua regime=R groups=4 steps=$((STEPS / 4)) p=0.1\` (after each stage $((STEPS / 4)) steps distilling the teacher: float layers with \`pq:p=0.1\`, quantized layers' centroids; 4 EM restarts), then the same fine-tuning. Mean ± half the range over seeds $seeds (seed of training, calibration and EM)."
  echo
  echo "| model | format | (a) teacher | (b) trained | p=0.05 | p=0.1 | p=0.2 | p=1 (QAT) | (e) iPQ |"
  echo "|---|---|---:|---:|---:|---:|---:|---:|---:|"
  /usr/bin/python3 - "$results" $seeds <<'PY'
import sys, collections
nseeds = len(sys.argv) - 2
rows = collections.defaultdict(list)
for line in open(sys.argv[1]):
    m, s, col, fmt, top1 = line.split()
    rows[(m, fmt, col)].append(float(top1))
cols = ["a", "b", "p=0.05", "p=0.1", "p=0.2", "p=1", "e"]
for m in dict.fromkeys(k[0] for k in rows):
    for fmt in ["small", "large", "int4", "int8"]:
        cells = []
        for c in cols:
            v = rows.get((m, fmt, c), [])
            cell = "%.2f ± %.2f" % (sum(v) / len(v), (max(v) - min(v)) / 2) if v else "-"
            if v and len(v) < nseeds:  # a stopped run: say how many seeds the cell has
                cell = "%.2f (%d seed%s)" % (sum(v) / len(v), len(v), "" if len(v) == 1 else "s")
            cells.append(cell)
        print("| %s | %s | %s |" % (m, fmt, " | ".join(cells)))
PY
} >"$out"
cat "$out"
"$ROOT/bench/record.sh" quant_noise "$out"
