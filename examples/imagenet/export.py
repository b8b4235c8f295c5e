#!/usr/bin/python3
"""Export torchvision ImageNet architectures to ONNX for benchmarks and tests.

The weights are random (seeded): no model hub is reachable here, and speed
and correctness of a runtime do not depend on what the weights learned.
Generated on demand (./bd bench, tests that find PyTorch) into
examples/imagenet/models/, which git ignores.

For resnet18 it also records a check that needs no trust in our image code:
the exact input tensors torchvision's own preprocessing makes from a few
photos shipped with python3-skimage, and PyTorch's logits for them.

usage: /usr/bin/python3 examples/imagenet/export.py [--out DIR] [--zoo] [NAME...]
NAME: any torchvision classification model (default: resnet18 resnet50
mobilenet_v2); --zoo adds the 17 CNNs ./bd bench zoo measures (ZOO), each
only where DIR lacks it
"""
import argparse
import os
import sys

import numpy as np
import torch
import torchvision
from PIL import Image

MEAN = [0.485, 0.456, 0.406]
STD = [0.229, 0.224, 0.225]
# The CNNs of torchvision 0.14's classification zoo, one or two per family.
ZOO = ["alexnet", "vgg11_bn", "squeezenet1_1", "googlenet", "inception_v3", "densenet121",
       "resnet18", "resnext50_32x4d", "wide_resnet50_2", "mobilenet_v2", "mobilenet_v3_small",
       "mnasnet0_5", "shufflenet_v2_x0_5", "efficientnet_b0", "efficientnet_v2_s",
       "regnet_y_400mf", "convnext_tiny"]
PHOTOS = ["chelsea.png", "coffee.png", "astronaut.png", "rocket.jpg"]
SKIMAGE_DATA = "/usr/lib/python3/dist-packages/skimage/data"
CLASSES = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                       "../../../shared/models/imagenet_classes.txt")


def add_metadata(path):
    """bitdown's preprocessing keys (docs/metadata.md), so eval/predict need no flags."""
    import onnx
    m = onnx.load(path)
    meta = {
        "bitdown.preprocess.color": "rgb",
        "bitdown.preprocess.resize": "256",
        "bitdown.preprocess.crop": "224",
        "bitdown.preprocess.mean": ",".join(str(v) for v in MEAN),
        "bitdown.preprocess.std": ",".join(str(v) for v in STD),
    }
    if os.path.exists(CLASSES):
        with open(CLASSES) as f:
            meta["bitdown.classes"] = f.read().rstrip("\n")
    for k, v in meta.items():
        p = m.metadata_props.add()
        p.key, p.value = k, v
    onnx.save(m, path)


def export(name, out_dir):
    torch.manual_seed(0)
    model = getattr(torchvision.models, name)(weights=None).eval()
    path = os.path.join(out_dir, name + ".onnx")
    x = torch.randn(1, 3, 224, 224)
    torch.onnx.export(model, x, path, opset_version=13, input_names=["input"],
                      output_names=["logits"],
                      dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}})
    try:
        add_metadata(path)
    except ImportError:
        pass  # python3-onnx is a test dependency; the model runs without metadata
    print("wrote", path)
    return model


def record_photos(model, out_dir):
    tf = torchvision.transforms.Compose([
        torchvision.transforms.Resize(256),
        torchvision.transforms.CenterCrop(224),
        torchvision.transforms.ToTensor(),
        torchvision.transforms.Normalize(MEAN, STD),
    ])
    names, inputs = [], []
    for photo in PHOTOS:
        p = os.path.join(SKIMAGE_DATA, photo)
        if os.path.exists(p):
            names.append(p)
            inputs.append(tf(Image.open(p).convert("RGB")))
    x = torch.stack(inputs)
    with torch.no_grad():
        logits = model(x)
    x.numpy().astype("<f4").tofile(os.path.join(out_dir, "resnet18.photos.input.f32"))
    logits.numpy().astype("<f4").tofile(os.path.join(out_dir, "resnet18.photos.logits.f32"))
    with open(os.path.join(out_dir, "resnet18.photos.txt"), "w") as f:
        f.write("\n".join(names) + "\n")
    print("wrote photo fixtures for", len(names), "photos")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                                  "models"))
    ap.add_argument("--zoo", action="store_true")
    ap.add_argument("names", nargs="*")
    args = ap.parse_args()
    names = args.names or ([] if args.zoo else ["resnet18", "resnet50", "mobilenet_v2"])
    if args.zoo:
        names += [n for n in ZOO if n not in names and
                  not os.path.exists(os.path.join(args.out, n + ".onnx"))]
    os.makedirs(args.out, exist_ok=True)
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    for name in names:
        model = export(name, args.out)
        if name == "resnet18":
            record_photos(model, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
