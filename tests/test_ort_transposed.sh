#!/usr/bin/env bash
# Weights stored transposed (MatMul's [K, N], Gemm's with transB = 0) in
# every int form bitdown writes: int4 per channel, int3 per tensor
# symmetric, PQ beside them, and BitPruning's bit length per channel (rows
# sorted by width, put back by a Gather): ONNX's checker accepts each
# file, and ONNX Runtime's logits are bitdown's.
. "$(dirname "$0")/support/testlib.sh"
. "$(dirname "$0")/support/ort.sh"

# flatten -> MatMul [784, 32] -> Relu -> Gemm [32, 24] (transB = 0) -> Relu
# -> Gemm [10, 24] (transB = 1), seeded, with the Fashion-MNIST metadata
/usr/bin/python3 - "$TMP/mlp.onnx" <<'PY' || fail "building the MLP"
import sys
import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
rng = np.random.default_rng(7)
def w(name, *shape):
    return numpy_helper.from_array((rng.standard_normal(shape) / np.sqrt(shape[0])).astype(np.float32), name)
nodes = [
    helper.make_node("Flatten", ["x"], ["f"], axis=1),
    helper.make_node("MatMul", ["f", "fc1.weight"], ["h1"]),
    helper.make_node("Relu", ["h1"], ["r1"]),
    helper.make_node("Gemm", ["r1", "fc2.weight", "fc2.bias"], ["h2"], transB=0),
    helper.make_node("Relu", ["h2"], ["r2"]),
    helper.make_node("Gemm", ["r2", "fc3.weight", "fc3.bias"], ["y"], transB=1),
]
inits = [w("fc1.weight", 784, 32), w("fc2.weight", 32, 24),
         numpy_helper.from_array(np.zeros(24, np.float32), "fc2.bias"),
         w("fc3.weight", 10, 24), numpy_helper.from_array(np.zeros(10, np.float32), "fc3.bias")]
g = helper.make_graph(nodes, "mlp", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 1, 28, 28])],
                      [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 10])], inits)
m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
for k, v in {"bitdown.preprocess.color": "gray", "bitdown.preprocess.mean": "0.2860",
             "bitdown.preprocess.std": "0.3530", "bitdown.dataset": "fmnist"}.items():
    m.metadata_props.add(key=k, value=v)
onnx.checker.check_model(m)
onnx.save(m, sys.argv[1])
PY

Q=(--calib fmnist:train --calib-n $N --iters 10)
"$BIN" info "$TMP/mlp.onnx" >"$TMP/info" 2>&1 || fail "info: $(cat "$TMP/info")"
"$BIN" quantize "$TMP/mlp.onnx" -o "$TMP/i4.onnx" "${Q[@]}" --set '*:int=4' >"$TMP/out" 2>&1 ||
  fail "int4: $(cat "$TMP/out")"
grep -qE '^fc1 .*int4' "$TMP/out" || fail "fc1 (MatMul) is not int4: $(cat "$TMP/out")"
runtimes_agree "$TMP/i4.onnx"
"$BIN" quantize "$TMP/mlp.onnx" -o "$TMP/i3.onnx" "${Q[@]}" --set '*:int=3,per=tensor,sym=1' \
  --set 'fc3:d=4,k=8' >"$TMP/out" 2>&1 || fail "int3 per tensor with PQ: $(cat "$TMP/out")"
runtimes_agree "$TMP/i3.onnx"
"$BIN" bitprune "$TMP/mlp.onnx" -o "$TMP/bp.onnx" --data fmnist:train --granularity channel \
  --target-bits 3 --steps 5 --batch 32 --epochs 1 --finetune-epochs 1 --eval-n 64 >"$TMP/out" 2>&1 ||
  fail "bitprune per channel: $(cat "$TMP/out")"
"$BIN" info "$TMP/bp.onnx" >"$TMP/info" 2>&1
grep -qE '^fc1 .* int[0-9]+-[0-9]+ ' "$TMP/info" || fail "fc1 (MatMul) has one width for all rows: $(cat "$TMP/info")"
runtimes_agree "$TMP/bp.onnx"
finish
