#!/usr/bin/env bash
# Crash safety: kill -9 during 'quantize all', resume with --resume, and
# get the same model an uninterrupted run gives; kill -9 during 'save', and
# the previous file is intact.
. "$(dirname "$0")/support/testlib.sh"
MB=examples/fmnist/mobilenet_bn.onnx
CAL="data calib fmnist:train n=$((N * 4))"

# identical: the two compressed files hold the same tensors (by content:
# the names export gives computed values count from the loaded graph's)
identical() {
  /usr/bin/python3 - "$1" "$2" <<'PY'
import sys, onnx
a, b = (onnx.load(p) for p in sys.argv[1:3])
ta, tb = (sorted((t.data_type, tuple(t.dims), t.raw_data) for t in m.graph.initializer) for m in (a, b))
sys.exit(0 if ta == tb and len(ta) > 0 else 1)
PY
}

quantized() { "$BIN" info "$1" 2>/dev/null | sed -n 's/^compressed: \([0-9]*\) layers quantized.*/\1/p'; }

# the reference: one uninterrupted run
printf '%s\nseed 3\nquantize all iters=40 tune=3\nsave %s\n' "$CAL" "$TMP/full.onnx" |
  BITDOWN_STATE_DIR=$TMP/state-a "$BIN" repl $MB >/dev/null 2>"$TMP/a.err" || fail "the uninterrupted run failed: $(cat "$TMP/a.err")"
total=$(quantized "$TMP/full.onnx")
[ "${total:-0}" -gt 10 ] || fail "the reference quantized ${total:-no} layers"

# the same, killed once a few layers are done
export BITDOWN_STATE_DIR=$TMP/state-b
printf '%s\nseed 3\nquantize all iters=40 tune=3\nsave %s\n' "$CAL" "$TMP/never.onnx" |
  "$BIN" repl $MB >/dev/null 2>&1 &
pid=$!
# waits until a checkpoint holds 3 finished layers, or the run has ended
three_done_or_ended() {
  ckpt=$(ls "$BITDOWN_STATE_DIR"/*.checkpoint.onnx 2>/dev/null | head -1)
  { [ -n "$ckpt" ] && [ "$(quantized "$ckpt")" -ge 3 ] 2>/dev/null; } || ! kill -0 $pid 2>/dev/null
}
ckpt=
eventually three_done_or_ended
kill -9 $pid 2>/dev/null
wait $pid 2>/dev/null
done_before=$(quantized "$ckpt")
[ -n "$ckpt" ] && [ "${done_before:-0}" -ge 3 ] || fail "no checkpoint with finished layers appeared"
[ "${done_before:-0}" -lt "${total:-0}" ] || fail "the run finished before it could be killed"
[ ! -e "$TMP/never.onnx" ] || fail "the killed run got to its save"

# resume: the rest of the quantization, then the same model as the reference
printf 'save %s\n' "$TMP/resumed.onnx" | "$BIN" repl $MB --resume >"$TMP/r.out" 2>"$TMP/r.err" ||
  fail "resume failed: $(cat "$TMP/r.err")"
grep -q "resumed .* from its checkpoint, $total layers quantized ($done_before restored, $((total - done_before)) finished now)" "$TMP/r.err" ||
  fail "resume did not say what it restored and finished: $(cat "$TMP/r.err")"
[ "$(quantized "$TMP/resumed.onnx")" = "$total" ] || fail "the resumed model has $(quantized "$TMP/resumed.onnx") layers quantized, not $total"
identical "$TMP/full.onnx" "$TMP/resumed.onnx" || fail "the resumed model differs from the uninterrupted one"

# a kill during save leaves the previous file as it was
R18=../shared/models/resnet18_bgd_small.onnx
if [ -f "$R18" ]; then
  printf 'save %s decoded\n' "$TMP/big.onnx" | "$BIN" repl $R18 --no-checkpoint >/dev/null 2>&1 ||
    fail "the first save failed"
  sum=$(md5sum <"$TMP/big.onnx")
  # (the delays only spread the kills over the saves: whenever one lands,
  # the file must be as it was; $! is the pipeline's last process, bitdown
  # itself, so no other test's bitdown can be hit)
  for delay in 0.05 0.1 0.2 0.3; do
    printf 'reset all\nsave %s decoded\nsave %s decoded\nsave %s decoded\n' "$TMP/big.onnx" \
      "$TMP/big.onnx" "$TMP/big.onnx" | "$BIN" repl $R18 --no-checkpoint >/dev/null 2>&1 &
    pid=$!
    sleep $delay
    kill -9 $pid 2>/dev/null
    wait $pid 2>/dev/null
    [ "$(md5sum <"$TMP/big.onnx")" = "$sum" ] || fail "a save killed after ${delay}s changed the file"
  done
  "$BIN" info "$TMP/big.onnx" >/dev/null || fail "the file does not load after the killed saves"
else
  echo "SKIP: $R18 is not there: the kill-during-save check needs a large model"
fi
finish
