# What the shell tests share: sourced first by every tests/test_*.sh.
# BIN is the bitdown binary, the working directory the source tree, TMP a
# temporary folder removed at exit, fail() records a failure (the test
# exits 1 at the end through finish), N a calibration size that stays quick
# under the sanitizers, compare() how far apart two models' tensors are.
set -uo pipefail
BIN=${BD_BIN:?}
cd "${BD_SOURCE_DIR:?}"
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
failures=0
fail() { echo "FAIL: $*" >&2; failures=$((failures + 1)); }
finish() { exit $((failures > 0)); }
# eventually CMD...: runs CMD every 50 ms until it succeeds. What a test
# waits for comes when it comes on a busy machine, so no wait has its own
# deadline: BD_TEST_PATIENCE (300 s) only ends the wait for a program that
# hung, early enough for the test to print what it saw before ctest stops it.
eventually() {
  local end=$((SECONDS + ${BD_TEST_PATIENCE:-300}))
  until "$@"; do
    ((SECONDS < end)) || return 1
    sleep 0.05
  done
}
M=examples/fmnist/resnet_bn.onnx
N=256
[ -n "${BD_SANITIZED:-}" ] && N=128

# Every float initializer of two models: the largest difference relative to
# the tensor's own largest magnitude; integer ones (codes) must be equal.
compare() { # A B -> prints the largest relative difference
  /usr/bin/python3 - "$1" "$2" <<'PY'
import sys
import numpy as np
import onnx
from onnx import numpy_helper as nh
a, b = ({t.name: nh.to_array(t) for t in onnx.load(p).graph.initializer} for p in sys.argv[1:3])
assert a.keys() == b.keys()
worst = 0.0
for k in a:
    x, y = a[k], b[k]
    if x.dtype.kind == "f":
        x, y = x.astype(np.float64), y.astype(np.float64)
        worst = max(worst, float(np.abs(x - y).max(initial=0) / (np.abs(x).max(initial=0) + 1e-30)))
    else:
        assert np.array_equal(x, y), k
print(f"{worst:.3e}")
PY
}
