#!/usr/bin/env bash
# bench/gpu_train: fine-tuning throughput on the GPU against the CPU, in the
# same run: global fine-tuning of every quantized layer (distillation, the
# forward and backward passes, the teacher's forward, centroid SGD), images
# per second at batch 64, BatchNorm frozen and in train mode. Needs a GPU
# (`device cuda`): on a machine without one it says so and records nothing.
set -euo pipefail
BIN=$1
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cd "$ROOT"
if ! printf 'device cuda\n' | "$BIN" repl --no-checkpoint >/dev/null 2>&1; then
  echo "bench/gpu_train: no GPU here ('device cuda' fails): nothing to measure, nothing recorded"
  exit 0
fi
THREADS=${BD_BENCH_THREADS:-$(nproc)}
STEPS=${BD_BENCH_STEPS:-100}
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
unset OPENBLAS_CORETYPE

cat >"$TMP/train.lua" <<'LUA'
-- arg: model, steps
local model, steps = arg[1], tonumber(arg[2])
bd.load(model)
bd.data("calib", nil, {n = 4096})
bd.regime("small")
bd.quantize{iters = 10}
for _, bn in ipairs{false, true} do
  local row = {bn and "train" or "frozen"}
  for _, dev in ipairs{"cpu", "cuda"} do
    bd.device(dev)
    bd.finetune{mode = "global", iters = 5, batch = 64, bn = row[1]} -- warm-up
    bd.undo()
    local r = bd.finetune{mode = "global", iters = steps, batch = 64, bn = row[1]}
    row[#row + 1] = ("%.1f"):format(r.images_per_second)
    row[#row + 1] = ("%.5f"):format(r.last_loss)
    bd.undo()
  end
  print(table.concat(row, "\t"))
end
LUA

out=$TMP/section.md
cat >"$out" <<EOF2
Command: \`./bd bench gpu_train\` ($(date -u +%Y-%m-%d), $THREADS CPU threads; GPU: $(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1 || echo "?")). Each model is quantized with the small regime, then every quantized layer is tuned together (\`bd.finetune{mode = "global", batch = 64}\`, KL to the teacher, $STEPS steps after 5 of warm-up) with \`device cpu\` and with \`device cuda\`, from the same codebooks.

| model | BatchNorm | CPU images/s | GPU images/s | speed-up | last loss CPU | last loss GPU |
|---|---|---:|---:|---:|---:|---:|
EOF2
for m in resnet_bn mobilenet_bn; do
  OMP_NUM_THREADS=$THREADS "$BIN" run "$TMP/train.lua" "examples/fmnist/$m.onnx" "$STEPS" |
    while IFS=$'\t' read -r bn ci cl gi gl; do
      awk -v m="$m" -v bn="$bn" -v ci="$ci" -v cl="$cl" -v gi="$gi" -v gl="$gl" 'BEGIN {
        printf "| %s | %s | %.1f | %.1f | %.1fx | %s | %s |\n", m, bn, ci, gi, gi / ci, cl, gl }'
    done >>"$out"
done
cat "$out"
"$ROOT/bench/record.sh" gpu_train "$out"
