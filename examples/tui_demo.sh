#!/usr/bin/env bash
# The interactive demo (./bd demo at a terminal): the workbench on the paper's
# own ImageNet ResNet-18 (../shared/models/ beside the project), its images
# pane naming the photos of examples/images/photos/; on the Fashion-MNIST
# example when that model is not there, which it says on stderr.
#
# Usage: examples/tui_demo.sh BITDOWN [WORKDIR]. The ResNet-18 is a plain
# PyTorch export: a copy with ImageNet's preprocessing and class names written
# in (bitdown annotate) goes to WORKDIR/demo/ (default: BITDOWN's folder, the
# build), never into the project.
set -euo pipefail
BIN=$(realpath "$1")
WORK=$(realpath "${2:-$(dirname "$BIN")}")
cd "$(dirname "$0")/.."
R18=../shared/models/resnet18_bgd_small.onnx
CLASSES=../shared/models/imagenet_classes.txt
PHOTOS=examples/images/photos/photos.txt
if [ ! -f "$R18" ] || [ ! -f "$CLASSES" ]; then
  echo "tui_demo: $R18 or $CLASSES is not there: the Fashion-MNIST example instead" >&2
  exec "$BIN" tui examples/fmnist/resnet_bn.onnx
fi
M=$WORK/demo/resnet18_bgd_small.onnx
mkdir -p "$WORK/demo"
[ "$M" -nt "$R18" ] ||
  "$BIN" annotate "$R18" -o "$M" --preset imagenet --classes "$CLASSES" >/dev/null
# calibration on the photos too: the weights are PQ codes already, so the
# small regime finds their codebooks again whatever the images
exec "$BIN" tui "$M" -c "data calib list:$PHOTOS" -c "data eval list:$PHOTOS"
