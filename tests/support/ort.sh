# runtimes_agree FILE [STEPS]: a compressed model passes ONNX's checker,
# bitdown's eval says it is compressed, and ONNX Runtime's logits on 64 test
# images are bitdown's (through node and .deps/node_modules; skipped when
# that is not installed). With STEPS, that many images may differ by up to
# 2e-2 and the rest still agree to 1e-4: a model whose activations are
# fake-quantized (Round) turns a last-bit difference between the runtimes'
# convolutions, at a value on a rounding boundary, into a whole step of its
# grid. Sourced after testlib.sh; leaves bitdown's logits in $TMP/rt.f32.
if [ -f .deps/node_modules/onnxruntime-node/package.json ] && command -v node >/dev/null; then
  /usr/bin/python3 - "$TMP/in.f32" <<'PY'
import gzip, sys, numpy as np
with gzip.open("/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz") as f:
    x = np.frombuffer(f.read(), np.uint8, offset=16)[:64 * 784].reshape(64, 1, 28, 28)
((x / 255.0 - 0.2860) / 0.3530).astype("<f4").tofile(sys.argv[1])
PY
else
  echo "SKIP: onnxruntime-node is not installed (./bd deps installs it)"
fi
runtimes_agree() {
  /usr/bin/python3 -c 'import onnx, sys; onnx.checker.check_model(onnx.load(sys.argv[1]), full_check=True)' \
    "$1" || fail "onnx.checker rejects $1"
  "$BIN" eval "$1" --data fmnist:test --limit 64 --logits "$TMP/rt.f32" >"$TMP/eval" || fail "eval on $1"
  grep -q 'compressed model' "$TMP/eval" || fail "eval does not say $1 is compressed"
  [ -f "$TMP/in.f32" ] || return 0
  NODE_PATH=$PWD/.deps/node_modules node tests/support/ort_run.js "$1" "$TMP/in.f32" 64 1 28 28 "$TMP/ort.f32" ||
    fail "ONNX Runtime could not run $1"
  /usr/bin/python3 - "$TMP/rt.f32" "$TMP/ort.f32" "${2:-0}" <<'PY' || fail "ONNX Runtime's logits differ from bitdown's on $1"
import sys, numpy as np
a = np.fromfile(sys.argv[1], "<f4").reshape(64, 10)
b = np.fromfile(sys.argv[2], "<f4").reshape(64, 10)
err = np.sort(np.abs(a - b).max(1) / np.abs(b).max(1))
steps = int(sys.argv[3])
close = err[:64 - steps] if steps else err
print("ONNX Runtime vs bitdown: %.2e (%d images past 1e-4)" % (err[-1], (err >= 1e-4).sum()))
sys.exit(0 if close[-1] < 1e-4 and err[-1] < 2e-2 else 1)
PY
}
