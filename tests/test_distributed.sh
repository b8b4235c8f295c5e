#!/usr/bin/env bash
# Data-parallel runs under mpirun (docs/distributed.md): two ranks end where
# one process ends (train and finetune within a tolerance this test shows
# to be tight, quantize with identical codes), a killed rank ends the job
# with a message naming it and --resume finishes the job, and the bad
# inputs of a job (ranks that disagree, a rank whose file is missing, a
# batch the ranks cannot share evenly) are said once. Skipped without
# mpirun.
. "$(dirname "$0")/support/testlib.sh"

command -v mpirun >/dev/null || { echo "no mpirun: skipped"; exit 77; }
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
# MPI's own allocations at start-up are not ours to report
[ -n "${BD_SANITIZED:-}" ] && export ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}detect_leaks=0"
MPI=(mpirun --oversubscribe)
T=(--data fmnist:train --batch 32 --eval none --lr 0.05)

if "${MPI[@]}" -np 2 "$BIN" info $M >"$TMP/o" 2>"$TMP/e"; then :; else
  grep -q "built without MPI" "$TMP/e" || fail "a build without MPI under mpirun: $(cat "$TMP/e")"
  echo "bitdown was built without MPI: the refusal was checked, the rest skipped"
  finish
fi

# ---- train: 1 rank against 2, BatchNorm in train mode ----
"$BIN" train $M -o "$TMP/t1.onnx" "${T[@]}" --steps 4 >/dev/null 2>"$TMP/e" ||
  fail "train, one process: $(cat "$TMP/e")"
"${MPI[@]}" -np 2 "$BIN" train $M -o "$TMP/t2.onnx" "${T[@]}" --steps 4 >"$TMP/o" 2>"$TMP/e" ||
  fail "train, two ranks: $(cat "$TMP/e")"
grep -q "^wrote $TMP/t2.onnx" "$TMP/o" || fail "rank 0 does not say it wrote the model"
[ "$(grep -c '^wrote' "$TMP/o")" = 1 ] || fail "more than one rank printed: $(cat "$TMP/o")"
"${MPI[@]}" -np 2 "$BIN" train $M -o "$TMP/tl.onnx" "${T[@]}" --steps 4 --bn-local >/dev/null \
  2>"$TMP/e" || fail "train --bn-local: $(cat "$TMP/e")"
# The ranks sum the same products in another order (half the batch each,
# then the two halves): float32 rounding, about 1e-7 of each sum, which four
# steps carry through. The tolerance is 1e-4; statistics per rank
# (--bn-local) differ by percents, so it tells a synchronised run from one
# that is not.
d=$(compare "$TMP/t1.onnx" "$TMP/t2.onnx") || fail "comparing train runs"
l=$(compare "$TMP/t1.onnx" "$TMP/tl.onnx") || fail "comparing train runs"
/usr/bin/python3 -c "import sys; d, l = float(sys.argv[1]), float(sys.argv[2]); sys.exit(not (d < 1e-4 and l > 1e-2))" "$d" "$l" ||
  fail "train: 2 ranks differ from 1 by $d (at most 1e-4), per-rank BatchNorm by $l (more than 1e-2)"

# ---- quantize: identical codes and codebooks ----
Q=(--calib fmnist:train --calib-n $N --iters 20)
"$BIN" quantize $M -o "$TMP/q1.onnx" "${Q[@]}" >/dev/null 2>"$TMP/e" || fail "quantize: $(cat "$TMP/e")"
"${MPI[@]}" -np 2 "$BIN" quantize $M -o "$TMP/q2.onnx" "${Q[@]}" >/dev/null 2>"$TMP/e" ||
  fail "quantize, two ranks: $(cat "$TMP/e")"
d=$(compare "$TMP/q1.onnx" "$TMP/q2.onnx") || fail "quantize: the codes differ"
[ "$d" = "0.000e+00" ] || fail "quantize: the codebooks of 2 ranks differ from 1 by $d"

# ---- finetune: BatchNorm and biases tuned too ----
F=(--data fmnist:train --iters 4 --batch 32 --seed 3 --bn train --bias)
"$BIN" finetune "$TMP/q1.onnx" -o "$TMP/f1.onnx" "${F[@]}" >/dev/null 2>"$TMP/e" ||
  fail "finetune: $(cat "$TMP/e")"
"${MPI[@]}" -np 2 "$BIN" finetune "$TMP/q1.onnx" -o "$TMP/f2.onnx" "${F[@]}" >/dev/null 2>"$TMP/e" ||
  fail "finetune, two ranks: $(cat "$TMP/e")"
d=$(compare "$TMP/f1.onnx" "$TMP/f2.onnx") || fail "finetune: the codes differ"
/usr/bin/python3 -c "import sys; sys.exit(not float(sys.argv[1]) < 1e-4)" "$d" ||
  fail "finetune: 2 ranks differ from 1 by $d"

# ---- eval: each rank its share, every rank the whole count ----
"$BIN" eval $M --data fmnist:test --limit 1000 --logits "$TMP/l1.f32" >"$TMP/e1" 2>&1 ||
  fail "eval: $(cat "$TMP/e1")"
"${MPI[@]}" -np 2 "$BIN" eval $M --data fmnist:test --limit 1000 --logits "$TMP/l2.f32" \
  >"$TMP/e2" 2>"$TMP/e" || fail "eval, two ranks: $(cat "$TMP/e")"
[ "$(grep top1 "$TMP/e1")" = "$(grep top1 "$TMP/e2")" ] || fail "eval: $(cat "$TMP/e1") against $(cat "$TMP/e2")"
/usr/bin/python3 -c "
import sys, numpy as np
a, b = (np.fromfile(p, np.float32) for p in sys.argv[1:3])
sys.exit(not (a.size == b.size == 10000 and np.abs(a - b).max() < 1e-4))" "$TMP/l1.f32" "$TMP/l2.f32" ||
  fail "eval: the logits of two ranks are not one process's, in order"

# ---- a rank killed mid-run ends the job; --resume finishes it ----
K=("$BIN" train $M -o "$TMP/k.onnx" "${T[@]}" --steps 20 --epochs 50)
# rank 0 prints an epoch's line after writing its checkpoint: read the
# job's output up to the first one (or to its end, if it died before),
# then let the rest drain
mkfifo "$TMP/kout"
"${MPI[@]}" -np 2 "${K[@]}" >"$TMP/kout" 2>"$TMP/ke" &
job=$!
exec 3<"$TMP/kout"
while IFS= read -r line <&3 && [[ $line != "epoch 1/"* ]]; do :; done
cat <&3 >"$TMP/ko" &
[ -s "$TMP/k.onnx.ckpt" ] || fail "no checkpoint after the first epoch"
victim=""
for p in $(pgrep -f "bitdown train .*$TMP/k.onnx"); do
  tr '\0' '\n' <"/proc/$p/environ" 2>/dev/null | grep -qx OMPI_COMM_WORLD_RANK=1 && victim=$p
done
[ -n "$victim" ] || fail "no rank 1 to kill"
t0=$(date +%s)
kill -9 "$victim"
wait $job && fail "the job went on without rank 1"
exec 3<&-
t1=$(date +%s)
[ $((t1 - t0)) -le 30 ] || fail "the job took $((t1 - t0)) s to end after rank 1 died"
grep -q "rank 1" "$TMP/ke" || fail "the message does not name rank 1: $(cat "$TMP/ke")"
"${MPI[@]}" -np 2 "${K[@]}" --epochs 2 --resume >"$TMP/ko" 2>"$TMP/ke" || fail "resume: $(cat "$TMP/ke")"
grep -q "in this run" "$TMP/ko" && [ -s "$TMP/k.onnx" ] || fail "resume did not finish: $(cat "$TMP/ko")"
"$BIN" train $M -o "$TMP/k1.onnx" "${T[@]}" --steps 20 --epochs 3 --checkpoint "$TMP/k.onnx.ckpt" \
  --resume >/dev/null 2>"$TMP/e" || fail "resuming a 2-rank checkpoint in one process: $(cat "$TMP/e")"

# ---- bad input, said once ----
M2=examples/fmnist/resnet.onnx
"${MPI[@]}" -np 1 "$BIN" train $M -o "$TMP/x.onnx" "${T[@]}" --steps 1 : \
  -np 1 "$BIN" train $M2 -o "$TMP/x.onnx" "${T[@]}" --steps 1 >/dev/null 2>"$TMP/e" &&
  fail "ranks on different models went ahead"
grep -q "the ranks disagree: rank 1" "$TMP/e" || fail "disagreement: $(cat "$TMP/e")"
"${MPI[@]}" -np 1 "$BIN" quantize $M -o "$TMP/x.onnx" "${Q[@]}" : \
  -np 1 "$BIN" quantize $M -o "$TMP/x.onnx" "${Q[@]}" --iters 21 >/dev/null 2>"$TMP/e" &&
  fail "ranks with different options went ahead"
grep -q "the ranks disagree: rank 1" "$TMP/e" || fail "option disagreement: $(cat "$TMP/e")"
"${MPI[@]}" -np 1 "$BIN" train $M -o "$TMP/x.onnx" "${T[@]}" --steps 1 : \
  -np 1 "$BIN" train "$TMP/nowhere.onnx" -o "$TMP/x.onnx" "${T[@]}" --steps 1 >/dev/null \
  2>"$TMP/e" && fail "a rank without its model went ahead"
grep -q "^bitdown: rank 1 of 2: .*nowhere.onnx" "$TMP/e" || fail "missing file on rank 1: $(cat "$TMP/e")"
"${MPI[@]}" -np 2 "$BIN" train "$TMP/nowhere.onnx" -o "$TMP/x.onnx" "${T[@]}" >/dev/null \
  2>"$TMP/e" && fail "a missing model went ahead"
[ "$(grep -c 'nowhere.onnx' "$TMP/e")" = 1 ] || fail "the same error is said more than once: $(cat "$TMP/e")"
"${MPI[@]}" -np 3 "$BIN" train $M -o "$TMP/x.onnx" --data fmnist:train --batch 10 --steps 1 \
  --eval none >/dev/null 2>"$TMP/e" || fail "a batch of 10 over 3 ranks: $(cat "$TMP/e")"
grep -q "rank 0 takes 4 images, ranks 1 to 2 take 3" "$TMP/e" || fail "the uneven share is not said: $(cat "$TMP/e")"
"${MPI[@]}" -np 2 "$BIN" train $M -o "$TMP/x.onnx" --data fmnist:train --batch 1 --steps 1 \
  --eval none >/dev/null 2>"$TMP/e" && fail "a batch of 1 over 2 ranks went ahead"
grep -q "cannot be shared by 2 ranks" "$TMP/e" || fail "batch smaller than the ranks: $(cat "$TMP/e")"
"${MPI[@]}" -np 2 "$BIN" repl $M </dev/null >/dev/null 2>"$TMP/e" && fail "repl under mpirun"
grep -q "interactive commands run as one process" "$TMP/e" || fail "repl refusal: $(cat "$TMP/e")"

finish
