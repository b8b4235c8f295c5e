#!/usr/bin/env bash
# bench/eval_memory: peak resident memory and time of `bitdown eval` on a
# dense model against its compressed files (PQ small, int8), batch 64, on
# the paper's ResNet-18 and (when exported: examples/imagenet/) ResNet-50,
# each run under /usr/bin/time in the same session. The target: the
# compressed eval's peak below the dense one's by at least the dense
# weights' size (only the compressed model, one decoded layer and the
# activations held).
set -euo pipefail
BIN=$1
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cd "$ROOT"
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
PHOTOS=${BD_PHOTOS:-$(/usr/bin/python3 -c 'import skimage, os; print(os.path.dirname(skimage.__file__) + "/data")')}
# 64 images: the photos over and over, one class folder each
for i in $(seq 0 63); do
  p=(astronaut chelsea coffee motorcycle_left motorcycle_right camera page)
  n=${p[$((i % 7))]}
  mkdir -p "$TMP/photos/$n" && ln -sf "$PHOTOS/$n.png" "$TMP/photos/$n/$i.png"
done
PRE=(--resize 256 --crop 224 --mean 0.485,0.456,0.406 --std 0.229,0.224,0.225)
out=$TMP/section.md
echo "Command: \`./bd bench eval_memory\` ($(date -u +%Y-%m-%d), $(nproc) cores). \`/usr/bin/time -f '%M %e' bitdown eval MODEL --data dir:PHOTOS --batch 64\` on 64 images; the compressed files by \`bitdown quantize MODEL -o OUT --regime small|int8 --calib dir:PHOTOS --calib-n 64\` (int8 with \`--objective weight\`, which is quick; the file's size does not depend on it)." >"$out"
echo >>"$out"
echo "| model | file | payload MB | peak MB | peak - dense peak, MB | dense weights MB | seconds |" >>"$out"
echo "|---|---|---:|---:|---:|---:|---:|" >>"$out"
measure() { # NAME MODEL: peak KB and seconds
  /usr/bin/time -f "%M %e" -o "$TMP/$1.time" "$BIN" eval "$2" --data "dir:$TMP/photos" "${PRE[@]}" \
    --batch 64 >"$TMP/$1.eval" 2>/dev/null
  cat "$TMP/$1.time"
}
for m in "resnet18 ../shared/models/resnet18_bgd_small.onnx" "resnet50 examples/imagenet/models/resnet50.onnx"; do
  read -r name model <<<"$m"
  [ -f "$model" ] || continue
  read -r dk ds <<<"$(measure "$name.dense" "$model")"
  "$BIN" quantize "$model" -o "$TMP/$name.small.onnx" --regime small --calib "dir:$TMP/photos" \
    --calib-n 64 --iters 20 "${PRE[@]}" --report "$TMP/$name.small.json" >/dev/null 2>&1
  "$BIN" quantize "$model" -o "$TMP/$name.int8.onnx" --regime int8 --objective weight \
    --calib "dir:$TMP/photos" --calib-n 64 "${PRE[@]}" --report "$TMP/$name.int8.json" >/dev/null 2>&1
  wmb=$(/usr/bin/python3 -c 'import json,sys; print("%.1f" % (json.load(open(sys.argv[1]))["totals"]["fp32_bytes"] / 2**20))' "$TMP/$name.small.json")
  echo "| $name | dense | $wmb | $((dk / 1024)) | 0 | $wmb | $ds |" >>"$out"
  for v in small int8; do
    read -r k s <<<"$(measure "$name.$v" "$TMP/$name.$v.onnx")"
    pmb=$(/usr/bin/python3 -c 'import json,sys; print("%.1f" % (json.load(open(sys.argv[1]))["totals"]["compressed_bytes"] / 2**20))' "$TMP/$name.$v.json")
    echo "| $name | $v | $pmb | $((k / 1024)) | $(((k - dk) / 1024)) | $wmb | $s |" >>"$out"
  done
done
cat "$out"
"$ROOT/bench/record.sh" eval_memory "$out"
