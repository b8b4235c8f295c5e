#!/usr/bin/env bash
# A tour of the one-shot commands: what bitdown shows of a model, its accuracy on
# real data, and its predictions on real images. Usage: examples/demo.sh BITDOWN.
set -euo pipefail
BIN=$1
cd "$(dirname "$0")/.."
MODEL=examples/fmnist/resnet_bn.onnx
step() { printf '\n\033[1m$ %s\033[0m\n' "$*"; "$@"; }

step "$BIN" info "$MODEL"
step "$BIN" eval "$MODEL" --data fmnist:test
step "$BIN" predict "$MODEL" examples/images/fmnist_test_0000_ankle_boot.png \
  examples/images/fmnist_test_0002_trouser.png examples/images/fmnist_test_0013_dress.png

# The paper's own compressed ResNet-18 on real photographs, when the shared
# models are there.
R18=../shared/models/resnet18_bgd_small.onnx
PHOTOS=examples/images/photos
if [ -f "$R18" ]; then
  step "$BIN" predict "$R18" "$PHOTOS/chelsea.jpg" "$PHOTOS/coffee.jpg" \
    --classes ../shared/models/imagenet_classes.txt --resize 256 --crop 224 \
    --mean 0.485,0.456,0.406 --std 0.229,0.224,0.225 --rgb --top 3
fi
