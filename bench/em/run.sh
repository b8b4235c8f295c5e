#!/usr/bin/env bash
# bench/em: quantizing layers on the GPU against the CPU, in the same run:
# the calibration forward, the Gram matrix and EM (k = 256, up to 100
# iterations), per layer, with the seconds per EM iteration and whether
# both devices reached the same error. Needs a GPU (`device cuda`): on a
# machine without one it says so and records nothing.
# Models: the Fashion-MNIST ResNet, and the real ImageNet ResNet-18 of
# ../shared/models/ when it is there (calibrated on skimage's photos).
set -euo pipefail
BIN=$1
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cd "$ROOT"
if ! printf 'device cuda\n' | "$BIN" repl --no-checkpoint >/dev/null 2>&1; then
  echo "bench/em: no GPU here ('device cuda' fails): nothing to measure, nothing recorded"
  exit 0
fi
THREADS=${BD_BENCH_THREADS:-$(nproc)}
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
unset OPENBLAS_CORETYPE

cat >"$TMP/em.lua" <<'LUA'
-- arg: model, calibration spec, images, layers...
local model, spec, n = arg[1], arg[2], tonumber(arg[3])
bd.load(model)
bd.data("calib", spec ~= "-" and spec or nil, {n = n})
-- untimed: the first use of a device pays for its start (the CUDA context,
-- cuBLAS's handle, the model's upload), which is not a cost of EM
for _, dev in ipairs{"cpu", "cuda"} do
  bd.device(dev)
  bd.quantize(arg[4], {iters = 1})
  bd.undo()
end
for i = 4, #arg do
  local name = arg[i]
  local row = {name}
  for _, dev in ipairs{"cpu", "cuda"} do
    bd.device(dev)
    bd.set(name, {k = math.min(256, bd.layer(name).max_k)})
    local l = bd.quantize(name, {iters = 100})[1]
    local c = l.codebook
    row[#row + 1] = ("%.3f"):format(c.seconds)
    row[#row + 1] = ("%d"):format(c.iters)
    row[#row + 1] = ("%.4f"):format(l.rel_error or -1)
    bd.undo()
  end
  print(table.concat(row, "\t"))
end
LUA

out=$TMP/section.md
cat >"$out" <<EOF2
Command: \`./bd bench em\` ($(date -u +%Y-%m-%d), $THREADS CPU threads; GPU: $(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1 || echo "?")). Each layer is quantized with k = 256 and at most 100 EM iterations (stopping early when stable) by \`bd.quantize\`, once with \`device cpu\` and once with \`device cuda\`, from the same calibration images and seed; seconds cover the calibration forward, the Gram matrix and EM.

| model | layer | CPU s | iters | GPU s | iters | CPU s/iter | GPU s/iter | speed-up | error CPU | error GPU |
|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|
EOF2
run() { # label model spec images layers...
  local label=$1; shift
  OMP_NUM_THREADS=$THREADS "$BIN" run "$TMP/em.lua" "$@" | while IFS=$'\t' read -r name cs ci ce gs gi ge; do
    awk -v m="$label" -v l="$name" -v cs="$cs" -v ci="$ci" -v ce="$ce" -v gs="$gs" -v gi="$gi" -v ge="$ge" 'BEGIN {
      printf "| %s | %s | %.3f | %d | %.3f | %d | %.4f | %.4f | %.1fx | %s | %s |\n",
        m, l, cs, ci, gs, gi, cs / ci, gs / gi, (cs / ci) / (gs / gi), ce, ge }'
  done >>"$out"
}
run resnet_bn examples/fmnist/resnet_bn.onnx - 1024 layer1.0.conv1 layer2.0.conv2 layer3.0.conv2
R18=$ROOT/../shared/models/resnet18_bgd_small.onnx
# BD_PHOTOS: a folder of the same photos, for a GPU machine without Debian's skimage.
PHOTOS=${BD_PHOTOS:-$(/usr/bin/python3 -c 'import skimage, os; print(os.path.dirname(skimage.__file__) + "/data")' 2>/dev/null || true)}
if [ -f "$R18" ] && [ -n "$PHOTOS" ]; then
  mkdir -p "$TMP/photos/all"
  for p in astronaut chelsea coffee rocket motorcycle_left motorcycle_right camera page; do
    [ -f "$PHOTOS/$p.png" ] && ln -s "$PHOTOS/$p.png" "$TMP/photos/all/$p.png"
  done
  run resnet18 "$R18" "dir:$TMP/photos" 8 layer1.0.conv1 layer3.1.conv2 layer4.1.conv2
fi
cat "$out"
"$ROOT/bench/record.sh" em "$out"
