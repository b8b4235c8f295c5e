# What the shell tests share: sourced first by every tests/test_*.sh.
# BIN is the bitdown binary, the working directory the source tree, TMP a
# temporary folder removed at exit, fail() records a failure (the test
# exits 1 at the end through finish), N a calibration size that stays quick
# under the sanitizers.
set -uo pipefail
BIN=${BD_BIN:?}
cd "${BD_SOURCE_DIR:?}"
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
failures=0
fail() { echo "FAIL: $*" >&2; failures=$((failures + 1)); }
finish() { exit $((failures > 0)); }
M=examples/fmnist/resnet_bn.onnx
N=256
[ -n "${BD_SANITIZED:-}" ] && N=128
