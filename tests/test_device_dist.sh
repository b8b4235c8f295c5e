#!/usr/bin/env bash
# GPU training in an mpirun job (docs/distributed.md, "GPUs"): each rank on
# its GPU, the gradients and BatchNorm's statistics summed through NCCL,
# ends where one process on the CPU ends, to float rounding. Two ranks when
# two GPUs are visible, else one, which takes the same NCCL path (a rank
# that joined a job sums through NCCL even alone). Skipped without mpirun
# or a usable GPU.
. "$(dirname "$0")/support/testlib.sh"

command -v mpirun >/dev/null || { echo "no mpirun: skipped"; exit 77; }
gpus=$(nvidia-smi -L 2>/dev/null | grep -c '^GPU')
[ "${gpus:-0}" -ge 1 ] || { echo "no GPU listed by nvidia-smi: skipped"; exit 77; }
printf 'device cuda\n' | "$BIN" repl $M >/dev/null 2>"$TMP/e" ||
  { echo "no usable GPU: skipped ($(cat "$TMP/e"))"; exit 77; }
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
[ -n "${BD_SANITIZED:-}" ] && export ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}detect_leaks=0"
np=1
[ "$gpus" -ge 2 ] && np=2
T=(train $M --data fmnist:train --batch 32 --steps 4 --eval none --lr 0.05)

"$BIN" "${T[@]}" -o "$TMP/cpu.onnx" >/dev/null 2>"$TMP/e" || fail "train on the CPU: $(cat "$TMP/e")"
# NCCL_DEBUG=VERSION: NCCL says its version when a communicator is made
mpirun --oversubscribe -x NCCL_DEBUG=VERSION -np $np "$BIN" "${T[@]}" -o "$TMP/gpu.onnx" \
  --device cuda >"$TMP/o" 2>"$TMP/e" || fail "train on $np GPU rank(s): $(cat "$TMP/e")"
grep -q "NCCL version" "$TMP/o" "$TMP/e" || fail "the job made no NCCL communicator: $(cat "$TMP/o" "$TMP/e")"
[ "$(grep -c '^wrote' "$TMP/o")" = 1 ] || fail "not one rank said it wrote the model: $(cat "$TMP/o")"
# The GPU sums in other orders than the CPU (blocks, atomics, the ranks'
# halves): float32 rounding carried through four steps, far below 1e-3;
# BatchNorm statistics per rank, or gradients not summed, differ by percents.
d=$(compare "$TMP/cpu.onnx" "$TMP/gpu.onnx") || fail "comparing the models"
/usr/bin/python3 -c "import sys; sys.exit(not float(sys.argv[1]) < 1e-3)" "$d" ||
  fail "$np GPU rank(s) differ from one CPU process by $d (at most 1e-3)"
echo "$np GPU rank(s) against the CPU: $d"
finish
